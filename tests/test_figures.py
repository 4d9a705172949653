"""The figure list is the one place a figure is declared: the workflow makes a local plot rule per
entry, each with its caption, and the KV x weight-precision view draws what its caption says."""

import os
from pathlib import Path

import pandas as pd
import pytest

from notallbits.figures import FIGURES, kv_weight_bits
from tests.conftest import DEMO, ROOT


def test_every_figure_has_a_local_rule_a_caption_and_a_target(tmp_path):
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
            workflow = api.workflow(resource_settings=ResourceSettings(cores=1),
                                    config_settings=ConfigSettings(configfiles=[DEMO]),
                                    snakefile=ROOT / "Snakefile", workdir=tmp_path)._workflow
            rules = {r.name: r for r in workflow.rules}
            targets = set(workflow.globals["all_targets"]())
            local = set(workflow._localrules)
    finally:
        os.chdir(cwd)
    # configs/tiny.yaml: demo-arith has every axis (KV methods, Best-of-N, AWQ/FP8 beside GPTQ, K > 1);
    # demo-choice only weights, budgets and K (listed by hand)
    choice = {"accuracy_vs_memory", "pareto_choices", "parallel_scaling", "latency_vs_accuracy", "throughput_vs_accuracy"}
    for name in FIGURES:
        assert f"plot_{name}" in rules and f"plot_{name}" in local, name
        assert (ROOT / "report" / f"{name}.rst").read_text().strip(), name
        assert f"results/tiny/figures/{name}_demo-arith.png" in targets, name
        assert (f"results/tiny/figures/{name}_demo-choice.png" in targets) == (name in choice), name
    assert "results/tiny/figures/table1.png" in targets
    assert {n for n in rules if n.startswith("plot_")} == {f"plot_{n}" for n in FIGURES}


@pytest.mark.parametrize("config, table1", [("config.yaml", True), ("configs/r1-distill.yaml", False),
                                           ("configs/tiny-families.yaml", False), ("configs/demo.yaml", True)])
def test_table1_of_qwen3_only_for_configs_with_qwen3(config, table1):
    import yaml

    from notallbits.figures import shows_table1

    assert shows_table1(yaml.safe_load((ROOT / config).read_text())["models"]) == table1


def test_accuracy_vs_memory_draws_each_rows_interval(tmp_path, monkeypatch):
    from notallbits.figures import accuracy_vs_memory

    rows = [{"dataset": "aime25", "model": "Qwen3-8B", "bits": 16, "weight_method": "bf16", "kv": "full",
             "budget_tokens": b, "k": 1, "accuracy": a, "accuracy_ci95_low": lo, "accuracy_ci95_high": hi,
             "total_gib": g} for b, a, lo, hi, g in ((2000, 0.2, 0.1, 0.35, 15.5), (6000, 0.4, 0.25, 0.57, 16.0))]
    drawn = {}
    monkeypatch.setattr("notallbits.figures._save", lambda fig, out: drawn.setdefault("fig", fig))
    accuracy_vs_memory(pd.DataFrame(rows), "aime25", str(tmp_path / "x.png"))
    from matplotlib.collections import LineCollection

    bars = [c for c in drawn["fig"].axes[0].collections if isinstance(c, LineCollection)]
    segments = sorted(tuple(map(tuple, s.round(6))) for c in bars for s in c.get_segments())
    # every configuration's bar, and again on the frontier (both points are on it), in % of accuracy
    assert segments == sorted(2 * [((15.5, 10.0), (15.5, 35.0)), ((16.0, 25.0), (16.0, 57.0))])


def test_kv_weight_bits_one_panel_per_method_colour_by_bits(tmp_path, monkeypatch):
    rows = []
    for method, kv in (("full", "full"), ("rkv", "rkv-2k"), ("hqq", "hqq-4bit")):
        for bits in (4, 8, 16):
            for budget in (2000, 6000):
                for k in (1, 8):
                    rows.append({"dataset": "aime25", "model": "Qwen3-8B", "bits": bits, "kv": kv,
                                 "kv_method": method, "budget_tokens": budget, "k": k,
                                 "accuracy": 0.1 * bits / 16 + budget / 1e5, "total_gib": bits + budget / 1000})
    import matplotlib.figure

    drawn = {}
    monkeypatch.setattr("notallbits.figures._save", lambda fig, out: drawn.setdefault("fig", fig))
    kv_weight_bits(pd.DataFrame(rows), "aime25", str(tmp_path / "x.png"))
    fig = drawn["fig"]
    assert isinstance(fig, matplotlib.figure.Figure)
    axes = fig.axes
    assert [ax.get_title().split("\n")[0] for ax in axes] == ["full cache", "R-KV (eviction)", "HQQ (KV quantization)"]
    for ax in axes:
        labels = ax.get_legend_handles_labels()[1]
        assert labels == ["4-bit weights", "8-bit weights", "16-bit weights"]
        # Maj@1 only: 3 precisions x 2 budgets points per panel
        assert sum(len(c.get_offsets()) for c in ax.collections) == 6


def test_weight_methods_one_frontier_per_method(tmp_path, monkeypatch):
    """GPTQ 4/8, AWQ-4, FP8 and bf16 rows: one frontier per quantization method, each over its own
    formats and the shared bf16 rows, so each frontier ends at bf16's best point."""
    from notallbits.figures import weight_methods

    rows = []
    for method, bits, gib, acc in (("gptq", 4, 5.7, 0.5), ("gptq", 8, 8.9, 0.6), ("awq", 4, 5.6, 0.55),
                                   ("fp8", 8, 8.8, 0.62), ("bf16", 16, 15.3, 0.65)):
        for budget in (2000, 6000):
            rows.append({"dataset": "aime25", "model": "Qwen3-8B", "weight_method": method, "bits": bits, "kv": "full",
                         "budget_tokens": budget, "k": 1, "accuracy": acc + budget / 1e5, "total_gib": gib + budget / 1e4})
    drawn = {}
    monkeypatch.setattr("notallbits.figures._save", lambda fig, out: drawn.setdefault("fig", fig))
    weight_methods(pd.DataFrame(rows), "aime25", str(tmp_path / "x.png"))
    ax = drawn["fig"].axes[0]
    fronts = {line.get_label(): list(line.get_xdata()) for line in ax.get_lines()}
    assert set(fronts) == {"gptq frontier (with bf16)", "awq frontier (with bf16)", "fp8 frontier (with bf16)"}
    assert fronts["awq frontier (with bf16)"] == pytest.approx([5.8, 6.2, 15.5, 15.9])  # AWQ-4 then bf16; no GPTQ or FP8 point
    assert fronts["fp8 frontier (with bf16)"] == pytest.approx([9.0, 9.4, 15.9])  # bf16 at 15.5 GiB (0.67) is beaten by FP8 at 9.4 (0.68)
    assert len(fronts["gptq frontier (with bf16)"]) == 6
    labels = ax.get_legend_handles_labels()[1]
    assert {"awq-4 configurations", "fp8 configurations", "gptq-4 configurations", "bf16 configurations"} <= set(labels)
