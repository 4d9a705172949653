"""Frontier, threshold, advisor and planner on hand-built summaries whose answers are known."""

import pandas as pd
import pytest
import yaml

from notallbits import UserError, grid
from notallbits.advisor import advise, parse_memory
from notallbits.analysis import best_k_by_memory, classify_moves, pareto_frontier, pareto_mask, threshold, with_view
from notallbits.plan import plan
from tests.conftest import ROOT


def row(model, bits, weight_gib, budget, k, kv_gib, acc, dataset="aime25", kv="full"):
    return {"dataset": dataset, "model": model, "bits": bits, "kv": kv, "budget_tokens": budget, "k": k,
            "accuracy": acc, "weight_gib": weight_gib, "kv_gib": kv_gib, "total_gib": weight_gib + kv_gib}


@pytest.fixture
def summary():
    # A frontier that first buys weights (0.6B -> 4B -> 8B 8-bit), then budget and votes.
    return pd.DataFrame([
        row("Qwen3-0.6B", 4, 0.5, 2000, 1, 0.1, 0.05),
        row("Qwen3-4B", 4, 2.0, 2000, 1, 0.3, 0.20),
        row("Qwen3-8B", 8, 8.9, 2000, 1, 0.3, 0.40),
        row("Qwen3-8B", 8, 8.9, 14000, 1, 1.9, 0.55),
        row("Qwen3-8B", 8, 8.9, 30000, 4, 16.5, 0.65),
        row("Qwen3-32B", 4, 17.0, 2000, 1, 0.5, 0.45),  # dominated: more memory, less accurate
        row("Qwen3-0.6B", 16, 1.2, 30000, 16, 30.0, 0.10),  # dominated
    ])


def test_pareto_mask_by_hand():
    assert pareto_mask([1, 2, 2, 3, 4], [0.1, 0.3, 0.2, 0.25, 0.5]) == [True, True, False, False, True]


def test_threshold_is_where_weights_stop_growing(summary):
    front = pareto_frontier(with_view(summary, "single"), x="memory_gib")
    assert list(front["accuracy"]) == [0.05, 0.20, 0.40, 0.55, 0.65]
    assert classify_moves(front) == ["weights", "weights", "compute", "compute"]
    t = threshold(front)
    assert (t["model"], t["bits"], t["budget_tokens"]) == ("Qwen3-8B", 8, 2000)
    assert t["effective_weight_gib"] == 8.9 and t["moves_explained"] == 1.0
    assert (t["weights_moves"], t["compute_moves"], t["k"], t["accuracy"]) == (2, 2, 1, 0.40)
    assert t["weight_method"] == "gptq"  # 8 bits in a summary without the column: GPTQ


def test_batch16_view_charges_kv_sixteen_times(summary):
    v = with_view(summary, "batch16")
    assert v.loc[4, "memory_gib"] == pytest.approx(8.9 + 16 * 16.5)


def test_advisor_picks_best_within_memory(summary):
    a = advise(summary, 12.0, "aime25")
    assert (a["best"]["model"], a["best"]["budget_tokens"], a["best"]["k"]) == ("Qwen3-8B", 14000, 1)
    assert a["runner_up"]["model"] == "Qwen3-4B"  # the best setup that differs in model/bits/KV
    assert a["side_of_threshold"].startswith("above")
    assert advise(summary, 2.4, "aime25")["side_of_threshold"].startswith("below")


def test_advisor_errors(summary):
    with pytest.raises(UserError, match=r"no configuration fits in 0.1 GiB; the smallest needs 0.6 GiB"):
        advise(summary, 0.1, "aime25")
    with pytest.raises(UserError, match="no results for dataset 'gpqa'"):
        advise(summary, 8, "gpqa")
    with pytest.raises(UserError, match="empty"):
        advise(summary.iloc[0:0], 8, "aime25")


def test_parse_memory():
    assert parse_memory("8GiB") == 8 and parse_memory("512MiB") == 0.5 and parse_memory("24") == 24
    assert parse_memory("8 GB") == 8e9 / 2**30  # decimal: a vendor's "80GB" card holds 74.5 GiB
    with pytest.raises(UserError):
        parse_memory("eight")


def test_best_k_by_memory(summary):
    table = best_k_by_memory(summary)
    big = table[table["memory_cap_gib"] >= 30].iloc[0]
    assert big["best_k"] == 4 and big["accuracy"] == 0.65
    assert (big["model"], big["bits"], big["budget_tokens"], big["kv"]) == ("Qwen3-8B", 8, 30000, "full")
    assert big["weight_method"] == "gptq"


def test_plan_counts_tokens_by_hand():
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["sweeps"] = raw["sweeps"][:1]  # the main grid
    config = grid.validate(raw)
    p = plan(config, {"default": 1000.0})
    assert p["cells"] == 2 * 6 * 3 * 8 * 16 and p["jobs"] == 36  # Maj@K for K = 1..16 costs no job
    # per job: questions x 32 samples x (30000 + 8 budgets x 32 answer tokens)
    per_sample = 30000 + 8 * config["generation"]["answer_max_tokens"]
    assert p["tokens"] == 6 * 3 * (30 + 198) * 32 * per_sample
    assert p["gpu_hours"] == pytest.approx(p["tokens"] / 1000 / 3600)


def test_frontiers_thresholds_and_written_tables(summary, tmp_path):
    """Per (dataset, view): the single-view frontier of the fixture is its five undominated
    points; in the batch16 view KV costs 16x, so the 30k-token Maj@4 point (8.9 + 16 x 16.5
    GiB) is still the most accurate and stays, and the threshold of both views is Qwen3-8B
    8-bit at 2k tokens. write_analysis writes the three tables from the summary CSV."""
    from notallbits.analysis import frontiers, thresholds, write_analysis

    two = pd.concat([summary, summary.assign(dataset="gpqa_diamond")], ignore_index=True)
    f = frontiers(two)
    assert sorted(set(zip(f["dataset"], f["view"]))) == [
        ("aime25", "batch16"), ("aime25", "single"), ("gpqa_diamond", "batch16"), ("gpqa_diamond", "single")]
    single = f[(f["view"] == "single") & (f["dataset"] == "aime25")]
    assert list(single["accuracy"]) == [0.05, 0.20, 0.40, 0.55, 0.65]
    batch = f[(f["view"] == "batch16") & (f["dataset"] == "aime25")]
    assert list(batch["accuracy"]) == [0.05, 0.20, 0.40, 0.45, 0.55, 0.65]  # 32B at 2k beats 8B at 14k there
    assert batch["memory_gib"].tolist()[-1] == pytest.approx(8.9 + 16 * 16.5)
    t = {(r["dataset"], r["view"]): r for r in thresholds(two)}
    assert len(t) == 4
    assert (t["aime25", "single"]["model"], t["aime25", "single"]["budget_tokens"]) == ("Qwen3-8B", 2000)
    # batch16: weights grow up to Qwen3-32B at 2k (25 GiB there), then budget and votes
    assert (t["aime25", "batch16"]["model"], t["aime25", "batch16"]["memory_gib"]) == ("Qwen3-32B", 17.0 + 16 * 0.5)
    assert list(f.index) == list(range(len(f)))
    path = tmp_path / "summary.csv"
    two.to_csv(path, index=False)
    out = [tmp_path / n for n in ("front.csv", "thr.csv", "bestk.csv")]
    write_analysis(str(path), *map(str, out))
    written = pd.read_csv(out[0])
    assert len(written) == len(f) and written["accuracy"].tolist() == f["accuracy"].tolist()
    assert written["memory_gib"].tolist() == pytest.approx(f["memory_gib"].tolist(), rel=1e-6)
    assert len(pd.read_csv(out[1])) == 4 and set(pd.read_csv(out[1])["view"]) == {"single", "batch16"}
    assert set(pd.read_csv(out[2])["dataset"]) == {"aime25", "gpqa_diamond"}


def test_threshold_of_a_frontier_that_only_buys_weights():
    """Two frontier points, the second with bigger weights: one 'weights' move, so the split
    comes after it and the threshold is the second (largest-weights) point."""
    front = pd.DataFrame([row("Qwen3-0.6B", 4, 0.5, 2000, 1, 0.1, 0.05), row("Qwen3-4B", 4, 2.0, 2000, 1, 0.3, 0.2)])
    t = threshold(with_view(front, "single"))
    assert (t["model"], t["weights_moves"], t["compute_moves"], t["moves_explained"]) == ("Qwen3-4B", 1, 0, 1.0)


def test_advisor_tells_weight_methods_apart(summary):
    """An FP8 Qwen3-8B is another setup than the GPTQ 8-bit one: it can be the runner-up, and says FP8."""
    from notallbits.advisor import format_advice

    fp8 = {**row("Qwen3-8B", 8, 8.8, 14000, 1, 1.9, 0.54), "weight_method": "fp8"}
    gptq = summary.assign(weight_method=["bf16" if b == 16 else "gptq" for b in summary["bits"]])
    a = advise(pd.concat([gptq, pd.DataFrame([fp8])], ignore_index=True), 12.0, "aime25")
    assert (a["best"]["weight_method"], a["best"]["accuracy"]) == ("gptq", 0.55)
    assert (a["runner_up"]["model"], a["runner_up"]["weight_method"]) == ("Qwen3-8B", "fp8")
    text = format_advice(a)
    assert "Qwen3-8B 8-bit, KV full" in text and "Qwen3-8B 8-bit FP8, KV full" in text


def test_advice_line_by_hand_and_older_summary_rows():
    """One pick written out by hand (Maj@K: no verifier term); a row of a summary written before
    the selection/verifier columns (absent, or empty cells read as NaN) is a Maj@K pick without
    verifier memory."""
    from notallbits.advisor import _describe, format_advice

    pick = {"model": "Qwen3-8B", "bits": 4, "weight_method": "gptq", "kv": "full", "budget_tokens": 8192, "k": 4,
            "selection": "majority", "verifier": "", "verifier_gib": 0.0, "accuracy": 0.4567, "memory_gib": 9.5,
            "weight_gib": 5.5, "kv_gib": 4.0}
    advice = {"dataset": "aime25", "memory_gib": 24.0, "view": "single", "configurations_that_fit": 3, "best": pick,
              "runner_up": None, "threshold": None}
    assert format_advice(advice).splitlines() == [
        "aime25 within 24 GiB (single view, 3 configurations fit):",
        "  best:      Qwen3-8B 4-bit, KV full, budget 8192 tokens, Maj@4: accuracy 45.7% using 9.5 GiB "
        "(weights 5.5 + KV 4)"]
    row = pd.Series({"model": "Qwen3-8B", "bits": 4, "budget_tokens": 8192, "k": 4, "kv": "full", "accuracy": 0.4567,
                     "memory_gib": 9.5, "weight_gib": 5.5, "kv_gib": 4.0})
    described = _describe(row)
    assert (described["selection"], described["verifier"], described["verifier_gib"]) == ("majority", "", 0.0)
    assert described["weight_method"] == "gptq"
    described = _describe(pd.concat([row, pd.Series({"selection": float("nan"), "verifier_gib": float("nan")})]))
    assert (described["selection"], described["verifier_gib"]) == ("majority", 0.0)


def test_advise_cli_finds_the_runs_summary_and_prints_strict_json(summary, tmp_path, monkeypatch, capsys):
    """`notallbits advise` in a workflow folder with one run: its results/<config>/summary.csv,
    the same best pick as advise() on the table, as JSON without NaN (a frontier of one
    point has no threshold: null)."""
    import argparse
    import json

    import numpy as np

    from notallbits.advisor import json_safe, read_summary, run

    (tmp_path / "results" / "paper").mkdir(parents=True)
    summary.to_csv(tmp_path / "results" / "paper" / "summary.csv", index=False)
    monkeypatch.chdir(tmp_path)
    run(argparse.Namespace(summary=None, memory="12GiB", dataset="aime25", view="single", json=True))
    out = json.loads(capsys.readouterr().out)
    assert (out["best"]["model"], out["best"]["budget_tokens"], out["best"]["k"]) == ("Qwen3-8B", 14000, 1)
    assert json_safe({"a": [np.float64("nan"), np.int64(3), (1.5, float("inf"))]}) == {"a": [None, 3, [1.5, None]]}
    summary.to_parquet(tmp_path / "s.pq", index=False)
    assert read_summary(str(tmp_path / "s.pq"))["model"].tolist() == summary["model"].tolist()
    (tmp_path / "bad.csv").write_bytes(b"")
    with pytest.raises(UserError, match=r"bad.csv: not a readable CSV summary table \(No columns to parse from file\)"):
        read_summary(str(tmp_path / "bad.csv"))


def test_advisor_edges_by_hand(summary):
    """A card of exactly a configuration's memory holds it (0.5 + 0.1 GiB in 0.6 GiB); with one
    configuration there is no runner-up and, a frontier of one point, no threshold (None, not
    an empty text); equal accuracy goes to the one needing less memory; when every fitting
    configuration is one setup (model, bits, KV), the runner-up is that setup's next best."""
    one = advise(summary.iloc[[0]], 0.6, "aime25")
    assert (one["configurations_that_fit"], one["best"]["model"]) == (1, "Qwen3-0.6B")
    assert one["runner_up"] is None and one["threshold"] is None and one["side_of_threshold"] is None
    tie = pd.DataFrame([row("Qwen3-8B", 8, 8.9, 8000, 1, 3.0, 0.5), row("Qwen3-4B", 8, 4.4, 8000, 1, 1.5, 0.5)])
    a = advise(tie, 24.0, "aime25")
    assert (a["best"]["model"], a["best"]["memory_gib"]) == ("Qwen3-4B", 5.9)
    assert a["runner_up"]["model"] == "Qwen3-8B"
    eight = advise(summary[summary["model"] == "Qwen3-8B"], 12.0, "aime25")
    assert (eight["best"]["budget_tokens"], eight["configurations_that_fit"]) == (14000, 2)
    assert (eight["runner_up"]["model"], eight["runner_up"]["budget_tokens"]) == ("Qwen3-8B", 2000)


def test_advisor_threshold_is_the_frontier_of_its_view(summary):
    """In the batch16 view (weights + 16 KV caches) the 4-bit 32B model, dominated in the single
    view (17.5 GiB for 45% against 10.8 GiB for 55%), is on the frontier at 17 + 16 x 0.5 = 25 GiB;
    the frontier's effective weights go 0.5, 2, 8.9, 17, then 8.9, 8.9 (three weight moves, then
    two compute moves): the threshold is the 32B point, at 25 GiB."""
    a = advise(summary, 30.0, "aime25", view="batch16")
    assert (a["best"]["model"], a["best"]["memory_gib"]) == ("Qwen3-32B", 25.0)
    t = a["threshold"]
    assert (t["model"], t["memory_gib"], t["weights_moves"], t["compute_moves"]) == ("Qwen3-32B", 25.0, 3, 2)
    assert a["side_of_threshold"].startswith("above")


def test_advise_cli_text_view_and_numpy_values(summary, tmp_path, monkeypatch, capsys):
    """Without --json the advice is the text lines; --view reaches the advice (12 GiB in the
    batch16 view: the 8B model's 8.9 + 16 x 0.3 = 13.7 GiB does not fit, the 4B one's 6.8 does);
    a summary.parquet is read as Parquet; numpy scalars become Python numbers (numpy's
    ``.item()``) so the json module can write them; a reader failing without a message names
    its exception's type."""
    import argparse
    import json

    import numpy as np

    from notallbits.advisor import _number, json_safe, read_summary, run

    path = tmp_path / "summary.parquet"
    summary.to_parquet(path, index=False)
    run(argparse.Namespace(summary=str(path), memory="12GiB", dataset="aime25", view="batch16", json=True))
    out = json.loads(capsys.readouterr().out)
    assert (out["view"], out["best"]["model"], out["best"]["memory_gib"]) == ("batch16", "Qwen3-4B", 6.8)
    run(argparse.Namespace(summary=str(path), memory="12GiB", dataset="aime25", view="single", json=False))
    text = capsys.readouterr().out
    assert text.startswith("aime25 within 12 GiB (single view, 4 configurations fit):\n  best:      Qwen3-8B 8-bit")
    safe = json_safe([np.int64(3), np.float32("inf"), np.bool_(True), "item"])
    assert safe == [3, None, True, "item"] and [type(v) for v in safe] == [int, type(None), bool, str]
    assert json.dumps(json_safe({"k": np.int64(4)})) == '{"k": 4}'
    assert _number("") == 0.0 and _number(None) == 0.0 and _number("1.5") == 1.5

    def fails(*args, **kwargs):
        raise OSError()

    monkeypatch.setattr("pandas.read_parquet", fails)
    with pytest.raises(UserError, match=r"summary.parquet: not a readable Parquet summary table \(OSError\)"):
        read_summary(str(path))


def test_selection_comparison_puts_each_best_of_n_point_beside_the_best_vote_in_its_memory():
    import math

    import pandas as pd

    from notallbits.analysis import selection_comparison

    def row(selection, verifier, total_gib, accuracy, k):
        return {"dataset": "aime25", "model": "m", "bits": 4, "kv": "full", "budget_tokens": 4096, "k": k,
                "selection": selection, "verifier": verifier, "total_gib": total_gib, "accuracy": accuracy}

    # a summary without verifier_gib (its total already counts the verifier); the Best-of-N point
    # at 0.1 + 0.2 GiB is the same memory as the 0.3 GiB vote (float sums differ in the last bit)
    df = pd.DataFrame([row("majority", None, 0.3, 0.5, 1), row("majority", None, 1.0, 0.7, 4),
                       row("prm_best_of_n", "prm", 0.1 + 0.2, 0.6, 4), row("prm_best_of_n", "prm", 0.05, 0.2, 1)])
    got = selection_comparison(df)
    assert got.columns.tolist() == ["dataset", "selection_rule", "total_gib", "verifier_gib", "accuracy", "model",
                                    "bits", "kv", "budget_tokens", "k", "majority_accuracy_at_memory"]
    rows = [(r.selection_rule, r.accuracy, r.k, r.majority_accuracy_at_memory) for r in got.itertuples()]
    assert rows[:2] == [("majority", 0.5, 1, 0.5), ("majority", 0.7, 4, 0.7)]
    assert rows[3] == ("prm_best_of_n:prm", 0.6, 4, 0.5)  # 0.6 with the verifier vs 0.5 by voting
    # below every vote's memory: nothing to compare with
    assert rows[2][:3] == ("prm_best_of_n:prm", 0.2, 1) and math.isnan(rows[2][3])
    assert set(got["verifier_gib"]) == {0.0} and set(got["dataset"]) == {"aime25"}
    assert (got["model"].tolist(), got["bits"].tolist(), got["kv"].tolist()) == (["m"] * 4, [4] * 4, ["full"] * 4)
    # a summary with no rows still gives the table's columns (the analysis writes it as it is)
    assert selection_comparison(df.iloc[:0]).columns.tolist() == got.columns.tolist()


def test_rows_of_older_and_newer_summaries_name_their_weight_format_and_selection():
    import pandas as pd

    from notallbits.analysis import _format_names, _method, majority_rows, selection_label

    old = pd.DataFrame({"bits": [4, 8, 16]})  # written before the weight_method and selection columns
    assert _format_names(old) == ["gptq-4", "gptq-8", "bf16"] and selection_label(old) == ["majority"] * 3
    assert majority_rows(old) is old
    new = pd.DataFrame({"bits": [4, 8, 4], "weight_method": ["awq", "fp8", ""],
                        "selection": ["majority", "prm_best_of_n", "majority"], "verifier": ["", "prm", None]})
    assert _format_names(new) == ["awq-4", "fp8", "gptq-4"]
    assert [_method(r) for _, r in new.iterrows()] == ["awq", "fp8", "gptq"]  # "" means the bits' default
    assert selection_label(new) == ["majority", "prm_best_of_n:prm", "majority"]
    assert majority_rows(new).index.tolist() == [0, 2]


def test_write_analysis_with_question_scores_writes_the_bootstrap_and_claims_tables(tmp_path):
    import pandas as pd

    from notallbits.analysis import write_analysis

    rows, scores = [], []
    # weights grow twice, then the 4B model's longer budget (more KV) buys the last step: the threshold is 4B at 2k
    for model, weight_gib, budget, kv_gib, accuracy in [("Qwen3-0.6B", 1.3, 2000, 0.5, 0.25),
                                                        ("Qwen3-1.7B", 3.4, 2000, 0.5, 0.5),
                                                        ("Qwen3-4B", 8.0, 2000, 0.5, 0.75),
                                                        ("Qwen3-4B", 8.0, 8000, 2.0, 1.0)]:
        row = {"dataset": "aime25", "model": model, "weight_method": "gptq", "bits": 8, "kv": "full",
               "kv_method": "full", "budget_tokens": budget, "k": 1, "selection": "majority", "verifier": "",
               "accuracy": accuracy, "questions": 8, "samples": 1, "weight_gib": weight_gib, "kv_gib": kv_gib,
               "verifier_gib": 0.0, "total_gib": weight_gib + kv_gib, "task": "math"}
        rows.append(row)
        # nested scores: a more accurate model is right on every question a less accurate one is
        scores += [{k: row[k] for k in ("dataset", "model", "weight_method", "bits", "kv", "budget_tokens", "k",
                                        "selection", "verifier", "task")} | {"question_id": f"q{q}",
                                                                            "score": float(q < accuracy * 8)}
                   for q in range(8)]
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)  # majority's verifier "" reads back as NaN
    pd.DataFrame(scores).to_csv(tmp_path / "questions.csv", index=False)
    names = ["front", "thr", "bestk", "sel", "front_b", "thr_b", "claims"]
    out = {n: str(tmp_path / f"{n}.csv") for n in names}
    write_analysis(str(tmp_path / "summary.csv"), out["front"], out["thr"], out["bestk"], out["sel"],
                   questions_path=str(tmp_path / "questions.csv"), frontier_bootstrap_path=out["front_b"],
                   threshold_bootstrap_path=out["thr_b"], claims_path=out["claims"], replicates=20, seed=0)
    tables = {n: pd.read_csv(p) for n, p in out.items()}
    assert all(not any(c.startswith("Unnamed") for c in t.columns) for t in tables.values())  # no index column
    assert tables["sel"]["selection_rule"].tolist() == ["majority"] * 4
    # the bootstrap and claims tables come from the question scores (the majority rows found theirs)
    assert len(tables["front_b"]) > 0 and len(tables["thr_b"]) > 0 and len(tables["claims"]) > 0
    front_b, thr_b = tables["front_b"], tables["thr_b"]
    assert set(front_b["dataset"]) == set(thr_b["dataset"]) == {"aime25"}
    # one row per (view, cell): the 8-bit GPTQ cells at T = 2000, K = 1, their memory in the view
    single = front_b[front_b["view"] == "single"].set_index(["model", "budget_tokens"])
    assert sorted(single.index) == [("Qwen3-0.6B", 2000), ("Qwen3-1.7B", 2000), ("Qwen3-4B", 2000), ("Qwen3-4B", 8000)]
    assert set(single["k"]) == {1} and single.loc[("Qwen3-4B", 8000), "memory_gib"] == pytest.approx(10.0)
    t = thr_b[thr_b["view"] == "single"].iloc[0]
    # the memory and the weights at the threshold, over resamples: between the smallest and largest model's
    for col in ("memory_gib_median", "memory_gib_ci95_low"):
        assert 1.8 - 1e-9 <= t[col] <= 8.5 + 1e-9
    for col in ("effective_weight_gib_median", "effective_weight_gib_ci95_low"):
        assert 1.3 - 1e-9 <= t[col] <= 8.0 + 1e-9
    assert t["weights"] == "gptq-8" and t["modal_point"].startswith("Qwen3-") and " gptq-8 T=2000" in t["modal_point"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{n}.csv" for n in names]
                                                                + ["questions.csv", "summary.csv"])


def test_frontier_bootstrap_tables_by_hand(summary):
    """Five hand-made replicates of four cells (A: 1 GiB, B: 2 GiB, C: 2.2 + 0.3 GiB, D: A's
    model with 2 GiB of KV): frontiers A-B-C, A-B, A-D, A alone, A-B-D; thresholds (the split
    that best separates weight moves from compute moves) C, B, A, none, B. Percentiles are
    numpy's default (linear): of memories 1, 2, 2, 2.5 the 2.5th is 1 + 0.075 x 1 = 1.075 and
    the 97.5th 2 + 0.925 x 0.5 = 2.4625."""
    import numpy as np

    from notallbits.analysis import frontier_bootstrap

    def cell(model, budget, weight_gib, kv_gib, accuracy, low, high):
        return {"dataset": "d", "model": model, "weight_method": "bf16", "bits": 16, "kv": "full",
                "budget_tokens": budget, "k": 1, "accuracy": accuracy, "accuracy_ci95_low": low,
                "accuracy_ci95_high": high, "weight_gib": weight_gib, "kv_gib": kv_gib,
                "total_gib": weight_gib + kv_gib}

    df = pd.DataFrame([cell("A", 2000, 1.0, 0.0, 0.5, 0.2, 0.8), cell("B", 2000, 2.0, 0.0, 0.75, 0.4, 0.9),
                       cell("C", 2000, 2.2, 0.3, 1.0, 0.7, 1.0), cell("A", 8000, 1.0, 2.0, 0.9, 0.6, 1.0)],
                      index=[3, 5, 8, 9])  # majority rows of a bigger summary keep their index
    replicated = np.array([[0.5, 0.75, 1.0, 0.9], [0.5, 0.75, 0.6, 0.7], [0.5, 0.4, 0.3, 0.9],
                           [1.0, 0.75, 0.9, 0.9], [0.5, 0.75, 0.6, 0.9]])
    shares, thresholds = frontier_bootstrap(df, replicated, 5)
    assert shares.columns.tolist() == ["dataset", "view", "model", "weights", "kv", "budget_tokens", "k", "memory_gib",
                                       "accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "on_frontier",
                                       "frontier_share"]
    assert shares.index.tolist() == list(range(8))
    assert shares["budget_tokens"].dtype == "int64" and shares["k"].dtype == "int64"
    single = shares[shares["view"] == "single"]
    assert single[["model", "weights", "kv", "budget_tokens"]].values.tolist() == [
        ["A", "bf16", "full", 2000], ["B", "bf16", "full", 2000], ["C", "bf16", "full", 2000], ["A", "bf16", "full", 8000]]
    assert single["memory_gib"].tolist() == pytest.approx([1.0, 2.0, 2.5, 3.0])
    assert single["accuracy"].tolist() == [0.5, 0.75, 1.0, 0.9]
    assert single["accuracy_ci95_low"].tolist() == [0.2, 0.4, 0.7, 0.6]
    assert single["accuracy_ci95_high"].tolist() == [0.8, 0.9, 1.0, 1.0]
    assert single["on_frontier"].tolist() == [True, True, True, False]
    assert single["frontier_share"].tolist() == pytest.approx([1.0, 0.6, 0.2, 0.4])
    assert thresholds.columns.tolist() == [
        "dataset", "view", "replicates", "replicates_with_threshold", "memory_gib", "effective_weight_gib", "model",
        "weights", "budget_tokens", "k", "memory_gib_median", "memory_gib_ci95_low", "memory_gib_ci95_high",
        "effective_weight_gib_median", "effective_weight_gib_ci95_low", "effective_weight_gib_ci95_high",
        "modal_point", "modal_share", "observed_weights_share"]
    t = thresholds.set_index("view")
    s, b = t.loc["single"], t.loc["batch16"]
    assert (s["replicates"], s["replicates_with_threshold"]) == (5, 4)
    # observed: weights 1 -> 2 -> 2.2 (two weight moves): the threshold is C
    assert (s["model"], s["weights"], s["budget_tokens"], s["k"]) == ("C", "bf16", 2000, 1)
    assert (s["memory_gib"], s["effective_weight_gib"]) == (pytest.approx(2.5), 2.2)
    assert b["memory_gib"] == pytest.approx(2.2 + 16 * 0.3)
    assert [s["memory_gib_median"], s["memory_gib_ci95_low"], s["memory_gib_ci95_high"]] == pytest.approx(
        [2.0, 1.075, 2.4625])
    # effective weights at the replicates' thresholds: 1, 2, 2, 2.2
    assert [s["effective_weight_gib_median"], s["effective_weight_gib_ci95_low"],
            s["effective_weight_gib_ci95_high"]] == pytest.approx([2.0, 1.075, 2.0 + 0.925 * 0.2])
    # batch16: the same frontiers, C at 2.2 + 16 x 0.3 = 7 GiB
    assert b["memory_gib_ci95_high"] == pytest.approx(2.0 + 0.925 * 5.0)
    assert (s["modal_point"], s["modal_share"]) == ("B bf16 T=2000 K=1 full", 0.4)
    assert s["observed_weights_share"] == pytest.approx(0.2)  # C's weights (model and format) once in 5
    # where the two views' frontiers differ (the fixture: the 4-bit 32B model joins in batch16),
    # each view's threshold is of its own frontier
    _, observed = frontier_bootstrap(summary, summary["accuracy"].to_numpy()[None, :], 1)
    assert observed.set_index("view")["model"].to_dict() == {"single": "Qwen3-8B", "batch16": "Qwen3-32B"}


def test_best_k_by_memory_caps_by_hand():
    """Two caps a decade, 10^(e/2) GiB from the smallest memory's down to the largest's up: totals
    0.05, 1, 3 and 5 GiB give caps 0.1, 0.316, 1, 3.16 and 10 (0.0316 holds nothing); a cap
    holds a configuration of exactly its memory (1 GiB); equal accuracy goes to less memory."""
    from notallbits.analysis import best_k_by_memory

    table = best_k_by_memory(pd.DataFrame([row("tiny", 16, 0.05, 256, 1, 0.0, 0.1, dataset="toy"),
                                           row("tiny", 16, 1.0, 1024, 1, 0.0, 0.3, dataset="toy"),
                                           row("tiny", 16, 1.0, 1024, 4, 2.0, 0.3, dataset="toy"),
                                           row("tiny", 16, 1.0, 4096, 8, 4.0, 0.5, dataset="toy")]))
    assert table["memory_cap_gib"].tolist() == pytest.approx([0.1, 10 ** -0.5, 1.0, 10 ** 0.5, 10.0])
    assert table["best_k"].tolist() == [1, 1, 1, 1, 8]
    assert table["accuracy"].tolist() == [0.1, 0.1, 0.3, 0.3, 0.5]
    assert table["budget_tokens"].tolist() == [256, 256, 1024, 1024, 4096]


def test_small_analysis_rules_by_hand():
    """The view error names the known views; among equally good splits the earliest (weights
    1, 1, 2: all compute before, or all weights after, both explain one move); a Best-of-N
    point's row carries its memory, verifier memory and budget, and a vote needing more memory
    (1.0 GiB beside 0.8) is not within its memory; a selection rule without a verifier name is
    labelled by the rule alone."""
    from notallbits.analysis import selection_comparison, selection_label, threshold_split, with_view

    with pytest.raises(ValueError, match=r"^unknown memory view 'batch8' \(known: single, batch16\)$"):
        with_view(pd.DataFrame([row("m", 4, 1.0, 2000, 1, 0.1, 0.5)]), "batch8")
    assert threshold_split([1.0, 1.0, 2.0]) == (0, 1, ["compute", "weights"])

    def pick(selection, verifier, total_gib, verifier_gib, accuracy, budget, k):
        return {**row("m", 4, total_gib - verifier_gib, budget, k, 0.0, accuracy), "selection": selection,
                "verifier": verifier, "verifier_gib": verifier_gib, "total_gib": total_gib}

    got = selection_comparison(pd.DataFrame([pick("majority", "", 0.5, 0.0, 0.4, 1024, 1),
                                             pick("majority", "", 1.0, 0.0, 0.7, 4096, 4),
                                             pick("prm_best_of_n", "prm", 0.5, 0.2, 0.5, 2048, 4),
                                             pick("prm_best_of_n", "prm", 0.8, 0.2, 0.6, 2048, 8)]))
    bon = got[got["selection_rule"] == "prm_best_of_n:prm"]
    assert bon["total_gib"].tolist() == [0.5, 0.8] and bon["verifier_gib"].tolist() == [0.2, 0.2]
    assert bon["budget_tokens"].tolist() == [2048, 2048] and bon["k"].tolist() == [4, 8]
    assert bon["majority_accuracy_at_memory"].tolist() == [0.4, 0.4]
    assert selection_label(pd.DataFrame({"selection": ["prm_best_of_n"], "verifier": [None]})) == ["prm_best_of_n:"]


def test_write_analysis_defaults_are_the_configs_and_its_numbers_have_six_digits(tmp_path):
    """write_analysis without replicates and seed gives the tables of the config schema's
    analysis defaults (1000 replicates, seed 0), and the same seed the same tables; the CSVs
    hold %.6g numbers (1000 B of weights: 9.31323e-07 GiB)."""
    from notallbits.analysis import write_analysis

    schema = yaml.safe_load((ROOT / "notallbits" / "schemas" / "config.schema.yaml").read_text())
    analysis = schema["properties"]["analysis"]["properties"]
    settings = {"replicates": analysis["bootstrap_replicates"]["default"], "seed": analysis["seed"]["default"]}
    assert settings == {"replicates": 1000, "seed": 0}
    cells = [("A", 1000 / 2**30, [1, 0, 1, 0, 1, 0, 1, 0]), ("B", 2.0, [1, 1, 0, 1, 0, 1, 1, 0])]
    summary, scores = [], []
    for model, weight_gib, right in cells:
        key = {"dataset": "aime25", "model": model, "weight_method": "bf16", "bits": 16, "kv": "full",
               "budget_tokens": 2000, "k": 1, "selection": "majority", "verifier": ""}
        summary.append({**key, "kv_method": "full", "accuracy": sum(right) / 8, "questions": 8, "samples": 1,
                        "weight_gib": weight_gib, "kv_gib": 0.0, "verifier_gib": 0.0, "total_gib": weight_gib})
        scores += [{**key, "task": "math", "question_id": f"q{q}", "score": float(s)} for q, s in enumerate(right)]
    pd.DataFrame(summary).to_csv(tmp_path / "summary.csv", index=False)
    pd.DataFrame(scores).to_csv(tmp_path / "questions.csv", index=False)
    written = []
    for run, given in (("a", settings), ("b", {})):
        out = [str(tmp_path / f"{run}_{n}.csv") for n in ("front", "thr", "bestk", "front_b", "thr_b")]
        write_analysis(str(tmp_path / "summary.csv"), *out[:3], questions_path=str(tmp_path / "questions.csv"),
                       frontier_bootstrap_path=out[3], threshold_bootstrap_path=out[4], **given)
        written.append([open(p).read() for p in out])
    assert written[0] == written[1]
    assert pd.read_csv(tmp_path / "b_thr_b.csv")["replicates"].tolist() == [1000, 1000]
    # B is on the frontier in the resamples where it beats A: a share strictly between 0 and 1
    shares = pd.read_csv(tmp_path / "b_front_b.csv").set_index(["view", "model"])["frontier_share"]
    assert 0 < shares[("single", "B")] < 1
    front = pd.read_csv(tmp_path / "a_front.csv", dtype=str)
    assert front.loc[front["model"] == "A", "memory_gib"].tolist() == ["9.31323e-07", "9.31323e-07"]
