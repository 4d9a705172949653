"""Benchmark of the vLLM backend's scheduling against its bound, on this machine.

    python -m notallbits.bench.vllm_scheduling --model tiny            # a random tiny Qwen3, built here
    python -m notallbits.bench.vllm_scheduling --model models/toy/toy-l --dataset toy_math

Runs one generation job (questions x samples, budget forcing) three ways in one engine and
prints, side by side: wall seconds, engine steps, sequences in flight per step, and the
ratios to the bound.

- ``bound``: one ``LLM.generate`` call producing the job's tokens with ``ignore_eos`` (every
  sequence max budget + answer tokens long, no stops): the fewest engine steps and the
  fullest batches the job can have.
- ``job``: ``VLLMBackend.generate_job``, the whole job in flight (what ``notallbits generate`` runs).
- ``rounds``: the previous scheduling, one question at a time in blocking rounds
  (``Backend.generate_job`` over ``VLLMBackend.generate``).

Steps and sequences in flight are counted the same way for all three, by wrapping the
engine's ``step`` (unfinished requests in the engine before each step). Not a test: the
figures depend on the machine; run it on the machine whose figures you report.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

PREFIX = "\n\n**Final Answer**\n\\boxed{"


class StepMeter:
    """Counts engine steps and the requests in the engine at each step."""

    def __init__(self, engine):
        self.engine, self._step = engine, engine.step
        engine.step = self.step
        self.reset()

    def reset(self) -> None:
        self.steps, self.sequence_steps, self.max_in_flight = 0, 0, 0

    def step(self):
        n = self.engine.get_num_unfinished_requests()
        self.steps += 1
        self.sequence_steps += n
        self.max_in_flight = max(self.max_in_flight, n)
        return self._step()

    def figures(self) -> dict:
        return {"engine_steps": self.steps, "mean_in_flight": self.sequence_steps / max(self.steps, 1),
                "max_in_flight": self.max_in_flight}


def questions_for(dataset: str, n: int) -> list[dict]:
    from notallbits.data.registry import demo_arith, load

    if dataset == "demo_arith":
        return demo_arith(n)
    return load({"loader": dataset, "limit": n})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m notallbits.bench.vllm_scheduling", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="model folder, or 'tiny' for a random tiny Qwen3 built here")
    p.add_argument("--dataset", default=None, help="demo_arith (default for tiny) or a toy loader (toy_math)")
    p.add_argument("--questions", type=int, default=16)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--budgets", type=int, nargs="+", default=[256])
    p.add_argument("--answer-max-tokens", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--paths", nargs="+", default=["bound", "job", "rounds"], choices=["bound", "job", "rounds"])
    args = p.parse_args(argv)

    from notallbits.generation.backend import Backend
    from notallbits.generation.forcing import ForcingSpec, QuestionRequest
    from notallbits.generation.prompts import build_prompt
    from notallbits.generation.run import cell_stats, sample_seeds
    from notallbits.generation.vllm_backend import VLLMBackend

    model = args.model
    if model == "tiny":
        from notallbits.tinymodel import build

        model = str(build(Path(tempfile.mkdtemp(prefix="bench-")) / "tiny"))
    dataset = args.dataset or ("toy_math" if "toy" in Path(model).name else "demo_arith")
    style = "toy" if dataset.startswith("toy") else "default"
    sampling = {"temperature": args.temperature, "top_p": 0.95, "seed": 0}
    backend = VLLMBackend(model, {"dtype": "bfloat16"}, sampling)
    tok = backend.tokenizer
    fspec = ForcingSpec.from_tokenizer(tok, args.budgets, "Wait", PREFIX, args.answer_max_tokens)
    requests = []
    for q in questions_for(dataset, args.questions):
        prompt = tok.encode(build_prompt(tok, q, style), add_special_tokens=False)
        seeds = sample_seeds(0, q["id"], args.samples)
        requests.append(QuestionRequest(q["id"], tuple(prompt), tuple(range(args.samples)), tuple(seeds)))
    meter = StepMeter(backend.llm.llm_engine)
    per_seq = fspec.max_budget + args.answer_max_tokens * len(fspec.budgets)
    n_seq = len(requests) * args.samples

    def warm():  # compile/allocate once so no path pays the first call
        backend._run([list(requests[0].prompt_ids)], [backend._params(4, 1, [])])

    rows, traces = {}, {}
    warm()
    for path in args.paths:
        meter.reset()
        t0 = time.perf_counter()
        if path == "bound":
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests for _ in r.seeds]
            params = [SamplingParams(temperature=args.temperature, top_p=0.95, seed=s, max_tokens=per_seq,
                                     ignore_eos=True, detokenize=False) for r in requests for s in r.seeds]
            outs = backend.llm.generate(prompts, params, use_tqdm=False)
            tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        else:
            run = backend.generate_job if path == "job" else (lambda *a: Backend.generate_job(backend, *a))
            results = [(req.question_id, r) for req, res in run(requests, fspec) for r in res]
            stats = cell_stats([r for _, r in results], list(fspec.budgets))
            tokens = stats["generated_tokens"]
            traces[path] = {(q, r.sample): r.thinking_ids for q, r in results}
            if path == "job":
                rows["job_header"] = stats
        wall = time.perf_counter() - t0
        rows[path] = {"wall_seconds": wall, "tokens": tokens, **meter.figures()}
        print(f"{path}: {rows[path]}", file=sys.stderr)

    print(f"\nmodel {model} ({dataset}), {len(requests)} questions x {args.samples} samples, budgets "
          f"{list(fspec.budgets)}, answer tokens {args.answer_max_tokens}, temperature {args.temperature}")
    print(f"step bound: max budget + answer tokens = {per_seq} steps; {n_seq} sequences")
    bound = rows.get("bound")
    head = f"{'path':8} {'wall s':>8} {'tokens':>8} {'steps':>7} {'steps/bound':>12} {'mean in flight':>15} " \
           f"{'max in flight':>14} {'wall/bound call':>16}"
    print(head)
    for path in args.paths:
        r = rows[path]
        ratio = f"{r['wall_seconds'] / bound['wall_seconds']:.2f}" if bound else "-"
        print(f"{path:8} {r['wall_seconds']:8.2f} {r['tokens']:8d} {r['engine_steps']:7d} "
              f"{r['engine_steps'] / per_seq:12.2f} {r['mean_in_flight']:15.1f} {r['max_in_flight']:14d} {ratio:>16}")
    if "job_header" in rows:
        h = rows["job_header"]
        print(f"job header stats: engine_steps {h['engine_steps']}, mean_sequences_in_flight "
              f"{h['mean_sequences_in_flight']}, max_sequences_in_flight {h['max_sequences_in_flight']}, "
              f"wall_seconds {h['wall_seconds']}")
    if len(traces) == 2:
        same = sum(traces["job"][k] == traces["rounds"][k] for k in traces["job"])
        print(f"traces identical in job and rounds: {same}/{len(traces['job'])}")


if __name__ == "__main__":
    main()
