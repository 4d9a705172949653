"""Memory accounting (minimal: measured weight bytes and full-cache KV bytes)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from notallbits import UserError

DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "I64": 8, "I8": 1, "U8": 1, "F64": 8, "I16": 2, "BOOL": 1}


def checkpoint_bytes(folder: str | Path) -> int:
    """Sum of tensor bytes over the folder's safetensors files, from their headers alone."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder}: no .safetensors files")
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name != "__metadata__":
                total += meta["data_offsets"][1] - meta["data_offsets"][0]
    return total


@dataclass(frozen=True)
class Arch:
    layers: int
    kv_heads: int
    head_dim: int

    @classmethod
    def from_hf_config(cls, cfg: dict) -> "Arch":
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        return cls(cfg["num_hidden_layers"], cfg["num_key_value_heads"], head_dim)


def kv_bytes_per_token(arch: Arch, dtype_bytes: int = 2) -> int:
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * dtype_bytes


def kv_bytes(arch: Arch, settings: dict, budget_tokens: int, samples: int) -> int:
    if settings.get("method", "full") != "full":
        raise UserError(f"no memory model yet for KV method {settings.get('method')!r}")
    return samples * budget_tokens * kv_bytes_per_token(arch)
