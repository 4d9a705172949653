"""One GPU per running job on a multi-GPU box.

Snakemake counts a ``gpu`` resource but never sets CUDA_VISIBLE_DEVICES, so without help
every job lands on GPU 0. Each GPU command takes an exclusive lock file per device id
(flock, released by the kernel even if the job is killed) and exposes only that device.
A scheduler that already chose (SLURM sets CUDA_VISIBLE_DEVICES) is respected as is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def visible_gpu_count() -> int:
    """GPUs on this machine, without initialising CUDA (which would pin the device list)."""
    if os.environ.get("NOTALLBITS_GPUS"):
        return int(os.environ["NOTALLBITS_GPUS"])
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            return 0
    return 0


def slot_dir() -> Path:
    return Path(os.environ.get("NOTALLBITS_SLOT_DIR") or Path(tempfile.gettempdir()) / f"notallbits-gpu-slots-{os.getuid()}")


@contextlib.contextmanager
def gpu_slot(poll_seconds: float = 1.0):
    """Hold one free device for the duration; yields its id (None when nothing to choose)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        print(f"notallbits: using GPU(s) {os.environ['CUDA_VISIBLE_DEVICES']!r} chosen by the scheduler", file=sys.stderr)
        yield os.environ["CUDA_VISIBLE_DEVICES"]
        return
    n = visible_gpu_count()
    if n == 0:
        yield None
        return
    folder = slot_dir()
    folder.mkdir(parents=True, exist_ok=True)
    announced = False
    while True:
        for device in range(n):
            fh = open(folder / f"gpu{device}.lock", "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
            print(f"notallbits: using GPU {device} (slot lock {fh.name})", file=sys.stderr)
            try:
                yield str(device)
            finally:
                del os.environ["CUDA_VISIBLE_DEVICES"]
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
            return
        if not announced:
            print(f"notallbits: all {n} GPUs busy, waiting for a free one", file=sys.stderr)
            announced = True
        time.sleep(poll_seconds)
