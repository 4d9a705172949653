"""MATH-500 and LiveCodeBench: their loaders through the real `datasets` code path on local files
shaped like the hub's, the LiveCodeBench prompt, and code scoring with Maj@K over behaviour."""

import base64
import json
import pickle
import zlib

import pytest

from notallbits import UserError
from notallbits.data.registry import decode_lcb_tests, demo_code, load
from notallbits.generation.prompts import format_question
from notallbits.scoring import score_job

PRIVATE = [{"input": "4 5\n", "output": "9\n", "testtype": "stdin"}]


def lcb_row(qid, date, starter="", fn=None, public=None, private=PRIVATE):
    """A row as livecodebench/code_generation_lite stores it (hidden tests zlib+pickle+base64)."""
    packed = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(private)))).decode()
    return {"question_title": qid, "question_content": f"Problem {qid}: add two numbers.", "platform": "atcoder",
            "question_id": qid, "contest_id": "abc1", "contest_date": f"{date}T00:00:00", "starter_code": starter,
            "difficulty": "easy", "public_test_cases": json.dumps(public or [{"input": "1 2\n", "output": "3\n",
                                                                             "testtype": "stdin"}]),
            "private_test_cases": packed, "metadata": json.dumps({"func_name": fn} if fn else {})}


@pytest.fixture
def lcb_folder(tmp_path):
    rows = [lcb_row("a1", "2024-08-01"), lcb_row("a2", "2024-10-05"), lcb_row("a3", "2025-02-01")]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    (tmp_path / "test2.jsonl").write_text(json.dumps(rows[2]) + "\n")
    return tmp_path


def test_livecodebench_loader_release_and_date_window(lcb_folder):
    v2 = load({"loader": "livecodebench", "hf_id": str(lcb_folder), "version": "release_v2"})
    assert [q["id"] for q in v2] == ["a1", "a2", "a3"]
    assert v2[0]["tests"] == [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}] + PRIVATE
    window = load({"loader": "livecodebench", "hf_id": str(lcb_folder), "version": "release_v2",
                   "start_date": "2024-09-01", "end_date": "2025-01-31"})
    assert [q["id"] for q in window] == ["a2"]
    assert [q["id"] for q in load({"loader": "livecodebench", "hf_id": str(lcb_folder),
                                   "version": "release_v1"})] == ["a1", "a2"]


def test_hidden_tests_never_unpickle_objects():
    evil = base64.b64encode(zlib.compress(pickle.dumps(ValueError("x")))).decode()
    with pytest.raises(pickle.UnpicklingError):
        decode_lcb_tests(evil)


def test_math500_loader(tmp_path):
    rows = [{"problem": "Compute 1/2 + 1/4.", "solution": "...", "answer": "\\frac{3}{4}", "subject": "Algebra",
             "level": 1, "unique_id": "test/algebra/1.json"}]
    (tmp_path / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (q,) = load({"loader": "math500", "hf_id": str(tmp_path)})
    assert q["id"] == "test/algebra/1.json" and q["answer"] == "\\frac{3}{4}" and q["task"] == "math"


def test_code_prompt_follows_livecodebench():
    stdin, functional = demo_code()[0], demo_code()[2]
    assert "Read the inputs from stdin" in format_question(stdin) and "### Question:" in format_question(stdin)
    text = format_question(functional)
    assert "starter code" in text and "def reverse(self" in text and text.endswith("### Answer: (use the provided format with backticks)\n\n")


def test_code_record_without_tests_is_refused():
    from notallbits.data.registry import check_record

    with pytest.raises(UserError, match="non-empty 'tests'"):
        check_record({"id": "c", "task": "code", "question": "q", "answer": "0 tests", "tests": []}, "x.jsonl record 1")


def test_code_scoring_votes_on_behaviour():
    """Two differently written correct programs vote together; Maj@3 over (right, right', wrong) is right."""
    q = demo_code()[0]  # stdin: a + b
    programs = ["```python\na, b = map(int, input().split())\nprint(a + b)\n```",
                "```python\nimport sys\nx = sys.stdin.read().split()\nprint(int(x[0]) + int(x[1]))\n```",
                "```python\nprint(3)\n```",
                "I could not write it."]
    records = [{"question_id": q["id"], "sample": i, "budget_tokens": 16, "answer_text": t, "thinking_tokens": 16,
                "answer_tokens": 20} for i, t in enumerate(programs)]
    rows, samples = score_job([q], records, [1, 3])
    assert [s["correct"] for s in samples] == [True, True, False, False]
    assert samples[0]["parsed"] == samples[1]["parsed"] != samples[2]["parsed"] and samples[3]["parsed"] is None
    acc = {r["k"]: r["accuracy"] for r in rows}
    assert acc[1] == pytest.approx(0.5)
    # Maj@3 over 4 samples: subsets {0,1,2},{0,1,3},{0,2,3},{1,2,3} -> right, right, tie(1/2), tie(1/2)
    assert acc[3] == pytest.approx(0.75)


def test_choice_prompt_lists_the_options_with_letters_in_the_records_order():
    record = {"id": "gpqa-1", "task": "choice", "question": "Which particle mediates the strong force?",
              "choices": ["photon", "gluon", "W boson", "graviton"], "answer": "B"}
    assert format_question(record) == (
        "Which particle mediates the strong force?\n\nA) photon\nB) gluon\nC) W boson\nD) graviton\n\n"
        "Answer with the letter of the correct option. "
        "Please reason step by step, and put your final letter within \\boxed{}.")


# LiveCodeBench's chat prompt (lcb_runner/prompts/code_generation.py: its generic system message,
# then get_generic_question_template_answer), with the stdin format sentence of its later releases
LCB_SYSTEM = ("You are an expert Python programmer. You will be given a question (problem specification) and will "
              "generate a correct Python program that matches the specification and passes all tests.")
LCB_ANSWER = "### Answer: (use the provided format with backticks)\n\n"


def test_code_prompt_is_livecodebenchs_template_word_for_word():
    """Both of LiveCodeBench's formats, spelled out: starter code fenced after its format line;
    without starter code (empty or missing, as the hub rows of stdin problems store it) the stdin
    format with its placeholder program."""
    from notallbits.generation.prompts import user_message

    starter = "class Solution:\n    def add(self, a: int, b: int) -> int:\n        "
    functional = {"id": "f", "task": "code", "question": "Add a and b.", "starter_code": starter}
    assert user_message(functional) == (
        f"{LCB_SYSTEM}\n\n### Question:\nAdd a and b.\n\n"
        "### Format: You will use the following starter code to write the solution to the problem and enclose "
        f"your code within delimiters.\n```python\n{starter}\n```\n\n{LCB_ANSWER}")
    stdin = (f"{LCB_SYSTEM}\n\n### Question:\nRead a and b, print a + b.\n\n"
             "### Format: Read the inputs from stdin solve the problem and write the answer to stdout (do not directly "
             "test on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python "
             "program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.\n"
             f"```python\n# YOUR CODE HERE\n```\n\n{LCB_ANSWER}")
    for empty in ({"starter_code": ""}, {"starter_code": None}, {}):
        record = {"id": "s", "task": "code", "question": "Read a and b, print a + b.", **empty}
        assert format_question(record) == stdin, empty


def test_math_prompt_is_the_question_then_deepseek_r1s_instruction():
    """DeepSeek-R1's and Qwen3's model cards: "Please reason step by step, and put your final
    answer within \\boxed{}." after the problem."""
    record = {"id": "m", "task": "math", "question": "Compute 1/2 + 1/4.", "answer": "\\frac{3}{4}"}
    assert format_question(record) == ("Compute 1/2 + 1/4.\n\n"
                                       "Please reason step by step, and put your final answer within \\boxed{}.")


def test_prompt_styles_by_name_and_an_unknown_one_refused():
    """The toy task's style is imported by its "module:function" name (its own test spells the
    text out); an unknown style fails in one line naming the known ones."""
    from notallbits.generation.prompts import user_message

    q = {"task": "choice", "question": "3 5", "choices": ["1", "8", "2", "0"], "answer": "B"}
    assert user_message(q, "toy") == "3 5\nA)1 B)8 C)2 D)0"
    assert user_message(q) == user_message(q, "default") == format_question(q)
    with pytest.raises(UserError, match=r"^unknown prompt style 'nope' \(known: default, toy\)$"):
        user_message(q, "nope")


def test_hidden_tests_refusal_names_the_class():
    evil = base64.b64encode(zlib.compress(pickle.dumps(ValueError("x")))).decode()
    with pytest.raises(pickle.UnpicklingError, match=r"refusing builtins\.ValueError in LiveCodeBench tests"):
        decode_lcb_tests(evil)


def test_livecodebench_date_window_keeps_both_ends(lcb_folder):
    """lcb_runner keeps `start_date <= contest_date <= end_date` (contest dates at midnight, as the
    dataset stores them): a window of one day keeps that day's problem."""
    day = load({"loader": "livecodebench", "hf_id": str(lcb_folder), "version": "release_v2",
                "start_date": "2024-10-05", "end_date": "2024-10-05"})
    assert [q["id"] for q in day] == ["a2"]


def test_math500_rows_shaped_like_the_hub(monkeypatch):
    """HuggingFaceH4/MATH-500: split "test", fields problem/solution/answer/subject/level/unique_id.
    The default repository is asked, another hf_id is passed on; a row without a problem or an
    answer is one line naming the repository and the id."""
    from notallbits.data import registry

    row = {"problem": " Compute $1/2 + 1/4$. ", "solution": "...", "answer": " \\frac{3}{4} ", "subject": "Algebra",
           "level": 1, "unique_id": "test/algebra/1.json"}
    calls = []
    monkeypatch.setattr(registry, "_load_hub", lambda *a: calls.append(a) or [row])
    assert registry.math500({}) == [{"id": "test/algebra/1.json", "task": "math", "question": "Compute $1/2 + 1/4$.",
                                     "choices": None, "answer": "\\frac{3}{4}", "permutation": None}]
    registry.math500({"hf_id": "mirror/math500"})
    assert calls == [("HuggingFaceH4/MATH-500", None, "test"), ("mirror/math500", None, "test")]
    for key, field in (("answer", "answer"), ("problem", "question")):
        monkeypatch.setattr(registry, "_load_hub", lambda *a, key=key: [{**row, key: None}])
        with pytest.raises(UserError, match=rf"^HuggingFaceH4/MATH-500 test/algebra/1.json: missing field '{field}'$"):
            registry.math500({})
