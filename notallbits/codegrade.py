"""Grading generated programs (LiveCodeBench-style) in a sandbox.

A program passes a problem only if it passes every test (public and hidden). Each program runs
in its own child process:

* a scratch folder of its own as the working directory (removed afterwards);
* resource limits: address space (memory), CPU seconds, file size, open files; when we are
  root, the harness becomes the unprivileged user ``nobody`` once the interpreter has started
  (so the process limit applies and the file system's own permissions guard it too; the
  standard modules programs use are loaded before, since the interpreter may live under /root);
* a new network namespace when the kernel lets us make one, and in any case a Python audit
  hook, installed before the program's first line, that refuses sockets, new processes
  (fork, exec, spawn, subprocess, os.system), ``ctypes``' library loading and any file
  write, rename or deletion outside the scratch folder;
* a wall-clock limit per test and for the whole run, after which the process group is killed.

Two kinds of tests, as LiveCodeBench has them: ``stdin`` (the program reads the input and
prints the output; compared line by line, whitespace-insensitive, numbers with a 1e-6
tolerance) and ``functional`` (the program defines ``class Solution`` with the method
``fn_name``; the input is one JSON value per line, the arguments; the output is one JSON value).

Majority voting over programs (Maj@K) votes on *behaviour*: two programs are the same vote
when they give the same outputs on every test input (``GradeResult.signature``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from notallbits import UserError


@dataclass(frozen=True)
class Limits:
    test_seconds: float = 6.0  # wall clock per test
    total_seconds: float = 60.0  # wall clock for the whole program run
    memory_mb: int = 1024  # address space
    file_mb: int = 16  # largest file the program may write
    processes: int = 64  # only enforced for a non-root user (we drop to nobody when root)


@dataclass
class GradeResult:
    passed: bool
    outcome: str  # passed | wrong_answer | runtime_error | timeout | no_program | sandbox_error
    tests_passed: int
    tests_total: int
    outputs: list = field(default_factory=list)  # per test: the program's output (None if it failed)
    detail: str = ""

    @property
    def signature(self) -> str | None:
        """The behaviour of the program on every test input: its vote in Maj@K."""
        if self.outcome == "no_program":
            return None
        return hashlib.sha256(json.dumps(self.outputs, sort_keys=True).encode()).hexdigest()[:16]


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)


_OPEN_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n", re.I)


def extract_program(text: str) -> str | None:
    """The last fenced code block of the answer (``` or ```python), as LiveCodeBench extracts it;
    a fence left open at the end (an answer cut at its token limit) runs to the end."""
    blocks = _FENCE.findall(text)
    opened = list(_OPEN_FENCE.finditer(text))
    if opened and text.count("```") % 2 == 1:  # the last fence was never closed
        blocks.append(text[opened[-1].end():])
    if not blocks:
        return None
    program = blocks[-1].strip("\n")
    return program if program.strip() else None


# ---------------------------------------------------------------- the child's side
# Runs as `python -I -S harness.py`; reads the job (program, tests, limits) from stdin, prints
# one JSON result line per test. The audit hook goes in before the program is compiled.
HARNESS = r'''
import io, json, os, signal, sys

job = json.loads(sys.stdin.read())
scratch = os.path.realpath(os.getcwd())
out_fd = os.dup(1)
report = os.fdopen(out_fd, "w", buffering=1)

def inside(path):
    try:
        p = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else scratch)
    except Exception:
        return False
    return p == scratch or p.startswith(scratch + os.sep)

BLOCKED = {"os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.kill", "os.killpg",
           "subprocess.Popen", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
           "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "os.chroot", "os.setuid", "resource.setrlimit",
           "os.putenv", "os.unsetenv", "shutil.rmtree", "sys.addaudithook", "_posixsubprocess.fork_exec"}
PATH_WRITE = {"os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.chmod", "os.chown", "os.link", "os.symlink",
              "os.truncate", "os.utime"}

def hook(event, args):
    if event in BLOCKED:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in mode for c in "wax+")) or (flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
        if writing and not inside(path):
            raise PermissionError(f"sandbox: writing {path!r} outside the scratch folder is not allowed")
    elif event in PATH_WRITE:
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                raise PermissionError(f"sandbox: {event} outside the scratch folder is not allowed")

# the standard modules programs use are loaded now: once we are `nobody`, the interpreter's own
# folder (often under /root) may be unreadable
import array, bisect, collections, copy, dataclasses, datetime, decimal, enum, fractions, functools, heapq
import itertools, math, operator, queue, random, re, statistics, string, typing
if os.geteuid() == 0:  # root ignores RLIMIT_NPROC and may write anywhere: become nobody
    import resource
    resource.setrlimit(resource.RLIMIT_NPROC, (job["processes"], job["processes"]))
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
sys.addaudithook(hook)

class Timeout(BaseException):
    pass

def on_alarm(signum, frame):
    raise Timeout()

signal.signal(signal.SIGALRM, on_alarm)
try:
    code = compile(job["program"], "<program>", "exec")
except BaseException as exc:
    for _ in job["tests"]:
        report.write(json.dumps({"status": "runtime_error", "detail": f"{type(exc).__name__}: {exc}"}) + "\n")
    sys.exit(0)

for test in job["tests"]:
    stdout = io.StringIO()
    sys.stdin = io.StringIO(test["input"])
    sys.stdout = stdout
    result = {"status": "ok", "output": None}
    signal.setitimer(signal.ITIMER_REAL, job["test_seconds"])
    try:
        env = {"__name__": "__main__", "__builtins__": __builtins__}
        if test["testtype"] == "functional":
            env["__name__"] = "solution"
            exec(code, env)
            args = [json.loads(line) for line in test["input"].split("\n") if line.strip()]
            if "Solution" in env:
                fn = getattr(env["Solution"](), job["fn_name"])
            else:
                fn = env[job["fn_name"]]
            value = fn(*args)
            result["output"] = json.loads(json.dumps(value))
        else:
            exec(code, env)
            result["output"] = stdout.getvalue()
    except Timeout:
        result = {"status": "timeout", "output": None}
    except SystemExit as exc:
        if exc.code not in (None, 0):
            result = {"status": "runtime_error", "output": None, "detail": f"exit {exc.code}"}
        elif test["testtype"] != "functional":
            result["output"] = stdout.getvalue()
    except BaseException as exc:
        result = {"status": "runtime_error", "output": None, "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout = sys.__stdout__
    report.write(json.dumps(result) + "\n")
'''


def _sandbox_setup(limits: Limits):
    """preexec_fn: runs in the child between fork and exec."""
    import resource

    def setup():
        os.setsid()  # its own process group: the whole group is killed on timeout
        try:  # a network namespace of its own (needs root or user namespaces)
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.unshare(0x40000000)  # CLONE_NEWNET; failure leaves the audit hook as the guard
        except Exception:  # noqa: BLE001
            pass
        mem = limits.memory_mb * 2**20
        cpu = int(limits.total_seconds) + 1
        for res, value in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu),
                           (resource.RLIMIT_FSIZE, limits.file_mb * 2**20), (resource.RLIMIT_NOFILE, 64),
                           (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(res, (value, value))
        if os.geteuid() != 0:  # root drops to nobody inside the harness, then this applies
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

    return setup


def outputs_match(got, want, testtype: str) -> bool:
    if got is None:
        return False
    if testtype == "functional":
        try:
            return got == json.loads(want) if isinstance(want, str) else got == want
        except json.JSONDecodeError:
            return False
    a = [line.split() for line in str(got).strip().splitlines()]
    b = [line.split() for line in str(want).strip().splitlines()]
    if a == b:
        return True
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        return False
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            if u == v:
                continue
            try:
                if abs(float(u) - float(v)) > 1e-6 * max(1.0, abs(float(v))):
                    return False
            except ValueError:
                return False
    return True


def run_program(program: str | None, tests: list[dict], fn_name: str | None = None,
                limits: Limits = Limits()) -> GradeResult:
    """Run one program against its tests in the sandbox; pass only if every test passes."""
    if program is None:
        return GradeResult(False, "no_program", 0, len(tests))
    scratch = Path(tempfile.mkdtemp(prefix="notallbits-code-"))
    harness = scratch.parent / f"{scratch.name}.harness.py"
    try:
        harness.write_text(HARNESS)
        os.chmod(scratch, 0o777)  # the unprivileged child must be able to write its own folder
        job = json.dumps({"program": program, "fn_name": fn_name, "test_seconds": limits.test_seconds,
                          "processes": limits.processes,
                          "tests": [{"input": t["input"], "testtype": t["testtype"]} for t in tests]})
        env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
               "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8"}
        proc = subprocess.Popen([sys.executable, "-I", "-S", str(harness)], cwd=scratch, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                preexec_fn=_sandbox_setup(limits), text=True)
        timed_out = False
        try:
            out, _ = proc.communicate(job, timeout=min(limits.total_seconds, limits.test_seconds * len(tests) + 5))
        except subprocess.TimeoutExpired:
            timed_out = True
            with _suppress():
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    except OSError as exc:
        return GradeResult(False, "sandbox_error", 0, len(tests), detail=str(exc))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        harness.unlink(missing_ok=True)
    outputs, passed, outcome, detail = [], 0, "passed", ""
    for i, test in enumerate(tests):
        r = lines[i] if i < len(lines) else {"status": "timeout" if timed_out else "runtime_error",
                                             "detail": "the program was killed (memory or time limit)"}
        outputs.append(r.get("output"))
        if r["status"] == "ok" and outputs_match(r.get("output"), test["output"], test["testtype"]):
            passed += 1
        elif outcome == "passed":
            outcome = "wrong_answer" if r["status"] == "ok" else r["status"]
            detail = r.get("detail", "")
    return GradeResult(passed == len(tests), outcome, passed, len(tests), outputs, detail)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)


def grade_many(jobs: list[tuple[str | None, list[dict], str | None]], limits: Limits = Limits(),
               workers: int | None = None) -> list[GradeResult]:
    """Grade (program, tests, fn_name) jobs in parallel over the CPU cores; identical programs
    of the same problem run once."""
    workers = workers or max(1, os.cpu_count() or 1)
    keys = [hashlib.sha256(json.dumps([p, t, f], sort_keys=True).encode()).hexdigest() for p, t, f in jobs]
    unique = dict(zip(keys, jobs))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # threads wait; the work is in child processes
        graded = dict(zip(unique, pool.map(lambda j: run_program(j[0], j[1], j[2], limits), unique.values())))
    return [graded[k] for k in keys]


def check_tests(tests, where: str) -> list[dict]:
    if not isinstance(tests, list) or not tests:
        raise UserError(f"{where}: a code problem needs a non-empty 'tests' list")
    for t in tests:
        if not isinstance(t, dict) or t.get("testtype") not in ("stdin", "functional") or "input" not in t \
                or "output" not in t:
            raise UserError(f"{where}: each test needs input, output and testtype 'stdin' or 'functional'")
    return tests
