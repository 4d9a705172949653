import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "tiny.yaml"  # the fastest end-to-end fixture: a random tiny Qwen3
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The deterministic tiny Qwen3 (random weights), built once per test session."""
    from notallbits.tinymodel import build

    return build(tmp_path_factory.mktemp("models") / "tiny-qwen3")


def snakemake_cmd(workdir: Path, configfile: Path, *extra: str, snakemake: str | None = None,
                  snakefile: Path = ROOT / "Snakefile") -> list[str]:
    exe = snakemake or shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    return [exe, "-s", str(snakefile), "--directory", str(workdir), "--configfile", str(configfile),
            "--cores", "2", *extra]


def run_snakemake(workdir: Path, configfile: Path, *extra: str, check: bool = True,
                  snakemake: str | None = None, snakefile: Path = ROOT / "Snakefile") -> subprocess.CompletedProcess:
    # as in an activated environment: the rules' default interpreter `python` is this one
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run(snakemake_cmd(workdir, configfile, *extra, snakemake=snakemake, snakefile=snakefile),
                          capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def gptq_models(tiny_model, tmp_path_factory) -> dict[int, Path]:
    """The tiny model GPTQ-quantized to 4 and 8 bits by the project's quantizer (~30 s each)."""
    from notallbits.quantization import DEFAULT_CALIBRATION, quantize

    root = tmp_path_factory.mktemp("gptq")
    out = {}
    for bits in (4, 8):
        quantize(str(tiny_model), str(root / f"w{bits}"), bits, texts=DEFAULT_CALIBRATION * 4)
        out[bits] = root / f"w{bits}"
    return out


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The README's demo workflow, run once (transformers backend)."""
    workdir = tmp_path_factory.mktemp("demo")
    run_snakemake(workdir, DEMO)
    return workdir


def vllm_python() -> str | None:
    """The interpreter of the vLLM environment (its pins clash with the quantizer's)."""
    candidates = [os.environ.get("NOTALLBITS_VLLM_PYTHON"), str(ROOT / ".venv-vllm" / "bin" / "python")]
    return next((c for c in candidates if c and os.path.exists(c)), None)
