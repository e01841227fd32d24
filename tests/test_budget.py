"""Latency budgets as typed: every accepted form, every refusal, and the parse/format round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwnas.budget import format_ms, parse_budget_ms
from hwnas.errors import UsageError


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("20ms", 20.0),
        ("20 ms", 20.0),
        ("20.5ms", 20.5),
        ("0.02s", 20.0),
        ("0.02 s", 20.0),
        ("20000us", 20.0),
        ("20000 µs", 20.0),  # U+00B5 MICRO SIGN
        ("20000 μs", 20.0),  # U+03BC GREEK SMALL LETTER MU
        ("20", 20.0),
        ("0.35", 0.35),
        ("  20ms\t\n", 20.0),
        ("20MS", 20.0),
        ("20 Ms", 20.0),
        ("0.02S", 20.0),
        ("20000US", 20.0),
        ("20000 µS", 20.0),
        ("2e1ms", 20.0),
        ("2E-2 s", 20.0),
        ("+20ms", 20.0),
        (".5ms", 0.5),
        ("5.ms", 5.0),
        ("1.5s", 1500.0),
        ("500us", 0.5),
    ],
)
def test_accepted_forms(text: str, ms: float) -> None:
    assert parse_budget_ms(text) == pytest.approx(ms, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("-5ms", "negative"),
        ("-0.02s", "negative"),
        ("0", "zero"),
        ("0ms", "zero"),
        ("0.0 s", "zero"),
        ("-0", "zero"),
        ("inf", "not a finite number"),
        ("-inf", "not a finite number"),
        ("infinity ms", "not a finite number"),
        ("nan", "not a finite number"),
        ("NaN ms", "not a finite number"),
        ("1e400ms", "not a finite number"),
        ("1e306s", "out of range"),
        ("1e-323us", "out of range"),
        ("20min", "unknown unit 'min'"),
        ("20 h", "unknown unit 'h'"),
        ("20 mS s", "not a number with a unit"),
        ("20µ", "unknown unit 'µ'"),
        ("fast", "not a number with a unit"),
        ("ms", "not a number with a unit"),
        ("", "empty"),
        ("   ", "empty"),
        ("20,5ms", "not a number with a unit"),
        ("0x10", "not a number with a unit"),
        ("1/2 ms", "not a number with a unit"),
        ("20ms\n30ms", "not a number with a unit"),
        ("__import__('os')", "not a number with a unit"),
    ],
)
def test_refusals_are_one_clear_usage_line(text: str, reason: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_budget_ms(text)
    msg = str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in msg
    assert repr(text) in msg  # names the value
    assert reason in msg
    assert "20ms, 0.02s, 20000us or 20 (milliseconds)" in msg  # names the accepted forms


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (20.0, "20 ms"),
        (0.35, "0.35 ms"),
        (1500.0, "1.5 s"),
        (1000.0, "1 s"),
        (999.99, "1 s"),  # rounds to 1000 ms, so shown in seconds
        (999.4, "999.4 ms"),
        (12.3456, "12.35 ms"),
        (0.001, "0.001 ms"),
        (1e6, "1000 s"),
    ],
)
def test_format_ms_examples(ms: float, text: str) -> None:
    assert format_ms(ms) == text


# Budgets from a nanosecond to about eleven days: wide, but far from float overflow/underflow.
budgets_ms = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(budgets_ms)
def test_ms_text_parses_exactly(x: float) -> None:
    assert parse_budget_ms(f"{x}ms") == x
    assert parse_budget_ms(f"{x}") == x
    assert parse_budget_ms(f" {x} MS ") == x


@given(budgets_ms)
def test_seconds_and_microseconds_convert(x: float) -> None:
    assert parse_budget_ms(f"{x / 1000}s") == pytest.approx(x, rel=1e-12)
    assert parse_budget_ms(f"{x * 1000}us") == pytest.approx(x, rel=1e-12)
    assert parse_budget_ms(f"{x * 1000} µs") == pytest.approx(x, rel=1e-12)


@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_format_round_trips_within_a_tenth_of_a_percent(x: float) -> None:
    text = format_ms(x)
    assert len(text) <= 12
    assert parse_budget_ms(text) == pytest.approx(x, rel=1e-3)


@given(budgets_ms)
def test_format_is_parseable_far_outside_the_usual_range(x: float) -> None:
    assert parse_budget_ms(format_ms(x)) == pytest.approx(x, rel=1e-3)
