"""HQQ KV quantization per row: transformers' QuantizedCache (HQQ backend, as in the paper),
with each row quantized on its own real tokens.

transformers quantizes the whole [B, H, L, D] tensor at once: with its default axis 0 a
quantization group takes elements from every row, and HQQ's optimizer stops on the error of
the whole tensor, so a sample's cache depended on the other samples in its batch and, once
rows of different questions are left-padded together, on the padding. Here each row's real
tokens (its padding cut off) are quantized as a batch of one, exactly as transformers does
for a single sequence; rows of the same length are dequantized together. Storage, the
residual window and when it is requantized are transformers' (``QuantizedLayer.update``).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, HQQQuantizedLayer


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
            parts = [super(RowHQQLayer, self)._quantize(tensor[r : r + 1, :, length - tokens :].contiguous(), axis)
                     for r in rows]
            meta = dict(parts[0][1])
            meta["scale"] = torch.cat([m["scale"] for _, m in parts], dim=1)
            meta["zero"] = torch.cat([m["zero"] for _, m in parts], dim=1)
            data = torch.cat([q for q, _ in parts], dim=1)  # packing runs along dim 0: columns are free
            groups.append((torch.tensor(rows, device=tensor.device), tokens, data, meta))
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
