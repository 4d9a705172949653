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
    return moves_of(front["weight_gib"].tolist())


def moves_of(weight_gib: list[float]) -> list[str]:
    """classify_moves on the frontier's effective weight sizes, in memory order."""
    return ["weights" if b > a * (1 + 1e-9) else "compute" for a, b in zip(weight_gib, weight_gib[1:])]


def threshold_split(weight_gib: list[float]) -> tuple[int, int, list[str]] | None:
    """(index of the frontier point at the split, moves the split explains, the moves): the
    split that best separates 'weights' moves (before) from 'compute' moves (after); the
    earliest split among equals. None for a frontier of one point."""
    moves = moves_of(weight_gib)
    if not moves:
        return None
    best_split, best_score = 0, -1
    for split in range(len(moves) + 1):
        score = moves[:split].count("weights") + moves[split:].count("compute")
        if score > best_score:
            best_split, best_score = split, score
    return best_split, best_score, moves


def threshold(front) -> dict | None:
    """Where the frontier switches from spending memory on weights to spending it on
    generation length and votes: the split that best separates 'weights' moves (before)
    from 'compute' moves (after). Returns the frontier point at the split."""
    rows = front.to_dict("records")
    found = threshold_split([r["weight_gib"] for r in rows])
    if found is None:
        return None
    best_split, best_score, moves = found
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


def _format_of(row) -> str:
    from notallbits import weights

    return weights.of(_method(row), int(row["bits"])).name


def _format_names(df) -> list[str]:
    from notallbits import weights

    methods = df["weight_method"] if "weight_method" in df else [""] * len(df)
    return [weights.of(m if isinstance(m, str) and m else weights.default_method(int(b)), int(b)).name
            for m, b in zip(methods, df["bits"])]


def frontier_bootstrap(df, replicated, replicates: int):
    """A bootstrap over questions of the frontier and the threshold, per (dataset, view).

    ``replicated``: replicates x len(df) accuracies (notallbits.stats.bootstrap_accuracies, rows
    aligned with ``df``). Returns (per row: observed ``on_frontier`` and ``frontier_share``, the
    share of replicates in which it is on the frontier; per (dataset, view): the observed
    threshold and where the replicates' thresholds fall: median and 95% percentile interval of
    its memory and effective weight size, and the frontier point it falls on most often)."""
    import numpy as np
    import pandas as pd

    from notallbits.stats import pareto_masks

    df = df.reset_index(drop=True)
    share_rows, threshold_rows = [], []
    for view in VIEWS:
        v = with_view(df, view)
        for dataset, group in v.groupby("dataset"):
            idx = group.index.to_numpy()
            memory = group["memory_gib"].to_numpy(dtype=float)
            weights_gib = group["weight_gib"].to_numpy(dtype=float)
            observed = np.array(pareto_mask(memory.tolist(), group["accuracy"].tolist()))
            masks = pareto_masks(memory, replicated[:, idx])
            share = masks.mean(axis=0)
            part = pd.DataFrame({"dataset": dataset, "view": view, "model": group["model"].to_numpy(),
                                 "weights": _format_names(group), "kv": group["kv"].to_numpy(),
                                 "budget_tokens": group["budget_tokens"].astype(int).to_numpy(),
                                 "k": group["k"].astype(int).to_numpy(), "memory_gib": memory,
                                 "accuracy": group["accuracy"].to_numpy()})
            for c in ("accuracy_ci95_low", "accuracy_ci95_high"):
                if c in group:
                    part[c] = group[c].to_numpy()
            part["on_frontier"], part["frontier_share"] = observed, share
            share_rows.append(part)
            order = np.argsort(memory, kind="stable")
            ordered = masks[:, order]
            points, mems, wts = [], [], []
            for b in range(replicates):
                on = order[np.flatnonzero(ordered[b])].tolist()
                found = threshold_split([weights_gib[p] for p in on])
                if found is None:
                    continue
                p = on[found[0]]
                points.append(p)
                mems.append(memory[p])
                wts.append(weights_gib[p])
            t = threshold(pareto_frontier(group, x="memory_gib"))
            row = {"dataset": dataset, "view": view, "replicates": replicates, "replicates_with_threshold": len(points)}
            if t:
                row.update({"memory_gib": t["memory_gib"], "effective_weight_gib": t["effective_weight_gib"],
                            "model": t["model"], "weights": _format_of(t), "budget_tokens": t["budget_tokens"],
                            "k": t["k"]})
            if points:
                counts = pd.Series(points).value_counts()
                modal = df.loc[idx[counts.index[0]]]
                row.update({"memory_gib_median": float(np.median(mems)),
                            "memory_gib_ci95_low": float(np.percentile(mems, 2.5)),
                            "memory_gib_ci95_high": float(np.percentile(mems, 97.5)),
                            "effective_weight_gib_median": float(np.median(wts)),
                            "effective_weight_gib_ci95_low": float(np.percentile(wts, 2.5)),
                            "effective_weight_gib_ci95_high": float(np.percentile(wts, 97.5)),
                            "modal_point": f"{modal['model']} {_format_of(modal)} T={int(modal['budget_tokens'])} "
                                           f"K={int(modal['k'])} {modal['kv']}",
                            "modal_share": float(counts.iloc[0] / replicates)})
                if t:  # how often the threshold sits on the observed threshold's weights (model and format)
                    same = [p for p in points if df.loc[idx[p], "model"] == t["model"]
                            and _format_of(df.loc[idx[p]]) == _format_of(t)]
                    row["observed_weights_share"] = len(same) / replicates
            threshold_rows.append(row)
    return pd.concat(share_rows, ignore_index=True), pd.DataFrame(threshold_rows)


def write_analysis(summary_path: str, frontier_path: str, thresholds_path: str, best_k_path: str,
                   selection_path: str | None = None, *, questions_path: str | None = None,
                   frontier_bootstrap_path: str | None = None, threshold_bootstrap_path: str | None = None,
                   claims_path: str | None = None, replicates: int = 1000, seed: int = 0) -> None:
    """The analysis tables; with ``questions_path`` (per-question scores), also the bootstrap over
    questions of the frontier and threshold, and the claims table (notallbits.claims)."""
    import pandas as pd

    from notallbits.io import atomic_path

    everything = pd.read_csv(summary_path)
    if "verifier" in everything:  # "" in the CSV: a majority row's
        everything["verifier"] = everything["verifier"].fillna("")
    df = majority_rows(everything)
    tables = [(frontiers(df), frontier_path), (pd.DataFrame(thresholds(df)), thresholds_path),
              (best_k_by_memory(df), best_k_path)]
    if selection_path:
        tables.append((selection_comparison(everything), selection_path))
    if questions_path:
        from notallbits.claims import claims_table
        from notallbits.stats import bootstrap_accuracies, read_question_scores

        questions = read_question_scores([questions_path])
        majority = df.reset_index(drop=True)
        replicated = bootstrap_accuracies(majority, questions, replicates, seed)
        shares, thresholds_b = frontier_bootstrap(majority, replicated, replicates)
        for table, path in ((shares, frontier_bootstrap_path), (thresholds_b, threshold_bootstrap_path),
                            (claims_table(majority, replicated), claims_path)):
            if path:
                tables.append((table, path))
    for table, path in tables:
        with atomic_path(path, suffix=".csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
