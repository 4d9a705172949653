"""Programs that attack the grader, each graded beside a correct sibling: every attack ends with the
attacker's own failing verdict, nothing written outside its sandbox, no process left behind, and
the sibling's verdict unchanged. Each attack here succeeded against an earlier grader."""

import os
import resource
import secrets
import socket
import sys
import tempfile
import time

import pytest

from notallbits import UserError
from notallbits import codegrade
from notallbits.codegrade import Limits, grade_many, run_program

ADD_TESTS = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
             {"input": "10 -4\n", "output": "6\n", "testtype": "stdin"}]
LIMITS = Limits(test_seconds=2.0)
# the sibling runs while the attacker does (it sleeps first), in a second worker
SIBLING = "import time\ntime.sleep(0.8)\na, b = map(int, input().split())\nprint(a + b)"
PLANTED = ("notallbits-code-x.harness.py", "planted.harness.py", "planted.py")
ANSWER = "\na, b = map(int, input().split())\nprint(a + b)\n"


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """A world-writable shared temporary folder (as /tmp is) and a working directory holding what
    an attacker wants; both must be left as they are."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    monkeypatch.setenv("TMPDIR", str(shared))
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert set(os.listdir(shared)) <= set(PLANTED), os.listdir(shared)  # nothing new


def children_of_this_process() -> list[int]:
    me, found = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                    found.append(int(pid))
        except (OSError, IndexError, ValueError):
            pass
    return found


def processes_named(name: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == name:
                    found.append(int(pid))
        except OSError:
            pass
    return found


def attack(program, tests=ADD_TESTS, limits=LIMITS):
    t0 = time.perf_counter()
    bad, sibling = grade_many([(program, tests, None), (SIBLING, ADD_TESTS, None)], limits=limits, workers=2)
    elapsed = time.perf_counter() - t0
    assert sibling.passed, sibling
    assert not bad.passed, bad
    assert children_of_this_process() == []
    return bad, elapsed


def test_a_planted_harness_is_never_run(outside):
    # files under every name the grader ever used in the shared folder; none may be read or run
    marker = outside / "pwned"
    for name in PLANTED:
        (outside / "tmp" / name).write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    program = ("import posix\nfd = posix.open('/tmp/planted-by-program.harness.py', posix.O_CREAT | posix.O_WRONLY)"
               + ANSWER)
    bad, _ = attack(program)
    assert bad.outcome == "runtime_error" and "FileNotFoundError" in bad.detail
    assert not marker.exists()


def test_clearing_the_graders_globals_does_not_open_the_sandbox(outside):
    target = outside / "escaped.txt"
    program = f"""
import sys, posix
main = sys.modules['__main__']
for name in list(vars(main)):
    if not name.startswith('__'):
        setattr(main, name, None)  # the harness's tables and functions
fd = posix.open({str(target)!r}, posix.O_CREAT | posix.O_WRONLY)
posix.write(fd, b'x')
""" + ANSWER
    bad, _ = attack(program)
    assert bad.outcome in ("runtime_error", "sandbox_error")
    assert not target.exists()


def test_dir_fd_mkfifo_and_mkdir_cannot_write_outside(outside):
    program = f"""
import posix
done = 0
for attempt in (lambda: posix.mkfifo({str(outside / 'fifo')!r}),
                lambda: posix.mkdir('escaped_dir', dir_fd=posix.open('/', posix.O_RDONLY)),
                lambda: posix.open('escaped', posix.O_CREAT | posix.O_WRONLY, dir_fd=posix.open('/', posix.O_RDONLY)),
                lambda: posix.open({str(outside / 'escaped')!r}, posix.O_CREAT | posix.O_WRONLY)):
    try:
        attempt()
        done += 1
    except OSError:
        pass
print(done)
"""
    bad, _ = attack(program, [{"input": "", "output": "4", "testtype": "stdin"}])
    assert bad.outcome == "wrong_answer"
    assert sorted(os.listdir(outside)) == ["tmp"]


def test_the_dataset_with_the_expected_outputs_cannot_be_read(outside):
    # a decoy where the real one would be: the project's results/data, world-readable
    data = outside / "results" / "data"
    data.mkdir(parents=True)
    (data / "livecodebench.jsonl").write_text('{"1 2": "3", "10 -4": "6"}\n')
    program = f"""
import json
answers = None
for path in ({str(data / 'livecodebench.jsonl')!r}, 'results/data/livecodebench.jsonl',
             '../results/data/livecodebench.jsonl'):
    try:
        answers = json.loads(open(path).read())
    except Exception:
        pass
print(answers[input().strip()])
"""
    # (the prelude's `from builtins import *` binds the real open(), as in LiveCodeBench)
    bad, _ = attack(program)
    assert bad.outcome == "runtime_error"


def test_the_parents_environment_is_not_visible(outside, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    bad, _ = attack("import os\nprint(os.environ.get('HF_TOKEN', 'none'))",
                    [{"input": "", "output": "hf_secret_token", "testtype": "stdin"}])
    assert bad.outcome == "wrong_answer"


def test_a_forked_setsid_survivor_holding_stdout_dies_with_the_sandbox(outside):
    name = "nab" + secrets.token_hex(5)
    program = f"""
import posix, ctypes, time
if posix.fork() == 0:
    posix.setsid()
    ctypes.CDLL(None).prctl(15, b{name!r}, 0, 0, 0)
    time.sleep(120)
    posix._exit(0)
time.sleep(0.5)
while True:
    pass
"""
    bad, elapsed = attack(program)
    assert bad.outcome == "timeout"
    assert elapsed < LIMITS.test_seconds + 6
    for _ in range(20):
        if not processes_named(name):
            break
        time.sleep(0.1)
    assert processes_named(name) == []


def test_a_program_cannot_signal_its_sibling(outside):
    # It looks for every process it may signal (signal 0 only checks), then kills them all, unless it
    # sees more than its own sandbox's few: then it only says so (and would pass). The sibling is
    # graded at the same time.
    program = """
import posix, signal, os
me = posix.getpid()
visible = []
for pid in sorted(set(range(1, 5000)) | set(range(max(2, me - 5000), me + 5000))):  # siblings start near it
    try:
        posix.kill(pid, 0)
        visible.append(pid)
    except OSError:
        pass
if len(visible) > 10:
    print("exposed")
else:
    for pid in visible:
        if pid != me:
            posix.kill(pid, 9)
            try:
                signal.pidfd_send_signal(os.pidfd_open(pid), 9)
            except OSError:
                pass
    print(len(visible))
"""
    bad, _ = attack(program, [{"input": "", "output": "exposed", "testtype": "stdin"}])
    assert bad.outcome in ("wrong_answer", "runtime_error")


@pytest.mark.parametrize("garbage", [b"\xff\xfe{oops\n{}\n", b'{"r": 0, "s": "ok", "o": "999\\n"}\n{}\n'])
def test_bad_bytes_and_fake_result_lines_are_the_programs_own_failure(outside, garbage):
    program = f"""
import posix
for fd in range(1, 64):
    try:
        posix.write(fd, {garbage!r})
    except OSError:
        pass
""" + ANSWER
    bad, _ = attack(program)
    assert bad.outcome in ("sandbox_error", "wrong_answer")


@pytest.mark.parametrize("program", ["print('x' * (64 * 2**20))",
                                     "import posix\nfor fd in range(3, 64):\n    try:\n"
                                     "        [posix.write(fd, b'x' * 2**20) for _ in range(64)]\n"
                                     "    except OSError:\n        pass"])
def test_a_64_mb_flood_is_cut_off(outside, program):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bad, elapsed = attack(program)
    assert bad.outcome == "output_limit"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: the parent kept little


@pytest.mark.parametrize("program", [
    "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.setitimer(signal.ITIMER_REAL, 0)\n"
    "while True:\n    pass",
    "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass",
])
def test_an_ignored_alarm_still_times_out(outside, program):
    bad, elapsed = attack(program)
    assert bad.outcome == "timeout"
    assert elapsed < LIMITS.test_seconds + 6


def test_no_network_even_to_a_listener_on_localhost(outside):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        program = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'x')" + ANSWER
        bad, _ = attack(program)
        assert bad.outcome == "runtime_error" and "Error" in bad.detail
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()


def test_a_fork_bomb_fails_and_leaves_nothing(outside):
    bad, _ = attack("import posix\nwhile True:\n    posix.fork()")
    assert bad.outcome in ("runtime_error", "timeout")


def test_the_scratch_folder_is_private_and_capped(outside):
    ok = "open('scratch.txt', 'w').write('x' * 2**20)\n" + ANSWER  # 1 MiB of the 64 MiB default
    assert run_program(ok, ADD_TESTS, limits=LIMITS).passed
    full = "data = b'x' * 2**20\nfor i in range(200):\n    open(f'f{i}', 'wb').write(data)" + ANSWER
    r = run_program(full, ADD_TESTS, limits=Limits(test_seconds=2.0, disk_mb=8))
    assert r.outcome == "runtime_error" and "No space left" in r.detail


def test_without_bubblewrap_grading_stops_with_the_install_line(monkeypatch):
    monkeypatch.setattr(codegrade.shutil, "which", lambda name: None)
    monkeypatch.setattr(codegrade.os.path, "exists", lambda path: False)
    monkeypatch.setattr(codegrade, "_SANDBOXES", {})
    with pytest.raises(UserError, match="apt-get install bubblewrap.*scoring.code_sandbox: process"):
        grade_many([("print(3)", ADD_TESTS, None)])


def test_the_weaker_sandbox_must_be_chosen_and_is_recorded():
    from notallbits.data.registry import demo_code
    from notallbits.scoring import score_job

    assert run_program("a, b = map(int, input().split())\nprint(a + b)", ADD_TESTS, limits=LIMITS,
                       sandbox_name="process").passed
    assert type(codegrade.sandbox("bubblewrap")).__name__ == "Bubblewrap"  # the strong one unless chosen
    assert codegrade.sandbox() is codegrade.sandbox("bubblewrap")
    assert type(codegrade.sandbox("process")).__name__ == "ProcessSandbox"
    q = demo_code()[0]
    records = [{"question_id": q["id"], "sample": 0, "budget_tokens": 16, "thinking_tokens": 1, "answer_tokens": 1,
                "answer_text": "```python\na, b = map(int, input().split())\nprint(a + b)\n```"}]
    rows, _ = score_job([q], records, [1], code_sandbox="process")
    assert rows[0]["code_sandbox"] == "process" and rows[0]["accuracy"] == 1.0
    rows, _ = score_job([q], records, [1])
    assert rows[0]["code_sandbox"] == "bubblewrap"


# ---------------------------------------------------------------- each sandbox built anew, seen from inside
LIBRARIES = "/usr/lib/x86_64-linux-gnu"  # Debian's multiarch folder: far more libraries than Python loads


@pytest.mark.skipif(not os.path.isdir(LIBRARIES), reason="no Debian multiarch library folder")
def test_a_fresh_bubblewrap_sandbox_is_what_its_options_promise(outside):
    """Built anew (grading reuses one), as bwrap's manual describes its options: host name
    "sandbox", user and group nobody (65534), a read-only root, only the variables set (and the PWD
    bwrap sets), no new user namespace (--disable-userns: unshare fails with ENOSPC), and of the
    system's library folder only the libraries the interpreter loads; no folder of the grader's
    sys.path outside the standard library (the module's docstring: no project folder, no packages),
    the standard library's own site-packages an empty read-only folder; the loader's cache (ld.so(8))
    is there."""
    host_libraries = len(os.listdir(LIBRARIES))
    # the grader's import folders other than the standard library's (installed packages, the project)
    stdlib = os.path.dirname(os.path.realpath(os.__file__))
    outside_stdlib = [os.path.realpath(p) for p in sys.path
                      if p and os.path.isdir(p) and not os.path.realpath(p).startswith(stdlib)]
    assert outside_stdlib
    packages = os.path.join(stdlib, "site-packages")  # some installs keep packages inside the stdlib: hidden
    program = f"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
print(os.uname().nodename, os.getuid(), os.getgid(), os.access("/", os.W_OK))
print(sorted(os.environ.items()))
print(libc.unshare(0x10000000), errno.errorcode.get(ctypes.get_errno()))
print(0 < len(os.listdir({LIBRARIES!r})) < {host_libraries} // 4)
print([p for p in {outside_stdlib!r} if os.path.exists(p)], os.path.exists("/etc/ld.so.cache"))
if os.path.isdir({packages!r}):
    try:
        open({packages!r} + "/planted.py", "w")
    except OSError as exc:
        print(os.listdir({packages!r}), errno.errorcode[exc.errno])
"""
    env = {"HOME": "/scratch", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PWD": "/scratch",
           "TMPDIR": "/scratch"}
    want = f"sandbox 65534 65534 False\n{sorted(env.items())}\n-1 ENOSPC\nTrue\n[] True\n" \
        + ("[] EROFS\n" if os.path.isdir(packages) else "")
    result = codegrade._run(codegrade.Bubblewrap(), program, [{"input": "", "output": want, "testtype": "stdin"}],
                            None, LIMITS)
    assert result.passed, result


def _pids_hierarchy():
    """Where root may make pids cgroups: v2 with pids delegated at the top, or v1's pids hierarchy."""
    try:
        with open("/sys/fs/cgroup/cgroup.subtree_control") as f:
            if "pids" in f.read().split():
                return "/sys/fs/cgroup"
    except OSError:
        pass
    return "/sys/fs/cgroup/pids" if os.path.isfile("/sys/fs/cgroup/pids/cgroup.procs") else None


@pytest.mark.skipif(os.geteuid() != 0 or not _pids_hierarchy() or not os.access(_pids_hierarchy() or "/", os.W_OK),
                    reason="needs root and a writable pids cgroup hierarchy")
def test_as_root_a_bubblewrap_sandbox_runs_in_its_own_pids_cgroup(outside):
    """RLIMIT_NPROC does not count root's processes; the kernel's pids controller does: the sandbox
    starts inside a new cgroup of the pids hierarchy whose pids.max is the limit + 4 (bwrap's two
    processes and the harness), and the cgroup is gone after cleanup."""
    box = codegrade.Bubblewrap()
    proc, cgroup = box.start(Limits(test_seconds=2.0, processes=7))
    try:
        assert os.path.dirname(cgroup) == _pids_hierarchy()
        with open(os.path.join(cgroup, "pids.max")) as f:
            assert f.read().strip() == "11"
        deadline = time.monotonic() + 10
        while str(proc.pid) not in open(os.path.join(cgroup, "cgroup.procs")).read().split():
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        codegrade._kill(proc)
        box.cleanup(cgroup)
    assert not os.path.exists(cgroup)
    # a sandbox that cannot be started leaves no cgroup behind
    before = set(os.listdir(_pids_hierarchy()))

    def refuse(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codegrade.subprocess, "Popen", refuse)
        with pytest.raises(OSError):
            box.start(LIMITS)
    assert set(os.listdir(_pids_hierarchy())) == before


def test_a_fresh_process_sandbox_is_nobody_in_a_private_scratch_folder(outside):
    """The weaker sandbox, built anew: as root the program runs as nobody; only PATH, HOME, TMPDIR and
    LANG are set, HOME and TMPDIR being its own new folder in the shared temporary folder (which
    the fixture checks is left as it was)."""
    uid = 65534 if os.geteuid() == 0 else os.geteuid()
    gid = 65534 if os.geteuid() == 0 else os.getegid()
    program = f"""
import os
home = os.environ["HOME"]
print(os.getuid(), os.getgid(), sorted(os.environ), os.environ["PATH"], os.environ["LANG"])
print(os.environ["TMPDIR"] == home, os.path.dirname(home) == {str(outside / "tmp")!r}, os.listdir("."))
"""
    want = (f"{uid} {gid} {['HOME', 'LANG', 'OMP_NUM_THREADS', 'PATH', 'TMPDIR']} /usr/bin:/bin C.UTF-8\n"
            "True True []\n")
    result = codegrade._run(codegrade.ProcessSandbox(), program, [{"input": "", "output": want, "testtype": "stdin"}],
                            None, LIMITS)
    assert result.passed, result


@pytest.mark.parametrize("files, writable, found", [
    # cgroup v2: the top's cgroup.subtree_control lists the controllers enabled for children
    ({"/sys/fs/cgroup/cgroup.subtree_control": "cpuset cpu io memory pids\n"}, {"/sys/fs/cgroup"}, "/sys/fs/cgroup"),
    ({"/sys/fs/cgroup/cgroup.subtree_control": "cpuset cpu io memory\n", "/sys/fs/cgroup/pids/cgroup.procs": ""},
     {"/sys/fs/cgroup", "/sys/fs/cgroup/pids"}, "/sys/fs/cgroup/pids"),
    ({"/sys/fs/cgroup/cgroup.subtree_control": "pids\n"}, set(), None),  # read-only (a container's view)
    # cgroup v1: one hierarchy per controller, pids under /sys/fs/cgroup/pids
    ({"/sys/fs/cgroup/pids/cgroup.procs": ""}, {"/sys/fs/cgroup/pids"}, "/sys/fs/cgroup/pids"),
    ({"/sys/fs/cgroup/pids/cgroup.procs": ""}, set(), None),
    ({"/sys/fs/cgroup/pids/tasks": ""}, {"/sys/fs/cgroup/pids"}, None),
    ({}, {"/sys/fs/cgroup", "/sys/fs/cgroup/pids"}, None),
])
def test_the_pids_hierarchy_is_found_in_the_kernels_cgroup_layouts(monkeypatch, files, writable, found):
    """The kernel's two layouts (Documentation/admin-guide/cgroup-v2.rst, cgroup-v1/pids.rst), as
    files the lookup reads: where root may make a pids cgroup, or None."""
    import io

    def fake_open(path, *args, **kwargs):
        if path not in files:
            raise FileNotFoundError(path)
        return io.StringIO(files[path])

    monkeypatch.setattr(codegrade, "open", fake_open, raising=False)
    monkeypatch.setattr(codegrade.os.path, "isfile", lambda path: path in files)
    monkeypatch.setattr(codegrade.os, "access", lambda path, mode: mode == os.W_OK and path in writable)
    assert codegrade._cgroup_pids_root() == found


@pytest.mark.skipif(not os.path.exists("/usr/bin/bwrap"), reason="bwrap is not where Debian installs it")
def test_bwrap_is_taken_from_the_path_else_where_distributions_install_it(monkeypatch, tmp_path):
    import shutil

    link = tmp_path / "bwrap"
    link.symlink_to("/usr/bin/bwrap")
    which = shutil.which
    monkeypatch.setattr(codegrade.shutil, "which", lambda name: str(link) if name == "bwrap" else which(name))
    assert codegrade.Bubblewrap().prefix[0] == str(link)
    monkeypatch.setattr(codegrade.shutil, "which", lambda name: None if name == "bwrap" else which(name))
    assert codegrade.Bubblewrap().prefix[0] == "/usr/bin/bwrap"  # the first of /usr/bin/bwrap, /bin/bwrap
    if os.path.exists("/bin/bwrap"):  # merged /usr: /bin is a link to usr/bin
        exists = os.path.exists
        monkeypatch.setattr(codegrade.os.path, "exists", lambda p: p != "/usr/bin/bwrap" and exists(p))
        assert codegrade.Bubblewrap().prefix[0] == "/bin/bwrap"


def test_the_sandbox_runs_the_base_interpreter_not_the_venvs(outside, monkeypatch):
    """A venv's python (sys.executable) may be a copy or a launcher that needs its venv folder, which
    the sandbox does not show: the sandbox binds and runs the interpreter the venv was made from."""
    monkeypatch.setattr(codegrade.sys, "executable", "/nonexistent/venv/bin/python")
    box = codegrade.Bubblewrap()
    assert box.python == os.path.realpath(sys._base_executable) and box.python_args[0] == box.python


def test_not_root_no_cgroup_is_looked_for(outside, monkeypatch):
    """RLIMIT_NPROC counts the processes of a user who is not root: no pids cgroup, no change of user."""
    monkeypatch.setattr(codegrade.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(codegrade, "_cgroup_pids_root", lambda: "/sys/fs/cgroup")
    box = codegrade.Bubblewrap()
    assert (box.cgroups, box.as_nobody) == (None, False)



def test_a_long_right_answer_is_not_cut_off():
    """The cap is on megabytes of output (16 MiB a test): 200,000 lines of a right answer (400 kB,
    LiveCodeBench graders compare outputs of that size) pass."""
    want = "7\n" * 200_000
    result = run_program("print('7\\n' * 200000, end='')", [{"input": "", "output": want, "testtype": "stdin"}],
                         limits=LIMITS)
    assert result.passed, result


def test_bwraps_own_error_is_the_detail_of_a_sandbox_that_cannot_start(tmp_path):
    """bwrap reports a bind of a missing path on its stderr ("bwrap: Can't find source path ..."),
    before the harness runs: that line, not a generic one, is the detail."""
    box = codegrade.Bubblewrap()
    box.prefix = [*box.prefix, "--ro-bind", str(tmp_path / "missing"), "/missing"]
    result = codegrade._run(box, "print(3)", [{"input": "", "output": "3\n", "testtype": "stdin"}], None, LIMITS)
    assert result.outcome == "sandbox_error" and result.detail.startswith("bwrap: ") and "missing" in result.detail


@pytest.mark.skipif(not os.path.isdir(LIBRARIES), reason="no Debian multiarch library folder")
def test_without_ldd_the_sandbox_binds_the_systems_library_folders(outside, monkeypatch):
    """Where ldd is missing, the libraries are not known one by one: the system's library folders
    are bound read-only whole, and the interpreter still starts inside."""
    monkeypatch.setattr(codegrade.shutil, "which", lambda name, which=codegrade.shutil.which: None if name == "ldd"
                        else which(name))
    host_libraries = len(os.listdir(LIBRARIES))
    program = f"import os\nprint(len(os.listdir({LIBRARIES!r})) == {host_libraries})"
    result = codegrade._run(codegrade.Bubblewrap(), program, [{"input": "", "output": "True\n", "testtype": "stdin"}],
                            None, LIMITS)
    assert result.passed, result


def test_a_bubblewrap_the_kernel_refuses_stops_grading_with_its_own_error(tmp_path, monkeypatch):
    """Where the kernel refuses bwrap's namespaces, bwrap prints one line and exits: the trial run
    at set-up turns that line into the one-line error that stops grading."""
    fake = tmp_path / "bwrap"
    fake.write_text('#!/bin/sh\n[ "$1" = --help ] && exec /usr/bin/bwrap --help\n'
                    'echo "bwrap: setting up uid map: Permission denied" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setattr(codegrade.shutil, "which", lambda name, which=codegrade.shutil.which: str(fake)
                        if name == "bwrap" else which(name))
    with pytest.raises(UserError, match=r"\(bwrap: setting up uid map: Permission denied\); user namespaces"):
        codegrade.Bubblewrap()


FLAGS = "import sys\nprint(sys.flags.isolated, sys.flags.no_site, sys.flags.dont_write_bytecode, sys.flags.bytes_warning)"


@pytest.mark.parametrize("make", [codegrade.Bubblewrap, codegrade.ProcessSandbox])
def test_the_interpreter_runs_isolated_without_site_or_bytecode(outside, make):
    """python -I -S -B (its manual): no PYTHON* variables or user site folder, no site module, no
    .pyc written; and no -b (bytes warnings)."""
    result = codegrade._run(make(), FLAGS, [{"input": "", "output": "1 1 1 0\n", "testtype": "stdin"}], None, LIMITS)
    assert result.passed, result


def test_the_process_sandbox_kills_a_program_that_ignores_its_alarm(outside):
    """The weaker sandbox's program runs in its own session: the kill from outside, one second after
    the test's limit, reaches it and everything it started."""
    program = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"
    t0 = time.perf_counter()
    result = codegrade._run(codegrade.ProcessSandbox(), program, ADD_TESTS, None, Limits(test_seconds=0.5))
    assert result.outcome == "timeout" and time.perf_counter() - t0 < 0.5 + 1 + 4, result
    assert children_of_this_process() == []


def test_the_process_sandboxs_limits_and_user(outside, monkeypatch):
    """As root the program becomes nobody, whose process count all sandboxes share: RLIMIT_NPROC 256
    (/proc/self/limits, which the weaker sandbox sees); a sandbox not asked to drop runs as the
    grader's user under the grader's own process limit."""
    program = "import os\nlimit = [l for l in open('/proc/self/limits', 'rb').read().decode().splitlines() " \
              "if l.startswith('Max processes')][0].split()[2]\nprint(os.getuid(), limit)"
    box = codegrade.ProcessSandbox()
    if box.as_nobody:
        result = codegrade._run(box, program, [{"input": "", "output": "65534 256\n", "testtype": "stdin"}], None,
                                LIMITS)
        assert result.passed, result
    box.as_nobody = False
    soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    want = f"{os.geteuid()} {'unlimited' if soft == resource.RLIM_INFINITY else soft}\n"
    result = codegrade._run(box, program, [{"input": "", "output": want, "testtype": "stdin"}], None, LIMITS)
    assert result.passed, result


def test_the_process_sandboxs_program_may_remove_its_own_folder(outside):
    """The scratch folder is the program's: removing it (posix.rmdir escapes the guard) leaves the
    program's verdict its own, not a failure of the grader's clean-up."""
    program = "import posix\nposix.rmdir('../' + posix.getcwd().rsplit('/', 1)[1])\n" + ANSWER
    result = codegrade._run(codegrade.ProcessSandbox(), program, ADD_TESTS[:1], None, LIMITS)  # one test: one rmdir
    assert result.passed, result


def test_a_process_sandbox_that_cannot_start_says_why_and_leaves_nothing(outside, tmp_path):
    """An interpreter that refuses to start says so on stderr: that line is the detail. One that
    cannot be run at all raises, and its scratch folder is removed first."""
    box = codegrade.ProcessSandbox()
    box.python = "/bin/sh"  # sh refuses python's options: "/bin/sh: 0: Illegal option -S" (dash) on stderr
    result = codegrade._run(box, ANSWER, ADD_TESTS, None, LIMITS)
    assert result.outcome == "sandbox_error" and result.detail.startswith("/bin/sh: ") and "llegal option" in \
        result.detail, result
    box.python = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        box.start(LIMITS)


def test_as_root_without_a_pids_cgroup_bwrap_runs_as_nobody(monkeypatch):
    """Root's processes escape RLIMIT_NPROC: where no pids cgroup can be made, bwrap itself is
    started as nobody (65534), whose processes the limit counts."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    monkeypatch.setattr(codegrade, "_cgroup_pids_root", lambda: None)
    monkeypatch.setattr(codegrade.Bubblewrap, "_check", lambda self: None)  # nobody may not read this interpreter
    box = codegrade.Bubblewrap()
    assert (box.cgroups, box.as_nobody) == (None, True)
    proc, cgroup = box.start(LIMITS)
    try:
        status = open(f"/proc/{proc.pid}/status").read().splitlines()
        ids = {line.split()[0]: line.split()[1:] for line in status if line.startswith(("Uid:", "Gid:", "Groups:"))}
        assert (ids["Uid:"][0], ids["Gid:"][0], ids["Groups:"], cgroup) == ("65534", "65534", [], None)
    finally:
        codegrade._kill(proc)


def test_a_bwrap_older_than_0_8_is_refused_naming_what_it_lacks(tmp_path, monkeypatch):
    """--size and --perms (the scratch folder's cap) came with bubblewrap 0.8; --clearenv,
    --die-with-parent and --new-session keep the sandbox clean and short-lived."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\n/usr/bin/bwrap --help | grep -v -e --size -e --perms\n")
    fake.chmod(0o755)
    monkeypatch.setattr(codegrade.shutil, "which", lambda name, which=codegrade.shutil.which: str(fake)
                        if name == "bwrap" else which(name))
    with pytest.raises(UserError, match=r"too old for the code sandbox \(no --size, --perms; bubblewrap 0.8"):
        codegrade.Bubblewrap()


def test_grade_many_runs_one_program_per_core_and_needs_no_sandbox_without_programs(monkeypatch):
    """Programs are graded over the CPU cores (one thread each waits on a sandbox), or as many as asked;
    a batch in which no program was extracted fails every test without setting up a sandbox, as
    LiveCodeBench grades an empty program; the sandbox chosen grades them all."""
    from notallbits.codegrade import ThreadPoolExecutor

    pools = []
    monkeypatch.setattr(codegrade, "ThreadPoolExecutor", lambda max_workers: pools.append(max_workers)
                        or ThreadPoolExecutor(max_workers=max_workers))
    monkeypatch.setattr(codegrade.shutil, "which", lambda name: None)  # no bwrap: nothing may need it
    monkeypatch.setattr(codegrade.os.path, "exists", lambda path: False)
    monkeypatch.setattr(codegrade, "_SANDBOXES", {})
    jobs = [(None, ADD_TESTS, None)]
    for cores, workers, want in ((os.cpu_count(), None, os.cpu_count()), (1, None, 1), (None, None, 1), (8, 3, 3)):
        monkeypatch.setattr(codegrade.os, "cpu_count", lambda cores=cores: cores)
        results = grade_many(jobs, workers=workers)
        assert [(r.outcome, r.tests_passed, r.tests_total) for r in results] == [("no_program", 0, 2)]
        assert pools.pop() == want
    # the weaker sandbox, where chosen, grades every program of the batch (bubblewrap is missing here)
    results = grade_many([(ANSWER, ADD_TESTS, None)], limits=LIMITS, sandbox_name="process")
    assert [r.outcome for r in results] == ["passed"]
