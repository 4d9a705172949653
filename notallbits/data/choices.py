"""Multiple-choice options: the letters and the one-time, seeded shuffle every choice dataset
(GPQA, the demo and toy sets) uses. No dependencies, so any dataset module may import it."""

from __future__ import annotations

import random
import string

LETTERS = string.ascii_uppercase


def shuffle_choices(qid: str, correct: str, incorrect: list[str], seed: int) -> tuple[list[str], str, list[int]]:
    """Shuffle options once, deterministically per (seed, question id)."""
    source = [correct, *incorrect]
    perm = list(range(len(source)))
    random.Random(f"{seed}:{qid}").shuffle(perm)
    choices = [source[i] for i in perm]
    return choices, LETTERS[perm.index(0)], perm
