"""The score step as a function: what ``score_file`` accepts and the defaults it records."""

import csv
from pathlib import Path

import pytest

from notallbits import UserError
from notallbits.io import write_framed_jsonl, write_jsonl
from notallbits.scoring import score_file

HEADER = {"dataset": "demo", "model": "tiny", "bits": 16, "kv": "full", "backend": "transformers",
          "kv_settings": {"method": "full"}, "stats": {}, "model_facts": {"weight_bytes": 10}}


def write_job(tmp_path, questions, texts):
    records = [{"question_id": questions[0]["id"], "sample": s, "budget_tokens": 64, "answer_text": t,
                "thinking_tokens": 64, "answer_tokens": 3} for s, t in enumerate(texts)]
    write_jsonl(tmp_path / "q.jsonl", questions)
    write_framed_jsonl(tmp_path / "g.jsonl", HEADER, records)


def test_a_generation_file_given_as_a_path_is_one_job(tmp_path):
    """A pathlib.Path is one file (not a list of shard files to iterate over)."""
    write_job(tmp_path, [{"id": "m1", "task": "math", "question": "6*7?", "choices": None, "answer": "42",
                          "permutation": None}], ["\\boxed{42}", "\\boxed{41}"])
    rows = score_file(tmp_path / "q.jsonl", Path(tmp_path / "g.jsonl"), [1], tmp_path / "s.csv")
    assert [(r["k"], r["accuracy"]) for r in rows] == [(1, 0.5)]


def test_code_rows_record_the_bubblewrap_sandbox_by_default(tmp_path):
    """Programs run under bubblewrap unless the config says otherwise (docs/code-grading.md); the
    rows of a code job say so. An answer with no program is wrong without starting a sandbox."""
    write_job(tmp_path, [{"id": "c1", "task": "code", "question": "Print 1.", "choices": None, "answer": "1 tests",
                          "permutation": None, "tests": [{"input": "", "output": "1\n", "testtype": "stdin"}],
                          "fn_name": None}], ["I could not write it."])
    score_file(str(tmp_path / "q.jsonl"), str(tmp_path / "g.jsonl"), [1], str(tmp_path / "s.csv"))
    table = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [(r["code_sandbox"], r["accuracy"], r["parsed_rate"]) for r in table] == [("bubblewrap", "0.0", "0.0")]


MATH = {"id": "m1", "task": "math", "question": "6*7?", "choices": None, "answer": "42", "permutation": None}


def test_shard_files_and_verify_files_make_one_jobs_rows(tmp_path):
    """Two question shards (m1, m2; 2 samples each at budget 64) and one verify file: Maj@1 is
    (1/2 + 1/2) / 2 = 0.5; the PRM scores the right sample of each question higher, so Best-of-2
    is 1. The header of a file written before weight_method existed, 4 bits, means GPTQ; its
    KV settings are written with sorted keys whatever their order in the file; a header
    without stats leaves the throughput columns empty."""
    questions = [MATH, {**MATH, "id": "m2", "question": "5*5?", "answer": "25"}]
    write_jsonl(tmp_path / "q.jsonl", questions)
    header = {**HEADER, "bits": 4, "kv": "rkv", "kv_settings": {"method": "rkv", "budget": 16},
              "budgets": [64], "samples": 2}
    del header["stats"]
    paths = []
    for i, (qid, texts) in enumerate([("m1", ["\\boxed{42}", "\\boxed{41}"]), ("m2", ["\\boxed{24}", "\\boxed{25}"])]):
        records = [{"question_id": qid, "sample": s, "budget_tokens": 64, "answer_text": t, "thinking_tokens": 64,
                    "answer_tokens": 3} for s, t in enumerate(texts)]
        paths.append(tmp_path / f"g{i + 1}.jsonl")
        write_framed_jsonl(paths[-1], {**header, "shard": [i + 1, 2], "questions": 1}, records)
    scores = {("m1", 0): 0.9, ("m1", 1): 0.2, ("m2", 0): 0.1, ("m2", 1): 0.8}
    verify = tmp_path / "v.jsonl"
    write_framed_jsonl(verify, {"verifier": "prm", "verifier_bytes": 3000, "seconds": None},
                       [{"question_id": q, "sample": s, "budget_tokens": 64, "score": v, "input_tokens": 10}
                        for (q, s), v in scores.items()])
    score_file(str(tmp_path / "q.jsonl"), [str(p) for p in paths], [2], str(tmp_path / "s.csv"),
               verification_paths=[str(verify)])
    table = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [(r["selection"], r["verifier"], r["verifier_bytes"], r["k"], r["accuracy"]) for r in table] == [
        ("majority", "", "0", "2", "0.5"), ("prm_best_of_n", "prm", "3000", "2", "1.0")]
    assert table[0]["weight_method"] == "gptq" and table[0]["kv_settings"] == '{"budget": 16, "method": "rkv"}'
    assert (table[0]["job_wall_seconds"], table[0]["job_tokens_per_second"]) == ("", "")
    assert table[0]["questions"] == "2" and table[0]["code_sandbox"] == "" and table[0]["verifier_seconds"] == "0.0"
    # a file that states its weight method keeps it
    write_framed_jsonl(paths[0], {**header, "weight_method": "awq"}, [
        {"question_id": "m1", "sample": s, "budget_tokens": 64, "answer_text": "\\boxed{42}", "thinking_tokens": 64,
         "answer_tokens": 3} for s in range(2)])
    rows = score_file(str(tmp_path / "q.jsonl"), str(paths[0]), [1], str(tmp_path / "s.csv"))
    assert [(r["weight_method"], r["accuracy"]) for r in rows] == [("awq", 1.0)]
    assert len(list(csv.DictReader(open(tmp_path / "s.csv")))) == 1  # a one-row table is written whole


def test_verify_files_are_named_in_their_errors(tmp_path):
    """A second verify file of the same verifier, and a verify file that lacks a sample, are each
    refused in one line naming the file."""
    write_job(tmp_path, [MATH], ["\\boxed{42}", "\\boxed{41}"])
    rows = [{"question_id": "m1", "sample": s, "budget_tokens": 64, "score": 0.5, "input_tokens": 10} for s in (0, 1)]
    for name, verifier_rows in (("v1.jsonl", rows), ("v2.jsonl", rows), ("short.jsonl", rows[:1])):
        write_framed_jsonl(tmp_path / name, {"verifier": "prm", "verifier_bytes": 1, "seconds": None}, verifier_rows)
    args = (str(tmp_path / "q.jsonl"), str(tmp_path / "g.jsonl"), [1], str(tmp_path / "s.csv"))
    with pytest.raises(UserError, match=r"v2\.jsonl: a second verify file of verifier 'prm' for this job"):
        score_file(*args, verification_paths=[str(tmp_path / "v1.jsonl"), str(tmp_path / "v2.jsonl")])
    with pytest.raises(UserError, match=r"short\.jsonl: verifier scores do not match the job's samples: it lacks "
                                        r"\('m1', 1, 64\)"):
        score_file(*args, verification_paths=[str(tmp_path / "short.jsonl")])


def test_the_sandbox_asked_for_is_the_one_recorded(tmp_path):
    write_job(tmp_path, [{"id": "c1", "task": "code", "question": "Print 1.", "choices": None, "answer": "1 tests",
                          "permutation": None, "tests": [{"input": "", "output": "1\n", "testtype": "stdin"}],
                          "fn_name": None}], ["no program"])
    rows = score_file(str(tmp_path / "q.jsonl"), str(tmp_path / "g.jsonl"), [1], str(tmp_path / "s.csv"),
                      code_sandbox="process")
    assert [r["code_sandbox"] for r in rows] == ["process"]


def test_a_job_scored_in_the_process_sandbox_runs_its_programs_there(monkeypatch):
    """The sandbox asked for is the one the programs run in, not only the one written in the rows:
    with bubblewrap out of reach, a job scored with ``process`` still grades its program."""
    from notallbits import codegrade
    from notallbits.data.registry import demo_code
    from notallbits.scoring import score_job

    def no_bubblewrap():
        raise AssertionError("bubblewrap was asked for")

    monkeypatch.setattr(codegrade, "Bubblewrap", no_bubblewrap)
    monkeypatch.setattr(codegrade, "_SANDBOXES", {})
    q = demo_code()[0]  # two integers on a line, print their sum
    records = [{"question_id": q["id"], "sample": 0, "budget_tokens": 16, "thinking_tokens": 1, "answer_tokens": 1,
                "answer_text": "```python\na, b = map(int, input().split())\nprint(a + b)\n```"}]
    rows, samples = score_job([q], records, [1], code_sandbox="process")
    assert (rows[0]["code_sandbox"], rows[0]["accuracy"], samples[0]["correct"]) == ("process", 1.0, True)


def test_functional_code_is_called_by_its_function_name(monkeypatch):
    """LiveCodeBench's functional problems call Solution().<fn_name>(*args) with each test's
    arguments: a right reverse() passes, a wrong one fails (process sandbox, one run each)."""
    from notallbits.data.registry import demo_code
    from notallbits.scoring import score_job

    q = demo_code()[2]  # reverse a list
    assert q["fn_name"] == "reverse"
    programs = ["class Solution:\n    def reverse(self, xs):\n        return xs[::-1]\n",
                "class Solution:\n    def reverse(self, xs):\n        return xs\n"]
    records = [{"question_id": q["id"], "sample": i, "budget_tokens": 16, "thinking_tokens": 1, "answer_tokens": 1,
                "answer_text": f"```python\n{p}```"} for i, p in enumerate(programs)]
    _, samples = score_job([q], records, [1], code_sandbox="process")
    assert [s["correct"] for s in samples] == [True, False]


def test_a_letter_beyond_the_options_is_no_answer():
    """GPQA shows 4 options, A-D: a boxed E names none of them, so the sample is unparsed and wrong."""
    from notallbits.scoring import score_job

    q = {"id": "g1", "task": "choice", "question": "?", "choices": ["w1", "right", "w2", "w3"], "answer": "B",
         "permutation": [1, 0, 2, 3]}
    records = [{"question_id": "g1", "sample": i, "budget_tokens": 16, "thinking_tokens": 1, "answer_tokens": 1,
                "answer_text": t} for i, t in enumerate(["\\boxed{E}", "\\boxed{B}"])]
    _, samples = score_job([q], records, [1])
    assert [(s["parsed"], s["correct"]) for s in samples] == [(None, False), ("B", True)]


def test_a_samples_vote_is_written_as_its_own_questions_answer():
    """Vote classes are per question: 0.5 on a question whose gold is 0.5 is not rewritten as
    another question's \\frac{1}{2}."""
    from notallbits.scoring import score_job

    questions = [{**MATH, "answer": "\\frac{1}{2}"}, {**MATH, "id": "m2", "answer": "0.5"}]
    records = [{"question_id": q, "sample": 0, "budget_tokens": 16, "thinking_tokens": 1, "answer_tokens": 1,
                "answer_text": t} for q, t in [("m1", "\\boxed{\\frac{1}{2}}"), ("m2", "\\boxed{0.5}")]]
    _, samples = score_job(questions, records, [1])
    assert [(s["parsed"], s["correct"]) for s in samples] == [("\\frac{1}{2}", True), ("0.5", True)]


def test_prm_seconds_per_row_are_per_question_and_per_n_samples():
    """A verify job of 40 s over one budget of 2 questions x 4 samples: 20 s a question, and
    Best-of-2 reads 2 of its 4 samples, so 10 s per row."""
    from notallbits.scoring import score_job

    questions = [MATH, {**MATH, "id": "m2"}]
    keys = [(q, s) for q in ("m1", "m2") for s in range(4)]
    records = [{"question_id": q, "sample": s, "budget_tokens": 16, "thinking_tokens": 1, "answer_tokens": 1,
                "answer_text": "\\boxed{42}"} for q, s in keys]
    verify = ({"verifier_bytes": 1, "seconds": 40.0},
              [{"question_id": q, "sample": s, "budget_tokens": 16, "score": 0.5, "input_tokens": 7} for q, s in keys])
    rows, _ = score_job(questions, records, [2], {"prm": (verify, "v.jsonl")})
    assert [(r["selection"], r["verifier_seconds"]) for r in rows] == [("majority", 0.0), ("prm_best_of_n", 10.0)]


def test_judging_a_program_directly_runs_it_under_bubblewrap():
    """judge and is_correct called without a sandbox use bubblewrap (the default of
    scoring.code_sandbox); the stdin problem's program is run on the question's own tests."""
    from notallbits.data.registry import demo_code
    from notallbits.scoring import is_correct, judge

    add, reverse = demo_code()[0], demo_code()[2]
    right = "a, b = map(int, input().split())\nprint(a + b)"
    assert is_correct(right, add) and not is_correct("print(3)", add)
    assert is_correct("class Solution:\n    def reverse(self, xs):\n        return xs[::-1]\n", reverse)
    record = {"question_id": add["id"], "sample": 0, "answer_text": f"```python\n{right}\n```"}
    assert judge([record], {add["id"]: add})[0][1] is True


def test_the_score_command_passes_every_argument_through(tmp_path):
    """``notallbits score`` (its parsed arguments) writes the same rows as score_file: the
    questions, both shard-free generation files' paths, K, both outputs and the sandbox."""
    import argparse

    from notallbits.scoring import add_arguments, run

    write_job(tmp_path, [{"id": "c1", "task": "code", "question": "Print 1.", "choices": None, "answer": "1 tests",
                          "permutation": None, "tests": [{"input": "", "output": "1\n", "testtype": "stdin"}],
                          "fn_name": None}], ["no program", "none either"])
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    run(parser.parse_args(["--questions", str(tmp_path / "q.jsonl"), "--generations", str(tmp_path / "g.jsonl"),
                           "--k", "1", "2", "--out", str(tmp_path / "s.csv"), "--samples-out", str(tmp_path / "x.csv"),
                           "--code-sandbox", "process"]))
    table = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [(r["k"], r["code_sandbox"], r["samples"]) for r in table] == [("1", "process", "2"), ("2", "process", "2")]
    assert len(list(csv.DictReader(open(tmp_path / "x.csv")))) == 2
