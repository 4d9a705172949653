"""Sizes in bytes, read and written the way people write them.

Binary units are powers of 1024 (``KiB``, ``MiB``, ``GiB``, ``TiB``: what the paper calls GB and
what this project reports), decimal units powers of 1000 (``kB``, ``MB``, ``GB``, ``TB``: what
GPU vendors print), so ``80GB`` is 74.5 GiB. A number without a unit is GiB.
"""

from __future__ import annotations

import re

from notallbits import UserError

KIB, MIB, GIB, TIB = 2**10, 2**20, 2**30, 2**40
UNITS = {"kib": KIB, "mib": MIB, "gib": GIB, "tib": TIB, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "b": 1, "": GIB}
HELP = "binary KiB/MiB/GiB/TiB (1 GiB = 2^30 bytes) or decimal kB/MB/GB/TB (1 GB = 10^9 bytes); a bare number is GiB"


def parse_bytes(text: str) -> int:
    """'8GiB' -> 8 * 2^30, '8GB' -> 8 * 10^9, '512 MiB', '24' (GiB); one line naming the text otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS:
        raise UserError(f"cannot read the size {text!r} (examples: 8GiB, 80GB, 512MiB, 24; {HELP})")
    value = float(m.group(1)) * UNITS[m.group(2).lower()]
    if value <= 0:
        raise UserError(f"a size must be positive, got {text!r}")
    return round(value)


def format_bytes(n: float) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1: GiB (and TiB) with two
    decimals as the paper prints them, smaller sizes with three significant digits, so a tiny
    model reads '835 KiB', never '0.00 GiB'."""
    for unit, size in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(n) >= size:
            value = n / size
            if size >= GIB:
                return f"{value:.2f} {unit}"
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n:.0f} B"
