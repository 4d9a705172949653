"""The LiveCodeBench-style grader: correct programs pass, and wrong, looping, forking,
memory-hungry, file-writing and networking programs fail cleanly without harming the run."""

import os
import time

import pytest

from notallbits.codegrade import Limits, extract_program, grade_many, outputs_match, run_program

ADD_TESTS = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
             {"input": "10 -4\n", "output": "6\n", "testtype": "stdin"}]
TWO_SUM = [{"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "testtype": "functional"},
           {"input": "[3, 2, 4]\n6", "output": "[1, 2]", "testtype": "functional"}]
FAST = Limits(test_seconds=2.0, total_seconds=8.0, memory_mb=512)

CORRECT_STDIN = "a, b = map(int, input().split())\nprint(a + b)"
CORRECT_FUNCTIONAL = """
class Solution:
    def twoSum(self, nums, target):
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
            seen[x] = i
"""


def test_extracts_the_last_fenced_block():
    text = "Try:\n```python\nprint(1)\n```\nBetter:\n```python\nprint(2)\n```\nDone."
    assert extract_program(text) == "print(2)"
    assert extract_program("```\nx = 1\n```") == "x = 1"
    assert extract_program("no code here") is None


def test_correct_programs_pass():
    r = run_program(CORRECT_STDIN, ADD_TESTS, limits=FAST)
    assert r.passed and r.outcome == "passed" and r.tests_passed == 2
    r = run_program(CORRECT_FUNCTIONAL, TWO_SUM, fn_name="twoSum", limits=FAST)
    assert r.passed, r


def test_main_guard_and_sys_exit_zero_still_pass():
    program = "import sys\ndef main():\n    a, b = map(int, sys.stdin.readline().split())\n    print(a + b)\n" \
              "    sys.exit(0)\nif __name__ == '__main__':\n    main()"
    assert run_program(program, ADD_TESTS, limits=FAST).passed


def test_wrong_answer_fails_on_one_test():
    r = run_program("a, b = map(int, input().split())\nprint(a + b if a < 5 else a - b)", ADD_TESTS, limits=FAST)
    assert not r.passed and r.outcome == "wrong_answer" and r.tests_passed == 1


def test_infinite_loop_times_out_quickly():
    t0 = time.perf_counter()
    r = run_program("while True:\n    pass", ADD_TESTS, limits=FAST)
    assert not r.passed and r.outcome == "timeout"
    assert time.perf_counter() - t0 < 12


def test_a_loop_that_swallows_the_alarm_is_killed_by_the_wall_clock():
    t0 = time.perf_counter()
    r = run_program("while True:\n    try:\n        pass\n    except BaseException:\n        pass", ADD_TESTS, limits=FAST)
    assert not r.passed and r.outcome in ("timeout", "runtime_error")
    assert time.perf_counter() - t0 < 15


def test_fork_bomb_fails_cleanly():
    r = run_program("import os\nwhile True:\n    os.fork()", ADD_TESTS, limits=FAST)
    assert not r.passed and r.outcome == "runtime_error" and "fork" in r.detail
    r = run_program("import subprocess\nsubprocess.run(['sh', '-c', 'echo 3'])", ADD_TESTS, limits=FAST)
    assert not r.passed


def test_huge_allocation_fails_cleanly():
    r = run_program("x = bytearray(8 * 1024**3)\nprint(3)", ADD_TESTS, limits=FAST)
    assert not r.passed and r.outcome == "runtime_error" and "MemoryError" in r.detail


def test_writing_outside_its_folder_fails_and_leaves_nothing(tmp_path):
    target = tmp_path / "escaped.txt"
    os.chmod(tmp_path, 0o777)
    r = run_program(f"open({str(target)!r}, 'w').write('x')\nprint(3)", ADD_TESTS, limits=FAST)
    assert not r.passed and not target.exists()
    # its own scratch folder is writable
    ok = "open('scratch.txt', 'w').write('x')\n" + CORRECT_STDIN
    assert run_program(ok, ADD_TESTS, limits=FAST).passed


def test_network_is_refused():
    r = run_program("import socket\nsocket.create_connection(('127.0.0.1', 9))\nprint(3)", ADD_TESTS, limits=FAST)
    assert not r.passed and r.outcome == "runtime_error"


def test_grade_many_in_parallel_and_votes_by_behaviour():
    same_behaviour = "x, y = input().split()\nprint(int(x) + int(y))"
    jobs = [(CORRECT_STDIN, ADD_TESTS, None), (same_behaviour, ADD_TESTS, None), (CORRECT_STDIN, ADD_TESTS, None),
            ("print(0)", ADD_TESTS, None), (None, ADD_TESTS, None)]
    results = grade_many(jobs, limits=FAST)
    assert [r.passed for r in results] == [True, True, True, False, False]
    assert results[0].signature == results[1].signature != results[3].signature
    assert results[4].signature is None  # no program: abstains


@pytest.mark.parametrize("got, want, ok", [("3\n", "3", True), ("1 2\n3  4", "1 2\n3 4\n", True),
                                           ("0.3333333", "0.33333333", True), ("0.34", "0.33", False),
                                           ("3\n4", "3", False)])
def test_stdout_comparison(got, want, ok):
    assert outputs_match(got, want, "stdin") is ok
