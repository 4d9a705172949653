"""Accuracy-per-byte analysis over the summary table: frontiers per memory view, the
paper's threshold as a computed number, and the best vote count per memory range."""

from __future__ import annotations

import math

# Memory views: what one configuration costs. "batch16" is the paper's Appendix C.3 view:
# 16 concurrent requests share one copy of the weights, each with its own KV cache.
# A Best-of-N row's verifier weights are held like the model's (once, shared by requests).
VIEWS = {
    "single": lambda df: df["weight_gib"] + df["kv_gib"] + _verifier_gib(df),
    "batch16": lambda df: df["weight_gib"] + 16 * df["kv_gib"] + _verifier_gib(df),
}


def _verifier_gib(df):
    return df["verifier_gib"] if "verifier_gib" in df else 0.0


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


def with_view(df, view: str):
    if view not in VIEWS:
        raise ValueError(f"unknown memory view {view!r} (known: {', '.join(VIEWS)})")
    out = df.copy()
    out["memory_gib"] = VIEWS[view](out)
    return out


def frontiers(df):
    """Pareto-optimal rows per (dataset, view), with a ``view`` and ``memory_gib`` column."""
    import pandas as pd

    parts = []
    for view in VIEWS:
        v = with_view(df, view)
        for _, group in v.groupby("dataset"):
            f = pareto_frontier(group, x="memory_gib").copy()
            f["view"] = view
            parts.append(f)
    return pd.concat(parts, ignore_index=True)


def classify_moves(front) -> list[str]:
    """For consecutive frontier points: did the gain come from bigger weights ("weights"),
    or from a longer budget / more votes at no bigger weights ("compute")?"""
    moves = []
    rows = front.to_dict("records")
    for a, b in zip(rows, rows[1:]):
        if b["weight_gib"] > a["weight_gib"] * (1 + 1e-9):
            moves.append("weights")
        else:
            moves.append("compute")
    return moves


def threshold(front) -> dict | None:
    """Where the frontier switches from spending memory on weights to spending it on
    generation length and votes: the split that best separates 'weights' moves (before)
    from 'compute' moves (after). Returns the frontier point at the split."""
    rows = front.to_dict("records")
    moves = classify_moves(front)
    if not moves:
        return None
    best_split, best_score = 0, -1
    for split in range(len(moves) + 1):
        score = moves[:split].count("weights") + moves[split:].count("compute")
        if score > best_score:
            best_split, best_score = split, score
    point = rows[best_split]
    return {"memory_gib": point["memory_gib"], "effective_weight_gib": point["weight_gib"],
            "model": point["model"], "bits": int(point["bits"]), "weight_method": _method(point),
            "budget_tokens": int(point["budget_tokens"]),
            "k": int(point["k"]), "accuracy": point["accuracy"],
            "moves_explained": best_score / len(moves), "weights_moves": moves.count("weights"),
            "compute_moves": moves.count("compute")}


def _method(row) -> str:
    """A summary row's weight method (gptq/awq/fp8/bf16; rows without the column: their bits' meaning)."""
    from notallbits.weights import default_method

    method = row.get("weight_method") if hasattr(row, "get") else None
    return method if isinstance(method, str) and method else default_method(int(row["bits"]))


def thresholds(df) -> list[dict]:
    out = []
    for view in VIEWS:
        v = with_view(df, view)
        for dataset, group in v.groupby("dataset"):
            t = threshold(pareto_frontier(group, x="memory_gib"))
            if t:
                out.append({"dataset": dataset, "view": view, **t})
    return out


def best_k_by_memory(df, bins_per_decade: int = 2):
    """For log-spaced memory ranges: the best configuration (and its K) that fits."""
    import pandas as pd

    rows = []
    for dataset, group in df.groupby("dataset"):
        lo, hi = group["total_gib"].min(), group["total_gib"].max()
        start = math.floor(math.log10(lo) * bins_per_decade)
        stop = math.ceil(math.log10(hi) * bins_per_decade)
        for e in range(start, stop + 1):
            cap = 10 ** (e / bins_per_decade)
            fits = group[group["total_gib"] <= cap]
            if fits.empty:
                continue
            best = fits.sort_values(["accuracy", "total_gib"], ascending=[False, True]).iloc[0]
            rows.append({"dataset": dataset, "memory_cap_gib": cap, "best_k": int(best["k"]),
                         "accuracy": best["accuracy"], "model": best["model"], "bits": int(best["bits"]),
                         "weight_method": _method(best),
                         "budget_tokens": int(best["budget_tokens"]), "kv": best["kv"]})
    return pd.DataFrame(rows)


def selection_label(df):
    """'majority', or 'prm_best_of_n:<verifier>' per row (rows of summaries without the column: majority)."""
    if "selection" not in df:
        return ["majority"] * len(df)
    return [s if s == "majority" else f"{s}:{v}" for s, v in zip(df["selection"], df["verifier"].fillna(""))]


def majority_rows(df):
    """The paper's analysis is of Maj@K: Best-of-N rows (selection_comparison's) are left out."""
    return df[df["selection"] == "majority"] if "selection" in df else df


def selection_comparison(df):
    """Per dataset and selection rule (majority, or Best-of-N by a verifier): its memory-accuracy
    frontier (total memory includes the verifier's weights), and at each frontier point the best
    Maj@K accuracy within the same memory (``majority_accuracy_at_memory``): a Best-of-N point
    above it buys accuracy that voting cannot at that memory."""
    import pandas as pd

    df = df.copy()
    df["selection_rule"] = selection_label(df)
    rows = []
    for dataset, group in df.groupby("dataset"):
        voting = group[group["selection_rule"] == "majority"]
        for rule, sub in group.groupby("selection_rule"):
            for r in pareto_frontier(sub).to_dict("records"):
                fits = voting[voting["total_gib"] <= r["total_gib"] * (1 + 1e-12)]
                rows.append({"dataset": dataset, "selection_rule": rule, "total_gib": r["total_gib"],
                             "verifier_gib": r.get("verifier_gib", 0.0), "accuracy": r["accuracy"],
                             "model": r["model"], "bits": int(r["bits"]), "kv": r["kv"],
                             "budget_tokens": int(r["budget_tokens"]), "k": int(r["k"]),
                             "majority_accuracy_at_memory": fits["accuracy"].max() if len(fits) else float("nan")})
    return pd.DataFrame(rows, columns=["dataset", "selection_rule", "total_gib", "verifier_gib", "accuracy", "model",
                                       "bits", "kv", "budget_tokens", "k", "majority_accuracy_at_memory"])


def write_analysis(summary_path: str, frontier_path: str, thresholds_path: str, best_k_path: str,
                   selection_path: str | None = None) -> None:
    import pandas as pd

    from notallbits.io import atomic_path

    everything = pd.read_csv(summary_path)
    df = majority_rows(everything)
    tables = [(frontiers(df), frontier_path), (pd.DataFrame(thresholds(df)), thresholds_path),
              (best_k_by_memory(df), best_k_path)]
    if selection_path:
        tables.append((selection_comparison(everything), selection_path))
    for table, path in tables:
        with atomic_path(path, suffix=".csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
