"""DARTS's second-order architecture gradient: against the exact second-order gradient computed by
autograd through a differentiable virtual SGD step, side effects, the first-order limit, every
strategy, and the virtual step against ``torch.optim.SGD`` itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import hwnas.unrolled as unrolled
from hwnas.space import load_space
from hwnas.strategies import make_strategy
from hwnas.supernet import Supernet
from hwnas.unrolled import _sgd_virtual_step, unrolled_arch_grad

SPACES = {"tiny": load_space("tiny").with_params(input_size=16), "tiny_darts": load_space("tiny_darts")}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one thread is faster, and immune to intra-op threads spinning on a
    loaded machine (tens of seconds per test with two threads there)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


class Shim(nn.Module):
    """A smooth model with the supernet's interface: tanh features, two heads mixed by the strategy."""

    def __init__(self, strategy: str = "softmax") -> None:
        super().__init__()
        self.strategy = make_strategy(strategy)
        self.w1 = nn.Parameter(torch.randn(5, 6) * 0.7)
        self.heads = nn.ModuleList([nn.Linear(6, 3), nn.Sequential(nn.Linear(6, 3), nn.Tanh(), nn.Linear(3, 3))])
        self.alpha = nn.Parameter(torch.randn(2))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))  # forward changes it

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weight_parameters(self):
        return (p for n, p in self.named_parameters() if n != "alpha")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.strategy.begin_step()
        return self.strategy.mix(self.heads, (torch.tanh(x @ self.w1),), self.alpha, 0)


def _supernet(space: str, strategy: str, hard: bool = False, double: bool = True) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(SPACES[space], make_strategy(strategy, hard=hard))
    if double:
        net = net.double()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()
    return net


def _batches(net: nn.Module, shape: tuple[int, ...], classes: int, n: int = 4):
    dtype = next(net.parameters()).dtype
    g = torch.Generator().manual_seed(1)
    return tuple(
        (torch.randn(n, *shape, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)) for _ in "tv"
    )


def _optimiser(net: nn.Module, batch, lr: float = 0.1) -> torch.optim.SGD:
    """The search's SGD (momentum, weight decay) after one real step, so momentum buffers exist."""
    opt = torch.optim.SGD(net.weight_parameters(), lr=lr, momentum=0.9, weight_decay=3e-4)
    net.strategy.phase = "weights"
    F.cross_entropy(net(batch[0]), batch[1]).backward()
    opt.step()
    net.zero_grad(set_to_none=True)
    return opt


def _exact(net: nn.Module, train, val, opt: torch.optim.SGD, arch_loss) -> list[torch.Tensor]:
    """∇_α L_val(w'(α), α) by autograd, with w'(α) the SGD step (momentum buffer, weight decay)
    taken differentiably (create_graph); forwards drawn in order from the current RNG state."""
    params = dict(net.named_parameters())
    arch_ids = {id(a) for a in net.arch_parameters()}
    alpha = {n: p.detach().clone().requires_grad_() for n, p in params.items() if id(p) in arch_ids}
    w = {n: p.detach().clone().requires_grad_() for n, p in params.items() if id(p) not in arch_ids}
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    (group,) = opt.param_groups
    if hasattr(net.strategy, "lean"):
        net.strategy.lean = False  # the exact reference needs every path's graph, as the unrolled step does
    net.strategy.phase = "arch"
    loss = F.cross_entropy(functional_call(net, {**w, **alpha}, (train[0],)), train[1])
    grads = torch.autograd.grad(loss, list(w.values()), create_graph=True, allow_unused=True)
    stepped = {}
    for (n, p), g in zip(w.items(), grads, strict=True):
        if g is None:  # SGD skips a weight without a gradient
            stepped[n] = p
            continue
        buf = opt.state[params[n]].get("momentum_buffer")
        d = g + group["weight_decay"] * p
        if buf is not None:
            d = group["momentum"] * buf + d
        stepped[n] = p - group["lr"] * d
    value = arch_loss(functional_call(net, {**stepped, **alpha}, (val[0],)), val[1])
    out = torch.autograd.grad(value, list(alpha.values()))
    with torch.no_grad():
        for n, b in net.named_buffers():
            b.copy_(buffers[n])
    return list(out)


def _flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _first_order(net: nn.Module, val, arch_loss) -> torch.Tensor:
    net.strategy.phase = "arch"
    return _flat(torch.autograd.grad(arch_loss(net(val[0]), val[1]), net.arch_parameters()))


@pytest.mark.parametrize("strategy", ["softmax", "gumbel"])
def test_default_finite_differences_match_exact_on_a_smooth_model(strategy: str) -> None:
    torch.manual_seed(0)
    net = Shim(strategy).double()
    train, val = _batches(net, (5,), 3, n=16)
    opt = _optimiser(net, train, lr=0.5)
    state = torch.get_rng_state()
    unrolled_arch_grad(net, train, val, opt, ce)
    got = _flat(a.grad for a in net.arch_parameters())
    torch.set_rng_state(state)
    exact = _flat(_exact(net, train, val, opt, ce))
    first = _first_order(net, val, ce)
    assert _rel(first, exact) > 0.05, "the second-order term should matter here"
    assert _rel(got, exact) < 1e-4


@pytest.mark.parametrize(
    ("space", "strategy"),
    [("tiny", "softmax"), ("tiny_darts", "softmax"), ("tiny", "binary"), ("tiny_darts", "gumbel")],
)
def test_matches_exact_second_order_on_tiny_supernets(space: str, strategy: str, monkeypatch) -> None:
    """Float64, but with a finite-difference radius of 1e-7 instead of DARTS's 0.01: the supernets
    are piecewise smooth (ReLU, ReLU6, max-pool), so ∇_α L_train jumps where an activation crosses
    a kink, and w ± 0.01 u/‖u‖ crosses many of them. The autograd Hessian is that of the smooth piece
    at w; on these tiny random networks the 0.01 finite difference misses it by as much as the
    second-order term itself, whatever the precision (the error only vanishes once the radius is
    below the distance to the nearest kink, ~1e-6 here). A radius of 1e-7 stays inside one piece, so
    the comparison checks the algorithm (step, momentum, weight decay, sign, scaling, re-seeding) to
    ~1e-9. The sampling strategies also check the re-seeding: the reference draws the train and then
    the validation forward from the entry RNG state, without any re-seeding."""
    monkeypatch.setattr(unrolled, "FD_RADIUS", 1e-7)
    net = _supernet(space, strategy)
    sp = SPACES[space]
    train, val = _batches(net, sp.input_shape, sp.num_classes)
    opt = _optimiser(net, train, lr=0.1)
    state = torch.get_rng_state()
    unrolled_arch_grad(net, train, val, opt, ce)
    after, sampled = torch.get_rng_state(), getattr(net.strategy, "sampled", None)
    got = _flat(a.grad for a in net.arch_parameters())
    torch.set_rng_state(state)
    exact = _flat(_exact(net, train, val, opt, ce))
    assert torch.equal(torch.get_rng_state(), after), "RNG: as after one train and one validation forward"
    if sampled is not None:
        assert sampled == net.strategy.sampled, "binary: the validation forward's samples are kept"
    torch.set_rng_state(state)
    torch.randn(1)  # any other draw: the first-order gradient need not share the samples
    first = _first_order(net, val, ce)
    assert _rel(first, exact) > 0.1, "the second-order term should matter here"
    assert _rel(got, exact) < 1e-6


@pytest.mark.parametrize(
    ("space", "strategy", "hard"),
    [(sp, st, False) for sp in SPACES for st in ("softmax", "binary", "gumbel")] + [("tiny_darts", "gumbel", True)],
)
def test_every_strategy_restores_the_weights_and_fills_every_arch_grad(space: str, strategy: str, hard: bool) -> None:
    net = _supernet(space, strategy, hard=hard, double=False)
    net.train()
    sp = SPACES[space]
    train, val = _batches(net, sp.input_shape, sp.num_classes)
    opt = _optimiser(net, train)
    before = {k: v.clone() for k, v in net.state_dict().items()}  # weights, alphas, BN statistics
    opt_before = {id(p): s["momentum_buffer"].clone() for p, s in opt.state.items()}
    for p in net.weight_parameters():
        p.grad = torch.ones_like(p)
    for a in net.arch_parameters():
        a.grad = torch.full_like(a, float("nan"))  # replaced, not accumulated
    net.strategy.phase = "weights"
    value = unrolled_arch_grad(net, train, val, opt, ce)
    assert value.dim() == 0 and not value.requires_grad and torch.isfinite(value)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    assert all(p.grad is None for p in net.weight_parameters())
    for a in net.arch_parameters():
        assert a.grad is not None and torch.isfinite(a.grad).all() and (a.grad != 0).any()
    assert net.strategy.phase == "weights"
    assert opt.param_groups[0]["lr"] == 0.1
    assert all(torch.equal(s["momentum_buffer"], opt_before[id(p)]) for p, s in opt.state.items())


@pytest.mark.parametrize("space", list(SPACES))
def test_tiny_learning_rate_gives_the_first_order_gradient(space: str) -> None:
    net = _supernet(space, "softmax")
    sp = SPACES[space]
    train, val = _batches(net, sp.input_shape, sp.num_classes)
    opt = _optimiser(net, train, lr=1e-12)
    unrolled_arch_grad(net, train, val, opt, ce)
    got = _flat(a.grad for a in net.arch_parameters())
    torch.testing.assert_close(got, _first_order(net, val, ce), rtol=1e-7, atol=1e-9)


def test_latency_term_is_counted_once() -> None:
    """A latency term depends on α only: it adds its own gradient to the result and nothing else."""
    net = _supernet("tiny_darts", "softmax")
    sp = SPACES["tiny_darts"]
    train, val = _batches(net, sp.input_shape, sp.num_classes)
    opt = _optimiser(net, train)
    cost = [torch.rand(a.shape, dtype=torch.float64) for a in net.arch_parameters()]

    def latency() -> torch.Tensor:
        return sum((F.softmax(a, -1) * c).sum() for a, c in zip(net.arch_parameters(), cost, strict=True))

    unrolled_arch_grad(net, train, val, opt, ce)
    plain = _flat(a.grad for a in net.arch_parameters())
    value = unrolled_arch_grad(net, train, val, opt, lambda lo, y: ce(lo, y) + 0.3 * latency())
    with_lat = _flat(a.grad for a in net.arch_parameters())
    lat_grad = _flat(torch.autograd.grad(0.3 * latency(), net.arch_parameters()))
    torch.testing.assert_close(with_lat - plain, lat_grad, rtol=1e-6, atol=1e-10)
    assert float(value) > 0.3 * float(latency().detach())


SGD_CONFIGS = [
    {"momentum": 0.0, "weight_decay": 0.0},
    {"momentum": 0.0, "weight_decay": 1e-2},
    {"momentum": 0.9, "weight_decay": 3e-4},
    {"momentum": 0.9, "weight_decay": 3e-4, "nesterov": True},
    {"momentum": 0.9, "dampening": 0.3, "weight_decay": 3e-4},
    {"momentum": 0.9, "weight_decay": 3e-4, "maximize": True},
]


@pytest.mark.parametrize("with_buffer", [False, True])
@pytest.mark.parametrize("cfg", SGD_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_virtual_step_is_torch_sgd_step(cfg: dict, with_buffer: bool) -> None:
    """The virtual step gives what ``SGD.step`` gives, bit for bit, reading but not updating the
    buffer; its coefficient ``xi`` is d(new)/d(grad) = -xi."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(7, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.3, **cfg)
    if with_buffer:
        p.grad = torch.randn_like(p)
        opt.step()
    buf = opt.state[p].get("momentum_buffer")
    buf_copy = None if buf is None else buf.clone()
    g = torch.randn_like(p)
    new, xi = _sgd_virtual_step(p, g, opt.param_groups[0], buf)
    if buf is not None:
        assert torch.equal(buf, buf_copy)
    delta = torch.randn_like(p) * 1e-3
    new2, _ = _sgd_virtual_step(p, g + delta, opt.param_groups[0], buf)
    torch.testing.assert_close(new2 - new, -xi * delta, rtol=1e-9, atol=1e-12)
    p.grad = g
    opt.step()
    assert torch.equal(new, p.detach())
