"""Per-sample seeded sampling: a sample's draws depend only on its seed, never on which
other samples share the batch.

Two samplers share one nucleus (top-p) rule:
- ``sample_rows`` runs on the model's device with counter-based noise: the uniform that
  draws step ``n`` of a sample is the n-th output of SplitMix64 seeded with the sample's
  seed, computed statelessly on the device, and the token is found by inverse CDF over the
  nucleus. Only the sampled ids leave the device. The transformers backend uses it.
- ``sample_next`` draws with one ``torch.Generator`` per row (kept for callers that own
  generators; its draws differ from ``sample_rows``' for the same seed).
"""

from __future__ import annotations

import hashlib

# SplitMix64 (Steele, Lea & Flood 2014; Vigna's reference splitmix64.c) as signed int64
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MUL1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MUL2 = 0x94D049BB133111EB - (1 << 64)


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from any parts (base seed, question id, sample index, ...)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _shr(x, bits: int):
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(seeds, counters):
    """The ``counters``-th output (0-based) of SplitMix64 seeded with ``seeds``: int64
    tensors of one shape, on any device; wrap-around int64 arithmetic equals the uint64
    reference bit for bit."""
    z = seeds + (counters + 1) * _GOLDEN
    z = (z ^ _shr(z, 30)) * _MUL1
    z = (z ^ _shr(z, 27)) * _MUL2
    return z ^ _shr(z, 31)


def uniforms(seeds, counters):
    """Float64 uniforms in [0, 1): the top 53 bits of SplitMix64 (as in Vigna's to-double)."""
    import torch

    return _shr(splitmix64(seeds, counters), 11).to(torch.float64) * 2.0**-53


def nucleus(probs, top_p: float):
    """Probabilities sorted in descending order (stable), the vocabulary ids in that order,
    and how many of them the nucleus keeps: the smallest prefix with mass >= top_p."""
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    if top_p >= 1.0:
        kept = (sorted_p > 0).sum(-1)
    else:
        kept = ((sorted_p.cumsum(-1) - sorted_p) < top_p).sum(-1)
    return sorted_p, order, kept.clamp_min(1)


def sample_rows(logits, seeds, counters, temperature: float, top_p: float):
    """One token id per row, on the logits' device. ``seeds``/``counters``: int64 [B] on the
    same device (the counter, a tensor or one int for all rows, is the draw's index in the
sample's stream). Greedy (argmax,
    first maximum on ties) when temperature == 0."""
    import torch

    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    sorted_p, order, kept = nucleus(torch.softmax(logits / temperature, dim=-1), top_p)
    cum = sorted_p.double().cumsum(-1)
    last = (kept - 1)[:, None]
    if not isinstance(counters, torch.Tensor):
        counters = torch.full_like(seeds, counters)
    threshold = uniforms(seeds, counters)[:, None] * cum.gather(-1, last)
    idx = torch.searchsorted(cum, threshold, right=True).clamp(max=last)
    return order.gather(-1, idx)[:, 0]


def sample_next(logits, generators, temperature: float, top_p: float) -> list[int]:
    """One token per row with per-row ``torch.Generator``s; greedy when temperature == 0."""
    import torch

    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1).tolist()
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order, kept = nucleus(probs, top_p)
        keep = torch.arange(sorted_p.shape[-1], device=probs.device)[None] < kept[:, None]
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p * keep)
    out = []
    for row, gen in zip(probs, generators):
        out.append(int(torch.multinomial(row, 1, generator=gen)))
    return out
