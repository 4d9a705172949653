"""The claims table on hand-built runs whose verdicts are known: per-question scores are nested
(a row right on its first p x Q questions), so a more accurate row stays more accurate in every
resample that draws one of the questions they differ on."""

import pandas as pd
import pytest

from notallbits.claims import claims_table, reference_weight_gib
from notallbits.stats import bootstrap_accuracies

Q = 400


def run(rows, questions=Q, replicates=400):
    summary, scores = [], []
    for r in rows:
        row = {"weight_method": "gptq", "bits": 8, "kv": "full", "kv_method": "full", "k": 1, "selection": "majority",
               "verifier": "", "verifier_gib": 0.0, "samples": 1, "questions": questions, "dataset": "aime25",
               "task": "math", **r}
        row["total_gib"] = row["weight_gib"] + row["kv_gib"]
        summary.append(row)
        right = round(row["accuracy"] * questions)
        for q in range(questions):
            scores.append({k: row[k] for k in ("dataset", "model", "weight_method", "bits", "kv", "budget_tokens", "k",
                                               "selection", "verifier", "task")} | {"question_id": f"q{q:04d}",
                                                                                   "score": float(q < right)})
    summary = pd.DataFrame(summary)
    replicated = bootstrap_accuracies(summary, pd.DataFrame(scores), replicates, seed=0)
    table = claims_table(summary, replicated)
    return {(c.split(" ")[0] if not c.startswith("below") else "below", d): (v, s)
            for c, d, v, s in table[["claim", "datasets", "verdict", "bootstrap_support"]].itertuples(index=False)}


def cell(model, weight_gib, budget, k, kv_gib, accuracy, **extra):
    return {"model": model, "weight_gib": weight_gib, "budget_tokens": budget, "k": k, "kv_gib": kv_gib,
            "accuracy": accuracy, **extra}


def test_a_paper_shaped_frontier_supports_the_threshold_and_votes_claims():
    """Frontier 0.6B (1.3 GiB) -> 1.7B (3.4) -> 4B 8-bit at 2k (4.5) -> 4B at 8k (5.4) -> 4B 8k Maj@4 (9.0):
    two weight moves, then two compute moves, so the threshold is 4B 8-bit (4.2 GiB of weights, the
    reference's size). Votes: Maj@4 is on the own frontier of 4B and 32B, not of 0.6B or 1.7B."""
    assert reference_weight_gib() == pytest.approx(4.19, abs=0.01)
    got = run([cell("Qwen3-0.6B", 1.2, 2000, 1, 0.1, 0.05, bits=16, weight_method="bf16"),
               cell("Qwen3-1.7B", 3.2, 2000, 1, 0.2, 0.15, bits=16, weight_method="bf16"),
               cell("Qwen3-4B", 4.2, 2000, 1, 0.3, 0.30),
               cell("Qwen3-4B", 4.2, 8000, 1, 1.2, 0.45),
               cell("Qwen3-4B", 4.2, 8000, 4, 4.8, 0.55),
               cell("Qwen3-32B", 17.0, 2000, 1, 0.5, 0.35, bits=4),
               cell("Qwen3-32B", 17.0, 2000, 4, 2.0, 0.40, bits=4)])
    assert got["threshold", "aime25"] == ("supported", 1.0)
    assert got["below", "aime25"] == ("supported", 1.0)
    assert got["Maj@K", "aime25"] == ("supported", 1.0)
    assert got["4-bit", "all"][0] == "cannot say"  # no multiple-choice dataset
    assert got["KV", "aime25"][0] == "cannot say"  # no eviction cells


def test_votes_paying_for_a_small_model_contradicts_the_claim():
    got = run([cell("Qwen3-0.6B", 1.2, 2000, 1, 0.1, 0.05), cell("Qwen3-0.6B", 1.2, 2000, 4, 0.4, 0.10),
               cell("Qwen3-8B", 8.9, 2000, 1, 0.3, 0.40), cell("Qwen3-8B", 8.9, 2000, 4, 1.2, 0.35)])
    assert got["Maj@K", "aime25"] == ("contradicted", 0.0)  # Maj@4 pays for 0.6B, not for 8B


@pytest.mark.parametrize("math_drop, choice_drop, verdict", [(0.30, 0.05, "supported"), (0.05, 0.30, "contradicted")])
def test_four_bit_hurts_math_more_than_choice(math_drop, choice_drop, verdict):
    rows = []
    for dataset, task, drop in (("aime25", "math", math_drop), ("gpqa_diamond", "choice", choice_drop)):
        rows += [cell("Qwen3-8B", 15.3, 2000, 1, 0.3, 0.6, bits=16, weight_method="bf16", dataset=dataset, task=task),
                 cell("Qwen3-8B", 5.7, 2000, 1, 0.3, 0.6 - drop, bits=4, dataset=dataset, task=task)]
    assert got_claim(rows, "4-bit", "aime25 vs gpqa_diamond")[0] == verdict


def got_claim(rows, claim, datasets, **kwargs):
    return run(rows, **kwargs)[claim, datasets]


def test_eviction_curves_rising_at_flat_memory():
    evict = dict(kv="rkv-2k", kv_method="rkv")
    rows = [cell("Qwen3-8B", 8.9, 4000, 1, 0.3, 0.30, **evict), cell("Qwen3-8B", 8.9, 8000, 1, 0.3, 0.50, **evict),
            cell("Qwen3-8B", 8.9, 16000, 1, 0.3, 0.55, **evict)]
    assert got_claim(rows, "KV", "aime25") == ("supported", 1.0)


def test_a_difference_of_one_question_in_twenty_is_inconclusive():
    """Accuracy 0.50 -> 0.55 over 20 questions: the curve rises unless a resample misses the one
    question that differs, which happens with probability (19/20)^20 = 0.358: support 0.642."""
    evict = dict(kv="rkv-2k", kv_method="rkv")
    rows = [cell("Qwen3-8B", 8.9, 4000, 1, 0.3, 0.50, **evict), cell("Qwen3-8B", 8.9, 8000, 1, 0.3, 0.55, **evict)]
    verdict, support = got_claim(rows, "KV", "aime25", questions=20, replicates=4000)
    assert verdict == "inconclusive" and support == pytest.approx(1 - (19 / 20) ** 20, abs=0.02)
