"""Memory and step time of the transformers backend per KV method, measured on this machine.

    python -m notallbits.bench.kv rows  [--batch 32] [--questions 16] [--samples 2] [--budget 512] [--layers 2]
    python -m notallbits.bench.kv step  [--tokens 2048] [--batch 4] [--kv-budget 1024] [--steps 128]

``rows``: one generation job (random Qwen3, 16 query / 8 KV heads, head_dim 128, ``--layers``
layers (2; 16 or 28 for a real model's depth, where one layer's transient copies are a small part
of the cache), fp32, ``--questions`` x ``--samples``, one budget) through ``TransformersBackend.generate_job``
at ``--batch`` rows per batch and at 1 row; prints per method the growth of the process's peak
memory between the two against the KV cache of the extra rows (at the job's trace length) and
against the memory model's peak of those rows (memory.kv_row_bytes). Every run is a fresh process.

``step``: a decoder at a real head layout (default Qwen3-8B's 32 query / 8 KV heads,
head_dim 128; ``--layers`` of them, small MLP and vocabulary, so the step time is the KV's),
a prompt of ``--tokens`` tokens per row, then ``--steps`` decode steps and a forced answer
(``--answer`` tokens on a fork of the cache), then ``--interleave`` steps timed alternately
with a full cache at the same trace length (so a loaded machine slows both alike). Prints per
method: the time per decode step and its ratio to the full cache's; the peak bytes during decode
and during forcing (above the weights and inputs) against the memory model's estimate
(memory.kv_row_bytes x rows, less the prefill's activations, + memory.kv_batch_bytes; code
without it: the cache at its peak, plus the answer's tokens when forcing).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the process's resident
high-water mark (VmHWM, reset through /proc/self/clear_refs before each phase), with
glibc's mmap threshold fixed so freed tensors leave the resident set at once.
"""

from __future__ import annotations

import argparse
import ctypes
import inspect
import json
import os
import subprocess
import sys
import time

MIB = 2**20
# what --clock times steps by: wall time, or the process's CPU time (one thread on a CPU: what
# wall time is on an idle machine, less the time other processes take the core)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
METHODS = ("full", "streamingllm", "rkv", "hqq")


def heap_allocations() -> bool:
    """Undo MMAP_ENV for the rest of the process (glibc): blocks under 32 MiB come from the heap
    again, as in a normal run, where glibc's threshold rises to the size of the blocks freed. With
    MMAP_ENV (set so a phase's peak shows in the resident high-water mark) every block over 64 KiB
    is mapped afresh and its pages faulted in, which a step that allocates much pays in time (HQQ's
    requantization: 2.4x the full cache's step against 2.0x without). False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(-3, 32 << 20) and libc.mallopt(-1, 64 << 20))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


# --------------------------------------------------------------------------- peak memory
class Peak:
    """Peak bytes of a phase: CUDA's allocator counter, or the process's resident high-water mark."""

    def __init__(self, device):
        self.cuda = str(device).startswith("cuda")

    def now(self) -> int:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated()
        return _status_kib("VmRSS") * 1024

    def reset(self) -> int:
        """Start a phase; returns the bytes in use now."""
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        return self.now()

    def peak(self) -> int:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return _status_kib("VmHWM") * 1024


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _child(args: list[str]) -> dict:
    env = {**os.environ, **MMAP_ENV}
    out = subprocess.run([sys.executable, "-m", "notallbits.bench.kv", *args], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def kv_settings(method: str, budget: int, buffer: int, residual: int) -> dict:
    return {"full": {"method": "full"},
            "streamingllm": {"method": "streamingllm", "budget": budget},
            "rkv": {"method": "rkv", "budget": budget, "buffer": buffer},
            "hqq": {"method": "hqq", "nbits": 4, "residual_length": residual}}[method]


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


# --------------------------------------------------------------------------- rows: batch N vs 1
ROWS_ARCH = dict(hidden_size=256, intermediate_size=512, num_attention_heads=16, num_key_value_heads=8, head_dim=128)


def rows_one(a) -> dict:
    """One job at ``a.batch`` rows per batch (``a.limit_rows`` rows at most): peak resident bytes
    above the loaded model, and the cache bytes the memory model counts for one row."""
    import tempfile
    from pathlib import Path

    import torch

    from notallbits.bench.kv_throughput import job
    from notallbits.generation.forcing import ForcingSpec
    from notallbits.generation.hf_backend import TransformersBackend, load_model
    from notallbits.tinymodel import build

    _threads(a.threads)
    folder = build(Path(tempfile.mkdtemp(prefix="kvmem-")) / "m", dtype="float32", num_hidden_layers=a.layers,
                   **ROWS_ARCH)
    model, tok = load_model(str(folder), "float32", "cpu")
    settings = kv_settings(a.method, a.kv_budget, a.rkv_buffer, a.hqq_residual)
    spec = ForcingSpec.from_tokenizer(tok, [a.budget], "Wait", "\n\n**Final Answer**\n\\boxed{", a.answer)
    requests = job(tok, a.questions, a.samples, "default")
    if a.limit_rows:  # the first rows only: a batch of one row peaks alike in every batch
        from notallbits.generation.forcing import QuestionRequest

        r = requests[0]
        requests = [QuestionRequest(r.question_id, r.prompt_ids, r.samples[:a.limit_rows], r.seeds[:a.limit_rows])]
    backend = TransformersBackend(model, tok, settings, 0.6, 0.95, a.batch)
    peak = Peak("cpu")
    base = peak.reset()
    prompt = max(len(r.prompt_ids) for r in requests)
    t0 = time.perf_counter()
    for _ in backend.generate_job(requests, spec):
        pass
    answer = len(spec.answer_prefix_ids) + spec.answer_max_tokens
    try:
        from notallbits.memory import Arch, kv_row_bytes

        parts = kv_row_bytes(Arch.from_hf_config(model.config.to_dict()), settings, prompt + a.budget, answer, prompt)
        row_model = parts["total"] * 2  # fp32: twice the bf16 bytes the model counts
    except ImportError:  # older code: no row model
        row_model = None
    return {"method": a.method, "batch": a.batch, "peak_bytes": peak.peak() - base, "seconds": time.perf_counter() - t0,
            "row_kv_bytes": row_kv_bytes(model.config, settings, prompt + a.budget, torch.float32),
            "row_model_bytes": row_model}


def row_kv_bytes(config, settings: dict, tokens: int, dtype) -> int:
    """The KV cache of one row at its peak tokens, as kvcache.settings counts them (in ``dtype``;
    HQQ: quantized + residual window; no scratch)."""
    import torch

    from notallbits.kvcache.settings import METHODS, NATIVE_BYTES, normalize

    s = normalize(settings)
    values = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim
    method = METHODS[s["method"]]
    held = method.sample_bytes(s, tokens, values) if s["method"] == "hqq" \
        else method.tokens_held(s, tokens) * values * NATIVE_BYTES  # the cache itself, no scratch
    return held * torch.finfo(dtype).bits // 8 // NATIVE_BYTES


def rows_table(a) -> None:
    common = ["--questions", str(a.questions), "--samples", str(a.samples), "--budget", str(a.budget),
              "--kv-budget", str(a.kv_budget), "--rkv-buffer", str(a.rkv_buffer), "--hqq-residual",
              str(a.hqq_residual), "--answer", str(a.answer), "--layers", str(a.layers)] \
        + (["--threads", str(a.threads)] if a.threads else [])
    print(f"rows: random Qwen3 {a.layers} layers x {ROWS_ARCH}, fp32, {a.questions} questions x {a.samples} samples, "
          f"budget {a.budget}; "
          f"KV budget {a.kv_budget} (R-KV buffer {a.rkv_buffer}), HQQ 4-bit residual {a.hqq_residual}")
    print(f"{'method':<13}{'peak@1 MiB':>11}{'peak@' + str(a.batch) + ' MiB':>12}{'growth MiB':>11}"
          f"{'extra rows KV MiB':>18}{'growth/KV':>10}{'row model MiB':>14}{'growth/model':>13}")
    for method in a.methods:
        one = _child(["_rows", method, "--batch", "1", "--limit-rows", "2", *common])
        many = _child(["_rows", method, "--batch", str(a.batch), *common])
        extra = (a.batch - 1) * many["row_kv_bytes"]
        growth = many["peak_bytes"] - one["peak_bytes"]
        print(f"{method:<13}{one['peak_bytes'] / MIB:>11.0f}{many['peak_bytes'] / MIB:>12.0f}{growth / MIB:>11.0f}"
              f"{extra / MIB:>18.0f}{growth / extra:>10.2f}"
              + (f"{(a.batch - 1) * many['row_model_bytes'] / MIB:>14.0f}"
                 f"{growth / ((a.batch - 1) * many['row_model_bytes']):>13.2f}" if many.get("row_model_bytes") else ""),
              flush=True)


# --------------------------------------------------------------------------- step: real head layout
def step_one(a) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from notallbits.kvcache import fork, held_bytes, make_cache

    _threads(a.threads)
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, a.dtype)
    config = Qwen3Config(vocab_size=512, hidden_size=512, intermediate_size=512, num_hidden_layers=a.layers,
                         num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=a.head_dim,
                         max_position_embeddings=65536, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    try:  # what the backend attends with (older code: transformers' SDPA)
        from notallbits.kvcache.attention import use_grouped_attention

        use_grouped_attention(model)
    except ImportError:
        pass
    settings = kv_settings(a.method, a.kv_budget, a.rkv_buffer, a.hqq_residual)
    clock = CLOCKS[a.clock]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 500, (a.batch, a.tokens + a.warmup + a.steps + a.answer + a.interleave + 1),
                        generator=g).to(device)
    peak = Peak(device)

    def forward(cache, chunk, start):
        pos = torch.arange(start, start + chunk.shape[1], device=device)[None].expand(a.batch, -1)
        return model(input_ids=chunk, past_key_values=cache, position_ids=pos, use_cache=True, logits_to_keep=1)

    with torch.inference_mode():
        base = peak.reset()
        cache = make_cache(settings, model)
        forward(cache, ids[:, : a.tokens], 0)
        t = a.tokens
        for _ in range(a.warmup):
            forward(cache, ids[:, t : t + 1], t)
            t += 1
        before_decode = peak.reset() - base
        t0 = clock()
        for _ in range(a.steps):
            forward(cache, ids[:, t : t + 1], t)
            t += 1
        if device == "cuda":
            torch.cuda.synchronize()
        step_s = (clock() - t0) / a.steps
        decode_peak = peak.peak() - base
        held = held_bytes(cache)
        before_force = peak.reset() - base
        twin = fork(cache, a.answer) if "tokens" in inspect.signature(fork).parameters else fork(cache)
        for j in range(a.answer):
            forward(twin, ids[:, t + j : t + j + 1], t + j)
        force_peak = peak.peak() - base
        del twin
        t += a.answer
        if a.method != "full" and a.interleave:  # the full cache's step at the same trace length, alternating
            if device == "cpu":  # peaks are measured: time the steps with a normal run's allocator
                heap_allocations()
            full = make_cache({"method": "full"}, model)
            forward(full, ids[:, :t], 0)
            spent = {"method": 0.0, "full": 0.0}
            for s in range(a.interleave):
                for name, c in (("method", cache), ("full", full)):
                    t1 = clock()
                    forward(c, ids[:, t + s : t + s + 1], t + s)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    spent[name] += clock() - t1
            step_s, full_s = spent["method"] / a.interleave, spent["full"] / a.interleave
        else:
            full_s = step_s
    decode_model, force_model = model_estimate(config, settings, t, a.answer, dtype)
    try:  # what the batch holds once (R-KV's scoring scratch, HQQ's requantizing work)
        from notallbits.memory import Arch, kv_batch_bytes

        batch_model = kv_batch_bytes(Arch.from_hf_config(config.to_dict()), settings, t,
                                     "cuda" if device == "cuda" else "cpu", torch.finfo(dtype).bits // 8)
    except ImportError:  # older code: none
        batch_model = 0
    answer_kv = torch.finfo(dtype).bits // 8 * 2 * a.layers * a.kv_heads * a.head_dim * a.answer * a.batch
    weights = sum(t.nbytes for t in model.parameters())
    return {"method": a.method, "step_s": step_s, "full_step_s": full_s, "decode_peak": decode_peak,
            "force_peak": force_peak,
            "weight_bytes": weights,
            "held": held, "before_decode": before_decode, "before_force": before_force,
            "model_peak": decode_model * a.batch + batch_model, "model_force": force_model * a.batch + batch_model,
            "answer_kv": answer_kv,
            "trace": t}


def model_estimate(config, settings: dict, trace: int, answer: int, dtype) -> tuple[float, float]:
    """The memory model's bytes of one row during decode and during forcing (memory.kv_row_bytes,
    in ``dtype``): the row's peak less the prefill's activations; during decode also less the
    fork's parts. Older code without kv_row_bytes: the cache at its peak (settings.sample_bytes)."""
    import torch

    scale = torch.finfo(dtype).bits // 8 / 2
    try:
        from notallbits.memory import Arch, kv_row_bytes
    except ImportError:
        from notallbits.kvcache.settings import METHODS, normalize

        s = normalize(settings)
        values = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim
        cache = scale * METHODS[s["method"]].sample_bytes(s, trace, values)
        return cache, cache + scale * values * 2 * answer
    parts = kv_row_bytes(Arch.from_hf_config(config.to_dict()), settings, trace, answer, 1)
    force = parts["total"] - parts["activations"]
    decode = force - parts["fork_tail"] - parts["hqq_fork_requantized"]
    return scale * decode, scale * force


def step_args(a) -> list[str]:
    return ["--tokens", str(a.tokens), "--batch", str(a.batch), "--steps", str(a.steps), "--layers", str(a.layers),
            "--heads", str(a.heads), "--kv-heads", str(a.kv_heads), "--head-dim", str(a.head_dim),
            "--kv-budget", str(a.kv_budget), "--rkv-buffer", str(a.rkv_buffer), "--hqq-residual",
            str(a.hqq_residual), "--answer", str(a.answer), "--dtype", a.dtype, "--device", a.device,
            "--warmup", str(a.warmup), "--interleave", str(a.interleave), "--clock", a.clock] \
        + (["--threads", str(a.threads)] if a.threads else [])


def gpu_check(work=None) -> list[tuple[str, str, str]]:
    """``make gpu-check`` (gpucheck.check_kv_compression): each KV method at Qwen3-8B's head
    layout (4 layers, batch 8, an 8k-token prompt, bf16) on the GPU: peak during decode and during
    forcing against the memory model (torch.cuda.max_memory_allocated), and the step time against
    the full cache's. PASS when every peak is within 1.25x its estimate and StreamingLLM / R-KV
    steps cost at most 1.3x the full cache's, HQQ at most 2x. Returns (status, name, detail) rows."""
    a = main(["step", "--layers", "4", "--batch", "8", "--tokens", "8192", "--kv-budget", "4096", "--steps", "64",
              "--interleave", "64", "--dtype", "bfloat16", "--device", "cuda"], run=False)
    rows = []
    for method in METHODS:
        name = f"kv cell {method} on cuda"
        try:
            r = _child(["_step", method, *step_args(a)])
        except SystemExit as exc:
            rows.append(("FAIL", name, str(exc).splitlines()[-1]))
            continue
        ratio = r["step_s"] / r["full_step_s"]
        decode, force = r["decode_peak"] / r["model_peak"], r["force_peak"] / r["model_force"]
        limit = 2.0 if method == "hqq" else 1.3
        ok = decode <= 1.25 and force <= 1.25 and (method == "full" or ratio <= limit)
        rows.append(("PASS" if ok else "FAIL", name,
                     f"{r['step_s'] * 1e3:.2f} ms/step ({ratio:.2f}x full, limit {limit}); peak decode {decode:.2f}x, "
                     f"forcing {force:.2f}x the memory model"))
    return rows


def copy_bandwidth(device: str, mib: int = 256, repeats: int = 5, clock=time.perf_counter) -> float:
    """Bytes per second this device reads + writes in a large tensor copy (best of ``repeats``, timed by
    ``clock``)."""
    import torch

    device = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    src = torch.ones(mib * MIB // 4, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = clock()
        dst.copy_(src)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, clock() - t0)
    return 2 * src.nbytes / best


def step_table(a) -> None:
    common = step_args(a)
    print(f"step: {a.layers} layers of {a.heads} query / {a.kv_heads} KV heads x {a.head_dim}, {a.dtype}, "
          f"batch {a.batch}, prompt {a.tokens} + {a.warmup} warm-up + {a.steps} timed steps, answer {a.answer}; "
          f"KV budget {a.kv_budget} (R-KV buffer {a.rkv_buffer}), HQQ 4-bit residual {a.hqq_residual}"
          + ("; timed by the process's CPU time" if a.clock == "cpu" else ""))
    _threads(a.threads)
    bandwidth = copy_bandwidth(a.device, clock=CLOCKS[a.clock])
    print(f"copy bandwidth of this device: {bandwidth / 1e9:.1f} GB/s; 'x bytes' = step time / the time to move "
          "the weights + the held KV once at that bandwidth")
    print(f"{'method':<13}{'ms/step':>9}{'vs full':>8}{'x bytes':>8}{'held MiB':>9}{'decode peak':>12}{'model':>8}"
          f"{'ratio':>7}{'force peak':>11}{'model':>10}{'ratio':>7}")
    full = None
    for method in a.methods:
        r = _child(["_step", method, *common])
        if not a.interleave:
            full = r["step_s"] if method == "full" else full
            r["full_step_s"] = full
        ratio = f"{r['step_s'] / r['full_step_s']:.2f}"
        moved = (r["weight_bytes"] + r["held"]) / bandwidth
        print(f"{method:<13}{r['step_s'] * 1e3:>9.2f}{ratio:>8}{r['step_s'] / moved:>8.1f}{r['held'] / MIB:>9.1f}"
              f"{r['decode_peak'] / MIB:>12.1f}"
              f"{r['model_peak'] / MIB:>8.1f}{r['decode_peak'] / r['model_peak']:>7.2f}{r['force_peak'] / MIB:>11.1f}"
              f"{r['model_force'] / MIB:>10.1f}{r['force_peak'] / r['model_force']:>7.2f}", flush=True)


def main(argv=None, run: bool = True):
    p = argparse.ArgumentParser(prog="python -m notallbits.bench.kv", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["rows", "step", "_rows", "_step"])
    p.add_argument("method", nargs="?")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--batch", type=int)
    p.add_argument("--questions", type=int, default=16)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--budget", type=int, default=512, help="rows: the job's thinking budget")
    p.add_argument("--limit-rows", type=int)
    p.add_argument("--kv-budget", type=int)
    p.add_argument("--rkv-buffer", type=int)
    p.add_argument("--hqq-residual", type=int, default=128)
    p.add_argument("--answer", type=int, default=16, help="forced answer tokens")
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--interleave", type=int, default=128,
                   help="step: then time this many steps alternating with a full cache at the same trace length "
                        "(the 'vs full' ratio; 0: against the full cache's own run)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="step: 'cpu' times steps by the process's CPU time (with --device cpu --threads 1: what wall "
                        "time is on an idle machine, and much less moved by other processes)")
    a = p.parse_args(argv)
    if a.clock == "cpu" and (a.threads != 1 or a.device != "cpu"):
        p.error("--clock cpu needs --device cpu --threads 1 (a process's CPU time adds up its threads and does "
                "not count a GPU's)")
    rows = a.what in ("rows", "_rows")
    a.batch = a.batch or (32 if rows else 4)
    a.kv_budget = a.kv_budget or (256 if rows else 1024)
    a.rkv_buffer = a.rkv_buffer or (64 if rows else 128)
    if not run:
        return a
    if a.what == "_rows":
        print(json.dumps(rows_one(a)))
    elif a.what == "_step":
        print(json.dumps(step_one(a)))
    elif rows:
        rows_table(a)
    else:
        step_table(a)


if __name__ == "__main__":
    main()
