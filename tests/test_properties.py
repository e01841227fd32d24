"""Properties over generated inputs: budgets, LUT keys and arch JSON round-trip, and garbage is refused
with the project's error type, never another exception.

Examples are few (``max_examples``) so the file runs in seconds; ``deadline=None`` because the
machine is shared and a slow example is not a failure.
"""

from __future__ import annotations

import functools
import json
import math
import random

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from hwnas.arch import Arch, ArchError
from hwnas.budget import format_ms, parse_budget_ms
from hwnas.errors import HwnasError, UsageError
from hwnas.ops import OpCall, OpError, get_op, make_call, parse_key, registered_ops
from hwnas.ops.blocks import ACTS
from hwnas.space import Space, builtin_spaces, load_space

FEW = settings(max_examples=60, deadline=None)

# -- budgets --------------------------------------------------------------------------------------

UNITS = {"ms": 1.0, "s": 1e3, "us": 1e-3, "\u00b5s": 1e-3, "\u03bcs": 1e-3, "": 1.0}
# A wide range, clear of the float limits where a unit conversion over/underflows (refused, tested below).
magnitudes = st.floats(min_value=1e-200, max_value=1e200, allow_nan=False, allow_infinity=False)


@FEW
@given(x=st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False))
def test_format_then_parse_is_within_half_a_unit_of_the_fourth_digit(x: float) -> None:
    assert parse_budget_ms(format_ms(x)) == pytest.approx(x, rel=5e-4)


@FEW
@given(
    x=magnitudes,
    unit=st.sampled_from(sorted(UNITS)),
    space=st.sampled_from(["", " ", "\t", "  "]),
    pad=st.sampled_from(["", " ", "\n", " \t"]),
    upper=st.booleans(),
)
def test_every_unit_with_or_without_space_and_in_any_case(
    x: float, unit: str, space: str, pad: str, upper: bool
) -> None:
    text = f"{pad}{x!r}{space if unit else ''}{unit.upper() if upper else unit}{pad}"
    assert parse_budget_ms(text) == pytest.approx(x * UNITS[unit], rel=1e-12)


@FEW
@given(x=st.floats(max_value=0.0, allow_nan=False), unit=st.sampled_from(sorted(UNITS)))
def test_non_positive_budgets_are_refused_in_one_usage_line(x: float, unit: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_budget_ms(f"{x!r}{unit}")
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_any_text_is_a_positive_budget_or_one_usage_line(text: str) -> None:
    try:
        ms = parse_budget_ms(text)
    except UsageError as e:  # never another exception type
        assert "\n" not in str(e) and repr(text) in str(e)
    else:
        assert ms > 0 and math.isfinite(ms)


# -- LUT keys -------------------------------------------------------------------------------------

VALUES = {
    "act": st.sampled_from(ACTS),
    "e": st.one_of(st.integers(1, 8), st.floats(0.25, 8.0, allow_nan=False)),
    "groups": st.sampled_from([1, 2]),
    "k": st.sampled_from([1, 3, 5, 7]),
    "out": st.integers(1, 48),
    "stride": st.sampled_from([1, 2]),
    "classes": st.integers(1, 1000),
    "mix": st.integers(0, 64),
    "n": st.integers(2, 5),
}


@st.composite
def op_calls(draw: st.DrawFn) -> tuple[str, dict, tuple[int, int, int]]:
    """A registered op with valid parameters and an input shape (invalid combinations are rejected)."""
    op = draw(st.sampled_from(registered_ops()))
    shape = (draw(st.integers(1, 48)), draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    params = {p: draw(VALUES[p]) for p in get_op(op).params}
    if op == "zero":  # a dropped block keeps its shape
        params.update(out=shape[0], stride=1)
    try:
        make_call(op, params, shape)
    except OpError:
        reject()
    return op, params, shape


@FEW
@given(spec=op_calls())
def test_key_round_trips_through_parse_key(spec: tuple[str, dict, tuple[int, int, int]]) -> None:
    call = make_call(*spec)
    back = parse_key(call.key)
    assert back == call and back.key == call.key
    op, pstr, shape = call.key.split("|")
    assert op == spec[0] and shape == "x".join(map(str, spec[2]))
    names = [item.split("=", 1)[0] for item in filter(None, pstr.split(","))]
    assert names == sorted(spec[1])  # one param order in every key


@FEW
@given(spec=op_calls(), data=st.data())
def test_key_ignores_param_order_and_number_spelling(spec: tuple[str, dict, tuple[int, int, int]], data) -> None:
    op, params, shape = spec
    order = data.draw(st.permutations(list(params)))
    as_floats = {k: (float(params[k]) if isinstance(params[k], int) else params[k]) for k in order}  # 6 -> 6.0
    same = make_call(op, as_floats, shape)
    assert same == make_call(op, params, shape)
    assert ".0," not in same.key + "," and ".0|" not in same.key  # integral numbers written as ints


@FEW
@given(e=st.floats(min_value=0.01, max_value=64.0, allow_nan=False))
def test_fractional_numbers_keep_full_precision(e: float) -> None:
    call = make_call("mbconv", {"act": "relu6", "e": e, "groups": 1, "k": 3, "out": 8, "stride": 1}, (8, 8, 8))
    assert parse_key(call.key).param_dict["e"] == e


@st.composite
def mangled_keys(draw: st.DrawFn) -> str:
    """A valid key with one parameter value or the shape replaced by arbitrary text."""
    call = make_call(*draw(op_calls()))
    op, pstr, shape = call.key.split("|")
    junk = draw(st.text(alphabet="0123456789.-+exn_aZ ", max_size=6))
    items = pstr.split(",") if pstr else []
    if items and draw(st.booleans()):
        i = draw(st.integers(0, len(items) - 1))
        items[i] = items[i].split("=", 1)[0] + "=" + junk
    else:
        shape = junk
    return f"{op}|{','.join(items)}|{shape}"


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), mangled_keys()))
def test_any_key_text_is_a_call_or_one_op_error(text: str) -> None:
    try:
        call = parse_key(text)
    except OpError as e:  # never another exception type
        assert "\n" not in str(e)
    else:
        assert isinstance(call, OpCall) and parse_key(call.key) == call  # canonical form is a fixed point


# -- arch JSON ------------------------------------------------------------------------------------


@functools.cache
def _space(name: str, size: int | None) -> Space:
    sp = load_space(name)
    return sp if size is None else sp.with_params(input_size=size)


@pytest.mark.parametrize("name", builtin_spaces())
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([None, 32]))
def test_sampled_archs_round_trip_through_json(name: str, seed: int, size: int | None) -> None:
    arch = _space(name, size).sample(random.Random(seed)).with_info(seed=seed, note="hypothesis")
    text = arch.to_json()
    back = Arch.from_dict(json.loads(text))
    assert back == arch
    assert back.to_json() == text
    assert back.plan == arch.plan
    assert [c.key for c in back.plan.priced_calls()] == [c.key for c in arch.plan.priced_calls()]


@settings(max_examples=150, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )
)
def test_any_json_document_is_an_arch_or_one_arch_error(doc) -> None:
    try:
        Arch.from_dict(doc, "doc.json")
    except ArchError as e:  # never another exception type
        assert "\n" not in str(e) and str(e).startswith("doc.json: ")


def _paths(doc, prefix=()) -> list[tuple]:
    """Every position in a JSON document (containers and leaves), as key paths."""
    out = [prefix] if prefix else []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        out += _paths(v, (*prefix, k))
    return out


LEAVES = (
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=False) | st.text(max_size=6)
    | st.sampled_from(["3", "x", "relu6", "mbconv", "none", "1.5"])
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutated_archs_are_valid_or_one_arch_error(data) -> None:
    """One position of a real arch replaced by an arbitrary JSON value: valid, or one clear line."""
    base = _space(data.draw(st.sampled_from(["tiny", "tiny_darts"])), None).sample(random.Random(0)).to_dict()
    path = data.draw(st.sampled_from(_paths(base)))
    target = base
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(LEAVES | st.lists(LEAVES, max_size=3))
    try:
        Arch.from_dict(base, "m.json")
    except HwnasError as e:
        assert "\n" not in str(e) and str(e).startswith("m.json: "), str(e)
