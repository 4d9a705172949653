"""Grouped-query attention over a cache without repeating its keys and values.

transformers' SDPA path expands K and V to every query head when it is given an explicit mask
(``repeat_kv``), i.e. (query heads / KV heads) copies of a layer's cache, every step. Here the
query heads that share a KV head attend to it as one: for one new token per row the G query
heads of a group become G query rows of that KV head (a view), so one SDPA call over
[B, KV heads, G, L] covers them; for several new tokens each of the G heads of a group is one
call over [B, KV heads, q, L]. The mask is the cache layer's own where it builds one
(``key_mask``: eviction keeps evicted slots until it compacts), else the caller's ([B, 1 or KV heads, q, L], additive
or bool), used as it is: per-row padding and, for a cache that masks slots per KV head, per head.
A layer that holds its tokens quantized attends by itself (``attend``: kvcache.quantized reads
its codes in chunks rather than handing over a dequantized copy).

Registered with transformers' ``AttentionInterface`` as ``notallbits_grouped``;
``use_grouped_attention(model)`` switches a loaded model to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "notallbits_grouped"


def grouped_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      is_causal=None, **kwargs):
    """query [B, Hq, q, D], key/value [B, Hkv, L, D] -> ([B, q, Hq, D], None)."""
    b, hq, q, d = query.shape
    hkv = key.shape[1]
    groups = hq // hkv
    mask = attention_mask
    layer = getattr(module, "_nab_layer", None)
    if layer is not None and getattr(layer, "due", None):  # a quantized layer attends by itself (kvcache.quantized)
        return layer.attend(query, attention_mask, scaling), None
    if layer is not None and hasattr(layer, "key_mask"):  # a cache layer that masks its own slots
        mask = layer.key_mask()
    if mask is not None and mask.dtype != torch.bool and mask.dtype != query.dtype:
        mask = mask.to(query.dtype)
    causal = mask is None and q > 1
    if q == 1:  # heads k*G .. k*G+G-1 read KV head k (transformers' repeat_kv order): a view
        out = F.scaled_dot_product_attention(query.reshape(b, hkv, groups, d), key, value, attn_mask=mask,
                                             dropout_p=dropout, scale=scaling)
        return out.reshape(b, 1, hq, d), None
    out = query.new_empty(b, hkv, groups, q, d)
    grouped = query.view(b, hkv, groups, q, d)
    for g in range(groups):
        out[:, :, g] = F.scaled_dot_product_attention(grouped[:, :, g], key, value, attn_mask=mask,
                                                      dropout_p=dropout, scale=scaling, is_causal=causal)
    return out.view(b, hq, q, d).transpose(1, 2).contiguous(), None


def register() -> str:
    """The attention function, and for masks transformers builds itself (no 4-D mask given)
    the same ones as for SDPA (None where ``is_causal`` is exact: no past, no padding)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, grouped_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_grouped_attention(model) -> None:
    """Attend through ``grouped_attention`` from now on (every layer of ``model``); each
    attention module learns its cache layer at every call (for layers with ``key_mask``)."""
    register()
    if model.config._attn_implementation != NAME:
        model.set_attn_implementation(NAME)
    if getattr(model, "_notallbits_grouped", False):
        return

    def pre_hook(attn, args, kwargs):
        cache = kwargs.get("past_key_values")
        layers = getattr(cache, "layers", None)
        attn._nab_layer = layers[attn.layer_idx] if layers is not None else None

    for module in model.modules():
        if hasattr(module, "layer_idx") and hasattr(module, "q_proj"):
            module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    model._notallbits_grouped = True
