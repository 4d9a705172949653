"""Decode-time KV eviction on the transformers 5 Cache API: StreamingLLM and R-KV.

A layer returns the full (kept + new) states to the attention of the current step, then
stores the evicted version. ``get_seq_length`` counts every token seen, so query positions
stay true positions; ``get_mask_sizes`` shifts the key indices so the causal mask treats
all kept tokens as past. RoPE is applied before caching, so kept keys keep their rotation.

Rows may hold different numbers of tokens (a batch across questions is left-padded):
``pad`` [B] counts each row's padding slots, always at the left, and eviction is per row
(a row's sinks are its own first tokens, a row compresses at its own positions; its kept
tokens are right-aligned again after every eviction). The caller masks the padding
(generation/hf_backend.py builds the mask from ``EvictingCache.padding``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache

from notallbits.kvcache.settings import RKV_SCRATCH_BYTES, rkv_pairs_at_once, rkv_similarity_rows
from notallbits.kvcache.slots import SlotLayer


class EvictingLayer(SlotLayer):
    """Slots as in kvcache.slots, plus: ``pad`` [B] padding slots at each row's left, and
    ``drop`` (None, or bool [B, 1 or H, width]) slots still stored but evicted. The layer
    builds the attention mask for its own slots (``key_mask``; kvcache.attention reads it),
    so evicted slots can stay in place until a compaction and a fork can evict by masking."""

    def __init__(self, settings: dict):
        super().__init__()
        self.settings = settings
        self.seen = 0  # tokens ever written (true sequence length, plus the prefill's padding)
        # padding slots at the left of each row, [B] long, on the device (for index arithmetic
        # and the mask) and on the host (to decide when to evict without a device sync);
        # ``lead``: the prefill's padding (host), which ``seen`` counts
        self.pad = self.pad_host = self.lead = None
        self.drop = None
        self.written = 0  # width before this step's tokens (the mask's causal offset)
        self.pending = False  # evicted slots to compact once this step's attention has read them
        self.fork_room = 0  # slots kept beyond the method's peak for a fork's tokens

    def set_padding(self, pad) -> None:
        """Before the first forward: padding slots per row of the left-padded prefill, [B] long."""
        self.pad, self.pad_host = pad, pad.cpu()
        self.lead = self.pad_host

    def update(self, key_states, value_states, *args, **kwargs):
        if self.pad is None:
            self.set_padding(torch.zeros(key_states.shape[0], dtype=torch.long, device=key_states.device))
        self.seen += key_states.shape[-2]
        self.before_step()
        self.written = self.width
        keys, values = self.append(key_states, value_states)
        self.mask = self._mask(key_states.shape[-2])  # what this step attends to
        self.evict()
        return keys, values

    def reserve(self, tokens: int) -> None:
        """Room for ``tokens`` more, but never more slots than the method ever holds at once
        (a fork's tail beyond that grows the slots once, at the fork). A compaction still due
        is done first (a fork sees the slots its parent's next step would)."""
        self.settle()
        if self.width:
            super().reserve(tokens)
        else:
            self.headroom = max(self.headroom, tokens)

    def reserve_fork(self, tokens: int) -> None:
        """Keep room for a fork's ``tokens`` beyond the method's peak, from the first allocation."""
        self.fork_room = max(self.fork_room, tokens)

    def first_capacity(self, tokens: int) -> int:
        return max(tokens, min(tokens + self.headroom, self.peak_slots() + self.fork_room))

    def peak_slots(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def before_step(self) -> None:
        """Hook before a step's tokens are written (a compaction that was due)."""
        self.settle()

    def settle(self) -> None:
        """Compact now if an eviction left it pending (R-KV: right after the compressing step's
        attention, through the hook of install_query_capture; else before the next write)."""
        if self.pending:
            self.pending = False
            self.compact()

    def evict(self) -> None:  # pragma: no cover - abstract
        """After the step's mask is taken: mark evicted slots (``drop``) or compact (``compact``)."""
        raise NotImplementedError

    def visible(self):
        """bool [B, 1 or H, width]: slots that hold a kept real token."""
        j = torch.arange(self.width, device=self.pad.device)
        ok = (j[None] >= self.pad[:, None])[:, None]
        if self.drop is not None:
            drop = self.drop
            if drop.shape[-1] < self.width:  # slots written after the drop was set are kept
                drop = F.pad(drop, (0, self.width - drop.shape[-1]))
            ok = ok & ~drop
        return ok

    def _mask(self, q: int):
        """bool [B, 1 or H, q, width]: query i (slot written + i) sees the kept real slots up to
        itself, and always itself (a padding query sees only itself: no empty row)."""
        j = torch.arange(self.width, device=self.pad.device)
        i = self.written + torch.arange(q, device=self.pad.device)
        causal = j[None] <= i[:, None]
        return (self.visible()[:, :, None, :] & causal) | (j[None] == i[:, None])

    def key_mask(self):
        return self.mask

    def compact(self) -> None:
        """Right-align each row's kept slots (in slot order), in place, one KV head's K or V at a
        time: a head's kept tokens are gathered (the only copy, 1 / (2 x KV heads) of the layer)
        and written back to the head's first slots. Never in a fork (its slots are its
        parent's: a fork masks), nor while this step's attention has still to read the slots.
        Slots beyond what the method ever holds (a prompt longer than that, at the prefill) are
        given back: the kept tokens then go into new buffers of the method's size, once."""
        if self.forked:
            raise RuntimeError("a fork shares its parent's slots: it masks evicted tokens, it never compacts")
        ok = self.visible()
        heads = self._kbuf.shape[1]
        ok = ok.expand(-1, heads, -1)
        kept_row = ok[:, 0].sum(-1)  # equal over heads
        width = int(kept_row.max())
        index = torch.sort(ok.to(torch.uint8), dim=-1, stable=True).indices[..., self.width - width :]
        size = max(width, self.peak_slots() + self.fork_room)
        if self.capacity > size:
            for name in ("_kbuf", "_vbuf"):
                old = getattr(self, name)
                new = old.new_empty(*old.shape[:2], size, old.shape[-1])
                torch.gather(old[:, :, : self.width], 2, index[..., None].expand(-1, -1, -1, old.shape[-1]),
                             out=new[:, :, :width])
                setattr(self, name, new)
                del old, new
        else:
            for buf in (self._kbuf, self._vbuf):
                for h in range(heads):
                    moved = torch.gather(buf[:, h, : self.width], 1,
                                         index[:, h, :, None].expand(-1, -1, buf.shape[-1]))
                    buf[:, h, :width] = moved
                    del moved
        self.width = width
        self.pad = width - kept_row
        self.pad_host = self.pad.cpu()
        self.drop = None

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.width + query_length, self.seen - self.width


class StreamingLLMLayer(EvictingLayer):
    """Keep the first ``sink`` tokens (attention sinks) and the most recent budget - sink.

    Evicted tokens are masked (``hole`` [B]: the oldest non-sink tokens of each row, right
    after its sinks) and removed together (compacted in place) once ``settings.streaming_slack``
    of them are held, so a step writes one slot instead of rebuilding the layer. A fork only masks."""

    def __init__(self, settings: dict):
        super().__init__(settings)
        self.hole = self.hole_host = None

    def peak_slots(self) -> int:
        from notallbits.kvcache.settings import streaming_slack

        return self.settings["budget"] + streaming_slack(self.settings["budget"]) + 1

    def evict(self) -> None:
        budget, sink = self.settings["budget"], self.settings["sink"]
        if self.hole is None:
            self.hole = torch.zeros_like(self.pad)
            self.hole_host = torch.zeros_like(self.pad_host)
        tokens_host = self.width - self.pad_host - self.hole_host  # each row's kept real tokens
        if bool((tokens_host <= budget).all()):
            return
        tokens = self.width - self.pad - self.hole
        self.hole = self.hole + (tokens - budget).clamp_min(0)
        self.hole_host = self.hole_host + (tokens_host - budget).clamp_min(0)
        j = torch.arange(self.width, device=self.pad.device)[None]
        start = (self.pad + sink)[:, None]
        self.drop = ((j >= start) & (j < start + self.hole[:, None]))[:, None]

    def settle(self) -> None:
        """Before a step's write, and at a fork (reserve): compact once a slack of tokens is
        masked, so a fork attends over the slots its parent's next step would (the same
        tokens either way; the same layout keeps the same floating-point sums)."""
        from notallbits.kvcache.settings import streaming_slack

        super().settle()
        slack = streaming_slack(self.settings["budget"])
        if not self.forked and self.hole_host is not None and int(self.hole_host.max()) >= slack:
            self.compact()
            self.hole = torch.zeros_like(self.pad)
            self.hole_host = torch.zeros_like(self.pad_host)


# --------------------------------------------------------------------------- R-KV
# R-KV (Cai et al. 2025), the selection of the authors' code (github.com/Zefan-Cai/R-KV,
# rkv/compression/r1_kv.py and rkv/utils.py compute_attention_scores / cal_similarity),
# written anew so that one compression needs bounded scratch memory:
#   importance: logits of the last `window` queries to the keys outside the window, max over
#     the query heads of each KV group, softmax over those keys, mean over the window's
#     queries, max-pooled over tokens with `kernel` (padding kernel // 2);
#   redundancy: cosine similarity between all keys (norm + 1e-8) with a zero diagonal; in each
#     row i the entry of the most recent key above `sim_threshold` is zeroed (that copy escapes
#     the penalty; with no such key, the authors' index search yields 0 and zeroes column 0, kept
#     here as written), mean over rows, softmax over tokens;
#   score = lam * importance - (1 - lam) * redundancy over the tokens outside the window; each KV
#     head keeps its top budget - window plus the last `window` tokens.
# Differences, on purpose: float32 throughout (the authors' code runs in the model dtype, whose
# bf16 rounding creates ties that top-k breaks arbitrarily), and each batch row scores with its
# own keys (cal_similarity takes key_states[0], so rows > 0 of a batch used row 0's redundancy;
# their runs decode batch 1, where both agree).

def _scratch_plan(pairs: int, length: int, window: int, dim: int, limit_bytes: int, rows: int) -> tuple[int, int]:
    """((Row, KV head) pairs scored at once, similarity rows per chunk): the float32 scratch of
    one compression under ``limit_bytes`` (settings.rkv_pair_bytes per pair, one pair at least),
    similarity ``rows`` at a time (settings.rkv_similarity_rows: never derived from how many
    pairs are due, so a pair's sums run in the same order alone or among others)."""
    return rkv_pairs_at_once(pairs, length, window, dim, rows, limit_bytes), rows


def _rkv_importance(q, k, window: int, kernel: int, ok):
    """q [P, G, Wq, D], k [P, L, D] float32, ok [P, L] bool or None -> pooled importance
    [P, L - window]."""
    old = k.shape[1] - window
    q = q[:, :, -window:]
    logits = None
    for g in range(q.shape[1]):  # max over the group, one query head at a time
        lg = q[:, g] @ k[:, :old].transpose(1, 2)
        logits = lg if logits is None else torch.maximum(logits, lg, out=logits)
        del lg
    logits /= q.shape[-1] ** 0.5
    if ok is None:
        attn = torch.softmax(logits, dim=-1).mean(1)
    else:
        logits.masked_fill_(~ok[:, None, :old], float("-inf"))
        probs = torch.softmax(logits, dim=-1).nan_to_num_(0.0)  # a query row of only padding: no weight
        q_ok = ok[:, k.shape[1] - q.shape[2]:].to(probs.dtype)  # the window's queries are its last tokens
        attn = (probs * q_ok[..., None]).sum(1) / q_ok.sum(1, keepdim=True).clamp_min(1)
    return F.max_pool1d(attn[:, None], kernel, stride=1, padding=kernel // 2)[:, 0]


def _rkv_redundancy(k, threshold: float, ok, rows: int):
    """k [P, L, D] float32 (normalised in place), ok [P, L] bool or None (all real) ->
    redundancy [P, L], computed in chunks of ``rows`` similarity rows (never the L x L matrix)."""
    pairs, length, _ = k.shape
    k /= k.norm(dim=-1, keepdim=True) + 1e-8
    total = torch.zeros(pairs, length, device=k.device)
    position = torch.arange(length, dtype=torch.int32, device=k.device)
    # a row without a key above the threshold: the authors' search returns index 0 (the first
    # real token once padding is dropped) and zeroes that entry
    first = torch.zeros(pairs, 1, dtype=torch.int32, device=k.device) if ok is None \
        else ok.to(torch.uint8).argmax(-1, keepdim=True).to(torch.int32)
    for r0 in range(0, length, rows):
        r1 = min(length, r0 + rows)
        sim = k[:, r0:r1] @ k.transpose(1, 2)  # [P, c, L]
        sim.diagonal(offset=r0, dim1=1, dim2=2).zero_()
        if ok is not None:
            sim.masked_fill_(~ok[:, None, :], 0.0)
        last = torch.where(sim > threshold, position, -1).amax(-1)  # most recent key above threshold
        last = torch.where(last >= 0, last, first)
        sim.scatter_(2, last[..., None].long(), 0.0)
        if ok is not None:
            sim.masked_fill_(~ok[:, r0:r1, None], 0.0)
        total += sim.sum(1)
        del sim, last
    if ok is None:
        return torch.softmax(total / length, dim=-1)
    mean = total / ok.sum(-1, keepdim=True).clamp_min(1)
    return torch.softmax(mean.masked_fill_(~ok, float("-inf")), dim=-1)


def rkv_scores(queries, keys, settings: dict, valid=None, scratch_bytes: int | None = None, rows=None,
               slots=None):
    """R-KV scores [B, Hkv, L - window] of the tokens outside the observation window (the
    rule is described above). queries [B, Hq, Wq, D] post-RoPE (the last ones, Wq >= window
    is not required); keys [B, Hkv, L, D]; ``valid`` [B, L] bool marks real tokens: padding
    takes no part in the softmaxes nor the similarity means and scores -inf.
    ``rows`` [B] long and ``slots`` [B, Hkv, L] long (optional): score the tokens at these
    slots of these batch rows of ``keys`` (a cache layer's [rows, Hkv, width, D]), in the
    order given, instead of all of ``keys``; they are gathered one chunk of heads at a time,
    so the layer is never copied.
    ``scratch_bytes`` caps the float32 working memory (default: the device's
    settings.RKV_SCRATCH_BYTES, and at most the scored tokens' K + V, 2·B·Hkv·L·D in keys'
    dtype): (row, KV head) pairs are scored a few at a time, each pair's similarity in chunks of
    rows that do not depend on B, so a row's scores are the same alone or in any batch."""
    b, hq, wq, d = queries.shape
    hkv = keys.shape[1]
    length = keys.shape[2] if slots is None else slots.shape[-1]
    window, pairs = settings["window"], b * hkv
    device_type = keys.device.type
    limit = min(RKV_SCRATCH_BYTES.get(device_type, RKV_SCRATCH_BYTES["cuda"]),
                2 * pairs * length * d * keys.element_size()) if scratch_bytes is None else scratch_bytes
    heads, rows_per_chunk = _scratch_plan(pairs, length, window, d, limit,
                                          rkv_similarity_rows(length, window, d, hkv, keys.element_size(), device_type))
    q = queries.reshape(pairs, hq // hkv, wq, d)
    ok = None if valid is None else \
        valid.to(device=keys.device, dtype=torch.bool)[:, None].expand(b, hkv, length).reshape(pairs, length)
    lam = settings["lam"]
    out = torch.empty(pairs, length - window, device=keys.device)
    for p0 in range(0, pairs, heads):
        p1 = min(pairs, p0 + heads)
        kf = _pair_keys(keys, rows, slots, p0, p1)  # float32, its own: normalised in place below
        part = None if ok is None else ok[p0:p1]
        importance = _rkv_importance(q[p0:p1].float(), kf, window, settings["kernel"], part)
        redundancy = _rkv_redundancy(kf, settings["sim_threshold"], part, rows_per_chunk)[:, : length - window]
        del kf
        out[p0:p1] = lam * importance - (1 - lam) * redundancy
    if ok is not None:
        out.masked_fill_(~ok[:, : length - window], float("-inf"))
    return out.reshape(b, hkv, length - window)


def _pair_keys(keys, rows, slots, p0: int, p1: int):
    """A new float32 tensor [p1 - p0, L, D]: the keys of (row, KV head) pairs p0..p1-1 (pair p:
    scored row p // Hkv, head p % Hkv), at ``slots`` of batch rows ``rows`` where given."""
    hkv = keys.shape[1]
    if rows is None and slots is None:
        return keys.flatten(0, 1)[p0:p1].to(torch.float32, copy=True)
    pair = torch.arange(p0, p1, device=keys.device)
    row, head = pair // hkv, pair % hkv
    batch_row = row if rows is None else rows.to(keys.device)[row]
    picked = keys[batch_row, head] if slots is None else keys[batch_row[:, None], head[:, None], slots[row, head]]
    return picked.to(torch.float32)  # advanced indexing made a new tensor: no second copy of float32 keys


def rkv_select(queries, keys, settings: dict, valid=None, rows=None, slots=None):
    """Indices [B, Hkv, budget] (sorted) of the tokens each KV head keeps: the top
    budget - window by R-KV score among the older tokens, plus the last ``window`` always.
    Padding (``valid`` False) scores -inf, so it is kept only by a row with fewer than
    ``budget`` real tokens; the caller gathers its mask with the same indices. With ``rows``
    and ``slots`` (see rkv_scores) the indices count the scored tokens: slots.gather(-1, index)
    are the kept slots."""
    budget, window = settings["budget"], settings["window"]
    length = keys.shape[-2] if slots is None else slots.shape[-1]
    top = rkv_scores(queries, keys, settings, valid, rows=rows, slots=slots).topk(budget - window, dim=-1).indices
    recent = torch.arange(length - window, length, device=keys.device).expand(*top.shape[:-1], window)
    return torch.cat([top, recent], dim=-1).sort(dim=-1).values


class RKVLayer(EvictingLayer):
    """R-KV at the authors' schedule (run_math.py, divide_method "step_length",
    divide_length 128 = our ``buffer``): a step compresses when one of its tokens sits at a
    sequence position that is a multiple of ``buffer`` (the prefill, position 0, included)
    and the cache then holds more than ``budget`` tokens. Decoding one token a step, the cache
    grows from budget to budget + buffer and the compressing step attends to all
    budget + buffer before storing budget: the peak is budget + buffer tokens per layer (what
    memory.kv_tokens_held counts), plus the scoring scratch of one layer at a time, a batch's
    (settings.rkv_scratch_bytes)."""

    def __init__(self, settings: dict):
        super().__init__(settings)
        self.recent_queries = None  # [B, Hq, <=window, D], filled by the query-capture hook

    def peak_slots(self) -> int:
        return self.settings["budget"] + self.settings["buffer"]

    def remember_queries(self, queries) -> None:
        w = self.settings["window"]
        q = queries if self.recent_queries is None else torch.cat([self.recent_queries, queries], dim=-2)
        self.recent_queries = q[..., -w:, :]

    def evict(self) -> None:
        s = self.settings
        length, stored = self.width, self.written
        seen = self.seen - self.lead  # each row's tokens so far
        first = seen - (length - stored)  # each row's sequence position of this step's first token
        real_host = length - self.pad_host  # each row's real tokens in its slots
        if self.drop is not None:  # a fork that already evicted by masking
            real_host = self.visible()[:, 0].sum(-1).cpu()
        due = (real_host > s["budget"]) & ((seen - 1) // s["buffer"] * s["buffer"] >= first)
        if not bool(due.any()):
            return
        heads = self._kbuf.shape[1]
        keep = self.visible().expand(-1, heads, -1).clone()  # [B, H, width]
        # the rows due, grouped by their number of kept tokens: each group is scored on its own
        # kept tokens only (per KV head, in slot order: the tokens a compacted layer would hold),
        # gathered from the slots a chunk of heads at a time (rkv_scores)
        for n in sorted(set(real_host[due].tolist())):
            rows = torch.nonzero(due & (real_host == n)).flatten().to(keep.device)
            if self.drop is None:  # a row's real tokens are its last n slots
                slots = torch.arange(length - n, length, device=keep.device).expand(len(rows), heads, n)
            else:
                slots = torch.sort(keep[rows].to(torch.uint8), dim=-1, stable=True).indices[..., length - n :]
            index = rkv_select(self.recent_queries[rows], self.keys, s, rows=rows, slots=slots)
            chosen = torch.zeros(len(rows), heads, length, dtype=torch.bool, device=keep.device)
            keep[rows] = chosen.scatter_(-1, slots.gather(-1, index), True)
        self.drop = ~keep
        # this step's attention still reads every slot: the parent compacts right after it
        # (settle); a fork keeps masking (its slots are its parent's)
        self.pending = not self.forked


class EvictingCache(Cache):
    def __init__(self, layer_cls, settings: dict, num_layers: int):
        super().__init__(layers=[layer_cls(settings) for _ in range(num_layers)])

    def set_padding(self, pad) -> None:
        """Before the first (left-padded) forward: padding slots per row, [B] long."""
        for layer in self.layers:
            layer.set_padding(pad)

    @property
    def padding(self):
        return self.layers[0].pad


def streamingllm_cache(s: dict, model, config):  # factory of the KV-method table (settings.METHODS)
    from notallbits.kvcache.attention import use_grouped_attention

    use_grouped_attention(model)  # the layers mask their own slots
    return EvictingCache(StreamingLLMLayer, s, config.num_hidden_layers)


def rkv_cache(s: dict, model, config):  # factory of the KV-method table (settings.METHODS)
    from notallbits.kvcache.attention import use_grouped_attention

    use_grouped_attention(model)  # the layers mask their own slots
    install_query_capture(model)
    return EvictingCache(RKVLayer, s, config.num_hidden_layers)


# --------------------------------------------------------------------------- query capture
def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def install_query_capture(model) -> None:
    """R-KV scores tokens by the attention of recent *queries*, which a cache never sees.
    Hooks on each attention module hand the post-RoPE queries to an RKVLayer (and do nothing
    for any other cache), and once the module has attended, let the layer compact what it
    evicted (RKVLayer.evict leaves that pending). Installed once per model.

    Any family of notallbits/families.py: the hook takes ``q_proj``'s output (a quantized linear
    too), applies the module's own ``q_norm`` where it has one (Qwen3), then RoPE with the
    (cos, sin) the decoder layer passes as ``position_embeddings`` — the rotation every one of
    these families applies (rotate-half, full head dimension)."""
    if getattr(model, "_notallbits_query_capture", False):
        return
    hooked = 0
    for module in model.modules():
        if not (hasattr(module, "q_proj") and hasattr(module, "layer_idx") and hasattr(module, "head_dim")):
            continue

        def pre_hook(attn, args, kwargs):
            cache = kwargs.get("past_key_values")
            layer = cache.layers[attn.layer_idx] if isinstance(cache, EvictingCache) else None
            attn._nab_target = (layer, kwargs.get("position_embeddings")) if isinstance(layer, RKVLayer) else None

        def q_proj_hook(proj, inputs, output, attn=module):
            target = getattr(attn, "_nab_target", None)
            if target is None:
                return
            layer, (cos, sin) = target
            q = output.view(*output.shape[:-1], -1, attn.head_dim)  # [B, L, Hq, D]
            if getattr(attn, "q_norm", None) is not None:
                q = attn.q_norm(q)
            q = q.transpose(1, 2)  # [B, Hq, L, D]
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            layer.remember_queries((q * cos + _rotate_half(q) * sin).detach())

        def post_hook(attn, args, output):  # this layer's attention has read its slots
            target = getattr(attn, "_nab_target", None)
            if target is not None:
                target[0].settle()

        module.register_forward_pre_hook(pre_hook, with_kwargs=True)
        module.q_proj.register_forward_hook(q_proj_hook)
        module.register_forward_hook(post_hook)
        hooked += 1
    if not hooked:
        from notallbits import UserError

        raise UserError(f"R-KV: no attention module of {type(model).__name__} exposes q_proj/layer_idx/head_dim "
                        "(its family is not supported by decode-time eviction: see notallbits/families.py)")
    model._notallbits_query_capture = True
