"""Grading generated programs the way LiveCodeBench grades them, in a sandbox the kernel enforces.

A program passes a problem only if it passes every test (public and hidden), in order; as in
LiveCodeBench (``lcb_runner/evaluation/testing_util.py``), grading stops at the first failure.

**Verdicts** (docs/code-grading.md lists every rule and the few deliberate differences):

* ``stdin`` problems: a last top-level ``if __name__ == '__main__':`` block is unwrapped, the
  top-level imports are hoisted and everything else becomes the body of one function, run once per
  test after LiveCodeBench's import prelude (``from typing import *``, ``collections``, ``math``,
  ``heapq``, ... and ``sys.setrecursionlimit(50000)``). ``sys.stdin``, ``sys.stdin.buffer``,
  ``open(...)`` and the original stdin's ``read``/``readline``/``readlines`` serve the test's input
  exactly as LiveCodeBench's mocks do; ``sys.stdout`` is captured; ``SystemExit`` ends the test
  normally. The output matches when, after stripping, it has as many lines as the expected one and
  each line is equal as text or, split on whitespace, equal as exact ``Decimal`` numbers (``nan``
  never equals a number; 998244352 is not 998244353).
* ``functional`` problems: the prelude plus the program run as a module; if the text
  ``class Solution`` occurs, ``Solution().<fn_name>`` is called, else the module's ``<fn_name>``,
  with one JSON argument per input line; a returned tuple counts as a list and the value must
  ``==`` the JSON-decoded expected output.
* a compile error (a syntax error, an exception or a time-out while the module runs, no such
  function) fails every test; an exception is a runtime error; ``test_seconds`` per test (an alarm
  inside, as LiveCodeBench sets, and a kill from outside one second later that the program cannot
  disarm), ``(test_seconds + 1) * tests + 5`` seconds for the whole run.

**Sandbox** (``bubblewrap``, the default): each program runs in ``bwrap`` with new user, PID,
network, IPC, UTS and cgroup namespaces, seeing only the interpreter, its standard library, the
shared libraries they load and ``/dev/null``, read-only, plus a private size-capped tmpfs
``/scratch``; no environment from the parent, no ``/proc``, ``/tmp``, ``/dev/shm``, project folder,
network or other process. Killing the sandbox kills everything the program started. Memory, CPU
seconds, file size, open files and processes are capped (``Limits``); as root, whose processes the
kernel's process limit does not count, a ``pids`` cgroup caps the processes instead (or the
sandbox runs as ``nobody`` where no cgroup can be made). The parent hands the program only the test
*inputs* (the expected outputs never enter the sandbox), reads what it reports as bytes up to a cap,
and turns anything malformed into that program's ``sandbox_error``. Without bubblewrap grading
stops with one line saying what to install, unless the config opts into ``process`` (a child
process with resource limits only), which the scores record.

Majority voting over programs (Maj@K) votes on *behaviour*: two programs are the same vote when
they give the same outputs on the tests they ran (``GradeResult.signature``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from notallbits import UserError

SANDBOXES = ("bubblewrap", "process")
# Raised whenever a program's verdict can change (a comparison rule, a limit, what counts as a
# report): the score step takes it as a param, so existing score files are made again.
# 2: a function returning None matches an expected "null" (LiveCodeBench's ==).
VERDICT_VERSION = 2
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora/RHEL: "
                "`sudo dnf install bubblewrap`), or set scoring.code_sandbox: process to accept a weaker sandbox")


@dataclass(frozen=True)
class Limits:
    test_seconds: float = 6.0  # per test, LiveCodeBench's default timeout
    memory_mb: int = 4096  # address space (LiveCodeBench sets none: see docs/code-grading.md)
    file_mb: int = 16  # largest file the program may write
    disk_mb: int = 64  # the whole scratch folder (a tmpfs)
    processes: int = 16  # processes and threads inside one sandbox
    output_mb: int = 16  # one test's reported output; more kills the program

    def run_seconds(self, tests: int) -> float:
        """LiveCodeBench's overall limit for one program: (timeout + 1) per test + 5."""
        return (self.test_seconds + 1) * tests + 5


OUTCOMES = ("passed", "wrong_answer", "runtime_error", "timeout", "compile_error", "output_limit", "no_program",
            "sandbox_error")


@dataclass
class GradeResult:
    passed: bool
    outcome: str  # one of OUTCOMES
    tests_passed: int
    tests_total: int
    outputs: list = field(default_factory=list)  # per test run: a digest of the program's output (None: none)
    detail: str = ""

    @property
    def signature(self) -> str | None:
        """The behaviour of the program on the tests it ran: its vote in Maj@K."""
        if self.outcome == "no_program":
            return None
        return hashlib.sha256(json.dumps(self.outputs).encode()).hexdigest()[:16]


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


# ---------------------------------------------------------------- the sandbox's side
# `python -I -B -c HARNESS`: reads the job (program, test inputs, limits: never the expected
# outputs) from fd 0, then points fds 0-2 at /dev/null and reports on a copy of fd 1, one ASCII
# JSON line per event: {"c": 0} compiling, {"c": 1, "e": detail} compile error, {"t": i} test i
# starts, {"r": i, "s": "ok" | "runtime_error" | "timeout", "o": output, "e": detail}.
HARNESS = r'''
import ast, builtins, faulthandler, io, json, os, resource, shutil, signal, subprocess, sys, types

job = json.loads(sys.stdin.buffer.read())
report_fd = os.dup(1)
null = os.open("/dev/null", os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
os.close(null)
os.chdir(job["scratch"])

def send(message):
    data = (json.dumps(message) + "\n").encode("ascii")
    while data:
        data = data[os.write(report_fd, data):]

for res, value in ((resource.RLIMIT_AS, job["memory_bytes"]), (resource.RLIMIT_FSIZE, job["file_bytes"]),
                   (resource.RLIMIT_CPU, job["cpu_seconds"]), (resource.RLIMIT_CORE, 0),
                   (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_NPROC, job["processes"])):
    if value is not None:
        resource.setrlimit(res, (value, value))

PRELUDE = job["prelude"]
if job.get("drop_to") is not None:  # the process sandbox as root: load the prelude's modules, become nobody
    exec(PRELUDE, {})
    os.setgroups([])
    os.setgid(job["drop_to"])
    os.setuid(job["drop_to"])
sys.set_int_max_str_digits(50000)

# LiveCodeBench's reliability_guard: the same functions are gone before the program's first line
faulthandler.disable()
import _sitebuiltins
builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")  # as the site module defines it
builtins.quit = None
builtins.help = None
os.environ["OMP_NUM_THREADS"] = "1"
for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
             "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
             "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
    setattr(os, name, None)
shutil.rmtree = shutil.move = shutil.chown = None
subprocess.Popen = None
for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
    sys.modules[name] = None

class TimeLimit(Exception):  # an Exception, as LiveCodeBench's: a bare `except` may swallow it
    pass

def on_alarm(signum, frame):
    raise TimeLimit()

signal.signal(signal.SIGALRM, on_alarm)

def alarm(seconds):
    signal.setitimer(signal.ITIMER_REAL, seconds)

def unwrap_main(code):
    try:
        tree = ast.parse(code)
        last = tree.body[-1]
        if isinstance(last, ast.If) and ast.unparse(last.test).strip() == "__name__ == '__main__'":
            code = ast.unparse(tree.body[:-1]) + "\n" + ast.unparse(last.body)
    except BaseException:
        pass
    return code

def as_function(code):
    try:
        tree = ast.parse(code)
        imports = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
        body = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
        fields = dict(name="wrapped_function", args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[],
                      kw_defaults=[], defaults=[]), body=body, decorator_list=[], lineno=-1)
        if "type_params" in ast.FunctionDef._fields:
            fields["type_params"] = []
        return PRELUDE + "\n" + ast.unparse(imports) + "\n" + ast.unparse(ast.FunctionDef(**fields))
    except Exception:
        return code

class InputBytes:
    def __init__(self, text):
        self.data = text.encode("utf-8")
    def read(self, *args):
        return self.data
    def readline(self, *args):
        return self.data.split(b"\n")[0] + b"\n"

class InputText:
    """sys.stdin during a test: read() and readlines() give the whole input every time, readline()
    reads on, .buffer reads bytes; no iteration (the class defines none)."""
    def __init__(self, text):
        self.text = text
        self.stream = io.StringIO(text)
        self.buffer = InputBytes(text)
    def read(self, *args):
        return self.text
    def readline(self, *args):
        return self.stream.readline(*args)
    def readlines(self, *args):
        return self.text.split("\n")
    def __getattr__(self, name):
        return getattr(self.stream, name)

class OpenedInput:
    """What open(...) returns during a test: a fresh reader of the test's input."""
    def __init__(self, text):
        self.stream = io.StringIO(text)
    def read(self, *args):
        return self.stream.read(*args)
    def readline(self, *args):
        return self.stream.readline(*args)
    def readlines(self, *args):
        return self.stream.readlines(*args)
    def __iter__(self):
        return iter(self.stream.readlines())
    def __next__(self):
        line = self.stream.readline()
        if not line:
            raise StopIteration
        return line
    def write(self, *args):
        return None
    def close(self):
        return None
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return False

def call_with_input(fn, text):
    lines = iter(text.split("\n"))
    original = sys.stdin
    saved = {name: original.__dict__.get(name) for name in ("read", "readline", "readlines")} \
        if hasattr(original, "__dict__") else {}
    real_open = builtins.open
    try:
        # the original stdin object (the one `from sys import stdin` bound) reads the test too
        original.read = lambda *args: text
        original.readlines = lambda *args: text.split("\n")
        original.readline = lambda *args: next(lines)
        sys.stdin = InputText(text)
        builtins.open = lambda *args, **kwargs: OpenedInput(text)
        try:
            fn()
        except SystemExit:
            pass
    finally:
        builtins.open = real_open
        sys.stdin = original
        for name, value in saved.items():
            if value is None:
                original.__dict__.pop(name, None)
            else:
                setattr(original, name, value)

def load(code):
    """LiveCodeBench's compile step: run the module, take Solution() if the text names it."""
    module = types.ModuleType("tmp_sol", "")
    alarm(job["test_seconds"])
    try:
        exec(code, module.__dict__)
        return module.Solution() if "class Solution" in code else module
    finally:
        alarm(0)

def encode(value, depth=0):
    """The returned value with its types, for the parent to rebuild and compare with ==."""
    if depth > 200:
        raise RecursionError("returned value nested too deep")
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        value = int(value)
        return value if abs(value) < 2**53 else {"I": hex(value)}
    if isinstance(value, float):
        value = float(value)
        return value if value == value and abs(value) != float("inf") else {"N": repr(value)}
    for kind, tag in ((list, "L"), (tuple, "T"), (set, "S"), (frozenset, "F")):
        if isinstance(value, kind):
            return {tag: [encode(v, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"D": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    name = type(value).__name__
    if name == "Fraction":
        return {"Q": [hex(value.numerator), hex(value.denominator)]}
    if name == "Decimal":
        return {"M": str(value)}
    return {"X": name}

def main():
    tests = job["tests"]
    send({"c": 0})
    try:
        if job["fn_name"] is None:
            code = as_function(unwrap_main(job["program"]))
            target, name = load(code), "wrapped_function"
        else:
            code = PRELUDE + "\n\n" + job["program"]
            target, name = load(code), job["fn_name"]
        method = getattr(target, name)
        if job["fn_name"] is not None:
            arguments = [[json.loads(line) for line in t["input"].split("\n")] for t in tests]
    except BaseException as exc:
        send({"c": 1, "e": f"{'time limit' if isinstance(exc, TimeLimit) else type(exc).__name__}: {str(exc)[:200]}"})
        return
    for i, test in enumerate(tests):
        send({"t": i})
        result = {"r": i, "s": "ok"}
        captured = io.StringIO()
        captured.close = lambda x: 1
        real_stdout = sys.stdout
        alarm(job["test_seconds"])
        try:
            if job["fn_name"] is None:
                sys.stdout = captured
                try:
                    call_with_input(method, test["input"])
                finally:
                    sys.stdout = real_stdout
                alarm(0)
                result["o"] = captured.getvalue()
            else:
                value = method(*arguments[i])
                alarm(0)
                if isinstance(value, tuple):
                    value = list(value)
                result["o"] = encode(value)
        except TimeLimit:
            result = {"r": i, "s": "timeout"}
        except BaseException as exc:
            result = {"r": i, "s": "runtime_error", "e": f"{type(exc).__name__}: {str(exc)[:200]}"}
        finally:
            alarm(0)
            sys.stdout = real_stdout
        send(result)

main()
'''

# LiveCodeBench's import prelude: the same modules, star-imported, then imported by name.
_STAR = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
         "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing")
PRELUDE = ("".join(f"from {m} import *\n" for m in _STAR)
           + "".join(f"import {m}\n" for m in _STAR[:-2]) + "sys.setrecursionlimit(50000)\n")


# ---------------------------------------------------------------- comparing outputs (the parent's side)
def _stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(x) for x in line.split()]
    except (InvalidOperation, ValueError):
        return None


def _decode(value):
    """Rebuild a value the sandbox encoded (see HARNESS.encode); unknown types never compare equal."""
    if not isinstance(value, dict):
        return value
    (tag, inner), = value.items()
    if tag == "I":
        return int(inner, 16)
    if tag == "N":
        return float(inner)
    if tag in ("L", "T", "S", "F"):
        items = [_decode(v) for v in inner]
        return {"L": list, "T": tuple, "S": set, "F": frozenset}[tag](items)
    if tag == "D":
        return {_decode(k): _decode(v) for k, v in inner}
    if tag == "Q":
        return Fraction(int(inner[0], 16), int(inner[1], 16))
    if tag == "M":
        return Decimal(inner)
    if tag == "X":
        return object()
    raise ValueError(f"unknown value tag {tag!r}")


def outputs_match(got, want, testtype: str) -> bool:
    """LiveCodeBench's comparison. stdin: stripped lines, each equal as text or as exact Decimals;
    functional: the returned value (a tuple counts as a list) == the JSON-decoded expected output
    (a returned None matches "null", as there)."""
    if testtype == "functional":
        expected = json.loads(want) if isinstance(want, str) else want
        if isinstance(got, tuple):
            got = list(got)
        try:
            return bool(got == expected)
        except RecursionError:
            return False
    if got is None:  # stdin: no output at all
        return False
    a, b = _stripped_lines(str(got)), _stripped_lines(str(want))
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        dx, dy = _decimals(x), _decimals(y)
        if dx is None or dy is None or dx != dy:
            return False
    return True


# ---------------------------------------------------------------- launching a sandbox
def _cgroup_pids_root() -> str | None:
    """A pids cgroup hierarchy this (root) process can make children in: v2 with the pids controller
    delegated at the top, or v1's pids hierarchy."""
    v2 = "/sys/fs/cgroup"
    try:
        with open(os.path.join(v2, "cgroup.subtree_control")) as f:
            if "pids" in f.read().split() and os.access(v2, os.W_OK):
                return v2
    except OSError:
        pass
    v1 = "/sys/fs/cgroup/pids"
    if os.path.isfile(os.path.join(v1, "cgroup.procs")) and os.access(v1, os.W_OK):
        return v1
    return None


def _shared_libraries(files: list[str]) -> list[str]:
    """The shared libraries (and the loader) the interpreter and its extension modules load, by ldd."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    try:
        out = subprocess.run([ldd, *files], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = set()
    for line in out.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m and os.path.exists(m.group(1)):
            found.add(m.group(1))
    return sorted(found)


class Bubblewrap:
    """The strong sandbox: one bwrap per program (see the module's docstring)."""

    name = "bubblewrap"

    def __init__(self):
        self.bwrap = shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.path.exists(p)),
                                                   None)
        if self.bwrap is None:
            raise UserError(f"code grading needs the bubblewrap sandbox (bwrap), which is not installed: {INSTALL_HINT}")
        self.python = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
        stdlib = os.path.dirname(os.path.realpath(os.__file__))
        dynload = sorted({os.path.realpath(p) for p in sys.path if p.endswith("lib-dynload") and os.path.isdir(p)})
        extensions = [os.path.join(d, f) for d in dynload for f in os.listdir(d) if f.endswith(".so")]
        libraries = _shared_libraries([self.python, *extensions])
        self.cgroups = _cgroup_pids_root() if os.geteuid() == 0 else None
        self.as_nobody = os.geteuid() == 0 and self.cgroups is None
        try:
            options = subprocess.run([self.bwrap, "--help"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise UserError(f"{self.bwrap} --help failed ({exc}): {INSTALL_HINT}") from None
        missing = [o for o in ("--size", "--perms", "--clearenv", "--die-with-parent", "--new-session") if o not in options]
        if missing:  # the disk cap and a clean environment are not optional
            raise UserError(f"{self.bwrap} is too old for the code sandbox (no {', '.join(missing)}; bubblewrap 0.8 "
                            f"or later is needed): {INSTALL_HINT}")
        args = [self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--clearenv",
                "--cap-drop", "ALL", "--hostname", "sandbox", "--uid", "65534", "--gid", "65534"]
        if "--disable-userns" in options:  # bubblewrap >= 0.8: no nested user namespaces
            args.append("--disable-userns")
        for entry in sorted(os.listdir("/")):  # merged-/usr systems: /lib -> usr/lib and so on
            if os.path.islink("/" + entry):
                args += ["--symlink", os.readlink("/" + entry), "/" + entry]
        bound: list[str] = []

        def bind(path):  # at the path the loader asks for, its folders resolved; once, and not inside a bound folder
            dest = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
            if not any(dest == b or dest.startswith(b + os.sep) for b in bound):
                bound.append(dest)
                args.extend(["--ro-bind", os.path.realpath(path), dest])

        bind(self.python)
        bind(stdlib)
        for d in dynload:
            bind(d)
        if libraries:
            for lib in libraries:
                bind(lib)
        else:  # no ldd: the system's library folders, read-only
            for d in ("/lib", "/lib64", "/usr/lib", "/usr/lib64"):
                if os.path.isdir(d) and not os.path.islink(d):
                    bind(d)
        if os.path.exists("/etc/ld.so.cache"):
            bind("/etc/ld.so.cache")
        for masked in ("site-packages", "dist-packages"):  # installed packages are not the standard library
            if os.path.isdir(os.path.join(stdlib, masked)):
                args += ["--tmpfs", os.path.join(stdlib, masked), "--remount-ro", os.path.join(stdlib, masked)]
        args += ["--dev-bind", "/dev/null", "/dev/null"]
        self.prefix = args
        self.python_args = [self.python, "-I", "-S", "-B", "-c", HARNESS]
        self._check()

    def command(self, limits: Limits) -> list[str]:
        return [*self.prefix, "--size", str(limits.disk_mb * 2**20), "--perms", "0700", "--tmpfs", "/scratch",
                "--remount-ro", "/", "--chdir", "/scratch",
                "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/scratch", "--setenv", "TMPDIR", "/scratch",
                "--setenv", "LANG", "C.UTF-8", *self.python_args]

    def start(self, limits: Limits) -> tuple[subprocess.Popen, object]:
        command, cgroup = self.command(limits), None
        if self.cgroups is not None:  # root: RLIMIT_NPROC does not count root's processes, a cgroup does
            cgroup = os.path.join(self.cgroups, f"notallbits-{os.getpid()}-{secrets.token_hex(8)}")
            os.mkdir(cgroup, 0o700)
            with open(os.path.join(cgroup, "pids.max"), "w") as f:
                f.write(str(limits.processes + 4))  # + bwrap's own two processes and the harness
            command = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, *command]
        extra = {"user": 65534, "group": 65534, "extra_groups": []} if self.as_nobody else {}
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, **extra)
        except BaseException:
            self.cleanup(cgroup)
            raise
        return proc, cgroup

    def job_fields(self, limits: Limits, scratch) -> dict:
        return {"scratch": "/scratch", "processes": limits.processes}

    def cleanup(self, cgroup) -> None:
        if cgroup is None:
            return
        for _ in range(50):  # the PID namespace is gone once bwrap is; its last processes may be exiting
            try:
                os.rmdir(cgroup)
                return
            except FileNotFoundError:
                return
            except OSError:
                try:
                    with open(os.path.join(cgroup, "cgroup.procs")) as f:
                        for pid in f.read().split():
                            os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
                time.sleep(0.02)

    def _check(self) -> None:
        """One trial run: the kernel may refuse namespaces (no unprivileged user namespaces, a
        container's seccomp profile); that is a one-line error, not a weaker sandbox."""
        result = _run(self, "print(sum(map(int, input().split())))",
                      [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}], None, Limits(test_seconds=20))
        if not result.passed:
            why = result.detail or result.outcome
            raise UserError(f"the bubblewrap sandbox does not run here ({why[:300]}); user namespaces may be "
                            "disabled (sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu "
                            "kernel.apparmor_restrict_unprivileged_userns=0), or set scoring.code_sandbox: process "
                            "to accept a weaker sandbox")


class ProcessSandbox:
    """The weaker sandbox a config must opt into: a child process in its own session with the same
    resource limits, a private scratch folder, and as root the user ``nobody``; no namespaces, so it
    sees the file system and the network, and a child that leaves the session can outlive it."""

    name = "process"

    def __init__(self):
        self.python = sys.executable
        self.as_nobody = os.geteuid() == 0

    def start(self, limits: Limits):
        scratch = tempfile.mkdtemp(prefix="notallbits-code-")  # 0700, a fresh random name (O_EXCL)
        if self.as_nobody:
            os.chown(scratch, 65534, 65534)
        env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8"}
        try:
            proc = subprocess.Popen([self.python, "-I", "-S", "-B", "-c", HARNESS], cwd=scratch, env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return proc, scratch

    def job_fields(self, limits: Limits, scratch) -> dict:
        # as root the harness loads the prelude's modules and becomes nobody (the interpreter may live
        # under /root); nobody's process count is shared by every sandbox running at once
        return {"scratch": scratch, "processes": 256 if self.as_nobody else None,
                "drop_to": 65534 if self.as_nobody else None}

    def cleanup(self, scratch) -> None:
        shutil.rmtree(scratch, ignore_errors=True)


_SANDBOXES: dict[str, object] = {}
_SANDBOX_LOCK = threading.Lock()


def sandbox(name: str = "bubblewrap"):
    """The sandbox of that name, set up (and for bubblewrap tried once) on first use."""
    if name not in SANDBOXES:
        raise UserError(f"scoring.code_sandbox must be one of {', '.join(SANDBOXES)}, got {name!r}")
    with _SANDBOX_LOCK:
        if name not in _SANDBOXES:
            _SANDBOXES[name] = Bubblewrap() if name == "bubblewrap" else ProcessSandbox()
        return _SANDBOXES[name]


# ---------------------------------------------------------------- running one program
def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap (its sandbox dies with it) or the process sandbox's session
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
        pass


def _run(box, program: str, tests: list[dict], fn_name: str | None, limits: Limits) -> GradeResult:
    total = len(tests)
    run_seconds = limits.run_seconds(total)
    start = time.monotonic()
    proc, handle = box.start(limits)
    job = json.dumps({"program": program, "fn_name": fn_name, "prelude": PRELUDE, "test_seconds": limits.test_seconds,
                      "memory_bytes": limits.memory_mb * 2**20, "file_bytes": limits.file_mb * 2**20,
                      "cpu_seconds": math.ceil(run_seconds), **box.job_fields(limits, handle),
                      "tests": [{"input": t["input"]} for t in tests]}).encode()
    cap = limits.output_mb * 2**20 * 2 + 4096  # one report line: the output, JSON-escaped
    sel = selectors.DefaultSelector()
    os.set_blocking(proc.stdin.fileno(), False)
    os.set_blocking(proc.stdout.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    sel.register(proc.stdout, selectors.EVENT_READ)
    written, pending = 0, bytearray()
    expect = "compiling"  # then "compiled", then for each test i: "start", "result"
    index, test_deadline = 0, start + limits.test_seconds + 1 + 10  # start-up and compiling
    outputs, passed, outcome, detail = [], 0, None, ""
    try:
        while outcome is None:
            now = time.monotonic()
            deadline = min(start + run_seconds, test_deadline)
            if now >= deadline:
                outcome, detail = "timeout", "killed at the time limit"
                break
            for key, _ in sel.select(timeout=deadline - now):
                if key.fileobj is proc.stdin:
                    try:
                        written += os.write(proc.stdin.fileno(), job[written:written + 2**16])
                    except (BrokenPipeError, BlockingIOError, OSError):
                        written = len(job)
                    if written >= len(job):
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                try:
                    chunk = os.read(proc.stdout.fileno(), 2**20)
                except BlockingIOError:
                    continue
                if not chunk:  # the sandbox ended before reporting everything
                    if expect == "compiling":
                        text = pending.decode("utf-8", "replace").strip()
                        outcome = "sandbox_error"
                        detail = text.splitlines()[0][:300] if text else "the sandbox ended before the program started"
                    elif expect == "compiled":
                        outcome, detail = "compile_error", "the program was killed while loading"
                    else:
                        outcome, detail = "runtime_error", "the program was killed (memory, CPU or process limit)"
                    break
                pending += chunk
                while outcome is None and b"\n" in chunk and b"\n" in pending:
                    line, _, rest = bytes(pending).partition(b"\n")
                    pending = bytearray(rest)
                    try:
                        message = json.loads(line.decode("utf-8", "replace"))
                    except (ValueError, RecursionError):
                        text = line.decode("utf-8", "replace").strip()
                        outcome = "sandbox_error"
                        # before the harness's first report: the sandbox's own error (bwrap prints one line)
                        detail = text[:300] if expect == "compiling" and text else f"unreadable report: {line[:100]!r}"
                        break
                    expect, index, test_deadline, outcome, detail, ok = _advance(
                        message, expect, index, test_deadline, limits, tests, fn_name, outputs)
                    passed += ok
                    if outcome is None and index == total and expect == "start":
                        outcome = "passed"
                if outcome is None and len(pending) > cap:
                    outcome, detail = "output_limit", f"more than {limits.output_mb} MiB of output in one test"
    except OSError as exc:
        outcome, detail = "sandbox_error", f"{type(exc).__name__}: {exc}"
    finally:
        sel.close()
        _kill(proc)
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        box.cleanup(handle)
    if outcome == "timeout" and expect == "compiled":
        outcome = "compile_error"
    return GradeResult(outcome == "passed", outcome, passed, total, outputs, detail)


def _advance(message, expect, index, test_deadline, limits, tests, fn_name, outputs):
    """One report line; returns (expect, index, test_deadline, outcome, detail, passed_now).
    The order is fixed: {"c": 0}, then {"c": 1, ...} or per test {"t": i} and {"r": i, ...}."""
    def bad(why):
        return expect, index, test_deadline, "sandbox_error", f"{why}: {str(message)[:100]}", 0

    if not isinstance(message, dict):
        return bad("unexpected report")
    now = time.monotonic()
    if expect == "compiling":
        if message != {"c": 0}:
            return bad("unexpected report")
        return "compiled", index, now + limits.test_seconds + 1, None, "", 0
    if expect == "compiled" and message.get("c") == 1:
        return expect, index, test_deadline, "compile_error", str(message.get("e", ""))[:300], 0
    if expect in ("compiled", "start"):
        if message != {"t": index}:
            return bad("unexpected report")
        return "result", index, now + limits.test_seconds + 1, None, "", 0
    # expect == "result"
    if message.get("r") != index or message.get("s") not in ("ok", "runtime_error", "timeout"):
        return bad("unexpected report")
    test = tests[index]
    if message["s"] != "ok":
        outputs.append(None)
        return expect, index, test_deadline, message["s"], str(message.get("e", ""))[:300], 0
    got = message.get("o")
    try:
        if fn_name is not None:  # call-based, as LiveCodeBench decides: by the problem's function name
            if not isinstance(got, (dict, list, str, int, float, bool, type(None))):
                return bad("unexpected report")
            value = _decode(got)
        elif isinstance(got, str):
            value = got
        else:
            return bad("unexpected report")
        ok = outputs_match(value, test["output"], "functional" if fn_name is not None else "stdin")
    except (ValueError, TypeError, KeyError, RecursionError, ArithmeticError) as exc:
        return bad(f"unreadable output ({type(exc).__name__})")
    outputs.append(hashlib.sha256(json.dumps(got, sort_keys=True).encode()).hexdigest()[:16])
    if not ok:
        return expect, index, test_deadline, "wrong_answer", f"test {index + 1} of {len(tests)}", 0
    return "start", index + 1, math.inf, None, "", 1


def run_program(program: str | None, tests: list[dict], fn_name: str | None = None,
                limits: Limits = Limits(), sandbox_name: str = "bubblewrap") -> GradeResult:
    """Run one program against its tests in the sandbox; pass only if every test passes. Any failure
    of this one program (its sandbox included) is its verdict, never an exception."""
    if program is None:
        return GradeResult(False, "no_program", 0, len(tests))
    box = sandbox(sandbox_name)  # a missing sandbox is the user's error: it stops the batch
    try:
        return _run(box, program, tests, fn_name, limits)
    except Exception as exc:  # noqa: BLE001 - one program's trouble stays its own verdict
        return GradeResult(False, "sandbox_error", 0, len(tests), detail=f"{type(exc).__name__}: {exc}"[:300])


def grade_many(jobs: list[tuple[str | None, list[dict], str | None]], limits: Limits = Limits(),
               workers: int | None = None, sandbox_name: str = "bubblewrap") -> list[GradeResult]:
    """Grade (program, tests, fn_name) jobs in parallel over the CPU cores; identical programs
    of the same problem run once."""
    workers = workers or max(1, os.cpu_count() or 1)
    if any(program is not None for program, _, _ in jobs):
        sandbox(sandbox_name)  # set up (or refuse) once, before the threads start
    keys = [hashlib.sha256(json.dumps([p, t, f], sort_keys=True).encode()).hexdigest() for p, t, f in jobs]
    unique = dict(zip(keys, jobs))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # threads wait; the work is in the sandboxes
        graded = dict(zip(unique, pool.map(lambda j: run_program(j[0], j[1], j[2], limits, sandbox_name),
                                           unique.values())))
    return [graded[k] for k in keys]


def check_tests(tests, where: str) -> list[dict]:
    if not isinstance(tests, list) or not tests:
        raise UserError(f"{where}: a code problem needs a non-empty 'tests' list")
    for t in tests:
        if not isinstance(t, dict) or t.get("testtype") not in ("stdin", "functional") or "input" not in t \
                or "output" not in t:
            raise UserError(f"{where}: each test needs input, output and testtype 'stdin' or 'functional'")
    return tests
