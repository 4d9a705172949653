"""KV-method benchmarks, on this machine.

Decode speed of each KV method relative to the full cache, same model and trace length:

    python -m notallbits.bench.kv_methods MODEL_DIR [--tokens 512] [--batch 4] [--budget 128]

Time and peak extra memory of one R-KV compression of one layer (no model needed), at a
head shape (default Qwen3-8B: 32 query heads, 8 KV heads, head_dim 128, bf16 keys), against
the bound the memory model counts (the layer's own K + V bytes) and optionally against
another implementation (a file defining ``rkv_select``, e.g. an older eviction.py):

    python -m notallbits.bench.kv_methods --rkv [--budgets 256 2048 4096 8192] [--batches 1 8] [--old FILE] [--threads 1]

Time of HQQ's quantization of a layer's keys and values (kvcache.quantized._hqq_codes, what
every requantization runs) against hqq's own Quantizer.quantize on each row alone (the peer,
whose codes, scales and zeros it must equal bit for bit: checked on every row), and optionally
against another implementation (a file defining ``_hqq_codes``, e.g. an older quantized.py),
on the first layer's K and V of a random Qwen3 at a real head layout (32 query / 8 KV heads x
128, float32) after a prefill of ``--tokens`` tokens:

    python -m notallbits.bench.kv_methods --hqq [--tokens 2176] [--batch 4] [--nbits 2 4 8] [--old FILE] [--threads 1]

Peak extra memory: on CUDA ``torch.cuda.max_memory_allocated`` above the inputs; on CPU the
peak of live tensor bytes allocated during the call, tracked through a TorchDispatchMode
(every tensor an op returns that does not alias an input counts until it is freed; an op's
internal workspace is not seen).
"""

from __future__ import annotations

import argparse
import time
import weakref


def decode_seconds(model, settings: dict, tokens: int, batch: int, repeats: int = 3) -> float:
    import torch

    from notallbits.kvcache import make_cache

    ids = torch.randint(10, model.config.vocab_size, (batch, tokens + 16), generator=torch.Generator().manual_seed(0))
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            cache = make_cache(settings, model)
            model(input_ids=ids[:, :16], past_key_values=cache, position_ids=torch.arange(16)[None])
            t0 = time.perf_counter()
            for t in range(16, 16 + tokens):
                model(input_ids=ids[:, t : t + 1], past_key_values=cache, position_ids=torch.tensor([[t]]),
                      logits_to_keep=1)
            best = min(best, time.perf_counter() - t0)
    return best


# --------------------------------------------------------------------------- peak memory
def peak_extra_bytes(fn, *args, **kwargs) -> tuple[object, int]:
    """(fn's result, peak bytes of tensors allocated during the call and alive at once)."""
    import torch

    if any(isinstance(a, torch.Tensor) and a.is_cuda for a in args):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
        return out, torch.cuda.max_memory_allocated() - base
    with _LiveTensorBytes() as tracker:
        out = fn(*args, **kwargs)
    return out, tracker.peak


def _live_tensor_bytes_mode():
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveTensorBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0
            self.storages: dict[int, list[int]] = {}  # data_ptr -> [bytes, live tensors on it]

        def _release(self, ptr: int) -> None:
            entry = self.storages[ptr]
            entry[1] -= 1
            if entry[1] == 0:
                self.live -= entry[0]
                del self.storages[ptr]

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            import torch

            out = func(*args, **(kwargs or {}))
            inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                      if isinstance(t, torch.Tensor)}
            for t in tree_flatten(out)[0]:
                if not isinstance(t, torch.Tensor) or t.untyped_storage().nbytes() == 0:
                    continue
                ptr = t.untyped_storage().data_ptr()
                if ptr in self.storages:
                    self.storages[ptr][1] += 1
                elif ptr in inputs:
                    continue  # a view of, or an in-place result on, memory allocated before the call
                else:
                    self.storages[ptr] = [t.untyped_storage().nbytes(), 1]
                    self.live += self.storages[ptr][0]
                    self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._release, ptr)
            return out

    return LiveTensorBytes


def _LiveTensorBytes():  # noqa: N802 - a class built lazily (torch is imported on use)
    return _live_tensor_bytes_mode()()


# --------------------------------------------------------------------------- R-KV compression
def rkv_compression(select, batch: int, budget: int, buffer: int = 128, heads: int = 32, kv_heads: int = 8,
                    head_dim: int = 128, dtype: str = "bfloat16", device: str = "cpu", repeats: int = 2) -> dict:
    """Time and peak extra memory of one compression of one layer at the compressing step's
    cache length, budget + buffer."""
    import torch

    from notallbits.kvcache.settings import normalize

    s = normalize({"method": "rkv", "budget": budget, "buffer": buffer})
    length = budget + buffer
    g = torch.Generator(device=device).manual_seed(0)
    dt = getattr(torch, dtype)
    queries = torch.randn(batch, heads, s["window"], head_dim, generator=g, device=device).to(dt)
    keys = torch.randn(batch, kv_heads, length, head_dim, generator=g, device=device).to(dt)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):  # timed without the memory tracker (its per-op hook costs time)
            t0 = time.perf_counter()
            select(queries, keys, s)
            if keys.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        _, peak = peak_extra_bytes(select, queries, keys, s)
    return {"batch": batch, "budget": budget, "tokens": length, "seconds": best, "peak_extra_bytes": peak,
            "layer_kv_bytes": 2 * keys.nbytes}


def rkv_table(budgets, batches, old_file: str | None = None, device: str = "cpu", max_old_bytes: float = 6 * 2**30):
    from notallbits.kvcache.eviction import rkv_select

    old = None
    if old_file:
        import importlib.util

        spec = importlib.util.spec_from_file_location("old_eviction", old_file)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    mib = 2**20
    print("batch budget tokens | new: seconds, peak extra MiB, / layer K+V"
          + (" | old: seconds, peak extra MiB | old/new time, memory" if old else ""))
    for batch in batches:
        for budget in budgets:
            new = rkv_compression(rkv_select, batch, budget, device=device)
            line = (f"{batch:5d} {budget:6d} {new['tokens']:6d} | {new['seconds']:8.3f} {new['peak_extra_bytes'] / mib:9.1f}"
                    f" {new['peak_extra_bytes'] / new['layer_kv_bytes']:5.2f}")
            # the old scorer holds ~ 2 fp32 L x L matrices per KV head: skip where that cannot fit here
            if old is not None and 2 * 4 * batch * 8 * new["tokens"] ** 2 <= max_old_bytes:
                o = rkv_compression(lambda q, k, s: old.rkv_select(q, k, {**s, "sim_threshold": 0.9}), batch, budget,
                                    device=device)
                line += (f" | {o['seconds']:8.3f} {o['peak_extra_bytes'] / mib:9.1f}"
                         f" | {o['seconds'] / new['seconds']:6.1f}x {o['peak_extra_bytes'] / new['peak_extra_bytes']:6.1f}x")
            elif old is not None:
                line += " | (old skipped: would need > max_old_bytes)"
            print(line, flush=True)


# --------------------------------------------------------------------------- HQQ quantization
def hqq_inputs(tokens: int, batch: int, device: str = "cpu"):
    """Keys and values [batch, 8, tokens, 128] (float32) of the first layer of a random Qwen3 with
    32 query / 8 KV heads of 128 (bench.kv's step model) after a prefill of ``tokens`` tokens."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config
    from transformers.cache_utils import DynamicCache

    config = Qwen3Config(vocab_size=512, hidden_size=512, intermediate_size=512, num_hidden_layers=1,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         max_position_embeddings=65536, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(device).eval()
    ids = torch.randint(5, 500, (batch, tokens), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        cache = DynamicCache()
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return cache.layers[0].keys.clone(), cache.layers[0].values.clone()


def _seconds(fn, clock, repeats: int = 2) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = clock()
        out = fn()
        best = min(best, clock() - t0)
    return best, out


def hqq_table(tokens: int, batch: int, nbits_list, old_file: str | None = None, device: str = "cpu") -> None:
    import torch
    from hqq.core.quantize import Quantizer

    from notallbits.kvcache.quantized import _hqq_codes

    old = None
    if old_file:
        import importlib.util

        spec = importlib.util.spec_from_file_location("old_quantized", old_file)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    keys, values = hqq_inputs(tokens, batch, device)
    # one CPU thread: the process's CPU time (what wall time is on an idle machine, less what
    # other processes take); otherwise wall time
    by_cpu = device == "cpu" and torch.get_num_threads() == 1
    clock = time.process_time if by_cpu else time.perf_counter
    print(f"HQQ quantization of one layer's K or V: {batch} rows x 8 KV heads x {tokens} tokens x 128, float32, "
          f"group 64, timed by {'CPU time' if by_cpu else 'wall time'} | ours seconds | hqq (each row alone) "
          "seconds, hqq/ours | bit-equal" + (" | old seconds, old/ours" if old else ""))

    def hqq_rows_alone(x, nbits):
        return [Quantizer.quantize(x[r : r + 1].contiguous(), nbits=nbits, group_size=64, axis=0, device=device,
                                   compute_dtype=torch.float32, bitpack=False) for r in range(x.shape[0])]

    with torch.inference_mode():
        for name, x in (("keys", keys), ("values", values)):
            for nbits in nbits_list:
                ours_s, (codes, scale, zero) = _seconds(lambda: _hqq_codes(x, nbits, 64), clock)
                hqq_s, ref = _seconds(lambda: hqq_rows_alone(x, nbits), clock, repeats=1)
                equal = all(torch.equal(q.to(torch.uint8), codes[r]) and torch.equal(m["scale"], scale[r])
                            and torch.equal(m["zero"], zero[r]) for r, (q, m) in enumerate(ref))
                line = (f"{name:<7} {nbits}-bit | {ours_s:8.3f} | {hqq_s:8.3f} {hqq_s / ours_s:6.2f}x | "
                        f"{'yes' if equal else 'NO'}")
                if old is not None:
                    old_s, _ = _seconds(lambda: old._hqq_codes(x, nbits, 64), clock)
                    line += f" | {old_s:8.3f} {old_s / ours_s:6.2f}x"
                print(line, flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?")
    p.add_argument("--tokens", type=int, help="decode: trace tokens (default 512); --hqq: prefill tokens (2176)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--budget", type=int, default=128)
    p.add_argument("--rkv", action="store_true", help="time and memory of one R-KV compression")
    p.add_argument("--budgets", type=int, nargs="+", default=[256, 2048, 4096, 8192])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--old", help="with --rkv: a file with another rkv_select to compare; with --hqq: a file with "
                   "another _hqq_codes")
    p.add_argument("--hqq", action="store_true", help="time of HQQ's quantization of a layer's K and V against hqq's")
    p.add_argument("--nbits", type=int, nargs="+", default=[2, 4, 8], help="with --hqq: bits per value")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 gives steadier timings on a shared machine)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.rkv:
        rkv_table(args.budgets, args.batches, args.old, args.device)
        return
    if args.hqq:
        hqq_table(args.tokens or 2176, args.batch, args.nbits, args.old, args.device)
        return
    if not args.model:
        p.error("MODEL_DIR is required (or --rkv)")
    import torch
    from transformers import AutoModelForCausalLM

    from notallbits.kvcache.settings import METHODS

    args.tokens = args.tokens or 512
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).eval()
    methods = {"full": {"method": "full"}}
    for name, method in METHODS.items():  # every method of the table, eviction at --budget
        if name != "full":
            methods[name] = {"method": name, **({"budget": args.budget} if "budget" in method.defaults else {})}
    base = decode_seconds(model, methods["full"], args.tokens, args.batch)
    print(f"full: {args.tokens * args.batch / base:.0f} tok/s")
    for name, settings in methods.items():
        if name != "full":
            s = decode_seconds(model, settings, args.tokens, args.batch)
            print(f"{name}: {args.tokens * args.batch / s:.0f} tok/s, {s / base:.2f}x the full cache's time")


if __name__ == "__main__":
    main()
