"""The command line as a user meets it: help, names, units, JSON, pipes, version, `list`."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from notallbits import UserError, __version__
from notallbits.cli import SUBCOMMANDS, build_parser, main
from notallbits.memory import GIB, Arch, format_weight_bytes
from notallbits.units import format_bytes, parse_bytes
from notallbits.weights import FORMATS
from tests.conftest import ROOT


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "notallbits", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def _no_nan(text):
    raise ValueError(f"not JSON: {text}")


# ---------------------------------------------------------------- help and version


def test_top_level_help_is_for_users():
    out = cli("--help").stdout
    assert "imported only when called" not in out  # the module's developer notes are not the help
    for command in ("plan", "advise", "memory", "list"):
        assert re.search(rf"^    {command} ", out, re.MULTILINE), command
    assert "--version" in out and "notallbits <command> --help" in out


def _actions(name):
    parser, _ = build_parser([name])
    sub = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    return sub.choices[name], [a for a in sub.choices[name]._actions if a.dest != "help"]


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_option_has_help_and_shows_its_default(name):
    parser, actions = _actions(name)
    text = parser.format_help()
    for action in actions:
        if action.help == "==SUPPRESS==":
            continue
        assert action.help, f"{name} {action.option_strings or action.dest}: no help"
        if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
            assert f"(default: {action.default})" in " ".join(text.split()), (name, action.option_strings)


def test_version_is_the_package_s():
    proc = cli("--version")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^version = "{re.escape(__version__)}"$', pyproject, re.MULTILINE)
    assert proc.returncode == 0 and proc.stdout.startswith(f"notallbits {__version__}")


# ---------------------------------------------------------------- memory


def _memory(capsys, *args):
    assert main(["memory", "--model", "Qwen3-8B", "--budget", "30000", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_memory_k_is_the_votes_and_samples_is_refused(capsys):
    """A config's `samples` is n per question; K parallel samples are `k`, as in the config."""
    assert _memory(capsys, "--k", "16")["kv_bytes"] == 16 * 30000 * 147_456  # Qwen3-8B: 147,456 B per token
    assert main(["memory", "--model", "Qwen3-8B", "--budget", "30000", "--samples", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["notallbits memory: error: --samples is now --k: the K parallel samples (votes) whose caches "
                   "are held at once; a config's `samples` is n, the samples generated per question"]


@pytest.mark.parametrize("bits, gib", [("fp8", 8.79), ("awq-4", 5.68), ("gptq-8", 8.94), ("4", 5.68), ("16", 15.26)])
def test_memory_takes_every_weight_format_a_config_takes(capsys, bits, gib):
    """Qwen3-8B's weights per format (docs/weight-formats.md; measured = analytic in test_memory)."""
    out = _memory(capsys, "--bits", bits)
    assert round(out["weights_gib"], 2) == gib
    assert out["weight_bytes"] == format_weight_bytes(Arch.named("Qwen3-8B"), FORMATS[out["weights"]])


def test_memory_refuses_a_kv_setting_of_another_method(capsys):
    assert main(["memory", "--model", "Qwen3-8B", "--budget", "30000", "--kv-budget", "1024"]) == 2
    assert capsys.readouterr().err == ("notallbits memory: error: --kv-budget applies to --kv streamingllm or rkv, "
                                       "not --kv full\n")
    assert main(["memory", "--model", "Qwen3-8B", "--budget", "30000", "--kv", "rkv", "--kv-nbits", "2"]) == 2
    assert "--kv-nbits applies to --kv hqq, not --kv rkv" in capsys.readouterr().err
    assert _memory(capsys, "--kv", "streamingllm", "--kv-budget", "1024")["kv_bytes"] == 1024 * 147_456


def test_a_tiny_model_is_printed_in_its_own_unit(capsys):
    """toy-l: 0.43 M parameters in bf16 (docs/demo.md) = 835 KiB, which printed as 0.00 GiB."""
    assert main(["memory", "--model", str(ROOT / "models" / "toy" / "toy-l"), "--budget", "64"]) == 0
    line = capsys.readouterr().out
    assert "0.00 GiB" not in line and re.search(r"weights 8[0-9]{2} KiB \+ KV 32 KiB", line), line


def test_format_bytes_by_hand():
    assert format_bytes(5.68 * GIB) == "5.68 GiB"
    assert format_bytes(835 * 1024) == "835 KiB"
    assert format_bytes(1536 * 1024) == "1.5 MiB"
    assert format_bytes(512) == "512 B"


# ---------------------------------------------------------------- units, advise


def test_units_binary_and_decimal():
    assert parse_bytes("8GiB") == 8 * 2**30 and parse_bytes("8 GB") == 8 * 10**9
    assert parse_bytes("80GB") / 2**30 == pytest.approx(74.506, abs=1e-3)  # an "80 GB" GPU
    assert parse_bytes("512MiB") == 2**29 and parse_bytes("24") == 24 * 2**30 and parse_bytes("1.5kB") == 1500
    for bad in ("eight", "8 GiBs", "-1GB", "0"):
        with pytest.raises(UserError):
            parse_bytes(bad)
    assert "10^9" in cli("advise", "--help").stdout


@pytest.fixture
def summary_csv(tmp_path):
    """A summary as aggregate writes it: majority rows have an empty verifier cell (NaN when read)."""
    import pandas as pd

    from tests.test_analysis import row

    rows = [row("Qwen3-4B", 4, 2.0, 2000, 1, 0.3, 0.20), row("Qwen3-8B", 8, 8.9, 2000, 1, 0.3, 0.40),
            row("Qwen3-8B", 8, 8.9, 14000, 1, 1.9, 0.55)]
    for r in rows:
        r.update(selection="majority", verifier=None, verifier_gib=0.0)
    path = tmp_path / "summary.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_advise_json_is_valid_json(summary_csv):
    proc = cli("advise", "--memory", "12GiB", "--dataset", "aime25", "--json", "--summary", summary_csv)
    assert proc.returncode == 0, proc.stderr
    advice = json.loads(proc.stdout, parse_constant=_no_nan)
    assert advice["best"]["verifier"] == "" and advice["best"]["verifier_gib"] == 0.0
    assert advice["best"]["model"] == "Qwen3-8B" and advice["best"]["budget_tokens"] == 14000


def test_advise_reads_gb_as_decimal(summary_csv):
    """The 8B 8-bit 2k-token cell needs 9.2 GiB: 9.5GiB holds it, 9.5GB (8.85 GiB) only the 4B."""
    def advise(memory):
        proc = cli("advise", "--memory", memory, "--dataset", "aime25", "--json", "--summary", summary_csv)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    assert advise("9.5GB")["memory_gib"] == pytest.approx(9.5e9 / 2**30)
    assert advise("9.5GB")["best"]["model"] == "Qwen3-4B"
    assert advise("9.5GiB")["best"]["model"] == "Qwen3-8B"


# ---------------------------------------------------------------- plan, grid


def test_plan_into_head_ends_quietly():
    # --json: more than a pipe buffer (64 KiB), so the writer meets the closed pipe
    proc = subprocess.run(f"{sys.executable} -m notallbits plan config.yaml --json | head -1", shell=True, cwd=ROOT,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.strip() in ("{", "[") and proc.stderr == ""


def test_grid_defaults_to_config_yaml_like_plan():
    grid_out, plan_out = cli("grid"), cli("plan")
    assert grid_out.returncode == plan_out.returncode == 0, grid_out.stderr
    assert "7320 cells, 420 generation jobs" in grid_out.stdout.splitlines()
    assert plan_out.stdout.startswith("7320 cells in 420 generation jobs")


# ---------------------------------------------------------------- list


def test_list_names_what_the_config_schema_accepts():
    """Each registry against the schema's own enums (the schema is a separate, hand-kept list)."""
    schema = yaml.safe_load((ROOT / "notallbits" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]
    proc = cli("list", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    names = {kind: [row["name"] for row in rows] for kind, rows in listed.items()}
    assert sorted(names["loaders"]) == sorted(props["datasets"]["additionalProperties"]["properties"]["loader"]["enum"])
    assert sorted(names["families"]) == sorted(props["models"]["additionalProperties"]["properties"]["family"]["enum"])
    verifier = props["verifiers"]["additionalProperties"]["properties"]
    assert all(v["aggregations"] == verifier["aggregation"]["enum"] for v in listed["verifiers"])
    assert set(names["kv-methods"]) == {"full", "streamingllm", "rkv", "hqq"}
    assert set(names["weight-formats"]) == {"gptq-4", "gptq-8", "awq-4", "fp8", "bf16"}
    families = {row["name"]: row for row in listed["families"]}
    assert "OpenReasoning-Nemotron-7B" in families["qwen2"]["offline_facts"]
    assert "Qwen3-32B" in families["qwen3"]["offline_facts"]
    facts = {v["architecture"]: v["offline_facts"] for v in listed["verifiers"]}
    assert facts == {"Qwen2ForProcessRewardModel": ["Qwen2.5-Math-PRM-7B"], "Qwen2ForEnsemblePRM": ["ActPRM-X"]}


def test_list_one_kind_in_words():
    out = cli("list", "weight-formats").stdout
    assert out.splitlines()[0] == "weight formats (a sweep's bits):"
    assert re.search(r"^  gptq-4 \(or 4\) +gptq +4-bit +path w4 ", out, re.MULTILINE)
    assert "loaders" not in out


def test_plan_prints_small_gpu_time_in_minutes():
    """toy-l's 112,896 demo tokens at 2,500 tokens/s: 45 s, which printed as 0.0 GPU-hours."""
    out = cli("plan", "configs/demo.yaml", "--throughput", "default=2500").stdout
    assert "  toy-l: 15 jobs, 112,896 tokens, 0.8 GPU-minutes" in out.splitlines()
    assert "0.0 GPU-hours" not in out
