"""Output folders per config, run records and per-row provenance, and the rerun diff on
Snakemake's own metadata records."""

import json
import re

import pandas as pd
import pytest

from notallbits import UserError
from notallbits.provenance import config_sha256, output_dir


def test_output_folder_is_named_after_the_config_unless_set():
    assert output_dir({}, "configs/demo.yaml") == "results/demo"
    assert output_dir({}, None) == "results/config"
    assert output_dir({"output": "runs/paper-h100/"}, "configs/demo.yaml") == "runs/paper-h100"


@pytest.mark.parametrize("config, configfile, message", [
    ({"output": "results"}, "x.yaml", "config: output: 'results' holds what every config shares"),
    ({"output": "results/generations"}, "x.yaml", "config: output: 'results/generations' holds what"),
    ({}, "configs/data.yaml", "config: output (from the config file's name 'data.yaml'): 'results/data' holds"),
    ({"output": "../elsewhere"}, "x.yaml", "config: output: '../elsewhere' is not a folder below"),
])
def test_output_folder_may_not_be_a_shared_one(config, configfile, message):
    with pytest.raises(UserError, match="^" + re.escape(message)):
        output_dir(config, configfile)


def test_config_hash_ignores_order_and_sees_values():
    a = {"sampling": {"temperature": 0.6, "seed": 0}, "models": {"m": {"source": "x"}}}
    b = {"models": {"m": {"source": "x"}}, "sampling": {"seed": 0, "temperature": 0.6}}
    assert config_sha256(a) == config_sha256(b)
    assert config_sha256(a) != config_sha256({**a, "sampling": {"temperature": 0.7, "seed": 0}})


def _header(path, shard=None, device="cuda", gpu="NVIDIA H100 80GB HBM3"):
    header = {"format_version": 7, "dataset": "aime25", "model": "Qwen3-8B", "bits": 4, "weight_method": "gptq",
              "kv": "full", "sampling": {"temperature": 0.6, "top_p": 0.95, "seed": 0},
              "environment": {"device": device, "gpus": [{"index": "0", "name": gpu}], "driver": "550.54",
                              "cpu": "x", "python": "3.11.9", "libraries": {"torch": "2.6.0", "vllm": "0.8.5"}},
              "stats": {"wall_seconds": 12.5}, **({"shard": shard} if shard else {})}
    path.write_text(json.dumps({"_header": header}) + "\n" + json.dumps({"_footer": {"records": 0}}) + "\n")
    return str(path)


def test_rows_carry_the_provenance_of_their_job(tmp_path):
    from notallbits.provenance import add_row_provenance

    paths = [_header(tmp_path / "a.jsonl", [1, 2]), _header(tmp_path / "b.jsonl", [2, 2], gpu="NVIDIA A100-SXM4-80GB")]
    df = pd.DataFrame([{"dataset": "aime25", "model": "Qwen3-8B", "weight_method": "gptq", "bits": 4, "kv": "full"},
                       {"dataset": "aime25", "model": "Qwen3-8B", "weight_method": "bf16", "bits": 16, "kv": "full"}])
    out = add_row_provenance(df, paths, "abc")
    first = out.iloc[0]
    assert (first["temperature"], first["top_p"], first["seed"], first["generation_format_version"]) == (0.6, 0.95, 0, 7)
    assert first["gpus"] == "NVIDIA A100-SXM4-80GB | NVIDIA H100 80GB HBM3"  # its two shards ran on both
    assert first["job_libraries"] == "torch=2.6.0;vllm=0.8.5" and first["config_sha256"] == "abc"
    assert pd.isna(out.iloc[1]["temperature"])  # no generation file for that row: nothing invented


def test_run_info_records_commit_config_seeds_and_each_jobs_hardware(tmp_path):
    from notallbits.provenance import run_info

    config = {"sampling": {"seed": 3}, "quantization": {"calibration": {"seed": 5}}, "analysis": {"seed": 7},
              "datasets": {"gpqa": {"shuffle_seed": 1}}}
    info = run_info(config, "configs/x.yaml", "deadbeef", [_header(tmp_path / "a.jsonl")])
    assert info["commit"] == "deadbeef" and info["config"] == config and info["config_sha256"] == config_sha256(config)
    assert info["seeds"] == {"sampling": 3, "calibration": 5, "bootstrap": 7, "dataset_shuffle": {"gpqa": 1}}
    job = info["jobs"][0]
    assert (job["step"], job["device"], job["gpus"][0]["name"], job["wall_seconds"]) == (
        "generate", "cuda", "NVIDIA H100 80GB HBM3", 12.5)
    assert "pandas" in info["driver"]["versions"] and info["date_utc"].endswith("+00:00")


def test_record_paths_decode_as_snakemake_encodes_them(tmp_path):
    """Snakemake's own FilePersistence names a record; decode_record_path reads it back, also
    for a path longer than a file name (split into @-prefixed folders)."""
    from snakemake.persistence.file import FilePersistence

    from notallbits.rerun import decode_record_path

    for output in ("results/generations/aime25/Qwen3-8B/w4/kv-full.jsonl",
                   "results/" + "/".join(["deep-folder-name"] * 30) + "/x.jsonl"):
        fake = FilePersistence.__new__(FilePersistence)
        fake._max_len = None
        record = fake._record_path(str(tmp_path), output)
        assert decode_record_path(str(__import__("pathlib").Path(record).relative_to(tmp_path))) == output


def test_params_diff_names_the_changed_keys():
    from notallbits.rerun import diff_params

    spec = {"budgets": [16, 64], "samples": 4, "sampling": {"temperature": 0.6, "top_p": 0.95}, "gpus": 2}
    new = {"budgets": [32, 64], "samples": 4, "sampling": {"temperature": 0.7, "top_p": 0.95}, "shard": [1, 2]}
    recorded = sorted([repr(json.dumps(spec, sort_keys=True)), repr("python"), repr("results/progress/x")])
    current = sorted([repr(json.dumps(new, sort_keys=True)), repr("python3"), repr("results/progress/x")])
    assert diff_params(recorded, current) == [
        "budgets: [16, 64] → [32, 64]",
        "- gpus: 2",
        "sampling.temperature: 0.6 → 0.7",
        "+ shard: [1, 2]",
        'param: "python" → "python3"',
    ]
    assert diff_params(recorded, recorded) == []


def test_why_rerun_without_records_says_so(tmp_path):
    from notallbits.rerun import explain

    with pytest.raises(UserError, match=r"\.snakemake/metadata: no job records \(nothing has run here yet\)$"):
        explain(str(tmp_path), "Snakefile", ["config.yaml"])


def test_unnamed_params_pair_with_their_likeliest_successor():
    """Snakemake records params without names: a replaced hash pairs with the new hash, a path with
    the new path, each shown under the param's current name."""
    from notallbits.rerun import diff_params

    old_hash, new_hash = "a" * 64, "b" * 64
    recorded = sorted([repr(old_hash), repr("configs/x.yaml")])
    current = sorted([repr(new_hash), repr("/tmp/x.yaml")])
    names = {repr(new_hash): "config_hash", repr("/tmp/x.yaml"): "configfile"}
    assert sorted(diff_params(recorded, current, names)) == [
        f'config_hash: "{old_hash}" → "{new_hash}"', 'configfile: "configs/x.yaml" → "/tmp/x.yaml"']
