"""The latency term of the search loss: forms selectable by name, and a dual-ascent multiplier.

A search step computes the task loss ``ce`` (cross-entropy, a scalar tensor) and the expected
latency ``e_lat_ms`` of the supernet (a scalar tensor in milliseconds that carries the graph back to
the architecture parameters, see DESIGN.md §9). An objective combines them with the user's budget:

* ``add`` — ``ce + lam * e_lat / budget``;
* ``mul-log`` — ``ce * alpha * (log1p(e_lat_us) / log1p(budget_us)) ** beta`` (ignores ``lam``);
* ``hinge`` — ``ce + lam * relu(e_lat / budget - 1)``.

Every form is differentiable w.r.t. ``e_lat_ms``. Objectives are small stateless classes behind the
:class:`LatencyObjective` protocol, registered by name; :func:`get_objective` builds one and lists the
names on a miss. :class:`DualLambda` adapts ``lam`` during the search so the budget becomes a
constraint rather than a hand-tuned penalty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from hwnas.checks import is_int, is_number
from hwnas.errors import HwnasError


class ObjectiveError(HwnasError, ValueError):
    """An unknown objective name, a bad objective parameter, or a bad multiplier state."""


@runtime_checkable
class LatencyObjective(Protocol):
    """A search loss that combines the task loss with the expected latency and a budget.

    ``__call__(ce, e_lat_ms, budget_ms, lam)``:

    * ``ce`` — task loss, a tensor (usually a scalar);
    * ``e_lat_ms`` — expected latency in milliseconds, a tensor broadcastable with ``ce`` that carries
      the graph to the architecture parameters;
    * ``budget_ms`` — the latency budget in milliseconds, positive and finite;
    * ``lam`` — the latency multiplier, finite and ``>= 0`` (forms that do not use it ignore it).

    Returns the loss tensor (``ce``'s dtype and device, broadcast shape), differentiable w.r.t. both
    ``ce`` and ``e_lat_ms``.
    """

    name: str

    def __call__(self, ce: Tensor, e_lat_ms: Tensor, budget_ms: float, lam: float) -> Tensor: ...


_REGISTRY: dict[str, type] = {}


def register_objective(name: str) -> Callable[[type], type]:
    """Class decorator: register an objective class under ``name`` (its ``name`` attribute is set).

    The class must be constructible with no arguments (defaults for every parameter). Registering a
    name twice raises :class:`ObjectiveError`.
    """

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise ObjectiveError(f"objective {name!r} is already registered (by {_REGISTRY[name].__name__})")
        cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return deco


def _check_budget_lam(budget_ms: float, lam: float) -> None:
    if not (math.isfinite(budget_ms) and budget_ms > 0):
        raise ObjectiveError(f"latency budget must be a positive finite number of ms, got {budget_ms!r}")
    if not (math.isfinite(lam) and lam >= 0):
        raise ObjectiveError(f"latency multiplier lam must be finite and >= 0, got {lam!r}")


@register_objective("add")
@dataclass(frozen=True)
class AddObjective:
    """``ce + lam * e_lat_ms / budget_ms``: a linear latency penalty, in units of the budget.

    ``d loss / d e_lat_ms = lam / budget_ms`` — constant, positive whenever ``lam > 0``. With a
    :class:`DualLambda` driving ``lam`` this is the Lagrangian of the constraint ``e_lat <= budget``
    (up to the constant ``-lam``, which has no gradient).
    """

    name: ClassVar[str]

    def __call__(self, ce: Tensor, e_lat_ms: Tensor, budget_ms: float, lam: float) -> Tensor:
        """The loss; see the class docstring and :class:`LatencyObjective` for the contract and units."""
        _check_budget_lam(budget_ms, lam)
        return ce + lam * (e_lat_ms / budget_ms)


@register_objective("mul-log")
@dataclass(frozen=True)
class MulLogObjective:
    """``ce * alpha * (log1p(e_lat_us) / log1p(budget_us)) ** beta`` — FBNet / ProxylessNAS "mul#log".

    The latency scales the task loss multiplicatively; at ``e_lat == budget`` the loss is
    ``alpha * ce``, above it larger, below it smaller. ``lam`` is accepted for the common interface
    and **ignored**: the strength is ``alpha`` (overall scale) and ``beta`` (sharpness). FBNet
    (Wu et al., CVPR 2019) uses ``ce * alpha * log(lat) ** beta`` with ``alpha=0.2, beta=0.6`` — the
    defaults here; ProxylessNAS's "mul#log" divides by ``log(target)`` as here, with ``alpha=0.2,
    beta=0.3`` in its search code.

    Scaling of the logarithm: the papers take ``log`` of milliseconds, which is ``<= 0`` for latencies
    of 1 ms and below, making the ratio negative, infinite (budget of exactly 1 ms) or inverted — and
    edge budgets such as 0.5 ms are common. Here both latencies are converted to **microseconds** and
    passed through ``log1p`` (``log(1 + us)``): positive for every positive latency, smooth at 0, and
    within ``1/us`` of ``log(us)`` (0.002 for a 0.5 ms budget, 0.03 % of its log). Note the unit
    changes sensitivity: the ratio is flatter in µs than in ms (25 ms vs a 20 ms budget: 1.022 here,
    1.074 with ms), which a larger ``beta`` can compensate.

    ``d loss / d e_lat_ms > 0`` whenever ``ce > 0`` and ``e_lat_ms > 0``. For ``e_lat_ms <= 0`` (no
    real network; e.g. every op a ``zero``) the ratio is clamped at a tiny positive floor so the value
    and gradient stay finite (the gradient there is 0).
    """

    alpha: float = 0.2  # FBNet's overall scale of the latency factor
    beta: float = 0.6  # FBNet's exponent; ProxylessNAS used 0.3

    name: ClassVar[str]

    def __post_init__(self) -> None:
        for f in fields(self):
            _positive(f"objective 'mul-log': {f.name}", getattr(self, f.name))

    def __call__(self, ce: Tensor, e_lat_ms: Tensor, budget_ms: float, lam: float) -> Tensor:
        """The loss; see the class docstring and :class:`LatencyObjective` for the contract and units."""
        _check_budget_lam(budget_ms, lam)
        e_lat_us = (e_lat_ms * 1000.0).clamp_min(0.0)  # log1p is NaN below -1
        # Floor: pow(x, beta < 1) has an infinite derivative at 0.
        ratio = (torch.log1p(e_lat_us) / math.log1p(budget_ms * 1000.0)).clamp_min(1e-12)
        return ce * self.alpha * ratio**self.beta


@register_objective("hinge")
@dataclass(frozen=True)
class HingeObjective:
    """``ce + lam * relu(e_lat_ms / budget_ms - 1)``: penalise only the excess over the budget.

    ``d loss / d e_lat_ms = lam / budget_ms`` when over budget and **exactly 0** when at or under it,
    by definition: a network inside its budget is not pushed to be faster. Use ``add`` (or a slightly
    lower budget) if the search should keep trading accuracy for speed below the budget.
    """

    name: ClassVar[str]

    def __call__(self, ce: Tensor, e_lat_ms: Tensor, budget_ms: float, lam: float) -> Tensor:
        """The loss; see the class docstring and :class:`LatencyObjective` for the contract and units."""
        _check_budget_lam(budget_ms, lam)
        return ce + lam * torch.relu(e_lat_ms / budget_ms - 1.0)


OBJECTIVES: tuple[str, ...] = tuple(_REGISTRY)
"""Names of the registered objectives, in registration order (``add``, ``mul-log``, ``hinge``)."""


def get_objective(name: str, **params: float) -> LatencyObjective:
    """A new objective of the registered form ``name``, with optional parameters (``alpha``, ``beta``).

    Raises:
        ObjectiveError: for an unknown name (the message lists the registered names) or a parameter
            the form does not take (the message lists the ones it does).
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ObjectiveError(
            f"unknown latency objective {name!r}; registered objectives: {', '.join(_REGISTRY)}"
        ) from None
    allowed = [f.name for f in fields(cls)]
    extra = sorted(set(params) - set(allowed))
    if extra:
        raise ObjectiveError(
            f"objective {name!r} takes no parameter(s) {', '.join(extra)}; it takes: {', '.join(allowed) or 'nothing'}"
        )
    return cls(**params)


class DualLambda:
    """A latency multiplier ``lam >= 0`` adapted by dual ascent on the constraint ``e_lat <= budget``.

    After each architecture step call :meth:`step` with the current expected latency:
    ``lam <- max(0, lam + lr * (e_lat_ms / budget_ms - 1))``. Over budget ``lam`` rises by
    ``lr`` times the relative excess; under budget it falls by ``lr`` times the relative slack, never
    below 0. The violation is relative (a fraction of the budget), so ``lr`` is unitless and one value
    serves a 0.5 ms and a 50 ms budget alike; the default ``lr=0.5`` moves ``lam`` by 0.05 per step at
    10 % over budget — fast enough to react within tens of steps, slow enough not to oscillate on the
    step-to-step noise of a sampled (binary / gumbel) latency estimate.

    Used with ``add`` or ``hinge``; ``mul-log`` ignores ``lam``.
    """

    def __init__(self, lam0: float = 0.0, lr: float = 0.5) -> None:
        """``lam0``: starting multiplier (>= 0; 0 means no latency pressure until the budget is exceeded).
        ``lr``: dual step size (> 0, unitless)."""
        self.value = _nonneg("lam0", lam0)
        self.lr = _positive("lr", lr)
        self.steps = 0

    def step(self, e_lat_ms: float, budget_ms: float) -> float:
        """Update and return the multiplier given the expected latency and the budget (both in ms).

        ``e_lat_ms`` may be a 0-d tensor; its value is used, never its graph.
        """
        e = float(e_lat_ms.detach()) if isinstance(e_lat_ms, Tensor) else float(e_lat_ms)
        if not (math.isfinite(e) and e >= 0):
            raise ObjectiveError(f"expected latency must be a finite number of ms >= 0, got {e!r}")
        _positive("budget_ms", budget_ms)
        self.value = max(0.0, self.value + self.lr * (e / budget_ms - 1.0))
        self.steps += 1
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state for a checkpoint: ``{"value": float, "lr": float, "steps": int}``."""
        return {"value": self.value, "lr": self.lr, "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` output (also after a JSON round trip).

        Every field is validated before any is set, so a bad state leaves the multiplier unchanged.
        """
        missing = [k for k in ("value", "lr", "steps") if k not in state]
        if missing:
            raise ObjectiveError(f"DualLambda state is missing {', '.join(missing)}")
        steps = state["steps"]
        if not is_int(steps, 0):
            raise ObjectiveError(f"DualLambda state: steps must be an int >= 0, got {steps!r}")
        value = _nonneg("DualLambda state: value", state["value"])
        lr = _positive("DualLambda state: lr", state["lr"])
        self.value, self.lr, self.steps = value, lr, steps

    def __repr__(self) -> str:
        return f"DualLambda(value={self.value!r}, lr={self.lr!r}, steps={self.steps})"


def _number(what: str, v: object) -> float:
    if not is_number(v):
        raise ObjectiveError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def _nonneg(what: str, v: object) -> float:
    x = _number(what, v)
    if x < 0:
        raise ObjectiveError(f"{what} must be >= 0, got {v!r}")
    return x


def _positive(what: str, v: object) -> float:
    x = _number(what, v)
    if x <= 0:
        raise ObjectiveError(f"{what} must be > 0, got {v!r}")
    return x
