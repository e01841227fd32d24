"""Latency budgets as users type them: ``20ms``, ``0.02 s``, ``20000 µs`` or a bare ``20``.

Everything inside hwnas is in milliseconds; this module is the one place a budget typed on the
command line or in a config file becomes a float of milliseconds, and the one place a latency is
formatted back for a human. The parser is a regular expression plus ``float`` — never ``eval``.
"""

from __future__ import annotations

import math
import re

from hwnas.errors import UsageError

# Unit -> power of ten that converts it to milliseconds. Both micro signs are accepted: U+00B5 (what
# keyboards type) and U+03BC (what NFKC normalisation and ``"µ".upper().lower()`` turn it into).
_MS_EXPONENT: dict[str, int] = {"": 0, "ms": 0, "s": 3, "us": -3, "\u00b5s": -3, "\u03bcs": -3}

_FORMS = "a positive number with an optional unit ms, s, us or µs, e.g. 20ms, 0.02s, 20000us or 20 (milliseconds)"

# A signed decimal or exponent number, or inf/nan (matched so they can be refused by name), then a unit.
_BUDGET_RE = re.compile(
    r"""
    (?P<number>[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?|inf(?:inity)?|nan))
    \s*
    (?P<unit>[^\s\d.+-]*)
    """,
    re.IGNORECASE | re.VERBOSE,
)


def _refuse(text: str, reason: str) -> UsageError:
    # repr() keeps the message on one line whatever the user typed (newlines, tabs, empty string).
    return UsageError(f"latency budget {text!r}: {reason}; write {_FORMS}")


def parse_budget_ms(text: str) -> float:
    """Parse a latency budget as typed by a user and return it in milliseconds.

    Accepted: a number (``20``, ``20.5``, ``.5``, ``2e1``, optional leading ``+``) followed by an
    optional unit — ``ms``, ``s``, ``us`` or ``µs``, case-insensitive, with or without a space — and
    surrounded by any whitespace. A bare number means milliseconds.

    Returns:
        The budget in milliseconds, a positive finite float. ``parse_budget_ms(f"{x}ms") == x``
        exactly for every positive finite float ``x``.

    Raises:
        UsageError: (exit code 2) with one line naming the value and the accepted forms, for a value
            that is empty, not a number, negative, zero, non-finite (``inf``, ``nan``, or a value that
            overflows or underflows when converted to ms) or has an unknown unit (``20min``).
    """
    match = _BUDGET_RE.fullmatch(text.strip())
    if match is None:
        raise _refuse(text, "empty" if not text.strip() else "not a number with a unit")
    unit = match["unit"].lower()
    if unit not in _MS_EXPONENT:
        raise _refuse(text, f"unknown unit {match['unit']!r}")
    value = float(match["number"])
    if math.isnan(value) or math.isinf(value):
        raise _refuse(text, "not a finite number")
    if value < 0:
        raise _refuse(text, "negative")
    if value == 0:
        raise _refuse(text, "zero")
    exponent = _MS_EXPONENT[unit]
    # Divide rather than multiply by 1e-3: 1000 is exact, 0.001 is not, so us -> ms rounds once.
    ms = value * 10.0**exponent if exponent >= 0 else value / 10.0**-exponent
    if math.isinf(ms) or ms == 0:
        raise _refuse(text, "out of range once converted to milliseconds")
    return ms


def format_ms(ms: float) -> str:
    """A short human form of a latency in milliseconds: ``"20 ms"``, ``"0.35 ms"``, ``"1.5 s"``.

    Four significant digits; seconds from 1000 ms up (after rounding, so 999.99 ms reads ``"1 s"``).
    :func:`parse_budget_ms` reads every output back: for positive finite ``ms`` the round trip is
    within 0.05 % (half a unit in the fourth digit), except within 0.05 % of the largest float,
    where rounding up to four digits overflows and the text is refused as out of range. Very small
    or large values use an exponent (``"1e-05 ms"``); non-finite values format as ``"inf ms"`` /
    ``"nan ms"`` and do not round-trip.
    """
    if math.isfinite(ms) and abs(float(f"{ms:.4g}")) >= 1000:
        return f"{ms / 1000:.4g} s"
    return f"{ms:.4g} ms"
