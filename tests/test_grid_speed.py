"""The full paper grid at speed: planning it and a no-op run over it stay within seconds,
so that a GPU hour is never wasted waiting on the DAG."""

import os
import re
import time

import pytest

from tests.conftest import ROOT, run_snakemake

pytestmark = pytest.mark.slow
# produced first .. last: placeholder mtimes follow this order so nothing looks stale
# (config.yaml's own results are in its output folder, results/paper)
STAGES = ["results/data/", "results/downloads/", "results/models/", "results/generations/", "results/verify/",
          "results/paper/scores/", "results/paper/summary", "results/paper/questions", "results/paper/run_info",
          "results/paper/analysis/", "results/paper/claims", "results/paper/report", "results/paper/figures/"]


# config.yaml's generation jobs (counted in tests/test_config.py): main sweep 2 datasets x 6 models x
# 3 weight bits (full cache); KV sweep 2 x 6 x 3 weight bits x 9 KV settings; extended tasks 2 x 6 x 3.
# weight methods: 2 x 6 x AWQ-4 and FP8 (its GPTQ/bf16 cells are main's jobs).
MAIN_JOBS, KV_JOBS, EXTENDED_JOBS, WEIGHT_JOBS = 2 * 6 * 3, 2 * 6 * 3 * 9, 2 * 6 * 3, 2 * 6 * 2


def test_full_grid_dry_run_and_noop(tmp_path):
    t0 = time.perf_counter()
    run_snakemake(tmp_path, ROOT / "config.yaml", "--dry-run", "--quiet", "rules")
    dry_seconds = time.perf_counter() - t0
    plan = run_snakemake(tmp_path, ROOT / "config.yaml", "--dry-run")  # untimed: lists every output
    text = plan.stdout + plan.stderr
    jobs = MAIN_JOBS + KV_JOBS + EXTENDED_JOBS + WEIGHT_JOBS
    assert re.search(rf"generate\s+{jobs}\b", text) and re.search(rf"score\s+{jobs}\b", text)
    # GPTQ 4/8-bit, AWQ-4 and FP8 checkpoints: 6 models x 4 formats, shared by every sweep
    assert re.search(r"quantize\s+24\b", text)
    assert dry_seconds <= 5, dry_seconds
    outputs = set()
    for line in text.splitlines():
        if line.strip().startswith("output:"):
            outputs.update(p.strip() for p in line.split(":", 1)[1].split(","))
    # placeholders must be newer than every script (the `code` trigger compares mtimes) yet in the past:
    # in a fresh clone the scripts are only minutes old
    newest_code = max(p.stat().st_mtime for p in (ROOT / "scripts").rglob("*") if p.is_file())
    base = max(time.time() - 10 * len(STAGES) - 10, newest_code + 1)
    for path in sorted(outputs):
        full = tmp_path / path
        stage = next(i for i, prefix in enumerate(STAGES) if path.startswith(prefix))
        if re.search(r"results/models/[^/]+/w[^/]+$", path):
            full.mkdir(parents=True, exist_ok=True)
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text("placeholder\n")
        os.utime(full, (base + 10 * stage, base + 10 * stage))
    t0 = time.perf_counter()
    noop = run_snakemake(tmp_path, ROOT / "config.yaml")
    noop_seconds = time.perf_counter() - t0
    assert "Nothing to be done" in noop.stdout + noop.stderr
    assert noop_seconds <= 5, noop_seconds
    print(f"full grid: dry run {dry_seconds:.2f} s, no-op run {noop_seconds:.2f} s over {len(outputs)} outputs")


def test_another_family_plans_as_fast(tmp_path):
    """configs/r1-distill.yaml (DeepSeek-R1-Distill-Qwen, Qwen2 architecture) lists its grid in seconds."""
    t0 = time.perf_counter()
    plan = run_snakemake(tmp_path, ROOT / "configs" / "r1-distill.yaml", "--dry-run", "--quiet", "rules")
    seconds = time.perf_counter() - t0
    # main: 2 datasets x 4 models x 3 bits; KV: 2 x 4 x 3 x 9
    assert re.search(rf"generate\s+{2 * 4 * 3 + 2 * 4 * 3 * 9}\b", plan.stdout + plan.stderr), plan.stdout
    assert seconds <= 5, seconds
