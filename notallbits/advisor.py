"""``notallbits advise``: the question the paper answers, asked of our own results —
with N GiB of accelerator memory, which model, bits, budget, K and KV method is best?"""

from __future__ import annotations

import argparse
import json
import re

from notallbits import UserError

UNITS = {"": 1.0, "gib": 1.0, "gb": 1.0, "g": 1.0, "mib": 1 / 1024, "mb": 1 / 1024, "m": 1 / 1024, "kib": 1 / 2**20,
         "tib": 1024.0, "tb": 1024.0}


def parse_memory(text: str) -> float:
    """'8GiB', '8 GB', '512MiB', '8' -> GiB. The paper's GB are GiB, so GB is read as GiB."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS:
        raise UserError(f"cannot read memory {text!r} (examples: 8GiB, 512MiB, 24)")
    value = float(m.group(1)) * UNITS[m.group(2).lower()]
    if value <= 0:
        raise UserError(f"memory must be positive, got {text!r}")
    return value


def _describe(row) -> dict:
    from notallbits.analysis import _method

    return {"model": row["model"], "bits": int(row["bits"]), "weight_method": _method(row),
            "budget_tokens": int(row["budget_tokens"]),
            "k": int(row["k"]), "kv": row["kv"], "accuracy": float(row["accuracy"]),
            "memory_gib": float(row["memory_gib"]), "weight_gib": float(row["weight_gib"]),
            "kv_gib": float(row["kv_gib"]), "selection": row.get("selection", "majority") or "majority",
            "verifier": row.get("verifier", "") or "", "verifier_gib": float(row.get("verifier_gib", 0.0) or 0.0)}


def advise(summary, memory_gib: float, dataset: str, view: str = "single") -> dict:
    from notallbits.analysis import majority_rows, pareto_frontier, threshold, with_view

    if summary.empty:
        raise UserError("the summary table is empty: run the workflow first")
    if dataset not in set(summary["dataset"]):
        raise UserError(f"no results for dataset {dataset!r} (have: {', '.join(sorted(set(summary['dataset'])))})")
    data = with_view(summary[summary["dataset"] == dataset], view)
    fits = data[data["memory_gib"] <= memory_gib]
    if fits.empty:
        smallest = data.sort_values("memory_gib").iloc[0]
        raise UserError(f"no configuration fits in {memory_gib:.4g} GiB; the smallest needs "
                        f"{smallest['memory_gib']:.4g} GiB ({smallest['model']}, {int(smallest['bits'])}-bit, "
                        f"budget {int(smallest['budget_tokens'])}, K={int(smallest['k'])})")
    ranked = fits.sort_values(["accuracy", "memory_gib"], ascending=[False, True])
    best = ranked.iloc[0]
    setup = ["model", "weight_method", "bits", "kv"] if "weight_method" in ranked else ["model", "bits", "kv"]
    other = ranked[(ranked[setup] != best[setup]).any(axis=1)]
    runner = (other if not other.empty else ranked.iloc[1:]).head(1)
    t = threshold(pareto_frontier(majority_rows(data), x="memory_gib"))  # the paper's threshold: Maj@K
    side = None
    if t is not None:
        side = ("above: spend further memory on longer generation and more votes"
                if best["weight_gib"] >= t["effective_weight_gib"] else
                "below: spend further memory on model weights (bigger or higher-precision model)")
    return {"dataset": dataset, "view": view, "memory_gib": memory_gib, "best": _describe(best),
            "runner_up": _describe(runner.iloc[0]) if not runner.empty else None,
            "threshold": t, "side_of_threshold": side, "configurations_that_fit": len(fits)}


def format_advice(a: dict) -> str:
    def line(c):
        from notallbits.weights import default_method

        method = "" if c["weight_method"] == default_method(c["bits"]) else f" {c['weight_method'].upper()}"
        pick = f"Maj@{c['k']}" if c["selection"] == "majority" else f"Best-of-{c['k']} by {c['verifier']}"
        verifier = f" + verifier {c['verifier_gib']:.4g}" if c["verifier_gib"] else ""
        return (f"{c['model']} {c['bits']}-bit{method}, KV {c['kv']}, budget {c['budget_tokens']} tokens, {pick}: "
                f"accuracy {100 * c['accuracy']:.1f}% using {c['memory_gib']:.4g} GiB "
                f"(weights {c['weight_gib']:.4g} + KV {c['kv_gib']:.4g}{verifier})")

    out = [f"{a['dataset']} within {a['memory_gib']:.4g} GiB ({a['view']} view, "
           f"{a['configurations_that_fit']} configurations fit):", f"  best:      {line(a['best'])}"]
    if a["runner_up"]:
        out.append(f"  runner-up: {line(a['runner_up'])}")
    if a["threshold"]:
        t = a["threshold"]
        out.append(f"  threshold: frontier switches at {t['effective_weight_gib']:.4g} GiB of weights "
                   f"({t['model']} {t['bits']}-bit); this choice is {a['side_of_threshold']}")
    return "\n".join(out)


def read_summary(path: str):
    """The summary table as aggregate writes it: CSV, or Parquet by its extension."""
    import pandas as pd

    parquet = path.endswith((".parquet", ".pq"))
    try:
        return pd.read_parquet(path) if parquet else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: not a readable {'Parquet' if parquet else 'CSV'} summary table ({detail}); "
                        "pass the summary.csv or summary.parquet that the workflow wrote") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", required=True, help="accelerator memory, e.g. 8GiB")
    p.add_argument("--dataset", required=True)
    p.add_argument("--summary", default="results/summary.csv")
    p.add_argument("--view", default="single", choices=["single", "batch16"])
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> None:
    import os

    import pandas as pd

    if not os.path.exists(args.summary):
        raise UserError(f"{args.summary} does not exist: run the workflow first (or pass --summary)")
    advice = advise(read_summary(args.summary), parse_memory(args.memory), args.dataset, args.view)
    print(json.dumps(advice, indent=1) if args.json else format_advice(advice))
