"""The KV cache's parts one at a time, on small tensors: slots counted by hand, grouped attention
against transformers' eager attention (repeat_kv), bytes counted by hand."""

import pytest
import torch

from notallbits.kvcache.slots import GROW_TOKENS, SlotLayer


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def kv(tokens, seed, b=2, h=3, d=4, dv=5, dtype=torch.float32):
    """Keys [b, h, tokens, d] and values [b, h, tokens, dv] (a value width other than the keys')."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, tokens, d, generator=g).to(dtype), torch.randn(b, h, tokens, dv, generator=g).to(dtype)


# --------------------------------------------------------------------------- slots
def test_slots_hold_what_was_written_in_slots_counted_by_hand():
    """reserve(10) before the first write of 4 tokens: 14 slots; 10 more fit without moving the
    buffer; one more grows it to 15 + GROW_TOKENS (256) slots; keys/values read back as the
    concatenation of everything written."""
    assert GROW_TOKENS == 256
    layer = SlotLayer()
    assert layer.capacity == 0 and layer.keys is None and layer.values is None and layer.get_seq_length() == 0
    layer.reserve(10)
    k1, v1 = kv(4, 1, dtype=torch.float64)
    keys, values = layer.update(k1, v1)
    assert layer.dtype == torch.float64 and layer.device == k1.device and layer.is_initialized
    assert layer.capacity == 14 and layer.width == 4 and layer.get_seq_length() == 4
    assert torch.equal(keys, k1) and torch.equal(values, v1)
    assert layer.values.shape == (2, 3, 4, 5) and layer.slot_bytes() == 2 * 3 * 14 * (4 + 5) * 8
    start = layer._kbuf.data_ptr()
    k2, v2 = kv(10, 2, dtype=torch.float64)
    layer.update(k2, v2)
    assert layer.capacity == 14 and layer._kbuf.data_ptr() == start  # written in place
    k3, v3 = kv(1, 3, dtype=torch.float64)
    keys, values = layer.update(k3, v3)
    assert layer.capacity == 15 + 256 and layer.width == 15
    assert torch.equal(keys, torch.cat([k1, k2, k3], 2)) and torch.equal(values, torch.cat([v1, v2, v3], 2))
    layer.reserve(300)  # 15 used + 300 ahead
    assert layer.capacity == 315 and torch.equal(layer.keys, torch.cat([k1, k2, k3], 2))
    assert torch.equal(layer.values, torch.cat([v1, v2, v3], 2))
    moved = layer._kbuf.data_ptr()
    layer.reserve(5)  # already room: nothing moves
    assert layer.capacity == 315 and layer._kbuf.data_ptr() == moved
    layer.reserve(300)  # exactly the room there is: no new buffer either
    assert layer.capacity == 315 and layer._kbuf.data_ptr() == moved


def test_slots_without_reservation_fit_the_first_write_exactly():
    layer = SlotLayer()
    layer.reserve(3)
    layer.reserve(2)  # the larger reservation holds
    layer.update(*kv(6, 4))
    assert layer.capacity == 9
    bare = SlotLayer()
    bare.update(*kv(6, 4))
    assert bare.capacity == 6


def test_slot_keys_setter_counts_a_4d_tensor_only():
    """transformers' layers set keys to an empty 1-D tensor when they reset: no slots used."""
    layer = SlotLayer()
    k, v = kv(7, 5)
    layer.keys, layer.values = k, v
    assert layer.width == 7 and layer.capacity == 7 and torch.equal(layer.keys, k)
    layer.keys = torch.tensor([])
    assert layer.width == 0 and layer.capacity == 0
    layer.keys = None
    assert layer.width == 0 and layer.keys is None


def test_store_compacts_in_place_but_a_fork_takes_new_buffers():
    """store() replaces the used slots: in the layer's own buffers (same storage), while a fork
    gets buffers of its own and leaves its parent's slots as they were."""
    parent = SlotLayer()
    parent.reserve(8)
    k, v = kv(6, 6)
    parent.update(k, v)
    twin = parent.fork()
    assert twin.forked and not parent.forked and twin._kbuf.data_ptr() == parent._kbuf.data_ptr()
    kn, vn = kv(2, 7)
    twin.update(kn, vn)  # written after the parent's 6 slots, into the shared buffer
    assert parent.width == 6 and torch.equal(parent.keys, k) and torch.equal(parent.values, v)
    assert torch.equal(twin.keys, torch.cat([k, kn], 2)) and twin._kbuf.data_ptr() == parent._kbuf.data_ptr()
    kept_k, kept_v = twin.keys[:, :, [0, 7]].clone(), twin.values[:, :, [0, 7]].clone()
    twin.store(kept_k, kept_v)
    assert not twin.forked and twin.width == 2 and twin._kbuf.data_ptr() != parent._kbuf.data_ptr()
    assert torch.equal(twin.keys, kept_k) and torch.equal(twin.values, kept_v)
    assert torch.equal(parent.keys, k) and torch.equal(parent.values, v)
    own = parent._kbuf.data_ptr()
    parent.store(parent.keys[:, :, [1, 2, 5]].clone(), parent.values[:, :, [1, 2, 5]].clone())
    assert parent.width == 3 and parent._kbuf.data_ptr() == own and parent.capacity == 14
    assert torch.equal(parent.keys, k[:, :, [1, 2, 5]]) and torch.equal(parent.values, v[:, :, [1, 2, 5]])


def test_a_fork_that_outgrows_the_buffer_leaves_the_parent_its_own():
    parent = SlotLayer()
    k, v = kv(4, 8)
    parent.update(k, v)
    twin = parent.fork()
    kn, vn = kv(3, 9)
    twin.update(kn, vn)  # no room reserved: the fork grows into new buffers
    assert twin.capacity == 4 + 3 + 256 and parent.capacity == 4
    assert torch.equal(twin.keys, torch.cat([k, kn], 2)) and torch.equal(twin.values, torch.cat([v, vn], 2))
    assert torch.equal(parent.keys, k) and torch.equal(parent.values, v)


# --------------------------------------------------------------------------- package functions
def test_reserve_and_fork_through_the_package():
    """kvcache.reserve sizes every layer; kvcache.fork reserves the fork's tokens in the parent's
    slots and returns layers that share them; layers without slots are copied."""
    from transformers.cache_utils import Cache, DynamicLayer

    from notallbits.kvcache import fork, normalize, padding, reserve, set_padding
    from notallbits.kvcache.eviction import EvictingCache, StreamingLLMLayer

    cache = Cache(layers=[SlotLayer(), SlotLayer()])
    reserve(cache, 5)
    for layer in cache.layers:
        layer.update(*kv(3, 10))
    assert [layer.capacity for layer in cache.layers] == [8, 8]
    twin = fork(cache, 20)
    assert [layer.capacity for layer in cache.layers] == [23, 23]  # 3 used + the fork's 20
    assert all(t.forked and t._kbuf.data_ptr() == p._kbuf.data_ptr() for t, p in zip(twin.layers, cache.layers))
    assert twin is not cache and twin.layers is not cache.layers
    assert padding(cache, "none") == "none"
    set_padding(cache, torch.tensor([1, 0]))  # a full cache never moves tokens: nothing to tell
    assert padding(cache, "none") == "none"
    evicting = EvictingCache(StreamingLLMLayer, normalize({"method": "streamingllm", "budget": 16}), 2)
    set_padding(evicting, torch.tensor([0, 3]))
    assert [layer.pad.tolist() for layer in evicting.layers] == [[0, 3], [0, 3]]
    assert padding(evicting, None).tolist() == [0, 3]
    plain = Cache(layers=[DynamicLayer()])
    other = fork(plain)
    assert other.layers[0] is not plain.layers[0] and type(other.layers[0]) is DynamicLayer
    # reserve without a fork's tokens keeps no fork room; with them, every evicting layer does
    reserve(evicting, 10)
    assert [layer.fork_room for layer in evicting.layers] == [0, 0]
    reserve(evicting, 10, fork_tokens=4)
    assert [layer.fork_room for layer in evicting.layers] == [4, 4]
    # a one-layer cache reads its padding from that layer
    single = EvictingCache(StreamingLLMLayer, normalize({"method": "streamingllm", "budget": 16}), 1)
    set_padding(single, torch.tensor([2, 0]))
    assert padding(single, None).tolist() == [2, 0]
    # a fork of no tokens reserves nothing: a full buffer stays as it is
    full = Cache(layers=[SlotLayer()])
    full.layers[0].update(*kv(6, 11))
    fork(full)
    assert full.layers[0].capacity == 6


def test_held_bytes_count_slots_used_and_transformers_quantized_layers_by_hand():
    """A full cache: the used slots only (not the reserved ones). transformers' HQQQuantizedLayer
    (100 tokens quantized at 4 bits in groups of 64, bf16 scale and zero per group, 3 bf16
    tokens in the residual): 12,800 values x 0.5 B + 200 groups x 4 B = 7,200 B per K or V,
    + 2 x 3 x 2 x 64 x 2 B of residual = 15,936 B."""
    from transformers.cache_utils import Cache, HQQQuantizedLayer

    from notallbits.kvcache import held_bytes

    cache = Cache(layers=[SlotLayer(), SlotLayer()])
    for layer in cache.layers:
        layer.reserve(50)
        layer.update(*kv(6, 11))
    assert held_bytes(cache) == 2 * 2 * 3 * 6 * (4 + 5) * 4
    q = HQQQuantizedLayer(nbits=4, q_group_size=64, residual_length=128)
    g = torch.Generator().manual_seed(12)
    k, v = (torch.randn(1, 2, 103, 64, generator=g).to(torch.bfloat16) for _ in range(2))
    q.update(k[:, :, :100], v[:, :, :100])
    q.update(k[:, :, 100:], v[:, :, 100:])
    assert held_bytes(Cache(layers=[q])) == 2 * (12800 // 2 + 200 * 4) + 2 * 3 * 2 * 64 * 2


# --------------------------------------------------------------------------- grouped attention
def eager(query, key, value, mask, scaling, groups):
    """transformers' eager attention (modeling_qwen3.eager_attention_forward): K/V repeated per
    query head (repeat_kv), additive mask, softmax in float32 -> [B, q, Hq, D]."""
    from transformers.models.qwen3.modeling_qwen3 import repeat_kv

    k, v = repeat_kv(key, groups), repeat_kv(value, groups)
    w = query @ k.transpose(2, 3) * scaling
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=query.dtype).masked_fill(~mask, float("-inf"))
        w = w + mask.to(query.dtype)
    w = torch.softmax(w, dim=-1, dtype=torch.float32).to(query.dtype)
    return (w @ v).transpose(1, 2)


def attention_case(q, length=9, b=2, hkv=2, groups=3, d=8, seed=13):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, hkv * groups, q, d, generator=g), torch.randn(b, hkv, length, d, generator=g),
            torch.randn(b, hkv, length, d, generator=g))


class Module:
    """An attention module as the pre-hook leaves it: its cache layer in ``_nab_layer``."""

    def __init__(self, layer=None):
        self._nab_layer = layer


@pytest.mark.parametrize("q", [1, 2, 4])
def test_grouped_attention_equals_eager_attention_with_repeated_kv(q):
    """Head h of the query reads KV head h // groups, as repeat_kv orders them; an additive
    float64 mask (taken to the query's dtype), a bool mask per KV head, no mask (causal for
    several new tokens, the last ones of the keys) and a scale other than 1/sqrt(D)."""
    from notallbits.kvcache.attention import grouped_attention

    query, key, value = attention_case(q)
    length = key.shape[2]
    pad = torch.tensor([0, 3])
    visible = torch.arange(length)[None] >= pad[:, None]  # [B, L]
    causal = torch.arange(length)[None] <= (length - q + torch.arange(q))[:, None]  # [q, L]
    allowed = visible[:, None, None] & causal  # [B, 1, q, L]
    additive = torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, torch.finfo(torch.float64).min)
    out, weights = grouped_attention(Module(), query, key, value, additive, scaling=0.3)
    assert weights is None and out.shape == (2, q, 6, 8) and out.is_contiguous()
    torch.testing.assert_close(out, eager(query, key, value, allowed, 0.3, 3), rtol=1e-5, atol=1e-6)
    per_head = allowed.expand(-1, 2, -1, -1).clone()
    per_head[:, 1, :, -2] = False  # KV head 1 no longer sees its second-to-last slot
    got, _ = grouped_attention(Module(), query, key, value, per_head, scaling=0.3)
    want = eager(query, key, value, per_head.repeat_interleave(3, 1), 0.3, 3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # no mask: transformers gives none only where causal is exact (no past, no padding: q == L)
    query, key, value = attention_case(q, length=q)
    causal = torch.ones(q, q, dtype=torch.bool).tril()
    got, _ = grouped_attention(Module(), query, key, value, None, scaling=0.3)
    torch.testing.assert_close(got, eager(query, key, value, causal[None, None], 0.3, 3), rtol=1e-5, atol=1e-6)
    # a module the pre-hook never saw (a model loaded with this attention by name): no cache layer
    got, _ = grouped_attention(torch.nn.Module(), query, key, value, None, scaling=0.3)
    torch.testing.assert_close(got, eager(query, key, value, causal[None, None], 0.3, 3), rtol=1e-5, atol=1e-6)
    got, _ = grouped_attention(Module(), query, key, value, None)  # default scale, no dropout
    torch.testing.assert_close(got, eager(query, key, value, causal[None, None], 8 ** -0.5, 3), rtol=1e-5, atol=1e-6)
    # dropout reaches SDPA (a model in training mode passes its attention_dropout): p = 1 drops every weight
    got, _ = grouped_attention(Module(), query, key, value, None, dropout=1.0)
    assert torch.equal(got, torch.zeros_like(got))


def test_grouped_attention_takes_the_cache_layers_own_mask():
    """A cache layer with ``key_mask`` (eviction keeps evicted slots until it compacts) masks
    instead of the caller's mask; a quantized layer that is ``due`` attends by itself."""
    from notallbits.kvcache.attention import grouped_attention

    query, key, value = attention_case(1)
    own = torch.ones(2, 2, 1, 9, dtype=torch.bool)
    own[0, 0, 0, :4] = False

    class Evicting:
        def key_mask(self):
            return own

    caller = torch.zeros(2, 1, 1, 9)
    got, _ = grouped_attention(Module(Evicting()), query, key, value, caller, scaling=0.5)
    want = eager(query, key, value, own.repeat_interleave(3, 1), 0.5, 3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    class Quantized:
        due = True

        def attend(self, query, mask, scaling):
            return ("attended", query, mask, scaling)

    got, weights = grouped_attention(Module(Quantized()), query, key, value, caller, scaling=0.5)
    assert got[0] == "attended" and got[1] is query and got[2] is caller and got[3] == 0.5 and weights is None
    Quantized.due = False  # nothing quantized yet: the slots are attended as they are
    got, _ = grouped_attention(Module(Quantized()), query, key, value, None, scaling=0.5)
    torch.testing.assert_close(got, eager(query, key, value, None, 0.5, 3), rtol=1e-5, atol=1e-6)


def test_use_grouped_attention_hooks_each_layer_once_and_registers_the_mask():
    """The model attends through ``notallbits_grouped`` with transformers' SDPA masks; every
    attention module learns its cache layer (and none without a cache); a second call adds no hooks."""
    from transformers import AutoModelForCausalLM, DynamicCache, Qwen3Config
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    from notallbits.kvcache.attention import NAME, use_grouped_attention

    config = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    attn = [m for m in model.modules() if hasattr(m, "q_proj")]
    use_grouped_attention(model)
    use_grouped_attention(model)
    assert NAME == "notallbits_grouped" and model.config._attn_implementation == NAME
    assert AttentionMaskInterface._global_mapping[NAME] is sdpa_mask
    assert all(len(m._forward_pre_hooks) == 1 for m in attn)
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([[5, 6, 7]]), past_key_values=cache)
    assert [m._nab_layer for m in attn] == cache.layers
    model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=False)
    assert all(m._nab_layer is None for m in attn)


# --------------------------------------------------------------------------- R-KV layer
def test_rkv_layer_keeps_the_authors_tokens_per_row_and_compacts_them_right_aligned():
    """An R-KV layer given a 72-token prefill (position 0: a compression step, 72 > budget 40)
    keeps per row and KV head exactly the tokens the authors' rule keeps (tests/test_kvcache's
    RKV_EVICTED, from R1KV.update_kv), in order. The batch is left-padded unevenly: row 0 by 2
    slots, row 1 by 7 (its first 5 real-looking slots are padding and must take no part); the
    step attends to every slot, then the layer compacts to 40 slots, no padding left."""
    from notallbits.kvcache import normalize
    from notallbits.kvcache.eviction import RKVLayer
    from tests.test_kvcache import RKV_EVICTED, rkv_case

    queries, keys = rkv_case("structured", 1)
    values = keys.flip(-1) * 2  # values follow their keys: the kept values show which tokens stayed
    junk = torch.randn(2, 2, 7, 32, generator=torch.Generator().manual_seed(4)) * 3
    padded_k, padded_v = torch.cat([junk, keys], 2), torch.cat([junk, values], 2)
    layer = RKVLayer(normalize({"method": "rkv", "budget": 40}))
    layer.set_padding(torch.tensor([7, 7]))
    layer.remember_queries(queries[:, :, :3])
    layer.remember_queries(queries[:, :, 3:])  # the window's queries arrive over two steps
    k_seen, v_seen = layer.update(padded_k, padded_v)
    assert torch.equal(k_seen, padded_k) and torch.equal(v_seen, padded_v)  # this step reads all 79 slots
    assert layer.get_seq_length() == 79 and layer.pending
    layer.settle()
    assert not layer.pending and layer.width == 40 and layer.pad.tolist() == [0, 0]
    for b in range(2):
        for h in range(2):
            kept = sorted(set(range(72)) - set(RKV_EVICTED["structured-1-40"][b][h]))
            assert torch.equal(layer.keys[b, h], keys[b, h, kept]), (b, h)
            assert torch.equal(layer.values[b, h], values[b, h, kept]), (b, h)
    assert layer.get_seq_length() == 79  # positions stay true positions
    assert layer.get_mask_sizes(1) == (41, 39)  # 40 kept + the new token; key indices shifted by 39


def rkv_by_row(keys, queries, s, pad, steps):
    """Per row alone, the tokens R-KV holds after each step (one token a step; slot t holds row
    b's position t - pad[b]): compress at positions that are multiples of ``buffer`` when more
    than ``budget`` are held, keeping what rkv_select (checked against the authors' code) keeps."""
    from notallbits.kvcache.eviction import rkv_select

    out = []
    for b in range(keys.shape[0]):
        held = [[] for _ in range(keys.shape[1])]  # token slots held per KV head
        per_step = []
        for t in range(steps):
            if t >= pad[b]:
                for h in held:
                    h.append(t)
                pos = t - pad[b]
                if pos % s["buffer"] == 0 and len(held[0]) > s["budget"]:
                    k = torch.stack([keys[b, h, idx] for h, idx in enumerate(held)])[None]
                    w = s["window"]
                    q = queries[b : b + 1, :, t - w + 1 : t + 1]
                    index = rkv_select(q, k, s)[0]
                    held = [[idx[i] for i in index[h].tolist()] for h, idx in enumerate(held)]
            per_step.append([list(h) for h in held])
        out.append(per_step)
    return out


@pytest.mark.parametrize("forked, hkv", [(False, 2), (True, 2), (True, 1)],
                         ids=["own-slots", "fork-masks", "fork-masks-one-kv-head"])
def test_rkv_layer_compresses_rows_at_their_own_positions(forked, hkv):
    """Rows padded by 0 and 5 slots, budget 12, buffer 16: each row compresses at the step
    holding its own position 16 and 32 (row 0 twice while row 1 holds as many tokens as row 0
    but is not due), on its own kept tokens, as R-KV on that row alone does. A fork (sharing
    its parent's slots) masks instead of compacting: its visible slots hold the same tokens, also
    with one KV head (multi-query attention), whose mask has one head too."""
    from notallbits.kvcache import fork, normalize
    from notallbits.kvcache.eviction import EvictingCache, RKVLayer

    s = normalize({"method": "rkv", "budget": 12, "buffer": 16, "window": 4, "kernel": 3})
    g = torch.Generator().manual_seed(5)
    steps, pad = 40, [0, 5]
    keys, values = torch.randn(2, hkv, steps, 8, generator=g), torch.randn(2, hkv, steps, 8, generator=g)
    queries = torch.randn(2, 4, steps, 8, generator=g)
    cache = EvictingCache(RKVLayer, s, 1)
    cache.set_padding(torch.tensor(pad))
    start = 4
    cache.layers[0].remember_queries(queries[:, :, :start])
    cache.layers[0].update(keys[:, :, :start], values[:, :, :start])
    if forked:
        cache = fork(cache, steps - start)
    layer = cache.layers[0]
    want = rkv_by_row(keys, queries, s, pad, steps)
    for t in range(start, steps):
        layer.remember_queries(queries[:, :, t : t + 1])
        layer.update(keys[:, :, t : t + 1], values[:, :, t : t + 1])
        layer.settle()
        ok = layer.visible().expand(-1, hkv, -1)
        for b in range(2):
            for h in range(hkv):
                got = layer.keys[b, h][ok[b, h]]
                assert torch.equal(got, keys[b, h, want[b][t][h]]), (t, b, h)
                assert torch.equal(layer.values[b, h][ok[b, h]], values[b, h, want[b][t][h]]), (t, b, h)
        if not forked:
            assert layer.width == max(len(want[b][t][0]) for b in range(2))
    # row 0 compressed at slots 16 and 32, row 1 at slot 21 (its position 16), when both held 17
    assert [len(want[0][t][0]) for t in (15, 16, 21, 32)] == [16, 12, 17, 12]
    assert [len(want[1][t][0]) for t in (20, 21)] == [16, 12]


def test_eviction_layer_slots_never_exceed_what_the_method_holds():
    """R-KV at budget 12, buffer 16 holds at most 12 + 16 = 28 tokens: a reservation of 100
    tokens allocates 28 slots (plus the 4 a fork will add), a 40-token prompt gets its 40 slots
    for the prefill and gives them back on compacting (28 + 4 again), and a fork reserved on a
    layer whose compaction is still due sees the compacted slots."""
    from notallbits.kvcache import fork, normalize, reserve
    from notallbits.kvcache.eviction import EvictingCache, RKVLayer

    s = normalize({"method": "rkv", "budget": 12, "buffer": 16, "window": 4, "kernel": 3})
    g = torch.Generator().manual_seed(6)
    cache = EvictingCache(RKVLayer, s, 1)
    layer = cache.layers[0]
    reserve(cache, 100, fork_tokens=4)
    layer.remember_queries(torch.randn(1, 4, 5, 8, generator=g))
    layer.update(*kv(5, 7, b=1, h=2, d=8, dv=8))
    assert layer.capacity == 28 + 4 and layer.width == 5
    long = EvictingCache(RKVLayer, s, 1)
    reserve(long, 100, fork_tokens=4)
    big = long.layers[0]
    assert big.headroom == 100 and big.fork_room == 4
    big.remember_queries(torch.randn(1, 4, 40, 8, generator=g))
    big.update(*kv(40, 8, b=1, h=2, d=8, dv=8))  # position 0: compresses 40 -> 12 after this step
    assert big.capacity == 40 and big.pending
    twin = fork(long, 3)  # settles the parent first: the fork sees its 12 kept tokens
    assert not big.pending and big.width == 12 and big.capacity == 32 and twin.layers[0].width == 12
    assert twin.get_seq_length() == 40
    bare = RKVLayer(s)
    bare.update(*kv(3, 9, b=1, h=2, d=8, dv=8))  # no reservation: the first write's slots only
    assert bare.capacity == 3


def test_rkv_scores_at_given_rows_and_slots_equal_scores_of_those_keys():
    """rkv_scores reads the keys of chosen batch rows (``rows``) at chosen slots (``slots``)
    without copying the layer: the scores equal those of the keys picked out by hand."""
    from notallbits.kvcache import normalize
    from notallbits.kvcache.eviction import rkv_scores

    s = normalize({"method": "rkv", "budget": 8, "window": 4, "kernel": 3})
    g = torch.Generator().manual_seed(14)
    keys, queries = torch.randn(3, 2, 20, 8, generator=g), torch.randn(2, 4, 4, 8, generator=g)
    slots = torch.stack([torch.randperm(20, generator=g)[:12].sort().values for _ in range(4)]).view(2, 2, 12)
    rows = torch.tensor([2, 0])
    by_hand = torch.stack([torch.stack([keys[r, h, slots[i, h]] for h in range(2)]) for i, r in enumerate(rows.tolist())])
    torch.testing.assert_close(rkv_scores(queries, keys, s, rows=rows, slots=slots), rkv_scores(queries, by_hand, s))
    torch.testing.assert_close(rkv_scores(queries, keys[:2], s, slots=slots),
                               rkv_scores(queries, torch.stack([torch.stack([keys[b, h, slots[b, h]] for h in range(2)])
                                                                for b in range(2)]), s))
    torch.testing.assert_close(rkv_scores(queries, keys, s, rows=rows), rkv_scores(queries, keys[rows], s))


def test_evicting_layer_mask_by_hand():
    """The mask an evicting layer builds for its own slots: row 1 left-padded by 2 slots. At the
    5-token prefill each query sees the real slots up to itself (a padding query sees only
    itself); at the next step the new token sees every real slot."""
    from notallbits.kvcache import normalize
    from notallbits.kvcache.eviction import RKVLayer

    layer = RKVLayer(normalize({"method": "rkv", "budget": 12, "window": 4, "kernel": 3}))
    layer.set_padding(torch.tensor([0, 2]))
    layer.remember_queries(torch.zeros(2, 2, 5, 4))
    layer.update(*kv(5, 15, b=2, h=1, d=4, dv=4))
    lower = [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    padded = [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]
    assert layer.key_mask().shape == (2, 1, 5, 5)
    assert layer.key_mask()[:, 0].int().tolist() == [lower, padded]
    layer.remember_queries(torch.zeros(2, 2, 1, 4))
    layer.update(*kv(1, 16, b=2, h=1, d=4, dv=4))
    assert layer.key_mask()[:, 0].int().tolist() == [[[1, 1, 1, 1, 1, 1]], [[0, 0, 1, 1, 1, 1]]]


def test_rkv_layer_with_one_kv_head_compacts():
    """Multi-query attention (one KV head): a compression keeps what R-KV on that head keeps."""
    from notallbits.kvcache import normalize
    from notallbits.kvcache.eviction import RKVLayer, rkv_select

    s = normalize({"method": "rkv", "budget": 12, "window": 4, "kernel": 3})
    g = torch.Generator().manual_seed(17)
    keys, values, queries = torch.randn(1, 1, 20, 8, generator=g), torch.randn(1, 1, 20, 8, generator=g), \
        torch.randn(1, 4, 4, 8, generator=g)
    layer = RKVLayer(s)
    layer.remember_queries(queries)
    layer.update(keys, values)
    layer.settle()
    index = rkv_select(queries, keys, s)[0, 0]
    assert layer.width == 12 and torch.equal(layer.keys[0, 0], keys[0, 0, index])
    assert torch.equal(layer.values[0, 0], values[0, 0, index])


def test_query_capture_leaves_other_forwards_alone():
    """Once a model has R-KV's query capture, a forward without a cache or with a plain one
    runs as before (nothing captured), and the hooks are installed once."""
    from transformers import AutoModelForCausalLM, DynamicCache, Qwen3Config

    from notallbits.kvcache import make_cache
    from notallbits.kvcache.eviction import install_query_capture

    config = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    want = model(input_ids=ids, use_cache=False).logits
    cache = make_cache({"method": "rkv", "budget": 16, "buffer": 8, "window": 8}, model)
    install_query_capture(model)  # a second time: no second set of hooks
    attn = [m for m in model.modules() if hasattr(m, "q_proj")]
    assert all(len(m.q_proj._forward_hooks) == 1 for m in attn)
    torch.testing.assert_close(model(input_ids=ids, use_cache=False).logits, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(input_ids=ids, past_key_values=DynamicCache(config=config)).logits, want,
                               rtol=1e-5, atol=1e-6)
    model(input_ids=ids, past_key_values=cache)
    assert [layer.recent_queries.shape for layer in cache.layers] == [(1, 4, 4, 8)] * 2


def test_streamingllm_layer_attends_over_at_most_its_peak_slots():
    """StreamingLLM masks evicted tokens and compacts them before the step after the one that
    holds streaming_slack of them: a step's attention reads budget + slack slots at most, and
    reaches it; a reservation allocates the layer's peak_slots (one more, what
    memory.kv_row_bytes counts), so no step reallocates."""
    from notallbits.kvcache import normalize
    from notallbits.kvcache.eviction import StreamingLLMLayer
    from notallbits.kvcache.settings import streaming_slack

    s = normalize({"method": "streamingllm", "budget": 24, "sink": 4})
    layer = StreamingLLMLayer(s)
    layer.reserve(400)
    keys, values = kv(200, 18, b=1, h=2, d=4, dv=4)
    widths = []
    for t in range(200):
        layer.update(keys[:, :, t : t + 1], values[:, :, t : t + 1])
        widths.append(layer.width)  # the slots this step's attention reads
    assert max(widths) == 24 + streaming_slack(24)
    assert layer.peak_slots() == 24 + streaming_slack(24) + 1 == layer.capacity
    kept = layer.keys[0, 0][layer.visible()[0, 0]]
    assert torch.equal(kept, torch.cat([keys[0, 0, :4], keys[0, 0, -20:]]))  # 4 sinks + the 20 most recent


def test_full_cache_is_one_slot_layer_per_decoder_layer_and_decodes_as_transformers_cache():
    """The full cache of a 2-layer model: two slot layers, and a prefill + one decoded token through
    it give transformers' own DynamicCache's logits."""
    from transformers import AutoModelForCausalLM, DynamicCache, Qwen3Config

    from notallbits.kvcache import make_cache

    config = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    cache = make_cache({"method": "full"}, model)
    assert [type(layer) for layer in cache.layers] == [SlotLayer, SlotLayer]
    ids, step = torch.tensor([[5, 6, 7, 8]]), torch.tensor([[9]])
    reference = DynamicCache(config=config)
    model(input_ids=ids, past_key_values=reference)
    model(input_ids=ids, past_key_values=cache)
    want = model(input_ids=step, past_key_values=reference).logits
    torch.testing.assert_close(model(input_ids=step, past_key_values=cache).logits, want, rtol=1e-5, atol=1e-6)
    assert cache.get_seq_length() == 5


def test_streamingllm_padded_rows_keep_their_own_sinks_and_recent_tokens_and_compact_every_slack():
    """StreamingLLM's rule (mit-han-lab/streaming-llm: the first ``sink`` tokens plus the most
    recent budget - sink) on each row of a left-padded batch on its own: a 10-token prompt and
    a 4-token one (6 slots of padding), decoded one token a step at budget 32, sink 4. A row
    under the budget keeps every token while the other evicts. The slack at budget 32 is 2:
    row 0 passes the budget at step 23 (33 slots), masks a second token at step 24 (34) and is
    compacted to 32 before step 25's write, so from step 23 on the attention reads 33 and 34
    slots in turn (row 1's padding adds no slots: it passes the budget at step 29, in step)."""
    from notallbits.kvcache import normalize
    from notallbits.kvcache.eviction import StreamingLLMLayer
    from notallbits.kvcache.settings import streaming_slack

    s = normalize({"method": "streamingllm", "budget": 32, "sink": 4})
    assert streaming_slack(32) == 2
    layer = StreamingLLMLayer(s)
    layer.set_padding(torch.tensor([0, 6]))
    steps, pad = 60, 6
    keys = torch.randn(2, 2, 10 + steps, 4, generator=torch.Generator().manual_seed(19))
    keys[0, :, :, 0] = torch.arange(10 + steps)  # channel 0: the token's position in its row
    keys[1, :, :, 0] = torch.arange(10 + steps) - pad  # row 1: 6 padding slots (negative)
    widths = []
    for t in range(steps):
        lo, hi = (0, 10) if t == 0 else (9 + t, 10 + t)
        layer.update(keys[:, :, lo:hi], keys[:, :, lo:hi] * 2)
        widths.append(layer.width)
        for row, real in ((0, 10 + t), (1, 4 + t)):
            want = list(range(real)) if real <= 32 else [0, 1, 2, 3, *range(real - 28, real)]
            for h in range(2):
                got = layer.keys[row, h][layer.visible()[row, 0]][:, 0]
                assert got.tolist() == want, (t, row, h)
    assert widths[:23] == [10 + t for t in range(23)]
    assert widths[23:] == [33 if t % 2 else 34 for t in range(23, steps)]


def test_query_capture_refuses_a_family_whose_attention_fuses_q_k_v():
    """Phi-3's attention projects queries, keys and values with one fused ``qkv_proj`` (no
    ``q_proj``, though it has ``layer_idx`` and ``head_dim``): R-KV cannot take its queries,
    so installing the capture fails with one line naming the model, and hooks nothing."""
    from transformers import AutoModelForCausalLM, Phi3Config

    from notallbits import UserError
    from notallbits.kvcache.eviction import install_query_capture

    config = Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2)
    model = AutoModelForCausalLM.from_config(config)
    attn = [m for m in model.modules() if type(m).__name__ == "Phi3Attention"]
    assert len(attn) == 2 and all(hasattr(m, "qkv_proj") and not hasattr(m, "q_proj") for m in attn)
    with pytest.raises(UserError, match="Phi3ForCausalLM"):
        install_query_capture(model)
    assert not getattr(model, "_notallbits_query_capture", False)
    assert all(not m._forward_pre_hooks for m in attn)


def test_evicting_layer_compacts_in_its_own_buffers_and_a_fork_never_compacts():
    """Reserved at the method's peak (R-KV: budget 12 + buffer 16 = 28 slots), a compression
    compacts in place: the layer keeps the buffers it has (a second set would double the
    layer for a moment). A fork shares its parent's slots: asked to compact, it refuses."""
    from notallbits.kvcache import fork, normalize, reserve
    from notallbits.kvcache.eviction import EvictingCache, RKVLayer

    s = normalize({"method": "rkv", "budget": 12, "buffer": 16, "window": 4, "kernel": 3})
    g = torch.Generator().manual_seed(21)
    cache = EvictingCache(RKVLayer, s, 1)
    reserve(cache, 100)
    layer = cache.layers[0]
    layer.remember_queries(torch.randn(1, 4, 28, 8, generator=g))
    layer.update(*kv(28, 22, b=1, h=2, d=8, dv=8))  # position 0, 28 > 12: compresses
    assert layer.capacity == 28 and layer.pending
    buffers = (layer._kbuf.data_ptr(), layer._vbuf.data_ptr())
    layer.settle()
    assert layer.width == 12 and (layer._kbuf.data_ptr(), layer._vbuf.data_ptr()) == buffers
    twin = fork(cache, 4).layers[0]
    with pytest.raises(RuntimeError, match="^a fork shares its parent's slots"):
        twin.compact()
