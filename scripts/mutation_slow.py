"""Run the slow tests against mutants the fast tests let through, for the "killed only by slow
tests" column of scripts/mutation_score.py (results in mutants/slow-results.json).

    python scripts/mutation_slow.py MODULE [--tests tests/test_workflow.py ...] [--limit N]

Each surviving mutant of MODULE runs the slow tests (`-m slow`, the files given or all) in the
mutants/ copy, with the mutant switched on by mutmut's MUTANT_UNDER_TEST, also in the
subprocesses and workflow jobs the tests start (PYTHONPATH points at the mutated copy). A slow
run takes minutes, so this is meant for a few survivors at a time; results are kept, and a
second call skips the mutants already run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_score import SLOW_RESULTS, classify, module_patterns, read_equivalent, results  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module")
    parser.add_argument("--tests", nargs="*", default=[], help="test files or node ids (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="run at most this many mutants")
    parser.add_argument("--root", default="mutants")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    store = root / SLOW_RESULTS
    done = json.loads(store.read_text()) if store.exists() else {}
    codes = results(root, module_patterns())[args.module]
    equivalent = read_equivalent()
    todo = [n for n, c in codes.items() if classify(c, n, equivalent, {}) == "survived" and n not in done]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    for name in todo[:args.limit]:
        run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-m", "slow", "-p", "no:cacheprovider",
                              *args.tests], cwd=root, env={**env, "MUTANT_UNDER_TEST": name})
        done[name] = run.returncode
        store.write_text(json.dumps(done, indent=1, sort_keys=True) + "\n")
        print(f"{name}: {'killed' if run.returncode in (1, 3) else 'survived' if run.returncode == 0 else run.returncode}",
              flush=True)


if __name__ == "__main__":
    main()
