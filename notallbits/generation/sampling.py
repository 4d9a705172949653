"""Per-sample seeded sampling: each sample owns a torch.Generator, so a sample's trace
depends only on its seed, never on which other samples share the batch."""

from __future__ import annotations

import hashlib


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from any parts (base seed, question id, sample index, ...)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def sample_next(logits, generators, temperature: float, top_p: float) -> list[int]:
    """One token per row; greedy when temperature == 0."""
    import torch

    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1).tolist()
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # smallest prefix with mass >= top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    out = []
    for row, gen in zip(probs, generators):
        out.append(int(torch.multinomial(row, 1, generator=gen)))
    return out
