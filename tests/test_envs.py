"""Conda cannot run here, so prove statically what it would need: every rule names an env
file that exists and parses, and every third-party package a step's code imports is listed
in that step's env (following the package's own imports, lazy ones included)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from notallbits.cli import SUBCOMMANDS
from tests.conftest import ROOT

# import name -> distribution name, where they differ
DIST = {"yaml": "pyyaml", "math_verify": "math-verify", "huggingface_hub": "huggingface-hub"}
STDLIB = set(sys.stdlib_module_names)
# the other backend's module never runs in this env
EXCLUDE = {"generate-transformers": {"notallbits.generation.vllm_backend"},
           "generate-vllm": {"notallbits.kvcache", "notallbits.kvcache.eviction"}}


def rules():
    """(rule name, body text) for every rule of the workflow."""
    out = []
    for f in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        text = f.read_text()
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, flags=re.M):
            out.append((m.group(1), m.group(2)))
    return out


def env_files(body: str) -> list[str]:
    m = re.search(r"conda:\n\s+(.+)\n", body)
    if not m:
        return []
    value = m.group(1).strip()
    if value.startswith('"'):
        return [value.strip('"').removeprefix("../")]
    return ["envs/generate-transformers.yaml", "envs/generate-vllm.yaml"]  # generation_env()


def env_packages(path: str) -> set[str]:
    spec = yaml.safe_load((ROOT / path).read_text())
    pkgs = set()
    for dep in spec["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            if item.startswith("-e"):
                continue
            pkgs.add(re.split(r"[=<>! ]", item)[0].lower().replace("_", "-"))
    return pkgs


def module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for cand in (path.with_suffix(".py"), path / "__init__.py"):
        if cand.exists():
            return cand
    return None


def third_party_imports(entries: list[Path], exclude: set[str]) -> set[str]:
    seen, todo, found = set(), list(entries), set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top == "notallbits":
                    if name not in exclude and (mf := module_file(name)):
                        todo.append(mf)
                elif top not in STDLIB and top != "snakemake":
                    found.add(DIST.get(top, top).lower().replace("_", "-"))
    return found


def entries(body: str) -> list[Path]:
    m = re.search(r"script:\n\s+\"\.\./(.+)\"", body)
    if m:
        return [ROOT / m.group(1)]
    cmd = re.search(r"-m notallbits ([\w-]+)", body)
    return [module_file(SUBCOMMANDS[cmd.group(1)][0])] if cmd else []


WORKFLOW_RULES = [(name, body) for name, body in rules() if name != "all"]


@pytest.mark.parametrize("name, body", WORKFLOW_RULES, ids=[n for n, _ in WORKFLOW_RULES])
def test_rule_env_exists_and_lists_its_imports(name, body):
    envs = env_files(body)
    assert envs, f"rule {name} has no conda: env"
    for env in envs:
        pkgs = env_packages(env)  # parses
        stem = Path(env).stem
        needed = third_party_imports(entries(body), EXCLUDE.get(stem, set()))
        missing = needed - pkgs
        assert not missing, f"rule {name}: {env} lacks {sorted(missing)}"
    for key in ("log:",):
        assert key in body, f"rule {name} has no {key}"


def test_every_env_pins_what_it_can():
    for env in sorted((ROOT / "envs").glob("*.yaml")):
        spec = yaml.safe_load(env.read_text())
        assert "channels" in spec and any(isinstance(d, dict) and "pip" in d for d in spec["dependencies"])


@pytest.mark.slow
@pytest.mark.parametrize("env", sorted(p.name for p in (ROOT / "envs").glob("*.yaml")))
def test_pip_sections_resolve(env, tmp_path):
    """pip resolves each env's pip section against PyPI (metadata only, nothing installed)."""
    spec = yaml.safe_load((ROOT / "envs" / env).read_text())
    reqs = [i for d in spec["dependencies"] if isinstance(d, dict) for i in d["pip"] if not i.startswith("-e")]
    req = tmp_path / "req.txt"
    req.write_text("\n".join(reqs) + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(tmp_path / "r.json"), "-r", str(req)], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0 and ("Could not fetch" in proc.stderr or "NewConnectionError" in proc.stderr):
        pytest.skip("no package index reachable")
    assert proc.returncode == 0, proc.stderr[-3000:]
