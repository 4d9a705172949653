"""KV caches that compress during decoding: eviction (StreamingLLM, R-KV) and HQQ
quantization. Rows may be left-padded (``set_padding``); every cache forks with ``fork``,
which adds only the fork's own tokens (budget forcing forks at each budget)."""

from __future__ import annotations

from notallbits.kvcache.settings import DEFAULTS, normalize

__all__ = ["DEFAULTS", "normalize", "make_cache", "held_bytes", "fork", "reserve", "set_padding", "padding"]


def make_cache(settings: dict, model):
    """A fresh cache for one generation, for ``model`` (an HF causal LM), built by the method's
    factory in the KV-method table (settings.METHODS)."""
    import importlib

    from notallbits.kvcache.settings import METHODS

    s = normalize(settings)
    module, name = METHODS[s["method"]].factory.split(":")
    return getattr(importlib.import_module(module), name)(s, model, model.config.get_text_config(decoder=True))


def full_cache(s: dict, model, config):
    from transformers.cache_utils import Cache

    from notallbits.kvcache.slots import SlotLayer

    return Cache(layers=[SlotLayer() for _ in range(config.num_hidden_layers)])


def hqq_cache(s: dict, model, config):
    from notallbits.kvcache.attention import use_grouped_attention
    from notallbits.kvcache.quantized import RowQuantizedCache

    use_grouped_attention(model)  # the layers attend over their quantized tokens themselves
    return RowQuantizedCache(config.num_hidden_layers, s["nbits"], s["q_group_size"], s["residual_length"])


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
        if hasattr(layer, "quantized_bytes"):  # kvcache.quantized: groups of rows
            total += layer.quantized_bytes()
            continue
        for name in ("_quantized_keys", "_quantized_values"):  # transformers' own QuantizedLayer
            q = getattr(layer, name, None)
            if q is not None:
                data, meta = q
                total += data.nbytes + meta["scale"].nbytes + meta["zero"].nbytes
    return total


def set_padding(cache, pad) -> None:
    """Tell a cache how many padding slots lead each row of the coming left-padded prefill
    ([B] long, on the model's device). A full cache never moves tokens, so it needs no telling."""
    if hasattr(cache, "set_padding"):
        cache.set_padding(pad)


def padding(cache, default):
    """Padding slots per row as the cache holds them now (eviction re-aligns rows)."""
    pad = getattr(cache.layers[0], "pad", None)
    return default if pad is None else pad


def reserve(cache, tokens: int, fork_tokens: int = 0) -> None:
    """Size every layer's slots for ``tokens`` more tokens ahead (one allocation, no growth);
    ``fork_tokens``: the tokens a fork will add (a layer that caps its slots at the most its
    method holds keeps room for them too, so forking reallocates nothing)."""
    for layer in cache.layers:
        if hasattr(layer, "reserve"):
            layer.reserve(tokens)
        if fork_tokens and hasattr(layer, "reserve_fork"):
            layer.reserve_fork(fork_tokens)


def fork(cache, tokens: int = 0):
    """A cache to decode ``tokens`` more tokens on without touching the original and without
    copying it: the parent's layers reserve room for them and the fork's layers write only
    there (kvcache.slots); whatever a fork rewrites (compaction, requantizing) goes to new
    tensors of its own or is masked, never into its parent's."""
    import copy

    reserve(cache, tokens)
    twin = copy.copy(cache)
    twin.layers = [layer.fork() if hasattr(layer, "fork") else copy.copy(layer) for layer in cache.layers]
    return twin
