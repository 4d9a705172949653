"""Figures from the summary table (seaborn, one consistent style for every figure)."""

from __future__ import annotations

import argparse
import re

from notallbits.analysis import pareto_frontier

STYLE = {"context": "paper", "style": "whitegrid", "font_scale": 1.1}
MARKERS = {4: "o", 8: "s", 16: "D"}


def model_size_key(name: str) -> float:
    """Order models by the parameter count in their name (Qwen3-0.6B < Qwen3-8B), else by name."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*[Bb]\b", name.replace("-", " "))
    return float(m.group(1)) if m else float("inf")


def accuracy_vs_memory(df, dataset: str, out_path: str) -> None:
    """The paper's Figure 1: every configuration, with the memory-accuracy frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from notallbits.io import atomic_path

    data = df[df["dataset"] == dataset].copy()
    if data.empty:
        raise ValueError(f"summary has no rows for dataset {dataset!r}")
    data["accuracy_pct"] = 100 * data["accuracy"]
    data["weight bits"] = data["bits"].astype(int)
    data["budget"] = data["budget_tokens"].astype(int)
    models = sorted(data["model"].unique(), key=lambda n: (model_size_key(n), n))
    sns.set_theme(**STYLE)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sns.scatterplot(data=data, x="total_gib", y="accuracy_pct", hue="model", hue_order=models,
                    style="weight bits", markers={b: MARKERS.get(b, "o") for b in data["weight bits"].unique()},
                    size="budget", sizes=(25, 160), alpha=0.75, palette="viridis", ax=ax)
    front = pareto_frontier(data, y="accuracy_pct")
    ax.step(front["total_gib"], front["accuracy_pct"], where="post", color="crimson", lw=1.4,
            marker="x", ms=5, label="Pareto frontier", zorder=5)
    ax.set_ylim(-3, 103)
    ax.set_xscale("log")
    ax.set_xlabel("total memory (GiB, log scale): weights + KV cache")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{dataset}: accuracy vs memory")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--summary", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)


def run(args: argparse.Namespace) -> None:
    plot_from_summary("accuracy_vs_memory", args.summary, args.out, dataset=args.dataset)


FIGURES = {"accuracy_vs_memory": accuracy_vs_memory}


def plot_from_summary(figure: str, summary_path: str, out_path: str, **kwargs) -> None:
    import pandas as pd

    FIGURES[figure](pd.read_csv(summary_path), out_path=out_path, **kwargs)
