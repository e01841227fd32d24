"""Train a derived architecture from scratch: what ``hwnas train`` runs.

The network is built from the arch JSON at the data set's resolution (the arch is priced at its
deployment input; the layers are the same at any input size the strides allow). DARTS archs can
be trained with their evaluation-time settings: more cells and channels (``cells``, ``channels``;
the reduction cells move to 1/3 and 2/3 depth), an auxiliary head on the output of the cell at
2/3 depth (weight ``auxiliary``) and drop-path on every non-identity edge (probability rising
linearly from 0 to ``drop_path`` over the epochs), as in the DARTS paper.

The training split is divided (seeded) into a part that trains the weights and a validation part
(``val_fraction``) that picks the best epoch; the test split is touched once, by the best weights.

Files in the output directory, all written atomically:

* ``arch.json``: the network as trained (a DARTS arch with the chosen cells and channels);
* ``best.pt``: the best epoch's weights in the format of :mod:`hwnas.weights` (for ``hwnas export``);
* ``last.pt``: the full training state after the last finished epoch (``--resume`` continues it);
* ``history.csv``: one row per epoch (loss, train / validation accuracy, lr, drop-path);
* ``result.json``: test accuracy of the best weights, best epoch, parameters, time;
* ``config.json``: the settings.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from hwnas import checkpoint
from hwnas.arch import Arch
from hwnas.data import load_dataset, make_loader, search_split
from hwnas.errors import HwnasError, gpu_memory_hint, settings_differ, training_device
from hwnas.lut import atomic_write
from hwnas.profiling.runner import write_csv_atomic, write_json_atomic
from hwnas.weights import load_into, same_network, save_weights

STATE_FORMAT = "hwnas.train-state/1"
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; stored in ``config.json`` and in ``last.pt``."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.025  # SGD, momentum 0.9, cosine to 0 (DARTS's evaluation setting)
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0  # max gradient norm; None: no clipping
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    limit: int | None = None  # training-split examples used (both parts); None: all
    val_fraction: float = 0.1  # share of them kept aside to pick the best epoch
    test_limit: int | None = None  # test examples used; None: all
    cells: int | None = None  # DARTS only: cells in the network (None: the arch's)
    channels: int | None = None  # DARTS only: initial channels C (None: the arch's)
    auxiliary: float = 0.0  # DARTS only: weight of the auxiliary head's loss (0: no head; DARTS uses 0.4)
    drop_path: float = 0.0  # DARTS only: final drop-path probability (DARTS uses 0.2)
    seed: int = 0
    workers: int = 0
    device: str = "cpu"  # cpu or cuda


@dataclass(frozen=True)
class TrainResult:
    test_acc: float  # share of the (limited) test split classified right by the best weights, in [0, 1]
    best_val_acc: float  # validation accuracy of the best epoch, in [0, 1]
    best_epoch: int  # 1-based
    train_loss: float  # mean cross-entropy over the last epoch
    params: int  # parameters of the network as exported (auxiliary head excluded)
    seconds: float


def at_resolution(arch: Arch, in_channels: int, size: int) -> Arch:
    """The same network for inputs of ``in_channels`` x ``size`` x ``size``."""
    return Arch(arch.kind, arch.space, (in_channels, size, size), arch.body, arch.info)


def eval_arch(arch: Arch, cells: int | None = None, channels: int | None = None) -> Arch:
    """The network to train: a DARTS arch with ``cells`` cells (reductions at 1/3 and 2/3 depth)
    and ``channels`` initial channels; block archs are returned as they are (and refuse both)."""
    if cells is None and channels is None:
        return arch
    if arch.kind != "cells":
        raise HwnasError("--cells and --channels apply to DARTS cell archs; this arch is a block network")
    body = dict(arch.body)
    if channels is not None:
        if channels < 1:
            raise HwnasError(f"--channels must be positive, got {channels}")
        body["C"] = channels
    if cells is not None:
        if cells < 3:
            raise HwnasError(f"--cells must be at least 3 (a normal cell and two reduction cells), got {cells}")
        body["layers"] = cells
        body["reduce_at"] = [cells // 3, 2 * cells // 3]
    return Arch(arch.kind, arch.space, arch.input, body, arch.info)


class AuxHead(nn.Module):
    """DARTS's auxiliary classifier, made size-agnostic: ReLU, average pool to 2x2, 1x1 conv (128),
    BN, ReLU, 2x2 conv (768), BN, ReLU, linear."""

    def __init__(self, c_in: int, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Conv2d(c_in, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(),
        )  # fmt: skip
        self.classifier = nn.Linear(768, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole samples with probability ``p`` and scale the rest by ``1 / (1 - p)``."""
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class TrainNet(nn.Module):
    """A :class:`~hwnas.arch.PlanNet` plus the training-only parts: auxiliary head and drop-path.

    ``forward`` returns ``(logits, aux_logits or None)``; ``self.net`` is the network exported.
    """

    def __init__(self, arch: Arch, classes: int, auxiliary: bool = False) -> None:
        super().__init__()
        self.net = arch.build()
        nodes = arch.plan.nodes
        self.droppable = {
            i for i, n in enumerate(nodes) if n.tag[:1] == ("edge",) and n.call.op not in ("skip_connect", "none")
        }
        self.aux_at: int | None = None
        self.aux: AuxHead | None = None
        if auxiliary:
            if arch.kind != "cells":
                raise HwnasError("--auxiliary applies to DARTS cell archs; this arch is a block network")
            outs = [i for i, n in enumerate(nodes) if n.tag[:1] == ("cell_out",)]
            at = [i for i in outs if nodes[i].tag[1] == 2 * len(outs) // 3]
            self.aux_at = at[0]
            self.aux = AuxHead(nodes[self.aux_at].call.out_shape[0], classes)
        self.drop_prob = 0.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        aux_in: list[torch.Tensor] = []
        p = self.drop_prob if self.training else 0.0

        def after(i: int, y: torch.Tensor) -> torch.Tensor:
            if p > 0 and i in self.droppable:
                y = drop_path(y, p)
            if i == self.aux_at and self.training:
                aux_in.append(y)
            return y

        logits = self.net(x, after=after if (p > 0 or self.aux is not None) else None)
        aux = self.aux(aux_in[0]) if self.aux is not None and aux_in else None
        return logits, aux


def _subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """``n`` examples of ``ds`` chosen by a seeded permutation (all of them if None)."""
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    return Subset(ds, sorted(order[:n].tolist()))


def _accuracy(net: TrainNet, ds: Dataset) -> float:
    net.eval()
    correct = total = 0
    dev = next(net.parameters()).device
    with torch.no_grad():
        for x, y in make_loader(ds, 256, False, 0):
            x, y = x.to(dev), y.to(dev)
            correct += int((net(x)[0].argmax(1) == y).sum())
            total += len(y)
    return correct / max(1, total)


def _check_fits(arch: Arch, in_channels: int, classes: int, dataset: str) -> None:
    head_classes = arch.body["classes"] if arch.kind == "cells" else arch.body["head"].get("classes")
    if arch.input[0] != in_channels or head_classes != classes:
        raise HwnasError(
            f"the arch was derived for {arch.input[0]}-channel input and {head_classes} classes, but {dataset} has "
            f"{in_channels} channel(s) and {classes} classes; search (or sample) for this data set"
        )


def run_train(
    arch: Arch, cfg: TrainConfig, out_dir: Path | None = None, progress: Progress | None = None, resume: bool = False
) -> TrainResult:
    """Train ``arch`` from scratch under ``cfg``; with ``out_dir``, write the files listed in the
    module docstring and, with ``resume``, continue from its ``last.pt``. Deterministic on CPU:
    a resumed run ends with the same weights as an uninterrupted one."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    trained = eval_arch(arch, cfg.cells, cfg.channels)
    full, info = load_dataset(cfg.dataset, Path(cfg.data_dir) if cfg.data_dir else None, train=True)
    test_ds, _ = load_dataset(cfg.dataset, Path(cfg.data_dir) if cfg.data_dir else None, train=False)
    _check_fits(trained, info.in_channels, info.num_classes, info.name)
    train_ds, val_ds = search_split(full, cfg.seed, 1.0 - cfg.val_fraction, cfg.limit)
    test_ds = _subset(test_ds, cfg.test_limit, cfg.seed)
    if not 0.0 <= cfg.drop_path < 1.0:
        raise HwnasError(f"--drop-path must be in [0, 1), got {cfg.drop_path}")
    if cfg.drop_path > 0 and trained.kind != "cells":
        raise HwnasError("--drop-path applies to DARTS cell archs; this arch is a block network")
    device = training_device(cfg.device)
    net = TrainNet(at_resolution(trained, info.in_channels, info.image_size), info.num_classes, cfg.auxiliary > 0)
    net.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.epochs))
    history: list[dict[str, Any]] = []
    start, best_val, best_epoch = 0, -1.0, 0
    best_state: dict[str, torch.Tensor] = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume and (out_dir / "last.pt").exists():
            start, best_val, best_epoch, history = _load_state(out_dir / "last.pt", cfg, net, opt, sched, trained)
        else:
            write_json_atomic(out_dir / "config.json", asdict(cfg))
            atomic_write(out_dir / "arch.json", trained.to_json().encode())
    loss_avg = history[-1]["loss"] if history else math.nan
    for epoch in range(start, cfg.epochs):
        net.train()
        net.drop_prob = cfg.drop_path * epoch / max(1, cfg.epochs)
        loader = make_loader(train_ds, cfg.batch_size, True, cfg.seed * 1000 + epoch, cfg.workers)
        saved = out_dir / "last.pt" if out_dir is not None else None
        with gpu_memory_hint(cfg.batch_size, f"training epoch {epoch + 1}", saved):
            loss_sum, correct, seen = _train_epoch(net, opt, loader, cfg, epoch, out_dir)
            val_acc = _accuracy(net, val_ds)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        loss_avg = loss_sum / max(1, seen)
        row = {"epoch": epoch + 1, "loss": loss_avg, "train_acc": correct / max(1, seen), "val_acc": val_acc,
               "lr": lr, "drop_path": net.drop_prob}  # fmt: skip
        history.append(row)
        if val_acc > best_val:
            best_val, best_epoch = val_acc, epoch + 1
            if out_dir is not None:
                save_weights(out_dir / "best.pt", trained, net.net, epoch + 1)
            else:
                best_state = {k: v.detach().clone() for k, v in net.net.state_dict().items()}
        if out_dir is not None:
            write_csv_atomic(out_dir / "history.csv", history)
            _save_state(out_dir / "last.pt", epoch + 1, cfg, net, opt, sched, best_val, best_epoch, history)
        if progress:
            progress({**row, "epochs": cfg.epochs, "best_val_acc": best_val})
    if out_dir is not None:
        from hwnas.weights import load_weights

        load_into(net.net, load_weights(out_dir / "best.pt").state_dict, str(out_dir / "best.pt"))
    elif best_epoch:
        net.net.load_state_dict(best_state)
    test_acc = _accuracy(net, test_ds)
    params = sum(p.numel() for p in net.net.parameters())
    res = TrainResult(test_acc, best_val, best_epoch, loss_avg, params, time.perf_counter() - t0)
    if out_dir is not None:
        save_weights(out_dir / "best.pt", trained, net.net, best_epoch, test_acc)
        doc = {**asdict(res), "dataset": info.name, "trained_at_px": info.image_size, "test_examples": len(test_ds),  # type: ignore[arg-type]
               "arch": str(out_dir / "arch.json"), "weights": str(out_dir / "best.pt")}  # fmt: skip
        write_json_atomic(out_dir / "result.json", doc)
    return res


def _train_epoch(
    net: TrainNet, opt: torch.optim.Optimizer, loader: Any, cfg: TrainConfig, epoch: int, out_dir: Path | None
) -> tuple[float, int, int]:
    """One epoch of SGD on ``loader`` (batches moved to the net's device); returns the loss summed
    per example, the examples classified right and the examples seen. A non-finite loss stops
    the run with one line naming the step and the last saved state."""
    dev = next(net.parameters()).device
    loss_sum, correct, seen = 0.0, 0, 0
    for step, (x, y) in enumerate(loader):
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        logits, aux = net(x)
        loss = F.cross_entropy(logits, y)
        if aux is not None:
            loss = loss + cfg.auxiliary * F.cross_entropy(aux, y)
        if not math.isfinite(float(loss.detach())):
            saved = out_dir is not None and (out_dir / "last.pt").exists()
            last = f"the last good state is {out_dir / 'last.pt'}" if saved else "no state was saved yet"  # type: ignore[operator]
            raise HwnasError(
                f"the training loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}; {last} (lower --lr)"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += len(y)
    return loss_sum, correct, seen


def train_arch(
    arch: Arch,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 0.025,
    dataset: str = "fashion-mnist",
    data_dir: Path | None = None,
    limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> TrainResult:
    """Train without writing files (the quality benchmark's use); see :func:`run_train`."""
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, dataset=dataset,
                      data_dir=str(data_dir) if data_dir else None, limit=limit, test_limit=test_limit, seed=seed)  # fmt: skip
    return run_train(arch, cfg)


def _save_state(
    path: Path, epoch: int, cfg: TrainConfig, net: TrainNet, opt, sched, best_val, best_epoch, history
) -> None:
    fields = {
        "format": STATE_FORMAT, "epoch": epoch, "config": json.dumps(asdict(cfg), sort_keys=True),
        "best_val": float(best_val), "best_epoch": int(best_epoch), "history": json.dumps(history),
    }  # fmt: skip
    checkpoint.save(path, fields, {"model": net, "opt": opt, "sched": sched})


def _check_same_network(path: Path, trained: Arch) -> None:
    """``--resume`` continues the network the run trained (its ``arch.json``), not another one
    whose weights happen to have the same shapes. A run directory without ``arch.json`` is left
    to the state's own checks."""
    if not path.exists():
        return
    try:
        same = same_network(Arch.load(path), trained)
    except HwnasError:
        raise HwnasError(
            f"--resume: {path} is not readable; drop --resume and pass --force to start over in {path.parent}"
        ) from None
    if not same:
        raise HwnasError(
            f"--resume: {path.parent} trained another network than this arch (see {path}); resume with that arch, "
            f"or drop --resume and pass --force (or choose another --out) to train this one"
        )


def _load_state(
    path: Path, cfg: TrainConfig, net: TrainNet, opt, sched, trained: Arch
) -> tuple[int, float, int, list[dict[str, Any]]]:
    """Restore ``last.pt`` into ``net``, ``opt`` and ``sched``; refuses, in one line each, a
    file that is not a training state, other settings, and another network than the run's."""
    with checkpoint.readable(path, "training state"):  # truncated, foreign, or with parts missing
        state = checkpoint.load_bytes(path.read_bytes())
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError("not a training state")
        said = settings_differ(state["config"], asdict(cfg))
        if said:
            raise HwnasError(
                f"--resume: {path} was written with other settings ({said}); resume with the same options, "
                f"or drop --resume and pass --force to start over"
            )
        _check_same_network(path.parent / "arch.json", trained)
        checkpoint.restore(state, {"model": net, "opt": opt, "sched": sched})
        return int(state["epoch"]), float(state["best_val"]), int(state["best_epoch"]), json.loads(state["history"])
