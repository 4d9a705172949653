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
