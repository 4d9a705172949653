"""The demo through a real single-node SLURM (Debian slurm-wlm + munge, fake GPUs via gres):
GPU jobs are submitted with sbatch and give the same results as a local run."""

import os
import re
import sys
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from notallbits.io import read_framed_jsonl
from tests.conftest import DEMO, ROOT, run_snakemake

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "tests" / "slurm" / "local_slurm.sh"
PROFILE = ROOT / "tests" / "slurm" / "profile"


SNAKEMAKE = os.environ.get("NOTALLBITS_SLURM_SNAKEMAKE") or str(ROOT / ".venv-slurm" / "bin" / "snakemake")


def _skip_reason():
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "slurm-wlm is not installed and apt-get is unavailable"
    if not os.path.exists(SNAKEMAKE):
        return "no Snakemake with the SLURM plugin: run `make test` or set NOTALLBITS_SLURM_SNAKEMAKE"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "SLURM_DIR": str(tmp_path_factory.mktemp("slurm")), "NGPU": "2"}
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0 and "idle" in up.stdout, up.stdout + up.stderr
    yield env
    subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=60)


def small_demo(tmp_path):
    config = yaml.safe_load(DEMO.read_text())
    config["sweeps"] = [{"datasets": ["demo-arith"], "models": ["tiny-qwen3"], "bits": [16], "kv": ["full"],
                         "budgets": [32, 64], "samples": 2, "k": [1, 2]}]
    # the GPUs SLURM grants here are fake (gres): a GPU job would rightly refuse to run on CPU
    config.setdefault("generation", {})["device"] = "cpu"
    path = tmp_path / "slurm-demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_demo_through_slurm_matches_local(cluster, tmp_path):
    cfg = small_demo(tmp_path)
    # the cluster driver lives in its own env; GPU steps run this (the main) environment's Python
    main_python = sys.executable
    on_slurm = run_snakemake(tmp_path / "slurm", cfg, "--profile", str(PROFILE), "--config",
                             f"interpreters={{'quantize': '{main_python}', 'generate_transformers': '{main_python}'}}",
                             snakemake=SNAKEMAKE)
    submitted = re.findall(r"submitted with SLURM jobid \d+ \(log: \S*rule_(\w+)/", on_slurm.stdout + on_slurm.stderr)
    assert sorted(submitted) == ["build_tiny_model", "generate"]  # cheap rules stay local
    run_snakemake(tmp_path / "local", cfg)
    gen = "results/generations/demo-arith/tiny-qwen3/w16/kv-full.jsonl"
    h_slurm, r_slurm = read_framed_jsonl(tmp_path / "slurm" / gen)
    # SLURM granted one (fake, gres) GPU and set CUDA_VISIBLE_DEVICES; the job records it
    assert h_slurm["environment"]["cuda_visible_devices"] not in (None, "")
    h_local, r_local = read_framed_jsonl(tmp_path / "local" / gen)
    assert r_slurm == r_local  # seeded generation: identical records
    cols = ["dataset", "model", "bits", "kv", "budget_tokens", "k", "accuracy", "weight_bytes", "kv_bytes"]
    s = pd.read_csv(tmp_path / "slurm/results/slurm-demo/summary.csv")[cols]
    l_ = pd.read_csv(tmp_path / "local/results/slurm-demo/summary.csv")[cols]
    pd.testing.assert_frame_equal(s, l_)


def test_cluster_run_without_a_runtime_cap_stops_before_submitting(cluster, tmp_path):
    """A --default-resources on the command line replaces the profile's, its runtime cap with
    them: the run stops with one line before any job is submitted."""
    cfg = small_demo(tmp_path)
    proc = run_snakemake(tmp_path / "nocap", cfg, "--profile", str(PROFILE), "--default-resources",
                         "slurm_partition=debug", "mem_mb=500", check=False, snakemake=SNAKEMAKE)
    assert proc.returncode != 0
    assert "submitted with SLURM jobid" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "needs a runtime cap" in errors[0], proc.stderr[-2000:]


def test_slurm_profile_dry_run_asks_for_at_most_its_cap(tmp_path):
    """profiles/slurm on the paper grid: every job asks for at most the profile's 1,440 minutes
    (Qwen3-32B bf16 on GPQA: 10 shards on 2 GPUs each); the R-KV job of the same model one GPU."""
    if _skip_reason() and not os.path.exists(SNAKEMAKE):
        pytest.skip(_skip_reason())
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    proc = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--profile", str(ROOT / "profiles" / "slurm"),
                           "-n", "results/paper/scores/gpqa_diamond/Qwen3-32B/w16/kv-full.csv",
                           "results/paper/scores/aime25/Qwen3-32B/w16/kv-rkv-2k.csv"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = re.findall(r"rule (generate\w*):.*?output: (\S+).*?resources: ([^\n]+)", proc.stdout, re.S)
    runtimes = [int(re.search(r"runtime=(\d+)", r)[1]) for _, _, r in jobs]
    assert jobs and max(runtimes) <= 1440
    assert {int(re.search(r"gpu=(\d+)", r)[1]) for _, o, r in jobs if "kv-full" in o} == {2}
    assert {int(re.search(r"gpu=(\d+)", r)[1]) for _, o, r in jobs if "rkv" in o} == {1}
