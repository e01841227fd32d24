"""Train a derived architecture from scratch and measure its test accuracy.

The network is built from the arch JSON at the data set's resolution (the arch is priced at its
deployment input; the layers are the same at any input size the strides allow). Used by the
quality benchmark; ``hwnas train`` (checkpoints, resume, evaluation-time DARTS settings) builds
on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from hwnas.arch import Arch
from hwnas.data import load_dataset, make_loader


@dataclass(frozen=True)
class TrainResult:
    test_acc: float  # share of the test split classified right, in [0, 1]
    train_loss: float  # mean cross-entropy over the last epoch
    params: int


def _subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """``n`` examples of ``ds`` chosen by a seeded permutation (all of them if None)."""
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    return Subset(ds, sorted(order[:n].tolist()))


def at_resolution(arch: Arch, in_channels: int, size: int) -> Arch:
    """The same network for inputs of ``in_channels`` x ``size`` x ``size``."""
    return Arch(arch.kind, arch.space, (in_channels, size, size), arch.body, arch.info)


def train_arch(
    arch: Arch,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 0.05,
    dataset: str = "fashion-mnist",
    data_dir: Path | None = None,
    limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> TrainResult:
    """SGD (momentum 0.9, weight decay 3e-4, cosine) on the training split, then test accuracy."""
    torch.manual_seed(seed)
    train_ds, info = load_dataset(dataset, data_dir, train=True)
    test_ds, _ = load_dataset(dataset, data_dir, train=False)
    train_ds, test_ds = _subset(train_ds, limit, seed), _subset(test_ds, test_limit, seed)
    net = at_resolution(arch, info.in_channels, info.image_size).build()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))
    loss_sum = 0.0
    for epoch in range(epochs):
        net.train()
        loss_sum, seen = 0.0, 0
        for x, y in make_loader(train_ds, batch_size, True, seed * 1000 + epoch):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
        sched.step()
        loss_sum /= max(1, seen)
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in make_loader(test_ds, 256, False, 0):
            correct += int((net(x).argmax(1) == y).sum())
            total += len(y)
    return TrainResult(correct / max(1, total), loss_sum, sum(p.numel() for p in net.parameters()))
