"""DARTS's second-order architecture gradient (``--unrolled``; Liu et al., ICLR 2019, eq. 6-8).

One virtual step of the weight optimiser, exactly as ``w_opt.step()`` would take it (learning rate
``xi``, momentum buffer if present, dampening, Nesterov, weight decay)::

    w' = w - xi * step(∇_w L_train(w, α))

and the gradient of the architecture loss at the stepped weights, through the step::

    ∇_α L_val(w', α) - xi ∇²_{α,w} L_train(w, α) ∇_{w'} L_val(w', α)

with the Hessian-vector product by central finite differences::

    ∇²_{α,w} L_train(w, α) v ≈ (∇_α L_train(w⁺, α) - ∇_α L_train(w⁻, α)) / (2ε),   w± = w ± ε v,   ε = 0.01 / ‖v‖

``L_train`` is the cross-entropy on the weight half's batch (the loss the weight step descends);
``L_val`` is the caller's architecture loss on the architecture half's batch, latency term
included. The latency term depends on ``α`` only, so it is part of ``∇_α L_val(w', α)`` (once) and
adds nothing to ``∇_{w'} L_val``, hence nothing to the second term.

Per parameter, ``xi`` is the coefficient of ``∇_w L_train`` in the real update ``w_opt.step()``:
the group's ``lr`` (negated with ``maximize``) times ``c``, with ``c = 1`` for plain SGD and for
momentum without dampening or Nesterov (DARTS's case and the search's: ``xi = lr``); with
dampening and an existing buffer ``c = 1 - dampening``; with Nesterov ``c = 1 + momentum * c'``,
``c'`` the previous value. The product is folded into the vector: ``u = xi ⊙ v``, ``w± = w ± ε u``
with ``ε = FD_RADIUS / ‖u‖`` (``FD_RADIUS = 0.01``) and the correction subtracted is
``(∇_α L_train(w⁺) - ∇_α L_train(w⁻)) / (2ε)``. With one ``xi`` for every weight this is the
formula above up to rounding (the points are the same ``w ± 0.01 v / ‖v‖``). Weights that ``w_opt``
does not hold, or that the train loss does not reach (``grad`` None: ``torch.optim.SGD`` skips
them, weight decay included), stay put in the virtual step and are not perturbed.

The virtual step takes the raw gradient: gradient clipping that the caller applies before the real
step is not mirrored (DARTS does not mirror it either).

Accuracy: the supernets are piecewise smooth (ReLU, ReLU6, max-pool), so ``∇_α L_train`` jumps
where an activation crosses a kink; the finite difference over ``±0.01 u/‖u‖`` crosses many, and on
tiny networks with small batches its error can be as large as the second-order term itself (see
``tests/test_unrolled.py``; that is DARTS's approximation, not rounding). ``FD_RADIUS`` is a module
constant so that it can be studied.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from hwnas.supernet import Supernet

FD_RADIUS = 0.01  # DARTS's r: the finite-difference points are w ± 0.01 u / ‖u‖


def unrolled_arch_grad(
    net: Supernet,
    train_batch: tuple[Tensor, Tensor],
    val_batch: tuple[Tensor, Tensor],
    w_opt: torch.optim.SGD,
    arch_loss: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """Put DARTS's second-order architecture gradient in each arch parameter's ``.grad``.

    ``train_batch`` is a batch of the weight half (its cross-entropy is ``L_train``), ``val_batch``
    one of the architecture half; ``arch_loss(logits, targets)`` is the architecture loss on it,
    latency term included (it may read ``net.expected_latency_ms()``). ``w_opt`` is the weight
    optimiser: its hyper-parameters and momentum buffers are read, never changed. The formula and
    the treatment of ``lr``, momentum and weight decay are in the module docstring.

    Returns the architecture loss at the virtually stepped weights ``w'`` (detached).

    On return:

    * each arch parameter's ``.grad`` holds the second-order gradient (replacing what was there;
      None only when neither term reaches that parameter, as ``backward`` would leave it);
    * the weights and every buffer of ``net`` (BatchNorm running statistics) are bit for bit as
      on entry, and the weights' ``.grad`` are None: compute the weight gradient after this call;
    * ``net.strategy.phase`` is as on entry (every forward here runs with ``"arch"``); a strategy's
      ``sampled`` attribute (:class:`~hwnas.strategies.Binary`) holds the samples of the
      validation forward, as after the first-order architecture forward, so ``Binary.rescale``
      applies to the pair whose gates produced ``∇_α L_val``;
    * the random number generators (CPU, and CUDA where initialised) are where they would be after
      one train forward followed by one validation forward from the entry state.

    Sampling strategies (``binary``, ``gumbel``) draw paths in every forward. To make the finite
    differences differentiate one function, the passes are re-seeded: the virtual train step and
    both finite-difference passes start from the entry RNG state (one sample, the same paths and
    noise at ``w``, ``w⁺`` and ``w⁻``); the validation pass at ``w'`` starts from the state the
    train forward left (a second, independent sample). So the result is the exact second-order
    gradient (up to finite differences) of the sequence "train forward, then validation forward"
    drawn from the entry state. With ``binary`` the virtual train step therefore runs the
    two-path architecture forward, not the one-path weight forward: ``∇_α L_train`` must exist.
    """
    strategy = net.strategy
    arch = list(net.arch_parameters())
    weights = [p for p in net.weight_parameters() if p.requires_grad]
    group_of = {id(p): g for g in w_opt.param_groups for p in g["params"]}
    saved_w = [p.detach().clone() for p in weights]
    saved_buffers = [(b, b.detach().clone()) for b in net.buffers()]
    phase = strategy.phase
    lean = getattr(strategy, "lean", None)
    if lean is not None:
        strategy.lean = False  # binary: the second-order term needs the unpicked path's graph too
    x, y = train_batch
    xv, yv = val_batch
    rng_train = _get_rng()
    try:
        strategy.phase = "arch"
        # virtual step w -> w'
        loss = F.cross_entropy(net(x), y)
        rng_val = _get_rng()
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        del loss
        xi: list[float] = []
        with torch.no_grad():
            for p, g in zip(weights, grads, strict=True):
                group = group_of.get(id(p))
                if g is None or group is None:
                    xi.append(0.0)
                    continue
                buf = w_opt.state.get(p, {}).get("momentum_buffer")
                new, coef = _sgd_virtual_step(p, g, group, buf)
                p.copy_(new)
                xi.append(coef)
        del grads
        # architecture loss at w': ∇_α and v = ∇_{w'}
        _set_rng(rng_val)
        value = arch_loss(net(xv), yv)
        rng_end = _get_rng()
        val_sampled = getattr(strategy, "sampled", None)
        n = len(arch)
        g_val = torch.autograd.grad(value, arch + weights, allow_unused=True)
        d_alpha = list(g_val[:n])
        u = {i: c * g_val[n + i] for i, c in enumerate(xi) if c != 0.0 and g_val[n + i] is not None}
        del g_val
        norm = _global_norm(list(u.values()))
        if 0.0 < norm < math.inf:
            eps = FD_RADIUS / norm
            g_plus = _arch_grad_at(net, weights, saved_w, u, eps, arch, x, y, rng_train)
            g_minus = _arch_grad_at(net, weights, saved_w, u, -eps, arch, x, y, rng_train)
            for k in range(n):
                hess = _fd(g_plus[k], g_minus[k], eps)
                if hess is not None:
                    d_alpha[k] = -hess if d_alpha[k] is None else d_alpha[k] - hess
        if val_sampled is not None:
            strategy.sampled = val_sampled
        _set_rng(rng_end)
    finally:
        strategy.phase = phase
        if lean is not None:
            strategy.lean = lean
        with torch.no_grad():
            for p, w in zip(weights, saved_w, strict=True):
                p.copy_(w)
            for b, saved in saved_buffers:
                b.copy_(saved)
        for p in net.weight_parameters():
            p.grad = None
    for a, g in zip(arch, d_alpha, strict=True):
        a.grad = None if g is None else g.detach()
    return value.detach()


def _sgd_virtual_step(p: Tensor, grad: Tensor, group: dict[str, Any], buf: Tensor | None) -> tuple[Tensor, float]:
    """The value ``torch.optim.SGD`` would give ``p`` for gradient ``grad`` (the same operations in
    the same order; ``buf`` is read, not updated), and the coefficient ``xi`` of ``grad`` in the
    update: ``new = p - xi * grad + (terms that do not depend on grad)``."""
    lr = float(group["lr"])
    wd = float(group.get("weight_decay", 0.0))
    momentum = float(group.get("momentum", 0.0))
    dampening = float(group.get("dampening", 0.0))
    nesterov = bool(group.get("nesterov", False))
    maximize = bool(group.get("maximize", False))
    d = -grad if maximize else grad
    if wd != 0:
        d = d.add(p, alpha=wd)
    c = 1.0
    if momentum != 0:
        if buf is None:
            new_buf = d.clone()
            c_buf = 1.0
        else:
            new_buf = buf.mul(momentum).add_(d, alpha=1 - dampening)
            c_buf = 1 - dampening
        if nesterov:
            d = d.add(new_buf, alpha=momentum)
            c = 1 + momentum * c_buf
        else:
            d = new_buf
            c = c_buf
    return p.detach().add(d, alpha=-lr), (-1.0 if maximize else 1.0) * c * lr


def _arch_grad_at(
    net: Supernet,
    weights: list[Tensor],
    saved_w: list[Tensor],
    u: dict[int, Tensor],
    eps: float,
    arch: list[Tensor],
    x: Tensor,
    y: Tensor,
    rng: tuple[Tensor, list[Tensor] | None],
) -> tuple[Tensor | None, ...]:
    """``∇_α L_train(w + eps u, α)``, the forward drawn from RNG state ``rng``."""
    with torch.no_grad():
        for i, (p, w) in enumerate(zip(weights, saved_w, strict=True)):
            p.copy_(w.add(u[i], alpha=eps) if i in u else w)
    _set_rng(rng)
    loss = F.cross_entropy(net(x), y)
    return torch.autograd.grad(loss, arch, allow_unused=True)


def _fd(plus: Tensor | None, minus: Tensor | None, eps: float) -> Tensor | None:
    if plus is None and minus is None:
        return None
    if plus is None:
        plus = torch.zeros_like(minus)
    if minus is None:
        minus = torch.zeros_like(plus)
    return (plus - minus) / (2 * eps)


def _global_norm(ts: list[Tensor]) -> float:
    if not ts:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t).to(ts[0].device) for t in ts])))


def _get_rng() -> tuple[Tensor, list[Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng(state: tuple[Tensor, list[Tensor] | None]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
