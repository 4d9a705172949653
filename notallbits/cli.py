"""The ``notallbits`` command. Each subcommand lives in its own module and is imported
only when called, so that cheap commands never pay for torch or pandas imports."""

from __future__ import annotations

import argparse
import importlib
import sys

from notallbits import UserError

# Commands that put work on a GPU: each holds its devices for its lifetime (see devices.py);
# a module's gpus_needed(args) says how many (0: CPU on purpose), default one.
GPU_COMMANDS = {"generate", "quantize", "calibration-traces", "verify"}

# name -> (module, one-line help). The module provides add_arguments(parser) and run(args).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "tiny-model": ("notallbits.tinymodel", "build the deterministic tiny Qwen3 model + tokenizer"),
    "train-toy": ("notallbits.toy.train", "train one toy reasoner (tiny Qwen3 that thinks step by step)"),
    "prepare-data": ("notallbits.data.prepare", "write a dataset as normalized JSONL"),
    "quantize": ("notallbits.quantization", "GPTQ-quantize a checkpoint"),
    "calibration-traces": ("notallbits.calibration_traces", "the bf16 model's own traces as GPTQ calibration text"),
    "generate": ("notallbits.generation.run", "generate budget-forced samples for one cell"),
    "verify": ("notallbits.verify", "score every stored sample's steps with a process reward model (Best-of-N)"),
    "score": ("notallbits.scoring.command", "score a generation file (pass@1, Maj@K)"),
    "aggregate": ("notallbits.aggregate", "build the tidy summary table"),
    "plot": ("notallbits.figures", "draw the accuracy-vs-memory figure"),
    "grid": ("notallbits.grid", "list the cells and generation jobs of a config"),
    "memory": ("notallbits.memory", "weight + KV memory of a configuration, offline (paper Appendix B)"),
    "advise": ("notallbits.advisor", "best configuration within a memory budget, from the results"),
    "plan": ("notallbits.plan", "cells, jobs, tokens and GPU-hours of a config, before running"),
}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object | None]:
    parser = argparse.ArgumentParser(prog="notallbits", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        # Import only the module that will run; the others just show in --help.
        if argv and argv[0] == name:
            chosen = importlib.import_module(module_name)
            chosen.add_arguments(p)
    return parser, chosen


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        gpus = getattr(module, "gpus_needed", lambda _: 1)(args) if args.command in GPU_COMMANDS else 0
        if gpus:
            from notallbits.generation.devices import gpu_slot

            with gpu_slot(count=gpus):
                module.run(args)
        else:
            module.run(args)
    except UserError as exc:
        _close_progress_bars()
        print(f"notallbits {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug or an environment problem: keep the traceback
        import traceback

        _close_progress_bars()
        traceback.print_exc()
        # the console shows a failed job's last log line: make it the error, not the traceback's tail
        print(f"notallbits {args.command}: error: unexpected {type(exc).__name__}: "
              f"{(str(exc).strip().splitlines() or [''])[0]} (traceback above)", file=sys.stderr)
        return 1
    return 0


def _close_progress_bars() -> None:
    """Close open tqdm bars before the error is printed: a bar left open redraws itself
    when the interpreter exits, and would be the last line of the log instead of the error."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        return
    for bar in list(getattr(tqdm.tqdm, "_instances", ())):
        bar.close()


if __name__ == "__main__":
    sys.exit(main())


def step(log_path: str, func, *args, **kwargs):
    """Entry for Snakemake ``script:`` files: stderr goes to the rule's log, and a UserError
    becomes one line (in the log and on the console) and a failed job, not a traceback."""
    real_stderr = sys.stderr
    sys.stderr = open(log_path, "w", buffering=1)
    try:
        return func(*args, **kwargs)
    except UserError as exc:
        for stream in (sys.stderr, real_stderr):
            print(f"error: {exc}", file=stream)
        sys.exit(1)
