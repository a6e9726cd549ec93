"""Kubernetes resource quantities (`256Mi`, `1Gi`, `250m`) to numbers and back, for scaling."""

from __future__ import annotations

import re

_FACTORS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_FACTORS |= {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(\.[0-9]+)?)(?P<suffix>[A-Za-z]{0,2})\Z")

GIB = 2**30


def parse_bytes(quantity: str) -> int:
    """A memory quantity in bytes (`256Mi` → 268435456, `1G` → 10**9).

    Raises:
        ValueError: when it is not a quantity this parser understands.
    """
    match = _QUANTITY.match(quantity.strip())
    if match is None:
        raise ValueError(f"not a resource quantity: {quantity!r}")
    factor = _FACTORS.get(match["suffix"])
    if factor is None:
        raise ValueError(f"unknown quantity suffix in {quantity!r}")
    return int(float(match["number"]) * factor)


def format_mebibytes(value: int) -> str:
    """Bytes as a whole number of Mi, rounded up (`268435456` → `256Mi`)."""
    mebibytes = -(-value // 2**20)
    return f"{mebibytes}Mi"
