"""``notallbits plan``: what a config costs before anything runs — cells, jobs, tokens to
generate and the GPU-hours they imply at throughputs the user states per model."""

from __future__ import annotations

import argparse
from functools import lru_cache
import json
from pathlib import Path

from notallbits import UserError, grid

# Public sizes of the hub benchmarks (questions); local sets are counted.
KNOWN_QUESTIONS = {"aime25": 30, "gpqa_diamond": 198, "math500": 500}
# LiveCodeBench code_generation_lite problems per release (a date window keeps fewer)
LCB_RELEASE_PROBLEMS = {1: 400, 2: 511, 3: 612, 4: 713, 5: 880, 6: 1055}


def question_count(spec: dict) -> int:
    """Questions of a dataset: the hub sets' published sizes (offline), the local ones counted."""
    loader = spec["loader"]
    if loader in KNOWN_QUESTIONS:
        n = KNOWN_QUESTIONS[loader]
    elif loader == "livecodebench":
        n = LCB_RELEASE_PROBLEMS.get(int((spec.get("version") or "release_v5").removeprefix("release_v")), 1055)
    elif loader == "jsonl":
        n = sum(1 for line in Path(spec["path"]).read_text().splitlines() if line.strip())
    else:  # made here from a seed (demo, toy): as many as the loader makes
        return _generated_count(json.dumps(spec, sort_keys=True))
    return min(n, spec["limit"]) if spec.get("limit") else n


@lru_cache(maxsize=None)
def _generated_count(spec_json: str) -> int:
    from notallbits.data.registry import load

    return len(load(json.loads(spec_json)))


# ---------------------------------------------------------------- GPU sizing
# Decode is memory-bound: every step reads the weights once and the KV cache of every sequence
# in flight. Offline there is no tokenizer, so prompts are assumed this long (GPQA's are about
# 300-700 tokens, AIME's 100-300); engine memory beyond weights and KV (activations, CUDA
# graphs, communication buffers) is assumed per GPU.
PROMPT_TOKENS = 1024
ENGINE_OVERHEAD_GIB = 2.0
KV_MARGIN_TEXT = "batches within 90% of it less 1 GiB (memory.KV_MEMORY_MARGIN, KV_OVERHEAD_GIB)"
TP_CHOICES = (1, 2, 4)


def context_tokens(max_budget: int, answer_max_tokens: int, prompt_tokens: int = PROMPT_TOKENS) -> int:
    """Longest sequence of a job: prompt + thinking + answer prefix (~16) + answer (as vLLM's
    max_model_len is derived per job, see vllm_backend.job_context_tokens)."""
    return prompt_tokens + max_budget + 16 + answer_max_tokens + 1


def _weight_bytes(arch, weights, quantization: dict | None = None) -> int:
    """Bytes of a checkpoint in ``weights`` format (a ``weights.WeightFormat``, a format name, or
    4/8/16 for GPTQ/bf16), as the memory model counts its layout."""
    from notallbits.memory import format_weight_bytes

    return format_weight_bytes(arch, weights, quantization)


def gpu_memory_needed_gib(arch, weights, context: int, gpus: int = 1, kv_tokens: int | None = None) -> float:
    """Per-GPU memory to start the engine: its share of the weights and of one full-length
    sequence's KV (tensor parallelism splits both), plus the engine overhead. vLLM refuses to
    start when gpu_memory_utilization x the GPU's memory is below this."""
    from notallbits.memory import GIB, kv_bytes_per_token

    kv = (kv_tokens if kv_tokens is not None else context) * kv_bytes_per_token(arch)
    return (_weight_bytes(arch, weights) + kv) / gpus / GIB + ENGINE_OVERHEAD_GIB


def sequences_in_flight(arch, weights, context: int, gpus: int, hardware: dict, gen: dict,
                        kv_tokens: int | None = None) -> int:
    """Full-length sequences whose KV fits beside the weights (at least one), at most max_num_seqs."""
    from notallbits.memory import GIB, kv_bytes_per_token

    pool = gpus * (hardware["gpu_memory_gib"] * gen["gpu_memory_utilization"] - ENGINE_OVERHEAD_GIB) * GIB
    pool -= _weight_bytes(arch, weights)
    per_sequence = (kv_tokens if kv_tokens is not None else context) * kv_bytes_per_token(arch)
    return sequences_fitting(pool, per_sequence, gen["max_num_seqs"])


def sequences_fitting(pool: float, per_sequence: float, max_num_seqs: int) -> int:
    """Whole sequences of ``per_sequence`` in ``pool`` (bytes or tokens alike), at least one,
    at most max_num_seqs. The vLLM backend admits new traces by the same rule, on the pool
    its engine really allocated."""
    return int(max(1, min(max_num_seqs, pool // per_sequence)))


def decode_seconds(arch, weights, sequences: int, budgets: list[int], answer_max_tokens: int, in_flight: int,
                   gpus: int, bandwidth_gb_per_s: float, prompt_tokens: int = PROMPT_TOKENS,
                   kv_tokens_held=None) -> float:
    """Seconds to decode a job at the memory bandwidth: steps x weight bytes (the sequences go
    through in waves of ``in_flight``) + every generated token's read of its sequence's KV
    (the trace to the largest budget, then a forced answer at each budget). Tensor
    parallelism reads each GPU's share in parallel. ``kv_tokens_held(t)``: tokens a
    compressed cache holds after t (default: all of them)."""
    from math import ceil

    from notallbits.memory import kv_bytes_per_token

    held = kv_tokens_held or (lambda t: t)
    top = max(budgets)
    waves = ceil(sequences / in_flight)
    steps = waves * (top + answer_max_tokens)
    # sum over the trace's steps of the tokens in cache, by a coarse quadrature (64 points)
    points = 64
    trace_kv = sum(prompt_tokens + held(top * (i + 0.5) / points) for i in range(points)) * top / points
    answer_kv = sum(answer_max_tokens * (prompt_tokens + held(b)) for b in budgets)
    kv_bytes = sequences * (trace_kv + answer_kv) * kv_bytes_per_token(arch)
    return (steps * _weight_bytes(arch, weights) + kv_bytes) / (gpus * bandwidth_gb_per_s * 1e9)


def shards_needed(minutes_for, questions: int, max_runtime_minutes: int) -> int:
    """Fewest question shards whose largest fits the maximum runtime; ``minutes_for(q)`` is a
    job's runtime for q questions. Every shard has at least one question, so a job whose single
    question does not fit needs (and gets) one shard per question."""
    from math import ceil

    # the runtime falls as the shards grow: bisect for the fewest that fit (the DAG asks this of
    # every job at parse time, so no linear scan over hundreds of questions)
    if minutes_for(questions) <= max_runtime_minutes:
        return 1  # most jobs
    lo, hi = 2, questions
    if minutes_for(1) > max_runtime_minutes:
        return questions
    while lo < hi:
        mid = (lo + hi) // 2
        if minutes_for(ceil(questions / mid)) <= max_runtime_minutes:
            hi = mid
        else:
            lo = mid + 1
    return lo


def model_arch(config: dict, model: str):
    """The facts that size a model (notallbits/modelarch.py): never a guess."""
    from notallbits.modelarch import arch_of

    return arch_of(model, config["models"][model])


def job_minutes(config: dict, job, spec, questions: int) -> float:
    """Minutes a generation job needs on the GPUs it asks for: decode at the memory bandwidth
    (hardware.gpu_bandwidth_gb_per_s), reading per step the weights and the KV of the
    sequences in flight (as many full-length ones as fit beside the weights, at most
    generation.max_num_seqs), x1.5 margin + 15 min for loading. Compressed-KV jobs run on
    transformers, rows per batch as kv_job_rows sizes them, ~4x slower than the bandwidth bound
    (a Python loop per step); their caches hold fewer tokens."""
    from notallbits.kvcache.settings import METHODS

    gen, hw = config["generation"], config["hardware"]
    arch = model_arch(config, job.model)
    gpus = int(config["models"][job.model].get("gpus", 1))
    context = context_tokens(max(spec.budgets), gen["answer_max_tokens"])
    if spec.backend == "vllm":
        in_flight, held, slowdown = sequences_in_flight(arch, job.weights, context, gpus, hw, gen), None, 1
    else:
        settings = grid.kv_settings(config, job.kv) if job.kv != "full" else {"method": "full"}
        scale = settings.get("nbits", 16) / 16 if settings.get("method") == "hqq" else 1
        in_flight, slowdown = max(1, kv_job_rows(config, job, spec, questions)["rows"]), 4

        method = METHODS[settings["method"]]  # settings are normalized once, not per quadrature point

        def held(t):
            return scale * method.tokens_held(settings, max(1, int(t)))
    seconds = decode_seconds(arch, job.weights, questions * spec.samples, spec.budgets, gen["answer_max_tokens"],
                             in_flight, gpus, hw["gpu_bandwidth_gb_per_s"], kv_tokens_held=held)
    return 15 + 1.5 * slowdown * seconds / 60


def kv_job_rows(config: dict, job, spec, questions: int) -> dict:
    """A transformers-backend job on one GPU of hardware.gpu_memory_gib: the peak GiB of one
    row (memory.kv_row_bytes at the job's longest trace, prompts of PROMPT_TOKENS), what a batch
    holds once (memory.kv_batch_bytes: R-KV's scoring scratch, HQQ's requantizing work), the
    weights' GiB, and the rows per batch: generation.batch_size, or for "auto" what fits
    (memory.kv_rows_per_batch; 0: not even one row fits), at most the job's rows."""
    from notallbits.memory import GIB, kv_batch_bytes, kv_row_bytes, kv_rows_per_batch

    gen, hw = config["generation"], config["hardware"]
    arch = model_arch(config, job.model)
    settings = grid.kv_settings(config, job.kv) if job.kv != "full" else {"method": "full"}
    answer = 16 + gen["answer_max_tokens"]
    row = kv_row_bytes(arch, settings, PROMPT_TOKENS + max(spec.budgets), answer, PROMPT_TOKENS)["total"]
    weights = _weight_bytes(arch, job.weights)
    wanted = questions * spec.samples

    def once(rows: int) -> int:
        return kv_batch_bytes(arch, settings, PROMPT_TOKENS + max(spec.budgets), rows=rows)

    if gen["batch_size"] == "auto":
        rows = kv_rows_per_batch(int(hw["gpu_memory_gib"] * GIB), weights, row, wanted, once)
    else:
        rows = min(int(gen["batch_size"]), wanted)
    batch = once(max(rows, 1))
    return {"rows": rows, "row_gib": row / GIB, "batch_gib": batch / GIB, "weight_gib": weights / GIB,
            "peak_gib": (weights + batch + max(rows, 1) * row) / GIB}


def kv_jobs(config: dict) -> list[dict]:
    """kv_job_rows of every transformers-backend job."""
    out = []
    for job, spec in grid.jobs(config).items():
        if spec.backend == "vllm":
            continue
        q = question_count(config["datasets"][job.dataset])
        out.append({"job": job.key, **{k: (round(v, 2) if isinstance(v, float) else v)
                                       for k, v in kv_job_rows(config, job, spec, q).items()}})
    return out


def parse_throughputs(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise UserError(f"--throughput wants MODEL=TOKENS_PER_SECOND, got {item!r}") from None
        if out[name] <= 0:
            raise UserError(f"throughput for {name} must be positive")
    return out


def plan(config: dict, throughputs: dict[str, float]) -> dict:
    answer = config["generation"]["answer_max_tokens"]
    jobs = []
    for job, spec in grid.jobs(config).items():
        q = question_count(config["datasets"][job.dataset])
        # one trace to the largest budget per sample, plus a short forced answer per budget
        tokens = q * spec.samples * (max(spec.budgets) + len(spec.budgets) * answer)
        rate = throughputs.get(job.model, throughputs.get("default"))
        jobs.append({"job": job.key, "model": job.model, "questions": q, "samples": spec.samples,
                     "max_budget": max(spec.budgets), "budgets": len(spec.budgets), "tokens": tokens,
                     "gpu_hours": tokens / rate / 3600 if rate else None})
    per_model: dict[str, dict] = {}
    for j in jobs:
        m = per_model.setdefault(j["model"], {"jobs": 0, "tokens": 0, "gpu_hours": 0.0})
        m["jobs"] += 1
        m["tokens"] += j["tokens"]
        m["gpu_hours"] = None if j["gpu_hours"] is None or m["gpu_hours"] is None else m["gpu_hours"] + j["gpu_hours"]
    hours = [j["gpu_hours"] for j in jobs]
    # Best-of-N's verify jobs: one PRM forward per (question, sample, budget), at most its context
    verify = [{"job": job.key, "verifier": v, "records": question_count(config["datasets"][job.dataset])
               * spec.samples * len(spec.budgets), "max_tokens": config["verifiers"][v]["max_tokens"]}
              for job, spec in grid.jobs(config).items() for v in spec.verifiers]
    return {"cells": len(grid.cells(config)), "jobs": len(jobs), "tokens": sum(j["tokens"] for j in jobs),
            "verify_jobs": verify,
            "gpu_hours": None if None in hours else sum(hours), "per_model": per_model, "per_job": jobs,
            "gpu_memory": gpu_memory(config), "kv_jobs": kv_jobs(config), "runtimes": runtimes(config)}


def gpu_memory(config: dict) -> list[dict]:
    """Per model and weight format: the GPU memory the engine needs to start with 1, 2 or 4 GPUs
    (tensor parallel; weights + one longest sequence's KV + overhead, per GPU), whether
    hardware.gpu_memory_gib x gpu_memory_utilization covers it, and how many longest sequences
    are then in flight."""
    gen, hw = config["generation"], config["hardware"]
    usable = hw["gpu_memory_gib"] * gen["gpu_memory_utilization"]
    longest: dict[tuple[str, object], int] = {}
    for job, spec in grid.jobs(config).items():
        if spec.backend == "vllm" or job.kv == "full":
            key = (job.model, job.weights)
            longest[key] = max(longest.get(key, 0), context_tokens(max(spec.budgets), gen["answer_max_tokens"]))
    rows = []
    order = list(config["models"])
    for (model, fmt), context in sorted(longest.items(),
                                        key=lambda kv: (order.index(kv[0][0]), kv[0][1].bits, kv[0][1].name)):
        arch = model_arch(config, model)
        row = {"model": model, "bits": fmt.bits, "weights": fmt.name, "context_tokens": context}
        for g in TP_CHOICES:
            need = gpu_memory_needed_gib(arch, fmt, context, g)
            row[f"gib_per_gpu_{g}"] = round(need, 1)
            row[f"in_flight_{g}"] = sequences_in_flight(arch, fmt, context, g, hw, gen) if need <= usable else 0
        rows.append(row)
    return rows


def job_shards(config: dict, spec, questions: int) -> int:
    """Question shards of a generation job: what the config asks for (grid.shard_count:
    datasets.<name>.shards, generation.shard_tokens), raised until every shard's runtime
    estimate fits hardware.max_runtime_minutes. The workflow's shard files follow this."""
    cap = config["hardware"]["max_runtime_minutes"]
    by_runtime = 1 if cap is None else shards_needed(lambda q: job_minutes(config, spec.job, spec, q), questions, cap)
    return max(grid.shard_count(config, spec, questions), by_runtime)


def runtimes(config: dict) -> list[dict]:
    """Each generation job's runtime estimate unsharded, its shards (job_shards) and the
    estimate of its largest shard."""
    out = []
    for job, spec in grid.jobs(config).items():
        q = question_count(config["datasets"][job.dataset])
        shards = job_shards(config, spec, q)
        out.append({"job": job.key, "minutes": round(job_minutes(config, job, spec, q), 1), "shards": shards,
                    "shard_minutes": round(job_minutes(config, job, spec, -(-q // shards)), 1)})
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default="config.yaml", help="config YAML")
    p.add_argument("--throughput", action="append", default=[], metavar="MODEL=TOK_PER_S",
                   help="generated tokens/s per GPU for a model (or 'default'); repeatable")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def gpu_time(hours: float) -> str:
    """GPU-hours with one decimal, or GPU-minutes/-seconds where that would print 0.0."""
    if hours >= 0.05:
        return f"{hours:,.1f} GPU-hours"
    return f"{hours * 60:.1f} GPU-minutes" if hours * 60 >= 0.05 else f"{hours * 3600:.1f} GPU-seconds"


def run(args: argparse.Namespace) -> None:
    result = plan(grid.load(args.config), parse_throughputs(args.throughput))
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{result['cells']} cells in {result['jobs']} generation jobs; {result['tokens']:,} tokens to generate")
    if result["verify_jobs"]:
        verify = result["verify_jobs"]
        print(f"{len(verify)} verify jobs (PRM Best-of-N, {', '.join(sorted({v['verifier'] for v in verify}))}): "
              f"{sum(v['records'] for v in verify):,} sample traces to score, each cut to the verifier's context")
    for model, m in result["per_model"].items():
        hours = gpu_time(m["gpu_hours"]) if m["gpu_hours"] is not None else "no throughput given"
        print(f"  {model}: {m['jobs']} job{'s' if m['jobs'] != 1 else ''}, {m['tokens']:,} tokens, {hours}")
    if result["gpu_hours"] is not None:
        print(f"total: {gpu_time(result['gpu_hours'])}")
    else:
        print("pass --throughput MODEL=TOK_PER_S (or default=...) for GPU-hours")
    cfg = grid.load(args.config)
    hw, gen = cfg["hardware"], cfg["generation"]
    print(f"GPU memory to start vLLM (GiB per GPU: weights + one longest sequence's KV + {ENGINE_OVERHEAD_GIB} "
          f"overhead; a {hw['gpu_memory_gib']} GiB GPU at gpu_memory_utilization {gen['gpu_memory_utilization']} "
          f"gives {hw['gpu_memory_gib'] * gen['gpu_memory_utilization']:.1f}; prompts assumed {PROMPT_TOKENS} tokens):")
    for r in result["gpu_memory"]:
        cells = "  ".join(f"{g} GPU{'s' if g > 1 else ' '}: {r[f'gib_per_gpu_{g}']:6.1f}"
                          f" ({r[f'in_flight_{g}'] or 'does not fit':>3}{' seqs' if r[f'in_flight_{g}'] else ''})"
                          for g in TP_CHOICES)
        print(f"  {r['model']:>12} {r['weights']:<6} {r['context_tokens']:>6} tokens  {cells}")
    if result["kv_jobs"]:
        print(f"KV-method jobs on the transformers backend (generation.batch_size {gen['batch_size']}; one "
              f"{hw['gpu_memory_gib']} GiB GPU, {KV_MARGIN_TEXT}; rows per batch, peak GiB = weights + once per batch + rows x row peak):")
        for r in result["kv_jobs"]:
            rows = r["rows"] or "does not fit"
            once = f"{r['batch_gib']:.2f} once + " if r["batch_gib"] else ""
            print(f"  {r['job']}: {rows} rows, {r['peak_gib']:.1f} GiB ({r['weight_gib']:.1f} weights + {once}"
                  f"{r['row_gib']:.2f} per row)")
    over = [r for r in result["runtimes"] if r["shards"] > 1]
    print(f"runtime at {hw['gpu_bandwidth_gb_per_s']} GB/s (hardware.max_runtime_minutes="
          f"{hw['max_runtime_minutes']}): {len(over)} of {len(result['runtimes'])} jobs run as question shards"
          + (":" if over else ""))
    for r in over:
        print(f"  {r['job']}: {r['minutes'] / 60:.1f} h -> {r['shards']} shards of {r['shard_minutes'] / 60:.1f} h")
    print_downloads(cfg, result["tokens"])


def print_downloads(config: dict, tokens: int) -> None:
    """The disk each part of the run takes next to the free space where it goes, and what the
    hub cannot give this run (notallbits.downloads)."""
    from notallbits.disk import disk_plan, print_disk_plan
    from notallbits.hubcheck import startup_problems

    print_disk_plan(disk_plan(config, tokens))
    problems = startup_problems(config)
    for problem in problems:
        print(f"missing: {problem}")
