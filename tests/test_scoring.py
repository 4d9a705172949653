"""Answer extraction and Maj@K against hand-checked outputs and brute-force enumeration."""

import itertools
import random
from collections import Counter
from fractions import Fraction
from math import comb

import pytest

from notallbits import UserError
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


def _job():
    """Two questions x 3 samples x 2 budgets with hand-checked votes (see test_score_job_by_hand)."""
    questions = [{"id": "m1", "task": "math", "question": "6*7?", "choices": None, "answer": "42", "permutation": None},
                 {"id": "c1", "task": "choice", "question": "Which?", "choices": ["w2", "right", "w3", "w1"],
                  "answer": "B", "permutation": [2, 0, 3, 1]}]
    texts = {(100, "m1"): ["\\boxed{42}", "\\boxed{41}", "I never boxed it"],
             (100, "c1"): ["\\boxed{B}", "The answer is (B).", "\\boxed{A}"],
             (200, "m1"): ["\\boxed{42}"] * 3, (200, "c1"): ["\\boxed{C}"] * 3}
    records = [{"question_id": qid, "sample": s, "budget_tokens": b, "answer_text": t, "thinking_tokens": b - s,
                "answer_tokens": 4 + s} for (b, qid), ts in texts.items() for s, t in enumerate(ts)]
    return questions, records


def test_score_job_by_hand():
    """Per (budget, K): budget 100, math votes 42/41/none -> Maj@1 1/3, Maj@3 1/2 (42 and 41
    tie, the none abstains); choice votes B/B/A with B correct -> 2/3 and 1; so accuracy
    (1/3 + 2/3)/2 = 0.5 at K=1 and (1/2 + 1)/2 = 0.75 at K=3, 5 of 6 answers parsed. Budget
    200: all right on math, all wrong (C) on choice -> 0.5 at every K."""
    from notallbits.scoring import score_job

    questions, records = _job()
    rows, samples = score_job(questions, records, [1, 3])
    got = {(r["budget_tokens"], r["k"]): r for r in rows}
    assert sorted(got) == [(100, 1), (100, 3), (200, 1), (200, 3)]
    assert got[100, 1]["accuracy"] == pytest.approx(0.5) and got[100, 3]["accuracy"] == pytest.approx(0.75)
    assert got[200, 1]["accuracy"] == pytest.approx(0.5) and got[200, 3]["accuracy"] == pytest.approx(0.5)
    assert got[100, 1]["parsed_rate"] == pytest.approx(5 / 6) and got[200, 3]["parsed_rate"] == 1.0
    assert got[100, 1]["questions"] == 2 and got[100, 1]["samples"] == 3
    assert got[100, 1]["mean_thinking_tokens"] == pytest.approx(99) and got[200, 1]["mean_thinking_tokens"] == 199
    assert got[100, 1]["mean_answer_tokens"] == pytest.approx(5)
    by = {(r["budget_tokens"], r["question_id"], r["sample"]): r for r in samples}
    assert len(samples) == 12
    assert [by[100, "m1", s]["parsed"] for s in range(3)] == ["42", "41", None]
    assert [by[100, "c1", s]["correct"] for s in range(3)] == [True, True, False]
    assert by[100, "c1", 2]["parsed"] == "A" and by[200, "m1", 1]["thinking_tokens"] == 199
    with pytest.raises(UserError, match="K=4 exceeds the 3 samples"):
        score_job(questions, records, [4])
    with pytest.raises(UserError, match="unknown question 'x'"):
        score_job(questions, records + [{**records[0], "question_id": "x"}], [1])


def test_score_file_writes_job_facts_and_samples(tmp_path):
    """The score CSV joins the job's facts (model, bits, KV settings, measured weight bytes and
    architecture, throughput) to each (budget, K) row; the per-sample CSV has one row each."""
    import csv
    import json

    from notallbits.io import write_framed_jsonl, write_jsonl
    from notallbits.scoring import score_file

    questions, records = _job()
    write_jsonl(tmp_path / "q.jsonl", questions)
    header = {"dataset": "demo", "model": "tiny", "bits": 4, "kv": "rkv", "backend": "transformers",
              "kv_settings": {"method": "rkv", "budget": 16}, "stats": {"wall_seconds": 2.5,
              "generated_tokens": 500, "tokens_per_second": 200.0},
              "model_facts": {"weight_bytes": 1234, "layers": 2, "kv_heads": 2, "head_dim": 32}}
    write_framed_jsonl(tmp_path / "g.jsonl", header, records)
    rows = score_file(str(tmp_path / "q.jsonl"), str(tmp_path / "g.jsonl"), [1, 3], str(tmp_path / "s.csv"),
                      str(tmp_path / "samples.csv"))
    table = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == len(table) == 4
    first = table[0]
    assert (first["dataset"], first["model"], first["bits"], first["kv"], first["backend"]) == (
        "demo", "tiny", "4", "rkv", "transformers")
    assert json.loads(first["kv_settings"]) == {"budget": 16, "method": "rkv"}
    assert (first["weight_bytes"], first["layers"], first["kv_heads"], first["head_dim"]) == ("1234", "2", "2", "32")
    assert (first["job_wall_seconds"], first["job_generated_tokens"], first["job_tokens_per_second"]) == (
        "2.5", "500", "200.0")
    assert (first["budget_tokens"], first["k"], float(first["accuracy"])) == ("100", "1", 0.5)
    assert len(list(csv.DictReader(open(tmp_path / "samples.csv")))) == 12


def test_different_integers_never_vote_together():
    """Vote classes: 42 and 43 are different answers, so with votes 42, 43, 43 (gold 42) the
    majority of all three says 43 and Maj@3 is 0."""
    from notallbits.scoring import same_math_answer, score_job

    assert same_math_answer("42", "42") and not same_math_answer("42", "43")
    q = {"id": "m", "task": "math", "question": "?", "answer": "42", "choices": None, "permutation": None}
    recs = [{"question_id": "m", "sample": i, "budget_tokens": 8, "answer_text": f"\\boxed{{{v}}}",
             "thinking_tokens": 8, "answer_tokens": 2} for i, v in enumerate(["42", "43", "43"])]
    rows, _ = score_job([q], recs, [3])
    assert rows[0]["accuracy"] == 0.0


# ---------------------------------------------------------------- MATH-500 answer shapes (math-verify)
# (gold, model output, verdict as lighteval's MATH-500 task gives it: math-verify, gold first)
MATH500_SHAPES = [
    ("3, 5, 7", "\\boxed{7, 5, 3}", True),  # an unordered list of solutions
    ("12", "\\boxed{1, 2}", False),  # a list is not the integer its digits spell
    ("2, 3", "The roots are \\boxed{2} and \\boxed{3}.", True),  # adjacent boxes: one answer
    ("23", "The roots are \\boxed{2} and \\boxed{3}.", False),
    ("(3, 5)", "\\boxed{(3,5)}", True),  # an ordered pair
    ("(3, 5)", "\\boxed{(5, 3)}", False),
    ("[-2, 7]", "\\boxed{[-2,7]}", True),  # intervals: the brackets count
    ("[-2, 7]", "\\boxed{(-2, 7)}", False),
    ("(-\\infty, 3]", "\\boxed{(-\\infty,3]}", True),
    ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "\\boxed{\\begin{pmatrix}1\\\\-2\\end{pmatrix}}", True),
    ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "\\boxed{\\begin{pmatrix}-2\\\\1\\end{pmatrix}}", False),
    ("1,000,000", "\\boxed{1000000}", True),  # thousands separators: one integer
    ("10000", "\\boxed{10,000}", True),
    ("1000", "\\boxed{1, 000}", False),  # not a thousands separator: a list
    ("10", "\\boxed{10\\text{ cm}}", True),  # units
    ("90^\\circ", "\\boxed{90}", True),
    ("\\$18.90", "\\boxed{18.90}", True),
    ("\\text{(C)}", "\\boxed{C}", True),  # \text{} answers
    ("\\text{Evelyn}", "\\boxed{\\text{Evelyn}}", True),
    ("\\text{Evelyn}", "\\boxed{\\text{Bob}}", False),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\dfrac{\\sqrt3}{2}}", True),
]


@pytest.mark.parametrize("gold, text, ok", MATH500_SHAPES)
def test_math500_answer_shapes(gold, text, ok):
    assert math_correct(extract_math(text), gold) is ok


@pytest.mark.parametrize("content, value", [("070", "70"), ("-3", "-3"), ("1,000,000", "1000000"), ("$42$", "42"),
                                            ("1, 2", None), ("12,34", None), ("1,0000", None), ("10\\%", None),
                                            ("5\\text{ cm}", None), ("2, 3", None)])
def test_only_plain_integers_and_thousands_separators_are_read_as_integers(content, value):
    from notallbits.scoring import read_integer

    assert read_integer(content) == value


def _votes(gold, texts):
    from notallbits.scoring import judge

    q = {"id": "m", "task": "math", "answer": gold}
    return judge([{"question_id": "m", "answer_text": t} for t in texts], {"m": q})


def test_vote_classes_pool_equal_answers_and_never_different_ones():
    """Equal values are one class, integers included (5 and \\frac{10}{2}); two different
    answers, right or wrong, never merge; an unordered list is one class in any order."""
    texts = ["\\boxed{5}", "\\boxed{\\frac{10}{2}}", "\\boxed{5.0}", "\\boxed{\\frac{1}{2}}", "\\boxed{0.5}",
             "\\boxed{3}", "\\boxed{2, 3}", "\\boxed{3, 2}", "\\boxed{(2, 3)}", "\\boxed{(3, 2)}"]
    got = _votes("5", texts)
    votes = [v for v, _ in got]
    assert [ok for _, ok in got] == [True, True, True] + [False] * 7
    assert votes[0] == votes[1] == votes[2] == "5"
    assert votes[3] == votes[4] != votes[5]
    assert votes[6] == votes[7]  # {2, 3} either way round
    # the ordered pair (3, 2) is neither (2, 3) nor the set {2, 3} (math-verify: the set reads
    # (2, 3) as equal, so those two are one class)
    assert votes[9] not in (votes[6], votes[8]) and len({votes[3], votes[5], votes[6], votes[9]}) == 4


# answer forms with the value each stands for (hand-labelled): gold one half
FORMS = {"\\frac{1}{2}": "1/2", "0.5": "1/2", "\\dfrac12": "1/2", "\\frac{2}{4}": "1/2",
         "2": "2", "\\frac{4}{2}": "2", "2.0": "2", "\\frac{1}{3}": "1/3", "3": "3", None: None}


def brute_majority_by_value(values, gold, k):
    """Every K-subset, the most frequent value wins, ties split evenly; unparsable abstains."""
    total = Fraction(0)
    for subset in itertools.combinations(values, k):
        counts = Counter(v for v in subset if v is not None)
        if counts:
            top = max(counts.values())
            winners = [v for v, c in counts.items() if c == top]
            total += Fraction(sum(w == gold for w in winners), len(winners))
    return total / comb(len(values), k)


def test_majority_over_vote_classes_equals_brute_force():
    """300 random vote sets of MATH-500-style forms: Maj@K over the judged classes equals brute
    force over the forms' values in every set. Counting each distinct string as its own vote
    while pooling all right strings (the reading before vote classes covered integers and
    merged only within each correctness) differs in some sets: the upward bias."""
    rng = random.Random(17)
    forms = list(FORMS)
    biased = 0
    for _ in range(300):
        n = rng.randint(2, 9)
        chosen = [rng.choice(forms) for _ in range(n)]
        k = rng.randint(1, n)
        texts = [f"\\boxed{{{f}}}" if f is not None else "no box" for f in chosen]
        judged = _votes("\\frac{1}{2}", texts)
        votes, right = [v for v, _ in judged], {v for v, ok in judged if ok}
        expected = brute_majority_by_value([FORMS[f] for f in chosen], "1/2", k)
        assert majority_accuracy(votes, right, k) == expected, (chosen, k)
        by_string = majority_accuracy(chosen, {f for f in chosen if FORMS.get(f) == "1/2"}, k)
        biased += by_string != expected
    assert biased > 0


def test_majority_with_two_right_classes_counts_each_on_its_own():
    """Two classes judged right but not merged (the checker's reading is not transitive) compete
    as two answers: with votes a, a, b, w, w (a and b right) Maj@5 is 1/2 (w ties a), not 1."""
    votes = ["a", "a", "b", "w", "w"]
    assert majority_accuracy(votes, {"a", "b"}, 5) == Fraction(1, 2)
    for k in range(1, 6):
        assert majority_accuracy(votes, {"a", "b"}, k) == brute_majority(votes, {"a", "b"}, k)
