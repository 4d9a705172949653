"""``notallbits plan``: what a config costs before anything runs — cells, jobs, tokens to
generate and the GPU-hours they imply at throughputs the user states per model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from notallbits import UserError, grid

# Public sizes of the hub benchmarks (questions); local sets are counted.
KNOWN_QUESTIONS = {"aime25": 30, "gpqa_diamond": 198, "math500": 500}
# LiveCodeBench code_generation_lite problems per release (a date window keeps fewer)
LCB_RELEASE_PROBLEMS = {1: 400, 2: 511, 3: 612, 4: 713, 5: 880, 6: 1055}


def question_count(spec: dict) -> int:
    loader = spec["loader"]
    if loader in KNOWN_QUESTIONS:
        n = KNOWN_QUESTIONS[loader]
    elif loader == "livecodebench":
        n = LCB_RELEASE_PROBLEMS.get(int((spec.get("version") or "release_v5").removeprefix("release_v")), 1055)
    elif loader == "jsonl":
        n = sum(1 for line in Path(spec["path"]).read_text().splitlines() if line.strip())
    else:
        n = spec.get("limit") or 8
    return min(n, spec["limit"]) if spec.get("limit") else n


def parse_throughputs(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise UserError(f"--throughput wants MODEL=TOKENS_PER_SECOND, got {item!r}") from None
        if out[name] <= 0:
            raise UserError(f"throughput for {name} must be positive")
    return out


def plan(config: dict, throughputs: dict[str, float]) -> dict:
    answer = config["generation"]["answer_max_tokens"]
    jobs = []
    for job, spec in grid.jobs(config).items():
        q = question_count(config["datasets"][job.dataset])
        # one trace to the largest budget per sample, plus a short forced answer per budget
        tokens = q * spec.samples * (max(spec.budgets) + len(spec.budgets) * answer)
        rate = throughputs.get(job.model, throughputs.get("default"))
        jobs.append({"job": job.key, "model": job.model, "questions": q, "samples": spec.samples,
                     "max_budget": max(spec.budgets), "budgets": len(spec.budgets), "tokens": tokens,
                     "gpu_hours": tokens / rate / 3600 if rate else None})
    per_model: dict[str, dict] = {}
    for j in jobs:
        m = per_model.setdefault(j["model"], {"jobs": 0, "tokens": 0, "gpu_hours": 0.0})
        m["jobs"] += 1
        m["tokens"] += j["tokens"]
        m["gpu_hours"] = None if j["gpu_hours"] is None or m["gpu_hours"] is None else m["gpu_hours"] + j["gpu_hours"]
    hours = [j["gpu_hours"] for j in jobs]
    return {"cells": len(grid.cells(config)), "jobs": len(jobs), "tokens": sum(j["tokens"] for j in jobs),
            "gpu_hours": None if None in hours else sum(hours), "per_model": per_model, "per_job": jobs}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default="config.yaml")
    p.add_argument("--throughput", action="append", default=[], metavar="MODEL=TOK_PER_S",
                   help="generated tokens/s per GPU for a model (or 'default'); repeatable")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> None:
    result = plan(grid.load(args.config), parse_throughputs(args.throughput))
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{result['cells']} cells in {result['jobs']} generation jobs; {result['tokens']:,} tokens to generate")
    for model, m in result["per_model"].items():
        hours = f"{m['gpu_hours']:.1f} GPU-hours" if m["gpu_hours"] is not None else "no throughput given"
        print(f"  {model}: {m['jobs']} jobs, {m['tokens']:,} tokens, {hours}")
    if result["gpu_hours"] is not None:
        print(f"total: {result['gpu_hours']:.1f} GPU-hours")
    else:
        print("pass --throughput MODEL=TOK_PER_S (or default=...) for GPU-hours")
