"""GPTQ quantization with GPTQModel (the maintained successor of the archived auto-gptq).

GPTQModel writes the classic GPTQ checkpoint (qweight/qzeros/scales/g_idx, symmetric,
group 128), which transformers (through optimum + gptqmodel) and vLLM both load, and
whose byte layout is the one the paper's memory formula describes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from notallbits import UserError
from notallbits.io import atomic_dir

DEFAULT_CALIBRATION = [
    "Let me think step by step. First, compute the product, then add the remaining term.",
    "We need to find the number of integers n such that the expression is a perfect square.",
    "The answer is the largest of the options, so compare each value with the others.",
]


def calibration_texts(questions_path: str | None, samples: int, prompt_style: str = "default") -> list[str]:
    """Questions of the calibration dataset rendered as prompts, repeated up to ``samples``."""
    texts = list(DEFAULT_CALIBRATION)
    if questions_path:
        from notallbits.data.prepare import read_questions
        if prompt_style == "toy":
            from notallbits.toy.task import format_question
        else:
            from notallbits.generation.prompts import format_question
        texts = [format_question(q) for q in read_questions(questions_path)]
    return [texts[i % len(texts)] for i in range(samples)]


def quantize(src: str, out: str, bits: int, group_size: int = 128, desc_act: bool = False,
             texts: list[str] | None = None, device: str = "auto") -> None:
    if bits not in (4, 8):
        raise UserError(f"GPTQ bits must be 4 or 8, got {bits} (16 means the bf16 checkpoint, no job)")
    if not (os.path.isdir(src) or "/" in src):
        raise UserError(f"model path {src!r} does not exist")
    from notallbits import manifest  # a corrupt input checkpoint: one line, not a loader traceback
    manifest.verify(src)
    # GPTQModel sizes a CPU worker pool from the machine; 2-core hosts need this set
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(1, min(os.cpu_count() or 1, 8))))
    from gptqmodel import GPTQModel, QuantizeConfig

    from notallbits.generation.hf_backend import resolve_device

    src = os.path.abspath(src) if os.path.isdir(src) else src
    out = os.path.abspath(out)
    qcfg = QuantizeConfig(bits=bits, group_size=group_size, desc_act=desc_act, sym=True)
    # GPTQModel writes its per-module loss log to ./logs/ of the working directory (the
    # workflow's, or the repository): run it in a scratch folder and pass the log to ours
    with tempfile.TemporaryDirectory(prefix="gptq-") as scratch, _working_directory(scratch):
        # GPTQModel's own choice falls back to CPU when torch cannot use the GPUs: never silently
        model = GPTQModel.load(src, qcfg, device=resolve_device(device))
        model.quantize(texts or DEFAULT_CALIBRATION, batch_size=4)
        with atomic_dir(out) as tmp:
            model.save(str(tmp))
            manifest.write(tmp)  # sizes and hashes, checked before a job loads it
        for log in sorted(Path("logs").glob("*.log")):
            sys.stderr.write(log.read_text())


@contextlib.contextmanager
def _working_directory(path: str):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="bf16 checkpoint (folder or hub id)")
    p.add_argument("--bits", type=int, required=True)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--desc-act", action="store_true")
    p.add_argument("--calibration", help="normalized dataset JSONL whose questions calibrate GPTQ")
    p.add_argument("--calibration-samples", type=int, default=128)
    p.add_argument("--prompt-style", default="default", choices=["default", "toy"])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto", help="auto (cuda when the machine has GPUs), cuda or cpu")


def gpus_needed(args: argparse.Namespace) -> int:
    """Devices the job's slot holds (cli.py): none when asked for CPU."""
    return 0 if args.device == "cpu" else 1


def run(args: argparse.Namespace) -> None:
    texts = calibration_texts(args.calibration, args.calibration_samples, args.prompt_style)
    quantize(args.model, args.out, args.bits, args.group_size, args.desc_act, texts, args.device)
    print(f"wrote {args.bits}-bit GPTQ checkpoint to {args.out}", file=sys.stderr)
