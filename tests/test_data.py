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


def test_aime25_loader_on_rows_shaped_like_the_hub(monkeypatch):
    """opencompass/AIME2025 (two configs, fields question/answer) and math-ai/aime25 (fields
    problem/answer/id) both become 'math' records with string answers; a row without an
    answer is one line naming the source and the id."""
    from notallbits.data import registry

    calls = []

    def hub(hf_id, config, split):
        calls.append((hf_id, config, split))
        if hf_id == "opencompass/AIME2025":
            return [{"question": f"{config} problem {j}", "answer": f" {70 + j} "} for j in range(2)]
        return [{"id": 3, "problem": "Find n.", "answer": 204}, {"problem": "Find m.", "answer": "7"}]

    monkeypatch.setattr(registry, "_load_hub", hub)
    recs = registry.aime25({})
    assert calls == [("opencompass/AIME2025", "AIME2025-I", "test"), ("opencompass/AIME2025", "AIME2025-II", "test")]
    assert [r["id"] for r in recs] == ["AIME2025-I-01", "AIME2025-I-02", "AIME2025-II-01", "AIME2025-II-02"]
    assert recs[1] == {"id": "AIME2025-I-02", "task": "math", "question": "AIME2025-I problem 1", "choices": None,
                       "answer": "71", "permutation": None}
    other = registry.aime25({"hf_id": "math-ai/aime25"})
    assert calls[-1] == ("math-ai/aime25", None, "test")
    assert [(r["id"], r["question"], r["answer"]) for r in other] == [("3", "Find n.", "204"), ("1", "Find m.", "7")]
    monkeypatch.setattr(registry, "_load_hub", lambda *a: [{"problem": "x", "answer": None}])
    with pytest.raises(UserError, match=r"^math-ai/aime25 0: missing field 'answer'$"):
        registry.aime25({"hf_id": "math-ai/aime25"})


def test_gpqa_loader_needs_every_field(monkeypatch):
    from notallbits.data import registry

    row = {"Question": "q", "Correct Answer": "a", "Incorrect Answer 1": "b", "Incorrect Answer 2": "c",
           "Incorrect Answer 3": ""}
    monkeypatch.setattr(registry, "_load_hub", lambda *a: [row])
    with pytest.raises(UserError, match=r"^Idavidrein/gpqa row 0: missing field 'Incorrect Answer 3'$"):
        registry.gpqa_diamond({})


def test_toy_loaders_and_prepare_round_trip(tmp_path):
    """Toy datasets plug into the registry; prepare-data writes what read_questions reads back."""
    from notallbits.data.prepare import prepare

    math = load({"loader": "toy_math", "limit": 5})
    choice = load({"loader": "toy_choice", "limit": 3, "shuffle_seed": 1})
    assert len(math) == 5 and {q["task"] for q in math} == {"math"}
    assert len(choice) == 3 and all(q["task"] == "choice" and q["permutation"] for q in choice)
    assert load({"loader": "toy_math", "limit": 5}) == math
    assert prepare({"loader": "demo_choice", "limit": 4}, str(tmp_path / "d.jsonl")) == 4
    assert read_questions(str(tmp_path / "d.jsonl")) == demo_choice(4)
    with pytest.raises(UserError, match="unknown dataset loader 'nope'"):
        load({"loader": "nope"})


def test_check_record_errors():
    from notallbits.data.registry import check_record

    ok = {"id": "q", "task": "choice", "question": "?", "answer": "B", "choices": ["x", "y"]}
    assert check_record(ok, "f") is ok
    with pytest.raises(UserError, match=r"^f: field 'task' must be one of .*, got 'essay'$"):
        check_record({**ok, "task": "essay"}, "f")
    with pytest.raises(UserError, match=r"^f: multiple-choice record needs a 'choices' list$"):
        check_record({**ok, "choices": ["x"]}, "f")
    with pytest.raises(UserError, match=r"^f: answer 'C' is not a letter of its 2 choices$"):
        check_record({**ok, "answer": "C"}, "f")
    with pytest.raises(UserError, match=r"^f: missing field 'question'$"):
        check_record({**ok, "question": ""}, "f")


def test_gpqa_loader_reads_its_settings(monkeypatch):
    """The spec's hf_id and shuffle_seed reach the hub call and the shuffle; ids come from
    'Record ID' (else gpqa-NNN); the question text is kept, stripped."""
    from notallbits.data import registry

    rows = [{"Record ID": "recA" if j == 0 else None, "Question": f" Q{j}? ", "Correct Answer": "right",
             "Incorrect Answer 1": "w1", "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3"} for j in range(12)]
    calls = []
    monkeypatch.setattr(registry, "_load_hub", lambda *a: calls.append(a) or rows)
    seed0 = registry.gpqa_diamond({})
    seed1 = registry.gpqa_diamond({"hf_id": "mirror/gpqa", "shuffle_seed": 1})
    assert calls == [("Idavidrein/gpqa", "gpqa_diamond", "train"), ("mirror/gpqa", "gpqa_diamond", "train")]
    assert [q["id"] for q in seed0[:3]] == ["recA", "gpqa-001", "gpqa-002"]
    assert seed0[1]["question"] == "Q1?" and seed0[1]["task"] == "choice"
    assert [q["permutation"] for q in seed0] == [shuffle_choices(q["id"], "right", ["w1", "w2", "w3"], 0)[2]
                                                  for q in seed0]
    assert [q["permutation"] for q in seed0] != [q["permutation"] for q in seed1]


def test_load_limits_and_seeds(tmp_path):
    """limit cuts any loader (also past a toy loader's default of 32); shuffle_seed reaches the
    toy loaders; an empty dataset is one line."""
    from notallbits.io import write_jsonl

    assert len(load({"loader": "toy_math", "limit": 40})) == 40
    assert load({"loader": "toy_choice", "limit": 6, "shuffle_seed": 1}) != load({"loader": "toy_choice", "limit": 6})
    write_jsonl(tmp_path / "five.jsonl", demo_arith(5))
    assert [q["id"] for q in load({"loader": "jsonl", "path": str(tmp_path / "five.jsonl"), "limit": 2})] == [
        "arith-000", "arith-001"]
    assert load({"loader": "toy_math", "limit": 4}) == load({"loader": "toy_math", "limit": 4, "shuffle_seed": 0})
    write_jsonl(tmp_path / "dup.jsonl", demo_arith(2) + demo_arith(1))
    with pytest.raises(UserError, match=r"dup.jsonl: records 1 and 3 have the same id 'arith-000'"):
        load({"loader": "jsonl", "path": str(tmp_path / "dup.jsonl")})
    write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(UserError, match=r"^dataset \(jsonl\) has no questions$"):
        load({"loader": "jsonl", "path": str(tmp_path / "empty.jsonl")})


NORMALIZED = {"id", "task", "question", "choices", "answer", "permutation"}  # every record, every loader


def test_every_loader_gives_the_normalized_record(monkeypatch):
    from notallbits.data import registry

    for rec in demo_arith(2) + demo_choice(2) + registry.demo_code(2):
        assert NORMALIZED <= set(rec), rec["id"]
    row = {"Record ID": "rec1", "Question": " q ", "Correct Answer": "right", "Incorrect Answer 1": "b",
           "Incorrect Answer 2": "c", "Incorrect Answer 3": "d"}
    monkeypatch.setattr(registry, "_load_hub", lambda *a: [row])
    (g,) = registry.gpqa_diamond({})
    assert NORMALIZED <= set(g) and g["choices"][LETTERS.index(g["answer"])] == "right"


def _lcb_row(**changes):
    """A LiveCodeBench code_generation_lite row (a functional problem of LeetCode's kind)."""
    row = {"question_id": "abc123", "question_content": " Add two numbers. ", "platform": "leetcode",
           "metadata": json.dumps({"func_name": "add"}), "starter_code": "class Solution:\n    def add(self, a, b):\n",
           "public_test_cases": json.dumps([{"input": "1\n2", "output": "3", "testtype": "functional"}]),
           "private_test_cases": "", "contest_date": "2024-10-05T00:00:00"}
    return {**row, **changes}


def test_livecodebench_row_as_a_record():
    from notallbits.data.registry import lcb_record

    rec = lcb_record(_lcb_row(), "row")
    assert NORMALIZED <= set(rec) and rec["choices"] is None and rec["permutation"] is None
    assert rec["id"] == "abc123" and rec["question"] == "Add two numbers." and rec["fn_name"] == "add"
    assert rec["starter_code"] == "class Solution:\n    def add(self, a, b):\n"
    assert rec["contest_date"] == "2024-10-05" and rec["platform"] == "leetcode"
    assert lcb_record(_lcb_row(starter_code=None), "row")["starter_code"] == ""


def test_livecodebench_error_names_the_problem(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from notallbits.data import registry

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [_lcb_row(question_content=" ")])
    with pytest.raises(UserError, match=r"^livecodebench/code_generation_lite abc123: missing field 'question'"):
        registry.livecodebench({})


def test_question_identity():
    from notallbits.data.registry import question_identity

    assert question_identity({"loader": "demo_arith"}) == ("demo_arith", None, None, 0)  # seed 0 unless set
    assert question_identity({"loader": "jsonl", "path": "q.jsonl", "shuffle_seed": 3}) == ("jsonl", None, "q.jsonl", None)


def test_own_and_demo_code_records(monkeypatch):
    from notallbits.data import registry

    rec = registry.own_record({"id": 7, "task": "math", "question": "1 + 1?", "answer": 2}, "r")
    assert NORMALIZED <= set(rec) and (rec["id"], rec["answer"], rec["choices"], rec["permutation"]) == ("7", "2", None, None)
    # demo code: LeetCode-style problems (a function name) are graded as functional, the rest on stdin
    kinds = {t["testtype"] for r in registry.demo_code() for t in r["tests"]}
    assert kinds == {"functional", "stdin"}
    assert all(t["testtype"] == ("functional" if r["fn_name"] else "stdin") for r in registry.demo_code() for t in r["tests"])


def test_hub_loader_asks_for_the_subset(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from notallbits.data import registry

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or [])
    registry._load_hub("Idavidrein/gpqa", "gpqa_diamond", "train")
    assert calls == [(("Idavidrein/gpqa", "gpqa_diamond"), {"split": "train"})]


def test_demo_sets_called_bare_are_the_loaders_default_entry():
    """`demo_arith()` / `demo_choice()` / `demo_code()` are what a config's dataset entry without
    limit or shuffle_seed loads (8, 8 and all 4 questions, seed 0), the same on every call."""
    from notallbits.data import registry

    assert demo_arith() == load({"loader": "demo_arith"}) and len(demo_arith()) == 8
    assert demo_choice() == load({"loader": "demo_choice"}) and len(demo_choice()) == 8
    assert registry.demo_code() == load({"loader": "demo_code"}) and len(registry.demo_code()) == 4
    assert demo_arith(5, seed=3) == demo_arith(5, seed=3) != demo_arith(5, seed=4)


def test_demo_arith_asks_a_plus_or_minus_b_times_c_in_its_ranges():
    """Each question is "What is a + b * c?" or "a - b * c" with a in 2..60, b in 2..30, c in 2..9
    (the function's docstring); 3000 questions reach both operators and every range's ends."""
    seen = {"op": set(), "a": set(), "b": set(), "c": set()}
    for q in demo_arith(3000):
        a, op, b, times, c = q["question"].removeprefix("What is ").removesuffix("?").split()
        assert times == "*"
        for key, value in (("op", op), ("a", int(a)), ("b", int(b)), ("c", int(c))):
            seen[key].add(value)
    assert seen["op"] == {"+", "-"}
    assert (min(seen["a"]), max(seen["a"])) == (2, 60)
    assert (min(seen["b"]), max(seen["b"])) == (2, 30)
    assert (min(seen["c"]), max(seen["c"])) == (2, 9)


def test_demo_choice_shows_four_numbers_shuffled_like_every_choice_set():
    """Four different numbers from 10 to 98 under a question asking for the largest; the options
    are in the order of the shared per-(seed, question id) shuffle that GPQA uses, so the correct
    letter moves from question to question."""
    numbers, letters = set(), set()
    for seed in (0, 2):
        for q in demo_choice(300, seed=seed):
            assert q["question"] == "Which of these numbers is the largest?"
            shown = [int(x) for x in q["choices"]]
            assert len(shown) == len(set(shown)) == 4
            numbers.update(shown)
            letters.add(q["answer"])
            source = [None] * 4  # the options in source order (correct first), from the permutation
            for position, index in enumerate(q["permutation"]):
                source[index] = q["choices"][position]
            assert int(source[0]) == max(shown)
            assert shuffle_choices(q["id"], source[0], source[1:], seed) == (q["choices"], q["answer"], q["permutation"])
    assert (min(numbers), max(numbers)) == (10, 98)
    assert letters == {"A", "B", "C", "D"}


def test_own_choice_record_keeps_a_permutation_that_agrees_with_its_answer():
    from notallbits.data.registry import own_record

    rec = {"id": "q", "task": "choice", "question": "?", "choices": ["x", "y", "z"], "answer": "B",
           "permutation": [2, 0, 1]}
    assert own_record(rec, "r")["permutation"] == [2, 0, 1]
    assert own_record({**rec, "permutation": None}, "r")["permutation"] == [1, 0, 2]


def test_question_identity_tells_seeds_and_sources_apart():
    """Calibration must not share questions with an evaluated dataset: a generated set with another
    shuffle_seed, or a hub loader reading another repository, holds other questions."""
    from notallbits.data.registry import question_identity

    assert question_identity({"loader": "demo_arith", "shuffle_seed": 1}) == ("demo_arith", None, None, 1)
    assert question_identity({"loader": "toy_math", "shuffle_seed": 2}) != question_identity({"loader": "toy_math"})
    assert question_identity({"loader": "aime25", "hf_id": "math-ai/aime25"}) == ("aime25", "math-ai/aime25", None, None)
    assert question_identity({"loader": "aime25"}) != question_identity({"loader": "aime25", "hf_id": "math-ai/aime25"})


def test_read_questions_names_the_file_of_a_repeated_id(tmp_path):
    from notallbits.io import write_jsonl

    write_jsonl(tmp_path / "twice.jsonl", demo_arith(1) + demo_arith(1))
    with pytest.raises(UserError, match=r"^\S*twice.jsonl: records 1 and 2 have the same id 'arith-000'"):
        read_questions(str(tmp_path / "twice.jsonl"))


def test_prepare_data_command_writes_the_dataset(tmp_path, capsys):
    """`notallbits prepare-data --spec JSON --out FILE`, in-process: the dataset the spec names."""
    import argparse

    from notallbits.data import prepare

    out = tmp_path / "d.jsonl"
    prepare.run(argparse.Namespace(spec=json.dumps({"loader": "demo_choice", "limit": 3}), out=str(out)))
    assert read_questions(str(out)) == demo_choice(3)
    assert capsys.readouterr().out == f"wrote 3 questions to {out}\n"


def test_livecodebench_rows_as_the_hub_may_give_them():
    """code_generation_lite's metadata is JSON text ("{}" for stdin problems), which a loader may
    already have parsed; public or private tests may be empty; a row may lack its contest date."""
    from notallbits.data.registry import lcb_record

    assert lcb_record(_lcb_row(metadata={"func_name": "add"}), "row")["fn_name"] == "add"
    for empty in ("", None, "{}"):
        assert lcb_record(_lcb_row(metadata=empty), "row")["fn_name"] is None
    private = json.dumps([{"input": "2\n3", "output": "5", "testtype": "functional"}])
    rec = lcb_record(_lcb_row(public_test_cases="", private_test_cases=private), "row")
    assert rec["tests"] == [{"input": "2\n3", "output": "5", "testtype": "functional"}] and rec["answer"] == "1 tests"
    row = _lcb_row()
    del row["contest_date"]
    assert lcb_record(row, "row")["contest_date"] == ""


def test_code_record_errors_name_the_record():
    from notallbits.data.registry import check_record

    bad = {"id": "c", "task": "code", "question": "q", "answer": "1 tests", "tests": [{"input": "1"}]}
    with pytest.raises(UserError, match=r"^x.jsonl record 4: each test needs input, output and testtype"):
        check_record(bad, "x.jsonl record 4")


def test_livecodebench_releases_are_numbered_from_one():
    """code_generation_lite: release_v1 is test.jsonl, release_vN adds test2.jsonl .. testN.jsonl
    (the dataset card); there is no release_v0, and a version is named release_vN."""
    from notallbits.data.registry import _lcb_files

    assert _lcb_files("release_v6") == ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl",
                                        "test6.jsonl"]
    for bad in ("release_v0", "v5", "release_latest"):
        with pytest.raises(UserError, match="expected release_v1, release_v2"):
            _lcb_files(bad)
