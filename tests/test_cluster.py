"""What a first cluster run needs: --config overrides of nested keys, the runtime cap, jobs that
import the package and read the hub cache offline under `--sdm conda` as Snakemake really runs
them (its env-var filtering and script preamble; conda itself replaced by tests/conda_shim)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

SNAKEMAKE = os.path.join(os.path.dirname(sys.executable), "snakemake")
SHIM = ROOT / "tests" / "conda_shim" / "bin"


# ---------------------------------------------------------------- --config of nested keys
def test_nested_config_values_are_typed_by_the_schema():
    """Snakemake's own --config parser (BaseLoader for nested values) hands every scalar inside
    a mapping or list over as text; validation reads it as the schema's type."""
    from snakemake.cli import parse_config

    from notallbits import grid

    parsed = parse_config(['hardware={max_runtime_minutes: 1440, gpu_memory_gib: 79.6}',
                           'generation={wait_extension: false, max_model_len: null, dtype: bfloat16}',
                           'interpreters={quantize: /opt/envs/q/bin/python}'])
    assert parsed["hardware"] == {"max_runtime_minutes": "1440", "gpu_memory_gib": "79.6"}  # what Snakemake gives
    config = grid.load(ROOT / "config.yaml")
    for key, value in parsed.items():
        config[key] = {**config[key], **value}
    config["sweeps"][0]["bits"] = ["4", "gptq-8", "16"]
    config["sweeps"][0]["samples"] = "32"
    out = grid.validate(config)
    assert out["hardware"]["max_runtime_minutes"] == 1440 and out["hardware"]["gpu_memory_gib"] == 79.6
    assert out["generation"]["wait_extension"] is False and out["generation"]["max_model_len"] is None
    assert out["generation"]["dtype"] == "bfloat16" and out["interpreters"]["quantize"] == "/opt/envs/q/bin/python"
    assert out["sweeps"][0]["bits"] == [4, "gptq-8", 16] and out["sweeps"][0]["samples"] == 32
    with pytest.raises(Exception, match="hardware.max_runtime_minutes"):
        grid.validate({**config, "hardware": {"max_runtime_minutes": "a day"}})


def dry_run(workdir, *args, env=None, snakemake=SNAKEMAKE):
    """The command as a user types it (through bash), from a folder holding the paper config."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
    cmd = f"{snakemake} -s {ROOT / 'Snakefile'} -n --cores 1 " + " ".join(args)
    return subprocess.run(["bash", "-c", cmd], cwd=workdir, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


TARGETS = ["results/paper/scores/gpqa_diamond/Qwen3-32B/w16/kv-full.csv",  # config.yaml's output: results/paper
           "results/paper/scores/aime25/Qwen3-32B/w16/kv-rkv-2k.csv"]


def test_readme_override_caps_runtime_and_gpus_follow_the_backend(tmp_path):
    """The README's `--config hardware="{max_runtime_minutes: 1440}"`, typed as documented: no job
    asks for more than 1,440 minutes (Qwen3-32B bf16 on GPQA, 115 days unsharded, runs as
    shards); its vLLM jobs take the config's 2 GPUs, its transformers (R-KV) job one."""
    proc = dry_run(tmp_path, *TARGETS, '--config hardware="{max_runtime_minutes: 1440}"')
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    jobs = re.findall(r"rule (generate\w*):.*?output: (\S+).*?resources: ([^\n]+)", out, re.S)
    assert jobs
    for _, output, resources in jobs:
        runtime, gpu = int(re.search(r"runtime=(\d+)", resources)[1]), int(re.search(r"gpu=(\d+)", resources)[1])
        assert runtime <= 1440, (output, resources)
        assert gpu == (1 if "kv-rkv-2k" in output else 2), (output, resources)
    assert sum("gpqa_diamond/Qwen3-32B/w16/kv-full.shard" in o for _, o, _ in jobs) > 1


def test_gpu_rules_read_downloads_and_calibration_is_a_local_file(tmp_path):
    """A hub checkpoint is fetched by a local rule before the GPU jobs that read it; the GPTQ
    calibration corpus is fetched as a file the quantize job reads."""
    proc = dry_run(tmp_path, "results/paper/scores/aime25/Qwen3-8B/w4/kv-full.csv")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert re.search(r"rule download_checkpoint:\s+output: results/downloads/models/Qwen3-8B.json", out)
    assert re.search(r"rule download_calibration:\s+output: results/downloads/calibration/wikitext2.jsonl", out)
    quantize = re.search(r"rule quantize:\s+input: ([^\n]+)", out)[1]
    assert "results/downloads/models/Qwen3-8B.json" in quantize and "wikitext2.jsonl" in quantize
    assert "--calibration-file results/downloads/calibration/wikitext2.jsonl" in shell_of(tmp_path, "quantize")


def shell_of(workdir, rule):
    proc = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-n", "-p", "--cores", "1", "--allowed-rules",
                           rule, "download_checkpoint", "download_calibration", "prepare_data", "--",
                           "results/models/Qwen3-8B/w4"], cwd=workdir, capture_output=True, text=True, timeout=600)
    return proc.stdout


# ---------------------------------------------------------------- the shell around each job
PROBE = """
import json, os, sys
import notallbits
if sys.argv[1:] == ["online"]:
    from notallbits.hfcache import online
    online()
print(json.dumps({**{k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME")},
                  "package": notallbits.__file__}))
"""


def run_prefixed(tmp_path, *args, hub_cache=None, **env):
    """A probe run as a job runs, after the workflow's prefix, without PYTHONPATH, from /."""
    from notallbits.cluster import job_shell_prefix

    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    proc = subprocess.run(["bash", "-c", job_shell_prefix(str(ROOT), hub_cache) + f"{sys.executable} {probe} "
                           + " ".join(args)], capture_output=True, text=True, env={**base, **env}, cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_jobs_import_the_package_and_run_offline_without_pythonpath(tmp_path):
    """What every job runs first: with PYTHONPATH gone (as Snakemake removes it in conda envs)
    and from another directory, the package imports from the workflow's folder, the hub is
    offline, and hub.cache is HF_HOME; the steps that fetch get the user's own setting back."""
    got = run_prefixed(tmp_path, hub_cache=str(tmp_path / "hf"))
    assert got == {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
                   "package": str(ROOT / "notallbits" / "__init__.py")}
    assert run_prefixed(tmp_path, "online")["HF_HUB_OFFLINE"] is None
    assert run_prefixed(tmp_path, "online", HF_HUB_OFFLINE="1")["HF_HUB_OFFLINE"] == "1"


# ---------------------------------------------------------------- the hub cache
def put_in_hub_cache(model_dir, hf_home, repo, commit="0123456789abcdef0123456789abcdef01234567"):
    """A checkpoint folder laid out as huggingface_hub caches a download: blobs, a snapshot of
    links to them, refs/main naming the commit."""
    import hashlib

    repo_dir = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(model_dir.iterdir()):
        if f.is_file():
            blob = repo_dir / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
            shutil.copy(f, blob)
            (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def test_cache_check_reads_the_layout_huggingface_hub_reads(tiny_model, tmp_path):
    """Our stdlib reading of the cache agrees with huggingface_hub's own offline lookup, and a
    snapshot that lost a weight file is reported, naming the file."""
    from huggingface_hub import snapshot_download

    from notallbits.hfcache import model_cache_problem

    env = {"HF_HOME": str(tmp_path / "hf")}
    repo = "tiny-org/tiny-qwen3"
    assert "is not in the hub cache" in model_cache_problem(repo, environ=env)
    snapshot = put_in_hub_cache(tiny_model, tmp_path / "hf", repo)
    assert model_cache_problem(repo, environ=env) is None
    found = snapshot_download(repo, local_files_only=True, cache_dir=str(tmp_path / "hf" / "hub"))
    assert os.path.realpath(found) == os.path.realpath(snapshot)
    os.unlink(snapshot / "model.safetensors")
    assert "lacks model.safetensors" in model_cache_problem(repo, environ=env)


def offline_config(tmp_path, source):
    cfg = {"models": {"tiny": {"source": source}},
           "datasets": {"demo-arith": {"loader": "demo_arith", "limit": 3}},
           "generation": {"answer_max_tokens": 4, "batch_size": 8, "device": "cpu"},
           "sweeps": [{"datasets": ["demo-arith"], "models": ["tiny"], "bits": [16], "kv": ["full"],
                       "budgets": [16, 32], "samples": 2, "k": [1, 2]}]}
    path = tmp_path / "offline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_workflow_runs_from_the_hub_cache_with_the_hub_offline(tiny_model, tmp_path):
    """A model given by hub id, on a machine whose hub is offline: with an empty cache, or a
    cached snapshot without its weights, the run stops before any job with one line naming the
    model and how to fetch it; with the model in the cache (hub.cache), the download rule
    records its snapshot and generation reads it."""
    cfg = offline_config(tmp_path, "tiny-org/tiny-qwen3")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", PATH=os.path.dirname(sys.executable) + os.pathsep + env["PATH"])
    hf = tmp_path / "hf"
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path / "w"), "--configfile", str(cfg),
           "--cores", "2", "--config", f"hub={{cache: {hf}}}", "--", "results/offline/summary.csv"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    # the config check, which sizes a hub model from its cached config.json, is the first to see it
    assert len(errors) == 1 and "tiny-org/tiny-qwen3" in errors[0] and "hf download tiny-org/tiny-qwen3" in errors[0], \
        proc.stderr[-2000:]
    assert "localrule" not in proc.stdout + proc.stderr  # nothing ran
    snapshot = put_in_hub_cache(tiny_model, hf, "tiny-org/tiny-qwen3")
    (snapshot / "model.safetensors").rename(tmp_path / "weights")  # a download cut short: config, no weights
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and errors == [
        "error: models.tiny: tiny-org/tiny-qwen3: the cached snapshot lacks model.safetensors; fetch it where the "
        "network is: snakemake download (same config), or hf download tiny-org/tiny-qwen3"], proc.stderr[-2000:]
    (tmp_path / "weights").rename(snapshot / "model.safetensors")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "w/results/downloads/models/tiny.json").read_text())
    assert manifest["repo"] == "tiny-org/tiny-qwen3" and manifest["snapshot"] == str(snapshot)
    assert (tmp_path / "w/results/offline/summary.csv").exists()


@pytest.mark.slow
def test_sdm_conda_from_another_directory(tmp_path):
    """`--sdm conda`, run from elsewhere (--directory), with envs that do not install this
    package: Snakemake creates the envs through tests/conda_shim (conda's commands, an env per
    file), activates them and removes PYTHONPATH from every job; shell rules (build_tiny_model,
    prepare_data, generate) and script rules (score, aggregate) still import the package."""
    cfg = tmp_path / "sdm.yaml"
    cfg.write_text(yaml.safe_dump({
        "models": {"tiny-qwen3": {"source": "results/models/tiny-qwen3/w16", "build": "tiny"}},
        "datasets": {"demo-arith": {"loader": "demo_arith", "limit": 3}},
        "generation": {"answer_max_tokens": 4, "batch_size": 8},
        "sweeps": [{"datasets": ["demo-arith"], "models": ["tiny-qwen3"], "bits": [16], "kv": ["full"],
                    "budgets": [16, 32], "samples": 2, "k": [1, 2]}]}))
    env = {**os.environ, "CONDA_SHIM_PYTHON": sys.executable,
           "PATH": f"{SHIM}{os.pathsep}{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path / "w"),
                           "--configfile", str(cfg), "--sdm", "conda", "--cores", "2", "results/sdm/summary.csv"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    envs = sorted((tmp_path / "w" / ".snakemake" / "conda").glob("*_/bin/python"))
    assert len(envs) == 2  # analysis and generate-transformers
    for python in envs:  # the envs really lack the package: only the job's own PYTHONPATH finds it
        probe = subprocess.run([str(python), "-c", "import notallbits"], capture_output=True, text=True,
                               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd=tmp_path)
        assert "No module named 'notallbits'" in probe.stderr
    assert (tmp_path / "w" / "results" / "sdm" / "summary.csv").exists()


# ---------------------------------------------------------------- a job's host memory
def test_job_memory_sums_every_process_of_the_job():
    """Three child processes holding 200 MiB each: the peak summed over the job's processes is
    at least 600 MiB and counts 4 processes, while the largest single process holds ~200 MiB
    (what a tool that reports one process sees)."""
    from notallbits.bench.job_memory import measure

    child = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"
    parent = (f"import subprocess, sys; ps = [subprocess.Popen([sys.executable, '-c', {child!r}]) for _ in range(3)]; "
              "[p.wait() for p in ps]")
    got = measure([sys.executable, "-c", parent], interval=0.1)
    assert got["returncode"] == 0 and got["peak_processes"] == 4
    assert got["peak_rss_gib_all_processes"] * 1024 >= 600
    assert 200 <= got["peak_rss_gib_largest_process"] * 1024 < 400
