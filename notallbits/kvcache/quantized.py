"""HQQ KV quantization per row: transformers' QuantizedCache (HQQ backend, as in the paper),
with each row quantized on its own real tokens, attended without a dequantized copy of the
layer.

transformers quantizes the whole [B, H, L, D] tensor at once: with its default axis 0 a
quantization group takes elements from every row, and HQQ's optimizer stops on the error of
the whole tensor, so a sample's cache depended on the other samples in its batch and, once
rows of different questions are left-padded together, on the padding. Here each row's real
tokens (its padding cut off) are quantized as a batch of one, as transformers does for a
single sequence (``hqq_rows`` runs hqq's algorithm for many rows at once, each stopping on
its own error). The residual window and when it is requantized are transformers'
(``QuantizedLayer.update``, followed step for step by ``RowHQQLayer.update``).

Where a group's elements lie. hqq (axis 0, group 64) reads one row's [H, T, D] tensor as a
[64, M] matrix (M = H·T·D / 64) in its memory order and quantizes each *column* j with one
scale and zero: element (h, t, d), at flat position f = (h·T + t)·D + d, belongs to column
f mod M. A token's D channels therefore use D consecutive columns (cyclically) starting at
((h·T + t)·D) mod M, the same for every head when H divides 64 (Qwen3, Llama: 8 KV heads).
So the codes are kept in token order ([rows, H, T, D], packed along D) beside hqq's scale and
zero per column, and any run of tokens dequantizes on its own: its codes are a slice, its
scales a window of the column vector (a slice, or a gather where the run wraps around).

Attention (``attend``, called by kvcache.attention.grouped_attention instead of SDPA) reads
the quantized tokens in chunks of ``settings.HQQ_CHUNK_TOKENS`` per row: each chunk's keys are
dequantized into a small scratch buffer (shared by the layers; on a CPU it stays in cache)
and scored at once, then the softmax runs over all scores (quantized, residual and new
tokens), then each chunk's values are dequantized and accumulated. Requantizing (every
``residual_length`` steps) dequantizes, joins and quantizes rows in chunks after that step's
attention. Values are hqq's ``(W_q - zero) * scale`` in the compute dtype, bit for bit.
"""

from __future__ import annotations

import math

import torch
from transformers.cache_utils import Cache

from notallbits.kvcache.settings import HQQ_CHUNK_TOKENS, HQQ_OPT_CHUNK_ELEMENTS, HQQ_REQUANT_ELEMENTS
from notallbits.kvcache.slots import SlotLayer


# A window of a row starts at a multiple of this many columns (see _pieces)
HQQ_WINDOW_COLUMNS = 256

# hqq's shrink (lp 0.7, beta 10) is relu(|x| - 0.1 |x|^-0.3): zero wherever |x|^1.3 <= 0.1, i.e.
# |x| <= 0.1^(1 / 1.3) = 0.1701. Below 0.16 it is zero with room to spare (0.1 * 0.16^-0.3 = 0.173,
# far more than float32's rounding of pow can move), so a window whose errors all lie below it
# has W_e = 0 (up to the sign of a zero) and needs no pow (a third of an iteration's time): an
# 8-bit cache's errors always do, a 4-bit one's where its groups' range is under ~5. (Taking the
# pow on the few values above it instead, gathered, measured slower than on the whole window:
# finding them costs as much as the pow.)
SHRINK_ZERO_BELOW = 0.16


def _pieces(rows: int, group_size: int, columns: int, elements: int, split_rows: bool):
    """(r0, r1, j0, j1) windows of a [rows, group_size, columns] tensor of about ``elements``
    elements each: whole rows where they fit, else (``split_rows``) one row's columns in runs
    that start at multiples of HQQ_WINDOW_COLUMNS. hqq's zero is a mean over the group axis
    per column; torch's CPU reduction sums a column in an order that depends on where the column
    falls in its vector blocks (8-16 floats, 4 at a time) and on whether it is one of the last
    columns that do not fill a block; windows that start at multiples of 256 columns and end at a
    multiple or at the row's end put every column where the whole row puts it (checked against
    hqq on rows many windows wide, tests/test_batching.py). A GPU's reduction order is not
    checked here: there a window is whole rows."""
    per_row = group_size * columns
    if per_row <= elements or not split_rows:
        step = max(1, elements // per_row)
        return [(r0, min(rows, r0 + step), 0, columns) for r0 in range(0, rows, step)]
    width = max(1, elements // group_size // HQQ_WINDOW_COLUMNS) * HQQ_WINDOW_COLUMNS
    return [(r, r + 1, j0, min(columns, j0 + width)) for r in range(rows) for j0 in range(0, columns, width)]


def _step(w_f, s, z, top: int, buffers, err_out, shrinking: bool):
    """One iteration of hqq's legacy optimiser (lp 0.7, beta 10) on a window [n, group, c]:
    W_q, W_r, |W_f - W_r| (into ``err_out``) and the new zero [n, 1, c] (a view of a buffer),
    with hqq's operations in hqq's order into the five window-sized ``buffers``. The pow of the
    shrink is skipped where every error lies below SHRINK_ZERO_BELOW (W_e = 0 there), unless
    ``shrinking`` says the window had errors to shrink before. Returns (new zero, shrinking)."""
    a, b, c, d, e = buffers
    torch.mul(w_f, s, out=a).add_(z).round_().clamp_(0, top)  # W_q
    torch.sub(a, z, out=b).div_(s)  # W_r = (W_q - zero) / scale
    torch.sub(w_f, b, out=c)  # W_f - W_r
    err = torch.abs(c, out=err_out)  # |W_f - W_r|, kept for the row's mean
    if not shrinking and float(err.max()) < SHRINK_ZERO_BELOW:  # W_e = 0 here: no pow to take
        torch.mul(w_f, s, out=e)  # (W_f - 0) * scale
    else:
        shrinking = True
        # shrink_lp_op(W_f - W_r, beta=10, lp_norm=0.7): sign(x) relu(|x| - (1 / beta) |x| ** (lp - 1)).
        # The pow reads contiguous values: torch's CPU pow takes its vector path (hqq's, on a whole
        # contiguous tensor) or, on the last values of an inner loop that do not fill a vector block, a
        # scalar one that may round differently; ``err_out`` may be a window of a wider row, whose inner
        # loop is the window's width.
        if not err.is_contiguous():
            err = d.copy_(err)
        torch.pow(err, 0.7 - 1, out=e).mul_(1.0 / 1e1)
        torch.sub(err, e, out=d).clamp_min_(0.0)
        torch.copysign(d, c, out=d)  # W_e (relu's result is >= +0: sign(x) * it, bit for bit)
        torch.sub(w_f, d, out=e).mul_(s)  # (W_f - W_e) * scale
    return torch.sub(a, e, out=e).mean(dim=-2, keepdim=True), shrinking  # mean(W_q - (W_f - W_e) * scale)


def _optimise_rows(w, scale, zero, top: int, pieces, opt_dtype) -> None:
    """hqq's optimiser over ``pieces`` (whole rows each on a GPU, or rows that fit a window),
    updating ``zero`` [R, 1, M] in place; every row stops at its own iteration."""
    rows, group_size, columns = w.shape
    device = w.device
    converted = w.float().to(opt_dtype) if w.dtype != opt_dtype and len(pieces) == 1 else None
    error_abs = torch.empty(rows, group_size, columns, dtype=opt_dtype, device=device)
    biggest = max((r1 - r0) * group_size * (j1 - j0) for r0, r1, j0, j1 in pieces)
    buffers = [torch.empty(biggest, dtype=opt_dtype, device=device) for _ in range(5)]
    best = torch.full((rows,), float("inf"), device=device)
    active = torch.ones(rows, dtype=torch.bool, device=device)
    shrinking = [False] * len(pieces)
    for _ in range(20):  # optimize_weights_proximal_legacy: lp 0.7, beta 10, 20 iterations
        for i, (r0, r1, j0, j1) in enumerate(pieces):
            shape = (r1 - r0, group_size, j1 - j0)
            w_f = converted if converted is not None else w[r0:r1, :, j0:j1]
            if w_f.dtype != opt_dtype:  # hqq: W_f = tensor.float().to(float16 on a GPU)
                w_f = w_f.float().to(opt_dtype)
            z = zero[r0:r1, :, j0:j1]
            new_zero, shrinking[i] = _step(w_f, scale[r0:r1, :, j0:j1], z, top,
                                           [buf[: math.prod(shape)].view(shape) for buf in buffers],
                                           error_abs[r0:r1, :, j0:j1], shrinking[i])
            zero[r0:r1, :, j0:j1] = torch.where(active[r0:r1, None, None], new_zero, z)  # a stopped row keeps its zero
        error = error_abs.flatten(1).mean(1).float()
        better = active & (error < best)
        best = torch.where(better, error, best)
        active = better
        if not bool(active.any()):
            break


class _Run:
    """Group columns of one row that the optimiser works on: ``w``, ``scale``, ``zero``
    [1, group, c] / [1, 1, c], either the row's columns ``start``.. in place (``columns`` None)
    or a compact copy of the columns ``columns`` (a tensor of their indices)."""

    def __init__(self, w, scale, zero, start: int = 0, columns=None):
        self.w, self.scale, self.zero, self.start, self.columns = w, scale, zero, start, columns
        self.shrinking: dict[int, bool] = {}  # window start -> it had errors to shrink

    def gather(self, pick, row_zero, opt_dtype) -> "_Run":
        """The columns ``pick`` (indices into this run) as a compact copy; a compact run's zeros
        go back into the row's first."""
        self.put_back(row_zero)
        columns = pick + self.start if self.columns is None else self.columns[pick]
        return _Run(self.w.index_select(2, pick).to(opt_dtype), self.scale.index_select(2, pick),
                    self.zero.index_select(2, pick), columns=columns)

    def put_back(self, row_zero) -> None:
        if self.columns is not None:
            row_zero.index_copy_(2, self.columns, self.zero)


def _optimise_wide_row(w, scale, zero, top: int, width: int) -> None:
    """hqq's optimiser on one row [1, group, M] wider than a window (a CPU), updating ``zero``
    [1, 1, M] in place, bit for bit as hqq on the row alone, without repeating settled columns.

    A group column's next zero is a function of its own values, scale and zero only, so a
    column whose zero comes back bit for bit the same is at a fixed point: every later
    iteration gives it the same codes, error and zero. Such columns are left out of the work
    (on a model's keys and values half of them settle within 3 iterations, nine in ten within
    8, while rows run 18-20): once a quarter of the columns worked on have settled, the others
    are gathered into a compact copy. A settled column's error stays in the row's error buffer,
    so the row's mean error is hqq's mean over every column, in hqq's order. The zero's mean
    over the group axis is bit for bit where a column sits in torch's vector blocks as it sits
    in the whole row: the columns past the row's last multiple of HQQ_WINDOW_COLUMNS (a whole
    row's scalar tail) are worked on in place, never gathered, and a compact copy is padded to
    a multiple of HQQ_WINDOW_COLUMNS with settled columns (which come out the same again)."""
    _, group_size, columns = w.shape
    opt_dtype = zero.dtype
    body = columns - columns % HQQ_WINDOW_COLUMNS
    error_abs = torch.empty(1, group_size, columns, dtype=opt_dtype, device=w.device)
    buffers = [torch.empty(group_size * width, dtype=opt_dtype, device=w.device) for _ in range(6)]
    runs = [_Run(w[..., a:b], scale[..., a:b], zero[..., a:b], start=a)
            for a, b in ((0, body), (body, columns)) if b > a]
    best = float("inf")
    for _ in range(20):  # optimize_weights_proximal_legacy: lp 0.7, beta 10, 20 iterations
        moving = []  # per run: [c] bool, its columns whose zero changed
        for run in runs:
            changed = []
            for j0 in range(0, run.w.shape[-1], width):
                j1 = min(run.w.shape[-1], j0 + width)
                shape = (1, group_size, j1 - j0)
                a, b, c, d, e, f = (buf[: math.prod(shape)].view(shape) for buf in buffers)
                err = f if run.columns is not None else error_abs[..., run.start + j0 : run.start + j1]
                z = run.zero[..., j0:j1]
                new_zero, run.shrinking[j0] = _step(run.w[..., j0:j1].float(), run.scale[..., j0:j1], z, top,
                                                    (a, b, c, d, e), err, run.shrinking.get(j0, False))
                changed.append((new_zero.view(torch.int32) != z.view(torch.int32)).view(-1))
                z.copy_(new_zero)
                if run.columns is not None:
                    error_abs.index_copy_(2, run.columns[j0:j1], err)
            moving.append(torch.cat(changed) if changed else torch.zeros(0, dtype=torch.bool))
        error = float(error_abs.mean())  # hqq: float(torch.abs(W_f - W_r).mean())
        if not error < best:  # hqq stops once the error stops falling (this iteration's zero kept)
            break
        best = error
        if not any(bool(m.any()) for m in moving):  # all settled: the next error would equal this one
            break
        first, m = runs[0], moving[0]
        if first.start == 0 and body:  # the body (gathered or not) is runs[0]; the tail is never gathered
            kept = int(m.sum())
            if (m.numel() - kept) * 2 >= m.numel() and m.numel() > HQQ_WINDOW_COLUMNS:
                padding = (~m).nonzero().view(-1)[: -kept % HQQ_WINDOW_COLUMNS]
                pick = torch.cat([m.nonzero().view(-1), padding])
                runs[0] = first.gather(pick, zero, opt_dtype)
    for run in runs:
        run.put_back(zero)


@torch.inference_mode()
def _hqq_codes(x, nbits: int, group_size: int, chunk_elements: int | None = None):
    """hqq's codes of each row of ``x`` [R, H, T, D] as if alone (see ``hqq_rows``):
    (codes [R, group, M] uint8, scale [R, 1, M] (what dequantization multiplies by), zero
    [R, 1, M]), scale and zero in the optimiser's dtype.

    hqq's optimiser (``optimize_weights_proximal_legacy``) runs each iteration over the whole
    tensor, ~15 elementwise passes with a new temporary each. Its columns are independent but
    for the stopping rule (the mean error of the whole row), so each iteration here runs over
    windows of ``chunk_elements`` elements (``settings.HQQ_OPT_CHUNK_ELEMENTS``; a CPU window
    stays in cache; see ``_pieces``) with the same operations in the same order into window-sized
    buffers, writes the window's |W_f - W_r| into a row-sized buffer and takes the row's mean
    over that buffer as hqq does: codes, scales, zeros and the iteration each row stops at are
    hqq's, bit for bit (tests/test_batching.py), while the work memory is one copy of the rows
    in the optimiser's dtype instead of ~6. On a CPU a row wider than a window goes alone and
    leaves out the columns that have settled (``_optimise_wide_row``)."""
    rows = x.shape[0]
    device = x.device
    if chunk_elements is None:
        chunk_elements = HQQ_OPT_CHUNK_ELEMENTS.get(device.type, HQQ_OPT_CHUNK_ELEMENTS["cuda"])
    w = x.reshape(rows, group_size, -1)  # per row: hqq's W.reshape([group_size, -1]) (hqq's W is x.float())
    columns = w.shape[2]
    opt_dtype = torch.float16 if device.type == "cuda" else torch.float32  # hqq's W_f
    top = round(2**nbits - 1)
    scale = torch.empty(rows, 1, columns, dtype=opt_dtype, device=device)
    zero = torch.empty_like(scale)
    wide = device.type == "cpu" and group_size * columns > chunk_elements
    pieces = _pieces(rows, group_size, columns, chunk_elements, split_rows=wide)
    for r0, r1, j0, j1 in pieces:  # Quantizer.quantize's initial scale and zero
        piece = w[r0:r1, :, j0:j1].float()
        lo, hi = piece.amin(dim=1, keepdim=True), piece.amax(dim=1, keepdim=True)  # (no indices to track)
        denom = hi - lo
        s = top / denom
        s = torch.where(denom.abs() <= 1e-4, torch.full_like(s, 1.0), s).clamp(max=2e4)
        z = -lo * s
        scale[r0:r1, :, j0:j1] = s.to(opt_dtype)
        zero[r0:r1, :, j0:j1] = z.to(opt_dtype)
    if wide:
        width = pieces[0][3] - pieces[0][2]
        for r in range(rows):
            _optimise_wide_row(w[r : r + 1], scale[r : r + 1], zero[r : r + 1], top, width)
    else:
        _optimise_rows(w, scale, zero, top, pieces, opt_dtype)
    codes = torch.empty(rows, group_size, columns, dtype=torch.uint8, device=device)
    for r0, r1, j0, j1 in pieces:  # hqq: round(W * scale + zero) with W = x.float()
        piece = w[r0:r1, :, j0:j1].float()
        codes[r0:r1, :, j0:j1] = torch.round(piece * scale[r0:r1, :, j0:j1] + zero[r0:r1, :, j0:j1]).clamp_(0, top)
    return codes, 1.0 / scale, zero


def hqq_rows(x, nbits: int, group_size: int, compute_dtype):
    """HQQ (hqq.core.quantize.Quantizer.quantize with transformers' settings: axis 0, channel
    wise, optimize, bit-packed) of each row of ``x`` [R, H, T, D] as if alone, in one pass:
    min/max, the legacy proximal optimiser (20 iterations, lp 0.7, beta 10) stopping per row
    when its error stops falling, exactly as hqq stops for a one-row tensor. Returns the packed
    data and meta of the rows side by side along the group columns: [group / pack, R * M], scale
    and zero [1, R * M] in ``compute_dtype`` (what hqq + transformers store for one row, with
    the rows' columns concatenated)."""
    from hqq.core.quantize import Quantizer

    w_q, scale, zero = _hqq_codes(x, nbits, group_size)
    columns = lambda t: t.transpose(0, 1).reshape(t.shape[1], -1)  # noqa: E731  [R, g, M] -> [g, R * M]
    packing = Quantizer.bit_to_packing[nbits]
    data = Quantizer.pack[packing](columns(w_q))
    meta = {"nbits": nbits, "group_size": group_size, "shape": (1, *x.shape[1:]), "axis": 0, "packing": packing,
            "scale": columns(scale).to(compute_dtype), "zero": columns(zero).to(compute_dtype),
            "compute_dtype": compute_dtype}
    return data, meta


def pack_channels(codes, nbits: int):
    """Codes [..., D] (uint8 < 2**nbits) -> [..., D * nbits / 8]: byte i holds channels i,
    i + D/p, ... (p = 8 / nbits codes per byte, the first in the high bits), as hqq packs rows."""
    per = 8 // nbits
    step = codes.shape[-1] // per
    out = codes[..., :step] << (8 - nbits)
    for i in range(1, per):
        out |= codes[..., i * step : (i + 1) * step] << (8 - nbits * (i + 1))
    return out


def unpack_channels(packed, nbits: int, out):
    """``pack_channels`` undone into ``out`` [..., D] uint8."""
    per = 8 // nbits
    if per == 1:
        return packed
    step = packed.shape[-1]
    mask = 2**nbits - 1
    for i in range(per):
        shift = 8 - nbits * (i + 1)
        piece = out[..., i * step : (i + 1) * step]
        if i == 0:  # the high bits: a shift alone
            torch.bitwise_right_shift(packed, shift, out=piece)
        elif shift == 0:  # the low bits: a mask alone
            torch.bitwise_and(packed, mask, out=piece)
        else:
            torch.bitwise_right_shift(packed, shift, out=piece).bitwise_and_(mask)
    return out


class Quantized:
    """Keys or values of the rows of one length: ``codes`` [n, H, T, D / (8 / nbits)] uint8 in
    token order; ``scale`` and ``zero`` [n, M (+ D where a token's columns can wrap around)]
    in the compute dtype, hqq's per group column."""

    def __init__(self, codes, scale, zero, tokens: int, heads: int, dim: int, group_size: int):
        self.codes, self.tokens, self.heads, self.dim = codes, tokens, heads, dim
        self.columns = heads * tokens * dim // group_size  # M
        self.step = math.gcd(dim, self.columns)  # every token's first column is a multiple of it
        if self.columns % dim:  # a token's D columns may run past M: continue them cyclically
            again = -(-dim // self.columns)
            scale, zero = (torch.cat([t, t.repeat(1, again)[:, :dim]], 1) for t in (scale, zero))
        self.scale, self.zero = scale, zero
        self.shared = (tokens * dim) % self.columns == 0  # every head's tokens use the same columns

    def nbytes(self) -> int:
        return self.codes.nbytes + self.scale.nbytes + self.zero.nbytes

    def pieces(self, tokens: int):
        """Runs (t0, t1) of at most ``tokens`` tokens covering 0..T; where the heads share their
        columns, no run wraps around M (but its last token may straddle it), so its scales and
        zeros are one slice of the column vector."""
        t, out = 0, []
        while t < self.tokens:
            end = min(self.tokens, t + tokens)
            if self.shared:
                first = (t * self.dim) % self.columns
                end = min(end, t + (self.columns - 1 - first) // self.dim + 1)
            out.append((t, end))
            t = end
        return out

    def windows(self, meta, r0: int, r1: int, t0: int, t1: int):
        """``meta`` (scale or zero) of tokens t0..t1 (a run of ``pieces``) of rows r0..r1,
        [n, 1 or H, c, D]."""
        d, m = self.dim, self.columns
        if self.shared:
            first = (t0 * d) % m
            return meta[r0:r1, first : first + (t1 - t0) * d].view(r1 - r0, 1, t1 - t0, d)
        runs = meta[r0:r1].unfold(1, d, self.step)  # [n, windows, D]: window i = columns i*step ..
        t = torch.arange(t0, t1, device=meta.device)
        h = torch.arange(self.heads, device=meta.device)[:, None]
        index = ((h * self.tokens + t) * d % m // self.step).flatten()
        return runs.index_select(1, index).view(r1 - r0, self.heads, t1 - t0, d)

    def dequantize(self, r0: int, r1: int, t0: int, t1: int, out, u8, nbits: int):
        """hqq's (W_q - zero) * scale of tokens t0..t1 of rows r0..r1 into ``out`` [n, H, c, D]
        (compute dtype), without temporaries; ``u8``: uint8 scratch of the same shape."""
        out.copy_(unpack_channels(self.codes[r0:r1, :, t0:t1], nbits, u8))  # (a uint8 - float sub makes a float copy)
        out.sub_(self.windows(self.zero, r0, r1, t0, t1))
        return out.mul_(self.windows(self.scale, r0, r1, t0, t1))


class RowGroup:
    """Rows of one length (``tokens`` quantized), their keys and values."""

    def __init__(self, rows: list[int], device, tokens: int, keys: Quantized, values: Quantized):
        self.rows_host, self.tokens, self.keys, self.values = rows, tokens, keys, values
        self.rows = torch.tensor(rows, device=device)
        consecutive = rows[-1] - rows[0] + 1 == len(rows)
        self.first = rows[0] if consecutive else None  # a slice of the batch, or an index

    def of(self, t):
        """This group's rows of a batch tensor (a view where they are consecutive)."""
        return t[self.first : self.first + len(self.rows_host)] if self.first is not None else t[self.rows]


class RowHQQLayer(SlotLayer):
    """transformers' QuantizedLayer.update, step for step (first call: quantize the prompt;
    then attend to the quantized + residual + new tokens; when the residual window is full,
    requantize all of it), with: the residual window in slots (kvcache.slots: written in place,
    a fork writes only its tail); attention through ``attend`` (chunked, no dequantized layer);
    rows quantized in chunks so the float32 work memory of quantizing stays within 2x the
    layer's keys. A fork that requantizes keeps the result to itself."""

    def __init__(self, nbits: int, q_group_size: int, residual_length: int, scratch: dict):
        super().__init__()
        self.nbits, self.q_group_size, self.residual_length = nbits, q_group_size, residual_length
        self.scratch = scratch  # {"f", "u8", "s": flat buffers}, shared by the layers
        self.cumulative_length = 0
        self.groups = None  # [RowGroup], one per distinct row length
        self.due = None  # None, "attend" or "requantize": what this step's attention must do
        self.pad = self.pad_host = None  # [B] padding slots at the left of each row (device, host)

    def set_padding(self, pad) -> None:
        self.pad, self.pad_host = pad, pad.cpu()

    def reserve(self, tokens: int) -> None:
        """The residual window never holds more than ``residual_length`` tokens (+ a fork's)."""
        super().reserve(min(tokens, self.residual_length))

    @property
    def quantized_tokens(self) -> int:
        return max(g.tokens for g in self.groups)

    def update(self, key_states, value_states, *args, **kwargs):
        if self.due is not None:
            raise RuntimeError("an HQQ cache layer was not attended through kvcache.attention.grouped_attention "
                               "(use_grouped_attention(model) before decoding)")
        if self.pad is None:
            self.set_padding(torch.zeros(key_states.shape[0], dtype=torch.long, device=key_states.device))
        self.cumulative_length += key_states.shape[-2]
        if self.groups is None:
            self.lazy_initialization(key_states, value_states)
            self.groups = self._quantize(key_states, value_states)
            return key_states, value_states
        self.due = "requantize" if self.width and self.width + 1 >= self.residual_length else "attend"
        return self.append(key_states, value_states)  # residual window + this step's tokens

    # ------------------------------------------------------------------ attention
    def _buffer(self, name: str, dtype, shape):
        numel = math.prod(shape)
        buf = self.scratch.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != self.device:
            buf = self.scratch[name] = torch.empty(numel, dtype=dtype, device=self.device)
        return buf[:numel].view(shape)

    def _chunks(self, part: Quantized):
        return part.pieces(HQQ_CHUNK_TOKENS.get(self.device.type, HQQ_CHUNK_TOKENS["cuda"]))

    def attend(self, query, mask, scaling=None):
        """Attention of ``query`` [B, Hq, q, D] over [quantized | residual | new] tokens with
        ``mask`` (None, bool or additive, [B, 1 or H, q, L]); -> [B, q, Hq, D]. Then requantizes
        if this step is due to."""
        b, hq, q, d = query.shape
        keys, values = self.keys, self.values
        h = keys.shape[1]
        g = hq // h
        scaling = d**-0.5 if scaling is None else scaling
        grouped = (query * scaling).reshape(b, h, g * q, d)  # query heads k*G .. k*G+G-1 read KV head k
        width = self.quantized_tokens
        total = width + keys.shape[-2]
        scores = torch.empty(b, h, g * q, total, dtype=torch.float32, device=query.device)
        scores[..., width:] = torch.matmul(grouped, keys.transpose(-1, -2))
        for group in self.groups:
            part, qg, lead = group.of(scores), group.of(grouped), width - group.tokens
            if lead:  # a shorter row's left slots are padding
                part[..., :lead] = float("-inf")
            qg = qg.reshape(-1, g * q, d)
            for t0, t1 in self._chunks(group.keys):
                chunk = self._dequantized(group.keys, t0, t1)
                dots = self._buffer("s", qg.dtype, (qg.shape[0], g * q, t1 - t0))  # no temporary per chunk
                torch.bmm(qg, chunk.view(-1, t1 - t0, d).transpose(1, 2), out=dots)
                part[..., lead + t0 : lead + t1] = dots.view(-1, h, g * q, t1 - t0)
            if group.first is None:
                scores[group.rows] = part
        view = scores.view(b, h, g, q, total)
        if mask is None and q > 1:  # causal among the new tokens
            k = torch.arange(total, device=query.device)
            mask = (k[None, :] <= k[None, total - q :].T)[None, None]
        if mask is not None:
            mask = mask[:, :, None]  # [B, 1 or H, 1, q, L] against [B, H, G, q, L]
            if mask.dtype == torch.bool:
                view.masked_fill_(~mask, float("-inf"))
            else:
                view.add_(mask)
        probs = torch.softmax(scores, dim=-1).to(values.dtype)
        out = torch.matmul(probs[..., width:], values)  # [B, H, G*q, D]
        for group in self.groups:
            acc, pg, lead = group.of(out), group.of(probs), width - group.tokens
            for t0, t1 in self._chunks(group.values):
                chunk = self._dequantized(group.values, t0, t1)
                mixed = self._buffer("s", values.dtype, acc.shape)
                torch.matmul(pg[..., lead + t0 : lead + t1], chunk, out=mixed)
                acc += mixed
            if group.first is None:
                out[group.rows] = acc
        if self.due == "requantize":
            self._requantize()
        self.due = None
        return out.view(b, h, g, q, d).reshape(b, hq, q, d).transpose(1, 2).contiguous()

    def _dequantized(self, part: Quantized, t0: int, t1: int):
        shape = (part.codes.shape[0], part.heads, t1 - t0, part.dim)
        return part.dequantize(0, shape[0], t0, t1, self._buffer("f", self.dtype, shape),
                               self._buffer("u8", torch.uint8, shape), self.nbits)

    # ------------------------------------------------------------------ quantizing
    def _row_chunk(self, heads: int, tokens: int, dim: int) -> int:
        """Rows quantized at once: at most settings.HQQ_REQUANT_ELEMENTS elements, one row at least."""
        limit = HQQ_REQUANT_ELEMENTS.get(self.device.type, HQQ_REQUANT_ELEMENTS["cuda"])
        return max(1, limit // (heads * tokens * dim))

    def _quantize_into(self, rows_x, r0: int, parts: list):
        """Quantize ``rows_x`` [n, H, T, D] (rows r0.. of a group) into ``parts``' arrays."""
        w_q, scale, zero = _hqq_codes(rows_x, self.nbits, self.q_group_size)
        n = rows_x.shape[0]
        codes = pack_channels(w_q.view(n, *rows_x.shape[1:]), self.nbits)
        parts[0][r0 : r0 + n] = codes
        parts[1][r0 : r0 + n] = scale.view(n, -1)
        parts[2][r0 : r0 + n] = zero.view(n, -1)

    def _arrays(self, n: int, heads: int, tokens: int, dim: int, device):
        columns = heads * tokens * dim // self.q_group_size
        return [torch.empty(n, heads, tokens, dim * self.nbits // 8, dtype=torch.uint8, device=device),
                torch.empty(n, columns, dtype=self.dtype, device=device),
                torch.empty(n, columns, dtype=self.dtype, device=device)]

    def _quantize(self, key_states, value_states) -> list[RowGroup]:
        """The prefill, each row on its real tokens (its padding cut off), by row length."""
        b, heads, length, dim = key_states.shape
        by_length: dict[int, list[int]] = {}
        for row, pad in enumerate(self.pad_host.tolist()):
            by_length.setdefault(length - pad, []).append(row)
        groups = []
        for tokens, rows in sorted(by_length.items()):
            index = torch.tensor(rows, device=key_states.device)
            kv = []
            for states in (key_states, value_states):
                arrays = self._arrays(len(rows), heads, tokens, dim, states.device)
                chunk = self._row_chunk(heads, tokens, dim)
                for c in range(0, len(rows), chunk):
                    self._quantize_into(states[index[c : c + chunk], :, length - tokens :], c, arrays)
                kv.append(Quantized(*arrays, tokens, heads, dim, self.q_group_size))
            groups.append(RowGroup(rows, key_states.device, tokens, *kv))
        return groups

    def _requantize(self) -> None:
        """transformers' requantization: quantize [dequantized | residual + new] of every row,
        by groups of rows, into new storage (a fork's parent keeps its own); empty the window."""
        residual = {"k": self.keys, "v": self.values}
        b, heads, width, dim = self.keys.shape
        groups = []
        for group in self.groups:
            tokens = group.tokens + width
            n = len(group.rows_host)
            chunk = self._row_chunk(heads, tokens, dim)
            kv = []
            for name, part in (("k", group.keys), ("v", group.values)):
                arrays = self._arrays(n, heads, tokens, dim, self.device)
                tail = group.of(residual[name])
                for r0 in range(0, n, chunk):
                    r1 = min(n, r0 + chunk)
                    full = torch.empty(r1 - r0, heads, tokens, dim, dtype=self.dtype, device=self.device)
                    for t0, t1 in self._chunks(part):
                        shape = (r1 - r0, heads, t1 - t0, dim)
                        part.dequantize(r0, r1, t0, t1, full[:, :, t0:t1], self._buffer("u8", torch.uint8, shape),
                                        self.nbits)
                    full[:, :, group.tokens :] = tail[r0:r1]
                    self._quantize_into(full, r0, arrays)
                    del full
                kv.append(Quantized(*arrays, tokens, heads, dim, self.q_group_size))
            groups.append(RowGroup(group.rows_host, self.device, tokens, *kv))
        self.groups = groups
        self.width = 0  # the residual window is empty
        if self.forked:  # its parent's residual stays in the shared slots: new ones from here
            self._kbuf = self._vbuf = None
            self.forked = False

    def quantized_bytes(self) -> int:
        return sum(g.keys.nbytes() + g.values.nbytes() for g in self.groups or [])

    def get_seq_length(self) -> int:
        return self.cumulative_length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        if self.groups is None:
            return query_length, 0
        return self.quantized_tokens + self.width + query_length, 0


class RowQuantizedCache(Cache):
    def __init__(self, num_layers: int, nbits: int, q_group_size: int, residual_length: int):
        scratch: dict = {}
        super().__init__(layers=[RowHQQLayer(nbits, q_group_size, residual_length, scratch)
                                 for _ in range(num_layers)])

    def set_padding(self, pad) -> None:
        for layer in self.layers:
            layer.set_padding(pad)
