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
