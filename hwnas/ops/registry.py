"""The op registry and the one LUT-key formatter.

Every candidate op is an ``nn.Module`` subclass registered here under a name. An *op call*
(:class:`OpCall`) is one use of an op: its name, its parameters and the shape of its input.
The call is what the profiler times, what the LUT keys on, what the walker emits and what the
builder turns into a module, so all of them agree by construction.

Shapes are ``(C, H, W)`` without the batch dimension; latencies elsewhere are in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from hwnas.errors import HwnasError

Shape = tuple[int, int, int]
ParamValue = int | float | str


class OpError(HwnasError, ValueError):
    """An op name or parameter set that the registry cannot build."""


def canonical_value(value: ParamValue) -> ParamValue:
    """Canonical form of a parameter value: ``6`` == ``6.0`` == ``True``-free ints.

    Integral floats become ints, other floats keep ``repr`` precision; strings stay strings.
    Booleans are refused so that ``True`` never silently becomes ``1``.
    """
    if isinstance(value, bool):
        raise OpError(f"boolean parameter values are not allowed ({value!r}); use 0/1")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise OpError(f"parameter value {value!r} is not finite")
        return int(value) if value.is_integer() else value
    if isinstance(value, int | str):
        return value
    raise OpError(f"parameter value {value!r} must be an int, float or string")


@dataclass(frozen=True)
class OpCall:
    """One use of a registered op: ``op`` with ``params`` applied to an input of ``in_shape``.

    Construct with :func:`make_call` so that params are canonical and sorted; two calls that
    mean the same thing are then equal and have the same :attr:`key`.
    """

    op: str
    params: tuple[tuple[str, ParamValue], ...]
    in_shape: Shape

    @property
    def param_dict(self) -> dict[str, ParamValue]:
        return dict(self.params)

    @property
    def param_str(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.params)

    @property
    def shape_str(self) -> str:
        return "x".join(str(d) for d in self.in_shape)

    @property
    def key(self) -> str:
        """The LUT key: ``op|k=v,...|CxHxW``. The only place a key is formatted."""
        return f"{self.op}|{self.param_str}|{self.shape_str}"

    @property
    def out_shape(self) -> Shape:
        return get_op(self.op).out_shape(self.in_shape, self.param_dict)

    @property
    def leading_relu(self) -> bool:
        """The op starts with a ReLU of its input (see :attr:`OpSpec.leading_relu`)."""
        return get_op(self.op).leading_relu(self.param_dict)

    @property
    def weightless(self) -> bool:
        """The op has no weights (see :attr:`OpSpec.weightless`)."""
        return get_op(self.op).weightless(self.in_shape, self.param_dict)

    @property
    def trailing_conv(self) -> bool:
        """The op's output is written by a conv (see :attr:`OpSpec.trailing_conv`)."""
        return get_op(self.op).trailing_conv(self.in_shape, self.param_dict)

    @property
    def priced(self) -> bool:
        """False for ops that cost nothing by definition (``zero``, ``none``)."""
        return get_op(self.op).priced

    def build(self) -> nn.Module:
        """A fresh module for this call (random init, train mode)."""
        return get_op(self.op).cls(self.in_shape[0], **self.param_dict)


def make_call(op: str, params: Mapping[str, ParamValue], in_shape: Shape) -> OpCall:
    """Validate ``params`` against the op's declared parameters and return the canonical call."""
    spec = get_op(op)
    given = dict(params)
    missing = [p for p in spec.params if p not in given]
    extra = [p for p in given if p not in spec.params]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        raise OpError(f"op {op!r}: {'; '.join(parts)} (it takes: {', '.join(spec.params) or 'nothing'})")
    canon = tuple(sorted((k, canonical_value(v)) for k, v in given.items()))
    for k, v in canon:
        _check_kind(spec, k, v)
    shape = tuple(int(d) for d in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise OpError(f"op {op!r}: input shape {in_shape!r} must be three positive ints (C, H, W)")
    call = OpCall(op, canon, shape)  # type: ignore[arg-type]
    spec.check(shape, dict(canon))
    return call


def _check_kind(spec: OpSpec, name: str, value: ParamValue) -> None:
    """Refuse a parameter value of the wrong kind (``stride = "2"``, ``k = 1.5``) before any check
    converts it: every parameter is an integer unless the op declares it text or real."""
    if name in spec.text_params:
        ok, want = isinstance(value, str), "a string"
    elif name in spec.real_params:
        ok, want = not isinstance(value, str), "a number"
    else:
        ok, want = isinstance(value, int), "an integer"
    if not ok:
        raise OpError(f"op {spec.name!r}: parameter {name} must be {want}, got {value!r}")


def parse_key(key: str) -> OpCall:
    """Inverse of :attr:`OpCall.key`; raises :class:`OpError` on a malformed key."""
    parts = key.split("|")
    if len(parts) != 3:
        raise OpError(f"LUT key {key!r} is not of the form op|k=v,...|CxHxW")
    op, pstr, sstr = parts
    params: dict[str, ParamValue] = {}
    for item in filter(None, pstr.split(",")):
        name, sep, raw = item.partition("=")
        if not sep:
            raise OpError(f"LUT key {key!r}: parameter {item!r} is not name=value")
        params[name] = _parse_value(raw)
    try:
        shape = tuple(int(d) for d in sstr.split("x"))
    except ValueError:
        raise OpError(f"LUT key {key!r}: shape {sstr!r} is not CxHxW") from None
    return make_call(op, params, shape)  # type: ignore[arg-type]


def _parse_value(raw: str) -> ParamValue:
    for conv in (int, float):
        try:
            return canonical_value(conv(raw))
        except (ValueError, OpError):
            continue
    return raw


@dataclass(frozen=True)
class OpSpec:
    """What the registry knows of an op."""

    name: str
    cls: type[nn.Module]
    params: tuple[str, ...]
    out_shape: Callable[[Shape, dict[str, Any]], Shape]
    check: Callable[[Shape, dict[str, Any]], None]
    priced: bool
    arity: int  # number of tensor inputs; 0 means "n" given by the ``n`` parameter
    doc: str
    text_params: tuple[str, ...] = ()  # parameters that are strings (e.g. ``act``) ...
    real_params: tuple[str, ...] = ()  # ... or any number (e.g. ``e``); all others are integers
    # does the op (with these params) start with a ReLU of its input? ONNX Runtime merges identical
    # ReLUs of one input, so of two such ops reading the same tensor the later runs one kernel fewer
    leading_relu: Callable[[dict[str, Any]], bool] = lambda p: False
    # is the op's output written by a Conv or BatchNormalization (which ONNX Runtime's x86 layout
    # transformer runs as a conv)? The runtime then may fuse an Add that reads it into that kernel
    # (where its blocked layout applies to the channel count: hwnas.arch.Plan.roles)
    trailing_conv: Callable[[Shape, dict[str, Any]], bool] = lambda s, p: False
    # has the op (with these params) no weights (parameters or buffers)? Two such calls on one
    # tensor compute the same, and ONNX Runtime merges them (common-subexpression elimination)
    weightless: Callable[[Shape, dict[str, Any]], bool] = lambda s, p: False


_REGISTRY: dict[str, OpSpec] = {}


def _no_check(shape: Shape, params: dict[str, Any]) -> None:
    return None


def register_op(
    name: str,
    *,
    params: tuple[str, ...],
    out_shape: Callable[[Shape, dict[str, Any]], Shape],
    check: Callable[[Shape, dict[str, Any]], None] = _no_check,
    priced: bool = True,
    arity: int = 1,
    text_params: tuple[str, ...] = (),
    real_params: tuple[str, ...] = (),
    leading_relu: Callable[[dict[str, Any]], bool] | bool = False,
    trailing_conv: Callable[[Shape, dict[str, Any]], bool] | bool = False,
    weightless: Callable[[Shape, dict[str, Any]], bool] | bool = False,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register an ``nn.Module`` whose constructor is ``cls(c_in, **params)``.

    Parameters are integers unless listed in ``text_params`` (strings) or ``real_params`` (any
    number); :func:`make_call` refuses a value of another kind.

    ``leading_relu``: whether the module starts with a ReLU of its input (a bool, or a function
    of the params). ``trailing_conv``: whether its output is written by a conv or BN (a bool, or
    a function of the input shape and params). ``weightless``: whether it has no weights (a
    bool, or a function of the input shape and params). All three are checked in the tests,
    against each op's ONNX graph and module. Registering a name twice raises, as torchvision's model registry does.
    """
    relu = leading_relu if callable(leading_relu) else (lambda p, v=bool(leading_relu): v)
    conv = trailing_conv if callable(trailing_conv) else (lambda s, p, v=bool(trailing_conv): v)
    pure = weightless if callable(weightless) else (lambda s, p, v=bool(weightless): v)

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise OpError(f"op {name!r} is already registered (by {_REGISTRY[name].cls.__name__})")
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        _REGISTRY[name] = OpSpec(
            name, cls, params, out_shape, check, priced, arity, doc, text_params, real_params, relu, conv, pure
        )
        return cls

    return deco


def get_op(name: str) -> OpSpec:
    """The spec of a registered op; the error lists the registered names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OpError(f"unknown op {name!r}; registered ops: {', '.join(sorted(_REGISTRY))}") from None


def registered_ops() -> list[str]:
    return sorted(_REGISTRY)
