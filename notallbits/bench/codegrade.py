"""Benchmark of the code grader: the sandbox's start-up cost per program and the wall time of a
LiveCodeBench-shaped batch (4 problems x 64 programs), graded in parallel over the cores.

    python -m notallbits.bench.codegrade [--baseline OLD_CODEGRADE.py] [--workers N]

``--baseline`` times another implementation of the same interface (``run_program``,
``grade_many``, ``Limits``: an older ``codegrade.py``, e.g. from ``git show REV:notallbits/codegrade.py``)
on the same machine in the same run and prints the ratios; the goal is a batch under 2x the baseline.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import sys
import time

# Four problems shaped like LiveCodeBench's: two stdin problems (big integers, a sort of 2,000
# numbers) and two functional ones (LeetCode-style ``class Solution`` with ``List`` annotations).
_rng = random.Random(0)
_SORT_INPUTS = [[_rng.randint(-10**9, 10**9) for _ in range(2000)] for _ in range(8)]
_BIG = [(_rng.randint(10**29, 10**30), _rng.randint(10**29, 10**30)) for _ in range(10)]
_ARRAYS = [[_rng.randint(-50, 50) for _ in range(300)] for _ in range(10)]


def _max_subarray(xs):
    best = cur = xs[0]
    for x in xs[1:]:
        cur = max(x, cur + x)
        best = max(best, cur)
    return best


PROBLEMS = [
    {"fn_name": None,
     "tests": [{"input": f"{a} {b}\n", "output": f"{a + b}\n", "testtype": "stdin"} for a, b in _BIG],
     "correct": "a, b = map(int, input().split())\nprint(a + b)",
     "wrong": "a, b = map(int, input().split())\nprint(a - b)",
     "error": "a, b = map(int, input().split(','))\nprint(a + b)"},
    {"fn_name": None,
     "tests": [{"input": f"{len(xs)}\n{' '.join(map(str, xs))}\n", "output": " ".join(map(str, sorted(xs))) + "\n",
                "testtype": "stdin"} for xs in _SORT_INPUTS],
     "correct": "import sys\nn = int(sys.stdin.readline())\nxs = sorted(map(int, sys.stdin.readline().split()))\n"
                "print(' '.join(map(str, xs)))",
     "wrong": "n = int(input())\nxs = list(map(int, input().split()))\nprint(' '.join(map(str, xs)))",
     "error": "n = int(input())\nprint(xs)"},
    {"fn_name": "maxSubArray",
     "tests": [{"input": str(xs), "output": str(_max_subarray(xs)), "testtype": "functional"} for xs in _ARRAYS],
     "correct": "class Solution:\n    def maxSubArray(self, nums: List[int]) -> int:\n        best = cur = nums[0]\n"
                "        for x in nums[1:]:\n            cur = max(x, cur + x)\n            best = max(best, cur)\n"
                "        return best",
     "wrong": "class Solution:\n    def maxSubArray(self, nums: List[int]) -> int:\n        return max(nums)",
     "error": "class Solution:\n    def maxSubArray(self, nums: List[int]) -> int:\n        return nums[len(nums)]"},
    {"fn_name": "twoSum",
     "tests": [{"input": f"{list(range(0, 2 * n, 2))}\n{2 * n - 4}", "output": f"[{n // 2 - 2}, {n // 2}]",
                "testtype": "functional"} for n in range(20, 220, 20)],
     "correct": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        seen = {}\n"
                "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
                "                return [seen[target - x], i]\n            seen[x] = i",
     "wrong": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        return [0, 1]",
     "error": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        return nums[-1] / 0"},
]


def batch(programs_per_problem: int) -> list[tuple[str, list[dict], str | None]]:
    """Per problem: 5/8 correct, 2/8 wrong and 1/8 crashing programs, each distinct (no two are
    deduplicated into one run)."""
    jobs = []
    for p in PROBLEMS:
        for i in range(programs_per_problem):
            kind = "correct" if i % 8 < 5 else "wrong" if i % 8 < 7 else "error"
            jobs.append((f"# sample {i}\n{p[kind]}", p["tests"], p["fn_name"]))
    return jobs


def load(path: str | None):
    if path is None:
        from notallbits import codegrade

        return codegrade
    spec = importlib.util.spec_from_file_location("codegrade_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def measure(module, runs: int, programs: int, workers: int) -> dict:
    tests = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
    module.run_program("print(3)", tests)  # warm-up (the sandbox's one-time set-up)
    startup = []
    for _ in range(runs):
        t0 = time.perf_counter()
        module.run_program("print(3)", tests)
        startup.append((time.perf_counter() - t0) * 1000)
    jobs = batch(programs)
    t0 = time.perf_counter()
    results = module.grade_many(jobs, workers=workers)
    wall = time.perf_counter() - t0
    return {"startup_ms": statistics.median(startup), "batch_s": wall, "programs": len(jobs),
            "passed": sum(r.passed for r in results)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", help="another codegrade.py with the same interface, timed the same way")
    p.add_argument("--runs", type=int, default=20, help="programs timed one by one for the start-up cost")
    p.add_argument("--programs", type=int, default=64, help="programs per problem in the batch (4 problems)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--bound", type=float, default=2.0, help="the batch may take at most this times the baseline")
    args = p.parse_args(argv)
    rows = [("current", measure(load(None), args.runs, args.programs, args.workers))]
    if args.baseline:
        rows.append(("baseline", measure(load(args.baseline), args.runs, args.programs, args.workers)))
    print(f"{'grader':<10} {'start-up ms':>12} {'batch s':>9} {'programs':>9} {'passed':>7}  ({args.workers} workers)")
    for name, r in rows:
        print(f"{name:<10} {r['startup_ms']:>12.1f} {r['batch_s']:>9.2f} {r['programs']:>9} {r['passed']:>7}")
    if args.baseline:
        cur, base = rows[0][1], rows[1][1]
        ratio = cur["batch_s"] / base["batch_s"]
        print(f"start-up: {cur['startup_ms'] / base['startup_ms']:.2f}x the baseline; "
              f"batch: {ratio:.2f}x the baseline (bound {args.bound:.1f}x): {'ok' if ratio <= args.bound else 'OVER'}")
        if ratio > args.bound:
            sys.exit(1)


if __name__ == "__main__":
    main()
