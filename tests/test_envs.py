"""Conda cannot run here, so prove statically what it would need: every rule names an env
file that exists and parses, and every third-party package a step's code imports is listed
in that step's env (following the package's own imports, lazy ones included)."""

import ast
import os
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
# the other backend's module never runs in this env; steps that size models (grid -> modelarch)
# read only the shape constants of the tiny and toy models, defined at module level with the
# standard library (their torch/tokenizers imports are inside the functions that build them)
BUILT_HERE = {"notallbits.tinymodel", "notallbits.toy.train"}
EXCLUDE = {"generate-transformers": {"notallbits.generation.vllm_backend"},
           "generate-vllm": {"notallbits.kvcache", "notallbits.kvcache.eviction"} | BUILT_HERE,
           "analysis": BUILT_HERE}


def rules():
    """(rule name, body text) for every rule of the workflow."""
    out = []
    for f in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        text = f.read_text()
        # `rule name:` at the top level, or `rule:` made in a loop (indented) with a `name:` directive
        for m in re.finditer(r"^([ \t]*)rule(?: (\w+))?:\n((?:\1[ \t]+.*\n|\n)*)", text, flags=re.M):
            name = m.group(2) or re.search(r"name:\n\s+(.+)\n", m.group(3)).group(1).strip()
            out.append((name, m.group(3)))
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


WORKFLOW_RULES = [(name, body) for name, body in rules() if name not in ("all", "download")]  # targets only


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


def as_snakemake_places_it(env: str, root) -> tuple:
    """Copy an env file the way `--sdm conda` does (.snakemake/conda/<hash>.yaml) and write its
    pip section where conda's pip installer writes it: a requirements file beside the env
    file, which pip reads with that folder as its working directory."""
    import hashlib

    text = (ROOT / "envs" / env).read_text()
    folder = root / ".snakemake" / "conda"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    (folder / f"{digest}.yaml").write_text(text)
    spec = yaml.safe_load(text)
    reqs = [i for d in spec["dependencies"] if isinstance(d, dict) for i in d["pip"]]
    req = folder / f"condaenv.{digest[:8]}.requirements.txt"
    req.write_text("\n".join(reqs) + "\n")
    return folder, req, reqs


ENVS = sorted(p.name for p in (ROOT / "envs").glob("*.yaml"))


@pytest.mark.parametrize("env", ENVS)
def test_env_pip_section_has_nothing_relative_to_the_env_file(env, tmp_path):
    """From .snakemake/conda/, a local path in the pip section (`-e ..`) points into
    .snakemake/ and pip fails; an env lists index packages only (the workflow's package comes
    from PYTHONPATH, see rules/common.smk). Offline: pip resolves every non-index entry."""
    folder, req, reqs = as_snakemake_places_it(env, tmp_path)
    local = [r for r in reqs if r.startswith(("-e", ".", "/", "file:")) or "/" in r.split("@")[0]]
    if local:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
                               "--isolated", "--quiet", *[a for r in local for a in r.split()]], cwd=folder,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{env}: {local} from {folder}: {proc.stderr[-1500:]}"


def test_jobs_import_the_workflows_package_from_its_folder(tmp_path):
    """With envs that install nothing of ours, every job finds `notallbits` through the
    PYTHONPATH the workflow sets: a `python` that records its environment runs a real job."""
    real = sys.executable
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "pythonpath.txt"
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s" "$PYTHONPATH" > {record}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.path.dirname(real)}{os.pathsep}{env.get('PATH', '')}"
    exe = os.path.join(os.path.dirname(real), "snakemake")
    proc = subprocess.run([exe, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path / "w"), "--configfile",
                           str(ROOT / "configs" / "tiny.yaml"), "--cores", "1", "results/data/demo-arith.jsonl"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record.read_text().split(os.pathsep)[0] == str(ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("env", ENVS)
def test_pip_sections_resolve(env, tmp_path):
    """pip resolves each env's pip section against PyPI (metadata only, nothing installed),
    from where Snakemake puts the env file."""
    folder, req, _ = as_snakemake_places_it(env, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(tmp_path / "r.json"), "-r", req.name], capture_output=True, text=True,
                          timeout=900, cwd=folder)
    if proc.returncode != 0 and ("Could not fetch" in proc.stderr or "NewConnectionError" in proc.stderr):
        pytest.skip("no package index reachable")
    assert proc.returncode == 0, proc.stderr[-3000:]
