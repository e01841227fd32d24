"""Relaxation strategies: how a mixed op combines its candidates. Small classes, one interface.

A :class:`MixedOp` hands its candidates, its input and its row of architecture logits to the
strategy of the supernet; the strategy returns the output. Expected latency does not depend on
the strategy (see :mod:`hwnas.supernet`): it is always ``softmax(alpha) . latency``.

* ``softmax`` (DARTS): the softmax-weighted sum of every candidate.
* ``gumbel`` (FBNet; GDAS with ``hard``): a Gumbel-softmax sample of the weights at temperature
  ``tau`` (annealed by the search); ``hard`` runs only the sampled candidate, straight-through.
* ``binary`` (ProxylessNAS): the weight step runs one path sampled from ``softmax(alpha)``; the
  architecture step samples two paths, runs both, and passes the binary-gate gradient to their
  logits through the two-path softmax; after the optimiser step :meth:`Binary.rescale` shifts the
  two logits so that every other candidate's probability is unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import UsageError


class Strategy:
    """Base class; ``phase`` is ``"weights"`` or ``"arch"`` (set by the search loop)."""

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        # True if the weight step runs one sampled path per mixed op: such a supernet shares
        # conv weights between candidates by default (hwnas.supernet.MixedOp), and its search
        # defaults to lower learning rates and a warm-up (hwnas.search.resolve_defaults)
        self.single_path = False
        self.phase = "weights"
        self.tau = 1.0  # Gumbel temperature; the search anneals it

    def begin_step(self) -> None:
        """Called before each forward of a search step (weights or architecture)."""

    def mix(
        self, ops: Sequence[nn.Module], xs: tuple[torch.Tensor, ...], alpha: torch.Tensor, key: int
    ) -> torch.Tensor:
        """Combine the candidates ``ops`` on inputs ``xs`` given the logits row ``alpha``.

        ``key`` names the logits row; mixed ops that share a row (DARTS cells) share its samples.
        """
        raise NotImplementedError


class Softmax(Strategy):
    name = "softmax"

    def mix(
        self, ops: Sequence[nn.Module], xs: tuple[torch.Tensor, ...], alpha: torch.Tensor, key: int
    ) -> torch.Tensor:
        w = F.softmax(alpha, dim=-1)
        return sum(wi * op(*xs) for wi, op in zip(w, ops, strict=True))  # type: ignore[return-value]


class Gumbel(Strategy):
    name = "gumbel"

    def __init__(self, hard: bool = False) -> None:
        super().__init__()
        self.hard = hard
        self.single_path = hard

    def mix(
        self, ops: Sequence[nn.Module], xs: tuple[torch.Tensor, ...], alpha: torch.Tensor, key: int
    ) -> torch.Tensor:
        w = F.gumbel_softmax(alpha, tau=self.tau, hard=self.hard)
        if self.hard:
            i = int(w.argmax())
            return w[i] * ops[i](*xs)  # one path; the gradient reaches alpha through w[i]
        return sum(wi * op(*xs) for wi, op in zip(w, ops, strict=True))  # type: ignore[return-value]


class Binary(Strategy):
    name = "binary"

    def __init__(self) -> None:
        super().__init__()
        self.single_path = True
        self.sampled: dict[int, tuple[int, ...]] = {}  # logits row -> path(s) sampled this step
        # run the unpicked path of a pair without a graph (first-order gradients are unchanged);
        # the second-order step needs the full graph and turns this off while it runs
        self.lean = True

    def begin_step(self) -> None:
        self.sampled = {}

    def mix(
        self, ops: Sequence[nn.Module], xs: tuple[torch.Tensor, ...], alpha: torch.Tensor, key: int
    ) -> torch.Tensor:
        if len(ops) == 1:
            return ops[0](*xs)
        p = F.softmax(alpha.detach(), dim=-1)
        if self.phase == "weights":
            if key not in self.sampled:
                self.sampled[key] = (int(torch.multinomial(p, 1)),)
            return ops[self.sampled[key][0]](*xs)
        if key not in self.sampled:
            self.sampled[key] = tuple(int(v) for v in torch.multinomial(p, 2, replacement=False))
        i, j = self.sampled[key]
        pair = F.softmax(alpha[[i, j]], dim=-1)  # differentiable two-path probabilities
        pick = int(torch.multinomial(pair.detach(), 1))
        gate = F.one_hot(torch.tensor(pick), 2).to(pair) - pair.detach() + pair  # straight-through binary gate
        # The unpicked path's gate is exactly 0: it passes no gradient to its input or weights, and
        # its gate needs only its output value, so it runs without a graph (ProxylessNAS).
        paths = (i, j)
        outs: list[torch.Tensor] = [torch.empty(0), torch.empty(0)]
        outs[pick] = ops[paths[pick]](*xs)
        with torch.no_grad() if self.lean else contextlib.nullcontext():
            outs[1 - pick] = ops[paths[1 - pick]](*xs)
        return gate[0] * outs[0] + gate[1] * outs[1]

    @staticmethod
    @torch.no_grad()
    def rescale(alpha: torch.Tensor, old: torch.Tensor, pair: tuple[int, ...]) -> None:
        """Shift the updated logits of ``pair`` so their total probability mass is what it was,
        which leaves every other candidate's probability unchanged (ProxylessNAS)."""
        idx = list(pair)
        alpha[idx] += torch.logsumexp(old[idx], 0) - torch.logsumexp(alpha[idx], 0)


STRATEGIES = ("softmax", "binary", "gumbel")


def make_strategy(name: str, hard: bool = False) -> Strategy:
    """The strategy registered as ``name``; the error lists the registered names."""
    if name == "softmax":
        return Softmax()
    if name == "gumbel":
        return Gumbel(hard=hard)
    if name == "binary":
        return Binary()
    raise UsageError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
