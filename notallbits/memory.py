"""Memory model of the paper (Appendix B), in bytes; GiB = 2**30 (the paper's "GB").

    M = M_weights(N, P_W) + M_kv(method, T, G)

Weights, the layouts of a quantized checkpoint (which format has which: ``weights.py``):
  * ``gptq`` (the default everywhere): what a GPTQ checkpoint really holds and what the GPU
    loads — qweight and qzeros packed P_W bits per value, fp16 scales per group of g = 128
    input channels, one int32 ``g_idx`` per input channel of every quantized linear, and the
    unquantized tensors (embeddings, lm_head unless tied, norms) in bf16. The summary uses
    *measured* checkpoint bytes, which equal this layout exactly (tests/test_memory.py).
  * ``appendix_b``: Appendix B's formula as written, N_q·P_W/8 + (N_q/g)·(P_S + P_Z)/8 +
    N_unq·16/8, i.e. the same without ``g_idx`` (4·N_in bytes per linear: 0.1–0.3% of a
    quantized model). Kept to show the difference.
  * ``awq``: AutoAWQ's GEMM layout (GPTQModel's AWQ, Qwen's ``-AWQ``): qweight and qzeros
    packed P_W bits per value, 16-bit scales per group, no ``g_idx`` — Appendix B's formula
    exactly, wherever g divides every fan-in.
  * ``fp8_block``: one E4M3 byte per weight and one float32 ``weight_scale_inv`` per
    g x g block of every linear (Qwen's ``-FP8``: g = 128); embeddings and norms bf16.
16-bit weights are the tensors the published checkpoint stores: a model whose lm_head is tied to
its embedding may still store it as a tensor of its own (Qwen3-0.6B and 1.7B do, Qwen3-4B does
not; ``checkpoint_stores_lm_head`` in archs/qwen3.json, or read from a folder's safetensors
headers). Table 1 (``table1``) uses ``gptq`` for 4/8 bits and these 16-bit bytes.
KV cache per token: 2 (K and V) · layers · KV heads · head_dim · bytes. Full cache holds T
tokens per sample; StreamingLLM min(T, budget); R-KV min(T, budget + buffer), and a batch of G
samples once the float32 scratch of one layer's scoring (at most one layer's K + V of the G
samples, at most 1 GiB on a GPU); HQQ stores P_kv-bit values with a 16-bit scale and zero per group of
g_kv, plus a bf16 residual window of recent tokens. The KV method table
(``kvcache/settings.py``) owns these rules and the methods' defaults.

No torch here: ``notallbits memory`` must answer instantly, without weights.
"""

from __future__ import annotations

import argparse
import json
import struct
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from math import ceil
from pathlib import Path

from notallbits import UserError
from notallbits.kvcache.settings import (HQQ_CHUNK_TOKENS, HQQ_OPT_CHUNK_ELEMENTS, HQQ_REQUANT_ELEMENTS, METHODS,
                                        normalize, rkv_scratch_bytes, streaming_slack, tokens_held)

GIB = 2**30
DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
SCALE_BITS = 16  # P_S
NATIVE_BYTES = 2  # bf16 weights and KV


def checkpoint_bytes(folder: str | Path) -> int:
    """Sum of tensor bytes over the folder's safetensors files, read from their headers."""
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
    """The facts of a decoder that memory depends on (families: notallbits/families.py)."""

    layers: int
    kv_heads: int
    head_dim: int
    hidden: int = 0
    intermediate: int = 0
    heads: int = 0
    vocab: int = 0
    tied: bool = True
    qk_norm: bool = True  # per-head RMSNorm weights on q and k (Qwen3)
    qkv_bias: bool = False  # biases on q/k/v (Qwen2), kept in 16 bits by GPTQ
    stores_tied_lm_head: bool = False  # a tied model whose bf16 checkpoint still holds lm_head.weight

    @classmethod
    def from_hf_config(cls, cfg: dict) -> "Arch":
        from notallbits.families import FAMILIES, Family

        # shipped Qwen3 facts carry no model_type; a decoder of no known family (the memory model
        # only needs its KV facts, the summary measures its weights) has no q/k norm and the
        # biases its config states
        family = FAMILIES.get(cfg.get("model_type", "qwen3")) or Family("other", "", False, "attention_bias")
        heads = cfg["num_attention_heads"]
        return cls(layers=cfg["num_hidden_layers"], kv_heads=cfg.get("num_key_value_heads", heads),
                   head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, hidden=cfg["hidden_size"],
                   intermediate=cfg["intermediate_size"], heads=heads, vocab=cfg["vocab_size"],
                   tied=bool(cfg.get("tie_word_embeddings", False)), qk_norm=family.qk_norm,
                   qkv_bias=family.has_qkv_bias(cfg),
                   stores_tied_lm_head=bool(cfg.get("tie_word_embeddings", False)
                                            and cfg.get("checkpoint_stores_lm_head", False)))

    @classmethod
    def named(cls, name: str) -> "Arch":
        """A shipped architecture ('Qwen3-8B' or 'Qwen/Qwen3-8B') or a folder with config.json."""
        cfg = config_named(name)
        path = Path(name)
        if (path / "config.json").exists() and "checkpoint_stores_lm_head" not in cfg:
            cfg = {**cfg, "checkpoint_stores_lm_head": stores_lm_head(path)}
        return cls.from_hf_config(cfg)

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each quantized linear of one decoder layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def quantized_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes())

    @property
    def unquantized_params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        norms = self.layers * (2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)) + self.hidden
        biases = self.layers * (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        return embeddings + norms + biases

    @property
    def params(self) -> int:
        return self.quantized_params + self.unquantized_params

    @property
    def stored_tied_head_params(self) -> int:
        """The lm_head a tied model's bf16 checkpoint stores beside its embedding (else 0)."""
        return self.vocab * self.hidden if self.tied and self.stores_tied_lm_head else 0


def stores_lm_head(folder: Path) -> bool:
    """Whether a checkpoint folder's safetensors headers list ``lm_head.weight``."""
    for f in sorted(Path(folder).glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if "lm_head.weight" in json.loads(fh.read(n)):
                return True
    return False


@lru_cache(maxsize=None)
def known_archs(group: str | None = None) -> dict:
    """Shipped architecture facts (archs/<group>.json: the paper's Qwen3 models in ``qwen3``, other
    families' public configs beside it), so planning works offline; read once (the DAG asks for
    every job). ``group=None``: all of them."""
    out = {}
    for entry in sorted(resources.files("notallbits").joinpath("archs").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json") and group in (None, entry.name.removesuffix(".json")):
            out.update({k: v for k, v in json.loads(entry.read_text()).items() if not k.startswith("_")})
    return out


LAYOUTS = ("gptq", "appendix_b", "awq", "fp8_block")
FP8_SCALE_BYTES = 4  # float32 weight_scale_inv per block


def weight_bytes(arch: Arch, bits: int, layout: str = "gptq", group_size: int = 128) -> int:
    """Bytes of the weights at ``bits`` (16 = bf16) in ``layout`` (see the module docstring);
    ``group_size`` is the quantization group (gptq, awq) or the square block edge (fp8_block)."""
    if bits not in (4, 8, 16):
        raise UserError(f"bits must be 4, 8 or 16, got {bits}")
    if layout not in LAYOUTS:
        raise UserError(f"unknown weight layout {layout!r} ({' or '.join(LAYOUTS)})")
    if bits == 16:  # the published checkpoint's tensors (a stored tied lm_head included)
        return (arch.params + arch.stored_tied_head_params) * NATIVE_BYTES
    if layout == "fp8_block" and bits != 8:
        raise UserError(f"layout fp8_block holds 8-bit weights, got {bits}")
    unq = arch.unquantized_params * NATIVE_BYTES
    if layout == "appendix_b":
        nq = arch.quantized_params
        return nq * bits // 8 + (nq // group_size) * (SCALE_BITS + bits) // 8 + unq
    total = 0
    for fan_in, fan_out in arch.linear_shapes():
        if layout == "fp8_block":  # E4M3 weight + one float32 scale per block
            total += fan_in * fan_out + ceil(fan_out / group_size) * ceil(fan_in / group_size) * FP8_SCALE_BYTES
            continue
        groups = ceil(fan_in / group_size)
        total += (fan_in * fan_out * bits // 8  # qweight
                  + groups * fan_out * bits // 8  # qzeros, packed like the weights
                  + groups * fan_out * 2)  # 16-bit scales
        if layout == "gptq":
            total += fan_in * 4  # int32 g_idx (AWQ has none)
    return arch.layers * total + unq


ENSEMBLE_HEAD_HIDDEN = 128  # ActivePRM nets.py EnsembleModel: each head is h -> 128 -> 128 -> 1
ENSEMBLE_HEAD_BYTES = 4  # float32, as the authors' EnsembleFC creates its weights


def config_named(name: str) -> dict:
    """config.json of a folder, or the shipped facts of a known model (``Arch.named``'s lookup)."""
    path = Path(name)
    if (path / "config.json").exists():
        cfg = json.loads((path / "config.json").read_text())
        return cfg.get("text_config", cfg)
    table = known_archs()
    key = name.split("/")[-1]
    if key not in table:
        raise UserError(f"unknown model {name!r} (known: {', '.join(table)}; or a folder with config.json)")
    return table[key]


def prm_weight_bytes(name: str) -> int:
    """Tensor bytes of a verifier checkpoint (a process reward model; families in
    ``notallbits/verify/families.py``), from its config: the Qwen2 decoder without an lm_head in
    bf16, plus its family's head:

    * ``Qwen2ForProcessRewardModel``: Linear(h, h) -> ReLU -> Linear(h, labels), biases, bf16;
    * ``Qwen2ForEnsemblePRM``: ``num_ensemble`` heads h -> 128 -> 128 -> 1 (weights and biases)
      in float32, stored twice: ``score.model`` and the frozen ``score.reg_model`` copy.

    The summary uses the checkpoint's measured bytes (``checkpoint_bytes``), which equal this."""
    cfg = config_named(name)
    arch = Arch.from_hf_config(cfg)
    h = arch.hidden
    body = (arch.params - (0 if arch.tied else arch.vocab * h)) * NATIVE_BYTES
    if "Qwen2ForEnsemblePRM" in (cfg.get("architectures") or []):
        m = ENSEMBLE_HEAD_HIDDEN
        per_head = h * m + m + m * m + m + m + 1
        return body + 2 * cfg["num_ensemble"] * per_head * ENSEMBLE_HEAD_BYTES
    labels = cfg.get("num_labels", 2)
    return body + (h * h + h + h * labels + labels) * NATIVE_BYTES


def format_weight_bytes(arch: Arch, fmt, quantization: dict | None = None) -> int:
    """Bytes of ``fmt`` (a ``weights.WeightFormat`` or a sweep's bits entry) with the config's
    ``quantization`` section (group size, FP8 block edge; the schema's defaults if absent)."""
    from notallbits import weights

    fmt = fmt if isinstance(fmt, weights.WeightFormat) else weights.get(fmt)
    q = quantization or {}
    edge = q.get("fp8_block", 128) if fmt.layout == "fp8_block" else q.get("group_size", 128)
    return weight_bytes(arch, fmt.bits, "gptq" if fmt.layout == "native" else fmt.layout, edge)


def kv_bytes_per_token(arch: Arch, dtype_bytes: int = NATIVE_BYTES) -> int:
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * dtype_bytes


def kv_tokens_held(settings: dict, budget_tokens: int) -> int:
    """Tokens one sample holds at its peak after a trace of ``budget_tokens`` (the KV method
    table in ``kvcache/settings.py`` says how): eviction counts the peak, which is what must
    fit — StreamingLLM its budget, R-KV budget + buffer (it compresses every ``buffer``
    positions, as the authors' decoding loop does)."""
    return tokens_held(settings, budget_tokens)


def kv_bytes(arch: Arch, settings: dict, budget_tokens: int, samples: int, residual: bool = True) -> int:
    """Peak KV bytes of ``samples`` parallel samples (G) at token budget T (prompt not counted),
    with the scratch memory a method needs while compressing them together (R-KV: its scoring of
    one layer of the G samples, settings.rkv_scratch_bytes on a GPU)."""
    if budget_tokens <= 0:
        raise UserError(f"budget must be positive, got {budget_tokens}")
    if samples <= 0:
        raise UserError(f"samples must be positive, got {samples}")
    s = normalize(settings)
    values_per_token = kv_bytes_per_token(arch) // NATIVE_BYTES
    scratch = rkv_scratch_bytes(s, budget_tokens, arch.kv_heads, arch.head_dim, samples) if s["method"] == "rkv" else 0
    return samples * METHODS[s["method"]].sample_bytes(s, budget_tokens, values_per_token, residual) \
        + scratch


# ---------------------------------------------------------------- rows of a KV job (transformers)
# The transformers backend decodes a batch of rows together; per row at its peak it holds:
# the cache at its peak (StreamingLLM's evicted slots until they are dropped,
# settings.streaming_slack), the forced answer's tail on a fork (kvcache.fork: the answer's
# tokens only; evicting layers keep room for it from the start), transient copies (StreamingLLM
# and R-KV compact in place, one KV head's K or V at a time; HQQ: a layer's requantized K + V
# while its old ones are still held; its requantizing work is a few rows at a time whatever the
# batch, and R-KV scores a few rows' heads at a time from the slots into scratch bounded per
# batch: both in kv_batch_bytes), HQQ's requantized copy in a fork whose residual window fills during the
# answer, HQQ's attention scratch (one chunk of dequantized keys or values with its unpacked
# codes, and the softmax's fp32 and compute-dtype copies of the scores; no dequantized layer),
# attention scores of one step (query heads x cache tokens, fp32), one step's activations, the
# prompt's prefill activations and the sampled logits in fp32 (a few copies of the vocabulary).
KV_MEMORY_MARGIN = 0.9  # batches are sized to this fraction of the device's memory
KV_OVERHEAD_GIB = 1.0  # CUDA context, allocator slack, the model's buffers


def kv_row_bytes(arch: Arch, settings: dict, trace_tokens: int, answer_tokens: int, prompt_tokens: int) -> dict:
    """Peak bytes of one row of a transformers-backend batch, by part (see the comment above);
    ``trace_tokens``: prompt + thinking, ``answer_tokens``: answer prefix + forced answer."""
    s = normalize(settings)
    per_token = kv_bytes_per_token(arch)
    method = METHODS[s["method"]]
    cache = method.sample_bytes(s, trace_tokens, per_token // NATIVE_BYTES)  # no scratch: a batch's
    held = method.tokens_held(s, trace_tokens)
    quantized = kv_bytes(arch, s, trace_tokens, 1, residual=False) if s["method"] == "hqq" else 0  # no window
    # StreamingLLM's slots: its budget, the evicted tokens it masks until it compacts, the step's own
    slots = min(trace_tokens, s["budget"] + streaming_slack(s["budget"]) + 1) if s["method"] == "streamingllm" else held
    parts = {
        "cache": cache,
        "fork_tail": answer_tokens * per_token,
        "streaming_slack": slots * per_token - cache if s["method"] == "streamingllm" else 0,
        "hqq_requantized_layer": quantized // arch.layers,
        # compacting in place moves one KV head's K or V at a time (R-KV's comes after its scoring
        # scratch, a batch's, is freed)
        "compaction_head": slots * per_token // arch.layers // (2 * arch.kv_heads)
        if s["method"] == "streamingllm" else 0,
        "hqq_fork_requantized": quantized,
        "hqq_attention_scratch": (min(held, HQQ_CHUNK_TOKENS["cuda"]) * arch.kv_heads * arch.head_dim * (NATIVE_BYTES + 1)
                                  + (4 + NATIVE_BYTES) * max(arch.heads, 1) * (held + answer_tokens))
        if s["method"] == "hqq" else 0,
        "attention_scores": 4 * max(arch.heads, 1) * (held + answer_tokens),
        "activations": NATIVE_BYTES * prompt_tokens * (3 * arch.intermediate + 6 * arch.hidden),
        "logits": 16 * arch.vocab,
    }
    parts["total"] = sum(parts.values())
    return parts


def kv_batch_bytes(arch: Arch, settings: dict, trace_tokens: int, device_type: str = "cuda",
                   dtype_bytes: int = NATIVE_BYTES, rows: int | None = None) -> int:
    """Bytes a transformers-backend batch of ``rows`` rows (None: however many) holds once:
    R-KV's scoring scratch (settings.rkv_scratch_bytes: as many (row, KV head) pairs as
    RKV_SCRATCH_BYTES holds, and no more than the rows' own K + V of a layer, one pair at least,
    at the compressing step's budget + buffer tokens) or HQQ's requantizing work
    (kvcache.quantized), which takes a layer's keys or values of as many rows as hold
    settings.HQQ_REQUANT_ELEMENTS elements (one row at least): those rows dequantized (the
    compute dtype, ``dtype_bytes``), their codes and packed codes, and hqq's optimiser's work in
    its dtype: on a GPU (float16) the rows' errors and five window buffers of all those rows,
    and a bf16 input converted once; on a CPU (float32) windows of HQQ_OPT_CHUNK_ELEMENTS: five
    beside the rows' errors, or, for a row wider than a window (quantized alone), six beside
    that row's errors and a compact copy of its columns still moving (at most the row); 0 for
    the other methods."""
    s = normalize(settings)
    if s["method"] == "rkv":
        return rkv_scratch_bytes(s, trace_tokens, arch.kv_heads, arch.head_dim, rows, device_type, dtype_bytes)
    if s["method"] != "hqq":
        return 0
    row = trace_tokens * arch.kv_heads * arch.head_dim
    elements = max(1, HQQ_REQUANT_ELEMENTS[device_type] // row) * row
    stored = elements * (dtype_bytes + 1 + s["nbits"] / 8)  # dequantized rows, codes, packed codes
    if device_type == "cuda":  # float16; a window is all the rows; bf16 -> float16 (a float16 model: none)
        return int(stored + elements * 2 * (1 + 5 + 1))
    window = min(elements, HQQ_OPT_CHUNK_ELEMENTS[device_type])
    if row > window:  # wide rows go alone: its errors, its moving columns' copy, six windows
        return int(stored + 4 * (2 * row + 6 * window))
    return int(stored + 4 * (elements + 5 * window))


def kv_rows_per_batch(device_bytes: int, weight_bytes: int, row_bytes: int, rows_wanted: int,
                      batch_bytes=0) -> int:
    """Rows that fit: weights + ``batch_bytes`` (kv_batch_bytes; a number, or a function of the
    rows for a batch term that grows with them up to a bound, as R-KV's scratch does) + rows x
    per-row peak within KV_MEMORY_MARGIN of the device's memory less KV_OVERHEAD_GIB; at most
    ``rows_wanted``; 0 if not even one row fits."""
    once = batch_bytes if callable(batch_bytes) else (lambda rows: batch_bytes)
    free = KV_MEMORY_MARGIN * device_bytes - KV_OVERHEAD_GIB * GIB - weight_bytes
    rows = max(0, min(rows_wanted, int((free - once(rows_wanted)) // row_bytes))) if free > once(rows_wanted) else 0
    while rows < rows_wanted and once(rows + 1) + (rows + 1) * row_bytes <= free:  # a batch term of fewer rows
        rows += 1
    return rows


TABLE1_COLUMNS = ("model", "params_b", "weight_gib_4bit", "weight_gib_8bit", "weight_gib_16bit", "kv_gib_30k",
                  "kv_gib_30k_x16")
TABLE1_FOOTNOTE = (
    "* 16-bit: the published bf16 checkpoint's tensors. Marked rows tie the lm_head to the embedding "
    "but store it as a tensor of its own, which the cell includes ({stored}); tied and stored once: "
    "{once}; the others have their own lm_head. 4/8-bit: GPTQ checkpoints (qweight, qzeros, fp16 scales, "
    "int32 g_idx; bf16 embedding, lm_head not quantized). KV: bf16, 2 x layers x KV heads x head_dim x "
    "2 B per token, one 30k-token sample and 16 of them. GiB = 2^30 B (the paper's GB).")


def table1() -> list[dict]:
    """The paper's Table 1 in GiB: weights per precision, KV of one 30k-token sample and of 16.

    Weights as the checkpoints store them (``weight_bytes``, which planning uses too, and which
    equals a checkpoint folder's measured bytes): GPTQ at 4/8 bits, the published bf16 tensors at
    16 bits. Values are unrounded; print them with 2 decimals.
    """
    rows = []
    for name in known_archs("qwen3"):  # the paper's models
        arch = Arch.named(name)
        kv30k = kv_bytes(arch, {"method": "full"}, 30000, 1)
        weights = {b: weight_bytes(arch, b) for b in (4, 8, 16)}
        rows.append({"model": name, "params_b": arch.params / 1e9,
                     **{f"weight_gib_{b}bit": weights[b] / GIB for b in (4, 8, 16)},
                     "kv_gib_30k": kv30k / GIB, "kv_gib_30k_x16": 16 * kv30k / GIB,
                     "tied_lm_head_stored": arch.stored_tied_head_params > 0})
    return rows


def table1_csv(rows: list[dict] | None = None, marked: bool = True) -> str:
    """Table 1 with 2 decimals, as printed. ``marked``: the 16-bit cells that include a tied
    model's stored lm_head carry the footnote's * (the printed form); else a typed
    ``tied_lm_head_stored`` column says it."""
    rows = table1() if rows is None else rows
    columns = list(TABLE1_COLUMNS) + ([] if marked else ["tied_lm_head_stored"])
    lines = [",".join(columns)]
    for r in rows:
        cells = [r["model"]] + [f"{r[c]:.2f}" for c in TABLE1_COLUMNS[1:]]
        if marked and r["tied_lm_head_stored"]:
            cells[TABLE1_COLUMNS.index("weight_gib_16bit")] += "*"
        if not marked:
            cells.append(str(r["tied_lm_head_stored"]).lower())
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def table1_footnote() -> str:
    archs = {name: Arch.named(name) for name in known_archs("qwen3")}
    stored = ", ".join(f"{name}: {a.stored_tied_head_params * NATIVE_BYTES / GIB:.2f} GiB"
                       for name, a in archs.items() if a.stored_tied_head_params)
    once = ", ".join(name for name, a in archs.items() if a.tied and not a.stored_tied_head_params) or "none"
    return TABLE1_FOOTNOTE.format(stored=stored or "none", once=once)


# ---------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    from notallbits.weights import FORMATS

    p.add_argument("--model", help="a name in notallbits/archs (Qwen3-8B or Qwen/Qwen3-8B) or a folder with config.json")
    p.add_argument("--bits", default="16", metavar="FORMAT",
                   help=f"weight format, as a sweep's bits: 4, 8, 16 or one of {', '.join(FORMATS)}")
    p.add_argument("--budget", type=int, help="token budget T per sample (thinking tokens held in the KV cache)")
    p.add_argument("--k", type=int, default=1,
                   help="K parallel samples held at once (the votes of Maj@K, a config's `k`), each with its own KV")
    p.add_argument("--samples", type=int, help=argparse.SUPPRESS)  # renamed --k: refused with a pointer
    p.add_argument("--kv", default="full", choices=list(METHODS), help="KV-cache method")
    p.add_argument("--kv-nbits", type=int, help="with --kv hqq: bits per cached value (2, 4 or 8; default 4)")
    p.add_argument("--kv-budget", type=int,
                   help="with --kv streamingllm or rkv: tokens the cache keeps (default 2048)")
    p.add_argument("--layout", choices=LAYOUTS,
                   help="weight byte layout (default: the format's own; appendix_b: the paper's formula, no g_idx)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (bytes and GiB)")
    p.add_argument("--table1", action="store_true", help="print (or --out) the paper's Table 1")
    p.add_argument("--out", help="with --table1: write the CSV here (the footnote goes to stdout)")


def run(args: argparse.Namespace) -> None:
    from notallbits import weights
    from notallbits.units import format_bytes

    if args.samples is not None:
        raise UserError("--samples is now --k: the K parallel samples (votes) whose caches are held at once; "
                        "a config's `samples` is n, the samples generated per question")
    if args.table1:
        text = table1_csv(marked=not args.out)
        if args.out:
            from notallbits.io import write_text

            write_text(args.out, text)
        else:
            print(text, end="")
        print("# " + table1_footnote())
        return
    if not args.model or args.budget is None:
        raise UserError("--model and --budget are required (or --table1)")
    fmt = weights.get(args.bits)
    arch = Arch.named(args.model)
    settings = {"method": args.kv}
    method = METHODS[args.kv]
    if args.kv_nbits is not None and "nbits" not in method.defaults:
        raise UserError(f"--kv-nbits applies to --kv hqq, not --kv {args.kv}")
    if args.kv_budget is not None and "budget" not in method.defaults:
        raise UserError(f"--kv-budget applies to --kv streamingllm or rkv, not --kv {args.kv}")
    if "nbits" in method.defaults:
        settings.update(nbits=method.defaults["nbits"] if args.kv_nbits is None else args.kv_nbits)
    elif "budget" in method.defaults:
        settings.update(budget=method.defaults["budget"] if args.kv_budget is None else args.kv_budget)
    normalize(settings)  # the KV method table checks: --kv-nbits 3 or --kv-budget -100 fail in one line
    if args.layout:
        w = weight_bytes(arch, fmt.bits, args.layout, 128)
    else:
        w = format_weight_bytes(arch, fmt)
    kv = kv_bytes(arch, settings, args.budget, args.k)
    result = {"model": args.model, "weights": fmt.name, "bits": fmt.bits, "budget_tokens": args.budget, "k": args.k,
              "kv": settings, "weights_gib": w / GIB, "kv_gib": kv / GIB, "total_gib": (w + kv) / GIB,
              "weight_bytes": w, "kv_bytes": kv, "arch": asdict(arch)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.model} {fmt.name}, T={args.budget}, K={args.k}, KV {args.kv}: "
              f"weights {format_bytes(w)} + KV {format_bytes(kv)} = {format_bytes(w + kv)}")
