"""What a KV method is: the one table of KV methods, torch-free so config validation, the grid,
the rules and the memory model read it at Snakefile parse time.

Per method: its defaults, its checks, the tokens one sample holds at the peak, the bytes of
that peak (R-KV's scoring scratch is a batch's, ``rkv_scratch_bytes``), and whether it needs
the transformers backend (vLLM has no decode-time eviction and only FP8 KV). The cache classes
live in ``eviction.py`` / transformers; ``make_cache`` in ``__init__`` maps a method to one.
The config schema's ``kv_methods`` enum and keys are pinned to this table by a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from notallbits import UserError

NATIVE_BYTES = 2  # bf16 keys and values
# StreamingLLM masks the tokens it evicts and drops them together once streaming_slack(budget)
# are held (eviction.StreamingLLMLayer): on the transformers backend its slots peak at budget +
# slack + 1 tokens (memory.kv_row_bytes counts them; the method's own memory is its budget).
# The slack is 1/STREAMING_SLACK_SHARE of the budget, at most STREAMING_SLACK tokens: a
# compaction moves the layer's kept tokens once every slack steps, 1/slack of the tokens those
# steps' attention reads (1/16 or less from a 256-token budget on)
STREAMING_SLACK = 64
STREAMING_SLACK_SHARE = 16
SCALE_BITS = 16  # HQQ's scale and zero point per group
# HQQ attends over its quantized tokens this many tokens per row at a time (kvcache.quantized):
# each chunk is dequantized into scratch that the layers share, KV heads x head_dim x
# (compute dtype + 1 byte of unpacked codes) per token and row; a CPU chunk stays in its caches, a
# GPU chunk is large so that a step launches few kernels (memory.kv_row_bytes counts the GPU's)
HQQ_CHUNK_TOKENS = {"cpu": 128, "cuda": 2048}
# HQQ quantizes the rows of a layer's keys or values a few at a time: rows holding at most
# HQQ_REQUANT_ELEMENTS elements (at least one row), so its work memory is a batch's, not a row's
# (memory.kv_batch_bytes); its optimiser runs each iteration over windows of at most
# HQQ_OPT_CHUNK_ELEMENTS of them (kvcache.quantized._hqq_codes: five or six window-sized buffers
# beside the errors): 256 KiB of float32 per buffer on a CPU, in cache; on a GPU a window is all
# the rows at once, so an iteration launches few kernels
HQQ_REQUANT_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}
HQQ_OPT_CHUNK_ELEMENTS = {"cpu": 1 << 16, "cuda": 1 << 26}
# R-KV scores a layer's due rows in float32 scratch of at most RKV_SCRATCH_BYTES (and at most
# the scored rows' own K + V) whatever the batch: a few (row, KV head) pairs at a time, each
# pair's key similarity at most RKV_SIMILARITY_ROWS rows at a time (fewer where one pair's
# scratch would pass one row's K + V of the layer). A pair's chunks do not depend on how many
# rows are due, so a row scores the same alone or among others (eviction.rkv_scores); the
# scratch is a batch's, not a row's (memory.kv_batch_bytes). A GPU's chunks are large, so that
# a compression launches few kernels
RKV_SCRATCH_BYTES = {"cpu": 1 << 24, "cuda": 1 << 30}
RKV_SIMILARITY_ROWS = {"cpu": 64, "cuda": 256}


def rkv_similarity_rows(length: int, window: int, dim: int, kv_heads: int, key_bytes: int,
                        device_type: str = "cuda") -> int:
    """Similarity rows per chunk of one (row, KV head) pair scored over ``length`` tokens: the
    device's RKV_SIMILARITY_ROWS, fewer where one pair's scratch (``rkv_pair_bytes``) would pass
    one row's K + V of the layer (2·kv_heads·L·dim·key_bytes), one at least. It depends on the
    layer's shape only, never on how many rows are scored."""
    room = (2 * kv_heads * dim * key_bytes - 4 * (dim + 4 * window + 8)) // 12
    return max(1, min(length, RKV_SIMILARITY_ROWS.get(device_type, RKV_SIMILARITY_ROWS["cuda"]), room))


def rkv_pair_bytes(length: int, window: int, dim: int, rows: int) -> int:
    """Float32 scratch of one (row, KV head) pair scored over ``length`` tokens of ``dim``
    channels, its similarity ``rows`` rows at a time: its keys (4·L·D), the importance (at most
    four [window, L] arrays alive at once and a few [L] vectors) and per similarity row
    4 + 1 + 4 bytes per key (values, mask, index of the matches), rounded up to 12."""
    return 4 * length * (dim + 4 * window + 8) + 12 * length * rows


def rkv_pairs_at_once(pairs: int, length: int, window: int, dim: int, rows: int, limit_bytes: int) -> int:
    """(Row, KV head) pairs scored at once so that their scratch stays under ``limit_bytes``
    (one pair at least)."""
    return max(1, min(pairs, limit_bytes // rkv_pair_bytes(length, window, dim, rows)))


def rkv_scratch_bytes(s: dict, trace_tokens: int, kv_heads: int, head_dim: int, rows: int | None = None,
                      device_type: str = "cuda", key_bytes: int = NATIVE_BYTES) -> int:
    """Float32 scratch of one R-KV compression of one layer of ``rows`` rows (None: as many as
    a batch may have) at a trace of ``trace_tokens``, keys of ``key_bytes``: the pairs scored at
    once (``rkv_pairs_at_once`` under the smaller of RKV_SCRATCH_BYTES and the rows' K + V)
    times one pair's scratch; 0 while the trace has not passed the budget (no compression)."""
    if trace_tokens <= s["budget"]:
        return 0
    length, window = min(trace_tokens, s["budget"] + s["buffer"]), s["window"]
    sim_rows = rkv_similarity_rows(length, window, head_dim, kv_heads, key_bytes, device_type)
    cap = RKV_SCRATCH_BYTES[device_type]
    if rows is None:
        at_once = max(1, cap // rkv_pair_bytes(length, window, head_dim, sim_rows))
    else:
        pairs = rows * kv_heads
        at_once = rkv_pairs_at_once(pairs, length, window, head_dim, sim_rows,
                                    min(cap, 2 * pairs * length * head_dim * key_bytes))
    return at_once * rkv_pair_bytes(length, window, head_dim, sim_rows)


def streaming_slack(budget_tokens: int) -> int:
    """Evicted tokens a StreamingLLM layer masks before it compacts them away: budget // 16, at
    least 1 and at most 64 (6% of the budget or less; 16 slots at a 256-token budget). The
    attention sees the same tokens (sinks + recent window) whatever the slack; only the slots
    they sit in (after masked ones, or compacted) differ, which changes the order of the
    attention's floating-point sums, as a different batch or GPU kernel does: float32 logits
    move in their last bits and a sampled token near a tie can change (docs/kv-methods.md)."""
    return max(1, min(STREAMING_SLACK, budget_tokens // STREAMING_SLACK_SHARE))


@dataclass(frozen=True)
class KVMethod:
    name: str
    defaults: dict
    needs_transformers: bool
    tokens_held: Callable[[dict, int], int]  # (settings, trace tokens T) -> peak tokens of one sample
    check: Callable[[dict], str | None] = lambda s: None  # -> what is wrong, or None
    # "module:function" building the cache, function(settings, model, text_config); imported only
    # when a cache is made, so this table stays torch-free
    factory: str = ""

    def sample_bytes(self, s: dict, tokens: int, values_per_token: int, residual: bool = True) -> int:
        """Peak KV bytes of one sample at trace length ``tokens``; ``values_per_token`` is
        2 · layers · kv_heads · head_dim (K and V of every layer)."""
        return self.tokens_held(s, tokens) * values_per_token * NATIVE_BYTES


class _HQQ(KVMethod):
    def sample_bytes(self, s, tokens, values_per_token, residual=True):
        # the paper's Appendix B: P_kv-bit values, a 16-bit scale and zero per group of
        # q_group_size; plus transformers' bf16 residual window of recent tokens
        window = min(tokens, s["residual_length"]) if residual else 0
        values = values_per_token * (tokens - window)
        quantized = values * s["nbits"] / 8 + values / s["q_group_size"] * (SCALE_BITS + SCALE_BITS) / 8
        return round(quantized) + window * values_per_token * NATIVE_BYTES


def _check_rkv(s: dict) -> str | None:
    if s["budget"] <= s["window"]:
        return f"budget {s['budget']} must exceed the observation window {s['window']}"
    if s["kernel"] % 2 == 0:
        return f"kernel {s['kernel']} must be odd (max-pooling with padding kernel // 2 keeps the length)"
    if not 0 <= s["sim_threshold"] < 1:
        return f"sim_threshold {s['sim_threshold']} must be in [0, 1)"
    return None


METHODS: dict[str, KVMethod] = {m.name: m for m in [
    KVMethod("full", {}, needs_transformers=False, tokens_held=lambda s, t: t,
             factory="notallbits.kvcache:full_cache"),
    # StreamingLLM (Xiao et al. 2024): attention sinks + a window of recent tokens
    KVMethod("streamingllm", {"budget": 2048, "sink": 4}, needs_transformers=True,
             tokens_held=lambda s, t: min(t, s["budget"]),
             check=lambda s: (f"budget {s['budget']} must exceed sink {s['sink']}"
                              if s["budget"] <= s["sink"] else None),
             factory="notallbits.kvcache.eviction:streamingllm_cache"),
    # R-KV (Cai et al. 2025), defaults of the paper and the authors' README/run_math.py:
    # window (their window_size / alpha) 8, kernel_size 7, lambda 0.1 (their code's mix_lambda
    # default is 0.07), similarity threshold 0.5 (cal_similarity's threshold), buffer = their
    # divide_length / B_buffer 128: compress every 128 positions, so a sample peaks at
    # budget + buffer tokens (eviction.RKVLayer)
    KVMethod("rkv", {"budget": 2048, "buffer": 128, "window": 8, "kernel": 7, "lam": 0.1, "sim_threshold": 0.5},
         needs_transformers=True, tokens_held=lambda s, t: min(t, s["budget"] + s["buffer"]), check=_check_rkv,
         factory="notallbits.kvcache.eviction:rkv_cache"),
    # HQQ KV quantization through transformers' QuantizedCache, as in the paper
    _HQQ("hqq", {"nbits": 4, "q_group_size": 64, "residual_length": 128}, needs_transformers=True,
         tokens_held=lambda s, t: t,
         check=lambda s: f"nbits must be 2, 4 or 8, got {s['nbits']}" if s["nbits"] not in (2, 4, 8) else None,
         factory="notallbits.kvcache:hqq_cache"),
]}

DEFAULTS: dict[str, dict] = {name: m.defaults for name, m in METHODS.items()}


def normalize(settings: dict) -> dict:
    """Fill defaults and reject unknown keys or impossible values with one line."""
    method = settings.get("method", "full")
    if method not in METHODS:
        raise UserError(f"unknown KV method {method!r} (known: {', '.join(METHODS)})")
    defaults = METHODS[method].defaults
    unknown = set(settings) - set(defaults) - {"method"}
    if unknown:
        raise UserError(f"KV method {method}: unknown setting {sorted(unknown)[0]!r} "
                        f"(allowed: {', '.join(defaults) or 'none'})")
    out = {"method": method, **defaults, **settings}
    problem = METHODS[method].check(out)
    if problem:
        raise UserError(f"KV method {method}: {problem}")
    return out


def tokens_held(settings: dict, tokens: int) -> int:
    s = normalize(settings)
    return METHODS[s["method"]].tokens_held(s, tokens)


def needs_transformers(settings: dict) -> bool:
    return METHODS[normalize(settings)["method"]].needs_transformers
