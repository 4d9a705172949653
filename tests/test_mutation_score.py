"""scripts/mutation_score.py: per-module counts from mutmut's meta files, the equivalent list, and
the names a resumed `make mutation` passes to mutmut."""

import json
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import mutation_score as ms  # noqa: E402


@pytest.fixture
def mutants(tmp_path):
    root = tmp_path / "mutants"
    (root / "notallbits" / "generation").mkdir(parents=True)
    (root / "notallbits" / "kvcache").mkdir()
    codes = {"notallbits/plan.py": {"notallbits.plan.x_a__mutmut_1": 1, "notallbits.plan.x_a__mutmut_2": 0,
                                    "notallbits.plan.x_a__mutmut_3": 0, "notallbits.plan.x_b__mutmut_1": 33,
                                    "notallbits.plan.x_b__mutmut_2": None, "notallbits.plan.x_b__mutmut_5": None,
                                    "notallbits.plan.x_b__mutmut_10": -24, "notallbits.plan.x_c__mutmut_1": 0},
             "notallbits/generation/progress.py": {"notallbits.generation.progress.x_f__mutmut_1": 3},
             "notallbits/kvcache/settings.py": {"notallbits.kvcache.settings.x_g__mutmut_1": 0}}
    for path, by_key in codes.items():
        (root / (path + ".meta")).write_text(json.dumps({"exit_code_by_key": by_key}))
    (root / ms.SLOW_RESULTS).write_text(json.dumps({"notallbits.plan.x_c__mutmut_1": 1}))
    return root


PATTERNS = {"plan": "notallbits/plan.py", "generation/progress": "notallbits/generation/progress.py",
            "kvcache": "notallbits/kvcache/*", "scoring": "notallbits/scoring*"}


def test_counts_per_module(mutants):
    rows = ms.tally(mutants, PATTERNS, {"notallbits.plan.x_a__mutmut_3": "range(0, n) is range(n)"})
    plan = rows["plan"]
    assert (plan["mutants"], plan["checked"], plan["killed"], plan["timeout"], plan["survived"], plan["equivalent"],
            plan["slow only"], plan["no tests"], plan["not checked"]) == (8, 6, 1, 1, 1, 1, 1, 1, 2)
    assert ms.score(plan) == "25.0%"  # 1 killed of 6 checked less 1 equivalent and 1 timeout
    assert rows["generation/progress"]["killed"] == 1 and rows["kvcache"]["survived"] == 1
    assert rows["scoring"]["mutants"] == 0 and ms.score(rows["scoring"]) == "-"
    table = ms.table(rows)
    assert "| plan | 8 | 6 | 1 | 1 | 1 | 1 | 1 | 1 | 25.0% |" in table
    assert table.splitlines()[-1] == "| all | 10 | 8 | 2 | 1 | 1 | 2 | 1 | 1 | 33.3% |"
    # a timeout of a listed equivalent mutant is that mutant, not a kill
    assert ms.classify(-24, "m", {"m": "why"}, {}) == "equivalent" and ms.classify(-24, "n", {}, {}) == "timeout"


def test_pending_names_resume_a_part(mutants):
    assert ms.pending(mutants, PATTERNS, ["plan"], "") == ["notallbits.plan.x_b__mutmut_2",
                                                            "notallbits.plan.x_b__mutmut_5"]
    assert ms.pending(mutants, PATTERNS, ["plan"], "05") == ["notallbits.plan.x_b__mutmut_5"]
    assert ms.pending(mutants, PATTERNS, ["scoring"], "") == ["notallbits.scoring*"]  # never generated: a glob
    assert ms.pending(mutants, PATTERNS, ["scoring"], "05") == ["notallbits.scoring*[05]"]
    assert ms.pending(mutants, PATTERNS, ["generation/progress"], "") == []


def test_module_names_and_the_equivalent_list(tmp_path):
    patterns = ms.module_patterns(ROOT / "pyproject.toml")
    assert {"scoring", "codegrade", "verify", "plan", "grid", "weights", "families", "io", "manifest",
            "generation/progress", "kvcache", "data", "memory"} <= set(patterns)
    assert ms.module_of_name("notallbits.generation.progress.x_progress_name__mutmut_3", patterns) == \
        "generation/progress"
    assert ms.module_of_name("notallbits.scoring.voting.x_f__mutmut_1", patterns) == "scoring"
    assert ms.module_of_name("notallbits.kvcache.settings.xǁKVMethodǁsample_bytes__mutmut_1", patterns) == "kvcache"
    listed = tmp_path / "eq.txt"
    listed.write_text("# comment\n\nnotallbits.plan.x_a__mutmut_3  range(0, n) is range(n)\n")
    assert ms.read_equivalent(str(listed)) == {"notallbits.plan.x_a__mutmut_3": "range(0, n) is range(n)"}
    listed.write_text("notallbits.plan.x_a__mutmut_3\n")
    with pytest.raises(SystemExit, match="give the reason"):
        ms.read_equivalent(str(listed))
    assert all(reason for reason in ms.read_equivalent(str(ROOT / ms.EQUIVALENT_FILE)).values())
