"""Accuracy-per-byte analysis over the summary table."""

from __future__ import annotations


def pareto_mask(memory, accuracy) -> list[bool]:
    """True for points no other point beats: less-or-equal memory and higher accuracy
    (ties in memory keep only the most accurate)."""
    order = sorted(range(len(memory)), key=lambda i: (memory[i], -accuracy[i]))
    mask = [False] * len(memory)
    best = float("-inf")
    for i in order:
        if accuracy[i] > best:
            mask[i] = True
            best = accuracy[i]
    return mask


def pareto_frontier(df, x: str = "total_gib", y: str = "accuracy"):
    """Rows of ``df`` on the memory-accuracy frontier, sorted by memory."""
    mask = pareto_mask(df[x].tolist(), df[y].tolist())
    return df[mask].sort_values(x)
