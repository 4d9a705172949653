"""``notallbits generate``: one generation job = one (dataset, model, bits, KV) cell group.

Writes one record per (question, sample, budget) into a framed JSONL file; the header
carries the job's settings and throughput. Progress is kept per question (see progress.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from notallbits import UserError
from notallbits.data.prepare import read_questions
from notallbits.generation import FORMAT_VERSION
from notallbits.generation.backend import make_backend
from notallbits.generation.devices import environment
from notallbits.generation.forcing import ForcingSpec, QuestionRequest
from notallbits.generation.prompts import build_prompt
from notallbits.generation.sampling import derive_seed
from notallbits.io import write_framed_jsonl


def sample_seeds(base_seed: int, question_id: str, n: int) -> list[int]:
    return [derive_seed(base_seed, question_id, i) for i in range(n)]


def check_spec(spec: dict) -> None:
    if spec["bits"] not in (4, 8, 16):
        raise UserError(f"bits must be 4, 8 or 16, got {spec['bits']}")
    if spec.get("weight_method"):
        from notallbits import weights

        weights.of(spec["weight_method"], spec["bits"])  # unknown (method, bits): one line
    bad = [b for b in spec["budgets"] if not isinstance(b, int) or b <= 0]
    if bad or not spec["budgets"]:
        raise UserError(f"budgets must be positive integers, got {spec['budgets']}")
    if spec["samples"] <= 0:
        raise UserError(f"samples must be positive, got {spec['samples']}")


def records_for(question_id: str, res, budgets, spec: ForcingSpec, tokenizer, thinking_text: bool = False) -> list[dict]:
    """One record per budget of a sample. With ``thinking_text`` (the job spec's, set for jobs a
    verifier reads) the thinking text is stored once per sample, not once per budget: the record
    at the largest budget carries the trace's ``thinking_text``, and every record
    ``thinking_chars``, the length of the prefix of that text which is its budget's thinking
    (``thinking_texts`` rebuilds them). A record depends on its own budget and the largest one
    only, so adding a smaller budget changes no record."""
    out = []
    largest = max(budgets)
    full = tokenizer.decode(res.thinking_ids[:_thinking_at(res, largest)], skip_special_tokens=True) \
        if thinking_text else ""
    for budget in budgets:
        if res.needs_forcing(budget):
            answer_ids = list(spec.answer_prefix_ids[1:]) + res.answers[budget]
            thinking = _thinking_at(res, budget)
            forced = True
        else:
            answer_ids = res.natural_answer[1:] if res.natural_answer[:1] == [spec.end_think_id] else res.natural_answer
            thinking = res.natural_end
            forced = False
        generated = (res.answers[budget] if forced else res.natural_answer)
        out.append({
            "question_id": question_id, "sample": res.sample, "seed": res.seed, "budget_tokens": budget,
            "thinking_tokens": thinking, "forced": forced,
            "waits": sum(1 for p in res.wait_positions if p < thinking),
            "answer_text": tokenizer.decode(answer_ids, skip_special_tokens=True),
            "answer_tokens": len(generated),
        })
        if thinking_text:
            text = tokenizer.decode(res.thinking_ids[:thinking], skip_special_tokens=True)
            # a budget that cuts a multi-byte character keeps the whole characters before it
            out[-1]["thinking_chars"] = len(text) if full.startswith(text) else len(_common_prefix(full, text))
            if budget == largest:
                out[-1]["thinking_text"] = full
    return out


def _thinking_at(res, budget: int) -> int:
    return min(budget, len(res.thinking_ids)) if res.needs_forcing(budget) else res.natural_end


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def thinking_texts(records: list[dict]) -> dict[tuple[str, int, int], str]:
    """(question_id, sample, budget_tokens) -> the whole thinking text at that budget, from
    the records' ``thinking_delta`` (see records_for)."""
    by_sample: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        if "thinking_chars" not in r:
            raise UserError("generation records carry no thinking text (their job spec lacks thinking_text, "
                            "which the workflow sets for jobs a verifier reads): rerun their generate job")
        by_sample.setdefault((r["question_id"], r["sample"]), []).append(r)
    out = {}
    for (qid, sample), recs in by_sample.items():
        full = [r["thinking_text"] for r in recs if "thinking_text" in r]
        if len(full) != 1:
            raise UserError(f"question {qid!r} sample {sample}: {len(full)} records carry the thinking text, "
                            "expected 1 (rerun the generate job)")
        for r in recs:
            out[(qid, sample, r["budget_tokens"])] = full[0][: r["thinking_chars"]]
    return out


def generate(questions_path: str, spec: dict, out_path: str, progress_root: str) -> dict:
    from tqdm import tqdm

    from notallbits.generation.progress import ProgressStore, model_fingerprint

    check_spec(spec)
    questions = read_questions(questions_path)
    if spec.get("shard"):  # one question shard of the job; progress is shared by all shards
        from notallbits.grid import shard_questions

        questions = shard_questions(questions, *spec["shard"])
    budgets = sorted(spec["budgets"])
    gen, samp = spec["generation"], spec["sampling"]
    backend = make_backend({**spec, "questions": questions})  # vLLM sizes its context from the prompts
    tokenizer = backend.tokenizer
    fspec = ForcingSpec.from_tokenizer(tokenizer, budgets, gen["wait_text"], gen["answer_prefix"],
                                       gen["answer_max_tokens"], gen["wait_extension"])
    identity = {"format_version": FORMAT_VERSION, "model": model_fingerprint(spec["model_path"]),
                "bits": spec["bits"], "kv": spec["kv_settings"], "sampling": samp, "backend": spec["backend"],
                "forcing": {k: gen[k] for k in ("wait_extension", "wait_text", "answer_prefix", "answer_max_tokens")},
                "prompt_style": spec.get("prompt_style", "default")}
    store = ProgressStore(progress_root, identity)
    n = spec["samples"]
    t0 = time.perf_counter()
    stats = {"reused_samples": 0, "generated_samples": 0}
    run_tokens = {"trace_tokens": 0, "answer_tokens": 0}  # generated by this invocation
    bar = tqdm(total=len(questions) * n * fspec.max_budget, desc="thinking tokens", file=sys.stderr,
               mininterval=5, unit="tok")
    # what each question still needs: stored traces serve if they reached this job's largest
    # budget (or ended naturally); the rest goes to the engine as one job
    prompts, usable, requests = {}, {}, []
    for q in questions:
        qid = q["id"]
        prompts[qid] = tokenizer.encode(build_prompt(tokenizer, q, spec.get("prompt_style", "default")),
                                        add_special_tokens=False)
        usable[qid] = {i: r for i, r in store.load(qid, prompts[qid]).items()
                       if i < n and (len(r.thinking_ids) >= fspec.max_budget or r.natural_end is not None)}
        todo = [i for i in range(n) if i not in usable[qid]]
        if todo:
            seeds = sample_seeds(samp["seed"], qid, n)
            requests.append(QuestionRequest(qid, tuple(prompts[qid]), tuple(todo), tuple(seeds[i] for i in todo)))
    pending = {r.question_id for r in requests}

    # stored traces first get forced answers at budgets they lack (before the job's engine
    # run starts, so no two engine runs interleave); questions with nothing left are saved
    for q in questions:
        qid = q["id"]
        reused = [r for _, r in sorted(usable[qid].items())]
        stats["reused_samples"] += len(reused)
        need = [r for r in reused if any(r.needs_forcing(b) and b not in r.answers for b in budgets)]
        if need:
            missing = sorted({b for r in need for b in budgets if r.needs_forcing(b) and b not in r.answers})
            before = sum(len(a) for r in need for a in r.answers.values())
            t_force, seconds = time.perf_counter(), sum(r.trace_seconds for r in need)
            backend.force_from_traces(prompts[qid], need, missing, fspec)
            if sum(r.trace_seconds for r in need) == seconds:  # the engine does not account per sample
                for r in need:
                    r.trace_seconds += (time.perf_counter() - t_force) / len(need)
            run_tokens["answer_tokens"] += sum(len(a) for r in need for a in r.answers.values()) - before
        if need or qid not in pending:
            store.save(qid, usable[qid], prompts[qid])
    for req, results in backend.generate_job(requests, fspec, progress=bar):
        for res in results:
            usable[req.question_id][res.sample] = res
            run_tokens["trace_tokens"] += len(res.thinking_ids) + len(res.natural_answer)
            run_tokens["answer_tokens"] += sum(len(a) for a in res.answers.values())
        stats["generated_samples"] += len(results)
        store.save(req.question_id, usable[req.question_id], prompts[req.question_id])
    used = [usable[q["id"]][i] for q in questions for i in range(n)]
    records = [rec for q in questions for i in range(n)
               for rec in records_for(q["id"], usable[q["id"]][i], budgets, fspec, tokenizer,
                                      bool(spec.get("thinking_text")))]
    bar.close()
    stats.update(cell_stats(used, budgets))
    stats["invocation"] = {"wall_seconds": round(time.perf_counter() - t0, 3), **run_tokens,
                           "engine_start_seconds": round(getattr(backend, "engine_start_seconds", 0.0), 3),
                           **({"scheduler": backend.scheduler.figures()} if hasattr(backend, "scheduler") else {})}
    stats["engine_start_seconds"] = stats["invocation"]["engine_start_seconds"]
    header = {"format_version": FORMAT_VERSION, "dataset": spec["dataset"], "model": spec["model"],
              "model_path": spec["model_path"], "bits": spec["bits"], "weight_method": weight_method(spec),
              "kv": spec["kv"],
              "kv_settings": spec["kv_settings"], "backend": spec["backend"], "budgets": budgets,
              "samples": n, "questions": len(questions), "sampling": samp, "generation": gen, "stats": stats,
              **({"shard": spec["shard"]} if spec.get("shard") else {}),
              "model_facts": model_facts(spec["model_path"]),
              "environment": environment(str(getattr(backend, "device", "")))}
    write_framed_jsonl(out_path, header, records)
    return header


def weight_method(spec: dict) -> str:
    """gptq/awq/fp8/bf16: the spec's, or what its bits alone mean (GPTQ and bf16 jobs)."""
    from notallbits.weights import default_method

    return spec.get("weight_method") or default_method(spec["bits"])


def cell_stats(samples, budgets) -> dict:
    """The job's cost from the stored samples its records use, so it is the same whether the
    job ran in one go or was resumed (issue #13): tokens of each trace and of its forced
    answers at this job's budgets, engine seconds (each sample's share, see SampleResult) and,
    where the engine accounts them, steps and sequences in flight."""
    trace = sum(len(r.thinking_ids) + len(r.natural_answer) for r in samples)
    answers = sum(len(r.answers.get(b, [])) for r in samples for b in budgets if r.needs_forcing(b))
    wall = sum(r.trace_seconds for r in samples)
    steps = sum(r.engine_steps for r in samples)
    generated = trace + answers
    return {"trace_tokens": trace, "answer_tokens": answers, "generated_tokens": generated,
            "wall_seconds": round(wall, 3), "tokens_per_second": round(generated / wall, 2) if wall > 0 else None,
            "engine_steps": round(steps) if steps else None,
            "mean_sequences_in_flight": round(sum(r.sequence_steps for r in samples) / steps, 2) if steps else None,
            "max_sequences_in_flight": max((r.max_sequences_in_flight for r in samples), default=0) or None}


def model_facts(model_path: str) -> dict:
    """Architecture and measured weight bytes of the checkpoint a job ran, for the summary."""
    from notallbits.manifest import verify
    from notallbits.memory import Arch, checkpoint_bytes

    folder = Path(model_path)
    if not folder.is_dir():  # a hub id: use the snapshot the loader just cached
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model_path, local_files_only=True))
    verify(folder)  # weight_bytes below must come from a whole checkpoint
    cfg = json.loads((folder / "config.json").read_text())
    arch = Arch.from_hf_config(cfg.get("text_config", cfg))
    return {"weight_bytes": checkpoint_bytes(folder), "layers": arch.layers, "kv_heads": arch.kv_heads,
            "head_dim": arch.head_dim, "quant_settings": quant_settings(folder)}


def quant_settings(folder: Path) -> str:
    """The GPTQ record a quantized checkpoint carries (quantizer options + calibration), as
    canonical JSON; "" for a checkpoint this project did not quantize (bf16)."""
    record = folder / "notallbits.json"
    if not record.exists():
        return ""
    built = json.loads(record.read_text())
    if built.get("built_by") != "notallbits.quantization":
        return ""
    return json.dumps({"quantizer": built["quantizer"], "calibration": built["calibration"]}, sort_keys=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", required=True, help="normalized dataset JSONL")
    p.add_argument("--spec", required=True, help="job settings as JSON (see rules/generate.smk)")
    p.add_argument("--out", required=True, help="framed JSONL of records")
    p.add_argument("--progress", required=True, help="folder for resumable per-question progress")


def gpus_needed(args: argparse.Namespace) -> int:
    """Devices the job's slot holds (cli.py): none when the config asks for CPU."""
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError:
        return 1  # run() reports the bad spec
    if str(spec.get("generation", {}).get("device", "auto")) == "cpu":
        return 0
    return int(spec.get("gpus", 1))


def run(args: argparse.Namespace) -> None:
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as exc:
        raise UserError(f"--spec is not valid JSON: {exc.msg}") from None
    header = generate(args.questions, spec, args.out, args.progress)
    s = header["stats"]
    print(f"{header['questions']} questions x {header['samples']} samples, budgets {header['budgets']}: "
          f"{s['generated_tokens']} tokens in {s['wall_seconds']} s ({s['tokens_per_second']} tok/s)", file=sys.stderr)
