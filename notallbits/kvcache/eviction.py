"""Decode-time KV eviction on the transformers 5 Cache API: StreamingLLM and R-KV.

A layer returns the full (kept + new) states to the attention of the current step, then
stores the evicted version. ``get_seq_length`` counts every token seen, so query positions
stay true positions; ``get_mask_sizes`` shifts the key indices so the causal mask treats
all kept tokens as past. RoPE is applied before caching, so kept keys keep their rotation.
Assumes no left padding (the backends run one prompt replicated over its samples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicLayer


class EvictingLayer(DynamicLayer):
    def __init__(self, settings: dict):
        super().__init__()
        self.settings = settings
        self.seen = 0  # tokens ever written (true sequence length)

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.seen += key_states.shape[-2]
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        self.keys, self.values = self.evict(keys, values)
        return keys, values

    def evict(self, keys, values):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        kept = self.keys.shape[-2] if self.is_initialized and self.keys.numel() else 0
        return kept + query_length, self.seen - kept


class StreamingLLMLayer(EvictingLayer):
    """Keep the first ``sink`` tokens (attention sinks) and the most recent budget - sink."""

    def evict(self, keys, values):
        budget, sink = self.settings["budget"], self.settings["sink"]
        if keys.shape[-2] <= budget:
            return keys, values
        recent = budget - sink
        keep = lambda t: torch.cat([t[..., :sink, :], t[..., -recent:, :]], dim=-2)  # noqa: E731
        return keep(keys), keep(values)


def rkv_scores(queries, keys, settings: dict):
    """R-KV token scores per KV head: lam * importance - (1 - lam) * redundancy.

    queries: [B, Hq, W, D] (post-RoPE, the observation window); keys: [B, Hkv, L, D].
    importance = attention of the window's queries to each key (mean over the window and the
    query heads of the group), max-pooled over tokens with ``kernel``, scaled to [0, 1] per head;
    redundancy = mean cosine similarity to the other keys, set to 1 for a token that has a
    later near-duplicate (similarity > sim_threshold): of a run of duplicates only the most
    recent escapes the penalty.
    """
    b, hq, w, d = queries.shape
    hkv, length = keys.shape[1], keys.shape[2]
    group = hq // hkv
    q = queries.float().reshape(b, hkv, group * w, d)
    k = keys.float()
    attn = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1).mean(dim=2)  # [B, Hkv, L]
    kernel = settings["kernel"]
    attn = F.max_pool1d(attn.reshape(b * hkv, 1, length), kernel, stride=1, padding=kernel // 2).reshape(b, hkv, length)
    importance = attn / attn.amax(dim=-1, keepdim=True).clamp_min(1e-12)
    kn = F.normalize(k, dim=-1)
    sim = kn @ kn.transpose(-1, -2)  # [B, Hkv, L, L]
    eye = torch.eye(length, dtype=torch.bool, device=k.device)
    sim = sim.masked_fill(eye, 0.0)
    redundancy = sim.sum(-1) / max(length - 1, 1)
    later = torch.ones(length, length, dtype=torch.bool, device=k.device).triu(1)  # j > i
    has_later_duplicate = ((sim > settings["sim_threshold"]) & later).any(-1)
    redundancy = torch.where(has_later_duplicate, torch.ones_like(redundancy), redundancy)
    lam = settings["lam"]
    return lam * importance - (1 - lam) * redundancy


def rkv_select(queries, keys, settings: dict):
    """Indices [B, Hkv, budget] (sorted) of the tokens each KV head keeps: the top
    budget - window by score among the older tokens, plus the last ``window`` always."""
    budget, window = settings["budget"], settings["window"]
    length = keys.shape[-2]
    scores = rkv_scores(queries, keys, settings)[..., : length - window]
    top = scores.topk(budget - window, dim=-1).indices
    recent = torch.arange(length - window, length, device=keys.device).expand(*top.shape[:-1], window)
    return torch.cat([top, recent], dim=-1).sort(dim=-1).values


class RKVLayer(EvictingLayer):
    """Grows to budget + buffer, then compresses back to budget (per head)."""

    def __init__(self, settings: dict):
        super().__init__(settings)
        self.recent_queries = None  # [B, Hq, <=window, D], filled by the query-capture hook

    def remember_queries(self, queries) -> None:
        w = self.settings["window"]
        q = queries if self.recent_queries is None else torch.cat([self.recent_queries, queries], dim=-2)
        self.recent_queries = q[..., -w:, :]

    def evict(self, keys, values):
        s = self.settings
        if keys.shape[-2] <= s["budget"] + s["buffer"]:
            return keys, values
        idx = rkv_select(self.recent_queries, keys, s)
        gather = idx.unsqueeze(-1).expand(*idx.shape, keys.shape[-1])
        return keys.gather(2, gather), values.gather(2, gather)


class EvictingCache(Cache):
    def __init__(self, layer_cls, settings: dict, num_layers: int):
        super().__init__(layers=[layer_cls(settings) for _ in range(num_layers)])


# --------------------------------------------------------------------------- query capture
def install_query_capture(model) -> None:
    """R-KV scores tokens by the attention of recent *queries*, which a cache never sees.
    Hooks on each attention module hand the post-RoPE queries to an RKVLayer (and do
    nothing for any other cache). Installed once per model."""
    from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

    if getattr(model, "_notallbits_query_capture", False):
        return
    for module in model.modules():
        if not (hasattr(module, "q_norm") and hasattr(module, "q_proj") and hasattr(module, "layer_idx")):
            continue

        def pre_hook(attn, args, kwargs):
            cache = kwargs.get("past_key_values")
            layer = cache.layers[attn.layer_idx] if isinstance(cache, EvictingCache) else None
            attn._nab_target = (layer, kwargs.get("position_embeddings")) if isinstance(layer, RKVLayer) else None

        def q_norm_hook(norm, inputs, output, attn=module):
            target = getattr(attn, "_nab_target", None)
            if target is None:
                return
            layer, (cos, sin) = target
            q = output.transpose(1, 2)  # [B, Hq, L, D]
            q_rot, _ = apply_rotary_pos_emb(q, q[:, :1], cos, sin)
            layer.remember_queries(q_rot.detach())

        module.register_forward_pre_hook(pre_hook, with_kwargs=True)
        module.q_norm.register_forward_hook(q_norm_hook)
    model._notallbits_query_capture = True
