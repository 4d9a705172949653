"""The transformers backend on the tiny model: exact budgets, one shared trace per sample,
forced answers equal to an independent greedy decode, reproducible seeds, resumption."""

import json
import re

import pytest

from notallbits.data.registry import demo_arith
from notallbits.generation.run import generate
from notallbits.io import read_framed_jsonl, write_jsonl

PREFIX = "\n\n**Final Answer**\n\\boxed{"


def make_spec(model, budgets, temperature=0.6, samples=3, dtype="float32"):
    return {"dataset": "demo", "model": "tiny", "model_path": str(model), "bits": 16, "kv": "full",
            "kv_settings": {"method": "full"}, "backend": "transformers", "budgets": budgets, "samples": samples,
            "sampling": {"temperature": temperature, "top_p": 0.95, "seed": 0},
            "generation": {"wait_extension": True, "wait_text": "Wait", "answer_prefix": PREFIX,
                           "answer_max_tokens": 6, "batch_size": 8, "dtype": dtype, "device": "cpu"}}


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.jsonl"
    write_jsonl(path, demo_arith(2))
    return path


def progress_traces(root):
    out = {}
    for f in sorted(root.rglob("arith-*.json")):
        data = json.loads(f.read_text())
        for s in data["samples"]:
            out[(data["question_id"], s["sample"])] = s["thinking_ids"]
    return out


def test_budgets_are_exact_and_share_one_trace(tiny_model, questions, tmp_path):
    generate(str(questions), make_spec(tiny_model, [8, 24, 16]), str(tmp_path / "g.jsonl"), str(tmp_path / "p"))
    header, records = read_framed_jsonl(tmp_path / "g.jsonl")
    assert header["budgets"] == [8, 16, 24] and len(records) == 2 * 3 * 3
    assert all(r["forced"] and r["thinking_tokens"] == r["budget_tokens"] for r in records)
    assert all(r["answer_text"].startswith(PREFIX) and 1 <= r["answer_tokens"] <= 6 for r in records)
    # one trace per sample, generated to 24 tokens only: 2 questions x 3 samples x 24 thinking tokens
    traces = progress_traces(tmp_path / "p")
    assert len(traces) == 6 and all(len(t) == 24 for t in traces.values())
    s = header["stats"]
    assert s["trace_tokens"] == 6 * 24
    assert s["generated_tokens"] == s["trace_tokens"] + s["answer_tokens"] <= 6 * 24 + 6 * 3 * 6
    # this invocation generated everything: its own counts are the cell's, summed over all 6 samples
    inv = s["invocation"]
    assert (inv["trace_tokens"], inv["answer_tokens"]) == (s["trace_tokens"], s["answer_tokens"])
    assert 0 < inv["wall_seconds"] < 600 and 0 < s["wall_seconds"] <= inv["wall_seconds"]
    assert s["engine_start_seconds"] == inv["engine_start_seconds"] == 0.0  # transformers loads before the job
    assert (header["weight_method"], header["kv_settings"], header["sampling"]) == (
        "bf16", {"method": "full"}, {"temperature": 0.6, "top_p": 0.95, "seed": 0})  # 16 bits alone: bf16
    assert header["environment"]["device"] == "cpu"
    # the progress folder is keyed by everything that changes a trace, written beside the traces
    (identity,) = [json.loads(f.read_text()) for f in (tmp_path / "p").rglob("identity.json")]
    assert sorted(identity) == ["backend", "bits", "forcing", "format_version", "kv", "model", "prompt_style",
                                "sampling"]
    assert (identity["kv"], identity["prompt_style"], identity["sampling"]["seed"]) == ({"method": "full"}, "default", 0)
    assert identity["forcing"] == {"wait_extension": True, "wait_text": "Wait", "answer_prefix": PREFIX,
                                   "answer_max_tokens": 6}


def test_cell_stats_sums_the_samples_its_records_use():
    from notallbits.generation.forcing import SampleResult
    from notallbits.generation.run import cell_stats

    def sample(thinking, natural_end, answers, seconds, steps, seq_steps, in_flight):
        return SampleResult(sample=0, seed=0, thinking_ids=list(range(thinking)), wait_positions=[],
                            natural_end=natural_end, natural_answer=[1, 2] if natural_end is not None else [],
                            answers=answers, trace_seconds=seconds, engine_steps=steps, sequence_steps=seq_steps,
                            max_sequences_in_flight=in_flight)

    # a forced trace of 10 (answers of 3 and 4 tokens at budgets 4 and 8), and one that ended
    # naturally at 5 (+2 answer tokens): its answer at budget 8 is its own, not counted as forced
    samples = [sample(10, None, {4: [0] * 3, 8: [0] * 4}, 1.0, 3, 5, 2),
               sample(5, 5, {4: [0] * 4}, 0.30006, 0, 2, 3)]
    got = cell_stats(samples, [4, 8])
    # 15 + 2 trace tokens, 3 + 4 + 4 answer tokens = 28 tokens in 1.30006 s (21.5375... tokens/s)
    assert got == {"trace_tokens": 17, "answer_tokens": 11, "generated_tokens": 28, "wall_seconds": 1.3,
                   "tokens_per_second": 21.54, "engine_steps": 3, "mean_sequences_in_flight": 2.33,
                   "max_sequences_in_flight": 3}
    # under a second of engine time: 4 thinking + 2 answer tokens in 0.5 s are 12 tokens/s
    assert cell_stats([sample(4, 4, {}, 0.5, 0, 0, 1)], [8])["tokens_per_second"] == 12.0
    assert cell_stats([], [4]) == {"trace_tokens": 0, "answer_tokens": 0, "generated_tokens": 0, "wall_seconds": 0,
                                   "tokens_per_second": None, "engine_steps": None, "mean_sequences_in_flight": None,
                                   "max_sequences_in_flight": None}


def test_check_spec_takes_the_papers_bit_widths_and_known_weight_formats():
    from notallbits import UserError
    from notallbits.generation.run import check_spec

    base = {"budgets": [8], "samples": 1}
    for bits, method in [(4, "gptq"), (8, "gptq"), (8, "fp8"), (16, "bf16"), (4, None)]:
        check_spec({**base, "bits": bits, "weight_method": method})
    with pytest.raises(UserError, match="bits must be 4, 8 or 16"):
        check_spec({**base, "bits": 9})
    with pytest.raises(UserError, match="no weight format awq at 16 bits"):
        check_spec({**base, "bits": 16, "weight_method": "awq"})
    check_spec({**base, "bits": 16, "budgets": [1, 8]})  # one token of thinking is a budget
    for budgets in ([0, 8], [8, -1], [8.5], ["8"], []):  # a token count is a positive integer
        with pytest.raises(UserError, match="budgets must be positive integers"):
            check_spec({**base, "bits": 16, "budgets": budgets})
    with pytest.raises(UserError, match="samples must be positive"):
        check_spec({**base, "bits": 16, "samples": 0})


def test_the_jobs_sample_seeds_are_sha256_of_seed_question_and_sample():
    """Sample i of a question gets the seed of "base:question:i". By hand with coreutils:
    `printf '0:q1:1' | sha256sum` starts 6d 2e ee d5 2f 1a 37 86, little-endian 0x86371a2fd5ee2e6d,
    without the top bit 0x06371a2fd5ee2e6d; `printf '0:q1:2' | sha256sum` starts 5a e2 f3 40 79 81
    b9 24 -> 0x24b9817940f3e25a; '0:q1:0' gives 0x41df484a07a05323 (test_sampling.py)."""
    from notallbits.generation.run import sample_seeds

    assert sample_seeds(0, "q1", 3) == [0x41DF484A07A05323, 0x06371A2FD5EE2E6D, 0x24B9817940F3E25A]
    assert sample_seeds(0, "q1", 0) == []


def test_a_jobs_weight_format_is_its_specs_or_what_its_bits_mean():
    """The paper quantizes weights with GPTQ at 4 and 8 bits and runs 16 bits as bf16; a spec
    that names its format (AWQ, FP8) keeps it."""
    from notallbits.generation.run import weight_method

    assert [weight_method({"bits": b}) for b in (4, 8, 16)] == ["gptq", "gptq", "bf16"]
    assert weight_method({"bits": 4, "weight_method": None}) == "gptq"
    assert weight_method({"bits": 8, "weight_method": "fp8"}) == "fp8"
    assert weight_method({"bits": 4, "weight_method": "awq"}) == "awq"


def test_forced_answer_equals_independent_greedy_decode(tiny_model, questions, tmp_path):
    """Under greedy decoding the fork-and-force answer at T must equal transformers'
    own generate() from prompt + first T thinking tokens + the answer prefix."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from notallbits.generation.prompts import build_prompt

    generate(str(questions), make_spec(tiny_model, [8, 20], temperature=0.0, samples=1),
             str(tmp_path / "g.jsonl"), str(tmp_path / "p"))
    _, records = read_framed_jsonl(tmp_path / "g.jsonl")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    q = demo_arith(2)[0]
    prompt = tok.encode(build_prompt(tok, q), add_special_tokens=False)
    trace = progress_traces(tmp_path / "p")[(q["id"], 0)]
    with torch.no_grad():
        ref_trace = model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, len(prompt):]
    end_think = tok.convert_tokens_to_ids("</think>")
    if end_think not in ref_trace.tolist() and tok.eos_token_id not in ref_trace.tolist():
        assert trace == ref_trace.tolist()  # no Wait was needed, so greedy traces agree exactly
    for budget in (8, 20):
        ids = prompt + trace[:budget] + [end_think] + tok.encode(PREFIX, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids):]
        ref = tok.decode(out, skip_special_tokens=True)
        rec = next(r for r in records if r["question_id"] == q["id"] and r["budget_tokens"] == budget)
        assert rec["answer_text"] == PREFIX + ref


def test_same_seed_same_trace_and_budget_added_later_reuses_traces(tiny_model, questions, tmp_path):
    spec = make_spec(tiny_model, [8, 24], dtype="bfloat16")
    generate(str(questions), spec, str(tmp_path / "a.jsonl"), str(tmp_path / "pa"))
    generate(str(questions), spec, str(tmp_path / "b.jsonl"), str(tmp_path / "pb"))  # fresh progress
    assert progress_traces(tmp_path / "pa") == progress_traces(tmp_path / "pb")
    first_header, first = read_framed_jsonl(tmp_path / "a.jsonl")
    # the same job again on its progress: nothing generated or forced, the same records and cell cost
    again_header = generate(str(questions), spec, str(tmp_path / "a2.jsonl"), str(tmp_path / "pa"))
    assert again_header["stats"]["invocation"]["answer_tokens"] == again_header["stats"]["generated_samples"] == 0
    assert again_header["stats"]["wall_seconds"] == first_header["stats"]["wall_seconds"]
    assert read_framed_jsonl(tmp_path / "a2.jsonl")[1] == first
    # add a budget: no trace is regenerated, old budgets' records are unchanged
    header = generate(str(questions), make_spec(tiny_model, [8, 16, 24], dtype="bfloat16"),
                      str(tmp_path / "c.jsonl"), str(tmp_path / "pa"))
    assert header["stats"]["generated_samples"] == 0 and header["stats"]["invocation"]["trace_tokens"] == 0
    _, again = read_framed_jsonl(tmp_path / "c.jsonl")
    # the new budget's forced answers are this invocation's only tokens; their engine time adds to
    # the time each reused trace already cost (the first run's cell time, a's header)
    forced_16 = sum(r["answer_tokens"] for r in again if r["budget_tokens"] == 16 and r["forced"])
    assert header["stats"]["invocation"]["answer_tokens"] == forced_16 > 0
    assert header["stats"]["wall_seconds"] > first_header["stats"]["wall_seconds"]
    # the time the forcing adds to the reused traces is at most the time this invocation took
    assert header["stats"]["wall_seconds"] - first_header["stats"]["wall_seconds"] <= (
        header["stats"]["invocation"]["wall_seconds"] + 0.002)  # each rounded to the millisecond
    key = lambda r: (r["question_id"], r["sample"], r["budget_tokens"])  # noqa: E731
    old = {key(r): r for r in first}
    assert all(old[key(r)] == r for r in again if r["budget_tokens"] != 16)
    assert sorted(r["thinking_tokens"] for r in again if r["budget_tokens"] == 16) == [16] * 6
    assert progress_traces(tmp_path / "pa") == progress_traces(tmp_path / "pb")


def test_bad_spec_is_one_line(tiny_model, questions, tmp_path):
    from notallbits import UserError

    with pytest.raises(UserError, match="budgets must be positive"):
        generate(str(questions), make_spec(tiny_model, [0, 8]), str(tmp_path / "g.jsonl"), str(tmp_path / "p"))
    with pytest.raises(UserError, match="cannot load model"):
        generate(str(questions), make_spec(tmp_path / "missing", [8]), str(tmp_path / "g.jsonl"), str(tmp_path / "p"))
    assert not (tmp_path / "g.jsonl").exists()


def test_resumed_job_whose_budget_grew_extends_its_traces(tiny_model, questions, tmp_path):
    """Catches a stored trace reused for a job whose largest budget is longer than the trace:
    after a job with budgets [8], the same job with budgets [8, 16] must trace every sample to
    16 tokens, and its records must equal those of a fresh job with budgets [8, 16] (a sample's
    trace depends only on its seed)."""
    generate(str(questions), make_spec(tiny_model, [8]), str(tmp_path / "a.jsonl"), str(tmp_path / "p"))
    assert all(len(t) == 8 for t in progress_traces(tmp_path / "p").values())
    header = generate(str(questions), make_spec(tiny_model, [8, 16]), str(tmp_path / "b.jsonl"), str(tmp_path / "p"))
    assert header["stats"]["generated_samples"] == 6 and header["stats"]["trace_tokens"] == 6 * 16
    _, grown = read_framed_jsonl(tmp_path / "b.jsonl")
    assert sorted(r["thinking_tokens"] for r in grown if r["budget_tokens"] == 16) == [16] * 6
    assert all(len(t) == 16 for t in progress_traces(tmp_path / "p").values())
    generate(str(questions), make_spec(tiny_model, [8, 16]), str(tmp_path / "c.jsonl"), str(tmp_path / "fresh"))
    _, fresh = read_framed_jsonl(tmp_path / "c.jsonl")
    key = lambda r: (r["question_id"], r["sample"], r["budget_tokens"])  # noqa: E731
    assert sorted(grown, key=key) == sorted(fresh, key=key)


def test_timing_and_tokens_survive_a_kill_and_resume(tiny_model, tmp_path):
    """A job killed after some questions are saved and then resumed reports the same tokens
    and timing of the same order as one run in one go (issue #13: the header used to cover
    only the last invocation: fewer tokens, and a wall time of ~0 after a rerun from progress)."""
    import os
    import signal
    import subprocess
    import sys

    from notallbits.aggregate import summarize
    from notallbits.scoring import score_file
    from tests.conftest import ROOT

    write_jsonl(tmp_path / "q.jsonl", demo_arith(6))
    spec = make_spec(tiny_model, [8, 48], samples=2, dtype="bfloat16")
    spec["generation"]["batch_size"] = 2  # one question at a time, however the backend batches
    generate(str(tmp_path / "q.jsonl"), spec, str(tmp_path / "once.jsonl"), str(tmp_path / "p1"))

    progress = tmp_path / "p2"
    # the job SIGKILLs itself right after saving its second question: a real kill mid-job, at a
    # point that does not depend on how fast the machine is (polling from here raced the job)
    kill_after_two_saves = (
        "import os, signal, sys\n"
        "from notallbits.generation.progress import ProgressStore\n"
        "save, saved = ProgressStore.save, []\n"
        "def save_then_die(self, *a, **kw):\n"
        "    save(self, *a, **kw)\n"
        "    saved.append(1)\n"
        "    if len(saved) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "ProgressStore.save = save_then_die\n"
        "from notallbits.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", kill_after_two_saves, "generate", "--questions",
                           str(tmp_path / "q.jsonl"), "--spec", json.dumps(spec), "--out", str(tmp_path / "twice.jsonl"),
                           "--progress", str(progress)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL
    killed = {f: f.read_text() for f in progress.rglob("arith-*.json")}
    assert len(killed) == 2, "the job was not killed after its second question"
    assert not (tmp_path / "twice.jsonl").exists()
    resumed = generate(str(tmp_path / "q.jsonl"), spec, str(tmp_path / "twice.jsonl"), str(progress))
    assert 2 <= resumed["stats"]["reused_samples"] // 2 < 6
    # and once more, everything from progress
    generate(str(tmp_path / "q.jsonl"), spec, str(tmp_path / "thrice.jsonl"), str(progress))

    rows = []
    for name in ("once", "twice", "thrice"):
        score_file(str(tmp_path / "q.jsonl"), str(tmp_path / f"{name}.jsonl"), [1, 2], str(tmp_path / f"{name}.csv"))
        df = summarize([str(tmp_path / f"{name}.csv")])
        rows.append(df.set_index(["budget_tokens", "k"]).sort_index())
    once, twice, thrice = rows
    assert (twice["job_generated_tokens"] == once["job_generated_tokens"]).all()
    assert (thrice["job_generated_tokens"] == once["job_generated_tokens"]).all()
    assert (thrice["job_wall_seconds"] == twice["job_wall_seconds"]).all()
    # the resumed job's engine time is every question's, the killed invocation's included: the
    # sum of what each saved question took (a ratio against the one-go run raced the machine's load)
    saved_seconds = sum(s["trace_seconds"] for f in progress.rglob("arith-*.json")
                        for s in json.loads(f.read_text())["samples"])
    assert twice["job_wall_seconds"].iloc[0] == pytest.approx(saved_seconds, abs=2e-3)
    killed_seconds = sum(s["trace_seconds"] for text in killed.values() for s in json.loads(text)["samples"])
    assert killed_seconds > 0 and twice["job_wall_seconds"].iloc[0] > killed_seconds
    rate = twice["job_generated_tokens"] / twice["job_wall_seconds"]
    assert twice["job_tokens_per_second"].to_numpy() == pytest.approx(rate.to_numpy(), rel=1e-2)


def test_question_shards_gather_to_the_unsharded_job_and_reshard_regenerates_nothing(tiny_model, tmp_path):
    """A job split into question shards (sharing one progress folder) scores like the job in
    one piece, and changing the shard count afterwards generates no sample again."""
    from notallbits.scoring import score_file

    write_jsonl(tmp_path / "q.jsonl", demo_arith(5))
    spec = make_spec(tiny_model, [8, 16], samples=2, dtype="bfloat16")
    generate(str(tmp_path / "q.jsonl"), spec, str(tmp_path / "whole.jsonl"), str(tmp_path / "p1"))
    parts = []
    for i in (1, 2):
        header = generate(str(tmp_path / "q.jsonl"), {**spec, "shard": [i, 2]}, str(tmp_path / f"s{i}.jsonl"),
                          str(tmp_path / "p2"))
        assert header["shard"] == [i, 2] and header["questions"] == [2, 3][i - 1]
        parts.append(str(tmp_path / f"s{i}.jsonl"))
    whole = score_file(str(tmp_path / "q.jsonl"), str(tmp_path / "whole.jsonl"), [1, 2], str(tmp_path / "w.csv"))
    sharded = score_file(str(tmp_path / "q.jsonl"), parts, [1, 2], str(tmp_path / "s.csv"))
    assert [r["accuracy"] for r in whole] == [r["accuracy"] for r in sharded]
    assert [r["job_generated_tokens"] for r in whole] == [r["job_generated_tokens"] for r in sharded]
    assert [r["questions"] for r in sharded] == [5] * len(sharded)
    for i in (1, 2, 3):  # three shards now: everything comes from the shared progress
        header = generate(str(tmp_path / "q.jsonl"), {**spec, "shard": [i, 3]}, str(tmp_path / f"t{i}.jsonl"),
                          str(tmp_path / "p2"))
        assert header["stats"]["generated_samples"] == 0
    from notallbits import UserError

    with pytest.raises(UserError, match="shards 1..2"):
        score_file(str(tmp_path / "q.jsonl"), parts[:1], [1], str(tmp_path / "x.csv"))


def test_shard_count_and_slices():
    from notallbits.grid import Job, JobSpec, shard_count, shard_questions

    qs = list(range(30))
    slices = [shard_questions(qs, i, 4) for i in (1, 2, 3, 4)]
    assert sum(slices, []) == qs and sorted(map(len, slices)) == [7, 7, 8, 8]
    spec = JobSpec(Job("d", "m", 16, "full"), budgets=[2000, 30000], samples=32, ks=[1])
    config = {"datasets": {"d": {"loader": "aime25"}}, "generation": {"answer_max_tokens": 32, "shard_tokens": None}}
    assert shard_count(config, spec, 30) == 1
    config["datasets"]["d"]["shards"] = 4
    assert shard_count(config, spec, 30) == 4
    # 30 x 32 x (30000 + 2 x 32) = 28.86M tokens: under a 10M target, 3 shards
    config["generation"]["shard_tokens"] = 10_000_000
    assert shard_count(config, spec, 30) == 4 and shard_count(config, spec, 2) == 2
    config["datasets"]["d"]["shards"] = 1
    assert shard_count(config, spec, 30) == 3


def test_dry_run_shows_shard_jobs_and_multi_gpu_resources(tmp_path):
    """Shards are jobs of their own; a multi-GPU model's vLLM jobs ask for that many GPUs and
    carry tensor parallelism in their spec (its transformers-backend jobs, the KV-compression
    cells, run on one device and ask for one)."""
    import yaml

    from tests.conftest import DEMO, run_snakemake

    config = yaml.safe_load(DEMO.read_text())
    config["datasets"]["demo-arith"]["shards"] = 3
    config["models"]["tiny-qwen3"]["gpus"] = 2
    config["generation"]["backend"] = "vllm"  # the full-cache cells; KV-compression cells stay on transformers
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = run_snakemake(tmp_path, cfg, "--dry-run", "--printshellcmds").stdout
    shard_jobs = re.findall(r"rule generate_shard:\n(?:.*\n)*?\s+wildcards: dataset=(\S+), .*shard=(\d+of\d+)", out)
    assert shard_jobs and {d for d, _ in shard_jobs} == {"demo-arith"}
    assert {s for _, s in shard_jobs} == {"1of3", "2of3", "3of3"}
    assert '\\"shard\\": [2, 3]' in out or '"shard": [2, 3]' in out
    assert re.search(r"rule generate:\n(?:.*\n)*?\s+resources: .*gpu=2", out)
    kv_jobs = re.findall(r"rule generate:\n(?:.*\n)*?\s+output: \S+/kv-(?:rkv|streamingllm|hqq)\S*\n(?:.*\n)*?\s+resources: (.*)", out)
    assert kv_jobs and all("gpu=1" in r for r in kv_jobs)
    assert '"gpus": 2' in out or '\\"gpus\\": 2' in out


def test_the_cli_entry_gives_the_backend_the_questions_and_records_its_engine_figures(tiny_model, questions, tmp_path,
                                                                                       monkeypatch):
    import argparse

    import time

    from notallbits import UserError
    from notallbits.generation import FORMAT_VERSION
    from notallbits.generation import run as job

    real, seen = job.make_backend, {}

    class Scheduler:
        def figures(self):
            return {"admitted_traces": 2}

    def make_backend(spec):  # the real backend, as an engine that reports its start and scheduler
        seen["questions"] = [q["id"] for q in spec["questions"]]
        backend = real(spec)
        backend.engine_start_seconds, backend.scheduler = 1.23456, Scheduler()
        return backend

    monkeypatch.setattr(job, "make_backend", make_backend)
    spec = {**make_spec(tiny_model, [8, 16], samples=1), "thinking_text": True}
    t0 = time.perf_counter()
    job.run(argparse.Namespace(questions=str(questions), spec=json.dumps(spec), out=str(tmp_path / "g.jsonl"),
                               progress=str(tmp_path / "p")))
    elapsed = time.perf_counter() - t0
    header, records = read_framed_jsonl(tmp_path / "g.jsonl")
    # the header names its format, checkpoint and generation settings (provenance reads them)
    assert (header["format_version"], header["model_path"], header["generation"]) == (
        FORMAT_VERSION, str(tiny_model), spec["generation"])
    # the invocation's wall clock, in milliseconds, lies between its engine time and the call's
    wall = header["stats"]["invocation"]["wall_seconds"]
    assert header["stats"]["wall_seconds"] <= wall + 0.001 and wall <= elapsed + 0.001 and wall == round(wall, 3)
    assert seen["questions"] == [q["id"] for q in demo_arith(2)]  # vLLM sizes its context from them
    inv = header["stats"]["invocation"]
    assert inv["engine_start_seconds"] == header["stats"]["engine_start_seconds"] == 1.235
    assert inv["scheduler"] == {"admitted_traces": 2}
    # thinking text asked for: each sample's record at the largest budget carries its trace's text
    assert sorted(r["question_id"] for r in records if r.get("thinking_text")) == sorted(seen["questions"])
    with pytest.raises(UserError, match="--spec is not valid JSON"):
        job.run(argparse.Namespace(questions=str(questions), spec="{", out=str(tmp_path / "x.jsonl"),
                                   progress=str(tmp_path / "p")))


def test_a_jobs_prompt_style_makes_its_prompts_and_keys_its_progress(tiny_model, tmp_path, monkeypatch):
    """The toy style's user message is the bare question (no boxed-answer instruction, unlike the
    default style); the prompt the engine gets is that turn in the tiny model's chat template (the
    assistant turn opened with <think>), and the progress folder is keyed by the style. A fresh job
    reuses nothing; a job of fewer samples reuses only its own."""
    from notallbits.generation import run as job

    real, sent = job.make_backend, []

    def make_backend(spec):
        backend = real(spec)
        generate_job = backend.generate_job

        def spy(requests, *args, **kwargs):
            sent.extend((r.question_id, r.prompt_ids) for r in requests)
            return generate_job(requests, *args, **kwargs)

        backend.generate_job = spy
        return backend

    monkeypatch.setattr(job, "make_backend", make_backend)
    qs = [{**q, "task": "math"} for q in demo_arith(2)]
    write_jsonl(tmp_path / "q.jsonl", qs)
    spec = {**make_spec(tiny_model, [4], samples=2), "prompt_style": "toy"}
    header = job.generate(str(tmp_path / "q.jsonl"), spec, str(tmp_path / "g.jsonl"), str(tmp_path / "p"))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert [(qid, tok.decode(prompt_ids)) for qid, prompt_ids in sent] == [
        (q["id"], f"<|im_start|>user\n{q['question']}<|im_end|>\n<|im_start|>assistant\n<think>\n") for q in qs]
    (identity,) = [json.loads(f.read_text()) for f in (tmp_path / "p").rglob("identity.json")]
    assert identity["prompt_style"] == "toy"
    assert (header["stats"]["reused_samples"], header["stats"]["generated_samples"]) == (0, 4)
    # each question's sample 0 seeded from "0:<question id>:0": `printf '0:arith-000:0' | sha256sum`
    # starts 23 51 42 58 59 8c 56 32, '0:arith-001:0' a3 63 73 f3 b8 05 cd 03 (little-endian, top bit clear)
    seeds = {r["question_id"]: r["seed"] for r in read_framed_jsonl(tmp_path / "g.jsonl")[1] if r["sample"] == 0}
    assert seeds == {"arith-000": 0x32568C5958425123, "arith-001": 0x03CD05B8F37363A3}
    # the same job with one sample: it reuses each question's sample 0 alone, though its progress holds two
    header = job.generate(str(tmp_path / "q.jsonl"), {**spec, "samples": 1}, str(tmp_path / "g1.jsonl"),
                          str(tmp_path / "p"))
    assert (header["stats"]["reused_samples"], header["stats"]["generated_samples"]) == (2, 0)


def test_gpus_a_generation_job_holds():
    import argparse

    from notallbits.generation.run import gpus_needed

    def gpus(spec):
        return gpus_needed(argparse.Namespace(spec=spec if isinstance(spec, str) else json.dumps(spec)))

    assert gpus("{") == 1  # the job itself reports the bad spec
    assert gpus({}) == 1 and gpus({"generation": {}}) == 1 and gpus({"generation": {"device": "auto"}, "gpus": 2}) == 2
    assert gpus({"generation": {"device": "cpu"}, "gpus": 2}) == 0


def test_model_facts_are_read_from_the_checkpoint_and_its_quantizer_record(tiny_model, tmp_path):
    """The summary's architecture and weight bytes: config.json's own keys and the tensors'
    bytes (numel x element size, as safetensors stores them); the quantizer record only for a
    checkpoint this project quantized."""
    import shutil

    from safetensors.torch import load_file

    from notallbits.generation.run import model_facts, quant_settings

    cfg = json.loads((tiny_model / "config.json").read_text())
    tensors = load_file(str(tiny_model / "model.safetensors"))
    assert model_facts(str(tiny_model)) == {
        "weight_bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
        "layers": cfg["num_hidden_layers"], "kv_heads": cfg["num_key_value_heads"], "head_dim": cfg["head_dim"],
        "quant_settings": ""}
    # a hub id: the snapshot huggingface_hub cached (refs/main -> snapshots/<commit>/)
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-qwen3"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        assert model_facts("tiny-org/tiny-qwen3") == model_facts(str(tiny_model))
    folder = tmp_path / "w4"
    shutil.copytree(tiny_model, folder)
    (folder / "notallbits.json").write_text(json.dumps({
        "built_by": "notallbits.quantization", "quantizer": {"method": "gptq", "bits": 4},
        "calibration": {"source": "wikitext2", "samples": 128}, "gptqmodel_version": "7.6.0"}))
    assert quant_settings(folder) == ('{"calibration": {"samples": 128, "source": "wikitext2"}, '
                                      '"quantizer": {"bits": 4, "method": "gptq"}}')
    (folder / "notallbits.json").write_text(json.dumps({"built_by": "someone else", "quantizer": {}}))
    assert quant_settings(folder) == ""
    (folder / "notallbits.json").unlink()  # a checkpoint as the hub serves it: no record at all
    assert quant_settings(folder) == ""
    # a multimodal checkpoint (Gemma 3's, Mistral 3's config.json) nests the language model's
    # architecture under "text_config"
    mm = tmp_path / "mm"
    mm.mkdir()
    shutil.copy(tiny_model / "model.safetensors", mm)
    (mm / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": cfg}))
    assert {k: v for k, v in model_facts(str(mm)).items() if k != "weight_bytes"} == {
        "layers": cfg["num_hidden_layers"], "kv_heads": cfg["num_key_value_heads"], "head_dim": cfg["head_dim"],
        "quant_settings": ""}


def test_records_of_a_sample_that_ended_its_thinking_within_some_budgets():
    """Thinking ended naturally after 5 tokens: budgets of 5 or more keep the model's own answer
    (without its </think>), a budget of 3 is forced (the answer prefix after </think>, then the
    forced answer), each with the waits before its end of thinking."""
    from notallbits.generation.forcing import SampleResult
    from notallbits.generation.run import records_for
    from notallbits.tinymodel import build_tokenizer

    tok = build_tokenizer()
    end_think = tok.convert_tokens_to_ids("</think>")
    thinking = tok.encode("so 2 + 2 is 4 wait yes 4", add_special_tokens=False)
    own, forced, prefix = (tok.encode(t, add_special_tokens=False) for t in ("The answer is 4", " 4", "Final:"))
    eos = tok.convert_tokens_to_ids("<|im_end|>")  # the model's own answer ends with EOS, not shown in the text
    res = SampleResult(sample=2, seed=7, thinking_ids=thinking, wait_positions=[1, 4], natural_end=5,
                       natural_answer=[end_think, *own, eos], answers={3: forced})

    class Spec:
        answer_prefix_ids = [end_think, *prefix]
        end_think_id = end_think

    got = records_for("q7", res, [3, 5, 9], Spec, tok, thinking_text=True)
    common = {"question_id": "q7", "sample": 2, "seed": 7}
    assert [{k: r[k] for k in ("budget_tokens", "thinking_tokens", "forced", "waits", "answer_text", "answer_tokens")}
            for r in got] == [
        {"budget_tokens": 3, "thinking_tokens": 3, "forced": True, "waits": 1, "answer_text": "Final: 4",
         "answer_tokens": len(forced)},
        {"budget_tokens": 5, "thinking_tokens": 5, "forced": False, "waits": 2, "answer_text": "The answer is 4",
         "answer_tokens": len(own) + 2},
        {"budget_tokens": 9, "thinking_tokens": 5, "forced": False, "waits": 2, "answer_text": "The answer is 4",
         "answer_tokens": len(own) + 2}]
    assert all({k: r[k] for k in common} == common for r in got)
    five = tok.decode(thinking[:5])
    assert [r["thinking_chars"] for r in got] == [len(tok.decode(thinking[:3])), len(five), len(five)]
    assert "thinking_text" not in got[0] and "thinking_text" not in got[1] and got[2]["thinking_text"] == five
    # a budget of 4 stops just before the wait at token 4: only the wait at token 1 is in its thinking
    res.answers[4] = forced
    assert records_for("q7", res, [4], Spec, tok)[0]["waits"] == 1
    # an answer that does not open with </think> is kept whole
    res.natural_answer = own
    assert records_for("q7", res, [9], Spec, tok)[0]["answer_text"] == "The answer is 4"


def test_a_natural_answer_drops_its_end_of_thinking_also_where_the_tokenizer_shows_it():
    """Qwen3's tokenizer_config.json adds </think> (id 151668) with "special": false, so
    decode(skip_special_tokens=True) keeps its text (<|im_end|>, 151645, is special and dropped):
    the record's answer is the text after the model's own </think>."""
    from notallbits.generation.forcing import SampleResult
    from notallbits.generation.run import records_for

    class Qwen3Decode:  # Qwen3's ids and its special/non-special split, on a 4-word vocabulary
        text = {151668: "</think>", 151645: "<|im_end|>", 785: "The", 4226: " answer"}

        def decode(self, ids, skip_special_tokens=False):
            return "".join(self.text[i] for i in ids if not (skip_special_tokens and i == 151645))

    class Spec:
        answer_prefix_ids = [151668]
        end_think_id = 151668

    res = SampleResult(sample=0, seed=1, thinking_ids=[785, 785], wait_positions=[], natural_end=2,
                       natural_answer=[151668, 785, 4226, 151645], answers={})
    (rec,) = records_for("q", res, [8], Spec, Qwen3Decode())
    assert (rec["answer_text"], rec["answer_tokens"], rec["forced"]) == ("The answer", 4, False)


def test_thinking_text_leaves_out_special_tokens_the_model_sampled():
    """A sampled trace may hold a special token (here <|im_end|> inside the thinking): the stored
    thinking text is decode(skip_special_tokens=True), "so 2 + 2 is 4", at every budget."""
    from notallbits.generation.forcing import SampleResult
    from notallbits.generation.run import records_for, thinking_texts
    from notallbits.tinymodel import build_tokenizer

    tok = build_tokenizer()
    ids = (tok.encode("so 2 + 2", add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
           + tok.encode(" is 4", add_special_tokens=False))
    budgets = list(range(1, len(ids) + 1))
    res = SampleResult(sample=0, seed=1, thinking_ids=ids, wait_positions=[], natural_end=None, natural_answer=[],
                       answers={b: [] for b in budgets})

    class Spec:
        answer_prefix_ids = [0]
        end_think_id = -1

    texts = thinking_texts(records_for("q", res, budgets, Spec, tok, thinking_text=True))
    assert texts[("q", 0, budgets[-1])] == "so 2 + 2 is 4"
    assert [texts[("q", 0, b)] for b in budgets] == [tok.decode(ids[:b], skip_special_tokens=True) for b in budgets]


def test_common_prefix_of_a_thinking_text_and_a_budgets_cut_text():
    """Where a budget cuts a multi-byte character its text ends in U+FFFD: the common prefix
    with the whole text is the characters before it, none when the cut is the first character."""
    from notallbits.generation.run import _common_prefix

    assert _common_prefix("café ✓", "caf\ufffd") == "caf"
    assert _common_prefix("✓ done", "\ufffd") == ""
    assert _common_prefix("2 + 3", "2 + 3 = 5") == "2 + 3"
