"""``python -m notallbits.gpucheck`` (``make gpu-check GPU=1``): what only a GPU can confirm,
in one command, in under 5 minutes on one GPU. Each check prints one line, PASS, FAIL or SKIP
(with why); the exit status is 1 when any check failed.

On a GPU machine it builds the tiny Qwen3 and its GPTQ 4-bit checkpoint, then runs through
the project's own ``notallbits generate`` (each job takes its device slot like a workflow job):
vLLM on CUDA in bf16 and as GPTQ 4-bit (repacked to Marlin: the log must say gptq_marlin),
with vLLM's multiprocess engine (its default; the CPU/GPU decision must not have touched CUDA
in the parent), both jobs at once on two device slots (the same GPU twice when there is one);
the transformers backend with the GPTQ checkpoint on CUDA (GPTQModel's Triton kernel, no
nvcc); vLLM on CUDA with the AWQ 4-bit and FP8 (128 x 128 block) checkpoints of a tiny Qwen3
whose every linear is a multiple of 128 (the log must name awq_marlin / the FP8 method); and the
device slot logic under the real CUDA_VISIBLE_DEVICES. It prints each job's
device facts and occupancy stats. On a CPU-only machine it runs what a CPU can and says which
checks it skipped for lack of a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Calibration text for the check's AWQ/FP8 quantization: fixed English text shipped with the tests.
CALIBRATION_TEXT = ROOT / "tests" / "data" / "calibration_corpus.txt"
PREFIX = "\n\n**Final Answer**\n\\boxed{"
JOB_TIMEOUT_S = 240
RESULTS: list[tuple[str, str, str]] = []


def report(status: str, name: str, detail: str) -> None:
    RESULTS.append((status, name, detail))
    print(f"{status:4} {name}: {detail}", flush=True)


def default_vllm_python() -> str | None:
    for cand in (os.environ.get("NOTALLBITS_VLLM_PYTHON"), ROOT / ".venv-vllm-gpu" / "bin" / "python",
                 ROOT / ".venv-vllm" / "bin" / "python"):
        if cand and Path(cand).exists():
            return str(cand)
    return None


def job_env(slot_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}  # vLLM's default engine
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               NOTALLBITS_SLOT_DIR=str(slot_dir), TOKENIZERS_PARALLELISM="false", **extra)
    return env


def spec(model: Path, backend: str, bits: int, **gen) -> dict:
    return {"dataset": "gpucheck", "model": "tiny", "model_path": str(model), "bits": bits, "kv": "full",
            "kv_settings": {"method": "full"}, "backend": backend, "budgets": [64, 256], "samples": 4,
            "sampling": {"temperature": 0.6, "top_p": 0.95, "seed": 0},
            "generation": {"wait_extension": True, "wait_text": "Wait", "answer_prefix": PREFIX,
                           "answer_max_tokens": 16, "batch_size": 16, "dtype": "bfloat16", "device": "auto",
                           "gpu_memory_utilization": 0.35, "max_num_seqs": 256, "max_model_len": None,
                           "gptq_kernel": "gptq_triton", **gen}}


def start_job(python: str, questions: Path, s: dict, out: Path, env: dict) -> tuple[subprocess.Popen, Path]:
    log = out.with_suffix(".log")
    fh = open(log, "w")
    proc = subprocess.Popen([python, "-m", "notallbits", "generate", "--questions", str(questions), "--spec",
                             json.dumps(s), "--out", str(out), "--progress", str(out.with_suffix(".progress"))],
                            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    proc.started = time.time()  # type: ignore[attr-defined]
    return proc, log


def finish_job(proc: subprocess.Popen, log: Path) -> tuple[int, float, str]:
    try:
        rc = proc.wait(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = -9
    return rc, time.time(), log.read_text(errors="replace")


def header_line(out: Path) -> str:
    from notallbits.io import read_framed_jsonl

    header, records = read_framed_jsonl(out)
    st, env = header["stats"], header.get("environment", {})
    occupancy = {k: st[k] for k in ("engine_steps", "mean_sequences_in_flight", "max_sequences_in_flight") if k in st}
    gpus = ", ".join(g.get("name", "?") for g in env.get("gpus", [])) or "none"
    libs = ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items())
    return (f"{len(records)} records, {st['generated_tokens']} tokens, {st['tokens_per_second']} tok/s, engine start "
            f"{st.get('engine_start_seconds')} s; occupancy {occupancy or 'not recorded'}; device {env.get('device')}"
            f" [{gpus}; driver {env.get('driver')}; CUDA_VISIBLE_DEVICES={env.get('cuda_visible_devices')}]; {libs}")


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def check_devices(gpus: int, work: Path) -> None:
    from notallbits.generation.devices import environment, machine_gpu_ids

    env = environment("cuda" if gpus else "cpu")
    names = ", ".join(g.get("name", "?") for g in env["gpus"]) or "none"
    report("PASS", "devices", f"{gpus} GPU(s) counted without CUDA (ids {machine_gpu_ids() or '-'}): {names}; driver "
           f"{env['driver']}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}; {env['libraries']}")
    if not gpus:
        report("SKIP", "device slots", "no GPU on this machine (the slot logic's CPU tests: tests/test_devices.py)")
        return
    holder = textwrap.dedent("""
        import json, time
        from notallbits.generation.devices import gpu_slot
        with gpu_slot(poll_seconds=0.05, timeout_seconds=60) as ids:
            start = time.time(); time.sleep(1.0)
            print(json.dumps({"ids": ids, "start": start, "end": time.time()}))
    """)
    n = min(gpus, 4)
    env = job_env(work / "slots-check")
    procs = [subprocess.Popen([sys.executable, "-c", holder], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(n + 1)]
    spans = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    ids = [s["ids"] for s in spans]
    shared = [(a["ids"], b["ids"]) for i, a in enumerate(spans) for b in spans[i + 1:]
              if set(a["ids"].split(",")) & set(b["ids"].split(",")) and a["start"] < b["end"] and b["start"] < a["end"]]
    ok = not shared and len(set(ids)) == n
    report("PASS" if ok else "FAIL", "device slots",
           f"{n + 1} holders under CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} got {ids}"
           + (f"; overlapping on {shared}" if shared else "; no device held twice at once"))


def check_vllm_platform(vllm_python: str | None, gpus: int, work: Path) -> str | None:
    """vLLM's platform as our backend decides it (NVML, no CUDA in the parent)."""
    if not vllm_python:
        report("SKIP", "vllm platform", "no vLLM interpreter (make vllm-env GPU=1, or NOTALLBITS_VLLM_PYTHON)")
        return None
    script = textwrap.dedent("""
        import torch
        def boom(*a, **k):
            raise AssertionError("the CPU/GPU decision touched torch.cuda in the parent")
        torch.cuda.is_available = torch.cuda.init = torch.cuda._lazy_init = torch.cuda.device_count = boom
        from notallbits.generation.vllm_backend import engine_platform
        print(engine_platform("auto"))
    """)
    proc = subprocess.run([vllm_python, "-c", script], capture_output=True, text=True, env=job_env(work / "slots"),
                          cwd=ROOT, timeout=300)
    platform = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else None
    expected = "cuda" if gpus else "cpu"
    ok = platform == expected
    report("PASS" if ok else "FAIL", "vllm platform",
           f"decided {platform} without touching torch.cuda (expected {expected})" if platform
           else last_line(proc.stderr))
    return platform if ok else None


def build_models(work: Path, gpus: int) -> dict[int, Path]:
    if not gpus:
        report("SKIP", "gptq 4-bit checkpoint", "no GPU: only GPU checks use it (CPU quantization: tests/test_toy.py)")
        return {}
    from notallbits.tinymodel import build

    models = {16: build(work / "tiny" / "w16")}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "notallbits", "quantize", "--model", str(models[16]), "--bits", "4",
                           "--out", str(work / "tiny" / "w4")], capture_output=True, text=True,
                          env=job_env(work / "slots"), cwd=ROOT, timeout=JOB_TIMEOUT_S)
    if proc.returncode == 0:
        models[4] = work / "tiny" / "w4"
        report("PASS", "gptq 4-bit checkpoint", f"quantized on the GPU in {time.time() - t0:.0f} s")
    else:
        report("FAIL", "gptq 4-bit checkpoint", last_line(proc.stderr))
    return models


def check_vllm_jobs(vllm_python: str | None, platform: str | None, models: dict, gpus: int, questions: Path,
                    work: Path) -> None:
    names = ("vllm bf16 (multiprocess engine)", "vllm gptq 4-bit (Marlin)", "two jobs in parallel")
    if not gpus:
        for name in names:
            report("SKIP", name, "no GPU on this machine")
        return
    if platform != "cuda":
        for name in names:
            report("FAIL", name, f"vLLM here does not run on CUDA ({platform or 'no vLLM interpreter'}):"
                                 " make vllm-env GPU=1")
        return
    # two slots on two GPUs; with one GPU, two slot folders put both jobs on it at once
    jobs = [("bf16", 16), ("gptq", 4)]
    procs = []
    for i, (name, bits) in enumerate(jobs):
        if bits not in models:
            continue
        slot_dir = work / ("slots" if gpus > 1 else f"slots-{i}")
        out = work / f"vllm-{name}.jsonl"
        procs.append((name, out, *start_job(vllm_python, questions, spec(models[bits], "vllm", bits), out,
                                            job_env(slot_dir))))
    spans = {}
    for name, out, proc, log in procs:
        rc, end, text = finish_job(proc, log)
        spans[name] = (proc.started, end, text)
        title = names[0] if name == "bf16" else names[1]
        if rc != 0:
            report("FAIL", title, f"exit {rc}: {last_line(text)} (log {log})")
            continue
        from notallbits.io import read_framed_jsonl

        device = read_framed_jsonl(out)[0].get("environment", {}).get("device")
        problems = []
        if device != "cuda":
            problems.append(f"ran on {device}")
        if "VLLM_ENABLE_V1_MULTIPROCESSING" in os.environ:
            problems.append("VLLM_ENABLE_V1_MULTIPROCESSING is set in this shell")
        if name == "gptq" and "gptq_marlin" not in text:
            problems.append("the log never says gptq_marlin")
        report("FAIL" if problems else "PASS", title, "; ".join(problems) + ("; " if problems else "") + header_line(out))
    if len(spans) == 2:
        (s1, e1, t1), (s2, e2, t2) = spans.values()
        used = [next((ln.split("using GPU(s) ")[1].split()[0] for ln in t.splitlines() if "using GPU(s) " in ln), "?")
                for t in (t1, t2)]
        overlap = min(e1, e2) - max(s1, s2)
        distinct = gpus == 1 or used[0] != used[1]
        report("PASS" if overlap > 0 and distinct else "FAIL", names[2],
               f"devices {used[0]} and {used[1]}, {overlap:.0f} s at the same time")
    else:
        report("SKIP", names[2], "a job above did not start")


def check_transformers_gptq(models: dict, gpus: int, questions: Path, work: Path) -> None:
    name = "transformers gptq 4-bit on cuda"
    if not gpus:
        report("SKIP", name, "no GPU on this machine")
        return
    if 4 not in models:
        report("SKIP", name, "no GPTQ checkpoint (see above)")
        return
    probe = textwrap.dedent(f"""
        from notallbits.generation.hf_backend import load_model
        model, _ = load_model({str(models[4])!r}, "bfloat16", "auto", "gptq_triton")
        print(type(model.model.layers[0].mlp.down_proj).__name__, model.device)
    """)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=job_env(work / "slots"),
                          cwd=ROOT, timeout=JOB_TIMEOUT_S)
    kernel = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else None
    out = work / "transformers-gptq.jsonl"
    proc2, log = start_job(sys.executable, questions, spec(models[4], "transformers", 4), out, job_env(work / "slots"))
    rc, _, text = finish_job(proc2, log)
    if rc != 0 or kernel is None:
        report("FAIL", name, f"exit {rc}: {last_line(text if rc else proc.stderr)} (log {log})")
        return
    nvcc = "nvcc" in text.lower()
    ok = "cuda" in kernel and "Triton" in kernel and not nvcc
    report("PASS" if ok else "FAIL", name, f"kernel {kernel}{'; the log mentions nvcc' if nvcc else ''}; "
           + header_line(out))


def check_vllm_awq_fp8(vllm_python: str | None, platform: str | None, gpus: int, questions: Path, work: Path) -> None:
    """vLLM on CUDA loads and generates from the AWQ 4-bit and FP8 checkpoints the quantize rule
    writes (notallbits/weights.py), on a tiny Qwen3 with 128-multiple linears so FP8 uses Qwen's
    own 128 x 128 blocks; the engine log must name the kernel it chose."""
    names = {"awq4": "vllm awq 4-bit", "fp8": "vllm fp8 (128x128 blocks)"}
    if not gpus or platform != "cuda":
        for name in names.values():
            report("SKIP" if not gpus else "FAIL", name, "no GPU on this machine" if not gpus
                   else f"vLLM here does not run on CUDA ({platform or 'no vLLM interpreter'})")
        return
    from notallbits.tinymodel import build

    src = build(work / "tiny128" / "w16", hidden_size=256, intermediate_size=512, num_attention_heads=4,
                num_key_value_heads=2, head_dim=64)
    kernels = {"awq4": ("awq_marlin", "awq"), "fp8": ("fp8",)}
    for tag, name in names.items():
        out_model = work / "tiny128" / f"w{tag}"
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "notallbits", "quantize", "--model", str(src), "--bits", tag,
                               "--settings", json.dumps({"calibration": {"source": str(CALIBRATION_TEXT),
                                                                         "samples": 16, "seq_len": 128}}),
                               "--out", str(out_model)], capture_output=True, text=True,
                              env=job_env(work / "slots"), cwd=ROOT, timeout=JOB_TIMEOUT_S)
        if proc.returncode != 0:
            report("FAIL", name, f"quantize: {last_line(proc.stderr)}")
            continue
        quantize_s = time.time() - t0
        s = {**spec(out_model, "vllm", 4 if tag == "awq4" else 8), "weight_method": "awq" if tag == "awq4" else "fp8"}
        out = work / f"vllm-{tag}.jsonl"
        rc, _, text = finish_job(*start_job(vllm_python, questions, s, out, job_env(work / "slots")))
        if rc != 0:
            report("FAIL", name, f"exit {rc}: {last_line(text)} (log {out.with_suffix('.log')})")
            continue
        lowered = text.lower()
        named = [k for k in kernels[tag] if k in lowered]
        report("PASS" if named else "FAIL", name, f"quantized in {quantize_s:.0f} s; log names {named or 'no kernel'}; "
               + header_line(out))


def check_verify_prm(models: dict, gpus: int, questions: Path, work: Path) -> None:
    """The verify step (PRM Best-of-N) on CUDA in bf16: a transformers job on the tiny model
    writes its thinking text, and a tiny random PRM of ActPRM-X's architecture scores it."""
    name = "verify (process reward model) on cuda"
    if not gpus or 16 not in models:
        report("SKIP", name, "no GPU on this machine")
        return
    from notallbits.verify import build_tiny

    prm = build_tiny(work / "tiny-prm")
    gen = work / "verify-generations.jsonl"
    proc, log = start_job(sys.executable, questions, {**spec(models[16], "transformers", 16), "thinking_text": True},
                          gen, job_env(work / "slots"))
    rc, _, text = finish_job(proc, log)
    if rc != 0:
        report("FAIL", name, f"generation exit {rc}: {last_line(text)} (log {log})")
        return
    out = work / "verify.jsonl"
    vspec = {"verifier": "tiny-prm", "source": str(prm), "aggregation": "min", "max_tokens": None,
             "batch_size": 8, "dtype": "bfloat16", "device": "auto"}
    proc = subprocess.run([sys.executable, "-m", "notallbits", "verify", "--questions", str(questions),
                           "--generations", str(gen), "--spec", json.dumps(vspec), "--out", str(out)],
                          capture_output=True, text=True, env=job_env(work / "slots"), cwd=ROOT, timeout=JOB_TIMEOUT_S)
    if proc.returncode != 0:
        report("FAIL", name, f"exit {proc.returncode}: {last_line(proc.stderr)}")
        return
    from notallbits.io import read_framed_jsonl

    header, rows = read_framed_jsonl(out)
    ok = str(header["device"]).startswith("cuda") and rows and all(0 <= r["score"] <= 1 for r in rows)
    report("PASS" if ok else "FAIL", name, f"{len(rows)} records scored on {header['device']} "
           f"({header['dtype']}, context {header['max_tokens']}); {last_line(proc.stderr)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m notallbits.gpucheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--vllm-python", default=default_vllm_python(),
                   help="interpreter of the vLLM environment ('' skips the vLLM checks)")
    p.add_argument("--work", help="folder for models, logs and outputs (default: a temporary folder, kept)")
    args = p.parse_args(argv)
    from notallbits.data.registry import demo_arith
    from notallbits.generation.devices import machine_gpu_ids, visible_gpu_count
    from notallbits.io import write_jsonl

    work = Path(args.work or tempfile.mkdtemp(prefix="notallbits-gpucheck-"))
    work.mkdir(parents=True, exist_ok=True)
    gpus = visible_gpu_count() if os.environ.get("CUDA_VISIBLE_DEVICES") is not None else len(machine_gpu_ids())
    print(f"notallbits GPU check: {gpus} GPU(s); work folder {work}", flush=True)
    t0 = time.time()
    questions = work / "questions.jsonl"
    write_jsonl(questions, demo_arith(4))
    check_devices(gpus, work)
    platform = check_vllm_platform(args.vllm_python, gpus, work)
    models = build_models(work, gpus)
    check_vllm_jobs(args.vllm_python, platform, models, gpus, questions, work)
    check_transformers_gptq(models, gpus, questions, work)
    check_vllm_awq_fp8(args.vllm_python, platform, gpus, questions, work)
    check_verify_prm(models, gpus, questions, work)
    counts = {s: sum(1 for r in RESULTS if r[0] == s) for s in ("PASS", "FAIL", "SKIP")}
    skipped = [n for s, n, _ in RESULTS if s == "SKIP"]
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in {time.time() - t0:.0f} s"
          + (f" (skipped: {', '.join(skipped)})" if skipped else ""), flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
