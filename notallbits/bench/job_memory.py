"""Peak host memory of a job with all its processes: ``python -m notallbits.bench.job_memory -- CMD ...``.

A scheduler's memory limit (a SLURM job's cgroup) counts every process the job starts: a vLLM
job's engine core and inductor's compile workers as well as the job's own. This runs CMD, reads
the resident memory (``/proc/<pid>/status`` VmRSS) of CMD and all its descendants every
``--interval`` seconds, and prints the peak of their sum, the peak process count, and the peak
RSS of the largest single process beside the sum (what ``/usr/bin/time -v`` would report).
Linux only. Shared pages count once per process, so the sum is an upper bound of what a cgroup
charges (page cache of files read is not in it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

GIB = 1024 ** 3


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree(root: int) -> list[int]:
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def measure(cmd: list[str], interval: float = 0.2) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak_sum = peak_one = peak_procs = 0
    while proc.poll() is None:
        pids = tree(proc.pid)
        sizes = [_rss_bytes(p) for p in pids]
        peak_sum, peak_one = max(peak_sum, sum(sizes)), max(peak_one, max(sizes, default=0))
        peak_procs = max(peak_procs, len(pids))
        time.sleep(interval)
    return {"returncode": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
            "peak_rss_gib_all_processes": round(peak_sum / GIB, 3), "peak_rss_gib_largest_process": round(peak_one / GIB, 3),
            "peak_processes": peak_procs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m notallbits.bench.job_memory", description=__doc__.splitlines()[0])
    p.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("give the command after --")
    result = measure(cmd, args.interval)
    print(json.dumps(result))
    return result["returncode"]


if __name__ == "__main__":
    sys.exit(main())
