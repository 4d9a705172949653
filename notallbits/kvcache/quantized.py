"""HQQ KV quantization per row: transformers' QuantizedCache (HQQ backend, as in the paper),
with each row quantized on its own real tokens.

transformers quantizes the whole [B, H, L, D] tensor at once: with its default axis 0 a
quantization group takes elements from every row, and HQQ's optimizer stops on the error of
the whole tensor, so a sample's cache depended on the other samples in its batch and, once
rows of different questions are left-padded together, on the padding. Here each row's real
tokens (its padding cut off) are quantized as a batch of one, as transformers does for a
single sequence (``hqq_rows`` runs hqq's algorithm for many rows at once, each stopping on
its own error); rows of the same length are quantized and dequantized together. Storage, the
residual window and when it is requantized are transformers' (``QuantizedLayer.update``,
followed step for step by ``RowHQQLayer.update``).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache

from notallbits.kvcache.slots import SlotLayer


def hqq_rows(x, nbits: int, group_size: int, compute_dtype):
    """HQQ (hqq.core.quantize.Quantizer.quantize with transformers' settings: axis 0, channel
    wise, optimize, bit-packed) of each row of ``x`` [R, H, T, D] as if alone, in one pass:
    min/max, the legacy proximal optimiser (20 iterations, lp 0.7, beta 10) stopping per row
    when its error stops falling, exactly as hqq stops for a one-row tensor. Returns the packed
    data and meta of the rows side by side along the group columns: [group / pack, R * M], scale
    and zero [1, R * M] in ``compute_dtype`` (what hqq + transformers store for one row, with
    the rows' columns concatenated)."""
    from hqq.core.optimize import shrink_lp_op
    from hqq.core.quantize import Quantizer

    rows = x.shape[0]
    w = x.float().reshape(rows, group_size, -1)  # per row: hqq's W.reshape([group_size, -1])
    lo, hi = w.min(dim=1, keepdim=True)[0], w.max(dim=1, keepdim=True)[0]
    top = round(2**nbits - 1)
    denom = hi - lo
    scale = (top / denom)
    scale = torch.where(denom.abs() <= 1e-4, torch.full_like(scale, 1.0), scale).clamp(max=2e4)
    zero = -lo * scale
    # optimize_weights_proximal_legacy, per row
    w_f = w.to(torch.float16 if w.device.type == "cuda" else torch.float32)
    scale, zero = scale.to(w_f.dtype), zero.to(w_f.dtype)
    best = torch.full((rows,), float("inf"), device=w.device)
    active = torch.ones(rows, dtype=torch.bool, device=w.device)
    for _ in range(20):
        w_q = torch.round(w_f * scale + zero).clamp_(0, top)
        w_r = (w_q - zero) / scale
        w_e = shrink_lp_op(w_f - w_r, 1e1, 0.7)
        new_zero = torch.mean(w_q - (w_f - w_e) * scale, dim=1, keepdim=True)
        zero = torch.where(active[:, None, None], new_zero, zero)  # a stopped row keeps its zero
        error = torch.abs(w_f - w_r).flatten(1).mean(1).float()
        better = active & (error < best)
        best = torch.where(better, error, best)
        active = better
        if not bool(active.any()):
            break
    w_q = torch.round(w * scale + zero).clamp_(0, top)
    columns = lambda t: t.transpose(0, 1).reshape(t.shape[1], -1)  # noqa: E731  [R, g, M] -> [g, R * M]
    packing = Quantizer.bit_to_packing[nbits]
    data = Quantizer.pack[packing](columns(w_q))
    meta = {"nbits": nbits, "group_size": group_size, "shape": (1, *x.shape[1:]), "axis": 0, "packing": packing,
            "scale": columns(1.0 / scale).to(compute_dtype), "zero": columns(zero).to(compute_dtype),
            "compute_dtype": compute_dtype}
    return data, meta


class RowHQQLayer(SlotLayer):
    """transformers' QuantizedLayer.update, step for step (first call: quantize the prompt;
    then attend to dequantized + residual + new tokens; when the residual window is full,
    requantize all of it), with: the bf16 residual window in slots (kvcache.slots: written in
    place, a fork writes only its tail); the dequantized tokens written into one scratch
    buffer that the cache's layers share (they attend one after another), not a new tensor
    per layer per step; rows quantized in chunks so the float32 work memory of requantizing
    stays within the layer's K + V. A fork that requantizes keeps the result to itself."""

    def __init__(self, nbits: int, q_group_size: int, residual_length: int, scratch: dict):
        super().__init__()
        self.nbits, self.q_group_size, self.residual_length = nbits, q_group_size, residual_length
        self.scratch = scratch  # {"k": tensor, "v": tensor}, shared by the cache's layers
        self.cumulative_length = 0
        self._quantized_keys = self._quantized_values = None
        self.pad = self.pad_host = None  # [B] padding slots at the left of each row (device, host)

    def set_padding(self, pad) -> None:
        self.pad, self.pad_host = pad, pad.cpu()

    def reserve(self, tokens: int) -> None:
        """The residual window never holds more than ``residual_length`` tokens (+ a fork's)."""
        super().reserve(min(tokens, self.residual_length))

    def update(self, key_states, value_states, *args, **kwargs):
        if self.pad is None:
            self.set_padding(torch.zeros(key_states.shape[0], dtype=torch.long, device=key_states.device))
        self.cumulative_length += key_states.shape[-2]
        if self._quantized_keys is None:
            self.lazy_initialization(key_states, value_states)
            self._quantized_keys = self._quantize(key_states)
            self._quantized_values = self._quantize(value_states)
            return key_states, value_states
        keys = self._gather("k", self._quantized_keys, self.keys, key_states)
        values = self._gather("v", self._quantized_values, self.values, value_states)
        if self.width and self.width + 1 >= self.residual_length:
            self._quantized_keys = self._quantize(keys)
            self._quantized_values = self._quantize(values)
            self.width = 0  # the residual window is empty
            if self.forked:  # its parent's residual stays in the shared slots: new ones from here
                self._kbuf = self._vbuf = None
                self.forked = False
        else:
            self.append(key_states, value_states)
        return keys, values

    def _gather(self, name, groups, residual, new):
        """[dequantized | residual | new] for attention, in the shared scratch buffer."""
        quantized = max(tokens for _, tokens, _, _ in groups)
        total = quantized + (residual.shape[-2] if residual is not None else 0) + new.shape[-2]
        b, h, _, d = new.shape
        buf = self.scratch.get(name)
        if buf is None or buf.shape[0] != b or buf.shape[-2] < total or buf.dtype != new.dtype:
            buf = self.scratch[name] = new.new_empty(b, h, total + self.residual_length, d)
        out = buf[:, :, :total]
        self._dequantize(groups, out[:, :, :quantized])
        at = quantized
        if residual is not None and residual.shape[-2]:
            out[:, :, at : at + residual.shape[-2]] = residual
            at += residual.shape[-2]
        out[:, :, at:] = new
        return out

    # a "quantized tensor" here is a list of groups (rows, tokens, packed data, meta), one per
    # distinct row length
    def _quantize(self, tensor):
        length = tensor.shape[-2]
        by_length: dict[int, list[int]] = {}
        for row, pad in enumerate(self.pad_host.tolist()):
            by_length.setdefault(length - pad, []).append(row)
        # hqq_rows holds ~6 float32 copies of its rows: chunks of rows within 2x this tensor's bytes
        row_bytes = tensor[0].numel() * 4 * 6
        chunk = max(1, 2 * tensor.nbytes // row_bytes)
        groups = []
        for tokens, rows in sorted(by_length.items()):
            for c in range(0, len(rows), chunk):
                part = rows[c : c + chunk]
                index = torch.tensor(part, device=tensor.device)
                data, meta = hqq_rows(tensor[index, :, length - tokens :], self.nbits, self.q_group_size, self.dtype)
                groups.append((index, tokens, data, meta))
        return groups

    def _dequantize(self, groups, out):
        from hqq.core.quantize import Quantizer

        b, h, width, d = out.shape
        for rows, tokens, data, meta in groups:
            n = len(rows)
            q = Quantizer.unpack[meta["packing"]](data, dtype=torch.uint8) if meta["packing"] else data
            # hqq's (W_q - zero) * scale, [group, rows * columns] read as [rows, group, columns]:
            # each row's values come out contiguous, in two passes (no copy of the whole group)
            per_row = lambda t: t.view(t.shape[0], n, -1).transpose(0, 1)  # noqa: E731
            w = torch.sub(per_row(q), per_row(meta["zero"]).to(meta["compute_dtype"]),
                          out=torch.empty(n, q.shape[0], q.shape[1] // n, dtype=meta["compute_dtype"],
                                          device=q.device))
            w = w.mul_(per_row(meta["scale"])).view(n, h, tokens, d)
            first = int(rows[0])
            if int(rows[-1]) - first + 1 == n:  # consecutive rows (the usual case): a slice
                target = out[first : first + n]
                target[:, :, width - tokens :] = w
                if tokens < width:  # a shorter row's left slots are padding: zeros, never stale values
                    target[:, :, : width - tokens] = 0
                continue
            out[rows, :, width - tokens :] = w
            if tokens < width:
                out[rows, :, : width - tokens] = 0
        return out

    def quantized_bytes(self) -> int:
        return sum(data.nbytes + meta["scale"].nbytes + meta["zero"].nbytes
                   for q in (self._quantized_keys, self._quantized_values) if q is not None
                   for _, _, data, meta in q)

    def get_seq_length(self) -> int:
        return self.cumulative_length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        if self._quantized_keys is None:
            return query_length, 0
        quantized = max(tokens for _, tokens, _, _ in self._quantized_keys)
        return quantized + self.width + query_length, 0


class RowQuantizedCache(Cache):
    def __init__(self, num_layers: int, nbits: int, q_group_size: int, residual_length: int):
        scratch: dict = {}
        super().__init__(layers=[RowHQQLayer(nbits, q_group_size, residual_length, scratch)
                                 for _ in range(num_layers)])

    def set_padding(self, pad) -> None:
        for layer in self.layers:
            layer.set_padding(pad)
