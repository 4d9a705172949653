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
