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
