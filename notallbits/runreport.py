"""The run's results in a few tables (report.md in the output folder, printed when the workflow
finishes): the best configuration of each dataset with its 95% interval, the frontier with how
often each point stays on it under a bootstrap over questions, the threshold and its interval,
and the paper's claims as this run supports them or not."""

from __future__ import annotations

import math
from pathlib import Path


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.1f}"


def _num(x, digits=3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.{digits}g}"


def _share(x) -> str:
    return "-" if x in ("", None) or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.0f}%"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _weights(row) -> str:
    from notallbits import weights

    method = row.get("weight_method") or weights.default_method(int(row["bits"]))
    return weights.of(method, int(row["bits"])).name


def best_rows(summary) -> list[list[str]]:
    rows = []
    majority = summary[summary["selection"] == "majority"] if "selection" in summary else summary
    for dataset, group in majority.groupby("dataset"):
        best = group.sort_values(["accuracy", "total_gib"], ascending=[False, True]).iloc[0]
        rows.append([dataset, int(best["questions"]),
                     f"{_pct(best['accuracy'])} [{_pct(best.get('accuracy_ci95_low'))}, "
                     f"{_pct(best.get('accuracy_ci95_high'))}]",
                     _pct(best.get("accuracy_se")), best["model"], _weights(best), best["kv"],
                     int(best["budget_tokens"]), int(best["k"]), _num(best["total_gib"])])
    return rows


def report_text(summary_path: str, threshold_bootstrap_path: str, claims_path: str,
                frontier_bootstrap_path: str | None = None, title: str = "", frontier: bool = True) -> str:
    import pandas as pd

    summary = pd.read_csv(summary_path, keep_default_na=False, na_values=[""])
    parts = [f"# Results{': ' + title if title else ''}", "",
             "Accuracy in % with its 95% interval over questions (Wilson at the effective number of questions), "
             "its standard error (SE); memory in GiB (weights + KV cache + verifier).", "",
             "## Best configuration per dataset (Maj@K)", "",
             _table(["dataset", "questions", "accuracy % [95% CI]", "SE", "model", "weights", "KV", "budget", "K",
                     "memory GiB"], best_rows(summary))]
    if frontier and frontier_bootstrap_path and Path(frontier_bootstrap_path).exists():
        fb = pd.read_csv(frontier_bootstrap_path)
        fb = fb[(fb["view"] == "single") & fb["on_frontier"]].sort_values(["dataset", "memory_gib"])
        parts += ["", "## Frontier (single request), with how often each point stays on it", "",
                  _table(["dataset", "memory GiB", "accuracy % [95% CI]", "model", "weights", "KV", "budget", "K",
                          "on frontier in"],
                         [[r["dataset"], _num(r["memory_gib"]),
                           f"{_pct(r['accuracy'])} [{_pct(r.get('accuracy_ci95_low'))}, {_pct(r.get('accuracy_ci95_high'))}]",
                           r["model"], r["weights"], r["kv"], int(r["budget_tokens"]), int(r["k"]),
                           f"{100 * r['frontier_share']:.0f}%"] for _, r in fb.iterrows()])]
    tb = pd.read_csv(threshold_bootstrap_path) if Path(threshold_bootstrap_path).exists() else pd.DataFrame()
    if not tb.empty:
        rows = []
        for _, r in tb.iterrows():
            where = (f"{r['model']} {r['weights']}" if isinstance(r.get("model"), str)
                     else "none (the frontier is one point)")
            rows.append([r["dataset"], r["view"], where, _num(r.get("effective_weight_gib")),
                         f"[{_num(r.get('effective_weight_gib_ci95_low'))}, {_num(r.get('effective_weight_gib_ci95_high'))}]",
                         _num(r.get("memory_gib")),
                         f"[{_num(r.get('memory_gib_ci95_low'))}, {_num(r.get('memory_gib_ci95_high'))}]",
                         "-" if pd.isna(r.get("observed_weights_share")) else f"{100 * r['observed_weights_share']:.0f}%"])
        parts += ["", "## Threshold (where the frontier stops buying weights), bootstrap over questions", "",
                  _table(["dataset", "view", "at", "weights GiB", "95% interval", "memory GiB", "95% interval",
                          "same weights in"], rows)]
    if Path(claims_path).exists():
        claims = pd.read_csv(claims_path, keep_default_na=False)
        parts += ["", "## The paper's claims on this run", "",
                  "Support: the share of bootstrap replicates in which the claim holds; against: in which it "
                  "fails (the rest are ties or have no signal). Supported / contradicted at 95%.", "",
                  _table(["claim", "datasets", "verdict", "support", "against", "detail"],
                         [[r["claim"], r["datasets"], r["verdict"], _share(r["bootstrap_support"]),
                           _share(r.get("bootstrap_against", "")), r["detail"]] for _, r in claims.iterrows()])]
    return "\n".join(parts) + "\n"


def write_report(out_path: str, summary_path: str, threshold_bootstrap_path: str, claims_path: str,
                 frontier_bootstrap_path: str | None = None, title: str = "") -> None:
    from notallbits.io import write_text

    write_text(out_path, report_text(summary_path, threshold_bootstrap_path, claims_path, frontier_bootstrap_path,
                                     title))


def print_summary(output: str) -> None:
    """What the workflow prints when it finishes: the short tables of the output folder's report
    (no frontier), when the folder's summary is complete."""
    folder = Path(output)
    paths = [folder / "summary.csv", folder / "analysis/threshold_bootstrap.csv", folder / "claims.csv"]
    report = folder / "report.md"
    if not report.exists() or any(not p.exists() or p.stat().st_mtime > report.stat().st_mtime for p in paths):
        return
    try:
        text = report_text(*map(str, paths), title=str(folder), frontier=False)
    except Exception as exc:  # noqa: BLE001 - a finished run never fails for its printout
        print(f"(results in {folder}: report.md; the short table could not be printed: {exc})")
        return
    print(text)
    print(f"(full report: {report}; run record: {folder / 'run_info.json'})")
