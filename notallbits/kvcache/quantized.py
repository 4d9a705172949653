"""HQQ KV quantization per row: transformers' QuantizedCache (HQQ backend, as in the paper),
with each row quantized on its own real tokens.

transformers quantizes the whole [B, H, L, D] tensor at once: with its default axis 0 a
quantization group takes elements from every row, and HQQ's optimizer stops on the error of
the whole tensor, so a sample's cache depended on the other samples in its batch and, once
rows of different questions are left-padded together, on the padding. Here each row's real
tokens (its padding cut off) are quantized as a batch of one, as transformers does for a
single sequence (``hqq_rows`` runs hqq's algorithm for many rows at once, each stopping on
its own error); rows of the same length are quantized and dequantized together. Storage, the
residual window and when it is requantized are transformers' (``QuantizedLayer.update``).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, HQQQuantizedLayer


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


class RowHQQLayer(HQQQuantizedLayer):
    def __init__(self, nbits: int, q_group_size: int, residual_length: int):
        super().__init__(nbits=nbits, axis_key=0, axis_value=0, q_group_size=q_group_size,
                         residual_length=residual_length)
        self.pad = self.pad_host = None  # [B] padding slots at the left of each row (device, host)

    def set_padding(self, pad) -> None:
        self.pad, self.pad_host = pad, pad.cpu()

    def update(self, key_states, value_states, *args, **kwargs):
        if self.pad is None:
            self.set_padding(torch.zeros(key_states.shape[0], dtype=torch.long, device=key_states.device))
        return super().update(key_states, value_states, *args, **kwargs)

    # QuantizedLayer calls these on the whole batch; a "quantized tensor" here is a list of
    # groups (rows, tokens, packed data, meta), one per distinct row length
    def _quantize(self, tensor, axis):
        length = tensor.shape[-2]
        by_length: dict[int, list[int]] = {}
        for row, pad in enumerate(self.pad_host.tolist()):
            by_length.setdefault(length - pad, []).append(row)
        groups = []
        for tokens, rows in sorted(by_length.items()):
            index = torch.tensor(rows, device=tensor.device)
            data, meta = hqq_rows(tensor[index, :, length - tokens :], self.nbits, self.q_group_size, self.dtype)
            groups.append((index, tokens, data, meta))
        return groups

    def _dequantize(self, groups):
        b = self.pad.shape[0]
        _, h, _, d = groups[0][3]["shape"]  # one row's [1, H, tokens, D]
        width = max(tokens for _, tokens, _, _ in groups)
        out = torch.zeros(b, h, width, d, dtype=self.dtype, device=self.device)
        for rows, tokens, data, meta in groups:
            if meta["packing"]:
                w = self.quantizer.unpack[meta["packing"]](data, dtype=meta["compute_dtype"])
            else:
                w = data.to(meta["compute_dtype"])
            w = (w - meta["zero"]) * meta["scale"]  # [group, rows * columns]: each row's own groups
            w = w.reshape(w.shape[0], len(rows), -1).transpose(0, 1).reshape(len(rows), h, tokens, d)
            out[rows, :, width - tokens :] = w
        return out

    def quantized_bytes(self) -> int:
        return sum(data.nbytes + meta["scale"].nbytes + meta["zero"].nbytes
                   for q in (getattr(self, "_quantized_keys", None), getattr(self, "_quantized_values", None))
                   if q is not None
                   for _, _, data, meta in q)


class RowQuantizedCache(Cache):
    def __init__(self, num_layers: int, nbits: int, q_group_size: int, residual_length: int):
        super().__init__(layers=[RowHQQLayer(nbits, q_group_size, residual_length) for _ in range(num_layers)])

    def set_padding(self, pad) -> None:
        for layer in self.layers:
            layer.set_padding(pad)
