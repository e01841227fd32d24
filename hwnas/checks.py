"""Value checks shared by every validator of user files (space files, arch JSON, LUT metadata,
checkpoints, run files): JSON and TOML give ``True`` where a number is expected, and ``bool`` is
an ``int`` to Python, so a plain ``isinstance`` lets it through; and the one formatter of signed
percentages the commands and the report print."""

from __future__ import annotations

import math
from typing import Any


def is_int(v: Any, lo: int | None = None) -> bool:
    """``v`` is an int (not a bool), and ``>= lo`` when ``lo`` is given."""
    return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo)


def is_number(v: Any) -> bool:
    """``v`` is a finite int or float (not a bool, NaN, infinity, or an int too large for a float)."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int of hundreds of digits, from TOML or JSON
        return False


def signed_pct(share: float) -> str:
    """``share`` (0.05 = 5 %) as a signed percentage with one decimal, ``+0.0`` for a rounding
    error's ``-0.0`` (a prediction equal to the measurement up to floating point)."""
    return f"{round(share * 100, 1) + 0.0:+.1f}"
