#!/usr/bin/env python3
"""One-path supernet benchmark: does a supernet trained one sampled path per step learn?

Weight-only training of a space's sharing supernet (what ``binary`` and ``gumbel --hard``
run in their weight steps and warm-up), one path per step drawn uniformly from the candidates a
variant allows, on the first ``--images`` Fashion-MNIST training images at their 28 px. Prints the
train accuracy (and loss) of each window of 50 steps, and a table of the last window per variant
and seed. This is where the README's table of one-path fbnet training comes from. Figures, not
assertions.

Variants (candidate labels as the supernet prints them; a layer keeps all its candidates when a
variant allows none of them):

* ``fixed`` — ``mbconv_k3_e3`` everywhere it is offered: a plain network, the ceiling;
* ``e1+e3`` — ``mbconv_k3_e1`` and ``mbconv_k3_e3``;
* ``mbconv`` — k3/k5 × e1/e3/e6;
* ``mbconv+skip-identity`` — and ``skip`` where it is the identity (the layer keeps its shape);
* ``mbconv+skip`` — and ``skip`` everywhere, a 1x1 projection where the layer changes shape;
* ``mbconv+g2`` — and the group-2 e1 candidates;
* ``all`` — every candidate.

``--no-align`` builds the supernet without starting the expansions as the identity where a layer
offers e1 (:meth:`hwnas.supernet.MixedOp._align_expansions`): the behaviour before it existed.
``--space darts`` trains the DARTS cell supernet the same way, one op per edge (its op names
match no variant but ``all``, so every variant trains all eight).

    python bench/one_path.py                                # all variants, seeds 0 and 1: ~25 min
    python bench/one_path.py --variants e1+e3 --no-align    # the "before" row
    python bench/one_path.py --variants all --steps 2000    # how long all nine take (~5 min a seed)
    python bench/one_path.py --space darts --variants all --seeds 0 --steps 1000   # ~16 min
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from hwnas.data import load_dataset, make_loader
from hwnas.ops.blocks import Skip
from hwnas.space import load_space
from hwnas.strategies import Binary
from hwnas.supernet import MixedOp, Supernet

MBCONV = [f"mbconv_k{k}_e{e}" for k in (3, 5) for e in (1, 3, 6)]
VARIANTS: dict[str, list[str]] = {
    "fixed": ["mbconv_k3_e3"],
    "e1+e3": ["mbconv_k3_e1", "mbconv_k3_e3"],
    "mbconv": MBCONV,
    "mbconv+skip-identity": [*MBCONV, "skip-identity"],
    "mbconv+skip": [*MBCONV, "skip"],
    "mbconv+g2": [*MBCONV, "mbconv_k3_e1_g2", "mbconv_k5_e1_g2"],
    "all": [],
}
WINDOW = 50


class Allowed(Binary):
    """The binary strategy's weight step, drawing each layer's path uniformly from ``allowed[key]``."""

    def __init__(self, allowed: dict[int, list[int]]) -> None:
        super().__init__()
        self.allowed = allowed

    def mix(
        self, ops: Sequence[nn.Module], xs: tuple[torch.Tensor, ...], alpha: torch.Tensor, key: int
    ) -> torch.Tensor:
        if key not in self.sampled:
            idx = self.allowed[key]
            self.sampled[key] = (idx[int(torch.randint(len(idx), ()))],)
        return ops[self.sampled[key][0]](*xs)


def allowed_paths(net: Supernet, labels: list[str]) -> dict[int, list[int]]:
    """Per logits row, the candidate indices the variant allows (all of them if it allows none)."""
    out = {}
    for m in net.modules():
        if not isinstance(m, MixedOp):
            continue
        choices = net.rows[m.key].choices
        idx = []
        for i, (label, op) in enumerate(zip(choices, m.ops, strict=True)):
            identity = isinstance(op, Skip) and isinstance(op.proj, nn.Identity)
            if label in labels or (label == "skip" and identity and "skip-identity" in labels):
                idx.append(i)
        out[m.key] = idx or list(range(len(choices)))
    return out


def run(space: str, variant: str, seed: int, a: argparse.Namespace) -> tuple[float, float]:
    """Train; print each window; return the last window's (train accuracy, loss)."""
    torch.manual_seed(seed)
    sp = load_space(space).with_params(in_channels=1, num_classes=10).with_params(input_size=28)
    if a.no_align:
        MixedOp._align_expansions = lambda self: None  # type: ignore[method-assign]
    strat = Allowed({})
    net = Supernet(sp, strat, share=True)
    strat.allowed = allowed_paths(net, VARIANTS[variant])
    ds, _ = load_dataset("fashion-mnist", train=True)
    ds = Subset(ds, range(min(a.images, len(ds))))  # type: ignore[arg-type]
    opt = torch.optim.SGD(net.weight_parameters(), lr=a.lr, momentum=0.9, weight_decay=3e-4)
    net.train()
    strat.phase = "weights"
    step, t0 = 0, time.perf_counter()
    loss_sum = correct = seen = 0.0
    last = (0.0, 0.0)
    while step < a.steps:
        for x, y in make_loader(ds, a.batch, True, seed * 100_003 + step):
            out = net(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            step += 1
            if step % WINDOW == 0:
                last = (correct / seen, loss_sum / seen)
                print(
                    f"{variant:<22} seed {seed} step {step:>4}: train acc {last[0]:.3f}, loss {last[1]:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
                loss_sum = correct = seen = 0.0
            if step >= a.steps:
                break
    return last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="fbnet", help="a space: fbnet, darts, ...")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, default=400, help="weight steps (a multiple of 50 is reported whole)")
    ap.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (the one-path search default)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=8000, help="the first N Fashion-MNIST training images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-align", action="store_true", help="expansions not started as the identity (before)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    results = {(v, s): run(a.space, v, s, a) for v in a.variants for s in a.seeds}
    print(f"\n{a.space}, {a.steps} steps, lr {a.lr}, batch {a.batch}{', no alignment' if a.no_align else ''}")
    print(f"{'variant':<22}" + "".join(f"{'seed ' + str(s):>10}" for s in a.seeds) + f"{'median':>9}")
    for v in a.variants:
        accs = [results[v, s][0] for s in a.seeds]
        print(f"{v:<22}" + "".join(f"{x:>10.1%}" for x in accs) + f"{statistics.median(accs):>9.1%}")


if __name__ == "__main__":
    main()
