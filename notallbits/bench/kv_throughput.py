"""Throughput of the transformers backend on a whole generation job, per KV method and batch
shape, against the full cache on the same machine.

    python -m notallbits.bench.kv_throughput models/toy/toy-l --prompt-style toy \\
        --questions 16 --samples 8 --batch-size 128 --budgets 32 64

For each method it runs the job's questions x samples through ``generate_job`` (mode
``batched``: rows of many questions per batch) and, with ``--per-question``, through the
base ``Backend.generate_job`` (one question's samples at a time), and prints generated
tokens/s (thinking + forced answers), the ratio to the full cache, the seconds spent in the
forced answers, and what one fork of the cache at the largest budget costs: copy.deepcopy
(what forcing did before) vs kvcache.fork. It only uses interfaces that the per-question
code before batching across questions also has, so the same file run with PYTHONPATH at an older checkout
measures that code on the same machine ("before").
"""

from __future__ import annotations

import argparse
import copy
import time


def job(tokenizer, questions: int, samples: int, style: str, seed: int = 0):
    from notallbits.data.registry import load
    from notallbits.generation.forcing import QuestionRequest
    from notallbits.generation.prompts import build_prompt
    from notallbits.generation.sampling import derive_seed

    loader = "toy_math" if style == "toy" else "demo_arith"
    requests = []
    for q in load({"loader": loader, "limit": questions}):
        ids = tuple(tokenizer.encode(build_prompt(tokenizer, q, style), add_special_tokens=False))
        seeds = tuple(derive_seed(seed, q["id"], i) for i in range(samples))
        requests.append(QuestionRequest(q["id"], ids, tuple(range(samples)), seeds))
    return requests


def run_job(backend, requests, spec, per_question: bool) -> dict:
    from notallbits.generation.backend import Backend

    force_seconds = [0.0]
    inner = backend._force

    def timed_force(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            force_seconds[0] += time.perf_counter() - t

    backend._force = timed_force
    tokens = 0
    t0 = time.perf_counter()
    walk = Backend.generate_job(backend, requests, spec) if per_question else backend.generate_job(requests, spec)
    for _, results in walk:
        tokens += sum(len(r.thinking_ids) + len(r.natural_answer) + sum(map(len, r.answers.values()))
                      for r in results)
    wall = time.perf_counter() - t0
    del backend._force
    return {"tokens": tokens, "seconds": wall, "tok_s": tokens / wall, "force_s": force_seconds[0]}


def fork_ms(backend, requests, spec, rows: int, repeats: int = 5) -> dict:
    """Milliseconds to fork a cache of ``rows`` rows decoded to the largest budget."""
    import torch

    try:
        from notallbits.kvcache import fork
    except ImportError:  # older code forked with copy.deepcopy only
        fork = None
    prompt = list(requests[0].prompt_ids)
    with torch.inference_mode():
        cache = backend._new_cache()
        ids = torch.randint(5, backend.model.config.vocab_size - 1, (rows, len(prompt) + spec.max_budget),
                            generator=torch.Generator().manual_seed(0)).to(backend.device)
        for t in range(ids.shape[1]):
            backend.model(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True,
                          position_ids=torch.full((rows, 1), t, device=backend.device), logits_to_keep=1)
    out = {}
    for name, fn in (("deepcopy", copy.deepcopy), ("fork", fork)):
        if fn is None:
            continue
        best = float("inf")
        for _ in range(repeats):
            if backend.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn(cache)
            if backend.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        out[name] = best * 1e3
    return out


METHODS = ("full", "streamingllm", "rkv", "hqq")


def main(argv=None) -> None:
    from notallbits.generation.forcing import ForcingSpec
    from notallbits.generation.hf_backend import TransformersBackend, load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--prompt-style", default="default", help="toy for the toy reasoners (models/toy)")
    p.add_argument("--questions", type=int, default=16)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--batch-size", type=int, nargs="+", default=[128], help="rows per batch (one run each)")
    p.add_argument("--budgets", type=int, nargs="+", default=[32, 64])
    p.add_argument("--kv-budget", type=int, default=16, help="StreamingLLM / R-KV token budget")
    p.add_argument("--rkv-buffer", type=int, default=8)
    p.add_argument("--hqq-residual", type=int, default=16)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--per-question", action="store_true", help="also run one question at a time")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default="auto")
    p.add_argument("--gptq-kernel", default="gptq_triton",
                   help="GPTQ checkpoints on CUDA: the kernel, as generation.gptq_kernel "
                        "(gptq_triton, gptq_torch, gptq_marlin, gptq_exllama_v2, auto)")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--repeats", type=int, default=2, help="runs per cell; the fastest is printed")
    args = p.parse_args(argv)
    settings = {"full": {"method": "full"},
                "streamingllm": {"method": "streamingllm", "budget": args.kv_budget},
                "rkv": {"method": "rkv", "budget": args.kv_budget, "buffer": args.rkv_buffer},
                "hqq": {"method": "hqq", "nbits": 4, "residual_length": args.hqq_residual}}
    model, tokenizer = load_model(args.model, args.dtype, args.device, args.gptq_kernel)
    spec = ForcingSpec.from_tokenizer(tokenizer, args.budgets, "Wait", "\n\n**Final Answer**\n\\boxed{", 8)
    requests = job(tokenizer, args.questions, args.samples, args.prompt_style)
    from notallbits.generation.backend import Backend

    # code without a batched generate_job (older code) walks the questions one by one
    default = "per-question" if TransformersBackend.generate_job is Backend.generate_job else "batched"
    modes = [(default, False)] + ([("per-question", True)] if args.per_question else [])
    run_job(TransformersBackend(model, tokenizer, settings["full"], args.temperature, 0.95, 8),
            requests[:1], spec, False)  # warm-up: first-call allocations and kernel choices
    print(f"{args.model}: {args.questions} questions x {args.samples} samples, budgets {args.budgets}, "
          f"{args.dtype} on {model.device}")
    print(f"{'method':<13}{'mode':<14}{'rows':>5}{'tokens':>8}{'seconds':>9}{'tok/s':>9}{'vs full':>9}"
          f"{'force s':>9}{'deepcopy ms':>13}{'fork ms':>9}")
    for rows in args.batch_size:
        for mode, per_question in modes:
            full = None
            for method in args.methods:
                backend = TransformersBackend(model, tokenizer, settings[method], args.temperature, 0.95, rows)
                r = min((run_job(backend, requests, spec, per_question) for _ in range(args.repeats)),
                        key=lambda x: x["seconds"])
                full = r["tok_s"] if method == "full" else full
                ratio = f"{r['tok_s'] / full:.2f}" if full else "-"
                forks = fork_ms(backend, requests, spec, min(rows, args.questions * args.samples))
                print(f"{method:<13}{mode:<14}{rows:>5}{r['tokens']:>8}{r['seconds']:>9.1f}{r['tok_s']:>9.0f}"
                      f"{ratio:>9}{r['force_s']:>9.1f}{forks.get('deepcopy', float('nan')):>13.2f}"
                      f"{forks.get('fork', float('nan')):>9.3f}", flush=True)


if __name__ == "__main__":
    main()
