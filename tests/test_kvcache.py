"""KV compression during decoding, against independent computations on the tiny model."""

import copy

import numpy as np
import re

import pytest
import torch

from notallbits import UserError
from notallbits.kvcache import fork, held_bytes, make_cache, normalize
from notallbits.kvcache.eviction import rkv_scores, rkv_select
from notallbits.memory import Arch, kv_bytes


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def model(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


def step(model, cache, ids, start):
    pos = torch.arange(start, start + ids.shape[1])[None]
    return model(input_ids=ids, past_key_values=cache, position_ids=pos).logits[:, -1]


def decode(model, settings, ids, prefill=8, pad=None):
    """``pad`` [B]: padding slots leading each row (kvcache.set_padding; the ids are not masked)."""
    from notallbits.kvcache import set_padding

    cache = make_cache(settings, model)
    if pad is not None:
        set_padding(cache, pad)
    logits = step(model, cache, ids[:, :prefill], 0)
    lengths = []
    for t in range(prefill, ids.shape[1]):
        logits = step(model, cache, ids[:, t : t + 1], t)
        keys = cache.layers[0].keys
        lengths.append(keys.shape[-2] if keys.dim() == 4 else 0)  # HQQ empties its residual on requantizing
    return logits, cache, lengths


@pytest.fixture(scope="module")
def ids():
    return torch.randint(5, 400, (2, 300), generator=torch.Generator().manual_seed(0))


def test_streamingllm_equals_full_attention_on_kept_positions(model, ids):
    """Prefill 60 tokens, keep 4 sinks + 20 recent; the next step's logits must equal a full
    cache cut by hand to those positions (computed independently from the full K/V)."""
    from transformers import DynamicCache

    prompt, nxt = ids[:, :60], ids[:, 60:61]
    cache = make_cache({"method": "streamingllm", "budget": 24, "sink": 4}, model)
    step(model, cache, prompt, 0)
    got = step(model, cache, nxt, 60)
    full = DynamicCache(config=model.config)
    step(model, full, prompt, 0)
    kept = list(range(4)) + list(range(40, 60))
    ref_cache = DynamicCache(config=model.config)
    for i, layer in enumerate(full.layers):
        ref_cache.update(layer.keys[:, :, kept], layer.values[:, :, kept], i)
    # positions are explicit, so the reference sees the true position 60 despite 24 cached keys
    want = step(model, ref_cache, nxt, 60)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, step(model, full, nxt, 60), atol=1e-3)  # eviction really changed something


@pytest.mark.parametrize("settings", [{"method": "streamingllm", "budget": 400}, {"method": "rkv", "budget": 400}])
def test_large_budget_reproduces_full_cache(model, ids, settings):
    """A budget above the trace never evicts: the logits equal a full cache's exactly, both
    attending through the grouped attention that the eviction caches switch the model to (SDPA
    over repeated K/V differs in the last bits, so the test must not depend on which test ran first)."""
    from notallbits.kvcache.attention import use_grouped_attention

    use_grouped_attention(model)
    full, _, _ = decode(model, {"method": "full"}, ids[:, :80])
    got, _, _ = decode(model, settings, ids[:, :80])
    torch.testing.assert_close(got, full, rtol=0, atol=0)


def rkv_case(kind: str, seed: int, b=2, hq=8, hkv=2, w=8, length=72, d=32):
    """Queries [B, Hq, W, D] and keys [B, Hkv, L, D], float32, from NumPy's legacy RandomState
    (a frozen stream, so the literals below stay valid). "structured" keys are what real keys
    look like: a dominant direction per head (stronger in row 1, so a batch row scored with
    another row's keys shows), a repeated span and an outlier; queries lean on that direction."""
    rs = np.random.RandomState(seed)
    q = rs.standard_normal((b, hq, w, d))
    if kind == "random":
        k = rs.standard_normal((b, hkv, length, d))
    else:
        k = np.empty((b, hkv, length, d))
        for bi in range(b):
            for h in range(hkv):
                u = rs.standard_normal(d)
                u /= np.linalg.norm(u)
                k[bi, h] = (2.0 + 1.5 * bi + h) * u + rs.standard_normal((length, d)) * (0.8 + 0.4 * h)
                src, dst, span = 6 + 5 * bi, 40 + 3 * h, 9
                k[bi, h, dst:dst + span] = k[bi, h, src:src + span] + 0.05 * rs.standard_normal((span, d))
                k[bi, h, 20 + bi] = -k[bi, h, 20 + bi]
            for hqi in range(hq):
                q[bi, hqi] += 1.5 * k[bi, hqi // (hq // hkv)].mean(0)
    return torch.tensor(q, dtype=torch.float32), torch.tensor(k, dtype=torch.float32)


# Evicted tokens [batch row][KV head] of each case (window 8, kernel 7, lam 0.1, threshold 0.5),
# computed once by plain Python loops over heads, queries and tokens in float64 from the authors'
# formula, and identical to the authors' own R1KV.update_kv (github.com/Zefan-Cai/R-KV,
# rkv/compression/r1_kv.py, mix_lambda=0.1) run on each batch row alone. The smallest score gap
# at the cut is 1.5e-6, far above float32 error (~1e-8).
RKV_EVICTED = {
    "random-0-40": [[[5, 6, 7, 8, 9, 10, 14, 16, 19, 21, 22, 23, 25, 27, 28, 29, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 55, 56, 58, 60, 63], [9, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 36, 37, 39, 40, 41, 42, 43, 44, 45, 58, 59, 60, 61, 62, 63]], [[1, 6, 7, 8, 9, 10, 11, 13, 15, 18, 20, 21, 23, 31, 32, 33, 39, 41, 42, 43, 46, 48, 51, 52, 53, 54, 55, 57, 58, 60, 61, 63], [1, 10, 11, 12, 14, 15, 17, 18, 19, 20, 21, 24, 34, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55]]],
    "structured-1-40": [[[0, 1, 13, 17, 18, 19, 21, 22, 23, 24, 25, 26, 27, 28, 30, 31, 32, 33, 34, 36, 37, 38, 39, 47, 49, 50, 53, 54, 55, 59, 60, 63], [0, 1, 2, 3, 4, 5, 6, 7, 9, 12, 17, 18, 21, 22, 23, 24, 25, 26, 27, 28, 36, 37, 38, 39, 40, 41, 42, 44, 46, 49, 52, 53]], [[0, 1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 13, 22, 23, 24, 28, 31, 32, 37, 38, 39, 40, 41, 42, 56, 57, 58, 59, 60, 61, 62, 63], [0, 1, 9, 11, 14, 15, 16, 17, 18, 22, 26, 27, 29, 37, 38, 39, 40, 41, 42, 43, 46, 47, 48, 49, 50, 51, 52, 53, 55, 56, 57, 58]]],
    "structured-2-24": [[[1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 21, 22, 23, 24, 25, 26, 27, 30, 32, 33, 36, 37, 38, 39, 40, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 57, 58, 59, 61], [0, 1, 2, 6, 8, 10, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 47, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 61, 62, 63]], [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 63], [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 48, 49, 50, 51, 52, 53, 54, 55, 56, 59]]],
}


@pytest.mark.parametrize("chunked", [False, True], ids=["default-chunks", "one-row-chunks"])
@pytest.mark.parametrize("case", list(RKV_EVICTED))
def test_rkv_selection_matches_authors(case, chunked, monkeypatch):
    kind, seed, budget = case.rsplit("-", 2)
    queries, keys = rkv_case(kind, int(seed))
    s = normalize({"method": "rkv", "budget": int(budget)})
    if chunked:  # one KV head and one similarity row at a time: the same kept sets
        from notallbits.kvcache import eviction

        monkeypatch.setattr(eviction, "_scratch_plan", lambda *a: (1, 1))
    got = rkv_select(queries, keys, s)
    length = keys.shape[2]
    evicted = [[sorted(set(range(length)) - set(h)) for h in row] for row in got.tolist()]
    assert evicted == RKV_EVICTED[case]
    assert (got[..., -8:] == torch.arange(length - 8, length)).all()


@pytest.mark.parametrize("scratch_bytes", [None, 1 << 30], ids=["head-by-head", "all-heads-at-once"])
def test_rkv_padding_takes_no_part(scratch_bytes):
    """Left padding marked invalid changes nothing: the real tokens score as in the row
    without padding and padding is never kept, even padding that copies a real key. With room
    for every (row, KV head) pair in one chunk, as a long trace of a real model has, each pair
    still averages over its own window queries."""
    queries, keys = rkv_case("structured", 1)
    s = normalize({"method": "rkv", "budget": 40})
    pad = 5
    junk = torch.randn(2, 2, pad, keys.shape[-1], generator=torch.Generator().manual_seed(3)) * 4
    junk[:, :, 0] = keys[:, :, 30]  # a padding position that duplicates a real key
    padded = torch.cat([junk, keys], dim=2)
    valid = torch.ones(2, padded.shape[2], dtype=torch.bool)
    valid[1, :pad] = False  # row 0 is padded with real tokens, row 1 with padding
    want = rkv_scores(queries, keys, s)
    got = rkv_scores(queries, padded, s, valid=valid, scratch_bytes=scratch_bytes)
    # a 0/1 integer mask marks the same tokens
    torch.testing.assert_close(rkv_scores(queries, padded, s, valid=valid.long(), scratch_bytes=scratch_bytes), got)
    torch.testing.assert_close(got[1, :, pad:], want[1], rtol=1e-5, atol=1e-7)
    assert torch.isinf(got[1, :, :pad]).all()
    kept = rkv_select(queries, padded, s, valid=valid)
    assert torch.equal(kept[1], rkv_select(queries, keys, s)[1] + pad)
    assert not torch.equal(got[0, :, pad:], want[0])  # row 0's extra tokens do take part


def test_rkv_padding_anywhere_takes_no_part_and_one_query_averages_over_itself():
    """Padding takes no part wherever it sits: what a padding position holds (its key, and its
    query when it is one of the window's) changes no score, also at the right of a row, inside
    the observation window (row 1's last 3 tokens), and in the middle of a row (row 0). One
    query (fewer than the window, which rkv_scores allows): its importance is its own attention,
    with every token marked valid or with no mask at all."""
    queries, keys = rkv_case("structured", 2)
    s = normalize({"method": "rkv", "budget": 40})
    valid = torch.ones(2, keys.shape[2], dtype=torch.bool)
    valid[1, -3:] = False
    valid[0, 30:34] = False
    got = rkv_scores(queries, keys, s, valid=valid)
    junk_q, junk_k = queries.clone(), keys.clone()
    junk_q[1, :, -3:] = 50.0
    junk_k.transpose(1, 2)[~valid] = -20.0
    torch.testing.assert_close(rkv_scores(junk_q, junk_k, s, valid=valid), got, rtol=1e-5, atol=1e-7)
    assert torch.isinf(got[0, :, 30:34]).all() and torch.isfinite(got[1]).all()
    one = queries[:, :, -1:]
    torch.testing.assert_close(rkv_scores(one, keys, s, valid=torch.ones_like(valid)), rkv_scores(one, keys, s),
                               rtol=1e-6, atol=1e-8)


def test_rkv_scores_in_float32_whatever_the_keys_dtype():
    """Keys and queries in the model's bfloat16 are scored in float32 (the one difference from
    the authors' code named above): the scores of the float32 tensors of the same values, to
    float32's rounding (2-byte keys allow other chunks, which sum in another order), also for
    keys picked from a layer's slots; bfloat16 arithmetic would be ~1e-3 off."""
    queries, keys = rkv_case("structured", 1)
    s = normalize({"method": "rkv", "budget": 40})
    q16, k16 = queries.bfloat16(), keys.bfloat16()
    want = rkv_scores(q16.float(), k16.float(), s)
    got = rkv_scores(q16, k16, s)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)
    slots = torch.arange(72).expand(2, 2, 72)
    torch.testing.assert_close(rkv_scores(q16, k16, s, rows=torch.tensor([0, 1]), slots=slots), want,
                               rtol=1e-6, atol=1e-9)


def _spy_scoring(monkeypatch):
    """Record the (row, KV head) pairs of each chunk and the similarity rows per chunk."""
    from notallbits.kvcache import eviction

    seen = {"pairs": [], "rows": set()}
    importance, redundancy = eviction._rkv_importance, eviction._rkv_redundancy

    def spy_importance(q, *args):
        seen["pairs"].append(q.shape[0])
        return importance(q, *args)

    def spy_redundancy(k, threshold, ok, rows):
        seen["rows"].add(rows)
        return redundancy(k, threshold, ok, rows)

    monkeypatch.setattr(eviction, "_rkv_importance", spy_importance)
    monkeypatch.setattr(eviction, "_rkv_redundancy", spy_redundancy)
    return seen


def test_rkv_scores_a_devices_chunks_by_hand(monkeypatch):
    """A compression of 8 rows x 8 KV heads x 128 channels over 320 float32 tokens, window 8.
    On a CPU: similarity chunks of 64 rows (RKV_SIMILARITY_ROWS; one pair's scratch
    4 x 320 x (128 + 4 x 8 + 8) + 12 x 320 x 64 = 460,800 B) and 16 MiB of scratch (the rows'
    K + V, 2 x 64 x 320 x 128 x 4 = 20,971,520 B, is more): 16,777,216 // 460,800 = 36 pairs
    at a time, then the other 28, each pair scored once. One row: its K + V (2,621,440 B) caps
    it, 5 pairs then 3. A given scratch_bytes of two pairs: 2 at a time. A device type without
    figures of its own (PyTorch's shape-only "meta" device) takes the GPU's: 256 rows (a pair
    then takes 1,198,080 B) and 1 GiB, at most the K + V: 17 pairs at a time; its scores and
    every tensor they come from stay on that device, with a padding mask or without."""
    g = torch.Generator().manual_seed(8)
    queries = torch.randn(8, 16, 8, 128, generator=g)
    keys = torch.randn(8, 8, 320, 128, generator=g)
    s = normalize({"method": "rkv", "budget": 256, "buffer": 64})
    seen = _spy_scoring(monkeypatch)
    rkv_scores(queries, keys, s)
    assert seen == {"pairs": [36, 28], "rows": {64}}
    seen = _spy_scoring(monkeypatch)
    rkv_scores(queries[:1], keys[:1], s)
    assert seen == {"pairs": [5, 3], "rows": {64}}
    seen = _spy_scoring(monkeypatch)
    rkv_scores(queries, keys, s, scratch_bytes=2 * 460_800)
    assert seen == {"pairs": [2] * 32, "rows": {64}}
    seen = _spy_scoring(monkeypatch)
    valid = torch.ones(8, 320, dtype=torch.bool)
    got = rkv_scores(queries.to("meta"), keys.to("meta"), s, valid=valid)
    assert seen == {"pairs": [17, 17, 17, 13], "rows": {256}}
    assert got.device.type == "meta" and got.shape == (8, 8, 312)
    assert rkv_scores(queries.to("meta"), keys.to("meta"), s).device.type == "meta"  # no padding mask


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_rkv_redundancy_is_the_authors_cal_similarity(threshold):
    """The redundancy term against the authors' cal_similarity (rkv/utils.py, retain_direction
    "last"), written out in NumPy float64: cosine similarity with a zero diagonal, in each row
    the most recent key strictly above the threshold (none: index 0) zeroed, mean over rows,
    softmax. At threshold 0 (the lowest the settings accept) the zeroed diagonal is no match."""
    from notallbits.kvcache.eviction import _rkv_redundancy

    _, keys = rkv_case("structured", 1)
    k = keys[0].double().numpy()  # [Hkv, L, D]
    unit = k / (np.linalg.norm(k, axis=-1, keepdims=True) + 1e-8)
    sim = unit @ unit.transpose(0, 2, 1)
    length = sim.shape[-1]
    sim[:, np.arange(length), np.arange(length)] = 0.0
    last = np.where(sim > threshold, np.arange(length), 0).max(-1)
    np.put_along_axis(sim, last[..., None], 0.0, axis=-1)
    mean = sim.mean(-2)
    want = np.exp(mean - mean.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    for rows in (length, 5):
        got = _rkv_redundancy(keys[0].clone(), threshold, None, rows)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-9)


def test_rkv_row_scores_the_same_alone_or_among_other_rows():
    """A row's R-KV scores do not depend on its batch: scored alone, among 31 other rows, or
    picked by ``rows``/``slots`` from a layer as RKVLayer.evict does, bit for bit, at a real
    head layout (16 query / 8 KV heads x 128, the budget 256 + buffer 64 tokens of a compressing
    step, float32 as the rows benchmark's model). Chunks of similarity rows sized from how many
    rows are due (as they once were) change the sums' order: ~1e-9 apart."""
    g = torch.Generator().manual_seed(4)
    b, length = 32, 320
    queries = torch.randn(b, 16, 8, 128, generator=g)
    keys = torch.randn(b, 8, length, 128, generator=g) * 0.5 + torch.randn(b, 8, 1, 128, generator=g)
    s = normalize({"method": "rkv", "budget": 256, "buffer": 64})
    together = rkv_scores(queries, keys, s)
    for r in (0, 5, 31):
        assert torch.equal(rkv_scores(queries[r:r + 1], keys[r:r + 1], s)[0], together[r])
    rows = torch.tensor([3, 17, 30])
    picked = rkv_scores(queries[rows], keys, s, rows=rows, slots=torch.arange(length).expand(3, 8, length))
    assert torch.equal(picked, together[rows])


def test_rkv_scratch_memory_within_layer_kv():
    """One compression's working memory stays under the layer's own K + V bytes (what the
    memory model counts as R-KV scratch); an L x L similarity matrix alone would not."""
    from notallbits.bench.kv_methods import peak_extra_bytes

    g = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(2, 16, 8, 64, generator=g), torch.randn(2, 4, 700, 64, generator=g)
    s = normalize({"method": "rkv", "budget": 600})
    _, peak = peak_extra_bytes(rkv_select, queries, keys, s)
    layer_kv = 2 * keys.nbytes
    assert peak <= layer_kv
    assert 2 * 4 * 700 * 700 * 4 > layer_kv  # the dense similarity of this layer would exceed it


def test_rkv_compresses_on_the_authors_schedule(model, ids):
    """Compression at every step holding a position that is a multiple of ``buffer`` (the
    authors' divide_length), when the cache then exceeds the budget; never in between. The
    cache a step attends to peaks at budget + buffer."""
    s = {"method": "rkv", "budget": 32, "buffer": 16}
    _, _, lengths = decode(model, s, ids[:, :120])
    want, held = [], 8  # prefill 8 tokens, then one token per step at positions 8, 9, ...
    for pos in range(8, 120):
        held += 1
        if pos % 16 == 0 and held > 32:
            held = 32
        want.append(held)
    assert lengths == want
    assert max(lengths) + 1 == 32 + 16  # the step before a compression stores 47; the next attends to 48


def test_rkv_keeps_recent_window_and_bounds_length(model, ids):
    s = {"method": "rkv", "budget": 32, "buffer": 16}
    _, cache, lengths = decode(model, s, ids)
    assert max(lengths) <= 32 + 16 and min(lengths[-50:]) >= 32
    # layer-0 keys depend only on token and position, so they identify tokens exactly:
    # the last 8 tokens of the sequence are always among the kept ones, in order
    _, full, _ = decode(model, {"method": "full"}, ids)
    assert torch.equal(cache.layers[0].keys[:, :, -8:], full.layers[0].keys[:, :, -8:])
    assert cache.get_seq_length() == ids.shape[1]


def test_rkv_compression_keeps_last_window_tokens():
    g = torch.Generator().manual_seed(2)
    keys = torch.randn(1, 2, 60, 16, generator=g)
    idx = rkv_select(torch.randn(1, 4, 8, 16, generator=g), keys, normalize({"method": "rkv", "budget": 24}))
    assert idx.shape[-1] == 24 and (idx[..., -8:] == torch.arange(52, 60)).all()


def test_hqq_error_shrinks_with_bits(model, ids):
    full, _, _ = decode(model, {"method": "full"}, ids[:, :200])
    errors = {}
    for nbits in (2, 4, 8):
        got, _, _ = decode(model, {"method": "hqq", "nbits": nbits}, ids[:, :200])
        errors[nbits] = (got - full).abs().max().item()
    assert errors[2] > errors[4] > errors[8] > 0


def test_forked_cache_is_independent(model, ids):
    """kvcache.fork shares the tensors instead of copying them: decoding on a fork must leave
    the original exactly as a deep copy would (a second fork then sees the same state)."""
    for settings in ({"method": "rkv", "budget": 16, "buffer": 4}, {"method": "hqq", "nbits": 4, "residual_length": 8},
                     {"method": "streamingllm", "budget": 16}, {"method": "full"}):
        _, cache, _ = decode(model, settings, ids[:, :60])
        twin = fork(cache)
        a = step(model, twin, ids[:, 60:70], 60)  # advance the fork by 10 tokens
        for t in range(70, 80):  # and on, token by token (evicting, requantizing)
            step(model, twin, ids[:, t : t + 1], t)
        assert cache.get_seq_length() == 60
        b = step(model, copy.deepcopy(cache), ids[:, 60:70], 60)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(step(model, fork(cache), ids[:, 60:70], 60), a, rtol=0, atol=0)


def test_held_bytes_match_memory_model(tiny_model, ids):
    from transformers import AutoModelForCausalLM

    bf16 = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    arch = Arch.named(str(tiny_model))
    t, b = 256, ids.shape[0]
    _, full, _ = decode(bf16, {"method": "full"}, ids[:, :t])
    assert held_bytes(full) == kv_bytes(arch, {"method": "full"}, t, b)
    _, rkv, _ = decode(bf16, {"method": "rkv", "budget": 64, "buffer": 32}, ids[:, :t])
    stored = rkv.layers[0].keys.shape[-2]
    assert 64 <= stored <= 96 and held_bytes(rkv) <= kv_bytes(arch, normalize({"method": "rkv", "budget": 64, "buffer": 32}), t, b)
    for nbits in (2, 4, 8):
        s = normalize({"method": "hqq", "nbits": nbits})
        _, q, _ = decode(bf16, s, ids[:, :t])
        residual = q.layers[0].keys.shape[-2] if q.layers[0].keys.dim() == 4 else 0
        # the formula with this cache's actual residual: quantized part + bf16 residual
        quantized_tokens = t - residual
        values = 2 * arch.layers * arch.kv_heads * arch.head_dim
        want = b * (values * quantized_tokens * (nbits / 8 + 32 / (8 * 64)) + residual * values * 2)
        assert held_bytes(q) == pytest.approx(want, rel=0.02), nbits
        assert kv_bytes(arch, s, t, b, residual=False) <= held_bytes(q) <= kv_bytes(arch, s, t, b) + b * 128 * values * 2


def test_bad_settings():
    with pytest.raises(UserError, match="nbits must be 2, 4 or 8"):
        normalize({"method": "hqq", "nbits": 3})
    with pytest.raises(UserError, match="unknown setting 'budgett'"):
        normalize({"method": "rkv", "budgett": 3})
    with pytest.raises(UserError, match="must exceed the observation window"):
        normalize({"method": "rkv", "budget": 8})
    with pytest.raises(UserError, match="kernel 6 must be odd"):
        normalize({"method": "rkv", "kernel": 6})
    with pytest.raises(UserError, match=r"sim_threshold 1.2 must be in \[0, 1\)"):
        normalize({"method": "rkv", "sim_threshold": 1.2})


def test_sample_bytes_by_hand():
    """One sample's peak bytes, counted by hand (values_per_token = 2 * layers * kv_heads * head_dim)."""
    from notallbits.kvcache.settings import METHODS, tokens_held

    rkv, hqq = METHODS["rkv"], METHODS["hqq"]
    s = normalize({"method": "rkv", "budget": 64, "buffer": 32})
    # past the budget: 96 tokens held (64 + 32) x 10 values x 2 bytes = 1920 (the scoring scratch is
    # a batch's: settings.rkv_scratch_bytes, memory.kv_batch_bytes)
    assert rkv.sample_bytes(s, 100, 10) == 1920
    assert rkv.sample_bytes(s, 64, 10) == 64 * 10 * 2
    # HQQ (defaults 4 bits, groups of 64, residual window 128), its residual counted unless told
    # otherwise: 872 quantized tokens x 256 values at 4 bits = 111616 bytes, plus 223232 / 64 groups
    # x (16 + 16) bits = 13952; 128 bf16 tokens = 65536
    h = normalize({"method": "hqq"})
    assert hqq.sample_bytes(h, 1000, 256) == 111616 + 13952 + 65536
    assert hqq.sample_bytes(h, 1000, 256, residual=False) == 128000 + 16000
    # the peak tokens of one sample after a 5000-token trace
    assert tokens_held({"method": "full"}, 5000) == 5000
    assert tokens_held({"method": "streamingllm"}, 5000) == 2048
    assert tokens_held({"method": "rkv"}, 5000) == 2048 + 128
    assert tokens_held({"method": "rkv", "budget": 512}, 300) == 300
    assert tokens_held({"method": "hqq"}, 5000) == 5000
    # R-KV's max-pooling kernel must be odd: 3 and 9 are
    assert normalize({"method": "rkv", "kernel": 3})["kernel"] == 3
    assert normalize({"method": "rkv", "kernel": 9})["kernel"] == 9
    # the similarity threshold is in [0, 1): 0 is allowed, 1 is not
    assert normalize({"method": "rkv", "sim_threshold": 0})["sim_threshold"] == 0
    with pytest.raises(UserError, match=r"sim_threshold 1 must be in \[0, 1\)"):
        normalize({"method": "rkv", "sim_threshold": 1})


def test_schema_kv_methods_are_the_table():
    """The config schema's method enum, setting keys and the defaults its descriptions quote
    are the KV method table's (kvcache/settings.py), which everything else reads."""
    import re

    import yaml

    from notallbits.kvcache.settings import METHODS
    from tests.conftest import ROOT

    schema = yaml.safe_load((ROOT / "notallbits/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["kv_methods"]["additionalProperties"]["properties"]
    assert props["method"]["enum"] == list(METHODS)
    keys = {k for m in METHODS.values() for k in m.defaults}
    assert set(props) - {"method"} == keys
    for m in METHODS.values():
        for key, value in m.defaults.items():
            quoted = re.search(r"default ([-0-9.]+)\)\.?$", props[key]["description"])
            assert quoted and float(quoted.group(1)) == value, (m.name, key)


def test_every_kv_method_has_an_importable_factory():
    """The KV-method table names each method's cache factory; make_cache dispatches through it only."""
    import importlib

    from notallbits.kvcache.settings import METHODS

    for name, method in METHODS.items():
        module, func = method.factory.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


# --------------------------------------------------------------------------- forks add only their tail
FORK_CASES = [{"method": "full"}, {"method": "streamingllm", "budget": 16},
              {"method": "rkv", "budget": 16, "buffer": 8}, {"method": "hqq", "nbits": 4, "residual_length": 8}]


def _kept(layer, row, states):
    """[H, n, D]: the states of a row's kept tokens in slot order (an evicting layer's visible slots)."""
    if not hasattr(layer, "visible"):
        return states[row]
    return states[row][layer.visible()[row].expand(states.shape[1], -1)].view(states.shape[1], -1, states.shape[-1])


@pytest.mark.parametrize("pad", [(0, 0), (0, 3)], ids=["aligned", "padded"])
@pytest.mark.parametrize("settings", FORK_CASES, ids=lambda s: s["method"])
def test_fork_leaves_parent_as_it_was_and_matches_a_deep_copy(model, ids, settings, pad):
    """Forcing on a fork (its tokens reserved in the parent's slots) gives exactly what a deep copy
    gives, and afterwards the parent's stored tokens and its next step are those of a deep copy
    taken before the fork. The fork crosses an R-KV compression (position 64; with the second row
    padded by 3 slots, the rows compress at two different steps of the fork) and, for HQQ, a
    requantization."""
    _, cache, _ = decode(model, settings, ids[:, :60], pad=torch.tensor(pad))
    before = copy.deepcopy(cache)
    twin = fork(cache, 12)
    got = [step(model, twin, ids[:, t : t + 1], t) for t in range(60, 72)]
    want_cache = copy.deepcopy(before)
    want = [step(model, want_cache, ids[:, t : t + 1], t) for t in range(60, 72)]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for mine, ref in zip(cache.layers, before.layers):
        if mine.keys is not None and mine.keys.dim() == 4:
            for row in range(len(pad)):  # the tokens it holds (a compaction due at the fork is done there)
                assert torch.equal(_kept(mine, row, mine.keys), _kept(ref, row, ref.keys))
                assert torch.equal(_kept(mine, row, mine.values), _kept(ref, row, ref.values))
    torch.testing.assert_close(step(model, cache, ids[:, 60:61], 60), step(model, before, ids[:, 60:61], 60),
                               rtol=0, atol=0)


@pytest.fixture(scope="module")
def deep_model():
    """A random Qwen3 of 8 layers (one layer's transients are 1/8 of its cache)."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=8,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@pytest.mark.parametrize("settings", FORK_CASES[:3], ids=lambda s: s["method"])
def test_forcing_allocates_the_answer_tail_not_a_second_cache(deep_model, settings):
    """Bytes allocated and alive at once while a fork decodes 8 tokens: the answer's K/V, one
    layer's transient copies and the step's activations, far below the cache itself (a fork
    whose layers replace their tensors on update holds a second cache: >= 1x). The rows are
    left-padded by 0..3 slots, so R-KV's rows compress at four different steps of the fork."""
    from notallbits.bench.kv_methods import peak_extra_bytes
    from notallbits.kvcache import reserve, set_padding

    long_ids = torch.randint(5, 400, (4, 240), generator=torch.Generator().manual_seed(5))
    s = {**settings, **({"budget": 160} if "budget" in settings else {})}
    cache = make_cache(s, deep_model)
    set_padding(cache, torch.arange(4))
    reserve(cache, 230 + 2 * 8, fork_tokens=8)  # as the backend does: the trace, and the answer's room
    step(deep_model, cache, long_ids[:, :8], 0)
    for t in range(8, 230):
        step(deep_model, cache, long_ids[:, t : t + 1], t)

    def force():
        twin = fork(cache, 8)
        for t in range(230, 238):
            step(deep_model, twin, long_ids[:, t : t + 1], t)

    _, peak = peak_extra_bytes(force)
    assert peak < 0.5 * held_bytes(cache), (peak, held_bytes(cache))


# --------------------------------------------------------------------------- grouped attention
@pytest.mark.parametrize("family", ["Qwen3Config", "Qwen2Config", "LlamaConfig"])
def test_grouped_attention_equals_sdpa_without_repeating_kv(family, monkeypatch):
    """Left-padded prefill and decode steps through the backend's masks: logits of the grouped
    attention equal transformers' SDPA path (which repeats K/V per query head) in fp32, and
    the grouped path never calls repeat_kv."""
    import transformers
    from transformers import AutoModelForCausalLM, DynamicCache
    from transformers.integrations import sdpa_attention

    from notallbits.generation.hf_backend import attention_mask
    from notallbits.kvcache.attention import use_grouped_attention

    torch.manual_seed(0)
    config = getattr(transformers, family)(vocab_size=300, hidden_size=128, intermediate_size=256,
                                           num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                                           head_dim=16)
    m = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    ids = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(1))
    pad = torch.tensor([0, 3, 5])

    def run():
        cache = DynamicCache(config=config)
        pos = (torch.arange(10)[None] - pad[:, None]).clamp_min(0)
        out = [m(input_ids=ids[:, :10], past_key_values=cache, position_ids=pos,
                 attention_mask=attention_mask(pad, 0, 10, torch.float32)).logits]
        for t in range(10, 16):
            out.append(m(input_ids=ids[:, t : t + 1], past_key_values=cache, position_ids=pos[:, -1:] + t - 9,
                         attention_mask=attention_mask(pad, t, 1, torch.float32)).logits)
        return out

    m.set_attn_implementation("sdpa")
    want = run()
    use_grouped_attention(m)
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda *a: pytest.fail("K/V repeated per query head"))
    got = run()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("slack", [None, 1, 7])
def test_streamingllm_after_compactions_equals_cutting_a_full_cache_by_hand(model, ids, slack, monkeypatch):
    """200 tokens at budget 24, in float64: the evicted tokens are masked and dropped in batches
    of the slack (slots never exceed budget + slack + 1); every step's logits equal those of a
    plain cache cut by hand after each step to its 4 first and 20 last tokens (the method's
    definition, StartRecentKVCache.__call__ in mit-han-lab/streaming-llm, independent of our
    slots and masks) to 1e-12, whatever the slack: it moves slots, never which tokens are seen
    (one token more or less moves the logits by ~1e-3 on this model)."""
    from transformers import DynamicCache

    from notallbits.kvcache import settings

    if slack is not None:  # the default: budget // 16 -> 1 here; 7 and 1 interleave masks and compactions
        monkeypatch.setattr(settings, "streaming_slack", lambda budget: slack)
    held = settings.streaming_slack(24)
    model = copy.deepcopy(model).double()
    s = {"method": "streamingllm", "budget": 24, "sink": 4}
    cache, ref = make_cache(s, model), DynamicCache(config=model.config)
    step(model, cache, ids[:, :8], 0)
    step(model, ref, ids[:, :8], 0)
    widths = []
    for t in range(8, 200):
        got, want = step(model, cache, ids[:, t : t + 1], t), step(model, ref, ids[:, t : t + 1], t)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        for layer in ref.layers:
            if layer.keys.shape[-2] > 24:
                layer.keys = torch.cat([layer.keys[:, :, :4], layer.keys[:, :, -20:]], dim=2)
                layer.values = torch.cat([layer.values[:, :, :4], layer.values[:, :, -20:]], dim=2)
        widths.append(cache.layers[0].keys.shape[-2])
    # after a step: the budget + the masked tokens, compacted once ``held`` are masked (the memory
    # model counts one slot more: settings.streaming_slack)
    assert max(widths) == 24 + held and min(widths[-100:]) <= 24 + 1


def test_rkv_compressing_step_holds_its_scoring_scratch_only(deep_model):
    """A decode step at which every row compresses: bytes alive at once beyond the cache stay
    within one layer's K + V (the scoring's float32 scratch, which the memory model counts), the
    step's activations and one head's move; scoring a copy of the rows' keys beside the scratch
    (half a layer more) and compacting into new slots (a layer more) exceed it."""
    from notallbits.bench.kv_methods import peak_extra_bytes
    from notallbits.kvcache import reserve

    long_ids = torch.randint(5, 400, (4, 240), generator=torch.Generator().manual_seed(5))
    s = {"method": "rkv", "budget": 160, "buffer": 64}
    cache = make_cache(s, deep_model)
    reserve(cache, 200)  # as the backend does: slots sized once
    step(deep_model, cache, long_ids[:, :8], 0)
    for t in range(8, 192):  # 192 = 3 x 64: the next step compresses
        step(deep_model, cache, long_ids[:, t : t + 1], t)
    assert cache.layers[0].keys.shape[-2] == 192
    _, peak = peak_extra_bytes(lambda: step(deep_model, cache, long_ids[:, 192:193], 192))
    assert cache.layers[0].keys.shape[-2] == 160
    layer_kv = 2 * cache.layers[0].keys.nbytes * 193 // 160  # the compressing step's 193 tokens
    assert peak < 1.25 * layer_kv, (peak, layer_kv)
# --------------------------------------------------------------------------- HQQ attends over its codes
@pytest.mark.parametrize("nbits", [2, 4, 8])
@pytest.mark.parametrize("heads,dim,tokens", [(8, 128, 64), (8, 128, 61), (3, 64, 37), (1, 64, 37)],
                         ids=["qwen3-heads-aligned", "qwen3-heads-wrapping", "heads-not-sharing-columns",
                              "one-head-fewer-columns-than-head-dim"])
def test_hqq_attention_over_codes_equals_sdpa_over_hqqs_own_dequantization(nbits, heads, dim, tokens):
    """Left-padded rows quantized at prefill, one decode step: the layer's chunked attention over
    its codes equals SDPA over the keys and values that hqq's own Quantizer.quantize/dequantize
    (transformers' settings) makes of each row alone, plus the new token. The shapes put a token's
    columns on both sides of hqq's wrap-around (61 tokens: M is not a multiple of head_dim) and
    give heads that do not share columns (3 KV heads) and one KV head whose row has fewer group
    columns than head_dim (M = 37: a token may start on the last column)."""
    import torch.nn.functional as F
    from hqq.core.quantize import Quantizer

    from notallbits.kvcache import quantized
    from notallbits.kvcache.quantized import RowHQQLayer

    g = torch.Generator().manual_seed(nbits)
    b, groups = 3, 4
    pad = torch.tensor([0, 5, 0])
    # key-like: per-channel offsets and scales
    k = torch.randn(b, heads, tokens, dim, generator=g) * torch.rand(1, heads, 1, dim, generator=g) * 3 + 1
    v = torch.randn(b, heads, tokens + 1, dim, generator=g)
    k = torch.cat([k, torch.randn(b, heads, 1, dim, generator=g)], 2)
    layer = RowHQQLayer(nbits, 64, 128, {})
    layer.set_padding(pad)
    layer.update(k[:, :, :tokens], v[:, :, :tokens])
    layer.update(k[:, :, tokens:], v[:, :, tokens:])
    query = torch.randn(b, heads * groups, 1, dim, generator=g)
    mask = (torch.arange(tokens + 1)[None] >= pad[:, None])[:, None, None]  # [B, 1, 1, L]
    saved = dict(quantized.HQQ_CHUNK_TOKENS)
    quantized.HQQ_CHUNK_TOKENS["cpu"] = 16  # several chunks per row
    try:
        got = layer.attend(query, mask)
    finally:
        quantized.HQQ_CHUNK_TOKENS.update(saved)
    for r in range(b):
        real = slice(int(pad[r]), tokens)
        parts = []
        for x in (k, v):
            q, meta = Quantizer.quantize(x[r : r + 1, :, real].contiguous(), nbits=nbits, group_size=64, axis=0,
                                         device="cpu", compute_dtype=torch.float32)
            parts.append(torch.cat([Quantizer.dequantize(q, meta), x[r : r + 1, :, tokens:]], 2))
        want = F.scaled_dot_product_attention(query[r : r + 1], *(p.repeat_interleave(groups, 1) for p in parts))
        torch.testing.assert_close(got[r : r + 1], want.transpose(1, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nbits,dtype", [(2, torch.float32), (4, torch.float32), (4, torch.bfloat16)])
def test_hqq_layer_decodes_as_transformers_hqq_layer_on_each_row(nbits, dtype):
    """Nine decode steps with a residual window of 4 (two requantizations) over left-padded rows:
    each step's attention equals SDPA over the keys and values that transformers' own
    HQQQuantizedLayer.update returns for that row alone (hqq's quantization, transformers' window
    and requantization rule), and the mask length the layer asks for is that row's length plus
    its padding."""
    import torch.nn.functional as F
    from transformers.cache_utils import HQQQuantizedLayer

    from notallbits.kvcache.quantized import RowHQQLayer

    g = torch.Generator().manual_seed(10 + nbits)
    b, heads, groups, dim, prompt, steps, residual = 3, 2, 2, 64, 37, 9, 4
    pad = torch.tensor([0, 3, 0])
    k = torch.randn(b, heads, prompt + steps, dim, generator=g) * torch.rand(1, heads, 1, dim, generator=g) * 3 + 1
    v = torch.randn(b, heads, prompt + steps, dim, generator=g)
    q = torch.randn(b, heads * groups, steps, dim, generator=g)
    k, v, q = k.to(dtype), v.to(dtype), q.to(dtype)
    layer = RowHQQLayer(nbits, 64, residual, {})
    layer.set_padding(pad)
    assert layer.get_mask_sizes(prompt) == (prompt, 0)  # an empty layer: the prompt alone, as DynamicLayer's
    refs = [HQQQuantizedLayer(nbits=nbits, q_group_size=64, residual_length=residual) for _ in range(b)]
    first = layer.update(k[:, :, :prompt], v[:, :, :prompt])
    assert torch.equal(first[0], k[:, :, :prompt]) and torch.equal(first[1], v[:, :, :prompt])
    for r in range(b):
        refs[r].update(k[r : r + 1, :, int(pad[r]) : prompt], v[r : r + 1, :, int(pad[r]) : prompt])
    for s in range(steps):
        t = prompt + s
        length, offset = layer.get_mask_sizes(1)
        layer.update(k[:, :, t : t + 1], v[:, :, t : t + 1])
        mask = (torch.arange(length)[None] >= pad[:, None])[:, None, None]
        got = layer.attend(q[:, :, s : s + 1], mask)
        assert layer.get_seq_length() == t + 1
        for r in range(b):
            keys, values = refs[r].update(k[r : r + 1, :, t : t + 1], v[r : r + 1, :, t : t + 1])
            assert (keys.shape[-2] + int(pad[r]), 0) == (length, offset), (s, r)  # no token dropped: offset 0
            want = F.scaled_dot_product_attention(q[r : r + 1, :, s : s + 1], keys.repeat_interleave(groups, 1),
                                                  values.repeat_interleave(groups, 1))
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            torch.testing.assert_close(got[r : r + 1], want.transpose(1, 2), rtol=tol, atol=tol, msg=f"{s} {r}")


def test_hqq_layer_requantizes_row_by_row_where_heads_do_not_share_columns(monkeypatch):
    """Three KV heads (a token's columns differ from head to head) and settings.HQQ_REQUANT_ELEMENTS
    below one row: the prefill and the requantization go row by row, each dequantizing rows r..r+1
    of its group; every step's attention equals SDPA over the keys and values transformers' own
    HQQQuantizedLayer.update returns for that row alone."""
    import torch.nn.functional as F
    from transformers.cache_utils import HQQQuantizedLayer

    import notallbits.kvcache.quantized as quantized

    monkeypatch.setitem(quantized.HQQ_REQUANT_ELEMENTS, "cpu", 1)  # one row per call
    g = torch.Generator().manual_seed(29)
    b, heads, groups, dim, prompt, steps, residual = 3, 3, 2, 64, 37, 6, 4
    k = torch.randn(b, heads, prompt + steps, dim, generator=g) * torch.rand(1, heads, 1, dim, generator=g) * 3 + 1
    v = torch.randn(b, heads, prompt + steps, dim, generator=g)
    q = torch.randn(b, heads * groups, steps, dim, generator=g)
    layer = quantized.RowHQQLayer(4, 64, residual, {})
    layer.update(k[:, :, :prompt], v[:, :, :prompt])
    refs = [HQQQuantizedLayer(nbits=4, q_group_size=64, residual_length=residual) for _ in range(b)]
    for r in range(b):
        refs[r].update(k[r : r + 1, :, :prompt], v[r : r + 1, :, :prompt])
    for s in range(steps):  # the window of 4 fills at step 3: requantized to 41 tokens
        t = prompt + s
        layer.update(k[:, :, t : t + 1], v[:, :, t : t + 1])
        got = layer.attend(q[:, :, s : s + 1], None)
        for r in range(b):
            keys, values = refs[r].update(k[r : r + 1, :, t : t + 1], v[r : r + 1, :, t : t + 1])
            want = F.scaled_dot_product_attention(q[r : r + 1, :, s : s + 1], keys.repeat_interleave(groups, 1),
                                                  values.repeat_interleave(groups, 1))
            torch.testing.assert_close(got[r : r + 1], want.transpose(1, 2), rtol=1e-5, atol=1e-5, msg=f"{s} {r}")


@pytest.mark.parametrize("new", [2, 3])
def test_hqq_layer_attends_several_new_tokens_causally_without_a_mask(new):
    """Two or three tokens appended at once and attended with no mask: each sees the cache and
    the new tokens up to itself, as SDPA with a causal mask aligned to the last key over the keys
    and values transformers' HQQQuantizedLayer.update returns."""
    import torch.nn.functional as F
    from transformers.cache_utils import HQQQuantizedLayer

    from notallbits.kvcache.quantized import RowHQQLayer

    g = torch.Generator().manual_seed(4)
    k, v = (torch.randn(2, 2, 40 + new, 64, generator=g) for _ in range(2))
    query = torch.randn(2, 4, new, 64, generator=g)
    layer = RowHQQLayer(4, 64, 128, {})
    layer.update(k[:, :, :40], v[:, :, :40])
    layer.update(k[:, :, 40:], v[:, :, 40:])
    got = layer.attend(query, None)
    for r in range(2):
        ref = HQQQuantizedLayer(nbits=4, q_group_size=64, residual_length=128)
        ref.update(k[r : r + 1, :, :40], v[r : r + 1, :, :40])
        keys, values = ref.update(k[r : r + 1, :, 40:], v[r : r + 1, :, 40:])
        causal = torch.ones(new, 40 + new, dtype=torch.bool).tril(diagonal=40)
        want = F.scaled_dot_product_attention(query[r : r + 1], keys.repeat_interleave(2, 1),
                                              values.repeat_interleave(2, 1), attn_mask=causal)
        torch.testing.assert_close(got[r : r + 1], want.transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_hqq_layer_attends_several_new_tokens_with_the_mask_it_is_given():
    """Three tokens appended at once over left-padded rows, with a given boolean mask that hides
    more than padding and the future (causal and a sliding window of 32 keys, as transformers
    builds for a sliding-window layer): the layer applies that mask, not its own causal one. The
    reference is SDPA, with each row's mask cut to its real keys, over the keys and values
    transformers' HQQQuantizedLayer.update returns for that row alone."""
    import torch.nn.functional as F
    from transformers.cache_utils import HQQQuantizedLayer

    from notallbits.kvcache.quantized import RowHQQLayer

    g = torch.Generator().manual_seed(23)
    prompt, new, window = 40, 3, 32
    pad = torch.tensor([0, 4])
    k, v = (torch.randn(2, 2, prompt + new, 64, generator=g) for _ in range(2))
    query = torch.randn(2, 4, new, 64, generator=g)
    key_pos = torch.arange(prompt + new)
    query_pos = key_pos[prompt:, None]
    seen = (key_pos <= query_pos) & (key_pos > query_pos - window)  # [new, L]
    mask = seen[None, None] & (key_pos >= pad[:, None])[:, None, None]  # [B, 1, new, L]
    layer = RowHQQLayer(4, 64, 128, {})
    layer.set_padding(pad)
    layer.update(k[:, :, :prompt], v[:, :, :prompt])
    layer.update(k[:, :, prompt:], v[:, :, prompt:])
    got = layer.attend(query, mask)
    for r in range(2):
        real = int(pad[r])
        ref = HQQQuantizedLayer(nbits=4, q_group_size=64, residual_length=128)
        ref.update(k[r : r + 1, :, real:prompt], v[r : r + 1, :, real:prompt])
        keys, values = ref.update(k[r : r + 1, :, prompt:], v[r : r + 1, :, prompt:])
        want = F.scaled_dot_product_attention(query[r : r + 1], keys.repeat_interleave(2, 1),
                                              values.repeat_interleave(2, 1), attn_mask=mask[r : r + 1, :, :, real:])
        torch.testing.assert_close(got[r : r + 1], want.transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_hqq_layer_keeps_its_scratch_and_refuses_a_second_update_without_attention():
    """The chunk buffers are allocated once and reused by later steps (no temporary per step);
    a layer updated twice without being attended fails with one line naming the way to attend."""
    from notallbits.kvcache.quantized import RowHQQLayer

    g = torch.Generator().manual_seed(3)
    k, v = (torch.randn(2, 2, 40, 64, generator=g) for _ in range(2))
    layer = RowHQQLayer(4, 64, 128, {})
    layer.update(k[:, :, :38], v[:, :, :38])
    layer.update(k[:, :, 38:39], v[:, :, 38:39])
    layer.attend(torch.randn(2, 4, 1, 64, generator=g), None)
    first = dict(layer.scratch)
    assert set(first) == {"f", "u8", "s"}
    layer.update(k[:, :, 39:], v[:, :, 39:])
    layer.attend(torch.randn(2, 4, 1, 64, generator=g), None)
    assert all(layer.scratch[name] is first[name] for name in first)
    layer.update(k[:, :, 39:], v[:, :, 39:])
    line = ("an HQQ cache layer was not attended through kvcache.attention.grouped_attention "
            "(use_grouped_attention(model) before decoding)")
    with pytest.raises(RuntimeError, match=f"^{re.escape(line)}$"):
        layer.update(k[:, :, 39:], v[:, :, 39:])


def test_hqq_layer_requantizes_in_its_scratch_and_a_fork_keeps_its_own_slots_after():
    """Requantizing (residual window of 4) dequantizes through the same scratch the attention
    uses (the buffers "f", "u8", "s", no others); a fork's first requantization leaves its
    parent's slots for slots of its own, which later requantizations keep (written in place)."""
    from notallbits.kvcache.quantized import RowHQQLayer

    g = torch.Generator().manual_seed(8)
    k, v = (torch.randn(2, 2, 60, 64, generator=g) for _ in range(2))
    layer = RowHQQLayer(4, 64, 4, {})
    layer.update(k[:, :, :40], v[:, :, :40])
    for t in range(40, 44):  # the fourth step requantizes
        layer.update(k[:, :, t : t + 1], v[:, :, t : t + 1])
        layer.attend(torch.randn(2, 4, 1, 64, generator=g), None)
    assert layer.quantized_tokens == 44 and set(layer.scratch) == {"f", "u8", "s"}
    parent_keys = layer._kbuf
    twin = layer.fork()
    own = []
    for t in range(44, 56):  # three requantizations of the fork
        twin.update(k[:, :, t : t + 1], v[:, :, t : t + 1])
        own.append(twin._kbuf)
        twin.attend(torch.randn(2, 4, 1, 64, generator=g), None)
    assert twin.quantized_tokens == 56 and set(twin.scratch) == {"f", "u8", "s"}
    # requantized at t = 47, 51, 55: the first leaves the parent's slots, the second keeps the fork's
    assert own[3] is parent_keys and own[4] is not parent_keys and own[8] is own[7]
    assert layer.quantized_tokens == 44 and layer._kbuf is parent_keys


def test_hqq_layer_dequantizes_at_most_settings_chunk_of_tokens_at_a_time():
    """Qwen3-shaped heads (8 x 128) over 1,100 quantized tokens, where a run of heads-sharing
    columns could hold 137 tokens: the attention dequantizes at most settings.HQQ_CHUNK_TOKENS
    ["cpu"] (128) tokens per row at a time, so its scratch is one such chunk of keys."""
    from notallbits.kvcache.quantized import RowHQQLayer
    from notallbits.kvcache.settings import HQQ_CHUNK_TOKENS

    g = torch.Generator().manual_seed(15)
    k, v = (torch.randn(1, 8, 1101, 128, generator=g) for _ in range(2))
    layer = RowHQQLayer(4, 64, 128, {})
    layer.update(k[:, :, :1100], v[:, :, :1100])
    layer.update(k[:, :, 1100:], v[:, :, 1100:])
    layer.attend(torch.randn(1, 16, 1, 128, generator=g), None)
    assert layer.scratch["f"].numel() == 8 * HQQ_CHUNK_TOKENS["cpu"] * 128


def test_hqq_layer_attends_with_the_scaling_it_is_given():
    """A model's own attention scaling (not head_dim^-0.5) is what the layer scales the query by:
    SDPA with scale=0.3 over the keys and values transformers' HQQQuantizedLayer returns."""
    import torch.nn.functional as F
    from transformers.cache_utils import HQQQuantizedLayer

    from notallbits.kvcache.quantized import RowHQQLayer

    g = torch.Generator().manual_seed(16)
    k, v = (torch.randn(1, 2, 41, 64, generator=g) for _ in range(2))
    query = torch.randn(1, 4, 1, 64, generator=g)
    layer = RowHQQLayer(4, 64, 128, {})
    layer.update(k[:, :, :40], v[:, :, :40])
    layer.update(k[:, :, 40:], v[:, :, 40:])
    got = layer.attend(query, None, scaling=0.3)
    ref = HQQQuantizedLayer(nbits=4, q_group_size=64, residual_length=128)
    ref.update(k[:, :, :40], v[:, :, :40])
    keys, values = ref.update(k[:, :, 40:], v[:, :, 40:])
    want = F.scaled_dot_product_attention(query, keys.repeat_interleave(2, 1), values.repeat_interleave(2, 1),
                                          scale=0.3)
    torch.testing.assert_close(got, want.transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_hqq_layer_attends_with_an_additive_float_mask():
    """An additive float mask (what transformers builds for eager/SDPA attention: 0 where a key
    is seen, a large negative where not) is added to the scores: SDPA with that mask over the
    keys and values transformers' HQQQuantizedLayer returns."""
    import torch.nn.functional as F
    from transformers.cache_utils import HQQQuantizedLayer

    from notallbits.kvcache.quantized import RowHQQLayer

    g = torch.Generator().manual_seed(17)
    k, v = (torch.randn(1, 2, 41, 64, generator=g) for _ in range(2))
    query = torch.randn(1, 4, 1, 64, generator=g)
    mask = torch.zeros(1, 1, 1, 41)
    mask[..., :7] = torch.finfo(torch.float32).min  # the first 7 keys hidden
    mask[..., 20] = -2.5
    layer = RowHQQLayer(4, 64, 128, {})
    layer.update(k[:, :, :40], v[:, :, :40])
    layer.update(k[:, :, 40:], v[:, :, 40:])
    got = layer.attend(query, mask)
    ref = HQQQuantizedLayer(nbits=4, q_group_size=64, residual_length=128)
    ref.update(k[:, :, :40], v[:, :, :40])
    keys, values = ref.update(k[:, :, 40:], v[:, :, 40:])
    want = F.scaled_dot_product_attention(query, keys.repeat_interleave(2, 1), values.repeat_interleave(2, 1),
                                          attn_mask=mask)
    torch.testing.assert_close(got, want.transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_hqq_layer_quantizes_one_row_at_a_time_where_a_row_exceeds_the_limit(monkeypatch):
    """settings.HQQ_REQUANT_ELEMENTS below one row's values: the prefill's rows go through hqq's
    optimiser one at a time (one row at least per call, never two)."""
    import notallbits.kvcache.quantized as quantized

    calls = []
    real = quantized._hqq_codes

    def spy(x, *args, **kwargs):
        calls.append(x.shape[0])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(quantized, "_hqq_codes", spy)
    monkeypatch.setitem(quantized.HQQ_REQUANT_ELEMENTS, "cpu", 100)  # a row holds 2 x 40 x 64 values
    k, v = (torch.randn(3, 2, 40, 64, generator=torch.Generator().manual_seed(18)) for _ in range(2))
    quantized.RowHQQLayer(4, 64, 128, {}).update(k, v)
    assert calls == [1, 1, 1, 1, 1, 1]  # keys, then values, a row per call


@pytest.mark.parametrize("nbits", [2, 4, 8])
def test_hqq_layer_holds_as_many_bytes_as_hqqs_packed_codes_scales_and_zeros(nbits):
    """Where a row's group columns hold whole tokens (M a multiple of head_dim), the layer's
    quantized part holds, per row and for keys and values, exactly the bytes of what hqq's own
    Quantizer.quantize keeps of that row: its packed codes, scale and zero (float32)."""
    from hqq.core.quantize import Quantizer

    from notallbits.kvcache.quantized import RowHQQLayer

    g = torch.Generator().manual_seed(30 + nbits)
    k, v = (torch.randn(2, 2, 64, 64, generator=g) for _ in range(2))  # M = 2 x 64 x 64 / 64 = 128 columns
    layer = RowHQQLayer(nbits, 64, 128, {})
    layer.update(k, v)
    want = 0
    for x in (k, v):
        for r in range(2):
            q, meta = Quantizer.quantize(x[r : r + 1], nbits=nbits, group_size=64, axis=0, device="cpu",
                                         compute_dtype=torch.float32)
            want += q.nbytes + meta["scale"].nbytes + meta["zero"].nbytes
    assert layer.quantized_bytes() == want


def test_hqq_row_group_reads_consecutive_rows_as_a_view():
    """Rows of one length that lie side by side in the batch are read as a slice of it (no copy);
    others by index."""
    from notallbits.kvcache.quantized import RowGroup

    t = torch.arange(5.0)[:, None].repeat(1, 3)
    side_by_side = RowGroup([1, 2, 3], "cpu", 4, None, None).of(t)
    assert side_by_side.data_ptr() == t[1].data_ptr() and side_by_side[:, 0].tolist() == [1, 2, 3]
    apart = RowGroup([0, 2], "cpu", 4, None, None).of(t)
    assert apart[:, 0].tolist() == [0, 2]


def test_hqq_scales_of_a_run_of_tokens_are_hqqs_columns_and_a_slice_where_heads_share_them():
    """hqq (axis 0, groups of 64) gives element (h, t, d) of a [H, T, D] row the scale of column
    ((h·T + t)·D + d) mod M, M = H·T·D / 64. Qwen3's 8 KV heads x 128: every head's tokens use
    the same columns, so a run's scales are read as a slice of the column vector (no copy)."""
    from notallbits.kvcache.quantized import Quantized

    heads, tokens, dim = 8, 64, 128
    columns = heads * tokens * dim // 64
    scale = torch.arange(float(columns))[None]
    part = Quantized(torch.zeros(1, heads, tokens, dim // 2, dtype=torch.uint8), scale, scale, tokens, heads, dim, 64)
    t0, t1 = part.pieces(5)[1]
    got = part.windows(part.scale, 0, 1, t0, t1)
    h, t, d = torch.meshgrid(torch.arange(heads), torch.arange(t0, t1), torch.arange(dim), indexing="ij")
    assert torch.equal(got.expand(1, heads, t1 - t0, dim)[0], ((h * tokens + t) * dim + d) % columns * 1.0)
    assert got.data_ptr() == part.scale[0, (t0 * dim) % columns].data_ptr()


def test_hqq_optimiser_works_in_one_buffer_of_errors_and_cache_sized_windows():
    """Bytes allocated and alive at once while hqq's optimiser quantizes 2 rows of 8 KV heads x
    512 tokens x 128 (1M float32 values, 4 MiB): a row's error buffer (2 MiB) and compact copy of
    its moving columns (at most half the row once gathered, 1 MiB, with its scales, zeros and
    column indices), the codes (1 MiB), scales and zeros and six windows of 2^16 values (1.5 MiB)
    — hqq's own loop holds ~6 float32 copies of the values (24 MiB) at its peak."""
    from notallbits.bench.kv_methods import peak_extra_bytes
    from notallbits.kvcache.quantized import _hqq_codes

    x = torch.randn(2, 8, 512, 128, generator=torch.Generator().manual_seed(7))
    _, peak = peak_extra_bytes(_hqq_codes, x, 4, 64)
    assert peak < 1.75 * x.nbytes, (peak, x.nbytes)


def test_hqq_requantizes_a_few_rows_at_a_time(deep_model, monkeypatch):
    """The rows of a layer's keys or values go through hqq's optimiser in calls of at most
    settings.HQQ_REQUANT_ELEMENTS values (one row at least), at the prefill and at every
    requantization, so that work is the batch's, not each row's."""
    import notallbits.kvcache.quantized as quantized

    calls = []
    real = quantized._hqq_codes

    def spy(x, *args, **kwargs):
        calls.append(x.shape)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(quantized, "_hqq_codes", spy)
    monkeypatch.setitem(quantized.HQQ_REQUANT_ELEMENTS, "cpu", 3 * 2 * 40 * 32)  # 3 rows of 40 tokens
    ids = torch.randint(5, 400, (8, 48), generator=torch.Generator().manual_seed(6))
    cache = make_cache({"method": "hqq", "nbits": 4, "residual_length": 4}, deep_model)
    step(deep_model, cache, ids[:, :36], 0)  # prefill: 36 tokens x 8 rows -> calls of 3, 3, 2 rows
    prefill = list(calls)
    assert prefill == [(3, 2, 36, 32), (3, 2, 36, 32), (2, 2, 36, 32)] * 2 * 8  # K and V of 8 layers
    for t in range(36, 40):  # the residual window fills and is requantized: 40 tokens
        step(deep_model, cache, ids[:, t : t + 1], t)
    assert calls[len(prefill):] == [(3, 2, 40, 32), (3, 2, 40, 32), (2, 2, 40, 32)] * 2 * 8


def test_hqq_decode_holds_no_dequantized_layer(deep_model):
    """Bytes allocated and alive at once during HQQ decode steps (none requantizing) beyond the
    cache, plus the scratch the layers keep: a chunk of dequantized keys or values, the scores and
    the step's activations, far below
    one layer's keys and values in full precision (what attending over a dequantized copy holds)."""
    from notallbits.bench.kv_methods import peak_extra_bytes

    long_ids = torch.randint(5, 400, (4, 1100), generator=torch.Generator().manual_seed(5))
    s = {"method": "hqq", "nbits": 4, "residual_length": 128}
    cache = make_cache(s, deep_model)
    step(deep_model, cache, long_ids[:, :1024], 0)
    for t in range(1024, 1026):  # the residual window's slots are allocated
        step(deep_model, cache, long_ids[:, t : t + 1], t)

    def decode_steps():
        for t in range(1026, 1034):
            step(deep_model, cache, long_ids[:, t : t + 1], t)

    _, peak = peak_extra_bytes(decode_steps)
    scratch = sum(t.nbytes for t in cache.layers[0].scratch.values())  # kept between steps, shared by the layers
    layer = 2 * 4 * 2 * 1034 * 32 * 4  # K + V of one layer: rows x KV heads x tokens x head_dim x fp32
    assert peak + scratch < 0.5 * layer, (peak, scratch, layer)


def test_hqq_bench_times_ours_against_hqq_and_checks_every_row(capsys):
    """`python -m notallbits.bench.kv_methods --hqq` times kvcache.quantized._hqq_codes against hqq's
    own Quantizer.quantize on each row alone, says whether every row's codes, scales and zeros are
    hqq's, and with --old times another file's _hqq_codes too."""
    from notallbits.bench import kv_methods
    from notallbits.kvcache import quantized

    kv_methods.main(["--hqq", "--tokens", "40", "--batch", "2", "--nbits", "4", "--old", quantized.__file__])
    out = capsys.readouterr().out.splitlines()
    assert "2 rows x 8 KV heads x 40 tokens x 128" in out[0] and "old seconds" in out[0]
    rows = [line.split("|") for line in out[1:]]
    assert [r[0].split() for r in rows] == [["keys", "4-bit"], ["values", "4-bit"]]
    assert all(r[3].strip() == "yes" and len(r) == 5 for r in rows), out


def test_step_bench_times_by_cpu_time_on_one_cpu_thread_only(capsys):
    """`bench.kv step --clock cpu` needs --device cpu --threads 1 (a process's CPU time adds up its
    threads and misses a GPU's work); the timing clock reaches the child that times the steps."""
    from notallbits.bench import kv

    for argv in (["step", "--clock", "cpu"], ["step", "--clock", "cpu", "--threads", "2", "--device", "cpu"],
                 ["step", "--clock", "cpu", "--threads", "1"]):
        with pytest.raises(SystemExit):
            kv.main(argv, run=False)
        assert "--clock cpu needs --device cpu --threads 1" in capsys.readouterr().err
    a = kv.main(["step", "--clock", "cpu", "--threads", "1", "--device", "cpu"], run=False)
    assert kv.step_args(a)[-4:] == ["--clock", "cpu", "--threads", "1"]
    assert kv.main(["_step", "hqq", *kv.step_args(a)], run=False).clock == "cpu"
