"""Best-of-N's inputs: a verify file joined to a job's samples, and its PRM seconds split over
budgets, against hand-counted values."""

import pytest

from notallbits import UserError
from notallbits.scoring import best_of_n_accuracy, join_verifications, verify_seconds_by_budget


def samples(*keys):
    return [{"question_id": q, "sample": s, "budget_tokens": b} for q, s, b in keys]


def verify_file(*rows, seconds=None):
    return {"verifier": "prm", "seconds": seconds}, [
        {"question_id": q, "sample": s, "budget_tokens": b, "score": score, "input_tokens": tokens}
        for q, s, b, score, tokens in rows]


def test_join_gives_each_sample_its_score():
    job = samples(("q1", 0, 1000), ("q1", 1, 1000), ("q1", 0, 2000))
    data = verify_file(("q1", 1, 1000, 0.25, 9), ("q1", 0, 1000, 0.5, 9), ("q1", 0, 2000, 0.75, 9))
    assert join_verifications(job, data, "v.jsonl") == {("q1", 0, 1000): 0.5, ("q1", 1, 1000): 0.25,
                                                        ("q1", 0, 2000): 0.75}


def test_a_verify_file_repeating_a_sample_is_refused():
    """Every sample scored, but one twice (two runs of the verify job written into one file):
    which of the two scores is the job's cannot be told."""
    job = samples(("q1", 0, 1000), ("q1", 1, 1000))
    data = verify_file(("q1", 0, 1000, 0.5, 9), ("q1", 1, 1000, 0.25, 9), ("q1", 1, 1000, 0.75, 9))
    with pytest.raises(UserError, match=r"^v\.jsonl: verifier scores do not match the job's samples: it repeats a "
                                        r"\(question, sample, budget\) \(rerun"):
        join_verifications(job, data, "v.jsonl")


def test_a_verify_file_with_keys_of_other_types_is_refused_in_one_line():
    """A foreign verify file whose keys do not even compare with each other (a null budget next
    to a number, numeric question ids next to text) still fails with the one-line error naming
    the file, not a TypeError from ordering them."""
    job = samples(("q1", 0, 1000))
    foreign = verify_file(("q1", 0, 1000, 0.5, 9), ("q1", 0, None, 0.5, 9), ("q1", 0, 2000, 0.5, 9))
    with pytest.raises(UserError, match=r"^v\.jsonl: .* it has \('q1', 0, (None|2000)\), which the generations lack"):
        join_verifications(job, foreign, "v.jsonl")
    job = samples(("q1", 0, 1000), (7, 0, 1000), ("q2", 0, 1000))
    with pytest.raises(UserError, match=r"^v\.jsonl: .* it lacks \((7|'q2'), 0, 1000\)"):
        join_verifications(job, verify_file(("q1", 0, 1000, 0.5, 9)), "v.jsonl")


def test_prm_seconds_are_split_by_the_input_tokens_of_all_rows_of_a_budget():
    """30 s over budgets 1000 (rows of 100 + 200 tokens) and 2000 (one row of 600): 900 tokens,
    so 30 x 300 / 900 = 10 s and 30 x 600 / 900 = 20 s."""
    data = verify_file(("q1", 0, 1000, 0.1, 100), ("q1", 1, 1000, 0.1, 200), ("q1", 0, 2000, 0.1, 600), seconds=30)
    assert verify_seconds_by_budget(data) == pytest.approx({1000: 10.0, 2000: 20.0})
    assert verify_seconds_by_budget(verify_file(("q1", 0, 1000, 0.1, 100))) == {}  # no time recorded


def test_prm_seconds_with_no_input_tokens_are_not_split():
    """Rows that record no input tokens give no share to split by (not a division by zero)."""
    data = verify_file(("q1", 0, 1000, 0.1, 0), ("q1", 0, 2000, 0.1, 0), seconds=30)
    assert verify_seconds_by_budget(data) == {}


def test_best_of_n_refuses_scores_and_verdicts_of_different_lengths():
    with pytest.raises(ValueError, match="^scores and correct differ in length$"):
        best_of_n_accuracy([0.1, 0.2], [True], 1)
