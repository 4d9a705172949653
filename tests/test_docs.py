"""The documentation: the site builds with warnings as errors (a broken link or anchor fails),
and the numbers it prints that the code can compute (cells, jobs, quantizations, GiB) are the
code's."""

import copy
import re
import subprocess
import sys

import pytest

from notallbits import grid, plan
from notallbits.memory import GIB, Arch, format_weight_bytes, known_archs, table1_csv
from notallbits.weights import FORMATS
from tests.conftest import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAPER = ROOT / "config.yaml"


def _text(name: str) -> str:
    return (ROOT / name).read_text()


def _number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def paper():
    return grid.load(PAPER)


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_every_page_is_in_the_nav():
    nav = _text("mkdocs.yml")
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert pages and [p for p in pages if f": {p}" not in nav] == []


def test_readme_fits_on_a_few_screens():
    assert len(README.read_text().splitlines()) <= 150


@pytest.mark.parametrize("name", ["README.md"] + [f"docs/{p.name}" for p in sorted(DOCS.glob("*.md"))])
def test_no_text_about_how_the_project_was_built(name):
    text = _text(name)
    for phrase in (r"\bthis task\b", r"\bthis issue\b", r"\bissue #?\d", r"\bmain at [0-9a-f]{7}",
                   r"huggingface-cli login"):
        assert not re.search(phrase, text, re.IGNORECASE), f"{name}: {phrase}"


def test_readme_counts_the_paper_grid(paper):
    """README: 'config.yaml holds N cells in M generation jobs (plus Q quantizations and V verify jobs)'."""
    m = re.search(r"([\d,]+) cells in ([\d,]+) generation jobs \(plus (\d+) quantizations and (\d+) verify",
                  README.read_text().replace("\n", " "))
    assert m, "README no longer states the paper grid's size"
    cells, jobs, quantizations, verify = map(_number, m.groups())
    planned = plan.plan(paper, {})
    assert (cells, jobs, verify) == (planned["cells"], planned["jobs"], len(planned["verify_jobs"]))
    assert quantizations == len({(j.model, j.weights.name) for j in grid.jobs(paper) if j.weights.quantized})


def test_workflow_page_counts_each_sweep(paper):
    """docs/workflow.md names each sweep's cells and jobs; the sweeps overlap, so the new cells
    of `weight-methods` are counted against the union of the others."""
    text = (DOCS / "workflow.md").read_text().replace("\n  ", " ")

    def alone(name):
        one = copy.deepcopy(paper)
        one["sweeps"] = [s for s in paper["sweeps"] if s["name"] == name]
        return len(grid.cells(one)), len(grid.jobs(one))

    for name in ("main", "kv-compression", "extended-tasks"):
        m = re.search(rf"- `{name}`:.*?([\d,]+) cells in ([\d,]+) (?:generation )?jobs", text)
        assert m, name
        assert tuple(map(_number, m.groups())) == alone(name), name
    others = copy.deepcopy(paper)
    others["sweeps"] = [s for s in paper["sweeps"] if s["name"] != "weight-methods"]
    m = re.search(r"- `weight-methods`:.*?([\d,]+) new cells in ([\d,]+) jobs", text)
    assert m
    assert tuple(map(_number, m.groups())) == (len(grid.cells(paper)) - len(grid.cells(others)),
                                               len(grid.jobs(paper)) - len(grid.jobs(others)))
    m = re.search(r"counts ([\d,]+) cells in ([\d,]+) generation jobs", text)
    assert m and tuple(map(_number, m.groups())) == (len(grid.cells(paper)), len(grid.jobs(paper)))


def test_memory_page_prints_table1_as_computed():
    text = (DOCS / "memory.md").read_text()
    block = re.search(r"```\n(model,params_b,.*?)```", text, re.DOTALL)
    assert block, "docs/memory.md no longer prints Table 1"
    assert block.group(1) == table1_csv()


def test_weight_formats_page_prints_bytes_as_computed():
    """The GiB table of docs/weight-formats.md: each model's weights in each format."""
    text = (DOCS / "weight-formats.md").read_text()
    header = re.search(r"\| model \| (.*?) \|\n", text)
    assert header
    columns = [c.strip() for c in header.group(1).split("|")]
    names = {"GPTQ-4": "gptq-4", "AWQ-4": "awq-4", "GPTQ-8": "gptq-8", "FP8": "fp8", "bf16": "bf16"}
    rows = 0
    for name in known_archs("qwen3"):
        m = re.search(rf"\| {re.escape(name)} \| (.*?) \|\n", text)
        assert m, name
        printed = [float(v) for v in m.group(1).split("|")]
        arch = Arch.named(name)
        assert printed == [round(format_weight_bytes(arch, FORMATS[names[c]]) / GIB, 2) for c in columns], name
        rows += 1
    assert rows == 6


def test_gpu_page_sequences_in_flight_as_planned(paper):
    """docs/gpu.md: 'For Qwen3-32B in bf16 one 80 GB GPU holds a single 31k-token sequence;
    4-bit holds 6; two GPUs hold 10.'"""
    text = (DOCS / "gpu.md").read_text().replace("\n", " ")
    m = re.search(r"Qwen3-32B in bf16 one 80 GB GPU holds a single (\d+)k-token sequence; 4-bit holds (\d+); "
                  r"two GPUs hold (\d+)", text)
    assert m
    rows = {(r["model"], r["weights"]): r for r in plan.gpu_memory(paper)}
    bf16, gptq4 = rows[("Qwen3-32B", "bf16")], rows[("Qwen3-32B", "gptq-4")]
    assert int(m.group(1)) == round(bf16["context_tokens"] / 1000)
    assert (bf16["in_flight_1"], gptq4["in_flight_1"], bf16["in_flight_2"]) == (1, int(m.group(2)), int(m.group(3)))


def test_every_stated_plan_of_a_shipped_config_is_the_code_s():
    """Lines like `notallbits plan configs/x.yaml   # 2,256 cells in 240 generation jobs`."""
    stated = []
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        stated += re.findall(r"notallbits plan (\S+\.yaml)\s+#\s*([\d,]+) cells in ([\d,]+) generation jobs",
                             path.read_text())
    assert stated
    for config, cells, jobs in stated:
        cfg = grid.load(ROOT / config)
        assert (_number(cells), _number(jobs)) == (len(grid.cells(cfg)), len(grid.jobs(cfg))), config


def test_budget_forcing_page_states_the_schema_defaults():
    rows = re.findall(r"^\| `generation\.(\w+)` \| `(.*?)` \|", (DOCS / "budget-forcing.md").read_text(), re.MULTILINE)
    assert len(rows) == 4
    generation = grid.schema()["properties"]["generation"]["properties"]
    for key, stated in rows:
        default = generation[key]["default"]
        written = str(default).lower() if isinstance(default, bool) else str(default).replace("\n", "\\n")
        assert stated == written, key


def test_testing_page_names_every_equivalent_mutant():
    """The equivalent mutants (left out of the mutation score) are named, each with its reason,
    on the testing page, and the page names none that the list no longer has."""
    root = ROOT
    listed = {line.split()[0] for line in (root / "tests/mutation-equivalent.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    page = (root / "docs/testing.md").read_text()
    named = set(re.findall(r"^- `(notallbits\.[^`]+__mutmut_\d+)`: \S", page, flags=re.M))
    assert listed and listed == named
