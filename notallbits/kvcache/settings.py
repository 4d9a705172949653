"""KV-method settings: defaults and checks, torch-free so config validation and the
memory model can use them at Snakefile parse time."""

from __future__ import annotations

from notallbits import UserError

DEFAULTS: dict[str, dict] = {
    "full": {},
    # StreamingLLM (Xiao et al. 2024): attention sinks + a window of recent tokens
    "streamingllm": {"budget": 2048, "sink": 4},
    # R-KV (Cai et al. 2025): grow to budget + buffer, then compress back to budget
    "rkv": {"budget": 2048, "buffer": 128, "window": 8, "kernel": 7, "lam": 0.1, "sim_threshold": 0.9},
    # HQQ KV quantization through transformers' QuantizedCache, as in the paper
    "hqq": {"nbits": 4, "q_group_size": 64, "residual_length": 128},
}


def normalize(settings: dict) -> dict:
    """Fill defaults and reject unknown keys or impossible values with one line."""
    method = settings.get("method", "full")
    if method not in DEFAULTS:
        raise UserError(f"unknown KV method {method!r} (known: {', '.join(DEFAULTS)})")
    unknown = set(settings) - set(DEFAULTS[method]) - {"method"}
    if unknown:
        raise UserError(f"KV method {method}: unknown setting {sorted(unknown)[0]!r} "
                        f"(allowed: {', '.join(DEFAULTS[method]) or 'none'})")
    out = {"method": method, **DEFAULTS[method], **settings}
    if method == "hqq" and out["nbits"] not in (2, 4, 8):
        raise UserError(f"KV method hqq: nbits must be 2, 4 or 8, got {out['nbits']}")
    if method == "streamingllm" and out["budget"] <= out["sink"]:
        raise UserError(f"KV method streamingllm: budget {out['budget']} must exceed sink {out['sink']}")
    if method == "rkv" and out["budget"] <= out["window"]:
        raise UserError(f"KV method rkv: budget {out['budget']} must exceed the observation window {out['window']}")
    return out
