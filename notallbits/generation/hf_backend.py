"""transformers backend: a manual decode loop, because budget forcing, per-sample seeds,
forking the KV cache at every budget and decode-time KV compression all need to see each
step.

Rows of many questions decode together (``batch_size`` rows per batch, questions in job
order): prompts are left-padded, every row gets its own positions, and an explicit 4-D
attention mask hides each row's padding (the caches keep a row's padding at its left, also
after evicting: kvcache.padding). Tokens are sampled on the device from counter-based noise
(sampling.sample_rows), so a sample's trace depends only on its seed, not on its batch.
At each budget the forced answers of all rows are decoded as one batch on a fork of the
cache that shares its slots and writes only the answers' tokens (kvcache.fork). Attention is
grouped-query without repeated K/V (kvcache.attention).
"""

from __future__ import annotations

import time

from notallbits import UserError
from notallbits.generation.backend import Backend
from notallbits.generation.torch_device import GPTQ_KERNELS, resolve_device
from notallbits.generation.forcing import ForcingSpec, QuestionRequest, SampleResult, Trace
from notallbits.generation.sampling import derive_seed, sample_rows


def gptq_loading_config(path: str, device: str, kernel: str):
    """For a GPTQ checkpoint on CUDA, the quantization config that picks ``kernel``; None for
    bf16 checkpoints and on CPU (GPTQModel's CPU kernels need no compiler)."""
    import json
    from pathlib import Path

    cfg_file = Path(path) / "config.json"
    if not cfg_file.exists() or device == "cpu" or kernel == "auto":
        return None
    qcfg = json.loads(cfg_file.read_text()).get("quantization_config") or {}
    if qcfg.get("quant_method") != "gptq":
        return None
    if kernel not in GPTQ_KERNELS:
        raise UserError(f"generation.gptq_kernel: unknown kernel {kernel!r} (known: {', '.join(GPTQ_KERNELS)})")
    from transformers import GPTQConfig

    return GPTQConfig.from_dict({**qcfg, "backend": kernel})


def load_model(path: str, dtype: str = "bfloat16", device: str = "auto", gptq_kernel: str = "gptq_triton"):
    """Load a bf16 or GPTQ checkpoint (local folder or hub id) and its tokenizer."""
    from notallbits.hfcache import pin_user_cache

    pin_user_cache()  # a GPTQ checkpoint loads through optimum -> gptqmodel -> tokenicer, which moves HF_HOME
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from notallbits.manifest import verify

    verify(path)  # a truncated checkpoint: one line naming the file, not a SafetensorError
    device = resolve_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs = {"dtype": "auto" if dtype == "auto" else getattr(torch, dtype)}
        if (qcfg := gptq_loading_config(path, device, gptq_kernel)) is not None:
            kwargs["quantization_config"] = qcfg
        model = AutoModelForCausalLM.from_pretrained(path, device_map=device, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load model {path!r}: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model, tokenizer


def attention_mask(pad, stored: int, q: int, dtype):
    """Additive mask [B, 1, q, stored + q] for ``q`` new tokens after ``stored`` cached slots:
    causal, no row sees its padding (``pad`` [B] slots at its left), and every token sees
    itself (a padding query attends to itself only, so no row of the attention is empty)."""
    import torch

    j = torch.arange(stored + q, device=pad.device)[None, None, :]
    i = stored + torch.arange(q, device=pad.device)[None, :, None]
    allowed = ((j >= pad[:, None, None]) & (j <= i)) | (j == i)
    return torch.zeros(allowed.shape, dtype=dtype, device=pad.device).masked_fill_(
        ~allowed, torch.finfo(dtype).min)[:, None]


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model, tokenizer, kv_settings: dict, temperature: float, top_p: float,
                 batch_size: int | str = "auto", cell: str = ""):
        self.batch_size = batch_size  # rows per batch, or "auto": as many as fit (rows_per_batch)
        self.cell = cell
        self.model = model
        self.tokenizer = tokenizer
        self.kv_settings = kv_settings
        self.temperature = temperature
        self.top_p = top_p
        self.device = model.device
        from notallbits.kvcache.attention import use_grouped_attention

        use_grouped_attention(model)  # grouped-query attention without repeating K/V per query head

    @classmethod
    def from_spec(cls, spec: dict) -> "TransformersBackend":
        gen, samp = spec["generation"], spec["sampling"]
        model, tokenizer = load_model(spec["model_path"], gen["dtype"], gen["device"],
                                      gen.get("gptq_kernel", "gptq_triton"))
        cell = "/".join(str(spec[k]) for k in ("dataset", "model", "bits", "kv") if k in spec)
        return cls(model, tokenizer, spec["kv_settings"], samp["temperature"], samp["top_p"],
                   gen.get("batch_size", "auto"), cell)

    def rows_per_batch(self, rows_wanted: int, prompt_tokens: int, spec: ForcingSpec) -> int:
        """``batch_size``, or for "auto" the most rows whose peak memory (memory.kv_row_bytes)
        fits beside the loaded weights on this device (memory.kv_rows_per_batch); a job of which
        not even one row fits stops here with one line naming its cell."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        import torch

        from notallbits.memory import Arch, kv_batch_bytes, kv_row_bytes, kv_rows_per_batch

        config = self.model.config.get_text_config(decoder=True).to_dict()
        arch = Arch.from_hf_config(config)
        answer = len(spec.answer_prefix_ids) + spec.answer_max_tokens
        row = kv_row_bytes(arch, self.kv_settings, prompt_tokens + spec.max_budget, answer, prompt_tokens)["total"]
        row = row * self.model.dtype.itemsize // 2 if self.model.dtype.is_floating_point else row  # sized for bf16

        def batch(rows: int) -> int:  # what the batch holds once (R-KV's scratch grows with few rows)
            return kv_batch_bytes(arch, self.kv_settings, prompt_tokens + spec.max_budget,
                                  "cuda" if self.device.type == "cuda" else "cpu", self.model.dtype.itemsize, rows)

        weights = sum(t.nbytes for t in self.model.parameters()) + sum(t.nbytes for t in self.model.buffers())
        if self.device.type == "cuda":
            device_bytes = torch.cuda.get_device_properties(self.device).total_memory
        else:
            import os

            device_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        rows = kv_rows_per_batch(device_bytes, weights, row, rows_wanted, batch)
        if rows == 0:
            raise UserError(f"{self.cell or 'generation job'}: one row needs {(row + batch(1)) / 2**30:.1f} GiB beside "
                            f"{weights / 2**30:.1f} GiB of weights, more than this device's "
                            f"{device_bytes / 2**30:.0f} GiB allows (memory.kv_row_bytes); lower the budget "
                            "or use a larger GPU")
        return rows

    # -- model plumbing ------------------------------------------------------------
    def _new_cache(self):
        from notallbits.kvcache import make_cache

        return make_cache(self.kv_settings, self.model)

    def _forward(self, ids, cache, start, pad0):
        """Feed ``ids`` [B, L], row b at positions start[b]..start[b]+L-1; return the
        last-position logits [B, V] (on the device).

        Positions are explicit: an evicting cache is shorter than the sequence, rows of a
        batch differ in length, and RoPE must keep counting each row's true positions.
        ``pad0``: the rows' padding before the cache held any (see kvcache.padding).
        """
        import torch

        from notallbits.kvcache import padding

        q = ids.shape[1]
        stored = cache.layers[0].get_mask_sizes(q)[0] - q
        positions = (start[:, None] + torch.arange(q, device=self.device)[None]).clamp_min(0)
        mask = attention_mask(padding(cache, pad0), stored, q, self.model.dtype)
        out = self.model(input_ids=ids, past_key_values=cache, position_ids=positions, attention_mask=mask,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :]

    def _advance(self, ids, cache, start, pad0):
        """Prefill a known continuation. A full cache takes it in one forward; a compressing
        cache must see it token by token to reach exactly the state decoding would have."""
        if self.kv_settings.get("method", "full") == "full":
            return self._forward(ids, cache, start, pad0)
        logits = None
        for j in range(ids.shape[1]):
            logits = self._forward(ids[:, j : j + 1], cache, start + j, pad0)
        return logits

    def _force(self, cache, pos, pad0, seeds: list[int], budget: int, spec: ForcingSpec) -> list[list[int]]:
        """Generate the forced answer of every row at this budget, on a fork of the cache."""
        import torch

        from notallbits.kvcache import fork

        fork = fork(cache, len(spec.answer_prefix_ids) + spec.answer_max_tokens)  # writes only its answer
        rows = len(seeds)
        prefix = torch.tensor([spec.answer_prefix_ids] * rows, device=self.device)
        logits = self._advance(prefix, fork, pos, pad0)
        pos = pos + prefix.shape[1]
        # a separate stream per (sample, budget): forcing never perturbs the trace itself
        streams = torch.tensor([derive_seed(s, "answer", budget) for s in seeds], device=self.device)
        answers: list[list[int]] = [[] for _ in range(rows)]
        done = [False] * rows
        for n in range(spec.answer_max_tokens):
            tokens = sample_rows(logits, streams, n, self.temperature, self.top_p)
            for r, tok in enumerate(tokens.tolist()):
                if not done[r]:
                    answers[r].append(tok)
                    done[r] = tok in spec.eos_ids
            if all(done):
                break
            logits = self._forward(tokens[:, None], fork, pos, pad0)
            pos = pos + 1
        return answers

    def _decode(self, prompts: list[list[int]], seeds: list[int], spec: ForcingSpec,
                progress=None) -> list[SampleResult]:
        """Trace every row (its own prompt and seed) to the largest budget, forcing an answer
        at each budget."""
        import torch

        from notallbits.kvcache import reserve, set_padding

        t0 = time.perf_counter()
        rows = len(seeds)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(p) for p in prompts)
        with torch.inference_mode():
            cache = self._new_cache()
            ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=self.device)
            pad0 = torch.tensor([width - len(p) for p in prompts], device=self.device)
            set_padding(cache, pad0)
            # the trace's slots beyond the prompt at once (a full cache holds them all; the others cap it)
            answer = len(spec.answer_prefix_ids) + spec.answer_max_tokens
            reserve(cache, spec.max_budget + 2 * answer, fork_tokens=answer)
            logits = self._forward(ids, cache, -pad0, pad0)
            pos = torch.tensor([len(p) for p in prompts], device=self.device)
            traces = [Trace(spec) for _ in range(rows)]
            seed_t = torch.tensor(seeds, dtype=torch.long, device=self.device)
            forced: dict[int, list[list[int]]] = {}
            step = 0
            while not all(t.finished for t in traces):
                sampled = sample_rows(logits, seed_t, step, self.temperature, self.top_p).tolist()
                thinking = sum(1 for t in traces if not t.finished and t.natural_end is None)
                fed = [pad_id if tr.finished else tr.push(tok) for tr, tok in zip(traces, sampled)]
                logits = self._forward(torch.tensor(fed, device=self.device)[:, None], cache, pos, pad0)
                pos = pos + 1
                step += 1
                if progress is not None:
                    progress.update(thinking)
                if step in spec.budgets and any(t.natural_end is None for t in traces):
                    forced[step] = self._force(cache, pos, pad0, seeds, step, spec)
        elapsed = time.perf_counter() - t0
        results = []
        for r, (tr, seed) in enumerate(zip(traces, seeds)):
            res = SampleResult(r, seed, tr.thinking, tr.wait_positions, tr.natural_end, tr.natural_answer,
                               trace_seconds=elapsed / rows)
            for budget, answers in forced.items():
                if res.needs_forcing(budget):
                    res.answers[budget] = answers[r]
            results.append(res)
        return results

    # -- public --------------------------------------------------------------------
    def generate(self, prompt_ids: list[int], seeds: list[int], spec: ForcingSpec,
                 progress=None) -> list[SampleResult]:
        """Trace every sample of one prompt to the largest budget, forcing an answer at each budget."""
        return self._decode([list(prompt_ids)] * len(seeds), list(seeds), spec, progress)

    def generate_job(self, requests: list[QuestionRequest], spec: ForcingSpec, progress=None):
        """All requests' samples in batches of ``batch_size`` rows across questions (in job
        order); a question is yielded when its last sample is done."""
        rows = [(req, i, seed) for req in requests for i, seed in zip(req.samples, req.seeds)]
        finished: dict[str, list[SampleResult]] = {req.question_id: [] for req in requests}
        if not rows:
            return
        size = self.rows_per_batch(len(rows), max(len(req.prompt_ids) for req in requests), spec)
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            results = self._decode([list(req.prompt_ids) for req, _, _ in batch], [seed for _, _, seed in batch],
                                   spec, progress)
            for (req, i, _), res in zip(batch, results):
                res.sample = i
                finished[req.question_id].append(res)
                if len(finished[req.question_id]) == len(req.samples):
                    yield req, finished.pop(req.question_id)

    def force_from_traces(self, prompt_ids: list[int], results: list[SampleResult], budgets: list[int],
                          spec: ForcingSpec) -> None:
        """Add forced answers at new (smaller) budgets to stored traces, without resampling them."""
        import torch

        rows = len(results)
        with torch.inference_mode():
            cache = self._new_cache()
            seeds = [r.seed for r in results]
            pad0 = torch.zeros(rows, dtype=torch.long, device=self.device)
            pos = torch.zeros(rows, dtype=torch.long, device=self.device)
            self._forward(torch.tensor([prompt_ids] * rows, device=self.device), cache, pos, pad0)
            done = len(prompt_ids)
            pos = pos + done
            for budget in sorted(budgets):
                chunk = [r.thinking_ids[done - len(prompt_ids): budget] for r in results]
                width = max(len(c) for c in chunk)
                pad = self.tokenizer.pad_token_id or 0
                chunk = [c + [pad] * (width - len(c)) for c in chunk]  # rows that ended early are unused
                if width:
                    self._advance(torch.tensor(chunk, device=self.device), cache, pos, pad0)
                    pos = pos + width
                    done += width
                answers = self._force(cache, pos, pad0, seeds, budget, spec)
                for r, res in enumerate(results):
                    if res.needs_forcing(budget):
                        res.answers[budget] = answers[r]
