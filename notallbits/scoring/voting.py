"""Choosing the answer of K samples: exact Maj@K and Best-of-N by a verifier's scores.

Maj@K is the exact expectation over all K-subsets of the n samples, ties split evenly,
computed by a small dynamic programme instead of enumerating C(n, K) subsets; Best-of-N
likewise, the pick uniform among a subset's best-scored samples.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from math import comb

from notallbits import UserError

def majority_accuracy(votes: list[str | None], correct: set[str], k: int) -> Fraction:
    """Exact E[majority vote over a uniform K-subset is correct]; ties split evenly.

    ``votes`` holds each sample's vote class (None = unparsable, abstains); ``correct`` is the
    set of classes that are right. Each class competes on its own, right ones too: the chance
    that a right class wins is summed over the right classes (usually one).
    """
    n = len(votes)
    if not 1 <= k <= n:
        raise UserError(f"Maj@K needs 1 <= K <= n samples, got K={k}, n={n}")
    counts = Counter(v for v in votes if v is not None)
    abstain = n - sum(counts.values())
    total = Fraction(0)
    for winner in (v for v in counts if v in correct):
        others = [cnt for v, cnt in counts.items() if v != winner]
        total += _win_ways(counts[winner], others, abstain, k)
    return total / comb(n, k)


def _win_ways(c: int, others: list[int], abstain: int, k: int) -> Fraction:
    """Number of K-subsets in which a class of ``c`` samples has the most votes, each tie with
    t other classes counted 1 / (1 + t)."""
    total = Fraction(0)
    for j in range(1, min(c, k) + 1):
        # states: (picked from other classes, classes tied at j) -> number of ways
        states = {(0, 0): 1}
        for o in others:
            nxt: dict[tuple[int, int], int] = {}
            for (s, t), ways in states.items():
                for x in range(0, min(o, j, k - j - s) + 1):
                    key = (s + x, t + (x == j))
                    nxt[key] = nxt.get(key, 0) + ways * comb(o, x)
            states = nxt
        for (s, t), ways in states.items():
            rest = k - j - s
            if 0 <= rest <= abstain:
                total += Fraction(comb(c, j) * ways * comb(abstain, rest), 1 + t)
    return total


def best_of_n_accuracy(scores: list[float], correct: list[bool], n: int) -> Fraction:
    """Exact E[the best-scored sample of a uniform N-subset is correct].

    Ties at the top are split evenly (the pick is uniform among the subset's best-scored
    samples). For a score level L with m_L samples, c_L of them correct, and a_L samples
    below it, the subsets whose best level is L number C(a_L + m_L, N) - C(a_L, N), and in
    each the pick is correct with probability c_L / m_L (by symmetry within the level), so

        E = sum_L (c_L / m_L) (C(a_L + m_L, N) - C(a_L, N)) / C(S, N).
    """
    s = len(scores)
    if len(correct) != s:
        raise ValueError("scores and correct differ in length")
    if not 1 <= n <= s:
        raise UserError(f"Best-of-N needs 1 <= N <= n samples, got N={n}, n={s}")
    levels: dict[float, list[bool]] = {}
    for score, ok in zip(scores, correct):
        levels.setdefault(score, []).append(bool(ok))
    total, below = Fraction(0), 0
    for level in sorted(levels):
        members = levels[level]
        m, c = len(members), sum(members)
        total += Fraction(c, m) * (comb(below + m, n) - comb(below, n))
        below += m
    return total / comb(s, n)


def join_verifications(sample_rows: list[dict], verification: tuple[dict, list[dict]], name: str) -> dict:
    """(question_id, sample, budget_tokens) -> PRM score; the verify file must hold exactly the
    job's records (a file of another run of the job would select with the wrong scores)."""
    _, rows = verification
    scores = {(r["question_id"], r["sample"], r["budget_tokens"]): r["score"] for r in rows}
    keys = {(r["question_id"], r["sample"], r["budget_tokens"]) for r in sample_rows}
    if len(scores) != len(rows) or scores.keys() != keys:
        missing = sorted(keys - scores.keys(), key=str)
        extra = sorted(scores.keys() - keys, key=str)
        what = (f"lacks {missing[0]}" if missing else f"has {extra[0]}, which the generations lack" if extra
                else "repeats a (question, sample, budget)")
        raise UserError(f"{name}: verifier scores do not match the job's samples: it {what} "
                        "(rerun its verify job: snakemake -R verify)")
    return scores


def verify_seconds_by_budget(verification: tuple[dict, list[dict]]) -> dict[int, float]:
    """A verify job's PRM seconds split over the budgets it scored, in proportion to the input
    tokens of each budget's records (a forward pass costs about its tokens); empty when the
    file does not say how long it took."""
    header, rows = verification
    if header.get("seconds") is None:
        return {}
    tokens: dict[int, int] = {}
    for r in rows:
        tokens[r["budget_tokens"]] = tokens.get(r["budget_tokens"], 0) + r["input_tokens"]
    total = sum(tokens.values())
    return {b: header["seconds"] * t / total for b, t in tokens.items()} if total else {}
