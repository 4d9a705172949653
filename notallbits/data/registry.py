"""Dataset registry. Every loader returns normalized records:

    {"id": str, "task": "math" | "choice" | "code", "question": str, "choices": list[str] | None,
     "answer": str, "permutation": list[int] | None}

Code problems (task "code", LiveCodeBench) carry their tests instead of an answer string:
``tests`` (list of {input, output, testtype: stdin | functional}), ``fn_name`` (functional
problems: the method of ``class Solution`` to call) and ``starter_code``; ``answer`` holds the
number of tests, for humans.

For multiple choice, ``choices`` is already in the shuffled order shown to the model,
``answer`` is the correct letter, and ``permutation[i]`` is the index in the source order
(correct answer first) of the option shown at position i. The shuffle happens once, here,
with a fixed seed, so every cell sees the same order.
"""

from __future__ import annotations

import importlib
import random
from typing import Callable

from notallbits import UserError
from notallbits.data.choices import LETTERS, shuffle_choices  # noqa: F401 - re-exported

REQUIRED_FIELDS = ("id", "task", "question", "answer")
TASKS = ("math", "choice", "code")


def check_record(rec: dict, where: str) -> dict:
    for key in REQUIRED_FIELDS:
        if key not in rec or rec[key] in (None, ""):
            raise UserError(f"{where}: missing field {key!r}")
    if rec["task"] not in TASKS:
        raise UserError(f"{where}: field 'task' must be one of {', '.join(TASKS)}, got {rec['task']!r}")
    if rec["task"] == "code":
        from notallbits.codegrade import check_tests

        check_tests(rec.get("tests"), where)
    if rec["task"] == "choice":
        choices = rec.get("choices")
        if not choices or len(choices) < 2:
            raise UserError(f"{where}: multiple-choice record needs a 'choices' list")
        if rec["answer"] not in LETTERS[: len(choices)]:
            raise UserError(f"{where}: answer {rec['answer']!r} is not a letter of its {len(choices)} choices")
    return rec


def check_unique_ids(records: list[dict], where: str) -> list[dict]:
    """Question ids name progress files and join generations to gold answers: one id, one question."""
    first: dict[str, int] = {}
    for i, rec in enumerate(records, 1):
        qid = str(rec["id"])
        if qid in first:
            raise UserError(f"{where}: records {first[qid]} and {i} have the same id {qid!r} "
                            "(question ids must be unique within a dataset)")
        first[qid] = i
    return records


# ------------------------------------------------------------------ bundled demo sets
def demo_arith(n: int = 8, seed: int = 0) -> list[dict]:
    """Integer-answer arithmetic (AIME-style scoring: an integer in \\boxed{}): "What is a + b * c?"
    or "a - b * c", with a in 2..60, b in 2..30, c in 2..9."""
    rng = random.Random(f"demo_arith:{seed}")
    out = []
    for i in range(n):
        a, b, c = rng.randint(2, 60), rng.randint(2, 30), rng.randint(2, 9)
        op = rng.choice(["+", "-"])
        value = a + b * c if op == "+" else a - b * c
        out.append({"id": f"arith-{i:03d}", "task": "math", "question": f"What is {a} {op} {b} * {c}?",
                    "choices": None, "answer": str(value), "permutation": None})
    return out


def demo_choice(n: int = 8, seed: int = 0) -> list[dict]:
    """Four-option questions (GPQA-style scoring: a letter, mapped through the permutation): the
    largest of four different numbers from 10 to 98."""
    rng = random.Random(f"demo_choice:{seed}")
    out = []
    for i in range(n):
        nums = rng.sample(range(10, 99), 4)
        qid = f"choice-{i:03d}"
        correct = max(nums)
        choices, answer, perm = shuffle_choices(qid, str(correct), [str(x) for x in nums if x != correct], seed)
        out.append({"id": qid, "task": "choice", "question": "Which of these numbers is the largest?",
                    "choices": choices, "answer": answer, "permutation": perm})
    return out


DEMO_CODE = [
    # (id, question, starter code, fn_name, tests as (input, output))
    ("code-sum", "Read two integers a and b on one line and print a + b.", "", None,
     [("1 2\n", "3\n"), ("-5 11\n", "6\n"), ("1000000000 1000000000\n", "2000000000\n")]),
    ("code-max", "The first line holds n, the second n integers. Print the largest.", "", None,
     [("3\n1 9 4\n", "9\n"), ("1\n-7\n", "-7\n")]),
    ("code-reverse", "Return the list reversed.", "class Solution:\n    def reverse(self, xs: list) -> list:\n",
     "reverse", [("[1, 2, 3]", "[3, 2, 1]"), ("[]", "[]")]),
    ("code-count", "Return how many times the character c occurs in s.",
     "class Solution:\n    def count(self, s: str, c: str) -> int:\n", "count",
     [('"banana"\n"a"', "3"), ('"xyz"\n"a"', "0")]),
]


def demo_code(n: int = 4) -> list[dict]:
    """Small LiveCodeBench-shaped problems (stdin and functional), for the CPU demo of the code grader."""
    out = []
    for qid, question, starter, fn_name, tests in DEMO_CODE[:n]:
        kind = "functional" if fn_name else "stdin"
        out.append({"id": qid, "task": "code", "question": question, "choices": None,
                    "answer": f"{len(tests)} tests", "permutation": None, "starter_code": starter, "fn_name": fn_name,
                    "tests": [{"input": i, "output": o, "testtype": kind} for i, o in tests]})
    return out


# ------------------------------------------------------------------ hub loaders
def _load_hub(hf_id: str, config: str | None, split: str):
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - environment problem
        raise UserError(f"the 'datasets' package is needed to load {hf_id}") from exc
    try:
        return datasets.load_dataset(hf_id, config, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub failure is a one-line user error
        raise UserError(f"could not load {hf_id}{'/' + config if config else ''}: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def aime25(spec: dict) -> list[dict]:
    """AIME 2025 I+II (30 problems). Default source: opencompass/AIME2025 (two configs)."""
    hf_id = spec.get("hf_id") or "opencompass/AIME2025"
    rows = []
    if hf_id == "opencompass/AIME2025":
        for cfg in ("AIME2025-I", "AIME2025-II"):
            for j, row in enumerate(_load_hub(hf_id, cfg, "test")):
                rows.append((f"{cfg}-{j + 1:02d}", row))
    else:  # e.g. math-ai/aime25: fields problem/answer(/id)
        for j, row in enumerate(_load_hub(hf_id, None, "test")):
            rows.append((str(row.get("id", j)), row))
    out = []
    for qid, row in rows:
        question = row.get("question") or row.get("problem")
        answer = row.get("answer")
        out.append(check_record({"id": qid, "task": "math", "question": question, "choices": None,
                                 "answer": str(answer).strip() if answer is not None else None,
                                 "permutation": None}, f"{hf_id} {qid}"))
    return out


def gpqa_diamond(spec: dict) -> list[dict]:
    """GPQA-Diamond (198 questions, gated: accept its terms on the hub, then `hf auth login`)."""
    hf_id = spec.get("hf_id") or "Idavidrein/gpqa"
    out = []
    for j, row in enumerate(_load_hub(hf_id, "gpqa_diamond", "train")):
        qid = str(row.get("Record ID") or f"gpqa-{j:03d}")
        fields = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
        for f in fields:
            if not row.get(f):
                raise UserError(f"{hf_id} row {j}: missing field {f!r}")
        choices, answer, perm = shuffle_choices(
            qid, row["Correct Answer"].strip(), [row[f].strip() for f in fields[2:]], spec.get("shuffle_seed", 0))
        out.append({"id": qid, "task": "choice", "question": row["Question"].strip(), "choices": choices,
                    "answer": answer, "permutation": perm})
    return out


def math500(spec: dict) -> list[dict]:
    """MATH-500 (HuggingFaceH4/MATH-500: 500 problems of the MATH test set; answers are often
    not integers — fractions, radicals, intervals, expressions — and are checked by math-verify)."""
    hf_id = spec.get("hf_id") or "HuggingFaceH4/MATH-500"
    out = []
    for j, row in enumerate(_load_hub(hf_id, None, "test")):
        qid = str(row.get("unique_id") or f"math500-{j:03d}")
        out.append(check_record({"id": qid, "task": "math", "question": (row.get("problem") or "").strip(),
                                 "choices": None, "answer": str(row.get("answer") or "").strip(),
                                 "permutation": None}, f"{hf_id} {qid}"))
    return out


def _lcb_files(version: str) -> list[str]:
    """LiveCodeBench code_generation_lite ships one JSONL per release: release_vN = test.jsonl ..
    testN.jsonl (release_v1 = test.jsonl)."""
    import re

    m = re.fullmatch(r"release_v(\d+)", version)
    if not m or int(m.group(1)) < 1:
        raise UserError(f"LiveCodeBench version {version!r}: expected release_v1, release_v2, ...")
    return ["test.jsonl"] + [f"test{i}.jsonl" for i in range(2, int(m.group(1)) + 1)]


def decode_lcb_tests(field) -> list[dict]:
    """LiveCodeBench stores hidden tests as JSON, or as base64(zlib(pickle(JSON text))). The pickle
    holds one string: it is read with an unpickler that refuses every class (no code runs)."""
    import base64
    import io
    import json
    import pickle
    import zlib

    if isinstance(field, list):
        return field
    try:
        return json.loads(field)
    except json.JSONDecodeError:
        pass

    class StringsOnly(pickle.Unpickler):
        def find_class(self, module, name):
            raise pickle.UnpicklingError(f"refusing {module}.{name} in LiveCodeBench tests")

    text = StringsOnly(io.BytesIO(zlib.decompress(base64.b64decode(field.encode())))).load()
    return json.loads(text)


def lcb_record(row: dict, where: str) -> dict:
    """One LiveCodeBench code_generation_lite row as a normalized record."""
    import json

    meta = row.get("metadata") or "{}"
    meta = json.loads(meta) if isinstance(meta, str) else meta
    tests = decode_lcb_tests(row.get("public_test_cases") or "[]") + decode_lcb_tests(row.get("private_test_cases") or "[]")
    tests = [{"input": t["input"], "output": t["output"], "testtype": t["testtype"]} for t in tests]
    return check_record({"id": str(row["question_id"]), "task": "code", "question": row["question_content"].strip(),
                         "choices": None, "answer": f"{len(tests)} tests", "permutation": None, "tests": tests,
                         "fn_name": meta.get("func_name"), "starter_code": row.get("starter_code") or "",
                         "contest_date": str(row.get("contest_date", ""))[:10], "platform": row.get("platform")},
                        where)


def livecodebench(spec: dict) -> list[dict]:
    """LiveCodeBench code generation (livecodebench/code_generation_lite): problems of one release,
    optionally within a contest-date window (``start_date``/``end_date``, YYYY-MM-DD, inclusive)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - environment problem
        raise UserError("the 'datasets' package is needed to load LiveCodeBench") from exc
    hf_id = spec.get("hf_id") or "livecodebench/code_generation_lite"
    version = spec.get("version") or "release_v5"
    try:
        rows = datasets.load_dataset(hf_id, data_files=_lcb_files(version), split="train")
    except Exception as exc:  # noqa: BLE001 - any hub failure is a one-line user error
        raise UserError(f"could not load {hf_id} ({version}): {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    start, end = spec.get("start_date") or "0000-00-00", spec.get("end_date") or "9999-99-99"
    return [lcb_record(row, f"{hf_id} {row.get('question_id')}") for row in rows
            if start <= str(row.get("contest_date", ""))[:10] <= end]


def jsonl(spec: dict) -> list[dict]:
    """Your own questions (docs/own-data.md): required ``id``, ``task``, ``question``, ``answer``;
    ``choices`` for task choice, ``tests`` (and ``fn_name``, ``starter_code``) for task code."""
    from notallbits.io import read_jsonl

    return [own_record(r, f"{spec['path']} record {i + 1}") for i, r in enumerate(read_jsonl(spec["path"]))]


def own_record(rec: dict, where: str) -> dict:
    """A user's record, checked, in the normalized form: text id and answer, and for multiple
    choice the options as written (``permutation`` marks the correct one, at its letter, with 0)."""
    rec = dict(check_record(rec, where))
    rec["id"], rec["answer"] = str(rec["id"]), str(rec["answer"])
    rec.setdefault("choices", None)
    if rec["task"] == "choice":
        correct, n = LETTERS.index(rec["answer"]), len(rec["choices"])
        perm = rec.get("permutation")
        if perm is None:
            others = iter(range(1, n))
            perm = [0 if i == correct else next(others) for i in range(n)]
        elif sorted(perm) != list(range(n)) or perm[correct] != 0:
            raise UserError(f"{where}: 'permutation' must order its {n} choices with 0 at the answer's letter "
                            f"{rec['answer']} (or leave it out)")
        rec["permutation"] = perm
    else:
        rec.setdefault("permutation", None)
    return rec


LOADERS: dict[str, Callable[[dict], list[dict]] | str] = {
    "aime25": aime25,
    "gpqa_diamond": gpqa_diamond,
    "demo_arith": lambda spec: demo_arith(spec.get("limit") or 8, spec.get("shuffle_seed", 0)),
    "demo_choice": lambda spec: demo_choice(spec.get("limit") or 8, spec.get("shuffle_seed", 0)),
    "math500": math500,
    "livecodebench": livecodebench,
    "demo_code": lambda spec: demo_code(spec.get("limit") or len(DEMO_CODE)),
    "jsonl": jsonl,
    # datasets defined elsewhere plug in by reference ("module:function"), imported when used
    "toy_math": "notallbits.toy.task:load_toy_math",
    "toy_choice": "notallbits.toy.task:load_toy_choice",
    "toy_train": "notallbits.toy.task:load_toy_train",
}

# Loaders whose questions are generated from shuffle_seed: another seed, other questions.
# For the others the seed only reorders options, so the questions are those of the source.
SEEDED_LOADERS = {"demo_arith", "demo_choice", "toy_math", "toy_choice", "toy_train"}


def question_identity(spec: dict) -> tuple:
    """What fixes a dataset's questions (not its limit or option order): two specs with the
    same identity share questions, which calibration must not (grid validation)."""
    seed = spec.get("shuffle_seed", 0) if spec["loader"] in SEEDED_LOADERS else None
    return spec["loader"], spec.get("hf_id"), spec.get("path"), seed


def load(spec: dict) -> list[dict]:
    if spec["loader"] not in LOADERS:
        raise UserError(f"unknown dataset loader {spec['loader']!r} (known: {', '.join(LOADERS)})")
    loader = LOADERS[spec["loader"]]
    if isinstance(loader, str):
        module, name = loader.split(":")
        loader = getattr(importlib.import_module(module), name)
    records = loader(spec)
    if spec.get("limit"):
        records = records[: spec["limit"]]
    if not records:
        raise UserError(f"dataset ({spec['loader']}) has no questions")
    return check_unique_ids(records, spec.get("path") or f"dataset ({spec['loader']})")
