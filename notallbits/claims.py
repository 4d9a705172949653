"""The paper's headline claims, checked on the run at hand.

Each claim is a yes/no statistic of the Maj@K rows of the summary on the single-request memory
view. It is computed on the observed accuracies and on every bootstrap replicate (questions
resampled with replacement; notallbits.stats). In a replicate the claim holds, fails, or is
undecided: a tie (two drops equal, a curve neither rising nor falling), no threshold (a frontier
of one point), or no signal (every cell of the claim at the same accuracy, e.g. a random model
right on no question). Its *support* is the share of replicates in which it holds, *against* the
share in which it fails. Verdict: ``supported`` (support >= 95%), ``contradicted`` (against >=
95%), ``inconclusive`` (neither: the questions the run has cannot decide it), or ``cannot say``
with what cells the run lacks. Memory is exact (the memory model and measured bytes), so only
the accuracies are resampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

DECIDED = 0.95  # share of replicates for supported / contradicted
EVICTION = ("rkv", "streamingllm")
COLUMNS = ["claim", "datasets", "verdict", "holds_observed", "bootstrap_support", "bootstrap_against", "detail"]


@dataclass
class Check:
    """A claim made checkable on one slice of the run: ``holds(A)`` gives (holds, value) per row
    of A, a replicates x summary-rows accuracy matrix (holds: True, False or None = undecided);
    ``describe(value, values)`` says what was measured (observed value, replicates' values);
    ``rows``: the summary rows the claim reads (all at one accuracy: no signal, undecided)."""

    datasets: str
    holds: Callable
    describe: Callable
    rows: object = None


def reference_weight_gib() -> float:
    """The paper's threshold: Qwen3-4B at 8 bits (GPTQ), in GiB of weights (the memory model)."""
    from notallbits.memory import GIB, Arch, weight_bytes

    return weight_bytes(Arch.named("Qwen3-4B"), 8) / GIB


def _frontiers(memory, A, idx) -> list[list[int]]:
    """Per row of A, the summary rows (of ``idx``) on the frontier, in memory order."""
    import numpy as np

    from notallbits.stats import pareto_masks

    idx = np.asarray(idx)
    order = np.argsort(memory[idx], kind="stable")
    ordered = pareto_masks(memory[idx], A[:, idx])[:, order]
    rows = idx[order]
    return [rows[np.flatnonzero(m)].tolist() for m in ordered]


def _splits(df, memory, A, idx):
    from notallbits.analysis import threshold_split

    weights = df["weight_gib"].to_numpy(dtype=float)
    return [(on, threshold_split([weights[i] for i in on])) for on in _frontiers(memory, A, idx)], weights


def _pct(x) -> str:
    return f"{100 * x:.0f}%"


def threshold_near_reference(df, dataset, memory):
    import numpy as np

    ref = reference_weight_gib()
    idx = np.nonzero((df["dataset"] == dataset).to_numpy())[0]
    weights = df["weight_gib"].to_numpy(dtype=float)[idx]
    if not (weights.min() < ref < weights.max()):
        return (f"its effective weight sizes span {weights.min():.3g}-{weights.max():.3g} GiB; the claim needs "
                f"models on both sides of 8-bit Qwen3-4B ({ref:.2f} GiB)")

    def holds(A):
        out = []
        splits, w = _splits(df, memory, A, idx)
        for on, found in splits:
            t = w[on[found[0]]] if found else float("nan")
            out.append((bool(ref / 2 <= t <= 2 * ref) if found else None, float(t)))
        return out

    def describe(value, values):
        if value != value:
            return "no threshold: the frontier is one point"
        v = np.asarray([x for x in values if x == x])
        interval = f" (bootstrap 95%: {np.percentile(v, 2.5):.3g}-{np.percentile(v, 97.5):.3g})" if len(v) else ""
        return (f"threshold at {value:.3g} GiB of effective weights{interval}; near = within a factor 2 of "
                f"8-bit Qwen3-4B's {ref:.2f} GiB")
    return Check(dataset, holds, describe, idx)


def weights_then_compute(df, dataset, memory):
    import numpy as np

    idx = np.nonzero((df["dataset"] == dataset).to_numpy())[0]
    sub = df.iloc[idx]
    if sub["weight_gib"].round(9).nunique() < 2:
        return "it has one weight size: nothing to spend memory on but tokens and votes"
    if sub["budget_tokens"].nunique() < 2 and sub["k"].nunique() < 2:
        return "it has one token budget and one K: nothing to spend memory on but weights"

    def holds(A):
        out = []
        for _, found in _splits(df, memory, A, idx)[0]:
            if found is None:
                out.append((None, float("nan")))
                continue
            split, score, moves = found
            ok = (moves[:split].count("weights") >= 1 and moves[split:].count("compute") >= 1
                  and score / len(moves) >= 0.75)
            out.append((bool(ok), score / len(moves)))
        return out

    def describe(value, values):
        if value != value:
            return "the frontier is one point: no moves to explain"
        return (f"the frontier's best split explains {_pct(value)} of its moves (weights before, tokens/votes "
                "after); holds = at least one of each, and >= 75% explained")
    return Check(dataset, holds, describe, idx)


def _pick(datasets, task_of, task, prefer):
    named = [d for d in datasets if task_of.get(d) == task]
    return next((d for d in named if prefer in d.lower()), named[0] if named else None)


def four_bit_hurts_math_more(df, memory):
    import numpy as np

    task_of = dict(zip(df["dataset"], df["task"])) if "task" in df else {}
    datasets = sorted(df["dataset"].unique())
    math, choice = _pick(datasets, task_of, "math", "aime"), _pick(datasets, task_of, "choice", "gpqa")
    if math is None or choice is None:
        return "it needs a math dataset (AIME25) and a multiple-choice one (GPQA-Diamond)"
    method = df["weight_method"] if "weight_method" in df else df["bits"].map({4: "gptq", 8: "gptq", 16: "bf16"})
    pairs = {}
    cell = ["model", "kv", "budget_tokens", "k"]
    for d in (math, choice):
        rows = df[df["dataset"] == d]
        four = rows[(rows["bits"] == 4) & (method.loc[rows.index] == "gptq")].set_index(cell)["_row"]
        full = rows[rows["bits"] == 16].set_index(cell)["_row"]
        common = four.index.intersection(full.index)
        if len(common) == 0:
            return f"{d} has no cell with both GPTQ 4-bit and 16-bit weights"
        pairs[d] = (full.loc[common].to_numpy(), four.loc[common].to_numpy())

    def holds(A):
        drop = {d: (A[:, a] - A[:, b]).mean(axis=1) for d, (a, b) in pairs.items()}
        diff = drop[math] - drop[choice]
        return [(bool(x > 0) if x != 0 else None, float(x)) for x in diff]

    def describe(value, values):
        return (f"16-bit minus GPTQ 4-bit accuracy, mean over matched cells: {math} exceeds {choice} by "
                f"{100 * value:+.1f} points")
    return Check(f"{math} vs {choice}", holds, describe,
                 np.concatenate([np.concatenate(pair) for pair in pairs.values()]))


def votes_pay_for_larger_models(df, dataset, memory):
    import numpy as np

    rows = df[df["dataset"] == dataset]
    if rows["k"].max() < 2:
        return "it has no K > 1 cells"
    size = rows.groupby("model")["weight_gib"].max().sort_values()
    if len(size) < 2:
        return "it has one model"
    models = list(size.index)
    ks = df["k"].to_numpy()

    from notallbits.stats import pareto_masks

    groups = [np.nonzero(((df["dataset"] == dataset) & (df["model"] == m)).to_numpy())[0] for m in models]

    def holds(A):
        pays = [(pareto_masks(memory[g], A[:, g]) & (ks[g] > 1)).any(axis=1) for g in groups]
        out = []
        for r in range(A.shape[0]):
            seq = [p[r] for p in pays]
            monotone = all(not a or b for a, b in zip(seq, seq[1:]))  # once votes pay, they pay for every larger model
            out.append((bool(monotone and any(seq) and not all(seq)), float(sum(seq))))
        return out

    def describe(value, values):
        return (f"Maj@K (K > 1) is on the model's own frontier for {int(value)} of {len(models)} models "
                f"({', '.join(models)}, smallest first); holds = for the larger ones only, and at least one")
    return Check(dataset, holds, describe, np.concatenate(groups))


def eviction_vertical(df, dataset, memory):
    import numpy as np

    if "kv_method" not in df:
        return "it has no KV method column"
    rows = df[(df["dataset"] == dataset) & df["kv_method"].isin(EVICTION)]
    if rows.empty:
        return "it has no eviction (R-KV, StreamingLLM) cells"
    segments = []
    for _, g in rows.groupby(["model", "weight_method", "bits", "kv", "k"]):
        top = g["total_gib"].max()
        flat = g[g["total_gib"] >= top * (1 - 1e-3)].sort_values("budget_tokens")  # budgets past the KV budget
        if len(flat) >= 2:
            segments.append((int(flat["_row"].iloc[0]), int(flat["_row"].iloc[-1])))
    if not segments:
        return "no eviction cell has two token budgets beyond its KV budget"
    lo, hi = np.array([a for a, _ in segments]), np.array([b for _, b in segments])

    def holds(A):
        rise = (A[:, hi] - A[:, lo]).mean(axis=1)
        return [(bool(x > 0) if x != 0 else None, float(x)) for x in rise]

    def describe(value, values):
        return (f"{len(segments)} eviction curves hold their memory flat over their longer budgets (by "
                f"construction) while accuracy moves by {100 * value:+.1f} points on average; holds = it rises")
    return Check(dataset, holds, describe, np.concatenate([lo, hi]))


CLAIMS = [
    ("threshold near an effective 8-bit 4B model", threshold_near_reference, True),
    ("below the threshold memory goes to weights, above it to tokens and votes", weights_then_compute, True),
    ("4-bit weights hurt AIME25 (math) more than GPQA-Diamond (multiple choice)", four_bit_hurts_math_more, False),
    ("Maj@K pays only for larger models", votes_pay_for_larger_models, True),
    ("KV eviction gives vertical curves", eviction_vertical, True),
]


def verdict(support: float, against: float) -> str:
    return "supported" if support >= DECIDED else "contradicted" if against >= DECIDED else "inconclusive"


def claims_table(df, replicated):
    """One row per claim (and dataset, where the claim is one dataset's): verdict, whether it holds
    on the observed accuracies, its bootstrap support, and what was measured or what is missing."""
    import numpy as np
    import pandas as pd

    from notallbits.analysis import VIEWS

    df = df.reset_index(drop=True).copy()
    df["_row"] = df.index
    memory = VIEWS["single"](df).to_numpy(dtype=float)
    observed = df["accuracy"].to_numpy(dtype=float)
    rows = []
    for claim, make, per_dataset in CLAIMS:
        slices = [(d, make(df, d, memory)) for d in sorted(df["dataset"].unique())] if per_dataset \
            else [("", make(df, memory))]
        for dataset, check in slices:
            if isinstance(check, str):
                rows.append({"claim": claim, "datasets": dataset or "all", "verdict": "cannot say",
                             "holds_observed": None, "bootstrap_support": None,
                             "detail": f"the run lacks the cells: {check}"})
                continue
            A = np.vstack([observed[None, :], replicated])
            results = check.holds(A)
            if check.rows is not None:  # no signal: every cell of the claim at one accuracy
                sub = A[:, check.rows]
                flat = np.all(sub == sub[:, :1], axis=1)
                results = [(None, v) if f else (h, v) for (h, v), f in zip(results, flat)]
            (ok, value), results = results[0], results[1:]
            support = float(np.mean([r[0] is True for r in results])) if results else float("nan")
            against = float(np.mean([r[0] is False for r in results])) if results else float("nan")
            rows.append({"claim": claim, "datasets": check.datasets, "verdict": verdict(support, against),
                         "holds_observed": "undecided" if ok is None else ok, "bootstrap_support": support,
                         "bootstrap_against": against,
                         "detail": check.describe(value, [r[1] for r in results])})
    return pd.DataFrame(rows, columns=COLUMNS)
