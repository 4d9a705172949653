"""The score step as a function: what ``score_file`` accepts and the defaults it records."""

import csv
from pathlib import Path

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
