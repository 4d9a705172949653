"""Standard errors, intervals, per-question scores and the bootstrap, against published worked
examples and tables counted by hand."""

import json

import numpy as np
import pandas as pd
import pytest

from notallbits.stats import accuracy_interval, pareto_masks


@pytest.mark.parametrize("right, questions, low, high", [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table II,
    # method 3 (Wilson score, no continuity correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_of_right_or_wrong_questions_is_newcombes(right, questions, low, high):
    r = accuracy_interval([1.0] * right + [0.0] * (questions - right))
    assert (round(r["accuracy_ci95_low"], 4), round(r["accuracy_ci95_high"], 4)) == (low, high)
    assert r["effective_questions"] == questions


def test_standard_error_by_hand():
    # 81 of 263 right: sd with Q - 1 = sqrt(81 * 182 / 263 / 262) = 0.462529; / sqrt(263) = 0.028521
    assert accuracy_interval([1.0] * 81 + [0.0] * 182)["accuracy_se"] == pytest.approx(0.0285215, abs=1e-7)
    # none right: no spread, but the interval is not empty (0 of 30 AIME questions: up to 11.4%)
    r = accuracy_interval([0.0] * 30)
    assert r["accuracy_se"] == 0 and r["accuracy_ci95_low"] == 0 and r["accuracy_ci95_high"] == pytest.approx(0.1135, abs=1e-4)


def test_fractional_scores_use_the_effective_number_of_questions():
    """Maj@2 scores of four questions 1, 0.5 (a tie), 0, 1, counted by hand: p = 0.625,
    v = (0.375^2 + 0.125^2 + 0.625^2 + 0.375^2) / 4 = 0.171875, SE = sqrt(v * 4/3 / 4) = 0.239357,
    n_eff = 4 * 0.625 * 0.375 / v = 5.4545; Wilson at 5.4545: centre (p + z^2/2n) / (1 + z^2/n)
    = 0.573340, half-width 0.315464 -> [0.257876, 0.888814]."""
    r = accuracy_interval([1.0, 0.5, 0.0, 1.0], samples=2)
    assert r["accuracy_se"] == pytest.approx(0.239357, abs=1e-6)
    assert r["effective_questions"] == pytest.approx(5.454545, abs=1e-6)
    assert (r["accuracy_ci95_low"], r["accuracy_ci95_high"]) == pytest.approx((0.257876, 0.888814), abs=1e-6)
    # all questions at 0.5: no spread; the count is capped at Q x n draws (4 x 2 = 8)
    assert accuracy_interval([0.5] * 4, samples=2)["effective_questions"] == 8


def _write_job(tmp_path, samples, scores, questions):
    q = tmp_path / "questions.jsonl"
    q.write_text("".join(json.dumps(x) + "\n" for x in questions))
    s = tmp_path / "samples.csv"
    pd.DataFrame(samples).to_csv(s, index=False)
    sc = tmp_path / "scores.csv"
    pd.DataFrame(scores).to_csv(sc, index=False)
    return str(q), str(s), str(sc)


def test_question_scores_are_exact_maj_at_k_counted_by_hand(tmp_path):
    """Question q1 votes a, a, b, (none); a is right. Maj@2 over the C(4, 2) = 6 pairs: {a, a} right,
    {a, b} x 2 tie (half), {a, -} x 2 right, {b, -} wrong: (1 + 1 + 2) / 6 = 2/3. q2 votes c x 4, all
    wrong: 0. pass@1 = 2/4 and 0. The job's Maj@2 is their mean, 1/3."""
    from notallbits.stats import question_scores

    questions = [{"id": "q1", "task": "math", "question": "?", "choices": None, "answer": "a"},
                 {"id": "q2", "task": "math", "question": "?", "choices": None, "answer": "d"}]
    samples = [{"question_id": "q1", "sample": i, "budget_tokens": 64, "parsed": v, "correct": v == "a",
                "thinking_tokens": 10, "answer_tokens": 2} for i, v in enumerate(["a", "a", "b", ""])]
    samples += [{"question_id": "q2", "sample": i, "budget_tokens": 64, "parsed": "c", "correct": False,
                 "thinking_tokens": 10, "answer_tokens": 2} for i in range(4)]
    meta = {"dataset": "d", "model": "m", "bits": 16, "weight_method": "bf16", "kv": "full"}
    scores = [{**meta, "budget_tokens": 64, "k": 1, "selection": "majority", "verifier": "", "accuracy": 0.25},
              {**meta, "budget_tokens": 64, "k": 2, "selection": "majority", "verifier": "", "accuracy": 1 / 3}]
    table = question_scores(*_write_job(tmp_path, samples, scores, questions), ks=[1, 2])
    got = {(r.k, r.question_id): r.score for r in table.itertuples()}
    assert got == pytest.approx({(1, "q1"): 0.5, (1, "q2"): 0.0, (2, "q1"): 2 / 3, (2, "q2"): 0.0})
    assert set(table["task"]) == {"math"}
    # a score file that disagrees with the samples is refused, naming it
    scores[1]["accuracy"] = 0.5
    with pytest.raises(ValueError, match="average to"):
        question_scores(*_write_job(tmp_path, samples, scores, questions), ks=[1, 2])


def test_pareto_masks_agree_with_pareto_mask_on_ties():
    from notallbits.analysis import pareto_mask

    rng = np.random.default_rng(0)
    memory = rng.integers(0, 6, size=40).astype(float)  # many ties in memory
    acc = rng.integers(0, 5, size=(200, 40)) / 4  # and in accuracy
    masks = pareto_masks(memory, acc)
    for row, mask in zip(acc, masks):
        assert mask.tolist() == pareto_mask(memory.tolist(), row.tolist())


def _two_cells():
    """Cell A (1 GiB) is right on question 1 only, cell B (2 GiB) on both."""
    base = {"dataset": "d", "weight_method": "bf16", "bits": 16, "kv": "full", "kv_method": "full",
            "budget_tokens": 64, "k": 1, "selection": "majority", "verifier": "", "kv_gib": 0.0, "questions": 2,
            "samples": 1}
    summary = pd.DataFrame([{**base, "model": "A", "weight_gib": 1.0, "total_gib": 1.0, "accuracy": 0.5},
                            {**base, "model": "B", "weight_gib": 2.0, "total_gib": 2.0, "accuracy": 1.0}])
    questions = pd.DataFrame([{**{k: base[k] for k in ("dataset", "weight_method", "bits", "kv", "budget_tokens", "k",
                                                        "selection", "verifier")},
                               "model": m, "task": "math", "question_id": q, "score": s}
                              for m, q, s in (("A", "q1", 1.0), ("A", "q2", 0.0), ("B", "q1", 1.0), ("B", "q2", 1.0))])
    return summary, questions


def test_frontier_share_by_hand():
    """Resampling 2 questions: (q1,q1), (q1,q2), (q2,q1), (q2,q2) each 1/4, so A scores 1, 1/2, 1/2,
    0 and B always 1. B is on the frontier unless A scores 1: in 3/4 of the replicates. A (least
    memory) always is. The threshold: on B (bigger weights after A) when both are on, on A alone
    otherwise."""
    from notallbits.analysis import frontier_bootstrap
    from notallbits.stats import bootstrap_accuracies

    summary, questions = _two_cells()
    rep = bootstrap_accuracies(summary, questions, 4000, seed=1)
    shares, thresholds = frontier_bootstrap(summary, rep, 4000)
    single = shares[shares["view"] == "single"].set_index("model")["frontier_share"]
    assert single["A"] == 1.0 and single["B"] == pytest.approx(0.75, abs=0.025)
    t = thresholds[thresholds["view"] == "single"].iloc[0]
    assert t["model"] == "B" and t["replicates_with_threshold"] == pytest.approx(3000, abs=100)
    assert t["observed_weights_share"] == pytest.approx(0.75, abs=0.025)


def test_bootstrap_keeps_questions_paired_across_rows():
    """Two cells with identical per-question scores have identical replicated accuracies."""
    from notallbits.stats import bootstrap_accuracies

    summary, questions = _two_cells()
    questions.loc[questions["model"] == "B", "score"] = [1.0, 0.0]
    rep = bootstrap_accuracies(summary, questions, 50, seed=0)
    assert (rep[:, 0] == rep[:, 1]).all() and len(set(rep[:, 0])) > 1
