"""``notallbits advise``: the question the paper answers, asked of our own results —
with N GiB of accelerator memory, which model, bits, budget, K and KV method is best?"""

from __future__ import annotations

import argparse
import json
import math

from notallbits import UserError

def parse_memory(text: str) -> float:
    """Accelerator memory in GiB: '8GiB' -> 8, '80GB' -> 74.5 (GB are 10^9 bytes), '24' -> 24."""
    from notallbits.units import GIB, parse_bytes

    try:
        return parse_bytes(text) / GIB
    except UserError as exc:
        raise UserError(f"--memory: {exc}") from None


def json_safe(value):
    """NaN and infinities (a frontier step the threshold could not classify, an empty mean)
    as null, so the output is JSON that any reader takes."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return json_safe(value.item())
    return value


def _describe(row) -> dict:
    from notallbits.analysis import _method

    return {"model": row["model"], "bits": int(row["bits"]), "weight_method": _method(row),
            "budget_tokens": int(row["budget_tokens"]),
            "k": int(row["k"]), "kv": row["kv"], "accuracy": float(row["accuracy"]),
            "memory_gib": float(row["memory_gib"]), "weight_gib": float(row["weight_gib"]),
            "kv_gib": float(row["kv_gib"]), "selection": _text(row.get("selection")) or "majority",
            "verifier": _text(row.get("verifier")), "verifier_gib": _number(row.get("verifier_gib"))}


def _text(value) -> str:
    """A summary cell that may be empty: CSV readers give NaN for it."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _number(value) -> float:
    value = float(value) if value is not None and value != "" else 0.0
    return 0.0 if math.isnan(value) else value


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
    from notallbits.units import HELP

    p.add_argument("--memory", required=True, help=f"accelerator memory, e.g. 8GiB or 80GB ({HELP})")
    p.add_argument("--dataset", required=True, help="a dataset of the summary (its config's name, e.g. aime25)")
    p.add_argument("--summary", default=None,
                   help="the summary table the workflow wrote, CSV or Parquet (default: the one results/<config>/summary.csv there is)")
    p.add_argument("--view", default="single", choices=["single", "batch16"],
                   help="memory of one request (single) or of 16 concurrent requests sharing the weights (batch16)")
    p.add_argument("--json", action="store_true", help="print the advice as JSON")


def run(args: argparse.Namespace) -> None:
    import os

    import pandas as pd

    if args.summary is None:  # each config writes its own results/<name>/summary.csv
        import glob

        found = sorted(glob.glob("results/*/summary.csv"))
        if len(found) != 1:
            raise UserError("pass --summary: " + (f"several runs here ({', '.join(found)})" if found else
                                                  "no results/<config>/summary.csv here: run the workflow first"))
        args.summary = found[0]
    if not os.path.exists(args.summary):
        raise UserError(f"{args.summary} does not exist: run the workflow first (or pass --summary)")
    advice = advise(read_summary(args.summary), parse_memory(args.memory), args.dataset, args.view)
    print(json.dumps(json_safe(advice), indent=1, allow_nan=False) if args.json else format_advice(advice))
