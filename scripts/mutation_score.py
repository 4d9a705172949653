"""Per-module mutation results from mutmut's files (mutants/**/*.meta), for `make mutation`.

A module is one entry of [tool.mutmut] only_mutate in pyproject.toml. Each mutant is counted once:
- killed: a fast test failed (mutmut's exit codes 1, 3);
- timeout: the tests ran out of time (mutmut stops a mutant after timeout_multiplier x its
  tests' measured CPU time). Undecided: tests that build a slow fixture afresh run out of time
  whether or not one of them would fail, so timeouts are left out of the score;
- killed only by slow tests: survived the fast tests, then failed the slow ones
  (scripts/mutation_slow.py records those in mutants/slow-results.json);
- equivalent: survived, and listed in tests/mutation-equivalent.txt with the reason no
  behaviour can tell it apart from the original;
- survived: any other mutant that every test passed;
- no tests: no fast test calls the mutated function in-process;
- not checked: the run has not reached it yet (a time limit, or a part not run).
Score = killed / (checked - equivalent - timeout): the share of the decided mutants that can be
told apart which the fast tests tell apart.

    python scripts/mutation_score.py [MODULE ...]          # the table (all modules by default)
    python scripts/mutation_score.py --pending MODULE ...  # mutant names still to run, for mutmut run
    python scripts/mutation_score.py --survivors MODULE ...  # surviving, non-equivalent mutant names
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import tomllib
from collections import Counter
from pathlib import Path

KILLED = {1, 3}  # failing tests, pytest internal error
TIMEOUT = {24, -24, 36, 152, 255}  # SIGXCPU (as exit code or signal), mutmut's own timeout, killed
SURVIVED = {0, 5}  # 5: pytest ran no test (all deselected), nothing failed
NO_TESTS = {33}
EQUIVALENT_FILE = "tests/mutation-equivalent.txt"
SLOW_RESULTS = "slow-results.json"
COLUMNS = ("mutants", "checked", "killed", "timeout", "slow only", "survived", "equivalent", "no tests", "score")


def module_patterns(pyproject: str = "pyproject.toml") -> dict[str, str]:
    """Module name -> only_mutate glob, in the config's order (``notallbits/kvcache/*`` -> kvcache)."""
    with open(pyproject, "rb") as f:
        patterns = tomllib.load(f)["tool"]["mutmut"]["only_mutate"]
    return {p.removeprefix("notallbits/").removesuffix(".py").rstrip("*/"): p for p in patterns}


def module_of(path: str, patterns: dict[str, str]) -> str | None:
    return next((m for m, p in patterns.items() if fnmatch.fnmatch(path, p)), None)


def read_equivalent(path: str = EQUIVALENT_FILE) -> dict[str, str]:
    """Mutant name -> reason, from lines ``name  reason`` (``#`` starts a comment)."""
    out = {}
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
            if line:
                name, _, reason = line.partition(" ")
                if not reason.strip():
                    sys.exit(f"{path}: {name}: give the reason the mutant is equivalent after its name")
                out[name] = reason.strip()
    return out


def results(root: Path, patterns: dict[str, str]) -> dict[str, dict[str, int | None]]:
    """Module -> {mutant name: mutmut's exit code, None when not run yet}."""
    out: dict[str, dict[str, int | None]] = {m: {} for m in patterns}
    for meta in sorted(root.rglob("*.py.meta")):
        module = module_of(str(meta.relative_to(root)).removesuffix(".meta"), patterns)
        if module is not None:
            out[module].update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def classify(code: int | None, name: str, equivalent: dict[str, str], slow: dict[str, int]) -> str:
    if code is None:
        return "not checked"
    if name in equivalent and (code in SURVIVED or code in TIMEOUT):
        return "equivalent"
    if code in KILLED:
        return "killed"
    if code in TIMEOUT:
        return "timeout"
    if code in NO_TESTS:
        return "no tests"
    if code in SURVIVED:
        if slow.get(name) in KILLED:
            return "slow only"
        return "survived"
    return "other"


def tally(root: Path, patterns: dict[str, str], equivalent: dict[str, str]) -> dict[str, Counter]:
    slow_file = root / SLOW_RESULTS
    slow = json.loads(slow_file.read_text()) if slow_file.exists() else {}
    out = {}
    for module, codes in results(root, patterns).items():
        c = Counter(classify(code, name, equivalent, slow) for name, code in codes.items())
        c["mutants"] = len(codes)
        c["checked"] = c["mutants"] - c["not checked"]
        out[module] = c
    return out


def score(c: Counter) -> str:
    """Killed by the fast tests over the mutants decided: checked, less the equivalent ones and
    the timeouts (a mutant whose tests build a slow fixture afresh runs out of time whether or
    not a test would fail it; on a loaded machine those are most timeouts). A mutant no fast
    test reaches, or only a slow one kills, counts as missed."""
    decided = c["checked"] - c["equivalent"] - c["timeout"] - c["other"]
    return f"{100 * c['killed'] / decided:.1f}%" if decided else "-"


def table(rows: dict[str, Counter]) -> str:
    lines = [f"| module | {' | '.join(COLUMNS)} |", "|" + " --- |" * (len(COLUMNS) + 1)]
    total = Counter()
    for module, c in rows.items():
        total.update(c)
        lines.append(f"| {module} | " + " | ".join(str(c[k]) for k in COLUMNS[:-1]) + f" | {score(c)} |")
    lines.append("| all | " + " | ".join(str(total[k]) for k in COLUMNS[:-1]) + f" | {score(total)} |")
    return "\n".join(lines)


def pending(root: Path, patterns: dict[str, str], modules: list[str], sample: str) -> list[str]:
    """Names for ``mutmut run``: the unchecked mutants of these modules, or, for a module whose
    mutants were never generated, a glob over its names. ``sample``: keep only mutants whose
    number ends in one of these digits (a fixed sample)."""
    done = results(root, patterns)
    out = []
    for module in modules:
        if done[module]:
            names = [n for n, code in done[module].items() if code is None]
            out += [n for n in names if not sample or n[-1] in sample]
        else:
            dotted = patterns[module].removesuffix(".py").replace("/", ".")
            out.append(dotted + ("*" if dotted.endswith("*") else ".*") + (f"[{sample}]" if sample else ""))
    return [n.replace("**", "*") for n in out]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module names (default: all of only_mutate)")
    parser.add_argument("--root", default="mutants")
    parser.add_argument("--pending", action="store_true")
    parser.add_argument("--survivors", action="store_true")
    parser.add_argument("--sample", default="", help="digits a sampled mutant's number ends in, e.g. 05")
    args = parser.parse_args(argv)
    patterns = module_patterns()
    unknown = [m for m in args.modules if m not in patterns]
    if unknown:
        sys.exit(f"unknown module {unknown[0]!r} (modules: {' '.join(patterns)})")
    modules = args.modules or list(patterns)
    root = Path(args.root)
    equivalent = read_equivalent()
    if args.pending:
        print("\n".join(pending(root, patterns, modules, args.sample)))
        return
    if args.survivors:
        slow = json.loads((root / SLOW_RESULTS).read_text()) if (root / SLOW_RESULTS).exists() else {}
        for module, codes in results(root, patterns).items():
            if module in modules:
                print("\n".join(n for n, c in codes.items() if classify(c, n, equivalent, slow) == "survived"))
        return
    rows = tally(root, patterns, equivalent)
    print(table({m: rows[m] for m in modules}))
    listed = {n for codes in results(root, patterns).values() for n, c in codes.items() if c is not None}
    stale = sorted(n for n in equivalent if n not in listed and module_of_name(n, patterns) in modules)
    if stale:
        print(f"\n{EQUIVALENT_FILE}: not among the checked mutants (renumbered after an edit? re-check them):")
        print("\n".join(f"  {n}" for n in stale))


def module_of_name(name: str, patterns: dict[str, str]) -> str | None:
    """The module of a mutant name (``notallbits.generation.progress.x_f__mutmut_1``)."""
    path = name.partition(".x")[0].replace(".", "/")
    return next((m for m, p in patterns.items() if fnmatch.fnmatch(path + ".py", p)
                 or fnmatch.fnmatch(path + "/__init__.py", p)), None)


if __name__ == "__main__":
    main()
