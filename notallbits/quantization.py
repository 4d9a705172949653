"""GPTQ, AWQ and FP8 quantization with GPTQModel (the maintained successor of the archived
auto-gptq, which also carries AutoAWQ's algorithm and an FP8 quantizer).

GPTQModel writes the classic GPTQ checkpoint (qweight/qzeros/scales/g_idx, symmetric,
group 128), which transformers (through optimum + gptqmodel) and vLLM both load, and
whose byte layout is the one the paper's memory formula describes. AWQ (asymmetric, group 128)
is written in AutoAWQ's GEMM layout, which transformers (through gptqmodel) and vLLM load.
FP8 is E4M3 with one scale per 128 x 128 block; GPTQModel stores the *reciprocal* of the scale
under the name ``weight_scale_inv`` (its "inverse" semantics), so :func:`to_serving_fp8` turns
the checkpoint into the layout of Qwen's ``-FP8`` checkpoints (``weight_scale_inv`` = the
dequantization multiplier, ``activation_scheme: dynamic``), which vLLM and transformers read.
Which format is which: ``notallbits/weights.py``.

Every GPTQModel option that changes the weights is set here explicitly, to classic GPTQ as
auto-gptq ran it (see :func:`quantizer_settings` and docs/weight-formats.md for what still differs), and
recorded with the calibration settings in ``notallbits.json`` beside GPTQModel's
``quantize_config.json``; the summary carries the same record (``quant_settings``).

Scratch (GPTQModel's loss logs and its disk-offload folder, anything it puts in the temporary
folder) lives in ``.<output>.scratch`` beside the output, removed on any exit, SIGTERM
included; a run after a ``kill -9`` removes what the killed one left.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from notallbits import UserError, weights
from notallbits.hfcache import pin_user_cache
from notallbits.io import atomic_dir

pin_user_cache()  # before anything imports gptqmodel: its tokenicer would move HF_HOME to /tmp

# Three short sentences: the calibration this module used before it calibrated like GPTQ.
# Kept only as the weak baseline the tests compare real calibration against.
SHORT_SENTENCES = [
    "Let me think step by step. First, compute the product, then add the remaining term.",
    "We need to find the number of integers n such that the expression is a perfect square.",
    "The answer is the largest of the options, so compare each value with the others.",
]

# The config keys (quantization.*) that are quantizer options, with their defaults.
CONFIG_OPTIONS = {"group_size": 128, "sym": True, "desc_act": False, "damp_percent": 0.01, "act_group_aware": False}
# Options with no config key, fixed to what auto-gptq (0.7) did: a layer's linears in order
# (q/k/v, o, up/gate, down), each seeing the outputs of the already quantized ones; plain
# groups; no MSE grid search of the scale; lm_head in bf16; no RTN fallback (it only fires for
# MoE experts that see under 0.5% of the tokens); GPTQ v1 checkpoint format, int32 packing.
FIXED_OPTIONS = {"true_sequential": True, "static_groups": False, "mse": 0.0, "lm_head": False,
                 "fallback": None, "format": "gptq", "pack_dtype": "int32"}
# GPTQModel retries a Hessian whose Cholesky fails with a larger damp (+0.01 each time);
# auto-gptq stopped with an error there. Healthy layers never see it.
DAMP_AUTO_INCREMENT = 0.01
BATCH_SIZE = 4  # forward batch of calibration samples: the Hessian is a sum over tokens either way


# AWQ as AutoAWQ ran it (and Qwen's -AWQ checkpoints are): 4-bit, zero point (asymmetric),
# group 128, GEMM layout in int32; GPTQModel's scale search over the calibration activations.
AWQ_FIXED = {"sym": False, "format": "gemm", "pack_dtype": "int32"}
FP8_FIXED = {"format": "float8_e4m3fn", "weight_scale_method": "block", "activation_scheme": "dynamic"}


def quantizer_settings(bits: int | str, options: dict | None = None) -> dict:
    """The full, explicit settings of one checkpoint (what notallbits.json records)."""
    fmt = weights.get(bits)
    if fmt.method == "awq":
        return _other_settings(fmt, options, {"group_size": CONFIG_OPTIONS["group_size"]},
                               {**AWQ_FIXED, "batch_size": BATCH_SIZE})
    if fmt.method == "fp8":
        settings = _other_settings(fmt, options, {"fp8_block": 128}, FP8_FIXED)
        settings["weight_block_size"] = [settings.pop("fp8_block")] * 2
        return settings
    bits = fmt.bits
    if fmt.method != "gptq":
        raise UserError(f"GPTQ bits must be 4 or 8, got {bits} (16 means the bf16 checkpoint, no job)")
    options = dict(options or {})
    unknown = sorted(set(options) - set(CONFIG_OPTIONS))
    if unknown:
        raise UserError(f"unknown quantizer option {unknown[0]!r} (known: {', '.join(CONFIG_OPTIONS)})")
    settings = {"method": "gptq", "bits": int(bits), **CONFIG_OPTIONS, **options, **FIXED_OPTIONS,
                "damp_auto_increment": DAMP_AUTO_INCREMENT, "batch_size": BATCH_SIZE}
    if settings["desc_act"] and settings["act_group_aware"]:
        raise UserError("quantization: desc_act and act_group_aware exclude each other (GPTQModel)")
    return settings


def _other_settings(fmt, options, defaults: dict, fixed: dict) -> dict:
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise UserError(f"quantization option {unknown[0]!r} does not apply to {fmt.name} "
                        f"(its options: {', '.join(defaults)})")
    return {"method": fmt.method, "bits": fmt.bits, **defaults, **options, **fixed}


def _quantize_config(settings: dict, offload_dir: str):
    from gptqmodel import QuantizeConfig

    if settings["method"] == "awq":
        from gptqmodel.quantization.config import AWQConfig

        return AWQConfig(bits=settings["bits"], group_size=settings["group_size"], sym=settings["sym"],
                         format=settings["format"], pack_dtype=settings["pack_dtype"],
                         offload_to_disk=True, offload_to_disk_path=offload_dir)
    if settings["method"] == "fp8":
        from gptqmodel.quantization.config import FP8Config

        return FP8Config(format=settings["format"], weight_scale_method=settings["weight_scale_method"],
                         weight_block_size=settings["weight_block_size"],
                         offload_to_disk=True, offload_to_disk_path=offload_dir)
    return QuantizeConfig(
        bits=settings["bits"], group_size=settings["group_size"], sym=settings["sym"], desc_act=settings["desc_act"],
        damp_percent=settings["damp_percent"], damp_auto_increment=settings["damp_auto_increment"],
        act_group_aware=settings["act_group_aware"], true_sequential=settings["true_sequential"],
        static_groups=settings["static_groups"], mse=settings["mse"], lm_head=settings["lm_head"],
        fallback=settings["fallback"], format=settings["format"], pack_dtype=settings["pack_dtype"],
        offload_to_disk=True, offload_to_disk_path=offload_dir)


def quantize(src: str, out: str, bits: int, options: dict | None = None, calibration: dict | None = None,
             calibration_file: str | None = None, samples: list | None = None, device: str = "auto") -> dict:
    """Quantize ``src`` into the folder ``out`` (``bits``: 4/8 GPTQ, awq4, fp8; see
    :func:`notallbits.weights.get`); returns the record written to notallbits.json.

    ``calibration`` are the normalized ``quantization.calibration`` settings (default: the
    schema's); ``samples`` (token-id lists or texts) replaces the data they describe (tests).
    FP8 reads no calibration data.
    """
    settings = quantizer_settings(bits, options)
    calibrated = weights.get(bits).calibrated
    if not (os.path.isdir(src) or "/" in src):
        raise UserError(f"model path {src!r} does not exist")
    from notallbits import manifest  # a corrupt input checkpoint: one line, not a loader traceback

    manifest.verify(src)
    calibration = {"source": "wikitext2", "samples": 128, "seq_len": 2048, "seed": 0, **(calibration or {})}
    # GPTQModel sizes a CPU worker pool from the machine; 2-core hosts need this set
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(1, min(os.cpu_count() or 1, 8))))
    src = os.path.abspath(src) if os.path.isdir(src) else src
    out_path = Path(out).resolve()
    t0 = time.perf_counter()
    with job_scratch(out_path) as scratch:
        from gptqmodel import GPTQModel
        from gptqmodel.version import __version__ as gptqmodel_version

        from notallbits.generation.torch_device import resolve_device

        # GPTQModel's own choice falls back to CPU when torch cannot use the GPUs: never silently
        model = GPTQModel.load(src, _quantize_config(settings, str(scratch / "offload")),
                               device=resolve_device(device))
        if not calibrated:
            samples, described = None, None
        elif samples is None:
            from transformers import AutoTokenizer

            from notallbits.calibration import calibration_samples

            samples = calibration_samples(calibration, AutoTokenizer.from_pretrained(src), calibration_file)
            described = calibration
        else:
            described = {"source": "given", "samples": len(samples)}
        data = None if samples is None else \
            [s if isinstance(s, str) else {"input_ids": s, "attention_mask": [1] * len(s)} for s in samples]
        # GPTQModel writes its per-module loss log to ./logs: run it in the scratch folder
        with _working_directory(scratch / "work"):
            model.quantize(data, batch_size=settings.get("batch_size", 1), calibration_data_min_length=1,
                           **_quantize_backend(settings))
            record = {"built_by": "notallbits.quantization", "source_model": src, "quantizer": settings,
                      "calibration": described,
                      "calibration_tokens": sum(len(s) for s in samples or [] if not isinstance(s, str)),
                      "gptqmodel_version": gptqmodel_version,
                      "quantize_seconds": round(time.perf_counter() - t0, 2)}
            with atomic_dir(out_path) as tmp:
                model.save(str(tmp))
                if settings["method"] == "fp8":
                    to_serving_fp8(tmp, settings)
                (tmp / "notallbits.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
                manifest.write(tmp)  # sizes and hashes, checked before a job loads it (last)
            for log in sorted(Path("logs").glob("*.log")):
                sys.stderr.write(log.read_text())
    return record


def _quantize_backend(settings: dict) -> dict:
    """AWQ: GPTQModel's portable torch kernel packs the GEMM layout on any device (its default,
    the CUDA GEMM kernel, refuses CPUs); the checkpoint is the same."""
    if settings["method"] != "awq":
        return {}
    from gptqmodel.utils.backend import BACKEND

    return {"backend": BACKEND.AWQ_TORCH}


def to_serving_fp8(folder: Path, settings: dict) -> None:
    """GPTQModel's FP8 checkpoint in ``folder`` -> the layout vLLM and transformers read (Qwen's
    ``-FP8``): every ``weight_scale_inv`` replaced by its reciprocal (GPTQModel quantizes as
    ``weight * scale_inv`` and dequantizes as ``weight / scale_inv``; vLLM and transformers
    dequantize as ``weight * weight_scale_inv``), and the quantization config Qwen ships."""
    import torch
    from safetensors.torch import load_file, save_file

    for f in sorted(Path(folder).glob("*.safetensors")):
        tensors = load_file(str(f))
        for name in [n for n in tensors if n.endswith(".weight_scale_inv")]:
            tensors[name] = (1.0 / tensors[name].to(torch.float64)).to(torch.float32)
        save_file(tensors, str(f), metadata={"format": "pt"})
    cfg_path = Path(folder) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": settings["activation_scheme"],
                                  "weight_block_size": settings["weight_block_size"]}
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (Path(folder) / "quantize_config.json").unlink(missing_ok=True)  # GPTQModel's, with its own semantics


def scratch_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.scratch"


@contextlib.contextmanager
def job_scratch(out: Path):
    """A scratch folder beside the output (``TMPDIR`` and ``tempfile`` point into it), removed
    on any exit; SIGTERM exits through here too. What a ``kill -9`` left is removed first."""
    scratch = scratch_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    for stale in out.parent.glob(f".{out.name}.*"):  # half-written outputs of a killed job
        if stale != scratch and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    for sub in ("tmp", "work", "offload"):
        (scratch / sub).mkdir(parents=True)
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(scratch / "tmp")
    handler = None
    if _in_main_thread():
        handler = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield scratch
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(scratch, ignore_errors=True)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _working_directory(path: Path):
    before = os.getcwd()
    path.mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="bf16 checkpoint (folder or hub id)")
    p.add_argument("--bits", required=True, help="4 or 8 (GPTQ), awq4 or fp8 (notallbits/weights.py)")
    p.add_argument("--settings", default="{}",
                   help="JSON: the config's quantization section (quantizer options and calibration)")
    p.add_argument("--calibration-file", help="local text/JSONL file or the traces file of source 'traces'")
    p.add_argument("--out", required=True, help="folder to write the quantized checkpoint to")
    p.add_argument("--device", default="auto", help="auto (cuda when the machine has GPUs), cuda or cpu")


def gpus_needed(args: argparse.Namespace) -> int:
    """Devices the job's slot holds (cli.py): none when asked for CPU."""
    return 0 if args.device == "cpu" else 1


def run(args: argparse.Namespace) -> None:
    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        raise UserError(f"--settings is not valid JSON: {exc.msg}") from None
    fmt = weights.get(args.bits)
    if fmt.method != "gptq":  # the section as far as this method reads it (GPTQ: all of it, as before)
        settings = weights.quantizer_options(fmt, settings)
    calibration = settings.pop("calibration", {})
    record = quantize(args.model, args.out, args.bits, settings, calibration, args.calibration_file,
                      device=args.device)
    print(json.dumps(record, sort_keys=True), file=sys.stderr)
    print(f"wrote {fmt.name} checkpoint to {args.out} ({record['quantize_seconds']} s)", file=sys.stderr)
