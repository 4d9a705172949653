"""Appendix B's weight formula as written, counted by hand on a decoder whose widths are not
multiples of the 128 group (test_memory's ODD_ARCH)."""

from notallbits.memory import weight_bytes
from tests.test_memory import ODD_ARCH


def test_appendix_b_formula_by_hand():
    """N_q = 192x128 + 2 x 192x64 + 128x192 + 2 x 192x320 + 320x192 = 258,048 quantized weights;
    at 4 bits N_q/2 = 129,024 B, N_q // 128 = 2016 groups of a 16-bit scale and a 4-bit zero
    (20 bits: 5040 B), plus 2496 bf16 values (4992 B): 139,056 B. GPTQ's real layout (g_idx,
    zeros per output, ceil groups) is 146,048 B."""
    assert weight_bytes(ODD_ARCH, 4, layout="appendix_b") == 129_024 + 5_040 + 4_992 == 139_056
    assert weight_bytes(ODD_ARCH, 8, layout="appendix_b") == 258_048 + 2016 * 24 // 8 + 4_992
    assert weight_bytes(ODD_ARCH, 4) == 146_048
    for bits, group in ((4, 128), (8, 128), (4, 100)):  # bytes are whole, whatever the group
        assert isinstance(weight_bytes(ODD_ARCH, bits, layout="appendix_b", group_size=group), int)


def test_every_layout_counts_whole_bytes():
    """A checkpoint holds whole bytes: every layout gives an int (the published sizes in
    test_memory are compared with ==, which a float of the same value would pass)."""
    for layout, bits in (("gptq", 4), ("gptq", 8), ("awq", 4), ("fp8_block", 8), ("appendix_b", 4), ("gptq", 16)):
        assert isinstance(weight_bytes(ODD_ARCH, bits, layout=layout), int), layout


def test_the_configs_group_and_block_size_the_checkpoint():
    """quantization.group_size sizes GPTQ's groups and quantization.fp8_block the FP8 blocks, each
    only its own layout. GPTQ 4-bit with groups of 64 (fan-ins 192, 128, 320: 3, 2, 5 groups):
      q 12288 + 192 + 768 + 768 = 14016; k, v 6144 + 96 + 384 + 768 = 7392 each;
      o 12288 + 192 + 768 + 512 = 13760; gate, up 30720 + 480 + 1920 + 768 = 33888 each;
      down 30720 + 480 + 1920 + 1280 = 34400 -> 144736, + 4992 bf16 bytes = 149728.
    FP8 with 64 x 64 blocks: test_memory's hand count (weights 258048 + 4 x 63 block scales)."""
    from notallbits.memory import format_weight_bytes

    quantization = {"group_size": 64, "fp8_block": 64}
    assert format_weight_bytes(ODD_ARCH, 4, quantization) == 149_728
    assert format_weight_bytes(ODD_ARCH, "fp8", quantization) == 258_048 + 4 * 63 + 4_992
    assert format_weight_bytes(ODD_ARCH, 4, {"fp8_block": 64}) == 146_048  # GPTQ keeps the default 128
    assert format_weight_bytes(ODD_ARCH, "fp8", {"group_size": 64}) == 263_144  # FP8 keeps its 128 blocks


def test_kv_bytes_are_whole_bytes():
    from notallbits.memory import kv_bytes

    assert isinstance(kv_bytes(ODD_ARCH, {"method": "full"}, 100, 2), int)
    assert kv_bytes(ODD_ARCH, {"method": "full"}, 100, 2) == 2 * 100 * 2 * 1 * 64 * 2  # G x T x K,V x heads x dim x bf16


def test_without_a_quantization_section_groups_and_blocks_are_128():
    """GPTQ's default group and Qwen's FP8 weight_block_size are 128: on a width of 258 that is 3
    groups or blocks (2 x 128 + 2), where 129 would give 2."""
    from dataclasses import replace

    from notallbits.memory import format_weight_bytes

    wide = replace(ODD_ARCH, hidden=258)
    assert format_weight_bytes(wide, 4) == weight_bytes(wide, 4, "gptq", 128) != weight_bytes(wide, 4, "gptq", 129)
    assert format_weight_bytes(wide, "fp8") == weight_bytes(wide, 8, "fp8_block", 128) != weight_bytes(
        wide, 8, "fp8_block", 129)
