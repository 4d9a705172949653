"""The code grader judges as LiveCodeBench's testing_util.py judges (the rules below are read from
its code, lcb_runner/evaluation/testing_util.py, and checked on problems shaped like its own:
stdin problems with big integers, LeetCode-style functional problems with List annotations)."""

import json
import time

import pytest

from notallbits.codegrade import PRELUDE, Limits, _run, extract_program, grade_many, outputs_match, run_program

ADD_TESTS = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
             {"input": "10 -4\n", "output": "6\n", "testtype": "stdin"}]
# AtCoder-style A+B on 30-digit integers (LiveCodeBench's stdin problems print exact big integers)
BIG = [(123456789012345678901234567890, 987654321098765432109876543210), (10**29 + 7, -(10**29))]
BIG_TESTS = [{"input": f"{a} {b}\n", "output": f"{a + b}\n", "testtype": "stdin"} for a, b in BIG]
TWO_SUM = [{"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "testtype": "functional"},
           {"input": "[3, 2, 4]\n6", "output": "[1, 2]", "testtype": "functional"}]
FAST = Limits(test_seconds=2.0)

CORRECT_STDIN = "a, b = map(int, input().split())\nprint(a + b)"
# LeetCode starter code as LiveCodeBench ships it: `List` with no import (the prelude provides it)
CORRECT_FUNCTIONAL = """
class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
            seen[x] = i
"""


def stdin(program, tests=ADD_TESTS, limits=FAST):
    return run_program(program, tests, limits=limits)


def test_extracts_the_last_fenced_block():
    text = "Try:\n```python\nprint(1)\n```\nBetter:\n```python\nprint(2)\n```\nDone."
    assert extract_program(text) == "print(2)"
    assert extract_program("```\nx = 1\n```") == "x = 1"
    assert extract_program("no code here") is None


def lcb_extract_code(model_output):
    """LiveCodeBench's extract_code (lcb_runner/utils/extraction_utils.py, chat models): the lines
    between the last two lines that contain ```, "" with fewer than two."""
    outputlines = model_output.split("\n")
    indexlines = [i for i, line in enumerate(outputlines) if "```" in line]
    if len(indexlines) < 2:
        return ""
    return "\n".join(outputlines[indexlines[-2] + 1: indexlines[-1]])


# answers shaped like a reasoner's: prose, an earlier draft, the final block under each fence spelling
# LiveCodeBench's prompt and the models use (```python, ```Python, ```py, ```python3, ``` python, bare ```)
PROGRAM = "  # reads two numbers\nimport sys\n\ndef main():\n    a, b = map(int, sys.stdin.readline().split())\n    print(a + b)\n\nmain()"
ANSWERS = [f"I will read two numbers.\n```python\nprint(0)\n```\nThat is wrong; the final program:\n{fence}\n"
           f"{PROGRAM}\n```\nIt prints the sum." for fence in
           ("```python", "```Python", "```PYTHON", "```py", "```python3", "``` python", "```", "```python  ")]


@pytest.mark.parametrize("answer", ANSWERS)
def test_extraction_agrees_with_livecodebench_on_closed_fences(answer):
    assert extract_program(answer) == lcb_extract_code(answer) == PROGRAM
    other = "X, Y = map(int, input().split())\nprint(X + Y)\t"  # starts with X, ends with a tab
    answer = answer.replace(PROGRAM, other)
    assert extract_program(answer) == lcb_extract_code(answer) == other


def test_extraction_where_livecodebench_grades_an_empty_program():
    # no fence, or only an empty block: no program (LiveCodeBench grades "", which fails every test)
    for answer in ("print(1)", "```python\n```", "```\n\n\n```", "```python\n   \n```"):
        assert lcb_extract_code(answer).strip() == "" and extract_program(answer) is None
    # one fence left open by the token budget: its text, to the end (LiveCodeBench: "")
    assert extract_program("Here:\n```python\n" + PROGRAM + "\n") == PROGRAM
    assert extract_program("```python\nprint(1)\n```\nThen:\n```python\nprint(2)") == "print(2)"
    # a fence of another language is not a Python program; the last Python one is
    assert extract_program("```python\nprint(1)\n```\n```cpp\nint main() {}\n```") == "print(1)"


def test_the_prelude_is_livecodebenchs():
    # testing_util.import_string: star imports of these modules, then plain imports, then the limit
    for module in ("typing", "collections", "heapq", "bisect", "math", "itertools", "functools", "sys"):
        assert f"from {module} import *\n" in PRELUDE
    assert PRELUDE.endswith("sys.setrecursionlimit(50000)\n")


@pytest.mark.parametrize("got, want, ok", [
    ("3\n", "3", True),
    ("  3  \n\n", "3\n", True),              # lines are stripped, the text too
    ("1 2\n3  4", "1 2\n3 4\n", True),       # unequal text, equal as Decimals
    ("1.50", "1.5", True), ("1e3", "1000", True),
    ("Yes  No", "Yes No", False),            # not numbers: the text must be equal
    ("998244352", "998244353", False),       # exact: no relative tolerance on integers
    (str(2**53 + 1), str(2**53), False),
    ("0.3333333", "0.33333333", False),      # exact Decimals, no 1e-6 tolerance
    ("nan", "1.0", False), ("nan", "nan", True),  # nan matches only as the same text
    ("3\n4", "3", False), ("", "3", False),
])
def test_stdout_comparison_is_livecodebenchs(got, want, ok):
    assert outputs_match(got, want, "stdin") is ok


@pytest.mark.parametrize("got, want, ok", [
    ([0, 1], "[0, 1]", True), ((0, 1), "[0, 1]", True),  # a returned tuple counts as a list
    ([(0, 1)], "[[0, 1]]", False),                          # only at the top
    (1.0, "1", True), (True, "1", True),                   # Python's ==, as LiveCodeBench compares
    (float("nan"), "1", False), ({0, 1}, "[0, 1]", False), ("1", "1", False),
])
def test_functional_comparison_is_pythons_equality(got, want, ok):
    assert outputs_match(got, want, "functional") is ok


def test_correct_programs_pass():
    r = stdin(CORRECT_STDIN)
    assert r.passed and r.outcome == "passed" and r.tests_passed == 2 and r.detail == ""
    assert stdin(CORRECT_STDIN, BIG_TESTS).passed
    r = run_program(CORRECT_FUNCTIONAL, TWO_SUM, fn_name="twoSum", limits=FAST)
    assert r.passed, r


def test_wrong_big_integers_fail():
    r = stdin("a, b = map(int, input().split())\nprint(float(a + b))", BIG_TESTS)
    assert not r.passed and r.outcome == "wrong_answer"
    r = stdin("a, b = map(int, input().split())\nprint(a + b - 1)", BIG_TESTS)
    assert r.outcome == "wrong_answer"


def test_prelude_names_and_deep_recursion_work_without_imports():
    program = """
class Solution:
    def depth(self, n: int) -> int:
        return 0 if n == 0 else 1 + self.depth(n - 1)
    def count(self, nums: List[int], k: int) -> int:
        return self.depth(3000) - 3000 + sum(1 for x in nums if gcd(x, k) > 1) + len(Counter(nums)) * 0
"""
    tests = [{"input": "[4, 6, 7, 9]\n6", "output": "3", "testtype": "functional"}]
    assert run_program(program, tests, fn_name="count", limits=FAST).passed


@pytest.mark.parametrize("program", [
    "import sys\ndata = sys.stdin.buffer.read().split()\nprint(int(data[0]) + int(data[1]))",
    "from sys import stdin\na, b = map(int, stdin.readline().split())\nprint(a + b)",
    "import sys\ninput = sys.stdin.readline\na, b = map(int, input().split())\nprint(a + b)",
    "a, b = map(int, input().split())\nprint(a + b)\nexit()",
    "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(1)",  # SystemExit ends a test normally
    "import sys\ndef main():\n    a, b = map(int, sys.stdin.readline().split())\n    print(a + b)\n"
    "if __name__ == '__main__':\n    main()",
])
def test_livecodebenchs_stdin_forms_pass(program):
    assert stdin(program).passed


@pytest.mark.parametrize("program, outcome", [
    # LiveCodeBench sets builtins.quit to None: quit() is a runtime error there
    ("a, b = map(int, input().split())\nprint(a + b)\nquit()", "runtime_error"),
    # the prelude's `from builtins import *` binds the real open(), and fd 0 is /dev/null there
    ("data = open(0).read().split()\nprint(int(data[0]) + int(data[1]))", "runtime_error"),
    # its stdin stand-in defines no iteration
    ("import sys\nfor line in sys.stdin:\n    a, b = map(int, line.split())\n    print(a + b)", "runtime_error"),
    # only a *last* `if __name__ == '__main__':` block is unwrapped; elsewhere __name__ is 'tmp_sol'
    ("def main():\n    a, b = map(int, input().split())\n    print(a + b)\nif __name__ == '__main__':\n    main()\n"
     "x = 1", "wrong_answer"),
    ("a, b = map(int, input(.split())\nprint(a + b)", "compile_error"),
])
def test_livecodebenchs_stdin_failures_fail(program, outcome):
    r = stdin(program)
    assert not r.passed and r.outcome == outcome, r


def test_functional_compile_errors():
    r = run_program(CORRECT_FUNCTIONAL, TWO_SUM, fn_name="threeSum", limits=FAST)
    assert r.outcome == "compile_error" and "AttributeError" in r.detail
    r = run_program("class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]\nraise ValueError",
                    TWO_SUM, fn_name="twoSum", limits=FAST)
    assert r.outcome == "compile_error"


def test_wrong_answer_stops_at_the_first_failing_test():
    r = stdin("a, b = map(int, input().split())\nprint(a + b if a < 5 else a - b)")
    assert not r.passed and r.outcome == "wrong_answer" and r.tests_passed == 1
    assert r.detail == "test 2 of 2"  # the failing test, counted from 1


def test_infinite_loop_times_out_per_test():
    t0 = time.perf_counter()
    r = stdin("while True:\n    pass", limits=Limits(test_seconds=1.0))
    assert not r.passed and r.outcome == "timeout" and r.detail == ""  # the harness's timeout report has no detail
    assert time.perf_counter() - t0 < 5


def test_each_test_has_its_own_time_limit():
    # 3 tests of 0.6 s each with 1 s per test: LiveCodeBench passes it (the limit is per test)
    tests = [{"input": f"{i}\n", "output": f"{i}\n", "testtype": "stdin"} for i in range(3)]
    program = "import time\nt = time.time()\nwhile time.time() - t < 0.6:\n    pass\nprint(input())"
    assert stdin(program, tests, Limits(test_seconds=1.0)).passed


def test_huge_allocation_fails_cleanly():
    r = stdin("x = bytearray(8 * 1024**3)\nprint(3)")
    assert not r.passed and r.outcome == "runtime_error" and "MemoryError" in r.detail


def test_a_large_input_reaches_the_program_whole():
    # LiveCodeBench's stdin tests hold inputs of hundreds of kB (n up to 2 * 10**5 numbers): the job
    # goes to the sandbox in many pipe-sized pieces
    numbers = list(range(1, 100_001))
    tests = [{"input": f"{len(numbers)}\n{' '.join(map(str, numbers))}\n", "output": f"{sum(numbers)}\n",
              "testtype": "stdin"}]
    assert stdin("input()\nprint(sum(map(int, input().split())))", tests).passed


def test_the_memory_and_file_caps_are_in_mib():
    # Limits.memory_mb caps the address space, file_mb the largest file, both in MiB: mapping 100 MiB
    # less than the cap works and 100 MiB more does not; a file of exactly the cap is written whole
    limits, add = Limits(test_seconds=2.0, memory_mb=512, file_mb=1), "\n" + CORRECT_STDIN
    mapping = "import mmap\nm = mmap.mmap(-1, {} * 2**20)"
    assert stdin(mapping.format(412) + add, limits=limits).passed
    r = stdin(mapping.format(612) + add, limits=limits)
    assert (r.outcome, r.detail) == ("runtime_error", "OSError: [Errno 12] Cannot allocate memory"), r
    # open() reads the test's input during a test (LiveCodeBench's mock): the program writes with os
    writing = "import os\nfd = os.open('f', os.O_WRONLY | os.O_CREAT)\ndata = b'x' * {}\nwhile data:\n" \
              "    data = data[os.write(fd, data):]"
    assert stdin(writing.format(2**20) + add, limits=limits).passed
    r = stdin(writing.format(2**20 + 2**19) + add, limits=limits)
    assert (r.outcome, r.detail) == ("runtime_error", "OSError: [Errno 27] File too large"), r


def test_grade_many_in_parallel_and_votes_by_behaviour():
    same_behaviour = "x, y = input().split()\nprint(int(x) + int(y))"
    jobs = [(CORRECT_STDIN, ADD_TESTS, None), (same_behaviour, ADD_TESTS, None), (CORRECT_STDIN, ADD_TESTS, None),
            ("print(0)", ADD_TESTS, None), (None, ADD_TESTS, None), ("print(1)", ADD_TESTS, None)]
    results = grade_many(jobs, limits=FAST)
    assert [r.passed for r in results] == [True, True, True, False, False, False]
    assert results[0].signature == results[1].signature != results[3].signature
    assert results[3].signature != results[5].signature  # two wrong answers, two different votes
    assert results[4].signature is None  # no program: abstains


# LiveCodeBench's reliability_guard (testing_util.py), name by name: what it sets to None before the
# program's first line. `exit` stays (its line is commented out there).
LCB_GUARD = (["builtins.quit", "builtins.help"]
             + [f"os.{n}" for n in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
                                    "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink",
                                    "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown",
                                    "getcwd", "chdir")]
             + ["shutil.rmtree", "shutil.move", "shutil.chown", "subprocess.Popen"]
             + [f"sys.modules.{n}" for n in ("ipdb", "joblib", "resource", "psutil", "tkinter")])
# what it leaves alone (a guard that removed these would fail correct programs)
LCB_KEPT = ["builtins.exit", "builtins.print", "os.getpid", "os.listdir", "os.open", "os.write", "os.environ",
            "shutil.copy", "subprocess.run", "sys.modules.math", "sys.modules.json"]


def test_the_guard_removes_what_livecodebenchs_removes():
    # the program prints which of the names it is given are None inside the sandbox
    program = """
import builtins, os, shutil, subprocess, sys
roots = {"builtins": builtins, "os": os, "shutil": shutil, "subprocess": subprocess}
gone = []
for name in input().split():
    root, attr = name.split(".", 1)
    if root == "sys":
        value = sys.modules.get(attr.split(".", 1)[1], 0)
    else:
        value = getattr(roots[root], attr, 0)
    if value is None:
        gone.append(name)
print(" ".join(gone))
"""
    names = LCB_GUARD + LCB_KEPT
    tests = [{"input": " ".join(names) + "\n", "output": " ".join(LCB_GUARD) + "\n", "testtype": "stdin"}]
    assert stdin(program, tests).passed
    r = stdin("import resource\nprint(3)", [{"input": "", "output": "3\n", "testtype": "stdin"}])
    assert r.outcome == "compile_error" and "None in sys.modules" in r.detail  # refused (top-level imports run at load)
    r = stdin("import os\nos.getcwd()\nprint(3)", [{"input": "", "output": "3\n", "testtype": "stdin"}])
    assert r.outcome == "runtime_error" and "TypeError" in r.detail  # calling a removed function


def test_a_program_killed_before_reporting_fails_with_the_stage_it_died_in():
    # the sandbox's report ends without a result line: the program died (SIGKILL cannot be caught), and
    # LiveCodeBench counts a grading process that returns nothing as failing every test
    die = "import signal\nsignal.raise_signal(signal.SIGKILL)\n"
    r = stdin(die + "print(3)")  # stdin: the import runs at load, the kill inside the first test
    assert (r.passed, r.outcome, r.tests_passed, r.tests_total) == (False, "runtime_error", 0, 2)
    r = stdin("a, b = map(int, input().split())\nimport signal\nif a == 10:\n    signal.raise_signal(signal.SIGKILL)\n"
              "print(a + b)")
    assert (r.outcome, r.tests_passed) == ("runtime_error", 1)  # the second test died
    r = run_program(die + CORRECT_FUNCTIONAL, TWO_SUM, fn_name="twoSum", limits=FAST)  # dies while loading
    assert (r.passed, r.outcome, r.tests_passed) == (False, "compile_error", 0)
    # a module that swallows its load alarm is killed from outside: still a compile error
    swallow = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n"
    r = run_program(swallow + CORRECT_FUNCTIONAL, TWO_SUM, fn_name="twoSum", limits=Limits(test_seconds=0.5))
    assert (r.passed, r.outcome, r.tests_passed) == (False, "compile_error", 0)


def test_a_function_returning_none_matches_null_as_in_livecodebench():
    # grade_call_based: prediction == json.loads(output), so None matches "null" and nothing else
    assert outputs_match(None, "null", "functional") is True
    assert outputs_match(None, "[]", "functional") is False and outputs_match([], "null", "functional") is False
    assert outputs_match(None, "None", "stdin") is False  # no output is not the text "None"
    program = "class Solution:\n    def find(self, nums: List[int], k: int) -> Optional[int]:\n" \
              "        return next((i for i, x in enumerate(nums) if x == k), None)"
    tests = [{"input": "[4, 6, 7]\n7", "output": "2", "testtype": "functional"},
             {"input": "[4, 6, 7]\n5", "output": "null", "testtype": "functional"}]
    r = run_program(program, tests, fn_name="find", limits=FAST)
    assert r.passed and r.tests_passed == 2, r


def test_functional_expected_output_already_decoded():
    # an own dataset's JSONL may hold a functional test's output as a JSON value, not its text
    assert outputs_match([0, 1], [0, 1], "functional") is True
    assert outputs_match((0, 1), [0, 1], "functional") is True and outputs_match([1, 0], [0, 1], "functional") is False
    tests = [{"input": "[2, 7, 11, 15]\n9", "output": [0, 1], "testtype": "functional"}]
    assert run_program(CORRECT_FUNCTIONAL, tests, fn_name="twoSum", limits=FAST).passed


def test_every_line_is_compared_not_only_the_first():
    # grade_stdio: line by line, the first mismatching line fails the test
    assert outputs_match("1 2\n3 4", "1 2\n3 5", "stdin") is False
    assert outputs_match("Yes\n1.0\nNo", "Yes\n1\nYes", "stdin") is False
    assert outputs_match("Yes\n1.0\nNo", "Yes\n1\nNo", "stdin") is True
    assert outputs_match("3\n4", "3 4", "stdin") is False  # a line break is not a space: 2 lines against 1


def test_the_whole_run_has_livecodebenchs_overall_limit():
    # check_correctness: p.join(timeout=(timeout + 1) * len(inputs) + 5), LiveCodeBench's default timeout 6 s
    assert Limits().run_seconds(10) == 75 and Limits().run_seconds(1) == 12
    assert Limits(test_seconds=2.0).run_seconds(3) == 14


def test_a_problems_tests_are_checked_as_livecodebench_records():
    from notallbits import UserError
    from notallbits.codegrade import check_tests

    # LiveCodeBench's test records: input, output and testtype "stdin" or "functional"
    tests = ADD_TESTS + TWO_SUM
    assert check_tests(tests, "lcb.jsonl:3") is tests
    bad = [[], None, "1 2", ["1 2"], [{"input": "1", "output": "1"}], [{"input": "1", "output": "1", "testtype": "io"}],
           [{"output": "3", "testtype": "stdin"}], [{"input": "1 2", "testtype": "stdin"}],
           [{"output": "[0, 1]", "testtype": "functional"}], [{"input": "[1]", "testtype": "functional"}],
           [ADD_TESTS[0], {"input": "1", "output": "1", "testtype": "STDIN"}]]
    for tests in bad:
        with pytest.raises(UserError, match="^lcb.jsonl:3: "):
            check_tests(tests, "lcb.jsonl:3")


# values a LeetCode-style function returns, as Python source, with an expected output as LiveCodeBench
# stores it (JSON text); the verdict is LiveCodeBench's: prediction (a tuple as a list) == json.loads(output)
RETURNED = [
    ("2**70", "1180591620717411303424"), ("-(2**60) - 1", "-1152921504606846977"), ("2**70", "1180591620717411303425"),
    ("2**53 + 1", "9007199254740992"), ("float('nan')", "NaN"), ("float('inf')", "Infinity"), ("-0.0", "0"),
    ("(1, [2, (3,)])", "[1, [2, [3]]]"), ("(1, [2, [3]])", "[1, [2, [3]]]"), ("{1, 2}", "[1, 2]"),
    ("frozenset({1})", "[1]"), ("{'a': [1, 2], 'b': None}", '{"a": [1, 2], "b": null}'), ("{1: 2}", '{"1": 2}'),
    ("{'a': (1, 2)}", '{"a": [1, 2]}'), ("[{1, 2}]", "[[1, 2]]"), ("fractions.Fraction(1, 2)", "0.5"),
    ("fractions.Fraction(1, 3)", "0.3333333333333333"), ("decimal.Decimal('0.5')", "0.5"),
    ("decimal.Decimal('0.1')", "0.1"), ("type('Point', (), {})()", "{}"), ("True", "1"), ("True", "true"),
    ("'abc'", '"abc"'), ("[[]]", "[[]]"), ("[2**64, -1.5, 'x']", '[18446744073709551616, -1.5, "x"]'),
]


def test_returned_values_compare_as_livecodebench_compares_them():
    import decimal
    import fractions
    import json

    def lcb_verdict(src, out):
        value = eval(src, {"fractions": fractions, "decimal": decimal})
        return (list(value) if isinstance(value, tuple) else value) == json.loads(out)

    program = ("import decimal, fractions\nclass Solution:\n    def value(self, i: int):\n        return ["
               + ", ".join(src for src, _ in RETURNED) + "][i]")
    tests = [{"input": str(i), "output": out, "testtype": "functional"} for i, (_, out) in enumerate(RETURNED)]
    verdicts = [lcb_verdict(src, out) for src, out in RETURNED]
    assert 5 < sum(verdicts) < len(verdicts) - 5  # both verdicts occur
    # the values LiveCodeBench passes, in one program run; each one it fails, alone
    passing = [t for t, ok in zip(tests, verdicts) if ok]
    failing = [t for t, ok in zip(tests, verdicts) if not ok]
    results = grade_many([(program, passing, "value")] + [(program, [t], "value") for t in failing],
                         limits=FAST, workers=2)
    assert results[0].passed and results[0].tests_passed == len(passing), results[0]
    for t, r in zip(failing, results[1:]):
        assert (r.passed, r.outcome) == (False, "wrong_answer"), (RETURNED[int(t["input"])], r)


class FailingSandbox:
    """A sandbox launcher that ends before the harness starts, as bwrap does where the kernel refuses
    its namespaces: it prints its error and exits (stdout and stderr are one pipe)."""

    def __init__(self, output: str):
        self.output = output

    def start(self, limits):
        import subprocess

        proc = subprocess.Popen(["/bin/sh", "-c", 'printf "%s" "$0"; exit 1', self.output], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        return proc, None

    def job_fields(self, limits, handle):
        return {"scratch": "/scratch", "processes": 16}

    def cleanup(self, handle):
        pass


def test_a_sandbox_that_ends_before_the_program_starts_is_a_sandbox_error():
    from notallbits.codegrade import _run

    message = "bwrap: setting up uid map: Permission denied"
    r = _run(FailingSandbox(f"{message}\nbwrap: second line\n"), CORRECT_STDIN, ADD_TESTS, None, FAST)
    assert (r.passed, r.outcome, r.tests_passed, r.tests_total) == (False, "sandbox_error", 0, 2)
    assert r.detail == message  # its first line: the one-line error the grader stops with
    for output in ("bwrap: " + "x" * 1000, "bwrap: " + "x" * 1000 + "\n"):  # cut, with or without its newline
        r = _run(FailingSandbox(output), CORRECT_STDIN, ADD_TESTS, None, FAST)
        assert r.outcome == "sandbox_error" and r.detail == ("bwrap: " + "x" * 1000)[:300]
    r = _run(FailingSandbox(message), CORRECT_STDIN, ADD_TESTS, None, FAST)
    assert (r.outcome, r.detail) == ("sandbox_error", message)
    r = _run(FailingSandbox(""), CORRECT_STDIN, ADD_TESTS, None, FAST)  # nothing said: still a reason
    assert r.outcome == "sandbox_error" and r.detail.strip()
    # once the harness has reported, a line it did not write is the program's: never passed off as the sandbox's
    r = _run(FailingSandbox('{"c": 0}\n' + message + "\n"), CORRECT_STDIN, ADD_TESTS, None, FAST)
    assert (r.outcome, r.detail) == ("sandbox_error", f"unreadable report: {message.encode()!r}")
    # a result for a test that was not started is the sandbox's error: no test counts as passed
    r = _run(FailingSandbox('{"c": 0}\n{"t": 0}\n{"r": 1, "s": "ok", "o": "3"}\n'), CORRECT_STDIN, ADD_TESTS, None, FAST)
    assert (r.outcome, r.tests_passed) == ("sandbox_error", 0)
    # a compile error reported without its detail: the verdict, with no made-up detail
    r = _run(FailingSandbox('{"c": 0}\n{"c": 1}\n'), CORRECT_STDIN, ADD_TESTS, None, FAST)
    assert (r.outcome, r.detail, r.tests_passed) == ("compile_error", "", 0)
    r = _run(FailingSandbox('{"c": 0}\n{"c": 1, "e": "' + "x" * 400 + '"}\n'), CORRECT_STDIN, ADD_TESTS, None, FAST)
    assert (r.outcome, r.detail) == ("compile_error", "x" * 300)  # one line of at most 300 characters
    r = _run(FailingSandbox('{"c": 0}\n{"t": 0}\n{"r": 0, "s": "runtime_error", "e": "' + "y" * 400 + '"}\n'),
             CORRECT_STDIN, ADD_TESTS, None, FAST)
    assert (r.outcome, r.detail, r.tests_passed) == ("runtime_error", "y" * 300, 0)
    # its detail quotes the report out of order, cut to 100 characters as an unreadable line's
    late = {"r": 1, "s": "ok", "o": "3" * 200}
    r = _run(FailingSandbox('{"c": 0}\n{"t": 0}\n' + json.dumps(late) + "\n"), CORRECT_STDIN, ADD_TESTS, None, FAST)
    assert (r.outcome, r.detail) == ("sandbox_error", f"unexpected report: {str(late)[:100]}")
    flood = "x" * 5000  # a long one: its first 100 bytes, so the detail stays one short line
    r = _run(FailingSandbox('{"c": 0}\n' + flood + "\n"), CORRECT_STDIN, ADD_TESTS, None, FAST)
    assert (r.outcome, r.detail) == ("sandbox_error", f"unreadable report: {flood.encode()[:100]!r}")
    # a message that is not UTF-8 (a path in another encoding), with or without its newline: read with U+FFFD
    for end in (b"", b"\n"):
        r = _run(FailingSandbox(b"bwrap: /home/j\xf6rg: No such file" + end), CORRECT_STDIN, ADD_TESTS, None, FAST)
        assert (r.outcome, r.detail) == ("sandbox_error", "bwrap: /home/j\ufffdrg: No such file")


class ScriptedSandbox(FailingSandbox):
    """A launcher that reads the job and then writes the given pieces of report (kept in a file),
    pausing between them: the parent reads each piece before the next comes."""

    def __init__(self, folder, *pieces: bytes):
        self.script = folder / f"pieces-{len(list(folder.iterdir()))}.py"
        self.script.write_text(f"PIECES = {pieces!r}\n" + "import sys, time\nsys.stdin.buffer.read()\n"
                               "for piece in PIECES:\n    sys.stdout.buffer.write(piece)\n"
                               "    sys.stdout.buffer.flush()\n    time.sleep(0.4)\n")

    def start(self, limits):
        import subprocess
        import sys

        proc = subprocess.Popen([sys.executable, str(self.script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        return proc, None


def test_an_output_of_exactly_the_cap_passes_even_when_every_character_is_escaped(tmp_path):
    # output_mb caps the program's output (1 MiB here); its report line JSON-escapes it, a backslash to
    # two bytes, and the parent holds the line whole until its newline comes
    output = "\\" * 2**20
    line = json.dumps({"r": 0, "s": "ok", "o": output}).encode()
    head, tests, limits = b'{"c": 0}\n{"t": 0}\n', [{"input": "", "output": output, "testtype": "stdin"}], \
        Limits(test_seconds=2.0, output_mb=1)
    r = _run(ScriptedSandbox(tmp_path, head, line[:-2], line[-2:] + b"\n"), CORRECT_STDIN, tests, None, limits)
    assert (r.passed, r.outcome) == (True, "passed"), r
    over = line[:-2] + b"\\\\" * 2**11  # 2,048 backslashes more
    r = _run(ScriptedSandbox(tmp_path, head, over, line[-2:] + b"\n"), CORRECT_STDIN, tests, None, limits)
    assert r.outcome == "output_limit", r


class UnstartableSandbox(FailingSandbox):
    """A sandbox that cannot start this one program (the system is out of processes or descriptors)."""

    def __init__(self, output: str, message: str = "Too many open files"):
        super().__init__(output)
        self.message = message

    def start(self, limits):
        raise OSError(24, self.message)


def test_a_program_with_no_code_or_no_sandbox_fails_every_test_and_the_batch_goes_on(monkeypatch):
    from notallbits import codegrade

    # no program extracted: LiveCodeBench grades "", which fails every test
    r = run_program(None, ADD_TESTS, limits=FAST)
    assert (r.passed, r.outcome, r.tests_passed, r.tests_total, r.signature) == (False, "no_program", 0, 2, None)
    # the sandbox cannot start this program: its own verdict, not an exception that stops the batch
    monkeypatch.setitem(codegrade._SANDBOXES, "bubblewrap", UnstartableSandbox(""))
    results = grade_many([(CORRECT_STDIN, ADD_TESTS, None), (None, TWO_SUM, "twoSum")], limits=FAST)
    assert [(r.passed, r.outcome, r.tests_passed, r.tests_total) for r in results] == [
        (False, "sandbox_error", 0, 2), (False, "no_program", 0, 2)]
    assert results[0].detail == "OSError: [Errno 24] Too many open files"
    # its detail is one line of at most 300 characters, as every verdict's
    monkeypatch.setitem(codegrade._SANDBOXES, "bubblewrap", UnstartableSandbox("", "/very/long/path" * 100))
    r = run_program(CORRECT_STDIN, ADD_TESTS, limits=FAST)
    assert r.outcome == "sandbox_error" and r.detail == f"OSError: [Errno 24] {'/very/long/path' * 100}"[:300]


def test_a_comparison_too_deep_for_python_fails_the_test():
    # in LiveCodeBench a RecursionError raised by prediction == expected is caught as a runtime error
    def nested(depth):
        value = []
        for _ in range(depth):
            value = [value]
        return value

    assert outputs_match(nested(50), nested(50), "functional") is True
    assert outputs_match(nested(20_000), nested(20_000), "functional") is False
