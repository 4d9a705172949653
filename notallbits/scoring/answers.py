"""Reading and judging answers: a math answer from its boxes, a letter, a program; whether it
is right; and the vote each sample casts (equal answers in different notation vote together).

Unparsable answers are wrong and never vote (no default letter, no default number).
"""

from __future__ import annotations

import re
from functools import lru_cache

from notallbits import UserError
from notallbits.data.choices import LETTERS

BOX = "\\boxed{"


def boxed_contents(text: str) -> list[str]:
    """Every \\boxed{...} content with balanced braces; an unclosed last box runs to the
    end of its line (a forced answer cut at the token limit)."""
    out, i = [], 0
    while (start := text.find(BOX, i)) != -1:
        j, depth = start + len(BOX), 1
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            out.append(text[start + len(BOX): j - 1])
        else:
            out.append(text[start + len(BOX):].split("\n")[0])
        i = j
    return [c.strip() for c in out]


_INT = re.compile(r"^[+-]?\d+$")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+$")  # 1,000,000: one integer, never a list


def read_integer(content: str) -> str | None:
    """The integer ``content`` states plainly (``070``, ``-3``, ``1,000,000``, optionally in $...$),
    canonical (``70``); None for anything else, which math-verify reads (lists such as ``1, 2``,
    units, ``\\text{}``, percentages, degrees)."""
    s = content.strip()
    if len(s) > 1 and s[0] == s[-1] == "$":
        s = s[1:-1].strip()
    if _INT.match(s):
        return str(int(s))
    if _THOUSANDS.match(s):
        return str(int(s.replace(",", "")))
    return None


# what may stand between boxes that together give one answer ("\\boxed{2} and \\boxed{3}")
_BOX_JOINER = re.compile(r"^(?:\s|,|;|\$|\\quad|\\qquad|\\text\{\s*(?:and|or)\s*\}|and|or)*$")


def extract_math(text: str) -> str | None:
    """The last boxed answer; boxes that follow each other with only separators between them
    ("\\boxed{2} and \\boxed{3}", a multi-part answer) are one answer, joined with commas."""
    boxes = boxed_contents(text)
    if not boxes:
        return None
    starts = [m.start() for m in re.finditer(re.escape(BOX), text)]
    group = [len(boxes) - 1]
    while group[0] > 0:
        i = group[0]
        between = text[_box_end(text, starts[i - 1]): starts[i]]
        if not _BOX_JOINER.match(between):
            break
        group.insert(0, i - 1)
    last = ", ".join(boxes[i] for i in group if boxes[i]) if len(group) > 1 else boxes[-1]
    return read_integer(last) or (last if last else None)


def _box_end(text: str, start: int) -> int:
    j, depth = start + len(BOX), 1
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return j


# lighteval's MATH-500 task (tasks/tasks/math_500.py, metrics.py ``pass_at_k_math``): gold and
# prediction both extracted with [ExprExtractionConfig(), LatexExtractionConfig()], fallback
# "first_match", extraction "any_match", 5 s timeouts, compared at precision 6 (float_rounding)
PARSE_TIMEOUT_SECONDS = 5
FLOAT_ROUNDING = 6


@lru_cache(maxsize=8192)
def _math_verify_parse(content: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(f"\\boxed{{{content}}}", extraction_config=[ExprExtractionConfig(), LatexExtractionConfig()],
                 fallback_mode="first_match", extraction_mode="any_match", parsing_timeout=PARSE_TIMEOUT_SECONDS)


def _math_verify(gold: str, pred: str) -> bool:
    from math_verify import verify

    try:
        parsed_gold = _math_verify_parse(gold)  # gold first, as lighteval does
        return bool(verify(parsed_gold, _math_verify_parse(pred), float_rounding=FLOAT_ROUNDING,
                           timeout_seconds=PARSE_TIMEOUT_SECONDS))
    except Exception:  # noqa: BLE001 - a checker crash on garbage is a wrong answer
        return False


def math_correct(pred: str | None, gold: str) -> bool:
    """A boxed answer against the gold: two plain integers (thousands separators allowed) by
    value; anything else by math-verify as lighteval's MATH-500 task runs it (gold first)."""
    if pred is None:
        return False
    gold_int, pred_int = read_integer(gold), read_integer(pred)
    if gold_int is not None and pred_int is not None:
        return gold_int == pred_int
    return _math_verify(gold, pred)


def extract_letter(text: str, n_choices: int) -> str | None:
    letters = LETTERS[:n_choices]
    letter = rf"([{letters}])"
    for content in reversed(boxed_contents(text)):
        content = re.sub(r"\\text(?:bf)?\{([^}]*)\}", r"\1", content).strip()
        m = re.match(rf"^\(?{letter}(?:\)|\.|:|\s|$)", content + " ")
        if m:
            return m.group(1)
    phrases = [rf"answer\s*(?:is|:)\s*\**\s*\(?{letter}\b", rf"\boption\s+\(?{letter}\)?\s*(?:is\s+correct)",
               rf"^\s*\(?{letter}\)\s*$"]
    found = []
    for pat in phrases:
        found += [(m.start(), m.group(1)) for m in re.finditer(pat, text, flags=re.IGNORECASE | re.MULTILINE)]
    if found:
        return max(found)[1].upper()
    return None


def parse_answer(record: dict, question: dict) -> str | None:
    if question["task"] == "choice":
        return extract_letter(record["answer_text"], len(question["choices"]))
    if question["task"] == "code":
        from notallbits.codegrade import extract_program

        return extract_program(record["answer_text"])
    return extract_math(record["answer_text"])


def is_correct(pred: str | None, question: dict) -> bool:
    if question["task"] == "choice":
        return pred is not None and question["permutation"][LETTERS.index(pred)] == 0
    if question["task"] == "code":
        from notallbits.codegrade import run_program

        return run_program(pred, question["tests"], question.get("fn_name")).passed
    return math_correct(pred, question["answer"])


def same_math_answer(a: str, b: str) -> bool:
    """Two extracted answers that are one value (\\frac12 and 0.5; 5 and \\frac{10}{2}): one vote
    class. Integers by value; else math-verify both ways round, so that neither answer's reading
    alone (a percentage, a set against a tuple) merges two different answers."""
    if a == b:
        return True
    ia, ib = read_integer(a), read_integer(b)
    if ia is not None and ib is not None:
        return ia == ib
    return _math_verify(a, b) and _math_verify(b, a)


def judge(records: list[dict], by_id: dict, code_sandbox: str = "bubblewrap") -> list[tuple[str | None, bool]]:
    """(vote, correct) per record. Votes are what Maj@K counts: a math answer's class, the first
    equivalent form among the question's answers judged alike (so two correct forms of one value
    vote together, and two different answers, right or wrong, never do), a letter, or a program's
    behaviour on the tests (its outputs: see codegrade). Programs are run in the sandbox, in
    parallel, each distinct program once."""
    out: list[tuple[str | None, bool] | None] = [None] * len(records)
    code = []
    classes: dict[str, list[tuple[str, bool]]] = {}  # question -> (representative, correct)
    for i, rec in enumerate(records):
        q = by_id.get(rec["question_id"])
        if q is None:
            raise UserError(f"generation record for unknown question {rec['question_id']!r}")
        pred = parse_answer(rec, q)
        if q["task"] == "code":
            code.append((i, pred, q))
            continue
        ok = is_correct(pred, q)
        if q["task"] == "math" and pred is not None:
            reps = classes.setdefault(q["id"], [])
            same = next((r for r, r_ok in reps if r_ok == ok and same_math_answer(pred, r)), None)
            if same is None:
                reps.append((pred, ok))
            else:
                pred = same
        out[i] = (pred, ok)
    if code:
        from notallbits.codegrade import grade_many

        graded = grade_many([(pred, q["tests"], q.get("fn_name")) for _, pred, q in code], sandbox_name=code_sandbox)
        for (i, _, _), result in zip(code, graded):
            out[i] = (result.signature, result.passed)
    return out
