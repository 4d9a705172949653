"""Per-module mutation score from mutmut's results (mutants/**/*.meta), for `make mutation`.

Score = (killed + timeout) / checked, as mutmut counts it: killed = a fast test failed,
timeout = the tests used 30x their unmutated time in CPU seconds (mutmut's limit);
"strict" counts failures only. Checked leaves out mutants the run did not reach (a time limit
or a name filter). "no tests": no fast test calls the mutated function in-process.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

MODULES = {"scoring": ["notallbits/scoring/"], "forcing": ["notallbits/generation/forcing.py"],
           "sampling": ["notallbits/generation/sampling.py"], "memory": ["notallbits/memory.py"],
           "analysis": ["notallbits/analysis.py"], "kvcache": ["notallbits/kvcache/"], "data": ["notallbits/data/"]}
KILLED = {1, 3}  # failing tests, pytest internal error
TIMEOUT = {24, -24, 36, 152, 255}


def module_of(path: str) -> str | None:
    return next((m for m, prefixes in MODULES.items() if any(path.startswith(p) for p in prefixes)), None)


def tally(root: Path) -> dict[str, Counter]:
    out: dict[str, Counter] = {m: Counter() for m in MODULES}
    for meta in sorted(root.rglob("*.py.meta")):
        module = module_of(str(meta.relative_to(root)).removesuffix(".meta"))
        if module is None:
            continue
        for code in json.loads(meta.read_text())["exit_code_by_key"].values():
            c = out[module]
            c["total"] += 1
            if code is None:
                c["not checked"] += 1
            elif code in KILLED:
                c["killed"] += 1
            elif code in TIMEOUT:
                c["timeout"] += 1
            elif code == 0:
                c["survived"] += 1
            elif code in (5, 33):
                c["no tests"] += 1
            else:
                c["other"] += 1
    return out


def main(root: str = "mutants") -> None:
    rows = tally(Path(root))
    print(f"{'module':10} {'mutants':>8} {'checked':>8} {'killed':>7} {'timeout':>7} {'survived':>8} {'no tests':>8}"
          f" {'score':>7} {'strict':>7}")
    total = Counter()
    for module, c in list(rows.items()) + [("all", None)]:
        if c is None:
            c = total
        else:
            total.update(c)
        checked = c["total"] - c["not checked"]
        score = f"{100 * (c['killed'] + c['timeout']) / checked:.1f}%" if checked else "-"
        strict = f"{100 * c['killed'] / checked:.1f}%" if checked else "-"
        print(f"{module:10} {c['total']:8} {checked:8} {c['killed']:7} {c['timeout']:7} {c['survived']:8}"
              f" {c['no tests']:8} {score:>7} {strict:>7}")


if __name__ == "__main__":
    main(*sys.argv[1:])
