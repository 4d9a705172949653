"""The toy task and its trainer: facts checked by hand, and a short real training run."""

import random

import pytest

from notallbits.toy.task import MAX_DIGITS, MIN_DIGITS, format_question, solve, toy_questions, worked_answer
from notallbits.toy.train import TRAIN_SEED_OFFSET, char_tokenizer, train


def test_solve_by_hand():
    assert solve([3, 5, 8, 2]) == (["3+5=8", "8+8=6", "6+2=8"], 8)
    assert solve([9, 9]) == (["9+9=8"], 8)


def test_questions_are_deterministic_and_checked():
    a, b = toy_questions(50, seed=0), toy_questions(50, seed=0)
    assert a == b and toy_questions(50, seed=1) != a
    for q in a:
        digits = [int(x) for x in q["question"].split()]
        assert MIN_DIGITS <= len(digits) <= MAX_DIGITS
        assert int(q["answer"]) == sum(digits) % 10  # a running sum mod 10 is the total mod 10
    for q in toy_questions(20, seed=0, task="choice"):
        digits = [int(x) for x in q["question"].split()]
        assert q["choices"]["ABCD".index(q["answer"])] == str(sum(digits) % 10)
        assert len(set(q["choices"])) == 4


def test_held_out_sets_never_meet_training_seeds():
    # evaluation uses small seeds; training draws seeds >= TRAIN_SEED_OFFSET
    assert TRAIN_SEED_OFFSET > 100


def test_format_and_trace():
    q = {"task": "choice", "question": "3 5", "choices": ["1", "8", "2", "0"], "answer": "B"}
    assert format_question(q) == "3 5\nA)1 B)8 C)2 D)0"
    thinking, final = worked_answer(q, random.Random(0))
    assert thinking.startswith("3+5=8\n") and final == "B"


def test_char_tokenizer_round_trip():
    tok = char_tokenizer()
    text = "<think>\n3+5=8\nWait 8\n</think>\n\n**Final Answer**\n\\boxed{8}<|im_end|>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text and len(tok) == 261
    assert tok.encode("3+5=8", add_special_tokens=False) == [tok.convert_tokens_to_ids(c) for c in "3+5=8"]


@pytest.mark.slow
def test_short_training_lowers_loss(tmp_path):
    stats = train("toy-s", tmp_path / "toy", steps=40, batch=8)
    assert stats["final_loss"] < 0.6 * stats["first_loss"]
    assert (tmp_path / "toy" / "model.safetensors").exists()


@pytest.mark.slow
def test_training_is_deterministic(tmp_path):
    # the shipped toys must be rebuildable bit for bit by the train_toy rule on a fresh clone
    train("toy-s", tmp_path / "a", steps=15, batch=4)
    train("toy-s", tmp_path / "b", steps=15, batch=4)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    # ... manifest included (no wall time in the folder), so `make toys` rewrites the shipped manifests as they are
    manifest = "notallbits-manifest.json"
    assert (tmp_path / "a" / manifest).read_text() == (tmp_path / "b" / manifest).read_text()
