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


# A hand-written summary of one dataset, shaped like aggregate's: Qwen3-8B and Qwen3-14B (the
# names sort the other way round by text), GPTQ-4 and bf16 weights, the full cache, R-KV and HQQ,
# Maj@1 and Maj@4, one Best-of-N cell (verifier weights counted in its memory) and a row of another
# dataset. total_gib = weight_gib + kv_gib (+ verifier_gib); figures are drawn from these values.
# (id, model, weight_method, bits, kv, kv_method, budget, k, accuracy, weight_gib, kv_gib,
#  latency s, tokens/s)
SUMMARY = (
    ("A", "Qwen3-8B", "gptq", 4, "full", "full", 2000, 1, 0.30, 5.0, 0.25, 40, 900),
    ("B", "Qwen3-8B", "gptq", 4, "full", "full", 8000, 1, 0.50, 5.0, 1.0, 160, 800),
    ("C", "Qwen3-8B", "bf16", 16, "full", "full", 2000, 1, 0.35, 15.25, 0.25, 60, 500),
    ("D", "Qwen3-14B", "gptq", 4, "full", "full", 2000, 1, 0.45, 9.0, 0.5, 70, 600),
    ("E", "Qwen3-14B", "bf16", 16, "full", "full", 8000, 1, 0.70, 27.5, 2.0, 300, 300),
    ("F", "Qwen3-8B", "gptq", 4, "full", "full", 2000, 4, 0.40, 5.0, 1.0, 45, 950),
    ("G", "Qwen3-14B", "gptq", 4, "full", "full", 2000, 4, 0.60, 9.0, 2.0, 80, 700),
    ("I", "Qwen3-8B", "gptq", 4, "rkv-1k", "rkv", 8000, 1, 0.45, 5.0, 0.125, 50, 850),
    ("J", "Qwen3-8B", "gptq", 4, "hqq-4bit", "hqq", 8000, 1, 0.48, 5.0, 0.3, 55, 820),
)
# By hand: the memory-accuracy frontier of the Maj@K rows is I (5.125 GiB, 45%), J (5.3, 48%),
# B (6.0, 50%: F's 40% at the same memory loses), G (11.0, 60%), E (29.5, 70%).
FRONTIER_GIB, FRONTIER_PCT = [5.125, 5.3, 6.0, 11.0, 29.5], [45, 48, 50, 60, 70]


def summary(best_of_n=True):
    rows = []
    for (_, model, method, bits, kv, kv_method, budget, k, acc, w, kv_gib, lat, tps) in SUMMARY:
        rows.append({"dataset": "aime25", "model": model, "weight_method": method, "bits": bits, "kv": kv,
                     "kv_method": kv_method, "budget_tokens": budget, "k": k, "selection": "majority",
                     "verifier": "", "accuracy": acc, "accuracy_ci95_low": acc - 0.1, "accuracy_ci95_high": acc + 0.1,
                     "weight_gib": w, "kv_gib": kv_gib, "verifier_gib": 0.0, "total_gib": w + kv_gib,
                     "latency_seconds": lat, "job_tokens_per_second": tps})
    if best_of_n:  # Maj@4's F cell with ActPRM-X (3 GiB of weights) choosing the answer: 5 + 1 + 3 GiB
        rows.append({**rows[5], "selection": "prm_best_of_n", "verifier": "ActPRM-X", "accuracy": 0.55,
                     "accuracy_ci95_low": 0.45, "accuracy_ci95_high": 0.65, "verifier_gib": 3.0, "total_gib": 9.0})
    rows.append({**rows[0], "dataset": "gpqa", "accuracy": 0.99, "total_gib": 1.0})
    return pd.DataFrame(rows)


def drawn(monkeypatch, figure, df=None, **kwargs):
    """The Figure a figure function hands to _save (not written), for the path it was given."""
    import matplotlib.pyplot as plt

    from notallbits import figures

    got = {}
    monkeypatch.setattr("notallbits.figures._save", lambda fig, out: got.update(fig=fig, out=out))
    getattr(figures, figure)(summary() if df is None else df, "aime25", f"figures/{figure}_aime25.png", **kwargs)
    plt.close(got["fig"])
    assert got["out"] == f"figures/{figure}_aime25.png"
    return got["fig"]


def steps(ax):
    """(label, x, y, drawstyle) of each line of an axes."""
    return [(line.get_label(), list(line.get_xdata()), list(line.get_ydata()), line.get_drawstyle())
            for line in data_lines(ax)]


def data_lines(ax):
    """The lines an axes draws (not seaborn's empty legend entries)."""
    return [line for line in ax.get_lines() if len(line.get_xdata())]


def marker_of(collection):
    """The matplotlib marker a scatter's PathCollection draws ("o", "D", ...)."""
    from matplotlib.markers import MarkerStyle

    vertices = collection.get_paths()[0].vertices
    for m in ("o", "s", "D", "^", "P", "X", "v", "<", ">", "*", "p", "h", "H", "d", "8"):
        style = MarkerStyle(m)
        ref = style.get_path().transformed(style.get_transform()).vertices
        if ref.shape == vertices.shape and abs(ref - vertices).max() < 1e-6:
            return m
    return None


def bars(ax):
    from matplotlib.collections import LineCollection

    return [c for c in ax.collections if isinstance(c, LineCollection)]


def assert_viridis(points):
    """Every point coloured from matplotlib's viridis map (the figures' colour for models)."""
    from matplotlib import colormaps

    viridis = colormaps["viridis"](range(256))[:, :3]
    for rgba in points.get_facecolors():
        assert min(abs(viridis - rgba[:3]).sum(axis=1)) < 0.02


def assert_accuracy_axes(ax, xlabel):
    """Accuracy in percent from 0 to 100 (with a margin) against memory on a log axis."""
    assert ax.get_ylim() == (-3, 103)
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == xlabel
    assert ax.get_ylabel() == "accuracy (%)"


def assert_legend_outside_right(fig, ax):
    """The legend sits right of the plot, centred on it, without a frame (it would cover points)."""
    fig.canvas.draw()
    legend, box = ax.get_legend(), ax.get_window_extent()
    extent = legend.get_window_extent()
    assert extent.x0 >= box.x1
    assert abs((extent.y0 + extent.y1) / 2 - (box.y0 + box.y1) / 2) < 2
    assert not legend.get_frame_on()


def test_model_size_key_orders_by_parameter_count_then_names_without_one_last():
    from notallbits.figures import _model_order, model_size_key

    assert model_size_key("Qwen3-0.6B") == 0.6 and model_size_key("DeepSeek-R1-Distill-Qwen-14B") == 14
    assert model_size_key("tiny-qwen3") == float("inf")
    names = ["tiny-qwen3", "Qwen3-14B", "Qwen3-8B", "Qwen3-0.6B", "Qwen3-1.7B"]
    assert _model_order(pd.DataFrame({"model": names})) == ["Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-8B", "Qwen3-14B",
                                                             "tiny-qwen3"]


def test_accuracy_vs_memory_plots_every_majority_cell_and_the_frontier(monkeypatch):
    import matplotlib.colors

    fig = drawn(monkeypatch, "accuracy_vs_memory")
    ax = fig.axes[0]
    # the frontier by hand, as a step that holds each point's accuracy until the next point
    assert steps(ax) == [("Pareto frontier (bars: 95% CI)", pytest.approx(FRONTIER_GIB), pytest.approx(FRONTIER_PCT),
                          "steps-post")]
    assert data_lines(ax)[0].get_marker() == "x"
    points = ax.collections[0]  # seaborn's scatter: the 9 Maj@K cells of aime25 (no Best-of-N, no gpqa)
    got = sorted(map(tuple, points.get_offsets().round(4).tolist()))
    assert got == sorted((round(w + kv, 4), round(100 * a, 4)) for (*_, a, w, kv, _l, _t) in
                         [(r[0], r[8], r[9], r[10], r[11], r[12]) for r in SUMMARY])
    # size by budget: 2000 tokens smallest (25 pt^2), 8000 largest (160)
    sizes = dict(zip(map(tuple, points.get_offsets().round(4).tolist()), points.get_sizes()))
    assert sizes[(5.25, 30.0)] == 25 and sizes[(6.0, 50.0)] == 160
    # colour by model from viridis; marker by weight format: GPTQ-4 a circle, bf16 a diamond
    assert_viridis(points)
    handles, labels = ax.get_legend_handles_labels()
    legend = dict(zip(labels, handles))
    assert legend["gptq-4"].get_marker() == "o" and legend["bf16"].get_marker() == "D"
    assert labels.index("Qwen3-8B") < labels.index("Qwen3-14B")
    assert matplotlib.colors.to_hex(legend["Qwen3-8B"].get_color()) != matplotlib.colors.to_hex(
        legend["Qwen3-14B"].get_color())
    # 95% bars: every cell's (faint) and the frontier's, beneath the points
    assert len(bars(ax)) == 2
    assert all(b.get_zorder() <= points.get_zorder() and b.get_alpha() < 1 for b in bars(ax))
    assert_accuracy_axes(ax, "total memory (GiB, log scale): weights + KV cache")
    assert ax.get_title() == "aime25: accuracy vs memory"
    assert_legend_outside_right(fig, ax)


def test_pareto_choices_shows_budget_and_weight_size_along_the_frontier(monkeypatch):
    df = summary(best_of_n=False)
    df["total_gib"] = 99.0  # the panels' memory is the single-request view: weights + KV (+ verifier)
    fig = drawn(monkeypatch, "pareto_choices", df)
    a, b = fig.axes
    assert steps(a) == [(data_lines(a)[0].get_label(),
                         pytest.approx(FRONTIER_GIB), [8000, 8000, 8000, 2000, 8000], "default")]
    assert list(data_lines(b)[0].get_ydata()) == [5.0, 5.0, 5.0, 9.0, 27.5]  # effective weight size (GiB)
    for ax in (a, b):
        assert list(ax.collections[0].get_offsets()[:, 0]) == pytest.approx(FRONTIER_GIB)
        assert_viridis(ax.collections[0])
        assert data_lines(ax)[0].get_color() == "grey"
        assert ax.get_xscale() == "log" and ax.get_xlabel() == "total memory (GiB, log scale)"
        labels = ax.get_legend_handles_labels()[1]
        assert labels.index("Qwen3-8B") < labels.index("Qwen3-14B") and {"gptq-4", "bf16"} <= set(labels)
        assert not ax.get_legend().get_frame_on()
    assert a.get_ylabel() == "token budget of frontier point" and b.get_ylabel() == "effective weight size (GiB)"
    assert a.get_title() == "(a) aime25: budget along the frontier"
    assert a.get_position().x1 < b.get_position().x0  # the paper's Figure 2: (a) and (b) side by side
    assert b.get_title() == "(b) aime25: weights along the frontier"


def test_parallel_scaling_one_frontier_per_vote_count(monkeypatch):
    fig = drawn(monkeypatch, "parallel_scaling")
    ax = fig.axes[0]
    # Maj@1: I, J, B, E by hand (D and C are beaten); Maj@4: F (6.0 GiB, 40%) and G (11.0, 60%)
    assert steps(ax) == [("Maj@1", pytest.approx([5.125, 5.3, 6.0, 29.5]), pytest.approx([45, 48, 50, 70]), "steps-post"),
                         ("Maj@4", pytest.approx([6.0, 11.0]), pytest.approx([40, 60]), "steps-post")]
    one, four = data_lines(ax)
    assert one.get_color() != four.get_color() and one.get_marker() == "o"
    # each frontier's 95% bars in its colour: Maj@4's G from 50% to 70%
    import matplotlib.colors

    segs = {matplotlib.colors.to_hex(c.get_colors()[0]): c.get_segments() for c in bars(ax)}
    assert [tuple(s.round(6).ravel()) for s in segs[matplotlib.colors.to_hex(four.get_color())]] == [
        (6.0, 30.0, 6.0, 50.0), (11.0, 50.0, 11.0, 70.0)]
    assert_accuracy_axes(ax, "total memory (GiB, log scale)")
    assert ax.get_title() == "aime25: parallel scaling (frontier per K)"
    assert not ax.get_legend().get_frame_on()


@pytest.mark.parametrize("figure, xs, ys, where, xlabel, title", [
    # latency (lower is better): A 40 s, F 45, I 50, J 55, G 80, E 300 (C, D, B are slower for less)
    ("latency_vs_accuracy", [40, 45, 50, 55, 80, 300], [30, 40, 45, 48, 60, 70], "steps-post",
     "latency (s per question, log scale)", "aime25: accuracy vs latency"),
    # throughput (higher is better): E 300 tok/s, G 700, B 800, J 820, I 850, F 950 (A, D, C lose)
    ("throughput_vs_accuracy", [300, 700, 800, 820, 850, 950], [70, 60, 50, 48, 45, 40], "steps-pre",
     "throughput (generated tokens/s, log scale)", "aime25: accuracy vs throughput"),
])
def test_speed_figures_frontier_by_hand(monkeypatch, figure, xs, ys, where, xlabel, title):
    import matplotlib.colors

    fig = drawn(monkeypatch, figure)
    ax = fig.axes[0]
    assert steps(ax) == [("frontier", pytest.approx(xs), pytest.approx(ys), where)]
    assert data_lines(ax)[0].get_color() == "crimson"
    speed = {"latency_vs_accuracy": 11, "throughput_vs_accuracy": 12}[figure]  # the row's column in SUMMARY
    cells = sorted(map(tuple, ax.collections[0].get_offsets().round(4).tolist()))
    assert cells == sorted((float(r[speed]), round(100 * r[8], 4)) for r in SUMMARY)  # every Maj@K cell
    assert_viridis(ax.collections[0])
    front_bars, = bars(ax)
    assert [s[0][0] for s in front_bars.get_segments()] == pytest.approx(xs)
    assert matplotlib.colors.to_hex(front_bars.get_colors()[0]) == matplotlib.colors.to_hex("crimson")
    assert ax.get_xscale() == "log" and ax.get_ylim() == (-3, 103)
    assert ax.get_xlabel() == xlabel and ax.get_ylabel() == "accuracy (%)" and ax.get_title() == title
    labels = ax.get_legend_handles_labels()[1]
    assert labels.index("Qwen3-8B") < labels.index("Qwen3-14B") and {"gptq-4", "bf16", "frontier"} <= set(labels)
    assert_legend_outside_right(fig, ax)


def test_kv_methods_all_models_then_one_panel_per_model_with_a_frontier_per_kv_setting(monkeypatch):
    import matplotlib.colors

    fig = drawn(monkeypatch, "kv_methods")
    overview, small, large = fig.axes  # models by size, not by name
    assert fig.get_size_inches()[0] / 3 >= 4  # a readable panel each (as kv_weight_bits')
    assert [ax.get_title() for ax in fig.axes] == ["aime25: all models", "Qwen3-8B", "Qwen3-14B"]
    cells = overview.collections[0]  # every Maj@K cell of aime25 at (total GiB, accuracy %), by model from viridis
    assert sorted(map(tuple, cells.get_offsets().round(4).tolist())) == sorted(
        (round(r[9] + r[10], 4), round(100 * r[8], 4)) for r in SUMMARY)
    assert_viridis(cells)
    assert 0 < cells.get_alpha() < 1 and not data_lines(overview)
    assert {lb for lb in overview.get_legend_handles_labels()[1]} >= {"Qwen3-8B", "Qwen3-14B", "full", "rkv-1k",
                                                                       "hqq-4bit"}
    # Qwen3-8B's full cache: A (5.25, 30%) then B (6.0, 50%) (F is Maj@4 at B's memory, C costs more for less)
    assert steps(small) == [("full", pytest.approx([5.25, 6.0]), pytest.approx([30, 50]), "steps-post"),
                            ("hqq-4bit", [5.3], [48.0], "steps-post"), ("rkv-1k", [5.125], [45.0], "steps-post")]
    assert steps(large) == [("full", pytest.approx([9.5, 11.0, 29.5]), pytest.approx([45, 60, 70]), "steps-post")]
    for ax in (small, large):
        for line, bar in zip(data_lines(ax), bars(ax)):  # each frontier's bars in its line's colour
            assert line.get_marker() == "o"
            assert matplotlib.colors.to_hex(bar.get_colors()[0]) == matplotlib.colors.to_hex(line.get_color())
            assert [s[0][0] for s in bar.get_segments()] == list(line.get_xdata())
        assert ax.get_legend_handles_labels()[1] == [lb for lb, *_ in steps(ax)]
    for ax in fig.axes:
        assert_accuracy_axes(ax, "total memory (GiB, log scale)")
        assert not ax.get_legend().get_frame_on()


def test_kv_weight_bits_maj1_frontier_per_precision_by_hand(monkeypatch):
    import matplotlib.colors
    import seaborn as sns

    fig = drawn(monkeypatch, "kv_weight_bits")
    full, rkv, hqq = fig.axes
    assert fig.get_size_inches()[0] / 3 >= 4  # a readable panel per method
    assert full.get_shared_y_axes().joined(full, hqq) and full.get_shared_x_axes().joined(full, rkv)
    assert full.get_ylabel() == "accuracy (%, Maj@1)"
    assert full.get_title() == "full cache\nfull"
    # Maj@1 of the full cache: GPTQ-4 A, B, D (frontier A, B), bf16 C, E (frontier C, E); Maj@4's F and G left out
    assert [s[1:] for s in steps(full)] == [(pytest.approx([5.25, 6.0]), pytest.approx([30, 50]), "steps-post"),
                                            (pytest.approx([15.5, 29.5]), pytest.approx([35, 70]), "steps-post")]
    gptq, bf16 = full.collections[0], full.collections[2]
    assert sorted(map(tuple, gptq.get_offsets().tolist())) == [(5.25, 30.0), (6.0, 50.0), (9.5, 45.0)]
    assert marker_of(gptq) == "o" and marker_of(bf16) == "D" and gptq.get_alpha() < 1
    colorblind = [matplotlib.colors.to_hex(c) for c in sns.color_palette("colorblind")]  # precisions told apart
    assert {matplotlib.colors.to_hex(c.get_facecolors()[0]) for c in (gptq, bf16)} <= set(colorblind)
    assert matplotlib.colors.to_hex(gptq.get_facecolors()[0]) != matplotlib.colors.to_hex(bf16.get_facecolors()[0])
    assert full.get_legend_handles_labels()[1] == ["4-bit weights", "16-bit weights"]
    assert steps(rkv)[0][1:3] == ([5.125], [45.0]) and steps(hqq)[0][1:3] == ([5.3], [48.0])
    for ax in fig.axes:
        assert ax.get_ylim() == (-3, 103) and ax.get_xscale() == "log"


def test_selection_vs_memory_majority_against_best_of_n_with_the_verifiers_weights(monkeypatch):
    import matplotlib.colors

    fig = drawn(monkeypatch, "selection_vs_memory")
    ax = fig.axes[0]
    assert steps(ax) == [("majority (frontier)", pytest.approx(FRONTIER_GIB), pytest.approx(FRONTIER_PCT),
                          "steps-post"),
                         ("prm_best_of_n:ActPRM-X (frontier)", [9.0], [pytest.approx(55)], "steps-post")]
    majority, bon = ax.collections[0], ax.collections[2]  # each rule's cells, then its frontier's bars
    assert len(majority.get_offsets()) == 9 and bon.get_offsets().round(6).tolist() == [[9.0, 55.0]]
    for line, cells, bar in zip(data_lines(ax), (majority, bon), (ax.collections[1], ax.collections[3])):
        colour = matplotlib.colors.to_hex(line.get_color())
        assert matplotlib.colors.to_hex(cells.get_facecolors()[0]) == colour
        assert matplotlib.colors.to_hex(bar.get_colors()[0]) == colour
        assert 0 < cells.get_alpha() < 1
    assert bars(ax)[1].get_segments()[0].tolist() == [[9.0, 45.0], [9.0, 65.0]]
    assert data_lines(ax)[0].get_color() != data_lines(ax)[1].get_color()
    assert_accuracy_axes(ax, "total memory (GiB, log scale): weights + KV cache + verifier")
    assert ax.get_title() == "aime25: majority voting vs PRM Best-of-N\n(ActPRM-X: 3 GiB of weights)"
    assert_legend_outside_right(fig, ax)
    plain = drawn(monkeypatch, "selection_vs_memory", summary(best_of_n=False))
    assert plain.axes[0].get_title().endswith("\n(no Best-of-N cells for this dataset)")
    df = summary()
    two = pd.concat([df, df[df["verifier"] == "ActPRM-X"].assign(verifier="Qwen2.5-Math-PRM-7B", verifier_gib=14.19)])
    assert drawn(monkeypatch, "selection_vs_memory", two).axes[0].get_title().endswith(
        "\n(ActPRM-X: 3 GiB of weights; Qwen2.5-Math-PRM-7B: 14.2 GiB of weights)")


def test_weight_methods_colour_and_marker_per_format(monkeypatch):
    import matplotlib.colors

    fig = drawn(monkeypatch, "weight_methods")
    ax = fig.axes[0]
    cells = {c.get_label(): c for c in ax.collections if c.get_label().endswith("configurations")}
    assert set(cells) == {"gptq-4 configurations", "bf16 configurations"}
    assert matplotlib.colors.to_hex(cells["gptq-4 configurations"].get_facecolors()[0]) == matplotlib.colors.to_hex(
        "tab:blue")
    assert matplotlib.colors.to_hex(cells["bf16 configurations"].get_facecolors()[0]) == matplotlib.colors.to_hex("grey")
    assert marker_of(cells["gptq-4 configurations"]) == "o" and marker_of(cells["bf16 configurations"]) == "D"
    assert 0 < cells["bf16 configurations"].get_alpha() < 1
    (label, xs, ys, where), = steps(ax)  # GPTQ's frontier over GPTQ-4 and bf16 cells: the overall one
    assert (label, where) == ("gptq frontier (with bf16)", "steps-post")
    assert xs == pytest.approx(FRONTIER_GIB) and ys == pytest.approx(FRONTIER_PCT)
    line = data_lines(ax)[0]
    assert matplotlib.colors.to_hex(line.get_color()) == matplotlib.colors.to_hex("tab:blue")
    assert line.get_marker() == "o"
    assert matplotlib.colors.to_hex(bars(ax)[0].get_colors()[0]) == matplotlib.colors.to_hex("tab:blue")
    assert [s[0][0] for s in bars(ax)[0].get_segments()] == pytest.approx(FRONTIER_GIB)
    assert_accuracy_axes(ax, "total memory (GiB, log scale): weights + KV cache")
    assert ax.get_title() == "aime25: weight quantization methods (frontier per method)"
    assert_legend_outside_right(fig, ax)


def test_a_figure_is_written_as_a_png_from_a_summary_csv(tmp_path):
    """The plot step's entry: the summary CSV in, one PNG at --out (150 dpi), nothing else left."""
    import argparse

    import matplotlib.pyplot as plt
    from PIL import Image

    from notallbits.figures import run

    summary().to_csv(tmp_path / "summary.csv", index=False)
    before = plt.get_fignums()
    out = tmp_path / "figs" / "parallel_scaling_aime25.png"
    out.parent.mkdir()
    run(argparse.Namespace(figure="parallel_scaling", summary=str(tmp_path / "summary.csv"), out=str(out),
                           dataset="aime25"))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(out).size == (7 * 150, int(4.5 * 150))
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert plt.get_fignums() == before  # closed after saving


def test_table1_csv_and_image_carry_the_published_qwen3_8b_row(tmp_path, monkeypatch):
    """Qwen3-8B: 5.68 / 8.94 / 15.26 GiB of weights at 4/8/16 bits, 4.12 GiB of KV at 30k tokens,
    65.92 for 16 of them (the paper's Table 1). The CSV is typed (a column says which 16-bit cells
    hold a tied lm_head); the image prints the cells as written, with the footnote's * marks."""
    import matplotlib.pyplot as plt

    from notallbits.figures import write_table1

    got = {}
    monkeypatch.setattr("notallbits.figures._save", lambda fig, out: got.update(fig=fig, out=out))
    write_table1(str(tmp_path / "table1.csv"), str(tmp_path / "table1.png"))
    table = pd.read_csv(tmp_path / "table1.csv", dtype=str)
    row = table[table["model"] == "Qwen3-8B"].iloc[0]
    assert list(row[["weight_gib_4bit", "weight_gib_8bit", "weight_gib_16bit", "kv_gib_30k", "kv_gib_30k_x16"]]) == [
        "5.68", "8.94", "15.26", "4.12", "65.92"]
    assert row["tied_lm_head_stored"] == "false" and not table["weight_gib_16bit"].str.contains("\\*").any()
    fig, ax = got["fig"], got["fig"].axes[0]
    plt.close(fig)
    assert got["out"] == str(tmp_path / "table1.png")
    assert ax.get_title() == "Table 1: weight and KV memory of Qwen3 (GiB)"
    cells = ax.tables[0].get_celld()
    header = [cells[0, c].get_text().get_text() for c in range(7)]
    assert header == ["model", "params_b", "weight_gib_4bit", "weight_gib_8bit", "weight_gib_16bit", "kv_gib_30k",
                      "kv_gib_30k_x16"]
    rows = {cells[r, 0].get_text().get_text(): [cells[r, c].get_text().get_text() for c in range(1, 7)]
            for r in range(1, len(table) + 1)}
    assert rows["Qwen3-8B"][1:] == ["5.68", "8.94", "15.26", "4.12", "65.92"]
    assert any(v[3].endswith("*") for v in rows.values())  # the printed form marks the tied-head cells
    fig.canvas.draw()  # a fixed 8 pt, not shrunk to fit when drawn
    assert all(cells[k].get_text().get_fontsize() == 8 for k in cells)
    note, = fig.texts
    assert note.get_text().startswith("* 16-bit: the published bf16 checkpoint's tensors")
    assert 120 < max(map(len, note.get_text().split("\n"))) <= 150  # wrapped at 150 characters
    assert (note.get_ha(), note.get_va()) == ("left", "bottom")
    assert fig.get_size_inches()[1] >= 0.3 * (len(table) + 1)  # a row's height for each row


def test_table1_for_a_model_whose_source_or_config_json_names_the_family(tmp_path):
    """A model named otherwise is a Qwen3 when its source names one (Qwen/Qwen3-8B on the hub) or
    its local checkpoint's config.json says model_type qwen3 (transformers' name for the family);
    the checkpoint's path must not say qwen3 (tmp_path holds the test's name, which avoids it)."""
    import json

    from notallbits.figures import shows_table1

    assert shows_table1({"base": {"source": "Qwen/Qwen3-8B"}})
    for folder, model_type, table1 in (("a", "qwen3", True), ("b", "llama", False)):
        ckpt = tmp_path / folder / "ckpt"
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text(json.dumps({"model_type": model_type, "num_hidden_layers": 2}))
        assert shows_table1({"mine": {"source": str(ckpt)}}) == table1


def test_table_image_prints_cells_as_written(monkeypatch):
    """Cells are text: "0.50" keeps its zero and "007" its leading ones; one font size; an inch per
    column at least."""
    import matplotlib.pyplot as plt

    from notallbits.figures import table_image

    got = {}
    monkeypatch.setattr("notallbits.figures._save", lambda fig, out: got.update(fig=fig))
    long = "DeepSeek-R1-Distill-Qwen-32B-GPTQ-Int4"  # wider than its cell: still 8 pt, not shrunk
    table_image(f"run,accuracy,seed\nA,0.50,007\n{long},1.00,42\n", "t.png", "runs")
    fig = got["fig"]
    fig.canvas.draw()
    plt.close(fig)
    cells = fig.axes[0].tables[0].get_celld()
    assert [[cells[r, c].get_text().get_text() for c in range(3)] for r in range(3)] == [
        ["run", "accuracy", "seed"], ["A", "0.50", "007"], [long, "1.00", "42"]]
    assert {cells[k].get_text().get_fontsize() for k in cells} == {8}
    assert fig.axes[0].get_title() == "runs" and not fig.texts
    assert fig.get_size_inches()[0] >= 3


def test_format_label_the_papers_bit_names_for_gptq_and_bf16_else_the_formats_name():
    """The paper labels its GPTQ and bf16 checkpoints by bits ("4-bit", "8-bit", "16-bit"); the
    robustness check's other formats (AWQ, FP8) keep their own names."""
    from notallbits.figures import format_label

    assert [format_label(f) for f in ("gptq-4", "gptq-8", "bf16", "awq-4", "fp8")] == [
        "4-bit", "8-bit", "16-bit", "awq-4", "fp8"]


@pytest.mark.parametrize("figure", ["accuracy_vs_memory", "pareto_choices", "latency_vs_accuracy",
                                    "throughput_vs_accuracy", "kv_methods"])
def test_models_are_coloured_and_listed_by_size_whatever_the_summarys_row_order(monkeypatch, figure):
    """Qwen3-14B's rows first (the larger model, whose name sorts first) and its GPTQ-4 cell the
    cheapest on the frontier (Qwen3-8B in bf16 only, C at 65%): the legend still lists Qwen3-8B
    first and gives it the first of seaborn's two viridis colours (the map at 1/3, darker),
    Qwen3-14B the second (at 2/3)."""
    import matplotlib.colors
    import seaborn as sns

    df = summary(best_of_n=False).iloc[::-1].reset_index(drop=True)
    df = df[(df["model"] == "Qwen3-14B") | (df["weight_method"] == "bf16")].copy()
    df.loc[df["model"] == "Qwen3-8B", "accuracy"] = 0.65
    fig = drawn(monkeypatch, figure, df)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    legend = dict(zip(labels, handles))
    assert labels.index("Qwen3-8B") < labels.index("Qwen3-14B")

    def colour(handle):
        c = handle.get_facecolor() if hasattr(handle, "get_facecolor") and not hasattr(handle, "get_color") \
            else handle.get_color()
        return matplotlib.colors.to_rgb(c[0] if len(c) and not isinstance(c[0], float) else c)

    dark, bright = sns.color_palette("viridis", 2)
    near = lambda a, b: sum(abs(x - y) for x, y in zip(a, b)) < 0.05  # noqa: E731
    assert near(colour(legend["Qwen3-8B"]), dark) and near(colour(legend["Qwen3-14B"]), bright)


def _extra(df, **changes):
    """One more Maj@1 row of aime25, from Qwen3-8B's GPTQ-4 cell A with the given changes."""
    row = {**df.iloc[0].to_dict(), **changes}
    row["total_gib"] = row["weight_gib"] + row["kv_gib"]
    return pd.concat([df, pd.DataFrame([row])], ignore_index=True)


def test_kv_weight_bits_every_precision_of_every_panel_in_its_own_colour(monkeypatch):
    """Extra cells: one FP8 cell (a precision with a single configuration) under the full cache, a
    bf16 cell under R-KV with another budget (the panel's title lists both settings), and a KV
    method without a title of its own (StreamingLLM-like "sink") holding bf16 only: the panel
    draws it under its own name, though the lower precisions before it have no cell there."""
    import matplotlib.colors
    import seaborn as sns

    df = summary(best_of_n=False)
    df = _extra(df, weight_method="fp8", bits=8, weight_gib=8.0, kv_gib=0.25, accuracy=0.4)
    df = _extra(df, weight_method="bf16", bits=16, kv="rkv-2k", kv_method="rkv", weight_gib=15.25, kv_gib=0.25,
                accuracy=0.5)
    df = _extra(df, weight_method="bf16", bits=16, kv="sink-1k", kv_method="sink", weight_gib=15.25, kv_gib=0.125,
                accuracy=0.3)
    fig = drawn(monkeypatch, "kv_weight_bits", df)
    full, rkv, hqq, sink = fig.axes
    assert full.get_legend_handles_labels()[1] == ["4-bit weights", "fp8 weights", "16-bit weights"]
    assert rkv.get_title() == "R-KV (eviction)\nrkv-1k, rkv-2k"
    assert sink.get_title() == "sink\nsink-1k"
    assert sink.get_legend_handles_labels()[1] == ["16-bit weights"] and steps(sink)[0][1:3] == ([15.375], [30.0])
    assert rkv.get_legend_handles_labels()[1] == ["4-bit weights", "16-bit weights"]
    colorblind = [matplotlib.colors.to_hex(c) for c in sns.color_palette("colorblind")]
    colours = {}
    for ax in fig.axes:
        cells = [c for c in ax.collections if c not in bars(ax)]
        for points, bar, line in zip(cells, bars(ax), data_lines(ax)):  # per precision: cells, bars, frontier
            colour = matplotlib.colors.to_hex(points.get_facecolors()[0])
            assert matplotlib.colors.to_hex(bar.get_colors()[0]) == colour == matplotlib.colors.to_hex(line.get_color())
            colours.setdefault(points.get_label(), set()).add(colour)
    for ax in fig.axes:  # memory on every panel's x axis; frameless legends (a frame would hide cells)
        assert ax.get_xlabel() == "total memory (GiB, log scale)" and not ax.get_legend().get_frame_on()
    assert fig.get_suptitle() == "aime25: KV method x weight precision"
    # one colourblind-safe colour per precision, the same in every panel
    assert all(len(c) == 1 and c <= set(colorblind) for c in colours.values())
    assert len({c for cs in colours.values() for c in cs}) == 3


def test_selection_vs_memory_colourblind_colours_and_a_verifier_under_one_gib(monkeypatch):
    """A small verifier (0.5 GiB of weights) is named in the title too; each rule's colour is
    from seaborn's colourblind palette, majority its first."""
    import matplotlib.colors
    import seaborn as sns

    df = summary()
    df.loc[df["verifier"] == "ActPRM-X", ["verifier", "verifier_gib", "total_gib"]] = ["tiny-prm", 0.5, 6.5]
    fig = drawn(monkeypatch, "selection_vs_memory", df)
    ax = fig.axes[0]
    assert ax.get_title() == "aime25: majority voting vs PRM Best-of-N\n(tiny-prm: 0.5 GiB of weights)"
    colorblind = [matplotlib.colors.to_hex(c) for c in sns.color_palette("colorblind")]
    assert [matplotlib.colors.to_hex(line.get_color()) for line in data_lines(ax)] == colorblind[:2]
    assert all(line.get_marker() == "o" for line in data_lines(ax))  # each frontier's cells marked on its line


def test_weight_methods_a_format_with_one_cell_and_a_bf16_only_summary(monkeypatch):
    """One AWQ-4 cell is drawn in AWQ's orange with its frontier over it and bf16; a summary of
    bf16 cells only still draws bf16's frontier, in bf16's grey."""
    import matplotlib.colors

    df = _extra(summary(best_of_n=False), weight_method="awq", bits=4, weight_gib=5.5, kv_gib=0.25, accuracy=0.42)
    ax = drawn(monkeypatch, "weight_methods", df).axes[0]
    cells = {c.get_label(): c for c in ax.collections if c.get_label().endswith("configurations")}
    assert cells["awq-4 configurations"].get_offsets().tolist() == [[5.75, 42.0]]
    assert matplotlib.colors.to_hex(cells["awq-4 configurations"].get_facecolors()[0]) == matplotlib.colors.to_hex(
        "tab:orange")
    assert [lb for lb, *_ in steps(ax)] == ["gptq frontier (with bf16)", "awq frontier (with bf16)"]
    bf16 = summary(best_of_n=False)
    bf16 = bf16[bf16["weight_method"] == "bf16"]
    ax = drawn(monkeypatch, "weight_methods", bf16).axes[0]
    (label, xs, ys, _), = steps(ax)
    assert (label, xs, ys) == ("bf16 frontier (with bf16)", pytest.approx([15.5, 29.5]), pytest.approx([35, 70]))
    assert matplotlib.colors.to_hex(data_lines(ax)[0].get_color()) == matplotlib.colors.to_hex("grey")


def test_table_image_has_no_axes_and_the_table_and_footnote_lie_inside_the_image(tmp_path, monkeypatch):
    """A table image shows the table alone (no axis lines or ticks), and both the table and its
    footnote inside the saved image (a footnote placed beyond the figure's edge would be cut off)."""
    import matplotlib.pyplot as plt

    from notallbits import figures

    got = {}
    real_save = figures._save
    monkeypatch.setattr("notallbits.figures._save", lambda fig, out: (got.update(fig=fig), real_save(fig, out)))
    csv = "model,a,b,c,d,e,f\nA,1,2,3,4,5,6\nB,1,2,3,4,5,6\n"  # as wide as Table 1 (7 columns)
    figures.table_image(csv, str(tmp_path / "t.png"), "t", "* a footnote " * 20)
    fig = got["fig"]
    ax = fig.axes[0]
    assert not ax.axison
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # as saved: _save laid it out and closed it
    canvas.draw()
    renderer = canvas.get_renderer()
    inside = fig.bbox.padded(1)
    for artist in (ax.tables[0], fig.texts[0]):
        box = artist.get_window_extent(renderer)
        assert inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1), artist
    plt.close(fig)


def test_parallel_scaling_colours_votes_along_seaborns_rocket_r_light_to_dark(monkeypatch):
    """More votes, a darker line: Maj@1 and Maj@4 take seaborn's rocket_r palette of two colours in
    that order (a sequential map, light to dark)."""
    import matplotlib.colors
    import seaborn as sns

    fig = drawn(monkeypatch, "parallel_scaling")
    got = [matplotlib.colors.to_hex(line.get_color()) for line in data_lines(fig.axes[0])]
    assert got == [matplotlib.colors.to_hex(c) for c in sns.color_palette("rocket_r", 2)]


def test_selection_vs_memory_draws_every_verifiers_rule_beyond_the_palettes_ten_colours(monkeypatch):
    """Eleven verifiers' Best-of-N rules and majority: twelve frontiers, though seaborn's colourblind
    palette has ten colours (asked for twelve, seaborn cycles them)."""
    df = summary()
    bon = df[df["verifier"] == "ActPRM-X"]
    df = pd.concat([df] + [bon.assign(verifier=f"prm-{i:02d}") for i in range(10)], ignore_index=True)
    ax = drawn(monkeypatch, "selection_vs_memory", df).axes[0]
    labels = [lb for lb, *_ in steps(ax)]
    assert labels == ["majority (frontier)", "prm_best_of_n:ActPRM-X (frontier)"] + [
        f"prm_best_of_n:prm-{i:02d} (frontier)" for i in range(10)]


def test_accuracy_vs_memory_sizes_points_by_budget_in_whole_tokens(monkeypatch):
    """The size legend names the token budgets as the whole numbers they are ("2000", not "2000.0"),
    even from a summary whose budget column was read as floats."""
    df = summary()
    df["budget_tokens"] = df["budget_tokens"].astype(float)
    labels = drawn(monkeypatch, "accuracy_vs_memory", df).axes[0].get_legend_handles_labels()[1]
    assert labels[labels.index("budget") + 1:labels.index("weights")] == ["2000", "8000"]


def test_accuracy_vs_memory_frontier_in_crimson_over_grey_bars_of_every_cell(monkeypatch):
    """The frontier (line and its 95% bars) in crimson; every cell's bars in a faint grey, not in
    matplotlib's default blue line colour."""
    import matplotlib.colors

    ax = drawn(monkeypatch, "accuracy_vs_memory").axes[0]
    assert matplotlib.colors.to_hex(data_lines(ax)[0].get_color()) == matplotlib.colors.to_hex("crimson")
    cells, front = bars(ax)
    assert matplotlib.colors.to_hex(front.get_colors()[0]) == matplotlib.colors.to_hex("crimson")
    r, g, b, _ = cells.get_colors()[0]
    assert r == g == b and 0.3 < r < 0.9  # a grey


def _spec(method="gptq", kv="full", ks=(1,), verifiers=()):
    from types import SimpleNamespace

    return SimpleNamespace(job=SimpleNamespace(weight_method=method, kv=kv), ks=list(ks), verifiers=list(verifiers))


def test_figures_for_a_dataset_are_those_its_cells_have_the_axes_for():
    """Votes need a K above 1 (K = 2 is enough); the weight-methods figure needs two quantization
    methods besides bf16 (the paper's check: GPTQ against AWQ); the KV figures a compressed cache;
    the selection figure a verifier. Every dataset gets the memory, Pareto and speed figures."""
    from notallbits.figures import FIGURES, cell_axes, figures_for

    always = ["accuracy_vs_memory", "pareto_choices", "latency_vs_accuracy", "throughput_vs_accuracy"]
    assert cell_axes([_spec(ks=[1])]) == set() and figures_for([_spec(ks=[1])]) == always
    assert cell_axes([_spec(ks=[1, 2])]) == {"votes"}
    assert cell_axes([_spec("gptq"), _spec("awq"), _spec("bf16")]) == {"weight methods"}
    assert cell_axes([_spec("gptq"), _spec("bf16")]) == set()
    assert cell_axes([_spec(kv="rkv-2k")]) == {"KV compression"}
    assert cell_axes([_spec(verifiers=["ActPRM-X"])]) == {"Best-of-N"}
    every = [_spec("gptq", ks=[1, 8]), _spec("awq", kv="hqq-4bit", verifiers=["ActPRM-X"])]
    assert figures_for(every) == list(FIGURES)
    assert figures_for([_spec(ks=[1, 4])]) == always[:2] + ["parallel_scaling"] + always[2:]


def test_table1_for_models_built_here_by_their_family_and_the_models_after_another_family(tmp_path):
    """A model built locally is a Qwen3 unless its family says otherwise (the build's default);
    a built Llama is not, and the next model is still looked at (tmp_path holds the test's name,
    which avoids "qwen3")."""
    from notallbits.figures import shows_table1

    built = str(tmp_path / "results" / "models" / "tiny" / "w16")  # not written yet: no config.json
    assert shows_table1({"tiny": {"source": built, "build": "tiny"}})
    assert not shows_table1({"tiny": {"source": built, "build": "tiny", "family": "llama"}})
    assert shows_table1({"tiny": {"source": built, "build": "tiny", "family": "llama"},
                         "base": {"source": "Qwen/Qwen3-8B"}})


def test_model_size_key_reads_the_count_in_any_case_and_across_a_dash():
    """Hub names write the unit either way ("Qwen3-8B", "llama-7b") and sometimes apart from the
    count ("OLMo-2-7-B": 7, not the version 2)."""
    from notallbits.figures import model_size_key

    assert model_size_key("llama-7b") == 7 and model_size_key("OLMo-2-7-B") == 7


def test_table1_for_a_model_whose_architecture_names_the_family():
    from notallbits.figures import shows_table1

    assert shows_table1({"mine": {"source": "/nonexistent/ckpt", "architecture": "Qwen3ForCausalLM"}})


def test_a_dataset_without_rows_is_named_in_the_error():
    from notallbits.figures import accuracy_vs_memory

    with pytest.raises(ValueError, match="summary has no rows for dataset 'math500'"):
        accuracy_vs_memory(summary(), "math500", "x.png")
