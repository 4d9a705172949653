"""Model families: what the code needs to know about a decoder architecture, in one table.

A family is keyed by the ``model_type`` of a checkpoint's config.json. Everything else comes
from the checkpoint itself (config.json: sizes; tokenizer: thinking markers and end ids), so a
new reasoning model of a known family runs by config alone, and a new family is one entry here
(plus, for offline planning without its config.json, its sizes in ``archs/*.json``).

Per family:
  * ``qk_norm``: RMSNorm on queries and keys per head (Qwen3) — weights in the checkpoint, and
    queries are normalised before RoPE, which decode-time eviction must reproduce;
  * ``qkv_bias``: biases on the q/k/v projections (Qwen2; Llama when ``attention_bias``) — bf16
    tensors that GPTQ keeps unquantized;
  * ``config_class``: the transformers config class, for building tiny test checkpoints.
All three families share the attention layout the query capture relies on: ``q_proj`` (then
``q_norm`` if any) and RoPE from the decoder's ``position_embeddings`` (cos, sin).
"""

from __future__ import annotations

from dataclasses import dataclass

from notallbits import UserError


@dataclass(frozen=True)
class Family:
    model_type: str
    config_class: str
    qk_norm: bool
    qkv_bias: bool | str  # True/False, or the config key that says it

    def has_qkv_bias(self, cfg: dict) -> bool:
        return bool(cfg.get(self.qkv_bias, False)) if isinstance(self.qkv_bias, str) else self.qkv_bias


FAMILIES: dict[str, Family] = {
    # Qwen3 (the paper's models), OpenReasoning-Nemotron is Qwen2.5-based (qwen2)
    "qwen3": Family("qwen3", "Qwen3Config", qk_norm=True, qkv_bias="attention_bias"),
    # Qwen2 / Qwen2.5: DeepSeek-R1-Distill-Qwen, OpenReasoning-Nemotron, QwQ
    "qwen2": Family("qwen2", "Qwen2Config", qk_norm=False, qkv_bias=True),
    # Llama 3: DeepSeek-R1-Distill-Llama
    "llama": Family("llama", "LlamaConfig", qk_norm=False, qkv_bias="attention_bias"),
}


def family_of(cfg: dict, where: str = "config.json") -> Family:
    """The family of a checkpoint's config.json (``text_config`` of a multimodal one)."""
    model_type = cfg.get("model_type")
    if model_type not in FAMILIES:
        raise UserError(f"{where}: model_type {model_type!r} is not a known family "
                        f"(known: {', '.join(FAMILIES)}; add one in notallbits/families.py)")
    return FAMILIES[model_type]
