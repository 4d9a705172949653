"""What a weight format is: the one table of weight formats (method x bits), torch-free so config
validation, the grid, the rules, the quantizer, the memory model and the summary read it.

A sweep's ``bits`` lists formats: 4 / 8 / 16 (GPTQ 4-bit, GPTQ 8-bit, the bf16 checkpoint, as
the paper's main grid) or a format's name (``gptq-4``, ``gptq-8``, ``awq-4``, ``fp8``, ``bf16``).
Per format: its method and bits, the checkpoint layout the memory model counts, the path tag of
its checkpoint and generation files (``w4``, ``w8``, ``w16`` as before; ``wawq4``, ``wfp8``),
and the ``quantization.*`` keys that change its checkpoint (so a new key for one method never
reruns another method's jobs). Every quantized format is made here by GPTQModel
(``notallbits/quantization.py``; docs/weight-formats.md says why).

* ``gptq``: classic GPTQ, symmetric, group 128 (qweight, qzeros, fp16 scales, int32 g_idx).
* ``awq``: AWQ (activation-aware scale search), asymmetric, group 128, AutoAWQ's GEMM layout as
  Qwen's ``-AWQ`` checkpoints have it (qweight/qzeros packed in int32 along the output, scales
  per group; no g_idx).
* ``fp8``: E4M3 weights with one float32 scale per 128 x 128 block (``weight_scale_inv``, the
  dequantization multiplier), ``activation_scheme: dynamic``: the layout of Qwen's ``-FP8``
  checkpoints, which vLLM serves as W8A8 on GPUs with FP8 units. No calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

from notallbits import UserError


@dataclass(frozen=True)
class WeightFormat:
    name: str  # what a sweep's bits may say
    method: str  # the summary's weight_method
    bits: int
    tag: str  # path component: results/models/<model>/w<tag>, generations/.../w<tag>/
    layout: str  # memory.weight_bytes layout
    options: tuple[str, ...] = ()  # quantization.* keys that change this checkpoint
    calibrated: bool = False  # reads quantization.calibration

    @property
    def quantized(self) -> bool:
        return self.method != "bf16"


# quantization.* keys of the GPTQ checkpoints: all that existed before other methods, so the
# GPTQ quantize jobs' settings param stays what it was
GPTQ_OPTIONS = ("group_size", "desc_act", "sym", "damp_percent", "act_group_aware")

FORMATS = {f.name: f for f in (
    WeightFormat("gptq-4", "gptq", 4, "4", "gptq", GPTQ_OPTIONS, calibrated=True),
    WeightFormat("gptq-8", "gptq", 8, "8", "gptq", GPTQ_OPTIONS, calibrated=True),
    WeightFormat("bf16", "bf16", 16, "16", "native"),
    WeightFormat("awq-4", "awq", 4, "awq4", "awq", ("group_size",), calibrated=True),
    WeightFormat("fp8", "fp8", 8, "fp8", "fp8_block", ("fp8_block",)),
)}
BY_BITS = {4: "gptq-4", 8: "gptq-8", 16: "bf16"}  # a bare number in a sweep: the paper's formats
BY_TAG = {f.tag: f for f in FORMATS.values()}
BY_METHOD_BITS = {(f.method, f.bits): f for f in FORMATS.values()}
METHODS = tuple(dict.fromkeys(f.method for f in FORMATS.values()))


def get(entry: int | str) -> WeightFormat:
    """A sweep's ``bits`` entry (4, 8, 16 or a format name), or a path tag (awq4, fp8; what the
    quantize command's --bits takes), as its format."""
    if isinstance(entry, bool):
        entry = str(entry)
    if isinstance(entry, str) and entry.isdigit():
        entry = int(entry)
    if isinstance(entry, int) and entry in BY_BITS:
        return FORMATS[BY_BITS[entry]]
    if isinstance(entry, str) and entry in FORMATS:
        return FORMATS[entry]
    if isinstance(entry, str) and entry in BY_TAG:
        return BY_TAG[entry]
    raise UserError(f"unknown weight format {entry!r} (4, 8, 16 or one of {', '.join(FORMATS)})")


def by_tag(tag: str) -> WeightFormat:
    """The format of a path tag (the workflow's ``bits`` wildcard: 4, 8, 16, awq4, fp8)."""
    try:
        return BY_TAG[str(tag)]
    except KeyError:
        raise UserError(f"unknown weight tag {tag!r} (one of {', '.join(BY_TAG)})") from None


def of(method: str, bits: int) -> WeightFormat:
    try:
        return BY_METHOD_BITS[(method, int(bits))]
    except KeyError:
        raise UserError(f"no weight format {method} at {bits} bits (known: {', '.join(FORMATS)})") from None


def default_method(bits: int) -> str:
    """The method a bare bit count means (4/8: GPTQ, 16: bf16): what rows written before the
    weight_method column was added had."""
    return FORMATS[BY_BITS[int(bits)]].method if int(bits) in BY_BITS else ""


def quantizer_options(fmt: WeightFormat, quantization: dict) -> dict:
    """The ``quantization`` section as far as it changes ``fmt``'s checkpoint (calibration
    included only for calibrated methods). For GPTQ this is the whole section as it was before
    AWQ/FP8 existed, so existing checkpoints keep their params."""
    keys = set(fmt.options) | ({"calibration"} if fmt.calibrated else set())
    return {k: v for k, v in quantization.items() if k in keys}
