import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Calibration text for the test checkpoints (GPTQ/AWQ): fixed, so a documentation edit changes no test model.
CALIBRATION_CORPUS = ROOT / "tests" / "data" / "calibration_corpus.txt"
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
    """The tiny model GPTQ-quantized to 4 and 8 bits by the project's quantizer (~30 s each),
    calibrated on 16 random 128-token windows of a local text file (``CALIBRATION_CORPUS``: fixed English
    text, so the checkpoints do not change when the documentation does)."""
    from notallbits.quantization import quantize

    root = tmp_path_factory.mktemp("gptq")
    corpus = root / "corpus.txt"
    corpus.write_text(CALIBRATION_CORPUS.read_text())
    out = {}
    for bits in (4, 8):
        quantize(str(tiny_model), str(root / f"w{bits}"), bits,
                 calibration={"source": str(corpus), "samples": 16, "seq_len": 128, "seed": 0})
        out[bits] = root / f"w{bits}"
    return out


@pytest.fixture(scope="session")
def awq_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model AWQ-quantized (4-bit, group 128, GEMM layout) by the project's quantizer
    (~15 s), calibrated like ``gptq_models``."""
    from notallbits.quantization import quantize

    root = tmp_path_factory.mktemp("awq")
    corpus = root / "corpus.txt"
    corpus.write_text(CALIBRATION_CORPUS.read_text())
    quantize(str(tiny_model), str(root / "wawq4"), "awq4",
             calibration={"source": str(corpus), "samples": 16, "seq_len": 128, "seed": 0})
    return root / "wawq4"


@pytest.fixture(scope="session")
def fp8_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model in FP8 with 64 x 64 block scales (its k/v projections have 64 outputs),
    by the project's quantizer (no calibration; under a second)."""
    from notallbits.quantization import quantize

    out = tmp_path_factory.mktemp("fp8") / "wfp8"
    quantize(str(tiny_model), str(out), "fp8", {"fp8_block": 64})
    return out


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The smoke config's workflow, run once (transformers backend)."""
    workdir = tmp_path_factory.mktemp("demo")
    run_snakemake(workdir, DEMO)
    return workdir


POSITIONS = 64


@pytest.fixture(scope="session")
def position_model(tmp_path_factory):
    """A hand-built model whose greedy next token names the position it is read at.

    One GPT-2 block with its attention and MLP outputs zeroed, so the last hidden state is
    ``wte[token] + wpe[position]``; token embeddings are zero and ``wpe[p]`` is the unit vector
    ``e[p % 64]``; ``lm_head`` maps ``e[j]`` to ``TOKENS[j]``, 64 ordinary tokens that decode to
    distinct printable strings. So after any context whose last token sits at position p the
    greedy answer is TOKENS[p % 64], TOKENS[(p + 1) % 64], ...: an answer forced after
    ``prompt + thinking[:T] + </think> + prefix`` spells out where it was forced, and one taken
    from the cache at the end of the trace names the wrong place.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from notallbits.tinymodel import build_tokenizer

    tok = build_tokenizer()
    special, seen, tokens = set(tok.all_special_ids), set(), []
    for i in range(len(tok)):
        text = tok.decode([i])
        if i not in special and text.isascii() and text.isprintable() and text.strip() and text not in seen:
            tokens.append(i)
            seen.add(text)
    tokens = tokens[:POSITIONS]
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=POSITIONS, n_layer=1, n_head=1,
                     tie_word_embeddings=False, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for norm in (model.transformer.ln_f, model.transformer.h[0].ln_1, model.transformer.h[0].ln_2):
            norm.weight.fill_(1.0)
        for p in range(cfg.n_positions):
            model.transformer.wpe.weight[p, p % POSITIONS] = 1.0
        for j, t in enumerate(tokens):
            model.lm_head.weight[t, j] = 50.0
    folder = tmp_path_factory.mktemp("models") / "position-gpt2"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    # the summary's model facts read Qwen-style config keys
    cfg_path = folder / "config.json"
    raw = json.loads(cfg_path.read_text())
    raw.update(num_hidden_layers=1, num_attention_heads=1, hidden_size=POSITIONS, intermediate_size=4 * POSITIONS)
    cfg_path.write_text(json.dumps(raw))
    return folder, tokens


def vllm_python() -> str | None:
    """The interpreter of the vLLM environment (its pins clash with the quantizer's)."""
    candidates = [os.environ.get("NOTALLBITS_VLLM_PYTHON"), str(ROOT / ".venv-vllm" / "bin" / "python")]
    return next((c for c in candidates if c and os.path.exists(c)), None)
