"""The GPTQ quantizer: settings explicit and recorded, scratch that never outlives the job,
and real calibration measurably better than three short sentences on a model that learned."""

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CALIBRATION_CORPUS, ROOT

TOY_L = ROOT / "models" / "toy" / "toy-l"


def test_checkpoint_records_classic_gptq_settings(gptq_models):
    for bits, folder in gptq_models.items():
        ours = json.loads((folder / "notallbits.json").read_text())
        theirs = json.loads((folder / "quantize_config.json").read_text())  # written by GPTQModel itself
        q = ours["quantizer"]
        assert (q["bits"], q["group_size"], q["sym"], q["desc_act"]) == (bits, 128, True, False)
        assert (theirs["bits"], theirs["group_size"], theirs["sym"], theirs["desc_act"]) == (bits, 128, True, False)
        # auto-gptq's defaults (damp 0.01, no GPTQModel-only act_group_aware), not GPTQModel 7.6's (0.05, on)
        assert q["damp_percent"] == theirs["meta"]["damp_percent"] == 0.01
        assert q["act_group_aware"] is theirs["meta"]["act_group_aware"] is False
        assert theirs["meta"]["static_groups"] is False and theirs["meta"]["true_sequential"] is True
        assert theirs["meta"]["mse"] == 0.0 and theirs["format"] == "gptq" and theirs["lm_head"] is False
        assert ours["calibration"]["samples"] == 16 and ours["calibration_tokens"] == 16 * 128
        from gptqmodel.version import __version__

        assert ours["gptqmodel_version"] == __version__  # the quantizer that wrote it
        assert ours["quantize_seconds"] > 0 and ours["quantize_seconds"] == round(ours["quantize_seconds"], 2)


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_quantize_records_the_calibration_gptqmodel_was_given(tiny_model, tmp_path, monkeypatch, capfd):
    """Two small GPTQ runs of the tiny model: with the schema's default calibration source
    (WikiText-2; the hub stood in for by the local corpus) and with token lists given directly."""
    import datasets

    from notallbits.quantization import gpus_needed, quantize, run

    assert [gpus_needed(argparse.Namespace(device=d)) for d in ("cpu", "auto", "cuda")] == [0, 1, 1]
    calls = []
    docs = CALIBRATION_CORPUS.read_text().split("\n\n")
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda *a, **k: calls.append(a) or datasets.Dataset.from_dict({"text": docs}))
    monkeypatch.delenv("GPTQMODEL_CPU_WORKERS", raising=False)
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    # through the command, as the workflow calls it: the config's whole quantization section
    run(argparse.Namespace(model=str(tiny_model), out="w4", bits="4", device="cpu", calibration_file=None,
                           settings=json.dumps({"group_size": 32, "calibration": {"samples": 2, "seq_len": 16}})))
    wall = time.perf_counter() - started
    rec = json.loads((tmp_path / "w4" / "notallbits.json").read_text())
    assert calls == [("wikitext", "wikitext-2-raw-v1")]
    assert rec["calibration"] == {"source": "wikitext2", "samples": 2, "seq_len": 16, "seed": 0}
    assert rec["calibration_tokens"] == 2 * 16 and rec["quantizer"]["group_size"] == 32
    assert (rec["built_by"], rec["source_model"]) == ("notallbits.quantization", str(tiny_model))
    assert 0 < rec["quantize_seconds"] <= wall
    err = capfd.readouterr().err
    assert "loss" in err  # GPTQModel's per-module log, from its ./logs in the scratch
    assert json.loads(err.split("wrote gptq-4 checkpoint")[0].strip().splitlines()[-1]) == rec  # what run() reports
    theirs = json.loads((tmp_path / "w4" / "quantize_config.json").read_text())  # GPTQModel's own record
    assert (theirs["bits"], theirs["group_size"]) == (4, 32)
    assert 1 <= int(os.environ["GPTQMODEL_CPU_WORKERS"]) <= 8  # GPTQModel's CPU pool, sized for this host
    assert sorted(os.listdir(tmp_path)) == ["w4"]  # scratch and offload folder gone, nothing in the cwd
    # 12 tokens each: GPTQModel 7.6 drops samples of <= 10 tokens whatever calibration_data_min_length says
    short = [list(range(start, start + 12)) for start in (11, 31, 51)]
    given = quantize(str(tiny_model), "w8", 8, samples=short)
    assert given["calibration"] == {"source": "given", "samples": 3} and given["calibration_tokens"] == 36
    assert json.loads((tmp_path / "w8" / "quantize_config.json").read_text())["bits"] == 8
    # the section's GPTQ options and calibration do not apply to FP8: left out, not refused
    section = {"group_size": 128, "damp_percent": 0.01, "fp8_block": 64, "calibration": {"samples": 2}}
    run(argparse.Namespace(model=str(tiny_model), out="wfp8", bits="fp8", device="cpu", calibration_file=None,
                           settings=json.dumps(section)))
    fp8 = json.loads((tmp_path / "wfp8" / "notallbits.json").read_text())
    assert fp8["quantizer"]["weight_block_size"] == [64, 64]
    assert fp8["calibration"] is None and fp8["calibration_tokens"] == 0
    # in the layout of Qwen's -FP8 checkpoints (Qwen3-8B-FP8's config.json), GPTQModel's own record gone
    assert json.loads((tmp_path / "wfp8" / "config.json").read_text())["quantization_config"] == {
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [64, 64]}
    assert not (tmp_path / "wfp8" / "quantize_config.json").exists()
    if not torch_cuda_available():  # asked for a GPU the host's torch cannot use: refused, not run on the CPU
        from notallbits import UserError

        with pytest.raises(UserError, match="cannot use CUDA"):
            quantize(str(tiny_model), "wcuda", 8, samples=short, device="cuda")


def test_summary_carries_the_settings(gptq_models):
    from notallbits.generation.run import model_facts

    facts = json.loads(model_facts(str(gptq_models[4]))["quant_settings"])
    assert facts["quantizer"]["damp_percent"] == 0.01 and facts["calibration"]["seq_len"] == 128


# ---------------------------------------------------------------- scratch (#13.7)
def _quantize_cmd(model, out, corpus):
    settings = {"calibration": {"source": str(corpus), "samples": 64, "seq_len": 128}}
    return [sys.executable, "-m", "notallbits", "quantize", "--model", str(model), "--bits", "4",
            "--settings", json.dumps(settings), "--out", str(out)]


def _leftovers(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith(("gptq-", "gptqmodel_")))


@pytest.mark.slow
def test_killed_quantize_job_leaves_no_scratch(tiny_model, tmp_path):
    tmpdir = tmp_path / "tmp"  # the job's TMPDIR: private, so other jobs' folders cannot confuse the test
    tmpdir.mkdir()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CALIBRATION_CORPUS.read_text())
    out = tmp_path / "models" / "w4"
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        log = tmp_path / f"log-{sig.name}"
        with open(log, "w") as fh:
            proc = subprocess.Popen(_quantize_cmd(tiny_model, out, corpus), stdout=fh, stderr=fh, env=env,
                                    cwd=tmp_path)
        deadline = time.time() + 600
        while "Calibration:" not in log.read_text(errors="replace"):  # GPTQModel is quantizing
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) != 0
        assert _leftovers(tmpdir) == [], sig
        assert not out.exists()
        if sig == signal.SIGTERM:  # exits through the cleanup
            assert sorted(p.name for p in out.parent.iterdir()) == [], "scratch beside the output"
    # the rerun removes what kill -9 left beside the output, and succeeds
    proc = subprocess.run(_quantize_cmd(tiny_model, out, corpus), capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").exists() and (out / "notallbits.json").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["w4"]
    assert _leftovers(tmpdir) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "corpus.txt", "log-SIGKILL", "log-SIGTERM", "models", "tmp"]


# ---------------------------------------------------------------- calibration quality
def heldout_stats(bf16_path, paths, problems: int = 48) -> list[tuple[float, float]]:
    """(perplexity, mean KL(bf16 || model) per token) on the worked solutions of held-out
    evaluation problems (seed 0, never trained on), over the assistant part as in training."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from notallbits.generation.prompts import build_prompt
    from notallbits.toy.task import toy_questions, worked_answer
    from notallbits.toy.train import ANSWER_PREFIX

    tok = AutoTokenizer.from_pretrained(bf16_path)
    rng = random.Random(0)
    texts = []
    for task in ("math", "choice"):
        for rec in toy_questions(problems, 0, task):
            thinking, final = worked_answer(rec, rng)
            p = tok.encode(build_prompt(tok, rec, style="toy"), add_special_tokens=False)
            texts.append((p, tok.encode(f"{thinking}</think>{ANSWER_PREFIX}{final}}}<|im_end|>",
                                        add_special_tokens=False)))

    def logprobs(path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto", device_map="cpu").eval()
        with torch.inference_mode():
            return [torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1:-1].float(), -1)
                    for p, c in texts]

    ref = logprobs(bf16_path)
    n = sum(len(c) for _, c in texts)
    out = []
    for path in paths:
        lps = ref if path == bf16_path else logprobs(path)
        nll = -sum(lp[torch.arange(len(c)), torch.tensor(c)].sum().item() for lp, (_, c) in zip(lps, texts))
        kl = sum((r.exp() * (r - lp)).sum().item() for r, lp in zip(ref, lps))
        out.append((math.exp(nll / n), kl / n))
    return out


@pytest.mark.slow
def test_real_calibration_beats_three_short_sentences(tmp_path):
    """toy-l (a model that learned its task) quantized with its own traces on its training
    problems (the demo's calibration) vs the three short sentences cycled to 128 samples that
    the quantizer used before. Figures: docs/weight-formats.md, "GPTQ calibration on toy-l"."""
    from notallbits.calibration_traces import generate_traces
    from notallbits.data.registry import load
    from notallbits.io import write_jsonl
    from notallbits.quantization import SHORT_SENTENCES, quantize

    write_jsonl(tmp_path / "train.jsonl", load({"loader": "toy_train", "limit": 128}))
    traces = tmp_path / "traces.jsonl"
    generate_traces(str(TOY_L), str(tmp_path / "train.jsonl"), str(traces), 128, 256, 0, 0.6, 0.95, "toy",
                    device="cpu", batch_size=32)
    real = {"source": "traces", "samples": 128, "seq_len": 256, "seed": 0}
    quantize(str(TOY_L), str(tmp_path / "w4"), 4, calibration=real, calibration_file=str(traces))
    quantize(str(TOY_L), str(tmp_path / "w4-short"), 4, samples=[SHORT_SENTENCES[i % 3] for i in range(128)])
    quantize(str(TOY_L), str(tmp_path / "w8"), 8, calibration=real, calibration_file=str(traces))
    paths = [str(TOY_L), str(tmp_path / "w4"), str(tmp_path / "w4-short"), str(tmp_path / "w8")]
    (bf16, _), (ppl4, kl4), (ppl4_short, kl4_short), (ppl8, _) = heldout_stats(str(TOY_L), paths)
    print(f"bf16 {bf16:.6f}  4-bit traces {ppl4:.6f} (KL {kl4:.3e})  4-bit short {ppl4_short:.6f} "
          f"(KL {kl4_short:.3e})  8-bit traces {ppl8:.6f}")
    assert ppl4 < ppl4_short
    assert kl4 < kl4_short / 2  # the sensitive measure: the real calibration stays closer to bf16
    assert abs(ppl8 / bf16 - 1) < 0.01


def test_quantizer_settings_of_each_format_as_the_reference_checkpoints_record_them():
    from notallbits import UserError
    from notallbits.quantization import quantizer_settings

    # AutoAWQ's GEMM checkpoints (Qwen's -AWQ): 4-bit, zero point, group 128, int32 packing
    assert quantizer_settings("awq-4") == {"method": "awq", "bits": 4, "group_size": 128, "sym": False,
                                           "format": "gemm", "pack_dtype": "int32", "batch_size": 4}
    assert quantizer_settings("awq-4", {"group_size": 64})["group_size"] == 64
    # Qwen's -FP8 checkpoints: E4M3, 128 x 128 blocks, dynamic activation scales
    assert quantizer_settings("fp8") == {"method": "fp8", "bits": 8, "format": "float8_e4m3fn",
                                         "weight_scale_method": "block", "activation_scheme": "dynamic",
                                         "weight_block_size": [128, 128]}
    assert quantizer_settings("fp8", {"fp8_block": 64})["weight_block_size"] == [64, 64]
    with pytest.raises(UserError, match="'group_size' does not apply to fp8"):
        quantizer_settings("fp8", {"group_size": 64})
    g4, g8 = quantizer_settings(4), quantizer_settings("gptq-8", {"group_size": 32})
    assert (g4["method"], g4["bits"], g4["group_size"], g4["batch_size"], g4["damp_auto_increment"]) == (
        "gptq", 4, 128, 4, 0.01)
    assert (g8["bits"], g8["group_size"]) == (8, 32)
    with pytest.raises(UserError, match="unknown quantizer option 'fp8_block'"):
        quantizer_settings(4, {"fp8_block": 64})
    with pytest.raises(UserError, match="desc_act and act_group_aware exclude each other"):
        quantizer_settings(4, {"desc_act": True, "act_group_aware": True})


def test_gptqmodel_is_told_every_recorded_setting(tmp_path):
    """What notallbits.json records is what GPTQModel quantizes with: each setting lands in the
    GPTQModel config field of that name; GPTQModel's own defaults (damp 0.05, act_group_aware on,
    an RTN fallback, a temporary offload folder) never take over."""
    import torch
    from gptqmodel import QuantizeConfig
    from gptqmodel.quantization.config import AWQConfig, FP8Config

    from notallbits.quantization import _quantize_backend, _quantize_config, quantizer_settings

    offload = str(tmp_path / "offload")
    classic = _quantize_config(quantizer_settings(4), offload)
    assert isinstance(classic, QuantizeConfig) and type(classic).__name__ == "GPTQConfig"
    assert (classic.bits, classic.group_size, classic.sym, classic.desc_act) == (4, 128, True, False)
    assert (classic.damp_percent, classic.damp_auto_increment, classic.act_group_aware) == (0.01, 0.01, False)
    assert classic.fallback is None and classic.offload_to_disk is True and classic.offload_to_disk_path == offload
    # every key through, also the fixed ones, set here to values that are not auto-gptq's
    settings = {**quantizer_settings(8, {"group_size": 32, "sym": False, "desc_act": True, "damp_percent": 0.05}),
                "damp_auto_increment": 0.02, "true_sequential": False, "static_groups": True, "mse": 2.4,
                "lm_head": True, "format": "gptq_v2", "pack_dtype": "int16"}
    got = _quantize_config(settings, offload)
    assert (got.bits, got.group_size, got.sym, got.desc_act, got.damp_percent, got.damp_auto_increment) == (
        8, 32, False, True, 0.05, 0.02)
    assert (got.true_sequential, got.static_groups, got.mse, got.lm_head) == (False, True, 2.4, True)
    assert (str(got.format.value), got.pack_dtype) == ("gptq_v2", torch.int16)
    awq = _quantize_config(quantizer_settings("awq-4", {"group_size": 64}), offload)
    assert type(awq) is AWQConfig and (awq.bits, awq.group_size, awq.sym, awq.pack_dtype) == (4, 64, False, torch.int32)
    assert str(awq.format.value) == "gemm" and awq.offload_to_disk is True and awq.offload_to_disk_path == offload
    fp8 = _quantize_config(quantizer_settings("fp8", {"fp8_block": 64}), offload)
    assert type(fp8) is FP8Config and fp8.offload_to_disk is True and fp8.offload_to_disk_path == offload
    assert (fp8.format, fp8.weight_scale_method, fp8.weight_block_size) == ("float8_e4m3fn", "block", [64, 64])
    assert _quantize_backend(settings) == {} and _quantize_backend(quantizer_settings("fp8")) == {}
    assert str(_quantize_backend(quantizer_settings("awq-4"))["backend"].value) == "awq_torch"


def test_serving_fp8_layout_takes_the_reciprocal_scales_and_qwens_config(tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from notallbits.quantization import quantizer_settings, to_serving_fp8

    weight = torch.tensor([[1.0, -2.0]], dtype=torch.bfloat16)
    for i, name in enumerate(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]):
        save_file({f"layers.{i}.weight": weight, f"layers.{i}.weight_scale_inv": torch.tensor([[4.0, 0.5]])},
                  str(tmp_path / name))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    (tmp_path / "quantize_config.json").write_text("{}")
    to_serving_fp8(tmp_path, quantizer_settings("fp8"))
    for i, name in enumerate(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]):
        t = load_file(str(tmp_path / name))
        assert t[f"layers.{i}.weight_scale_inv"].tolist() == [[0.25, 2.0]]  # 1 / GPTQModel's scale_inv
        assert t[f"layers.{i}.weight_scale_inv"].dtype == torch.float32  # the block scales vLLM's FP8 kernels read
        assert t[f"layers.{i}.weight"].dtype == torch.bfloat16 and t[f"layers.{i}.weight"].tolist() == [[1.0, -2.0]]
    # Qwen3-8B-FP8's config.json
    assert json.loads((tmp_path / "config.json").read_text()) == {
        "model_type": "qwen3", "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                                                       "quant_method": "fp8", "weight_block_size": [128, 128]}}
    assert not (tmp_path / "quantize_config.json").exists()
    with safe_open(str(tmp_path / "model-00001-of-00002.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}  # transformers refuses safetensors without it
    to_serving_fp8(tmp_path, quantizer_settings("fp8"))  # no quantize_config.json (any more) is fine
    assert load_file(str(tmp_path / "model-00002-of-00002.safetensors"))["layers.1.weight_scale_inv"].tolist() == [
        [4.0, 0.5]]  # twice is the identity


def test_scratch_lives_beside_the_output_as_a_hidden_folder():
    from notallbits.quantization import scratch_path

    assert scratch_path("results/models/qwen3-8b/gptq-4") == Path("results/models/qwen3-8b/.gptq-4.scratch")
    assert scratch_path(Path("/abs/w8")) == Path("/abs/.w8.scratch")


def test_the_command_hands_the_sections_parts_to_the_quantizer(monkeypatch):
    """run() as the quantize rule calls it: the config's quantization section as JSON, its
    calibration part apart, the options a format does not read left out (AWQ: no calibration
    dropped, FP8: neither options nor calibration), the device asked for."""
    from notallbits import UserError, quantization

    calls = []

    def fake_quantize(*args, **kwargs):
        calls.append((args, kwargs))
        return {"quantize_seconds": 1.5}

    monkeypatch.setattr(quantization, "quantize", fake_quantize)

    def run(bits, section, device="cpu", calibration_file=None):
        quantization.run(argparse.Namespace(model="m", out="o", bits=bits, device=device,
                                            calibration_file=calibration_file, settings=json.dumps(section)))
        args, kwargs = calls[-1]
        return (*args[:4], args[4] or {}, *args[5:]), kwargs  # quantize reads a None calibration as {}

    cal = {"source": "traces", "samples": 4}
    section = {"group_size": 64, "damp_percent": 0.02, "fp8_block": 64, "calibration": cal}
    assert run("4", section, calibration_file="t.jsonl") == (
        ("m", "o", "4", {"group_size": 64, "damp_percent": 0.02, "fp8_block": 64}, cal, "t.jsonl"), {"device": "cpu"})
    assert run("awq4", section, device="cuda") == (("m", "o", "awq4", {"group_size": 64}, cal, None), {"device": "cuda"})
    assert run("fp8", section) == (("m", "o", "fp8", {"fp8_block": 64}, {}, None), {"device": "cpu"})
    assert run("8", {}) == (("m", "o", "8", {}, {}, None), {"device": "cpu"})  # the schema's defaults, in quantize
    with pytest.raises(UserError, match="^--settings is not valid JSON: Expecting value$"):
        quantization.run(argparse.Namespace(model="m", out="o", bits="4", device="cpu", calibration_file=None,
                                            settings="group_size=64"))
    # the job's slot (cli.py) holds a GPU unless the job runs on the CPU
    assert [quantization.gpus_needed(argparse.Namespace(device=d)) for d in ("cpu", "auto", "cuda")] == [0, 1, 1]


def test_sigterm_exits_with_the_shells_status_and_only_the_main_thread_traps_it():
    import threading

    from notallbits.quantization import _exit_on_sigterm, _in_main_thread

    with pytest.raises(SystemExit) as exc:
        _exit_on_sigterm(signal.SIGTERM, None)
    assert exc.value.code == 143  # 128 + 15, what a shell reports for a process killed by SIGTERM
    seen = []
    thread = threading.Thread(target=lambda: seen.append(_in_main_thread()))
    thread.start()
    thread.join()
    assert _in_main_thread() is True and seen == [False]


def test_the_model_is_a_folder_or_a_hub_id(tmp_path, monkeypatch):
    """A local folder (also a relative one without a slash) or a hub id (owner/name) goes on to
    the checkpoint check; a bare name that is no folder is refused in one line."""
    from notallbits import UserError, manifest
    from notallbits.quantization import quantize

    class Reached(Exception):
        pass

    def verify(path):
        raise Reached(path)

    monkeypatch.setattr(manifest, "verify", verify)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()
    for src in ("local", str(tmp_path / "local"), "Qwen/Qwen3-8B"):
        with pytest.raises(Reached):
            quantize(src, "out", 4)
    with pytest.raises(UserError, match="^model path 'qwen3-8b' does not exist$"):
        quantize("qwen3-8b", "out", 4)


def test_what_quantize_hands_gptqmodel_before_it_quantizes(tmp_path, monkeypatch):
    """GPTQModel.load gets an absolute folder (a hub id as it is); GPTQModel's CPU pool is the
    host's cores clamped to 1..8 unless the user set it; without a calibration section the
    data is the schema's default (GPTQ's 128 random 2048-token WikiText-2 windows, seed 0)."""
    import gptqmodel
    import transformers
    import yaml

    from notallbits import calibration, manifest
    from notallbits.quantization import quantize

    class Reached(Exception):
        pass

    loaded = []

    class FakeModel:
        def quantize(self, *args, **kwargs):
            raise Reached(args, kwargs)

    def load(src, *args, **kwargs):
        loaded.append((src, os.environ.get("GPTQMODEL_CPU_WORKERS")))
        return FakeModel()

    def samples(settings, tokenizer, file=None):
        raise Reached(settings, file)

    monkeypatch.setattr(manifest, "verify", lambda path: None)
    monkeypatch.setattr(gptqmodel.GPTQModel, "load", load)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    monkeypatch.setattr(calibration, "calibration_samples", samples)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()
    for cores, workers in ((1, "1"), (12, "8"), (None, "1"), (4, "4")):
        monkeypatch.delenv("GPTQMODEL_CPU_WORKERS", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        with pytest.raises(Reached) as got:
            quantize("local", "out", 4)
        assert loaded[-1] == (str(tmp_path / "local"), workers)
    monkeypatch.setenv("GPTQMODEL_CPU_WORKERS", "3")  # the user's own choice is kept
    with pytest.raises(Reached):
        quantize("Qwen/Qwen3-8B", "out", 4)
    assert loaded[-1] == ("Qwen/Qwen3-8B", "3")
    schema = yaml.safe_load((ROOT / "notallbits" / "schemas" / "config.schema.yaml").read_text())
    defaults = {k: v["default"] for k, v in
                schema["properties"]["quantization"]["properties"]["calibration"]["properties"].items()
                if k in ("source", "samples", "seq_len", "seed")}
    assert got.value.args == (defaults, None)
    assert defaults == {"source": "wikitext2", "samples": 128, "seq_len": 2048, "seed": 0}
    traces = {"source": "traces", "samples": 2, "seq_len": 64, "seed": 0}
    with pytest.raises(Reached) as got:
        quantize("local", "out", 4, calibration=traces, calibration_file="traces.jsonl")
    assert got.value.args == (traces, "traces.jsonl")
    # given samples: a text as it is, token ids with a mask of ones (attend to every token)
    with pytest.raises(Reached) as got:
        quantize("local", "out", 4, samples=[[5, 6, 7], "a calibration text"])
    assert got.value.args[0] == ([{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]}, "a calibration text"],)
    assert got.value.args[1]["batch_size"] == 4
    # AWQ: GPTQModel's portable torch kernel, which packs the GEMM layout on a CPU too
    with pytest.raises(Reached) as got:
        quantize("local", "out", "awq4", samples=[[5, 6, 7]])
    assert str(got.value.args[1]["backend"].value) == "awq_torch" and got.value.args[1]["batch_size"] == 4
