"""KV caches that compress during decoding: eviction (StreamingLLM, R-KV) and HQQ
quantization. Every cache forks with ``copy.deepcopy`` (budget forcing forks at each budget)."""

from __future__ import annotations

from notallbits.kvcache.settings import DEFAULTS, normalize

__all__ = ["DEFAULTS", "normalize", "make_cache", "held_bytes"]


def make_cache(settings: dict, model):
    """A fresh cache for one generation, for ``model`` (an HF causal LM)."""
    from transformers import DynamicCache, QuantizedCache

    s = normalize(settings)
    config = model.config.get_text_config(decoder=True)
    if s["method"] == "full":
        return DynamicCache(config=config)
    if s["method"] == "hqq":
        return QuantizedCache(backend="hqq", config=config, nbits=s["nbits"], q_group_size=s["q_group_size"],
                              residual_length=s["residual_length"])
    from notallbits.kvcache.eviction import EvictingCache, RKVLayer, StreamingLLMLayer, install_query_capture

    if s["method"] == "rkv":
        install_query_capture(model)
        return EvictingCache(RKVLayer, s, config.num_hidden_layers)
    return EvictingCache(StreamingLLMLayer, s, config.num_hidden_layers)


def held_bytes(cache) -> int:
    """Bytes the cache really holds for K/V: kept tensors, or quantized data + scales +
    zeros + the full-precision residual window."""
    import torch

    total = 0
    for layer in cache.layers:
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.nbytes
        for name in ("_quantized_keys", "_quantized_values"):
            q = getattr(layer, name, None)
            if q is not None:
                data, meta = q
                total += data.nbytes + meta["scale"].nbytes + meta["zero"].nbytes
    return total
