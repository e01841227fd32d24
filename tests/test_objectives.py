"""Latency objectives (parametrised over the registry) and the dual-ascent multiplier."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hwnas.errors import HwnasError
from hwnas.objectives import (
    OBJECTIVES,
    DualLambda,
    LatencyObjective,
    ObjectiveError,
    get_objective,
    register_objective,
)


def _mul_log(ce: float, e: float, b: float, lam: float) -> float:
    return ce * 0.2 * (math.log(1 + 1000 * e) / math.log(1 + 1000 * b)) ** 0.6


# The documented formula of each form, in plain floats. A newly registered objective fails
# test_every_objective_has_a_reference_formula until it is added here.
FORMULAS: dict[str, Callable[[float, float, float, float], float]] = {
    "add": lambda ce, e, b, lam: ce + lam * e / b,
    "mul-log": _mul_log,
    "hinge": lambda ce, e, b, lam: ce + lam * max(0.0, e / b - 1),
}


def _grad_sign_expected(name: str, over_budget: bool) -> int:
    if name == "hinge":
        return 1 if over_budget else 0
    return 1


def _loss_and_grad(name: str, ce: float, e: float, budget_ms: float, lam: float) -> tuple[float, float]:
    e_lat = torch.tensor(e, dtype=torch.float64, requires_grad=True)
    loss = get_objective(name)(torch.tensor(ce, dtype=torch.float64), e_lat, budget_ms, lam)
    loss.backward()
    assert e_lat.grad is not None
    return float(loss.detach()), float(e_lat.grad)


def test_registry_names() -> None:
    assert OBJECTIVES == ("add", "mul-log", "hinge")


def test_every_objective_has_a_reference_formula() -> None:
    assert set(FORMULAS) == set(OBJECTIVES)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_objective_satisfies_the_protocol(name: str) -> None:
    obj = get_objective(name)
    assert isinstance(obj, LatencyObjective)
    assert obj.name == name


@pytest.mark.parametrize("name", OBJECTIVES)
@pytest.mark.parametrize(
    ("ce", "e", "budget_ms", "lam"),
    [
        (2.3, 25.0, 20.0, 0.7),  # over budget
        (2.3, 12.0, 20.0, 0.7),  # under budget
        (0.9, 0.8, 0.5, 1.5),  # sub-millisecond budget, over
        (0.9, 0.3, 0.5, 1.5),  # sub-millisecond budget, under
        (1.2, 0.05, 1.0, 0.1),  # budget of exactly 1 ms (log(1 ms) == 0 in the papers' units)
        (4.0, 3000.0, 1500.0, 0.0),  # lam == 0
    ],
)
def test_value_equals_the_formula(name: str, ce: float, e: float, budget_ms: float, lam: float) -> None:
    loss, _ = _loss_and_grad(name, ce, e, budget_ms, lam)
    assert loss == pytest.approx(FORMULAS[name](ce, e, budget_ms, lam), rel=1e-12)


@pytest.mark.parametrize("name", OBJECTIVES)
@pytest.mark.parametrize(("e", "budget_ms"), [(25.0, 20.0), (12.0, 20.0), (0.8, 0.5), (0.3, 0.5)])
def test_gradient_wrt_latency_is_finite_with_the_expected_sign(name: str, e: float, budget_ms: float) -> None:
    _, grad = _loss_and_grad(name, 2.3, e, budget_ms, 0.7)
    assert math.isfinite(grad)
    expected = _grad_sign_expected(name, over_budget=e > budget_ms)
    assert (grad > 0) - (grad < 0) == expected


@pytest.mark.parametrize("name", OBJECTIVES)
def test_value_at_the_budget(name: str) -> None:
    loss, _ = _loss_and_grad(name, 2.0, 20.0, 20.0, 0.5)
    assert loss == pytest.approx({"add": 2.5, "mul-log": 0.2 * 2.0, "hinge": 2.0}[name])


@pytest.mark.parametrize("name", OBJECTIVES)
def test_gradient_reaches_architecture_parameters(name: str) -> None:
    """The expected latency is a dot product with op probabilities (DESIGN.md §9); the loss must
    push probability away from the slow op and towards the fast one."""
    alpha = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    op_latency_ms = torch.tensor([5.0, 10.0, 40.0], dtype=torch.float64)
    e_lat_ms = torch.softmax(alpha, dim=0) @ op_latency_ms  # 18.3 ms, over a 10 ms budget
    loss = get_objective(name)(torch.tensor(2.3, dtype=torch.float64), e_lat_ms, 10.0, 0.7)
    loss.backward()
    assert alpha.grad is not None
    assert torch.isfinite(alpha.grad).all()
    assert alpha.grad[2] > 0 > alpha.grad[0]  # gradient descent lowers the 40 ms op's logit


@pytest.mark.parametrize("name", OBJECTIVES)
def test_zero_latency_stays_finite(name: str) -> None:
    loss, grad = _loss_and_grad(name, 2.3, 0.0, 0.5, 0.7)
    assert math.isfinite(loss)
    assert math.isfinite(grad)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_batched_latency_broadcasts(name: str) -> None:
    e_lat = torch.tensor([10.0, 30.0], requires_grad=True)
    loss = get_objective(name)(torch.tensor(1.0), e_lat, 20.0, 0.5)
    assert loss.shape == (2,)
    loss.sum().backward()
    assert e_lat.grad is not None and torch.isfinite(e_lat.grad).all()


@pytest.mark.parametrize("name", OBJECTIVES)
@pytest.mark.parametrize(
    ("budget_ms", "lam"), [(0.0, 0.5), (-1.0, 0.5), (math.inf, 0.5), (math.nan, 0.5), (20.0, -0.1), (20.0, math.nan)]
)
def test_bad_budget_or_lambda_is_refused(name: str, budget_ms: float, lam: float) -> None:
    with pytest.raises(ObjectiveError):
        get_objective(name)(torch.tensor(1.0), torch.tensor(10.0), budget_ms, lam)


def test_unknown_name_lists_the_registered_names() -> None:
    with pytest.raises(ObjectiveError) as info:
        get_objective("multiply")
    msg = str(info.value)
    assert "'multiply'" in msg
    for name in OBJECTIVES:
        assert name in msg
    assert isinstance(info.value, HwnasError) and isinstance(info.value, ValueError)


def test_mul_log_parameters() -> None:
    obj = get_objective("mul-log", alpha=0.5, beta=0.3)
    loss = obj(torch.tensor(2.0), torch.tensor(40.0), 20.0, 0.0)
    expected = 2.0 * 0.5 * (math.log1p(40_000) / math.log1p(20_000)) ** 0.3
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ObjectiveError, match="alpha, beta"):
        get_objective("mul-log", gamma=1.0)
    with pytest.raises(ObjectiveError, match="nothing"):
        get_objective("add", alpha=1.0)
    with pytest.raises(ObjectiveError, match="beta"):
        get_objective("mul-log", beta=0.0)


def test_mul_log_ignores_lambda() -> None:
    obj = get_objective("mul-log")
    args = (torch.tensor(2.0), torch.tensor(30.0), 20.0)
    assert float(obj(*args, 0.0)) == float(obj(*args, 5.0))


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ObjectiveError, match="already registered"):
        register_objective("add")(type("Other", (), {}))
    assert OBJECTIVES == ("add", "mul-log", "hinge")


# --- DualLambda -----------------------------------------------------------------------------------


def test_dual_lambda_defaults() -> None:
    d = DualLambda()
    assert d.value == 0.0
    assert d.lr == 0.5


def test_dual_lambda_rises_over_budget_and_falls_under_but_not_below_zero() -> None:
    d = DualLambda(lam0=0.1, lr=0.5)
    assert d.step(25.0, 20.0) == pytest.approx(0.1 + 0.5 * 0.25)
    assert d.value == pytest.approx(0.225)
    assert d.step(18.0, 20.0) == pytest.approx(0.225 - 0.5 * 0.1)
    assert d.step(1.0, 20.0) == 0.0
    assert d.step(1.0, 20.0) == 0.0
    assert d.step(20.0, 20.0) == 0.0  # at the budget: no change
    assert d.steps == 5


def test_dual_lambda_accepts_a_tensor_latency() -> None:
    d = DualLambda()
    e_lat = torch.tensor(30.0, requires_grad=True) * 1.0
    assert d.step(e_lat, 20.0) == pytest.approx(0.25)  # type: ignore[arg-type]


@given(st.lists(st.floats(min_value=0.0, max_value=1e4), min_size=1, max_size=30), st.floats(0.01, 1e3))
def test_dual_lambda_moves_with_the_violation_and_stays_nonnegative(lats: list[float], budget_ms: float) -> None:
    d = DualLambda(lam0=0.3)
    for e in lats:
        before = d.value
        after = d.step(e, budget_ms)
        assert after >= 0.0
        if e > budget_ms:
            assert after >= before
        elif e < budget_ms:
            assert after <= before


def test_dual_lambda_state_round_trips_through_json() -> None:
    d = DualLambda(lam0=0.2, lr=0.25)
    for e in (30.0, 25.0, 12.0):
        d.step(e, 20.0)
    state = json.loads(json.dumps(d.state_dict()))
    assert state == d.state_dict()
    again = DualLambda()
    again.load_state_dict(state)
    assert (again.value, again.lr, again.steps) == (d.value, d.lr, d.steps)
    assert again.step(27.0, 20.0) == d.step(27.0, 20.0)


@pytest.mark.parametrize(
    "state",
    [
        {"value": 0.1, "lr": 0.5},
        {"value": -0.1, "lr": 0.5, "steps": 0},
        {"value": 0.1, "lr": 0.0, "steps": 0},
        {"value": 0.1, "lr": "0.5", "steps": 0},
        {"value": float("nan"), "lr": 0.5, "steps": 0},
        {"value": 0.1, "lr": 0.5, "steps": -1},
        {"value": 0.1, "lr": 0.5, "steps": 1.5},
    ],
)
def test_dual_lambda_refuses_a_bad_state(state: dict) -> None:
    d = DualLambda(lam0=0.7)
    with pytest.raises(ObjectiveError):
        d.load_state_dict(state)
    assert d.value == 0.7  # unchanged


@pytest.mark.parametrize(("lam0", "lr"), [(-0.1, 0.5), (0.0, 0.0), (0.0, -1.0), (math.inf, 0.5)])
def test_dual_lambda_refuses_bad_settings(lam0: float, lr: float) -> None:
    with pytest.raises(ObjectiveError):
        DualLambda(lam0=lam0, lr=lr)


@pytest.mark.parametrize(("e", "budget_ms"), [(-1.0, 20.0), (math.nan, 20.0), (10.0, 0.0), (10.0, math.inf)])
def test_dual_lambda_step_refuses_bad_numbers(e: float, budget_ms: float) -> None:
    d = DualLambda(lam0=0.4)
    with pytest.raises(ObjectiveError):
        d.step(e, budget_ms)
    assert d.value == 0.4 and d.steps == 0
