"""Figures from the summary table (seaborn, one consistent style for every figure)."""

from __future__ import annotations

import argparse
import re

from notallbits.analysis import pareto_frontier, pareto_mask

STYLE = {"context": "paper", "style": "whitegrid", "font_scale": 1.1}
MARKERS = {4: "o", 8: "s", 16: "D"}  # by weight bits (GPTQ / bf16)
# by weight format (notallbits/weights.py): GPTQ keeps its bits' markers
FORMAT_MARKERS = {"gptq-4": "o", "gptq-8": "s", "bf16": "D", "awq-4": "^", "fp8": "P"}
METHOD_COLORS = {"gptq": "tab:blue", "awq": "tab:orange", "fp8": "tab:green", "bf16": "grey"}


def format_label(name: str) -> str:
    """Legend text of a weight format: the paper's '4-bit'/'8-bit'/'16-bit' for GPTQ and bf16, else its name."""
    from notallbits import weights

    fmt = weights.FORMATS[name]
    return f"{fmt.bits}-bit" if weights.BY_BITS.get(fmt.bits) == name else name


def weight_format_names(data) -> list[str]:
    """Each row's weight format name (gptq-4, awq-4, fp8, bf16, ...), from weight_method and bits
    (summaries without weight_method: what the bits alone mean)."""
    from notallbits import weights

    methods = data["weight_method"] if "weight_method" in data else [""] * len(data)
    return [weights.of(m or weights.default_method(int(b)), int(b)).name for m, b in zip(methods, data["bits"])]


def model_size_key(name: str) -> float:
    """Order models by the parameter count in their name (Qwen3-0.6B < Qwen3-8B), else by name."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*[Bb]\b", name.replace("-", " "))
    return float(m.group(1)) if m else float("inf")


def error_bars(ax, rows, x: str, color="0.35", alpha: float = 0.6, lw: float = 0.9) -> None:
    """Each row's 95% interval over questions as a vertical bar (summaries without the interval
    columns: nothing)."""
    if "accuracy_ci95_low" not in rows or rows.empty:
        return
    low, high = 100 * rows["accuracy_ci95_low"].astype(float), 100 * rows["accuracy_ci95_high"].astype(float)
    ax.vlines(rows[x], low, high, colors=color, alpha=alpha, lw=lw, zorder=1)


def accuracy_vs_memory(df, dataset: str, out_path: str) -> None:
    """The paper's Figure 1: every configuration, with the memory-accuracy frontier; bars are
    95% intervals over questions."""
    plt, sns = _setup()
    data = _dataset_rows(df, dataset)
    data["weights"] = weight_format_names(data)
    data["budget"] = data["budget_tokens"].astype(int)
    models = _model_order(data)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sns.scatterplot(data=data, x="total_gib", y="accuracy_pct", hue="model", hue_order=models,
                    style="weights", markers={f: FORMAT_MARKERS.get(f, "o") for f in data["weights"].unique()},
                    size="budget", sizes=(25, 160), alpha=0.75, palette="viridis", ax=ax)
    error_bars(ax, data, "total_gib", color="0.6", alpha=0.35, lw=0.6)
    front = pareto_frontier(data, y="accuracy_pct")
    error_bars(ax, front, "total_gib", color="crimson", alpha=0.7)
    ax.step(front["total_gib"], front["accuracy_pct"], where="post", color="crimson", lw=1.4,
            marker="x", ms=5, label="Pareto frontier (bars: 95% CI)", zorder=5)
    ax.set_ylim(-3, 103)
    ax.set_xscale("log")
    ax.set_xlabel("total memory (GiB, log scale): weights + KV cache")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{dataset}: accuracy vs memory")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    _save(fig, out_path)


def _setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(**STYLE)
    return plt, sns


def _save(fig, out_path: str) -> None:
    import matplotlib.pyplot as plt

    from notallbits.io import atomic_path

    fig.tight_layout()
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)


def _dataset_rows(df, dataset: str, majority_only: bool = True):
    """A dataset's rows; the paper's figures show Maj@K, so Best-of-N rows (selection_vs_memory's)
    are left out unless asked for."""
    data = df[df["dataset"] == dataset]
    if majority_only and "selection" in data:
        data = data[data["selection"] == "majority"]
    data = data.copy()
    if data.empty:
        raise ValueError(f"summary has no rows for dataset {dataset!r}")
    data["accuracy_pct"] = 100 * data["accuracy"]
    return data


def _model_order(data) -> list[str]:
    return sorted(data["model"].unique(), key=lambda n: (model_size_key(n), n))


def pareto_choices(df, dataset: str, out_path: str) -> None:
    """The paper's Figure 2: what the Pareto-optimal configurations spend memory on —
    (a) their token budget and (b) their effective weight size — as memory grows."""
    from notallbits.analysis import with_view

    plt, sns = _setup()
    data = with_view(_dataset_rows(df, dataset), "single")
    data["weights"] = weight_format_names(data)
    front = pareto_frontier(data, x="memory_gib", y="accuracy_pct")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, col, label in ((axes[0], "budget_tokens", "token budget of frontier point"),
                           (axes[1], "weight_gib", "effective weight size (GiB)")):
        sns.scatterplot(data=front, x="memory_gib", y=col, hue="model", hue_order=_model_order(data),
                        style="weights", palette="viridis", s=70, ax=ax)
        ax.plot(front["memory_gib"], front[col], color="grey", lw=0.8, zorder=0)
        ax.set_xscale("log")
        ax.set_xlabel("total memory (GiB, log scale)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_title(f"(a) {dataset}: budget along the frontier")
    axes[1].set_title(f"(b) {dataset}: weights along the frontier")
    _save(fig, out_path)


def parallel_scaling(df, dataset: str, out_path: str) -> None:
    """The paper's Figure 5: accuracy vs memory, one frontier per vote count K."""
    plt, sns = _setup()
    data = _dataset_rows(df, dataset)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = sorted(data["k"].unique())
    palette = sns.color_palette("rocket_r", len(ks))
    for color, k in zip(palette, ks):
        front = pareto_frontier(data[data["k"] == k], y="accuracy_pct")
        error_bars(ax, front, "total_gib", color=color)
        ax.step(front["total_gib"], front["accuracy_pct"], where="post", color=color, lw=1.6,
                marker="o", ms=3, label=f"Maj@{k}")
    ax.set_xscale("log")
    ax.set_ylim(-3, 103)
    ax.set_xlabel("total memory (GiB, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{dataset}: parallel scaling (frontier per K)")
    ax.legend(frameon=False)
    _save(fig, out_path)


def _speed_vs_accuracy(df, dataset: str, out_path: str, col: str, label: str, lower_is_better: bool) -> None:
    plt, sns = _setup()
    data = _dataset_rows(df, dataset)
    data["weights"] = weight_format_names(data)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=data, x=col, y="accuracy_pct", hue="model", hue_order=_model_order(data),
                    style="weights", palette="viridis", alpha=0.75, ax=ax)
    x = data[col] if lower_is_better else -data[col]
    mask = pareto_mask(list(x), list(data["accuracy_pct"]))
    front = data[mask].sort_values(col)
    error_bars(ax, front, col, color="crimson")
    ax.step(front[col], front["accuracy_pct"], where="post" if lower_is_better else "pre",
            color="crimson", lw=1.4, label="frontier")
    ax.set_xscale("log")
    ax.set_ylim(-3, 103)
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{dataset}: accuracy vs {label.split(' (')[0]}")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    _save(fig, out_path)


def latency_vs_accuracy(df, dataset: str, out_path: str) -> None:
    """The paper's Figure 10: estimated seconds per question vs accuracy."""
    _speed_vs_accuracy(df, dataset, out_path, "latency_seconds", "latency (s per question, log scale)", True)


def throughput_vs_accuracy(df, dataset: str, out_path: str) -> None:
    """The paper's Figure 11: measured generation throughput vs accuracy."""
    _speed_vs_accuracy(df, dataset, out_path, "job_tokens_per_second",
                       "throughput (generated tokens/s, log scale)", False)


def kv_methods(df, dataset: str, out_path: str) -> None:
    """KV-compression figure: accuracy vs total memory per KV method (eviction vs
    quantization), colour by model size, one panel per model."""
    plt, sns = _setup()
    data = _dataset_rows(df, dataset)
    data["method"] = data["kv"]
    models = _model_order(data)
    fig, axes = plt.subplots(1, len(models) + 1, figsize=(4.2 * (len(models) + 1), 4), squeeze=False)
    axes = axes[0]
    sns.scatterplot(data=data, x="total_gib", y="accuracy_pct", hue="model", hue_order=models, style="method",
                    palette="viridis", alpha=0.8, ax=axes[0])
    axes[0].set_title(f"{dataset}: all models")
    for ax, model in zip(axes[1:], models):
        sub = data[data["model"] == model]
        for method, group in sub.groupby("method"):
            front = pareto_frontier(group, y="accuracy_pct")
            lines = ax.step(front["total_gib"], front["accuracy_pct"], where="post", marker="o", ms=3, label=method)
            error_bars(ax, front, "total_gib", color=lines[0].get_color())
        ax.set_title(model)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylim(-3, 103)
        ax.set_xlabel("total memory (GiB, log scale)")
        ax.set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=7, frameon=False)
    _save(fig, out_path)


KV_METHOD_TITLES = {"full": "full cache", "rkv": "R-KV (eviction)", "streamingllm": "StreamingLLM (eviction)",
                    "hqq": "HQQ (KV quantization)"}


def kv_weight_bits(df, dataset: str, out_path: str) -> None:
    """The paper's KV-compression view: accuracy (Maj@1) vs total memory, one panel per KV
    method, colour and marker by weight precision, with a frontier per precision."""
    plt, sns = _setup()
    data = _dataset_rows(df, dataset)
    data = data[data["k"] == 1]
    methods = [m for m in KV_METHOD_TITLES if m in set(data["kv_method"])]
    methods += sorted(set(data["kv_method"]) - set(methods))
    data["weights"] = weight_format_names(data)
    bits = sorted(data["weights"].unique(), key=lambda f: (int(data[data["weights"] == f]["bits"].iloc[0]), f))
    palette = dict(zip(bits, sns.color_palette("colorblind", len(bits))))
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4), squeeze=False, sharex=True,
                             sharey=True)
    for ax, method in zip(axes[0], methods):
        sub = data[data["kv_method"] == method]
        for b in bits:
            group = sub[sub["weights"] == b]
            if group.empty:
                continue
            ax.scatter(group["total_gib"], group["accuracy_pct"], color=palette[b], marker=FORMAT_MARKERS.get(b, "o"),
                       s=22, alpha=0.55, label=f"{format_label(b)} weights")
            front = pareto_frontier(group, y="accuracy_pct")
            error_bars(ax, front, "total_gib", color=palette[b])
            ax.step(front["total_gib"], front["accuracy_pct"], where="post", color=palette[b], lw=1.4)
        settings = ", ".join(sorted(sub["kv"].unique()))
        ax.set_title(f"{KV_METHOD_TITLES.get(method, method)}\n{settings}", fontsize=9)
        ax.set_xscale("log")
        ax.set_ylim(-3, 103)
        ax.set_xlabel("total memory (GiB, log scale)")
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    axes[0][0].set_ylabel("accuracy (%, Maj@1)")
    fig.suptitle(f"{dataset}: KV method x weight precision")
    _save(fig, out_path)


def selection_vs_memory(df, dataset: str, out_path: str) -> None:
    """Maj@K against Best-of-N by a process reward model, on the memory axis: every
    configuration and one frontier per selection rule; a Best-of-N point's memory includes
    the verifier's weights (the paper's comparison with ActPRM-X)."""
    from notallbits.analysis import selection_label

    plt, sns = _setup()
    data = _dataset_rows(df, dataset, majority_only=False)
    data["selection rule"] = selection_label(data)
    rules = sorted(data["selection rule"].unique(), key=lambda r: (r != "majority", r))
    palette = dict(zip(rules, sns.color_palette("colorblind", len(rules))))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for rule in rules:
        group = data[data["selection rule"] == rule]
        ax.scatter(group["total_gib"], group["accuracy_pct"], color=palette[rule], s=18, alpha=0.45)
        front = pareto_frontier(group, y="accuracy_pct")
        error_bars(ax, front, "total_gib", color=palette[rule])
        ax.step(front["total_gib"], front["accuracy_pct"], where="post", color=palette[rule], lw=1.6,
                marker="o", ms=3, label=f"{rule} (frontier)")
    verifiers = data.loc[data["verifier_gib"] > 0, ["verifier", "verifier_gib"]].drop_duplicates()
    note = "; ".join(f"{v}: {g:.3g} GiB of weights" for v, g in verifiers.itertuples(index=False))
    ax.set_xscale("log")
    ax.set_ylim(-3, 103)
    ax.set_xlabel("total memory (GiB, log scale): weights + KV cache + verifier")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{dataset}: majority voting vs PRM Best-of-N" + (f"\n({note})" if note else
                                                                   "\n(no Best-of-N cells for this dataset)"),
                 fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    _save(fig, out_path)


def weight_methods(df, dataset: str, out_path: str) -> None:
    """The paper's robustness check (GPTQ vs AWQ vs FP8 weights): accuracy vs total memory, one
    frontier per quantization method over its own checkpoints and the shared bf16 ones (16-bit is
    every method's top precision), every configuration behind it; marker = weight format."""
    from notallbits import weights

    plt, _ = _setup()
    data = _dataset_rows(df, dataset)
    data["weights"] = weight_format_names(data)
    data["method"] = [weights.FORMATS[f].method for f in data["weights"]]
    methods = [m for m in METHOD_COLORS if m in set(data["method"]) and m != "bf16"]
    methods += sorted(set(data["method"]) - set(METHOD_COLORS))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for fmt, group in data.groupby("weights"):
        method = group["method"].iloc[0]
        ax.scatter(group["total_gib"], group["accuracy_pct"], marker=FORMAT_MARKERS.get(fmt, "o"), s=18,
                   alpha=0.35, color=METHOD_COLORS.get(method, "black"), label=f"{fmt} configurations")
    for method in methods or ["bf16"]:
        front = pareto_frontier(data[data["method"].isin({method, "bf16"})], y="accuracy_pct")
        error_bars(ax, front, "total_gib", color=METHOD_COLORS.get(method, "black"))
        ax.step(front["total_gib"], front["accuracy_pct"], where="post", lw=1.8, marker="o", ms=3,
                color=METHOD_COLORS.get(method, "black"), label=f"{method} frontier (with bf16)")
    ax.set_xscale("log")
    ax.set_ylim(-3, 103)
    ax.set_xlabel("total memory (GiB, log scale): weights + KV cache")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{dataset}: weight quantization methods (frontier per method)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    _save(fig, out_path)


def table_image(csv_text: str, out_path: str, title: str, footnote: str = "") -> None:
    """Render a small CSV table (e.g. the paper's Table 1), cells as written, as an image."""
    import io
    import textwrap

    import pandas as pd

    plt, _ = _setup()
    table = pd.read_csv(io.StringIO(csv_text), dtype=str)
    note = textwrap.fill(footnote, 150) if footnote else ""
    height = 0.3 * (len(table) + 3) + (0.15 * (note.count("\n") + 1) if note else 0)
    fig, ax = plt.subplots(figsize=(1.4 * len(table.columns), height))
    ax.axis("off")
    t = ax.table(cellText=table.values.tolist(), colLabels=list(table.columns), loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1, 1.3)
    ax.set_title(title)
    if note:
        fig.text(0.01, 0.01, note, fontsize=6, va="bottom", ha="left")
        fig.subplots_adjust(bottom=0.2)
    _save(fig, out_path)


# Every per-dataset figure: name -> function(df, dataset, out_path). The workflow makes one rule
# per entry (rules/plot.smk), whose caption is report/<name>.rst: a new figure is a function,
# an entry here and a caption.
FIGURES = {
    "accuracy_vs_memory": accuracy_vs_memory,
    "pareto_choices": pareto_choices,
    "parallel_scaling": parallel_scaling,
    "latency_vs_accuracy": latency_vs_accuracy,
    "throughput_vs_accuracy": throughput_vs_accuracy,
    "kv_methods": kv_methods,
    "kv_weight_bits": kv_weight_bits,
    "selection_vs_memory": selection_vs_memory,
    "weight_methods": weight_methods,
}


# What a figure needs of a dataset's cells besides accuracy and memory (absent: every dataset has it).
# The workflow draws a figure only for the datasets whose cells have its axis (figures_for).
FIGURE_NEEDS = {
    "parallel_scaling": "votes",
    "kv_methods": "KV compression",
    "kv_weight_bits": "KV compression",
    "selection_vs_memory": "Best-of-N",
    "weight_methods": "weight methods",
}


def cell_axes(specs) -> set[str]:
    """The axes a dataset's generation jobs span (``specs``: notallbits.grid.JobSpec of each)."""
    axes = set()
    if any(k > 1 for s in specs for k in s.ks):
        axes.add("votes")
    if any(s.job.kv != "full" for s in specs):
        axes.add("KV compression")
    if any(s.verifiers for s in specs):
        axes.add("Best-of-N")
    if len({s.job.weight_method for s in specs} - {"bf16"}) >= 2:  # two quantization methods to compare
        axes.add("weight methods")
    return axes


def figures_for(specs) -> list[str]:
    """The figures a dataset's cells have the axes for: no KV figure with only the full cache, no
    Best-of-N figure without a verifier, no per-K frontiers with K = 1 only, ..."""
    axes = cell_axes(specs)
    return [name for name in FIGURES if FIGURE_NEEDS.get(name) is None or FIGURE_NEEDS[name] in axes]


def shows_table1(models: dict) -> bool:
    """The paper's Table 1 is Qwen3's: drawn for a config with a Qwen3 model (built as a Qwen3, or
    named, sourced or with a config.json as one)."""
    import json
    from pathlib import Path

    for name, spec in models.items():
        if spec.get("build"):
            if spec.get("family", "qwen3") == "qwen3":
                return True
            continue
        if any("qwen3" in str(v).lower() for v in (name, spec.get("source"), spec.get("architecture")) if v):
            return True
        cfg = Path(spec["source"]) / "config.json"
        if cfg.exists() and json.loads(cfg.read_text()).get("model_type") == "qwen3":
            return True
    return False


def plot_from_summary(figure: str, summary_path: str, out_path: str, **kwargs) -> None:
    import pandas as pd

    FIGURES[figure](pd.read_csv(summary_path), out_path=out_path, **kwargs)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("figure", choices=sorted(FIGURES), help="which figure (notallbits.figures.FIGURES)")
    p.add_argument("--summary", required=True, help="the summary table (CSV or Parquet)")
    p.add_argument("--dataset", required=True, help="the dataset whose rows are drawn")
    p.add_argument("--out", required=True, help="PNG to write")


def run(args: argparse.Namespace) -> None:
    plot_from_summary(args.figure, args.summary, args.out, dataset=args.dataset)


def write_table1(csv_path: str, png_path: str) -> None:
    """The paper's Table 1 from the memory model (2 decimals): a typed CSV, and an image of the
    printed form with the tied-lm_head footnote."""
    from notallbits.io import write_text
    from notallbits.memory import table1, table1_csv, table1_footnote

    rows = table1()
    write_text(csv_path, table1_csv(rows, marked=False))
    table_image(table1_csv(rows), png_path, "Table 1: weight and KV memory of Qwen3 (GiB)", table1_footnote())
