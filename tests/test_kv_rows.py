"""Rows per batch of the transformers backend from the memory model (generation.batch_size auto)."""

import pytest

from notallbits import UserError
from notallbits.memory import GIB, Arch, kv_batch_bytes, kv_row_bytes, kv_rows_per_batch

# Qwen3-8B's config.json: 36 layers, 8 KV heads, head_dim 128 -> 2 x 36 x 8 x 128 x 2 B per token
QWEN3_8B_KV_BYTES_PER_TOKEN = 147456


def test_row_peak_counts_the_cache_the_fork_tail_and_one_layer_by_hand():
    arch = Arch.named("Qwen3-8B")
    full = kv_row_bytes(arch, {"method": "full"}, 9216, 32, 1024)
    assert full["cache"] == 9216 * QWEN3_8B_KV_BYTES_PER_TOKEN
    assert full["fork_tail"] == 32 * QWEN3_8B_KV_BYTES_PER_TOKEN  # the answer's tokens, not a second cache
    rkv = kv_row_bytes(arch, {"method": "rkv", "budget": 8192, "buffer": 128}, 9216, 32, 1024)
    # budget + buffer tokens; the scoring scratch is the batch's (kv_batch_bytes), not the row's
    assert rkv["cache"] == 8320 * QWEN3_8B_KV_BYTES_PER_TOKEN
    assert rkv["total"] == sum(v for k, v in rkv.items() if k != "total")
    assert full["total"] == sum(v for k, v in full.items() if k != "total")
    stream = kv_row_bytes(arch, {"method": "streamingllm", "budget": 2048}, 9216, 32, 1024)
    # budget + 64 masked slots + the step's own: 2113 slots; an in-place compaction moves one KV
    # head's K (or V) of one layer at a time: 2113 x 128 x 2 B
    assert stream["cache"] + stream["streaming_slack"] == 2113 * QWEN3_8B_KV_BYTES_PER_TOKEN
    assert stream["compaction_head"] == 2113 * 128 * 2 and stream["hqq_requantized_layer"] == 0
    # at a 256-token budget the slack is a sixteenth of it: 256 + 16 + 1 = 273 slots
    small = kv_row_bytes(arch, {"method": "streamingllm", "budget": 256}, 9216, 32, 1024)
    assert small["cache"] + small["streaming_slack"] == 273 * QWEN3_8B_KV_BYTES_PER_TOKEN
    # a row of Qwen3-8B at a 9k-token trace is about its cache: 1.27 GiB of KV, under 1.4 GiB in all
    assert 1.2 * GIB < full["total"] < 1.4 * GIB


def test_hqq_requantizes_a_layer_per_row_and_its_work_once_per_batch_by_hand():
    arch = Arch.named("Qwen3-8B")
    hqq = {"method": "hqq", "nbits": 4, "q_group_size": 64, "residual_length": 128}
    row = kv_row_bytes(arch, hqq, 9216, 32, 1024)
    # a layer's new K + V while the old ones are held: 2 x 8 x 128 values per token at 4 bits
    # plus a 16-bit scale and zero per 64 values (0.5625 B each)
    assert row["hqq_requantized_layer"] == 9216 * 2 * 8 * 128 * 9 // 16
    # the work: K (or V) of one layer of a row is 9216 x 8 x 128 = 9,437,184 values; a GPU
    # requantizes 2^26 // that = 7 rows at once: 66,060,288 values, each dequantized (bf16, 2 B),
    # converted for hqq's float16 optimiser (2 B), its error (2 B), five window buffers (10 B), its
    # code (1 B) and packed code (0.5 B)
    assert kv_batch_bytes(arch, hqq, 9216) == 66060288 * 2 + 66060288 * (2 + 2 + 10 + 1) + 66060288 // 2
    # a CPU: one row at once (2^20 values hold no more), wider than a window of 2^16 values, so
    # quantized alone: its float32 errors, a compact copy of its columns still moving (at most the
    # row, float32) and six windows
    assert kv_batch_bytes(arch, hqq, 9216, "cpu", 4) \
        == 9437184 * (4 + 1) + 9437184 // 2 + 9437184 * 4 * 2 + 6 * 65536 * 4
    # rows narrower than a window (8 KV heads x 32 tokens x 128 = 32,768 values): 32 rows at once
    # (2^20 values), their float32 errors and five windows of 2 rows (2^16 values)
    assert kv_batch_bytes(arch, hqq, 32, "cpu", 4) == 2**20 * (4 + 4 + 1) + 2**20 // 2 + 5 * 65536 * 4
    assert kv_batch_bytes(arch, {"method": "streamingllm", "budget": 8192}, 9216) == 0
    # once per batch, not per row
    assert kv_rows_per_batch(80 * GIB, 16 * GIB, GIB, 1000, batch_bytes=GIB) == 54


def test_rkv_scores_a_few_heads_at_a_time_once_per_batch_by_hand():
    """R-KV's scoring scratch is a batch's: Qwen3-8B at an 8k budget scores 8192 + 128 = 8320
    tokens per (row, KV head) pair; a pair holds its keys in float32 (8320 x 128 x 4 B), its
    importance (8320 x (4 x 8 + 8) x 4 B: four [window, L] arrays and a few vectors) and a chunk of
    similarity rows of 12 B per key: 256 rows on a GPU, 64 on a CPU."""
    arch = Arch.named("Qwen3-8B")
    rkv = {"method": "rkv", "budget": 8192}
    pair_gpu = 8320 * 128 * 4 + 8320 * 40 * 4 + 256 * 8320 * 12  # 31,150,080 B
    assert kv_batch_bytes(arch, rkv, 9216) == 34 * pair_gpu  # 34 pairs in 1 GiB (35 would pass it)
    pair_cpu = 8320 * 128 * 4 + 8320 * 40 * 4 + 64 * 8320 * 12  # 11,980,800 B: one pair in 16 MiB
    assert kv_batch_bytes(arch, rkv, 9216, "cpu", 4) == pair_cpu
    assert kv_batch_bytes(arch, rkv, 8192) == 0  # never past the budget: no compression
    # a shorter trace scores its own tokens: 8200 tokens, 2^30 // (8200 x 3744 B) = 34 pairs
    assert kv_batch_bytes(arch, rkv, 8200) == 34 * 8200 * (128 * 4 + 40 * 4 + 256 * 12)
    # fewer rows than that: no more than the rows' own K + V of a layer, 2 x 8 x 8320 x 128 x 2 B
    # per row, holds one pair per row (two would pass it)
    assert kv_batch_bytes(arch, rkv, 9216, rows=1) == pair_gpu
    assert kv_batch_bytes(arch, rkv, 9216, rows=4) == 4 * pair_gpu
    assert kv_batch_bytes(arch, rkv, 9216, rows=40) == 34 * pair_gpu
    # per row no scratch at all: 32 rows cost 32 caches and the one scratch
    row = kv_row_bytes(arch, rkv, 9216, 32, 1024)["total"]
    assert kv_rows_per_batch(80 * GIB, 16 * GIB, row, 1000, kv_batch_bytes(arch, rkv, 9216)) \
        == int((0.9 * 80 * GIB - GIB - 16 * GIB - 34 * pair_gpu) // row)


def test_rows_per_batch_fill_the_margin_of_the_device():
    # 80 GiB x 0.9 - 1 GiB overhead - 16 GiB weights = 55 GiB: 55 rows of 1 GiB
    assert kv_rows_per_batch(80 * GIB, 16 * GIB, GIB, 1000) == 55
    assert kv_rows_per_batch(80 * GIB, 16 * GIB, GIB, 40) == 40  # never more rows than the job has
    assert kv_rows_per_batch(80 * GIB, 16 * GIB, 56 * GIB, 40) == 0  # not even one row
    assert kv_rows_per_batch(16 * GIB, 16 * GIB, GIB, 40) == 0  # the weights alone do not fit
    # a batch term that grows with the rows up to a bound: 72 - 1 - 66 = 5 GiB leave 4 rows of
    # 1 GiB and their 1 GiB of scratch (5 rows would need 1.25 GiB more); the bound alone, none
    assert kv_rows_per_batch(80 * GIB, 66 * GIB, GIB, 40, lambda rows: min(8 * GIB, rows * GIB // 4)) == 4
    assert kv_rows_per_batch(80 * GIB, 66 * GIB, GIB, 40, 8 * GIB) == 0
    assert kv_rows_per_batch(80 * GIB, 16 * GIB, GIB, 40, lambda rows: min(8 * GIB, rows * GIB // 4)) == 40


def test_auto_batch_takes_every_row_that_fits_and_stops_with_one_line_when_none_does(tiny_model, monkeypatch):
    import notallbits.memory as memory
    from notallbits.generation.forcing import ForcingSpec
    from notallbits.generation.hf_backend import TransformersBackend, load_model

    model, tok = load_model(str(tiny_model), "float32", "cpu")
    spec = ForcingSpec.from_tokenizer(tok, [16], "Wait", "\n\n**Final Answer**\n\\boxed{", 4)
    backend = TransformersBackend(model, tok, {"method": "rkv", "budget": 16, "buffer": 4}, 0.6, 0.95, "auto",
                                  cell="demo-arith/tiny/16/rkv-8")
    assert backend.rows_per_batch(48, 40, spec) == 48  # a tiny model's rows all fit in this machine's memory
    assert TransformersBackend(model, tok, {"method": "full"}, 0.6, 0.95, 5).rows_per_batch(48, 40, spec) == 5
    monkeypatch.setattr(memory, "KV_OVERHEAD_GIB", 1e9)
    with pytest.raises(UserError, match=r"^demo-arith/tiny/16/rkv-8: one row needs .* GiB"):
        backend.rows_per_batch(48, 40, spec)


def test_plan_sizes_every_kv_job_and_its_runtime_uses_those_rows():
    from notallbits import grid, plan

    config = grid.load("config.yaml")
    config["generation"]["batch_size"] = "auto"
    jobs = {r["job"]: r for r in plan.kv_jobs(config)}
    assert jobs and all(not k.endswith("/kv-full") for k in jobs)
    usable = 0.9 * config["hardware"]["gpu_memory_gib"] - 1
    for r in jobs.values():
        assert r["rows"] >= 1
        assert r["peak_gib"] <= usable + 0.01
    # the peak is the weights + what the batch holds once + each row; where not one row fits,
    # what one row would need
    tight = {**config, "hardware": {**config["hardware"], "gpu_memory_gib": 1}}
    for cfg, fitting in ((config, True), (tight, False)):
        for job, s in grid.jobs(cfg).items():
            if s.backend != "vllm":
                r = plan.kv_job_rows(cfg, job, s, plan.question_count(cfg["datasets"][job.dataset]))
                assert (r["rows"] >= 1) == fitting
                once = r["weight_gib"] + r["batch_gib"]
                assert r["peak_gib"] == pytest.approx(once + max(r["rows"], 1) * r["row_gib"])
    # a bigger budget holds more per row, so fewer rows fit
    small = jobs["aime25/Qwen3-8B/w16/kv-rkv-2k"]
    large = jobs["aime25/Qwen3-8B/w16/kv-rkv-8k"]
    assert large["row_gib"] > small["row_gib"] and large["rows"] <= small["rows"]
    # fewer rows per batch: a longer runtime estimate
    spec = {j.key: (j, s) for j, s in grid.jobs(config).items()}
    job, s = spec["aime25/Qwen3-8B/w16/kv-rkv-8k"]
    config_one = {**config, "generation": {**config["generation"], "batch_size": 1}}
    assert plan.job_minutes(config_one, job, s, 30) > plan.job_minutes(config, job, s, 30)


def test_every_part_of_a_row_of_a_one_head_model_by_hand():
    """A row of a 2-layer model with one query head and one KV head of 4 (per token: K and V x 2
    layers x 4 values x 2 B = 32 B), vocabulary 10, hidden 8, MLP 16; a 300-token trace, a 5-token
    answer, a 7-token prompt. Parts every method has: the answer's fork tail 5 x 32 = 160, fp32
    scores of the one head over the held + answer tokens, prefill activations 2 B x 7 x (3 x 16 +
    6 x 8) = 1344, logits 16 B x 10 = 160. The bytes are whole numbers."""
    arch = Arch(layers=2, kv_heads=1, head_dim=4, hidden=8, intermediate=16, heads=1, vocab=10)
    common = {"fork_tail": 160, "activations": 1344, "logits": 160}
    zero = dict.fromkeys(("streaming_slack", "hqq_requantized_layer", "compaction_head", "hqq_fork_requantized",
                          "hqq_attention_scratch"), 0)
    expected = {
        "full": {**zero, "cache": 300 * 32, "attention_scores": 4 * 305},
        # 64 kept + slack 64 // 16 = 4 masked + the step's own: 69 slots; a compaction moves one
        # head's K (or V) of one layer: 69 x 4 values x 2 B
        "streamingllm": {**zero, "cache": 64 * 32, "streaming_slack": 5 * 32, "compaction_head": 69 * 8,
                         "attention_scores": 4 * (64 + 5)},
        # budget + buffer = 80 tokens (the scoring scratch is the batch's: memory.kv_batch_bytes)
        "rkv": {**zero, "cache": 80 * 32, "attention_scores": 4 * 85},
        # 4-bit codes + a 16-bit scale and zero per 64 values: 172 tokens x 16 values x (1/2 + 4/64) B
        # = 1548, beside a bf16 window of 128 tokens (4096); all 300 tokens requantized: 2700 B, a
        # layer of them 1350; attention reads 300 tokens' keys dequantized (2 B) with their
        # unpacked codes (1 B), 300 x 4 x 3 = 3600, and holds the scores in fp32 and bf16, 6 x 305
        "hqq": {"cache": 1548 + 4096, "streaming_slack": 0, "hqq_requantized_layer": 1350, "compaction_head": 0,
                "hqq_fork_requantized": 2700, "hqq_attention_scratch": 3600 + 6 * 305, "attention_scores": 4 * 305},
    }
    settings = {"full": {"method": "full"}, "streamingllm": {"method": "streamingllm", "budget": 64},
                "rkv": {"method": "rkv", "budget": 64, "buffer": 16},
                "hqq": {"method": "hqq", "nbits": 4, "q_group_size": 64, "residual_length": 128}}
    for method, parts in expected.items():
        row = kv_row_bytes(arch, settings[method], 300, 5, 7)
        want = {**parts, **common}
        assert row == {**want, "total": sum(want.values())}, method
        assert all(type(v) is int for v in row.values()), method
    assert kv_row_bytes(arch, settings["full"], 300, 5, 7)["total"] == 12484


def test_a_row_too_long_for_one_gpu_window_is_requantized_whole_by_hand():
    """On a GPU hqq's optimiser windows are whole rows (quantized._pieces does not split a row
    there): a Qwen3-8B row of 70,000 tokens has 70,000 x 8 x 128 = 71,680,000 K (or V) values, more
    than the 2^26 a batch's work takes, so the work is that one row and each of its five window
    buffers holds all of it in float16: 71,680,000 x (2 + 2 + 1 + 0.5 + 5 x 2 + 2) B."""
    arch = Arch.named("Qwen3-8B")
    hqq = {"method": "hqq", "nbits": 4, "q_group_size": 64, "residual_length": 128}
    assert kv_batch_bytes(arch, hqq, 70000) == 71_680_000 * 35 // 2 == 1_254_400_000


def test_rkv_similarity_rows_are_bounded_by_the_tokens_the_layer_and_one_by_hand():
    """settings.rkv_similarity_rows: the device's rows (64 on a CPU, 256 on a GPU or a device
    without its own entry), no more than the tokens scored, fewer where one pair's scratch
    (4 x (dim + 4 x window + 8) B per token + 12 B per token per row) would pass one row's K + V of
    the layer (2 x kv_heads x dim x key_bytes per token), one at least."""
    from notallbits.kvcache.settings import rkv_similarity_rows

    assert rkv_similarity_rows(320, 8, 128, 8, 2, "cpu") == 64
    assert rkv_similarity_rows(320, 8, 128, 8, 2, "cuda") == 256
    assert rkv_similarity_rows(320, 8, 128, 8, 2, "xpu") == 256  # no entry of its own: the GPU's
    assert rkv_similarity_rows(10, 8, 128, 8, 2, "cpu") == 10  # 10 tokens: 10 rows at most
    # 2 KV heads x 128 x 2 B = 512 B of K + V per token; a pair's fixed 4 x (128 + 32 + 8) = 672 B
    # already passes it: one row
    assert rkv_similarity_rows(320, 8, 128, 1, 2, "cpu") == 1
    # 8 KV heads of 64 in fp32: 4,096 B per token, less 4 x (64 + 32 + 8) = 416: 3,680 // 12 = 306
    assert rkv_similarity_rows(4000, 8, 64, 8, 4, "cuda") == 256
    assert rkv_similarity_rows(4000, 8, 64, 4, 2, "cuda") == (2 * 4 * 64 * 2 - 416) // 12 == 50


def test_rkv_batch_scratch_bounded_by_the_rows_keys_in_the_models_dtype_by_hand():
    """One row of 8 KV heads x 128 scored over budget 256 + buffer 64 = 320 tokens on a CPU: a pair's
    scratch is 4 x 320 x (128 + 4 x 8 + 8) + 12 x 320 x 64 = 460,800 B; the row's K + V in fp32 is
    2 x 8 x 320 x 128 x 4 = 2,621,440 B: 5 pairs at once (2,304,000 B); in bf16 half that: 2 pairs."""
    arch = Arch(layers=2, kv_heads=8, head_dim=128, hidden=512, intermediate=512, heads=16, vocab=100)
    s = {"method": "rkv", "budget": 256, "buffer": 64}
    assert kv_batch_bytes(arch, s, 400, "cpu", 4, rows=1) == 5 * 460_800
    assert kv_batch_bytes(arch, s, 400, "cpu", 2, rows=1) == 2 * 460_800
