"""Answer extraction and Maj@K against hand-checked outputs and brute-force enumeration."""

import itertools
import random
from collections import Counter
from fractions import Fraction
from math import comb

import pytest

from notallbits.scoring import extract_letter, extract_math, is_correct, majority_accuracy, math_correct

MATH_OUTPUTS = [
    ("So the total is $17 + 3 = 20$.\n\n**Final Answer**\n\\boxed{20}", "20", True),
    ("First I guessed \\boxed{12}, but rechecking gives \\boxed{21}.", "21", True),  # last box counts
    ("\\boxed{12} ... Wait, actually \\boxed{21}", "12", False),
    ("The answer is 42 but I never boxed it.", "42", False),  # no box = wrong
    ("\n\n**Final Answer**\n\\boxed{070}", "70", True),  # AIME answers are integers
    ("\\boxed{1,000}", "1000", True),
    ("\\boxed{\\frac{1}{2}}", "5", False),
    ("\n\n**Final Answer**\n\\boxed{204", "204", True),  # forced answer cut at the token limit
    ("\\boxed{$33$}", "33", True),
]


@pytest.mark.parametrize("text, gold, ok", MATH_OUTPUTS)
def test_math_answers(text, gold, ok):
    assert math_correct(extract_math(text), gold) is ok


def test_math_verify_fallback_for_symbolic_gold():
    assert math_correct(extract_math("\\boxed{\\frac{2}{4}}"), "\\frac{1}{2}")


LETTER_OUTPUTS = [
    ("**Final Answer**\n\\boxed{C}", "C"),
    ("\\boxed{(B)}", "B"),
    ("\\boxed{\\text{D}}", "D"),
    ("\\boxed{A. 3.2 eV}", "A"),
    ("I think the answer is (B).", "B"),
    ("Answer: D", "D"),
    ("\\boxed{E}", None),  # not one of four options
    ("Both A and C look plausible.", None),  # no committed answer: never default to a letter
    ("\\boxed{}", None),
]


@pytest.mark.parametrize("text, letter", LETTER_OUTPUTS)
def test_letters(text, letter):
    assert extract_letter(text, 4) == letter


def test_choice_correctness_goes_through_permutation():
    # shown order C,A,D,B of the source [correct, w1, w2, w3]: correct is shown second (B)
    q = {"task": "choice", "choices": ["w2", "right", "w3", "w1"], "answer": "B", "permutation": [2, 0, 3, 1]}
    assert is_correct("B", q) and not is_correct("A", q) and not is_correct(None, q)


def brute_majority(votes, correct, k):
    total = Fraction(0)
    for subset in itertools.combinations(range(len(votes)), k):
        counts = Counter(votes[i] for i in subset if votes[i] is not None)
        if counts:
            top = max(counts.values())
            winners = [v for v, c in counts.items() if c == top]
            total += Fraction(sum(w in correct for w in winners), len(winners))
    return total / comb(len(votes), k)


def test_majority_matches_enumeration():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 10)
        votes = [rng.choice(["7", "7", "3", "9", None]) for _ in range(n)]
        k = rng.randint(1, n)
        assert majority_accuracy(votes, {"7"}, k) == brute_majority(votes, {"7"}, k)


def test_majority_known_values():
    # 2 right, 1 wrong of 3: Maj@1 = pass@1 = 2/3; Maj@3 = 1; Maj@2: {r,r}=1, {r,w} tie=1/2 twice -> 2/3
    votes = ["5", "5", "6"]
    assert majority_accuracy(votes, {"5"}, 1) == Fraction(2, 3)
    assert majority_accuracy(votes, {"5"}, 2) == Fraction(2, 3)
    assert majority_accuracy(votes, {"5"}, 3) == 1
    # abstentions never win: one right answer among unparsable ones always wins when picked
    assert majority_accuracy(["5", None, None, None], {"5"}, 2) == Fraction(1, 2)


def test_majority_is_fast_for_paper_sizes():
    votes = [str(i % 11) for i in range(32)]
    assert 0 <= majority_accuracy(votes, {"0"}, 16) <= 1


def _is_self_inverse(perm):
    return all(perm[perm[i]] == i for i in range(len(perm)))


def test_every_option_is_scored_by_the_text_shown_under_its_letter(monkeypatch):
    """Catches the GPQA option permutation recorded as the inverse of the one applied to the
    choices: for many questions (their permutations mostly not their own inverse), every letter
    is correct through ``is_correct`` exactly when the option shown under it is the correct
    answer's text, for the GPQA loader (rows shaped like Idavidrein/gpqa), the demo set and
    ``shuffle_choices`` itself."""
    from notallbits.data import registry
    from notallbits.data.registry import LETTERS, demo_choice, gpqa_diamond, shuffle_choices

    rows = [{"Record ID": f"rec{j:03d}", "Question": f"Which particle is number {j}?",
             "Correct Answer": f"right {j}", "Incorrect Answer 1": f"wrong {j}a",
             "Incorrect Answer 2": f"wrong {j}b", "Incorrect Answer 3": f"wrong {j}c"} for j in range(24)]
    monkeypatch.setattr(registry, "_load_hub", lambda hf_id, config, split: rows)
    gpqa = gpqa_diamond({"shuffle_seed": 0})
    demo = demo_choice(24)
    direct = []
    for j in range(24):
        choices, answer, perm = shuffle_choices(f"q{j}", "right", ["w1", "w2", "w3", "w4"], seed=3)
        direct.append({"task": "choice", "choices": choices, "answer": answer, "permutation": perm})
    for questions, right_text in ((gpqa, lambda q, i: q["choices"][i].startswith("right")),
                                  (demo, lambda q, i: int(q["choices"][i]) == max(map(int, q["choices"]))),
                                  (direct, lambda q, i: q["choices"][i] == "right")):
        # the check discriminates only where a permutation differs from its inverse
        assert sum(not _is_self_inverse(q["permutation"]) for q in questions) >= len(questions) // 2
        assert len({tuple(q["permutation"]) for q in questions}) >= 6
        for q in questions:
            for i, letter in enumerate(LETTERS[:len(q["choices"])]):
                assert is_correct(letter, q) == right_text(q, i), (q, letter)
            assert is_correct(q["answer"], q)

# MATH-500-style answers: the gold is often not an integer, math-verify decides
MATH500_OUTPUTS = [
    ("**Final Answer**\n\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", True),
    ("**Final Answer**\n\\boxed{0.75}", "\\frac{3}{4}", True),
    ("**Final Answer**\n\\boxed{\\frac{4}{3}}", "\\frac{3}{4}", False),
    ("so $r = \\sqrt{12}$.\n\n**Final Answer**\n\\boxed{2\\sqrt{3}}", "2\\sqrt{3}", True),
    ("**Final Answer**\n\\boxed{\\sqrt{12}}", "2\\sqrt{3}", True),
    ("**Final Answer**\n\\boxed{3\\sqrt{2}}", "2\\sqrt{3}", False),
    ("**Final Answer**\n\\boxed{(-\\infty, 3]}", "(-\\infty,3]", True),
    ("**Final Answer**\n\\boxed{(-\\infty, 3)}", "(-\\infty,3]", False),
    ("**Final Answer**\n\\boxed{10\\text{ cm}}", "10", True),
    ("**Final Answer**\n\\boxed{\\text{(C)}}", "\\text{(C)}", True),
    ("The solutions are \\boxed{2} and \\boxed{3}.", "2, 3", True),  # a multi-part answer in two boxes
    ("First \\boxed{2}, then I found the real answer: \\boxed{5}", "2, 5", False),  # a correction, not two parts
    ("**Final Answer**\n\\boxed{x^2 + 1}", "1+x^2", True),
]


@pytest.mark.parametrize("text, gold, ok", MATH500_OUTPUTS)
def test_math500_answers(text, gold, ok):
    assert math_correct(extract_math(text), gold) is ok


def test_equivalent_answers_vote_together():
    """Maj@K counts \\frac{1}{2}, 0.5 and \\dfrac12 as one answer: 3 of 5 samples say one half."""
    from notallbits.scoring import score_job

    q = {"id": "m1", "task": "math", "question": "?", "answer": "\\frac{1}{2}", "choices": None, "permutation": None}
    texts = ["\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{\\dfrac12}", "\\boxed{2}", "\\boxed{2}"]
    records = [{"question_id": "m1", "sample": i, "budget_tokens": 8, "answer_text": t, "thinking_tokens": 8,
                "answer_tokens": 3} for i, t in enumerate(texts)]
    rows, samples = score_job([q], records, [5])
    assert rows[0]["accuracy"] == 1.0  # 3 equivalent right answers outvote 2 wrong ones
    assert len({s["parsed"] for s in samples}) == 2
