"""Reading a boxed math answer: which boxes make one answer, by hand-written outputs shaped like
a reasoning model's (MATH-500's multi-part answers are written ``a, b``)."""

import pytest

from notallbits.scoring import extract_math


@pytest.mark.parametrize("text,answer", [
    # the first box's own braces are balanced before the separator is looked at
    ("so \\boxed{\\frac{1}{2}} and \\boxed{3}", "\\frac{1}{2}, 3"),
    ("\\boxed{\\sqrt{2}}, \\boxed{-\\sqrt{2}}", "\\sqrt{2}, -\\sqrt{2}"),
    # a box with braces followed by more reasoning is an earlier guess, not part of the answer
    ("I first got \\boxed{\\frac{1}{2}}, which is wrong; the answer is \\boxed{3}", "3"),
    ("\\boxed{\\frac{3}{4}} is the area, so the perimeter is \\boxed{\\frac{7}{2}}", "\\frac{7}{2}"),
])
def test_boxes_with_braces_join_only_across_separators(text, answer):
    assert extract_math(text) == answer


@pytest.mark.parametrize("pred,gold,ok", [
    ("0.3", "0.4", False), ("0.25", "0.2", False), ("\\frac{1}{3}", "0.33", False),  # different at 6 decimals
    ("0.5", "\\frac{1}{2}", True), ("0.3333333", "\\frac{1}{3}", True),  # equal at 6 decimals (lighteval)
])
def test_decimals_are_compared_at_six_places(pred, gold, ok):
    from notallbits.scoring import math_correct

    assert math_correct(pred, gold) is ok


@pytest.mark.parametrize("text", ["\\boxed{}", "The answer is \\boxed{ }.", "no box at all"])
def test_an_empty_box_is_no_answer(text):
    """An empty box states nothing: unparsed (None, which abstains from Maj@K), not an empty answer."""
    assert extract_math(text) is None


def test_an_unclosed_box_runs_to_the_end_of_its_line():
    """A forced answer cut at the token limit leaves its box open: the answer is the rest of that
    line, spaces included, not its first word."""
    assert extract_math("**Final Answer**\n\\boxed{2 + \\sqrt{3}\nmore text") == "2 + \\sqrt{3}"
