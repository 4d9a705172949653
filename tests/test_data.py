"""Dataset normalization: one-time deterministic shuffles and one-line field errors."""

import json

import pytest

from notallbits import UserError
from notallbits.data.prepare import read_questions
from notallbits.data.registry import LETTERS, demo_arith, demo_choice, load, shuffle_choices


def test_shuffle_is_fixed_and_recoverable():
    a = shuffle_choices("q1", "right", ["w1", "w2", "w3"], seed=0)
    assert a == shuffle_choices("q1", "right", ["w1", "w2", "w3"], seed=0)
    choices, answer, perm = a
    assert choices[LETTERS.index(answer)] == "right" and perm[LETTERS.index(answer)] == 0
    assert sorted(perm) == [0, 1, 2, 3]
    # a different seed changes the order for at least one of many questions
    assert any(shuffle_choices(f"q{i}", "r", ["a", "b", "c"], 0)[2] != shuffle_choices(f"q{i}", "r", ["a", "b", "c"], 1)[2]
               for i in range(10))


def test_demo_sets_have_checked_answers():
    for q in demo_arith(20):
        a, op, b, _, c = q["question"].removeprefix("What is ").rstrip("?").split()
        assert int(q["answer"]) == (int(a) + int(b) * int(c) if op == "+" else int(a) - int(b) * int(c))
    for q in demo_choice(20):
        shown = [int(x) for x in q["choices"]]
        assert q["answer"] == LETTERS[shown.index(max(shown))]


def test_missing_field_is_one_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "q1", "task": "math", "question": "1+1?"}) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl record 1: missing field 'answer'$"):
        read_questions(str(path))
    with pytest.raises(UserError, match="missing field 'answer'"):
        load({"loader": "jsonl", "path": str(path)})


def test_limit():
    assert len(load({"loader": "demo_arith", "limit": 3})) == 3
