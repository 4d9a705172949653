"""notallbits: how to spend an accelerator's memory on a reasoning model — bigger or
more precise weights, longer thinking (KV cache) or more votes — measured, on your models and
questions, by a Snakemake workflow (a reproduction of arXiv 2510.10964).

Before a run: `plan` (cells, jobs, GPU memory), `grid` (the jobs), `memory` (bytes of one
configuration, offline), `list` (what a config can name). After it: `advise` (the best
configuration within a memory budget). The workflow runs the step commands itself.
Documentation: README.md and docs/ (`make docs`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from notallbits import UserError

# Commands that put work on a GPU: each holds its devices for its lifetime (see devices.py);
# a module's gpus_needed(args) says how many (0: CPU on purpose), default one.
GPU_COMMANDS = {"generate", "quantize", "calibration-traces", "verify"}

# name -> (module, one-line help). The module provides add_arguments(parser) and run(args).
# Commands for you first, then the workflow's steps, then tools.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("notallbits.plan", "cells, jobs, tokens, GPU memory and GPU-hours of a config, before running"),
    "grid": ("notallbits.grid", "list the cells and generation jobs of a config"),
    "memory": ("notallbits.memory", "weight + KV memory of one configuration, offline (paper Appendix B)"),
    "list": ("notallbits.listing", "what a config can name: loaders, model families, KV methods, weight formats, verifiers"),
    "advise": ("notallbits.advisor", "best configuration within a memory budget, from the results"),
    "why-rerun": ("notallbits.rerun", "why recorded jobs would rerun: the params keys that changed, as a diff"),
    "prepare-data": ("notallbits.data.prepare", "workflow step: write a dataset as normalized JSONL"),
    "download": ("notallbits.downloads", "workflow step: fetch a checkpoint or calibration corpus from the hub (where the network is)"),
    "quantize": ("notallbits.quantization", "workflow step: quantize a checkpoint (GPTQ, AWQ, FP8)"),
    "calibration-traces": ("notallbits.calibration_traces", "workflow step: the bf16 model's own traces as GPTQ calibration text"),
    "generate": ("notallbits.generation.run", "workflow step: generate budget-forced samples for one job"),
    "verify": ("notallbits.verify", "workflow step: score every stored sample's steps with a process reward model (Best-of-N)"),
    "score": ("notallbits.scoring.command", "workflow step: score a generation file (pass@1, Maj@K, Best-of-N)"),
    "aggregate": ("notallbits.aggregate", "workflow step: build the tidy summary table"),
    "plot": ("notallbits.figures", "workflow step: draw one figure from the summary"),
    "tiny-model": ("notallbits.tinymodel", "tool: build the deterministic tiny Qwen3 model + tokenizer"),
    "train-toy": ("notallbits.toy.train", "tool: train one toy reasoner (tiny Qwen3 that thinks step by step)"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, where it has one worth saying."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" in text or action.default in (None, False, [], argparse.SUPPRESS)
                or action.option_strings == [] and action.nargs in ("?", "*") and not action.default):
            return text
        return f"{text} (default: %(default)s)".strip()


class VersionAction(argparse.Action):
    """``--version``: the package version and, in a git checkout, its commit (asked only when used)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_string())
        parser.exit()


def version_string() -> str:
    import subprocess
    from pathlib import Path

    from notallbits import __version__

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() if (root / ".git").exists() else ""
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"notallbits {__version__}" + (f" (commit {commit})" if commit else "")


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object | None]:
    parser = argparse.ArgumentParser(prog="notallbits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="examples:\n  notallbits plan configs/demo.yaml\n"
                                            "  notallbits memory --model Qwen3-8B --bits 4 --budget 30000 --k 16\n"
                                            "  notallbits advise --memory 24GiB --dataset aime25\n"
                                            "  notallbits <command> --help")
    parser.add_argument("--version", action=VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                           formatter_class=HelpFormatter)
        # Import only the module that will run; the others just show in --help.
        if argv and argv[0] == name:
            chosen = importlib.import_module(module_name)
            chosen.add_arguments(p)
    return parser, chosen


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except BrokenPipeError:  # `notallbits plan | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would fail again
        return 0


def _main(argv: list[str]) -> int:
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
        sys.stdout.flush()  # a closed pipe shows here, inside the handler above
    except BrokenPipeError:
        raise
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
