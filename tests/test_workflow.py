"""The demo workflow end to end through snakemake: outputs, no-op rerun, add-one-budget
incremental run, and one-line failures on bad input."""

import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from notallbits.figures import FIGURES
from notallbits.io import read_framed_jsonl
from tests.conftest import DEMO, ROOT, run_snakemake

pytestmark = pytest.mark.slow
OUT = "results/tiny"  # configs/tiny.yaml's own results (output folder named after the config file)
# the figures each dataset's cells have the axes for, listed by hand from configs/tiny.yaml
ALWAYS = {"accuracy_vs_memory", "pareto_choices", "parallel_scaling", "latency_vs_accuracy", "throughput_vs_accuracy"}
DRAWN = {"demo-arith": ALWAYS | {"kv_methods", "kv_weight_bits", "selection_vs_memory", "weight_methods"},
         "demo-choice": ALWAYS, "demo-code": ALWAYS}


def test_demo_outputs(demo_run):
    summary = pd.read_csv(demo_run / OUT / "summary.csv")
    # main sweep: datasets x bits x budgets x K; KV sweep: 5 methods x budgets x K at 16 bits and
    # 2 methods x budgets x K at 4 bits; code: budgets x K; PRM Best-of-N: bits x budgets x N;
    # weight methods: AWQ-4 and FP8 x budgets x K
    assert len(summary) == 2 * 3 * 3 * 3 + 5 * 3 * 3 + 2 * 3 * 3 + 2 * 2 + 2 * 3 * 3 + 2 * 3 * 3
    # every weight format ran, and its measured checkpoint bytes are the memory model's (weights.py layouts)
    from notallbits.memory import Arch, format_weight_bytes

    quantization = yaml.safe_load(DEMO.read_text())["quantization"]
    arch = Arch.named(str(demo_run / "results/models/tiny-qwen3/w16"))
    measured = summary[summary["dataset"] == "demo-arith"].groupby(["weight_method", "bits"])["weight_bytes"].unique()
    assert {k: list(v) for k, v in measured.items()} == {
        (m, b): [format_weight_bytes(arch, name, quantization)]
        for name, m, b in (("gptq-4", "gptq", 4), ("gptq-8", "gptq", 8), ("bf16", "bf16", 16), ("awq-4", "awq", 4),
                           ("fp8", "fp8", 8))}
    assert set(summary[summary["bits"] == 4]["kv"]) == {"full", "rkv-48", "hqq-4bit"}
    assert {"accuracy", "weight_bytes", "kv_bytes", "total_gib", "job_generated_tokens",
            "job_wall_seconds"} <= set(summary.columns)
    # KV bytes = K x tokens held x (2 x layers x KV heads x head_dim x 2 bytes) = K x tokens x 512 here
    full = summary[summary["kv"] == "full"]
    assert (full["kv_bytes"] == full["k"] * full["budget_tokens"] * 512).all()
    evict = summary[summary["kv"] == "streaming-48"]
    assert (evict["kv_bytes"] == evict["k"] * evict["budget_tokens"].clip(upper=48) * 512).all()
    rkv = summary[summary["kv"] == "rkv-48"]
    held = rkv["budget_tokens"].clip(upper=48 + 16)  # the peak: budget + buffer
    # plus, once it compresses (T > budget), the scoring scratch of the K samples together: a (sample,
    # KV head) pair needs 4 B x (head_dim + 4 x window + 8) per token + 12 B per token per similarity
    # row (one row here: that alone passes a token's K + V of the layer), and as many pairs are scored at
    # once as fit in the samples' K + V of one layer (2 x K x KV heads x tokens x head_dim x 2 B), one at least
    from notallbits.kvcache.settings import normalize

    window = normalize({"method": "rkv", "budget": 48, "buffer": 16})["window"]
    pair = 4 * (arch.head_dim + 4 * window + 8) + 12
    assert 4 * (arch.head_dim + 4 * window + 8) >= 2 * arch.kv_heads * arch.head_dim * 2
    pairs = (4 * rkv["k"] * arch.kv_heads * arch.head_dim // pair).clip(lower=1)
    assert (rkv["kv_bytes"] == rkv["k"] * held * 512 + (rkv["budget_tokens"] > 48) * pairs * held * pair).all()
    hqq = summary[summary["kv"].str.startswith("hqq") & (summary["bits"] == 16)].groupby("kv")["kv_bytes"].sum()
    assert hqq["hqq-2bit"] < hqq["hqq-4bit"] < hqq["hqq-8bit"] < full[full["bits"] == 16]["kv_bytes"].sum()
    w = summary.groupby("bits")["weight_bytes"].first()
    assert w[4] < w[8] < w[16]
    for dataset, drawn in DRAWN.items():
        for fig in FIGURES:  # only the figures whose axes the dataset's cells have
            path = demo_run / OUT / "figures" / f"{fig}_{dataset}.png"
            assert (path.exists() and path.stat().st_size > 10_000) == (fig in drawn), (fig, dataset)
    assert (demo_run / OUT / "figures/table1.png").exists()  # a Qwen3 model: the paper's Qwen3 table
    assert (demo_run / OUT / "analysis/thresholds.csv").exists()
    header, records = read_framed_jsonl(demo_run / "results/generations/demo-arith/tiny-qwen3/w4/kv-full.jsonl")
    assert header["budgets"] == [32, 64, 128] and len(records) == 6 * 4 * 3
    assert list((demo_run / "results/benchmarks/generate").rglob("*.tsv"))
    # every output lives under results/: nothing a library drops into the working directory; the
    # config's own results in its output folder, beside the shared steps' folders
    assert sorted(p.name for p in demo_run.iterdir() if not p.name.startswith(".")) == ["results"]
    assert sorted(p.name for p in (demo_run / OUT).iterdir()) == [
        "analysis", "claims.csv", "figures", "logs", "questions.parquet", "report.md", "run_info.json", "scores",
        "summary.csv", "summary.parquet"]
    assert '"process": "gptq"' in (demo_run / "results/logs/quantize/tiny-qwen3/w4.log").read_text()  # its loss log


def test_demo_prm_best_of_n(demo_run):
    """The verify step ran the tiny PRM over every stored sample of the demo-prm jobs; scoring
    added Best-of-N rows beside Maj@K whose memory counts the verifier's measured bytes."""
    from notallbits.memory import checkpoint_bytes

    summary = pd.read_csv(demo_run / OUT / "summary.csv", keep_default_na=False)
    prm = summary[summary["selection"] == "prm_best_of_n"]
    assert set(prm["verifier"]) == {"tiny-prm"} and set(prm["bits"]) == {4, 16} and set(prm["dataset"]) == {"demo-arith"}
    assert set(summary[summary["selection"] == "majority"]["verifier"]) == {""}
    prm_bytes = checkpoint_bytes(demo_run / "results/verifiers/tiny-prm")
    assert (prm["verifier_bytes"] == prm_bytes).all() and (summary[summary["selection"] == "majority"]["verifier_bytes"] == 0).all()
    assert (prm["verifier_gib"] * 2**30 / prm_bytes).round(4).eq(1).all()  # the CSV keeps 6 digits
    assert ((prm["weight_gib"] + prm["kv_gib"] + prm["verifier_gib"]) / prm["total_gib"]).round(4).eq(1).all()
    cell = ["dataset", "model", "weight_method", "bits", "kv", "budget_tokens", "k"]
    majority = summary[summary["selection"] == "majority"].set_index(cell)
    for r in prm.itertuples():  # same cell, more memory by the verifier
        m = majority.loc[tuple(getattr(r, c) for c in cell)]
        assert r.total_gib > m["total_gib"] and r.weight_bytes == m["weight_bytes"]
        assert r.latency_seconds == pytest.approx(m["latency_seconds"] + r.verifier_seconds, rel=1e-4)
        assert r.verifier_seconds > 0  # the PRM's time for the K samples it reads
    for bits in (4, 16):
        header, rows = read_framed_jsonl(demo_run / f"results/verify/demo-arith/tiny-qwen3/w{bits}/kv-full/tiny-prm.jsonl")
        assert header["verifier_bytes"] == prm_bytes and header["max_tokens"] == 192 and len(rows) == 6 * 4 * 3
        assert header["seconds"] > 0
        assert all(len(r["step_rewards"]) >= 1 and 0 <= r["score"] <= 1 and r["input_tokens"] <= 192 for r in rows)
        assert any(r["steps_dropped"] > 0 for r in rows)  # 128-token traces overflow the 192-token context
    selection = pd.read_csv(demo_run / OUT / "analysis/selection.csv")
    assert set(selection["selection_rule"]) >= {"majority", "prm_best_of_n:tiny-prm"}
    assert (demo_run / OUT / "figures/selection_vs_memory_demo-arith.png").stat().st_size > 10_000


def test_report_and_advisor(demo_run):
    run_snakemake(demo_run, DEMO, "--report", str(demo_run / "report.html"))
    html = (demo_run / "report.html").read_text(errors="replace")
    assert "accuracy_vs_memory_demo-arith.png" in html and "summary.csv" in html
    proc = subprocess.run([sys.executable, "-m", "notallbits", "advise", "--memory", "1GiB", "--dataset",
                           "demo-arith", "--summary", str(demo_run / OUT / "summary.csv")],
                          capture_output=True, text=True, check=True)
    assert "best:" in proc.stdout and "tiny-qwen3" in proc.stdout


def test_second_run_is_a_noop(demo_run):
    proc = run_snakemake(demo_run, DEMO, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_results_carry_intervals_provenance_claims_and_run_info(demo_run):
    """Each row's accuracy lies in its 95% interval and has a standard error over its questions; each
    row names its job's sampling settings and device; run_info.json records the validated config and
    its hash; the claims table has a row per claim (and dataset), each with a verdict."""
    import json

    from notallbits import grid
    from notallbits.claims import CLAIMS
    from notallbits.provenance import config_sha256

    summary = pd.read_csv(demo_run / OUT / "summary.csv", keep_default_na=False)
    assert ((summary["accuracy_ci95_low"] <= summary["accuracy"] + 1e-9)
            & (summary["accuracy"] <= summary["accuracy_ci95_high"] + 1e-9)).all()
    assert (summary["accuracy_se"] >= 0).all() and (summary["accuracy_ci95_high"] > summary["accuracy_ci95_low"]).all()
    questions = pd.read_parquet(demo_run / OUT / "questions.parquet")
    assert len(questions) == (summary["questions"]).sum()  # one score per question of every row
    config = grid.validate(yaml.safe_load(DEMO.read_text()))
    assert set(summary["temperature"]) == {0.6} and set(summary["seed"]) == {0} and set(summary["device"]) == {"cpu"}
    assert set(summary["config_sha256"]) == {config_sha256(config)}
    assert summary["job_libraries"].str.contains("torch=").all()
    info = json.loads((demo_run / OUT / "run_info.json").read_text())
    assert info["config_sha256"] == config_sha256(config) and info["config"] == config
    assert info["seeds"]["sampling"] == 0 and len(info["commit"]) >= 7
    assert {j["step"] for j in info["jobs"]} == {"generate", "verify"} and all(j["device"] == "cpu" for j in info["jobs"])
    claims = pd.read_csv(demo_run / OUT / "claims.csv", keep_default_na=False)
    assert set(claims["claim"]) == {c for c, _, _ in CLAIMS}
    assert set(claims["verdict"]) <= {"supported", "contradicted", "inconclusive", "cannot say"}
    # one tiny model: no threshold between model sizes, nor Maj@K paying for the larger ones only
    assert (claims[claims["claim"].str.startswith("Maj@K")]["verdict"] == "cannot say").all()
    boot = pd.read_csv(demo_run / OUT / "analysis/frontier_bootstrap.csv")
    assert boot["frontier_share"].between(0, 1).all() and (boot[boot["on_frontier"]]["frontier_share"] > 0).all()
    report = (demo_run / OUT / "report.md").read_text()
    assert "## Best configuration per dataset" in report and "## The paper's claims on this run" in report


def test_why_rerun_names_the_changed_keys(demo_run, tmp_path):
    """Adding a budget to the demo sweep: `notallbits why-rerun` reads Snakemake's records and says
    what changed in the generation jobs' params, as keys, not as two params blobs."""
    config = yaml.safe_load(DEMO.read_text())
    for sweep in config["sweeps"]:
        if sweep["name"] == "demo":
            sweep["budgets"] = [32, 48, 64, 128]
    cfg = tmp_path / "tiny.yaml"  # same name, same output folder
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "notallbits", "why-rerun", str(cfg), "--directory", str(demo_run),
                           "--snakefile", str(ROOT / "Snakefile"), "--rule", "generate"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.match(r"generate \(6 jobs\): results/generations/demo-\w+/tiny-qwen3/w\d+/kv-full\.jsonl", lines[0]), lines
    assert lines[1:] == ["    budgets: [32, 64, 128] → [32, 48, 64, 128]"], proc.stdout
    unchanged = subprocess.run([sys.executable, "-m", "notallbits", "why-rerun", str(DEMO), "--directory", str(demo_run),
                                "--snakefile", str(ROOT / "Snakefile")], capture_output=True, text=True)
    assert unchanged.stdout.strip() == "no recorded job would rerun for changed params, inputs or code", unchanged


def test_a_second_config_keeps_its_own_results(demo_run, tmp_path):
    """A second config on the same working directory: its own output folder (named after it), the
    shared generations reused (no generation job), the first config's summary untouched, figures only
    for its axes (K = 1 only: no per-K frontiers), and its results table printed at the end."""
    before = (demo_run / OUT / "summary.csv").read_bytes()
    config = yaml.safe_load(DEMO.read_text())
    config["sweeps"] = [{**config["sweeps"][0], "datasets": ["demo-choice"], "bits": [16], "k": [1]}]
    cfg = tmp_path / "choice-only.yaml"
    cfg.write_text(yaml.safe_dump(config))
    plan = run_snakemake(demo_run, cfg, "--dry-run", "--quiet", "rules").stdout
    assert not re.search(r"^generate\s", plan, flags=re.M) and re.search(r"^score\s+1\b", plan, flags=re.M), plan
    proc = run_snakemake(demo_run, cfg)
    out = demo_run / "results/choice-only"
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["dataset"]) == {"demo-choice"} and set(summary["k"]) == {1} and len(summary) == 3
    assert (demo_run / OUT / "summary.csv").read_bytes() == before
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        [f"{f}_demo-choice.png" for f in ALWAYS - {"parallel_scaling"}] + ["table1.csv", "table1.png"])
    assert "# Results: results/choice-only" in proc.stdout and "## Best configuration per dataset" in proc.stdout


def test_calibration_change_reruns_quantize_and_what_follows(demo_run, tmp_path):
    # runs before the tests below that change demo_run's budgets or files (it plans against the pristine run)
    config = yaml.safe_load(DEMO.read_text())
    config["quantization"]["calibration"]["seed"] = 1
    cfg = tmp_path / "calibration_seed.yaml"
    cfg.write_text(yaml.safe_dump(config))
    plan = run_snakemake(demo_run, cfg, "--dry-run", "--quiet", "rules").stdout
    # GPTQ 4/8 and AWQ calibrate; FP8 (absmax per block) reads no calibration data and stays
    assert re.search(r"calibration_traces\s+1", plan) and re.search(r"quantize\s+3", plan), plan
    from notallbits import grid

    quantized_jobs = sum(1 for job in grid.jobs(grid.validate(config)) if job.weights.calibrated)
    assert re.search(rf"generate\s+{quantized_jobs}\b", plan), plan  # GPTQ/AWQ jobs, not the bf16 or FP8 ones
    assert "build_tiny_model" not in plan and "prepare_data" not in plan


def test_editing_code_reruns_no_model_or_generation_job(demo_run, tmp_path):
    """A GPU hour is precious: editing any script reruns cheap steps at most.
    Snakemake reruns a `script:` rule whose script is newer than its outputs; every rule upstream
    of generation therefore has a stable `shell:` entry."""
    copy = tmp_path / "workflow"
    copy.mkdir()
    for name in ("Snakefile", "config.yaml", "rules", "scripts", "envs", "report"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, copy / name)
    for f in (copy / "scripts").iterdir():
        f.write_text(f.read_text() + "# an edited comment\n")
    proc = run_snakemake(demo_run, DEMO, "--dry-run", "--quiet", "rules", snakefile=copy / "Snakefile")
    plan = proc.stdout + proc.stderr
    assert "score" in plan  # the edited scripts do rerun their own (cheap) steps
    for rule in ("generate", "quantize", "prepare_data", "build_tiny_model"):
        assert not re.search(rf"^{rule}\s", plan, flags=re.M), plan


def test_configfile_replaces_the_paper_grid(tmp_path):
    # as `make demo` runs it: from the repository root, where the paper's config.yaml lies
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    plan = run_snakemake(tmp_path, DEMO, "--dry-run", "--printshellcmds").stdout
    assert '"backend": "transformers"' in plan
    assert '"backend": "vllm"' not in plan and "Qwen/" not in plan


def test_truncated_generation_fails_in_one_line(demo_run):
    gen = demo_run / "results/generations/demo-choice/tiny-qwen3/w16/kv-full.jsonl"
    lines = gen.read_text().splitlines()
    gen.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    proc = run_snakemake(demo_run, DEMO, check=False)
    assert proc.returncode != 0
    assert re.search(r"error: .*kv-full.jsonl: truncated \(no footer line", proc.stdout + proc.stderr)
    assert not (demo_run / OUT / "scores/demo-choice/tiny-qwen3/w16/kv-full.csv").exists()


def test_adding_a_budget_reuses_traces(demo_run, tmp_path):
    config = yaml.safe_load(DEMO.read_text())
    for sweep in config["sweeps"]:
        sweep["budgets"] = [32, 48, 64, 128]
    cfg = tmp_path / "demo_plus.yaml"
    cfg.write_text(yaml.safe_dump(config))
    plan = run_snakemake(demo_run, cfg, "--dry-run", "--quiet", "rules").stdout
    assert "quantize" not in plan and "build_tiny_model" not in plan and "prepare_data" not in plan
    assert re.search(r"generate\s+16\b", plan), plan  # 6 full-cache + 5 KV-method + 2 KV-on-4-bit + 1 code + 2 AWQ/FP8 jobs
    run_snakemake(demo_run, cfg)
    for gen in (demo_run / "results/generations").rglob("*.jsonl"):
        header, records = read_framed_jsonl(gen)
        assert header["stats"]["generated_samples"] == 0 and header["stats"]["invocation"]["trace_tokens"] == 0, gen
        assert {r["budget_tokens"] for r in records} == {32, 48, 64, 128}
    # its results are the edited config's own (named after its file); the generations are shared
    summary = pd.read_csv(demo_run / "results/demo_plus/summary.csv")
    assert sorted(summary["budget_tokens"].unique()) == [32, 48, 64, 128]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(colour="red"), "error: config: unknown key 'colour'"),
    (lambda c: c["sweeps"][0].update(bits=[3]), "error: config: sweeps[0].bits[0]: 3 is not one of [4, 8, 16, 'gptq-4', 'gptq-8', 'bf16', 'awq-4', 'fp8']"),
    (lambda c: c["sweeps"][0].update(budgets=[-5]), "error: config: sweeps[0].budgets[0]: -5 is less than the minimum of 1"),
    (lambda c: c["sweeps"][0].update(k=[8]), "error: config: sweeps[0].k: K=8 exceeds samples=4"),
    (lambda c: c["models"].update(other={"source": "./nowhere/model"}),
     "error: config: models.other.source: model path './nowhere/model' does not exist"),
])
def test_bad_config_fails_before_anything_runs(tmp_path, edit, message):
    config = yaml.safe_load(DEMO.read_text())
    edit(config)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = run_snakemake(tmp_path / "work", cfg, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert not (tmp_path / "work" / "results").exists()


def test_missing_dataset_field_fails_in_one_line(tmp_path):
    data = tmp_path / "questions.jsonl"
    data.write_text('{"id": "q1", "task": "math", "question": "What is 1 + 1?"}\n')
    config = yaml.safe_load(DEMO.read_text())
    config["datasets"] = {"mine": {"loader": "jsonl", "path": str(data)}}
    config["sweeps"] = [{**config["sweeps"][0], "datasets": ["mine"]}]
    config["quantization"]["calibration"] = {"source": "wikitext2"}  # its traces set is gone with the datasets
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = run_snakemake(tmp_path / "work", cfg, "results/data/mine.jsonl", check=False)
    assert proc.returncode != 0
    # checked with the config, before any job (issue 13): one line naming the key and the file
    assert proc.stderr.strip().splitlines() == [
        f"error: config: datasets.mine.path: {data} record 1: missing field 'answer'"]
    assert not (tmp_path / "work/results").exists()
