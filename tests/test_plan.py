"""`notallbits plan` (notallbits/plan.py): tokens, GPU-hours, verify work and GPU memory of a
config, by hand on small configs."""

import argparse

import pytest

from notallbits import UserError, grid
from notallbits.memory import GIB, Arch
from notallbits.plan import gpu_memory_needed_gib, parse_throughputs, plan, run, sequences_in_flight
from tests.conftest import ROOT

# Qwen3-8B (config.json): 36 layers x (q, o 4096x4096; k, v 4096x1024; gate, up, down 4096x12288)
# + untied embedding and lm_head 151936 x 4096 + norms 36 x (2 x 4096 + 2 x 128) + 4096
# = 8,190,735,360 parameters (8.19B as published), 16,381,470,720 bf16 bytes; KV 147,456 B/token.
QWEN3_8B_BF16 = 16_381_470_720
KV_PER_TOKEN = 147_456


def test_qwen3_8b_facts_by_hand():
    arch = Arch.named("Qwen3-8B")
    assert arch.params == 8_190_735_360 and arch.params * 2 == QWEN3_8B_BF16


def test_gpu_memory_to_start_and_sequences_in_flight_by_hand():
    """Qwen3-8B bf16 with a 32,000-token context: weights 16,381,470,720 B + KV 32000 x 147,456 =
    4,718,592,000 B = 19.651 GiB, + 2 GiB engine overhead = 21.651 GiB on one GPU; tensor
    parallelism over 2 halves both (11.825). An 80 GiB GPU at 0.9 leaves 70 GiB after the
    overhead: (70 GiB - weights) / KV per sequence = 12.46 -> 12 sequences; 2 GPUs: 28."""
    arch = Arch.named("Qwen3-8B")
    need = (QWEN3_8B_BF16 + 32000 * KV_PER_TOKEN) / GIB
    assert need == pytest.approx(19.6510, abs=1e-4)
    assert gpu_memory_needed_gib(arch, 16, 32000) == pytest.approx(need + 2)
    assert gpu_memory_needed_gib(arch, 16, 32000, gpus=2) == pytest.approx(need / 2 + 2)
    assert gpu_memory_needed_gib(arch, 16, 32000, kv_tokens=0) == pytest.approx(QWEN3_8B_BF16 / GIB + 2)
    hw, gen = {"gpu_memory_gib": 80}, {"gpu_memory_utilization": 0.9, "max_num_seqs": 256}
    assert sequences_in_flight(arch, 16, 32000, 1, hw, gen) == 12
    assert sequences_in_flight(arch, 16, 32000, 2, hw, gen) == 28
    assert sequences_in_flight(arch, 16, 32000, 1, hw, gen, kv_tokens=16000) == 24
    assert sequences_in_flight(arch, 16, 32000, 2, hw, {**gen, "max_num_seqs": 10}) == 10
    assert sequences_in_flight(arch, 16, 32000, 1, {"gpu_memory_gib": 16}, gen) == 1  # at least one


def test_throughputs_are_model_equals_tokens_per_second():
    assert parse_throughputs(["Qwen3-8B=600", "default=2500.5"]) == {"Qwen3-8B": 600.0, "default": 2500.5}
    assert parse_throughputs([]) == {} and parse_throughputs(["slow=0.5"]) == {"slow": 0.5}
    for bad in ("Qwen3-8B", "Qwen3-8B=fast", "=", "", "m=1=2"):
        with pytest.raises(UserError, match=rf"^--throughput wants MODEL=TOKENS_PER_SECOND, got '{bad}'$"):
            parse_throughputs([bad])
    for bad in ("m=0", "m=-5"):
        with pytest.raises(UserError, match=r"^throughput for m must be positive$"):
            parse_throughputs([bad])


@pytest.fixture
def small():
    """AIME25 (30 questions) on two models, 4 samples to budgets 1000/2000, 32 answer tokens; PRM
    Best-of-N on one of them."""
    config = grid.load(ROOT / "configs" / "tiny.yaml")
    config["models"].update({"Qwen3-8B": {"source": "Qwen/Qwen3-8B"}, "Qwen3-32B": {"source": "Qwen/Qwen3-32B"}})
    config["datasets"]["aime25"] = {"loader": "aime25"}
    config["verifiers"] = {"prm": {"source": "sail/ActPRM-X", "max_tokens": 4096}}
    config["generation"]["answer_max_tokens"] = 32
    config["sweeps"] = [
        {"datasets": ["aime25"], "models": ["Qwen3-8B", "Qwen3-32B"], "bits": [16], "budgets": [1000, 2000],
         "samples": 4, "k": [1], "selection": ["majority"]},
        {"datasets": ["aime25"], "models": ["Qwen3-8B"], "bits": [16], "budgets": [1000], "samples": 2, "k": [1],
         "selection": ["majority", "prm_best_of_n"], "verifier": "prm"}]
    return grid.validate(config)


def test_plan_counts_tokens_hours_and_verify_records_by_hand(small):
    """Per job: 30 questions x 4 samples x (2000 + 2 budgets x 32) = 247,680 tokens; at 100 tok/s
    0.688 GPU-hours. The PRM reads 30 x 4 samples x 2 budgets = 240 traces of Qwen3-8B's job."""
    p = plan(small, {"Qwen3-8B": 100.0})
    assert p["jobs"] == 2 and p["cells"] == 2 * 2 and p["tokens"] == 2 * 247_680
    assert [(j["model"], j["questions"], j["samples"], j["max_budget"], j["budgets"], j["tokens"])
            for j in p["per_job"]] == [("Qwen3-32B", 30, 4, 2000, 2, 247_680), ("Qwen3-8B", 30, 4, 2000, 2, 247_680)]
    assert p["per_model"]["Qwen3-8B"] == {"jobs": 1, "tokens": 247_680, "gpu_hours": pytest.approx(247_680 / 360_000)}
    assert p["per_model"]["Qwen3-32B"]["gpu_hours"] is None and p["gpu_hours"] is None  # no rate for it
    assert p["verify_jobs"] == [{"job": "aime25/Qwen3-8B/w16/kv-full", "verifier": "prm", "records": 240,
                                 "max_tokens": 4096}]
    p = plan(small, {"Qwen3-8B": 100.0, "default": 200.0})
    assert p["per_model"]["Qwen3-32B"]["gpu_hours"] == pytest.approx(247_680 / 200 / 3600)
    assert p["gpu_hours"] == pytest.approx(247_680 / 100 / 3600 + 247_680 / 200 / 3600)
    rows = {r["model"]: r for r in p["gpu_memory"]}
    assert list(rows) == ["Qwen3-8B", "Qwen3-32B"]  # the config's model order
    assert rows["Qwen3-8B"]["context_tokens"] == 1024 + 2000 + 16 + 32 + 1
    assert rows["Qwen3-8B"]["bits"] == 16 and rows["Qwen3-8B"]["weights"] == "bf16"
    assert [r["shards"] for r in p["runtimes"]] == [1, 1]


def test_plan_command_prints_the_totals(small, tmp_path, capsys):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small))
    run(argparse.Namespace(config=str(path), throughput=["default=100"], json=False))
    out = capsys.readouterr().out
    assert out.startswith("4 cells in 2 generation jobs; 495,360 tokens to generate\n")
    assert "1 verify jobs (PRM Best-of-N, prm): 240 sample traces to score" in out
    assert "  Qwen3-8B: 1 job, 247,680 tokens, 0.7 GPU-hours\n" in out and "total: 1.4 GPU-hours\n" in out
    assert "0 of 2 jobs run as question shards\n" in out
    run(argparse.Namespace(config=str(path), throughput=[], json=True))
    import json

    assert json.loads(capsys.readouterr().out)["tokens"] == 495_360


def test_model_is_sized_by_its_architecture_key_then_source_then_name():
    """A fine-tune in a local folder is sized by its `architecture`; without one by a hub source
    or the model's name; a model of no known size stops with one line."""
    from notallbits.plan import model_arch

    config = {"models": {"mine": {"source": "org/finetune", "architecture": "Qwen3-32B"},
                         "hub": {"source": "Qwen/Qwen3-4B"}, "Qwen3-1.7B": {"source": "org/other"},
                         "tiny": {"source": "results/models/tiny"}}}
    assert model_arch(config, "mine") == Arch.named("Qwen3-32B")
    assert model_arch(config, "hub") == Arch.named("Qwen3-4B")
    assert model_arch(config, "Qwen3-1.7B") == Arch.named("Qwen3-1.7B")
    with pytest.raises(UserError, match=r"models\.tiny: no architecture facts for 'results/models/tiny'"):
        model_arch(config, "tiny")  # never sized as some default model
    assert len({model_arch(config, m).params for m in ("mine", "hub", "Qwen3-1.7B")}) == 3


def test_a_livecodebench_release_newer_than_the_table_counts_as_the_newest():
    from notallbits.plan import question_count

    assert question_count({"loader": "livecodebench", "version": "release_v9"}) == 1055
    assert question_count({"loader": "livecodebench", "version": "release_v2", "limit": 100}) == 100


# Qwen3-8B bf16, 8 sequences 4 at a time (2 waves), budgets 1000 and 6400, 32 answer tokens,
# 1024-token prompts, 1,000 GB/s. Decode reads the weights once a step and every sequence's KV
# once per generated token:
#   steps = 2 waves x (6400 + 32) = 12,864
#   full cache, per sequence: trace sum_t (1024 + t) = 1024 x 6400 + 6400^2 / 2 = 27,033,600 token
#   reads, forced answers 32 x (1024 + 1000) + 32 x (1024 + 6400) = 302,336
#   StreamingLLM keeping 1000: trace 1024 x 6400 + (1000^2 / 2 + 1000 x 5400) = 12,453,600,
#   answers 2 x 32 x (1024 + 1000) = 129,536
STEPS = 12_864
FULL_READS = 27_033_600 + 302_336
STREAM_READS = 12_453_600 + 129_536


def hand_seconds(token_reads, gpus=1):
    return (STEPS * QWEN3_8B_BF16 + 8 * token_reads * KV_PER_TOKEN) / (gpus * 1000e9)


def test_decode_seconds_by_hand_for_a_full_and_an_evicting_cache():
    from notallbits.plan import decode_seconds

    arch = Arch.named("Qwen3-8B")
    args = (arch, 16, 8, [1000, 6400], 32, 4, 1, 1000)
    assert decode_seconds(*args) == pytest.approx(hand_seconds(FULL_READS), rel=1e-12)
    assert decode_seconds(*args, kv_tokens_held=lambda t: min(t, 1000)) == pytest.approx(
        hand_seconds(STREAM_READS), rel=1e-12)
    assert decode_seconds(arch, 16, 8, [1000, 6400], 32, 4, 2, 1000) == pytest.approx(hand_seconds(FULL_READS, 2))


@pytest.fixture
def runtime_config(small):
    config = small
    config["models"]["Qwen3-8B"]["gpus"] = 2
    config["generation"].update(batch_size=4, answer_max_tokens=32)
    config["hardware"]["gpu_bandwidth_gb_per_s"] = 1000
    config["kv_methods"] = {"stream": {"method": "streamingllm", "budget": 1000}, "hqq4": {"method": "hqq", "nbits": 4}}
    config["sweeps"] = [{"datasets": ["aime25"], "models": ["Qwen3-8B"], "bits": [16], "budgets": [1000, 6400],
                         "samples": 8, "k": [1], "selection": ["majority"], "kv": ["full", "stream", "hqq4"],
                         "backend": "vllm"}]
    return grid.validate(config)


def test_job_minutes_of_each_backend_by_hand(runtime_config):
    """15 minutes of loading + 1.5 x the decode time. vLLM: as many full-length sequences in
    flight as fit (here all 8 of one question: one wave). Compressed caches run on transformers,
    a question's samples batch_size (4) at a time, 4x slower than the bandwidth bound; HQQ 4-bit
    reads a quarter of the bytes per cached token; StreamingLLM holds at most its budget."""
    from notallbits.plan import decode_seconds, job_minutes

    config = runtime_config
    jobs = grid.jobs(config)
    arch = Arch.named("Qwen3-8B")
    spec = {kv: jobs[grid.Job("aime25", "Qwen3-8B", 16, kv)] for kv in ("full", "stream", "hqq4")}
    assert [spec[kv].backend for kv in spec] == ["vllm", "transformers", "transformers"]
    assert job_minutes(config, spec["stream"].job, spec["stream"], 1) == pytest.approx(
        15 + 1.5 * 4 * hand_seconds(STREAM_READS, gpus=2) / 60, rel=1e-12)
    # HQQ 4-bit: a cached trace token costs a quarter (the prompt is counted in full):
    # 1024 x 6400 + 6400^2 / 2 / 4 = 11,673,600; answers 32 x (1024 + 250) + 32 x (1024 + 1600) = 124,736
    hqq = (STEPS * QWEN3_8B_BF16 + 8 * (11_673_600 + 124_736) * KV_PER_TOKEN) / (2 * 1000e9)
    assert job_minutes(config, spec["hqq4"].job, spec["hqq4"], 1) == pytest.approx(15 + 1.5 * 4 * hqq / 60,
                                                                                   rel=1e-12)
    # vLLM: 8 sequences fit beside the weights on 2 x 79.6 GiB at 0.9 -> one wave of 6432 steps
    one_wave = (STEPS / 2 * QWEN3_8B_BF16 + 8 * FULL_READS * KV_PER_TOKEN) / (2 * 1000e9)
    assert job_minutes(config, spec["full"].job, spec["full"], 1) == pytest.approx(15 + 1.5 * one_wave / 60,
                                                                                   rel=1e-12)
    assert decode_seconds(arch, 16, 8, [1000, 6400], 32, 8, 2, 1000) == pytest.approx(one_wave, rel=1e-12)
    # the full cache on transformers: batch_size at a time, 4x slower, every token held
    config["sweeps"][0]["backend"] = "transformers"
    full = grid.jobs(grid.validate(config))[grid.Job("aime25", "Qwen3-8B", 16, "full")]
    assert full.backend == "transformers"
    assert job_minutes(config, full.job, full, 1) == pytest.approx(15 + 1.5 * 4 * hand_seconds(FULL_READS, 2) / 60,
                                                                   rel=1e-12)


def test_runtimes_report_each_job_and_its_largest_shard(runtime_config):
    """AIME25's 30 questions under a limit that 8 questions of the StreamingLLM job just meet:
    4 shards (of 8, 8, 7, 7 questions), the largest shard's estimate is that of 8 questions."""
    from notallbits.plan import job_minutes

    config = runtime_config
    spec = grid.jobs(config)[grid.Job("aime25", "Qwen3-8B", 16, "stream")]
    config["hardware"]["max_runtime_minutes"] = job_minutes(config, spec.job, spec, 8)
    row = next(r for r in plan(config, {})["runtimes"] if r["job"] == "aime25/Qwen3-8B/w16/kv-stream")
    assert row == {"job": "aime25/Qwen3-8B/w16/kv-stream", "minutes": round(job_minutes(config, spec.job, spec, 30), 1),
                   "shards": 4, "shard_minutes": round(job_minutes(config, spec.job, spec, 8), 1)}


def test_gpu_memory_rows_by_hand(small):
    """Qwen3-8B bf16, longest context 1024 + 2000 + 16 + 32 + 1 = 3073 tokens (453,132,288 B of
    KV): (16,381,470,720 + 453,132,288) / 2^30 = 15.68 GiB, + 2 -> 17.7 GiB on 1 GPU, 9.8 on 2,
    5.9 on 4. An 80 GB GPU (79.6 GiB at 0.9, less 2): 128 sequences on one, max_num_seqs (256) on
    more. A 16 GiB GPU (14.4 usable): not on one; on two (2 x 12.4 GiB - weights) / KV = 22.6 -> 22,
    on four 81. An evicting job on transformers is not sized for vLLM: its longer budget adds nothing."""
    config = small
    config["kv_methods"] = {"stream": {"method": "streamingllm", "budget": 1000}}
    config["sweeps"].append({"datasets": ["aime25"], "models": ["Qwen3-8B"], "bits": [16], "budgets": [20000],
                             "samples": 4, "k": [1], "selection": ["majority"], "kv": ["stream"]})
    config = grid.validate(config)
    row = next(r for r in plan(config, {})["gpu_memory"] if r["model"] == "Qwen3-8B")
    assert row == {"model": "Qwen3-8B", "bits": 16, "weights": "bf16", "context_tokens": 3073,
                   "gib_per_gpu_1": 17.7, "in_flight_1": 128, "gib_per_gpu_2": 9.8, "in_flight_2": 256,
                   "gib_per_gpu_4": 5.9, "in_flight_4": 256}
    # Qwen3-8B now has two jobs: 247,680 tokens + 30 x 4 x (20000 + 32) = 2,403,840
    per_model = plan(config, {"Qwen3-8B": 100.0})["per_model"]["Qwen3-8B"]
    assert per_model == {"jobs": 2, "tokens": 2_651_520, "gpu_hours": pytest.approx(2_651_520 / 100 / 3600)}
    config["hardware"]["gpu_memory_gib"] = 16
    row = next(r for r in plan(config, {})["gpu_memory"] if r["model"] == "Qwen3-8B")
    assert (row["in_flight_1"], row["in_flight_2"], row["in_flight_4"]) == (0, 22, 81)


@pytest.mark.parametrize("hours,text", [
    (2.0, "2.0 GPU-hours"), (0.05, "0.1 GPU-hours"),  # 0.05 h still prints as hours
    (0.0491, "2.9 GPU-minutes"),  # 2.946 minutes
    (0.001, "0.1 GPU-minutes"), (1 / 1200, "0.1 GPU-minutes"),  # 0.06 and exactly 0.05 minutes
    (0.000825, "3.0 GPU-seconds"),  # 0.0495 minutes would print 0.0: 2.97 s
    (0.00081933, "2.9 GPU-seconds"),  # 2.9496 s
])
def test_gpu_time_by_hand(hours, text):
    """The unit that prints a nonzero first decimal: hours from 0.05 h, else minutes from
    0.05 min, else seconds (hours x 60, x 3600)."""
    from notallbits.plan import gpu_time

    assert gpu_time(hours) == text


def test_plan_command_marks_what_does_not_fit_and_what_is_sharded(small, tmp_path, capsys):
    """On a 40 GiB GPU (36 usable at utilization 0.9), Qwen3-32B's bf16 weights (61 GiB) fit on
    no single GPU: its row says so for 1 GPU; a 2-GPU column is plural. A runtime cap of 1 minute shards every job. --json prints the
    plan indented by one space."""
    import json

    import yaml

    small["hardware"].update(gpu_memory_gib=40, max_runtime_minutes=1)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small))
    run(argparse.Namespace(config=str(path), throughput=[], json=False))
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "Qwen3-32B bf16" in line)
    assert "1 GPU : " in row and ")  2 GPUs: " in row and "(does not fit)" in row.split("2 GPUs:")[0] and " seqs)" in row.split("2 GPUs:")[1]
    assert "  Qwen3-32B: 1 job, 247,680 tokens, no throughput given\n" in out
    assert "2 of 2 jobs run as question shards:\n" in out and out.count(" shards of ") == 2
    small["hardware"].update(max_runtime_minutes=32)  # Qwen3-32B's 30 questions take ~48 min, 15 ~32: two shards
    path.write_text(yaml.safe_dump(small))
    run(argparse.Namespace(config=str(path), throughput=[], json=False))
    out = capsys.readouterr().out
    assert "1 of 2 jobs run as question shards:\n" in out and "aime25/Qwen3-32B/w16/kv-full: " in out
    assert out.count(" -> 2 shards of ") == 1
    run(argparse.Namespace(config=str(path), throughput=[], json=True))
    text = capsys.readouterr().out
    assert text.startswith('{\n "cells": ') and json.loads(text)["jobs"] == 2
