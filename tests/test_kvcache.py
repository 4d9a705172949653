"""KV compression during decoding, against independent computations on the tiny model."""

import copy

import pytest
import torch
import torch.nn.functional as F

from notallbits import UserError
from notallbits.kvcache import held_bytes, make_cache, normalize
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


def decode(model, settings, ids, prefill=8):
    cache = make_cache(settings, model)
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
    full, _, _ = decode(model, {"method": "full"}, ids[:, :80])
    got, _, _ = decode(model, settings, ids[:, :80])
    torch.testing.assert_close(got, full, rtol=0, atol=0)


def brute_force_rkv(queries, keys, s):
    """R-KV selection written straight from the definition, one head at a time, in loops."""
    b, hq, w, d = queries.shape
    hkv, n = keys.shape[1], keys.shape[2]
    group = hq // hkv
    out = torch.empty(b, hkv, s["budget"], dtype=torch.long)
    for bi in range(b):
        for h in range(hkv):
            k = keys[bi, h].double()
            att = [0.0] * n
            for g in range(group):
                for qi in range(w):
                    q = queries[bi, h * group + g, qi].double()
                    p = torch.softmax(torch.stack([q @ k[j] / d**0.5 for j in range(n)]), 0)
                    for j in range(n):
                        att[j] += float(p[j]) / (group * w)
            r = s["kernel"] // 2
            pooled = [max(att[max(0, j - r): j + r + 1]) for j in range(n)]
            imp = [x / max(pooled) for x in pooled]
            cos = [[float(F.cosine_similarity(k[i], k[j], dim=0)) if i != j else 0.0 for j in range(n)] for i in range(n)]
            red = []
            for i in range(n):
                dup = any(cos[i][j] > s["sim_threshold"] for j in range(i + 1, n))
                red.append(1.0 if dup else sum(cos[i]) / (n - 1))
            score = [s["lam"] * imp[i] - (1 - s["lam"]) * red[i] for i in range(n)]
            older = sorted(range(n - s["window"]), key=lambda i: -score[i])[: s["budget"] - s["window"]]
            out[bi, h] = torch.tensor(sorted(older + list(range(n - s["window"], n))))
    return out


def test_rkv_selection_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    queries = torch.randn(2, 4, 8, 16, generator=g)
    keys = torch.randn(2, 2, 40, 16, generator=g)
    keys[0, 0, 10] = keys[0, 0, 30] * 1.01  # a near-duplicate of a later token: redundant
    s = normalize({"method": "rkv", "budget": 20, "sim_threshold": 0.9})
    got = rkv_select(queries, keys, s)
    assert torch.equal(got, brute_force_rkv(queries, keys, s))
    # the earlier of two near-duplicates takes the full redundancy penalty, the later one not
    scores = rkv_scores(queries, keys, s)[0, 0]
    assert scores[10] <= s["lam"] - (1 - s["lam"]) < scores[30]
    assert 10 not in got[0, 0].tolist()


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
    for settings in ({"method": "rkv", "budget": 16, "buffer": 4}, {"method": "hqq", "nbits": 4},
                     {"method": "streamingllm", "budget": 16}):
        _, cache, _ = decode(model, settings, ids[:, :60])
        fork = copy.deepcopy(cache)
        a = step(model, fork, ids[:, 60:70], 60)  # advance the fork by 10 tokens
        assert cache.get_seq_length() == 60
        b = step(model, copy.deepcopy(cache), ids[:, 60:70], 60)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


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
