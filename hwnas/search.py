"""The bilevel hardware-aware search: what ``hwnas search`` runs.

Weights train on one half of the training set, architecture logits on the other, alternating
(DARTS), after ``warmup_epochs`` that train only the weights (ProxylessNAS; by default for the
strategies that sample one path, see :func:`resolve_defaults`); the architecture gradient is
first-order, or second-order with ``unrolled`` (:mod:`hwnas.unrolled`). The architecture loss
adds the expected latency of the derived network
(:meth:`hwnas.supernet.Supernet.expected_latency_ms`, priced at the deployment input shape) in the
selected form (:mod:`hwnas.objectives`); ``lam`` adapts by dual ascent on ``E[lat]/budget - 1``.
After derivation, :func:`fit_to_budget` swaps the choices that lose the least architecture
probability per millisecond until the predicted latency is within ``[0.9, 1] x budget``: the
budget is kept, and not left unused.

Files in the run directory (all written atomically): ``arch.json`` (the result), ``history.csv``
(one row per epoch: loss, accuracy, E[lat], lam, tau and every choice's probability),
``checkpoint.pt`` (after every epoch; ``--resume`` continues from it), ``config.json``.

Under ``torchrun`` the same search runs data-parallel (:mod:`hwnas.distributed`): the batch size
is global, every process runs a shard of each batch and samples the same paths, gradients are
averaged, only rank 0 writes; a checkpoint resumes on any number of processes.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from hwnas import checkpoint
from hwnas.arch import Arch
from hwnas.errors import HwnasError, UsageError, gpu_memory_hint, settings_differ, training_device
from hwnas.lut import LUT, LutError, atomic_write
from hwnas.objectives import DualLambda, get_objective
from hwnas.profiling.runner import write_csv_atomic
from hwnas.space import Space, load_space
from hwnas.strategies import Binary, make_strategy
from hwnas.supernet import Supernet, _edge_index, _edge_of, fastest_choices, row_costs, structure
from hwnas.unrolled import unrolled_arch_grad

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from hwnas.distributed import Dist

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search depends on; stored in ``config.json`` and in the checkpoint."""

    space: str = "proxyless"
    strategy: str = "binary"  # softmax | binary | gumbel
    hard: bool = False  # gumbel: GDAS's straight-through hard sample
    unrolled: bool = False  # second-order architecture gradient (DARTS eq. 7-8; about 7x the first-order step)
    loss: str = "hinge"  # add | mul-log | hinge (lam and its dual ascent act on add and hinge)
    budget_ms: float = 5.0
    budget_pct: float | None = (
        None  # if set, the budget is this percentile of random nets' latency (overrides budget_ms)
    )
    budget_floor: float = 0.9  # derive within [floor * budget, budget]; 0: only <= budget
    epochs: int = 3
    warmup_epochs: int | None = None  # the first epochs train only the weights; None: see resolve_defaults
    batch_size: int = 32
    lr: float | None = None  # weights: SGD, momentum 0.9, cosine; None: LR_ONE_PATH or LR_ALL_PATHS
    arch_lr: float | None = None  # architecture: Adam(0.5, 0.999); None: see resolve_defaults
    lam0: float = 1.0  # starting latency multiplier (add / hinge)
    dual_lr: float = 0.05  # dual ascent step on E[lat]/budget - 1, per architecture step
    tau0: float = 5.0  # gumbel temperature at epoch 0 (FBNet) ...
    tau_decay: float = 0.956  # ... times this per epoch
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    limit: int | None = 2000  # training examples used (both halves); None: all
    input_size: int | None = None  # deployment input size (pixels); None: the space's
    width_mult: float | None = None
    seed: int = 0
    workers: int = 0
    device: str = "cpu"  # where the supernet trains: cpu or cuda (under torchrun: each process's GPU)
    share_weights: bool | None = None  # candidates share conv weights; None: if the strategy runs one path


# Defaults that depend on the strategy (resolve_defaults). One sampled path per step (binary,
# gumbel --hard) trains the weights with a noisier gradient than the mixture of all paths: at a
# weight lr of 0.05 that supernet diverges on Fashion-MNIST (28x28, ProxylessNAS space), at 0.01
# it learns. Its architecture step moves two logits per layer from one sample, so it gets a larger
# architecture lr, and, as in ProxylessNAS, warm-up epochs that train only the weights first (the
# first architecture steps on untrained weights are noise). Measured with
# bench/search_budget.py --quality (README): binary at 3 epochs went from below the median random
# net to above the best one with these.
LR_ALL_PATHS, LR_ONE_PATH = 0.05, 0.01
ARCH_LR_ALL_PATHS, ARCH_LR_ONE_PATH = 3e-3, 1e-2
WARMUP_SHARE_ONE_PATH = 3  # one-path strategies warm up for epochs // 3 epochs


# Settings added to SearchConfig after checkpoints were first written, with the value an older
# search ran with: an older checkpoint resumes under the same options.
CONFIG_KEYS_ADDED: dict[str, Any] = {"device": "cpu", "warmup_epochs": 0, "share_weights": False}


def resolve_defaults(cfg: SearchConfig) -> SearchConfig:
    """``cfg`` with the strategy-dependent defaults (``lr``, ``arch_lr``, ``warmup_epochs``,
    ``share_weights``) filled in where they are ``None``, so that config.json and the checkpoint
    record what the search ran with."""
    one = make_strategy(cfg.strategy, hard=cfg.hard).single_path
    return replace(
        cfg,
        lr=cfg.lr if cfg.lr is not None else (LR_ONE_PATH if one else LR_ALL_PATHS),
        arch_lr=cfg.arch_lr if cfg.arch_lr is not None else (ARCH_LR_ONE_PATH if one else ARCH_LR_ALL_PATHS),
        warmup_epochs=(
            cfg.warmup_epochs if cfg.warmup_epochs is not None else (cfg.epochs // WARMUP_SHARE_ONE_PATH if one else 0)
        ),
        share_weights=cfg.share_weights if cfg.share_weights is not None else one,
    )


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def spaces_for(cfg: SearchConfig, in_channels: int, num_classes: int, image_size: int) -> tuple[Space, Space]:
    """(deployment space, training space): same choices; the first at the deployment input size,
    the second at the data's resolution; both with the data's channels and classes."""
    deploy = load_space(cfg.space, cfg.input_size, cfg.width_mult).with_params(
        in_channels=in_channels, num_classes=num_classes
    )
    return deploy, deploy.with_params(input_size=image_size)


def latency_percentile(space: Space, lut: LUT, pct: float, n: int = 500, seed: int = 0) -> float:
    """The ``pct``-th percentile (0-100) of the predicted latency (ms) of ``n`` random networks."""
    if not 0 < pct < 100:
        raise HwnasError(f"a percentile budget must be between p0 and p100, got p{pct:g}")
    rng = random.Random(seed)
    return float(np.percentile([lut.predict(space.sample(rng)).total_ms for _ in range(n)], pct))


def min_latency_arch(net: Supernet, lut: LUT) -> Arch:
    """The fastest network of the space on ``lut`` (the floor of any budget)."""
    st = structure(net.price_space)
    state = fastest_choices(net.price_space, st, row_costs(st, lut.latency))
    return _arch_of(net, net.derive(), state)


def fit_to_budget(net: Supernet, arch: Arch, lut: LUT, budget_ms: float, floor: float = 0.9) -> tuple[Arch, int]:
    """Bring ``arch`` into ``[floor * budget, budget]`` as ``lut`` predicts it, one choice at a time.

    Over budget (repair): each swap is to a cheaper choice, the one giving up the least
    log-probability per ms saved, until the prediction is <= budget; the budget is a promise.
    Under ``floor * budget``: each swap is to a dearer choice that keeps the network within the
    budget, the one giving up the least log-probability per ms gained: latency the target can
    afford is spent where the search was least sure. ``floor = 0`` skips that. Returns the arch and
    the number of swaps. Latencies move by the LUT's per-choice costs (the prediction is additive),
    except where the LUT prices blocks by their role (:meth:`hwnas.arch.Plan.roles`: a DARTS swap
    can change the role of another block): there each candidate swap is priced by
    :meth:`LUT.predict` of the network it makes. The result is checked against :meth:`LUT.predict`.
    """
    costs = row_costs(structure(net.price_space), lut.latency)
    with torch.no_grad():
        logp = [torch.log_softmax(net.row(k), -1).tolist() for k in range(len(net.rows))]
    state = _state_of(net, arch)  # [(row, choice index)] of the arch's decisions
    allowed = [[i for i, c in enumerate(net.rows[r].choices) if c != "none"] for r, _ in state]
    scale = lut.scale
    now = lut.predict(arch).total_ms
    swaps = 0

    additive = not lut.shared  # only DARTS LUTs price blocks by role

    def after(now: float, n: int, i: int) -> float:
        """The prediction (ms) once decision ``n`` takes choice ``i``."""
        r, cur = state[n]
        if additive:
            return now + scale * (costs[r][i] - costs[r][cur])
        return lut.predict(_arch_of(net, arch, [*state[:n], (r, i), *state[n + 1 :]])).total_ms

    def best(now: float, lo: float, hi: float) -> tuple[int, int, float] | None:
        """The swap landing in (lo, hi) (open at lo, closed at hi) at the least log-prob per ms."""
        pick: tuple[float, int, int, float] | None = None
        for n, (r, cur) in enumerate(state):
            for i in allowed[n]:
                if i == cur:
                    continue
                ms = after(now, n, i)
                if lo < ms <= hi and abs(ms - now) > 1e-12:
                    score = (logp[r][cur] - logp[r][i]) / abs(ms - now)
                    if pick is None or score < pick[0]:
                        pick = (score, n, i, ms)
        return None if pick is None else pick[1:]

    while now > budget_ms:
        move = best(now, -math.inf, now - 1e-12)
        if move is None:
            raise HwnasError(
                f"cannot bring the network under {budget_ms:.4g} ms by swapping choices (now {now:.4g} ms)"
            )
        n, i, now = move
        state[n] = (state[n][0], i)
        swaps += 1
    while now < floor * budget_ms:
        move = best(now, now, budget_ms)
        if move is None:
            break
        n, i, now = move
        state[n] = (state[n][0], i)
        swaps += 1
    fitted = _arch_of(net, arch, state)
    check = lut.predict(fitted).total_ms
    if not math.isclose(check, now, rel_tol=1e-6, abs_tol=1e-9):
        raise RuntimeError(f"budget fitting drifted from the LUT: {now} vs {check}")
    return fitted, swaps


def _state_of(net: Supernet, arch: Arch) -> list[tuple[int, int]]:
    """The (logits row, choice index) of every decision an arch derived from ``net`` made."""
    sp = net.price_space
    if sp.kind == "blocks":
        picks = sp.picks(arch)
        rows = [s for s in sp.slots() if len(s.choices) > 1]
        multi = [p for s, p in zip(sp.slots(), picks, strict=True) if len(s.choices) > 1]
        return [(k, slot.choices.index(p)) for k, (slot, p) in enumerate(zip(rows, multi, strict=True))]
    ops = sp.cell_ops
    n_edges = len(net.rows) // 2
    state = []
    for c, cell in enumerate(("normal", "reduce")):
        for e, (op, src) in enumerate(arch.body["genotype"][cell]):
            state.append((c * n_edges + _edge_index(e // 2, src), ops.index(op)))
    return state


def _arch_of(net: Supernet, arch: Arch, state: list[tuple[int, int]]) -> Arch:
    """``arch`` with the decisions of ``state`` (same rows, possibly other choices)."""
    sp = net.price_space
    if sp.kind == "blocks":
        it = iter(state)
        picks = [s.choices[0] if len(s.choices) == 1 else s.choices[next(it)[1]] for s in sp.slots()]
        return sp.blocks_arch(picks, arch.info)
    ops = sp.cell_ops
    n_edges = len(net.rows) // 2
    nodes = int(sp.raw["nodes"])
    geno: dict[str, list[list[object]]] = {"normal": [], "reduce": []}
    for row, i in state:  # rows in node order, two per node, as _state_of and fastest_choices give them
        cell = "normal" if row < n_edges else "reduce"
        _, src = _edge_of(row % n_edges, nodes)
        geno[cell].append([ops[i], src])
    return sp.cells_arch(geno, arch.info)


def _history_row(net: Supernet, epoch: int, stats: dict[str, float]) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": epoch, **stats}
    with torch.no_grad():
        for k, r in enumerate(net.rows):
            for c, p in zip(r.choices, net.probs(k).tolist(), strict=True):
                row[f"p[{r.label}][{c}]"] = round(p, 6)
    return row


def run_search(
    cfg: SearchConfig,
    lut: LUT,
    out_dir: Path,
    progress: Progress | None = None,
    resume: bool = False,
    note: Callable[[str], None] | None = None,
) -> Arch:
    """Search, derive, repair, write ``arch.json`` (and history, checkpoint) to ``out_dir``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1, or with a process group already initialised) the
    search runs data-parallel (:mod:`hwnas.distributed`): ``cfg.batch_size`` is the global batch,
    every process runs its shard of it, gradients are averaged, and only rank 0 writes files and
    calls ``progress``; every process returns the same arch. The checkpoint does not depend on the
    number of processes: ``resume`` continues on any number of them. ``note`` (rank 0 only) gets
    one-line advice before the search starts, e.g. that a one-path strategy meets candidates it
    cannot share weights between (:meth:`Supernet.unaligned`).
    """
    from hwnas.distributed import session

    with session() as dist:
        return _run_search(cfg, lut, out_dir, progress, resume, dist, note)


def _run_search(
    cfg: SearchConfig,
    lut: LUT,
    out_dir: Path,
    progress: Progress | None,
    resume: bool,
    dist: Dist | None,
    note: Callable[[str], None] | None = None,
) -> Arch:
    from hwnas.data import load_dataset, make_loader, search_split

    main = dist is None or dist.is_main
    if dist is not None and cfg.unrolled:
        raise HwnasError("--unrolled runs in one process only; start it without torchrun")
    if dist is not None and cfg.batch_size < dist.world:
        raise HwnasError(
            f"--batch-size is the global batch ({cfg.batch_size}); with {dist.world} processes it must be at least "
            f"{dist.world}, better a multiple of it"
        )
    cfg = resolve_defaults(cfg)
    assert cfg.lr is not None and cfg.arch_lr is not None and cfg.warmup_epochs is not None  # resolved
    if cfg.warmup_epochs >= cfg.epochs:
        raise UsageError(
            f"--warmup-epochs {cfg.warmup_epochs} leaves no epoch of the {cfg.epochs} to search the architecture; "
            f"pass fewer warm-up epochs or more --epochs"
        )
    _seed_all(cfg.seed)
    ds, info = load_dataset(cfg.dataset, Path(cfg.data_dir) if cfg.data_dir else None, train=True)
    deploy, train_sp = spaces_for(cfg, info.in_channels, info.num_classes, info.image_size)
    if int(lut.meta["input_size"]) != deploy.input_size:
        raise LutError(
            f"{lut.path} was measured at input size {lut.meta['input_size']}, the search prices at "
            f"{deploy.input_size}; pass --input-size {lut.meta['input_size']} or profile that size"
        )
    if cfg.budget_pct is not None:
        cfg = replace(cfg, budget_ms=latency_percentile(deploy, lut, cfg.budget_pct))
    strategy = make_strategy(cfg.strategy, hard=cfg.hard)
    net = Supernet(train_sp, strategy, lut, price_space=deploy, share=cfg.share_weights)
    floor = lut.predict(min_latency_arch(net, lut)).total_ms
    if cfg.budget_ms < floor:
        raise HwnasError(
            f"--latency-budget {cfg.budget_ms:.4g} ms is below the fastest network of {deploy.describe()} on this LUT "
            f"({floor:.4g} ms); ask for at least that"
        )
    half_w, half_a = search_split(ds, cfg.seed, 0.5, cfg.limit)
    if note is not None and main and not resume and strategy.single_path:
        steps = cfg.epochs * math.ceil(len(half_w) / cfg.batch_size)
        advice = _one_path_advice(net, f"{cfg.strategy}{' --hard' if cfg.hard else ''}", steps)
        if advice:
            note(advice)
    device = dist.device if dist is not None else training_device(cfg.device)
    net.to(device)
    objective = get_objective(cfg.loss)
    dual = DualLambda(cfg.lam0, cfg.dual_lr)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.lr, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, max(1, cfg.epochs))
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    history: list[dict[str, Any]] = []
    start = 0
    saved = ckpt_path.read_bytes() if resume and main and ckpt_path.exists() else None
    if dist is not None:  # rank 0's checkpoint for everyone: no shared file system needed
        saved = dist.broadcast_bytes(saved)
    if saved is not None:
        start, history = _load_checkpoint(ckpt_path, cfg, net, w_opt, a_opt, sched, dual, saved)
    elif main:
        atomic_write(out_dir / "config.json", (json.dumps(asdict(cfg), indent=2) + "\n").encode())
    if dist is not None:
        from hwnas.distributed import broadcast_state

        broadcast_state(net, dist)  # the same start everywhere, whatever happened before
    for epoch in range(start, cfg.epochs):
        strategy.tau = cfg.tau0 * cfg.tau_decay**epoch
        lw = make_loader(half_w, cfg.batch_size, True, cfg.seed * 1000 + epoch, cfg.workers)
        la = make_loader(half_a, cfg.batch_size, True, cfg.seed * 1000 + epoch + 500, cfg.workers)
        net.train()
        with gpu_memory_hint(cfg.batch_size, f"search epoch {epoch + 1}", ckpt_path):
            if dist is None:
                tot = _epoch(net, cfg, objective, dual, a_opt, w_opt, lw, la, epoch, ckpt_path)
            else:
                tot = _distributed_epoch(net, cfg, objective, dual, a_opt, w_opt, lw, la, epoch, ckpt_path, dist)
        sched.step()
        stats = {
            "loss": tot["loss"] / max(1, tot["seen"]), "train_acc": tot["correct"] / max(1, tot["seen"]),
            "e_lat_ms": float(net.expected_latency_ms().detach()), "budget_ms": cfg.budget_ms, "lam": dual.value,
            "tau": strategy.tau,
        }  # fmt: skip
        history.append(_history_row(net, epoch, stats))
        if main:
            write_csv_atomic(out_dir / "history.csv", history)
            _save_checkpoint(ckpt_path, epoch + 1, cfg, net, w_opt, a_opt, sched, dual, history)
            if progress:
                progress({"epoch": epoch + 1, "epochs": cfg.epochs, **stats})
    derived = net.derive()
    arch, swaps = fit_to_budget(net, derived, lut, cfg.budget_ms, cfg.budget_floor)
    pred = lut.predict(arch).total_ms
    arch = arch.with_info(
        predicted_ms=pred, budget_ms=cfg.budget_ms, budget_pct=cfg.budget_pct, strategy=cfg.strategy, hard=cfg.hard,
        unrolled=cfg.unrolled, loss=cfg.loss,
        seed=cfg.seed, epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs, share_weights=cfg.share_weights,
        dataset=info.name, trained_at_px=info.image_size,
        lut=str(lut.path), lut_sha256=lut.sha256, lut_target=lut.describe(), budget_swaps=swaps, derived_ms=lut.predict(derived).total_ms,
        width_mult=deploy.width_mult, min_latency_ms=floor,
    )  # fmt: skip
    if main:
        atomic_write(out_dir / "arch.json", arch.to_json().encode())
    return arch


def _one_path_advice(net: Supernet, strategy: str, steps: int) -> str | None:
    """One line for a one-path strategy whose supernet will learn slowly, or None; ``steps`` is
    how many weight steps the search will run (warm-up included)."""
    name = net.price_space.name
    if not net.share:
        return (
            f"note: {strategy} runs one candidate per step and --separate-weights gives each its own weights: "
            f"the next layer sees unrelated features from every candidate and the supernet learns slowly; "
            f"--share-weights (the default) relates candidates of the same structure"
        )
    unaligned = net.unaligned()
    if not unaligned:
        return None
    return (
        f"note: {strategy} runs one candidate per step, and in {len(unaligned)} decision(s) of {name} the candidates "
        f"differ in structure ({unaligned[0]}): shared weights cannot make them compute related features, so the "
        "supernet needs many weight steps (one path per step on Fashion-MNIST, train accuracy: fbnet 13-14 % after "
        "400 steps, 49-53 % after 2000; darts 31 % after 400, 56 % after 1000 - bench/one_path.py). This search runs "
        f"{steps} weight step{'s' if steps != 1 else ''} (more: raise --epochs or --limit); softmax or soft gumbel, "
        "which run every candidate, learn sooner"
    )


def _epoch(
    net: Supernet,
    cfg: SearchConfig,
    objective: Callable[..., torch.Tensor],
    dual: DualLambda,
    a_opt: torch.optim.Optimizer,
    w_opt: torch.optim.SGD,
    lw: DataLoader,
    la: DataLoader,
    epoch: int,
    ckpt_path: Path,
) -> dict[str, float]:
    """One epoch in one process; returns its totals (``loss`` summed per example, ``correct``,
    ``seen``, ``e_lat_ms`` summed per step, ``steps``)."""
    tot = {"loss": 0.0, "correct": 0, "seen": 0, "e_lat_ms": 0.0, "steps": 0}
    dev = next(net.weight_parameters()).device
    for step, ((x, y), (xa, ya)) in enumerate(zip(lw, la, strict=False)):
        x, y, xa, ya = (t.to(dev, non_blocking=True) for t in (x, y, xa, ya))
        # architecture step first, as DARTS does (its second-order form looks one weight step ahead)
        check = functools.partial(_check_finite, epoch=epoch, step=step, ckpt=ckpt_path)
        if epoch >= (cfg.warmup_epochs or 0):
            e_lat = arch_step(net, a_opt, objective, dual, cfg.budget_ms, (xa, ya), check, (x, y), w_opt, cfg.unrolled)
        else:
            e_lat = _expected_ms(net)
        loss, logits = weight_step(net, w_opt, (x, y), check)
        tot["loss"] += float(loss.detach()) * len(y)
        tot["correct"] += int((logits.argmax(1) == y).sum())
        tot["seen"] += len(y)
        tot["e_lat_ms"] += e_lat
        tot["steps"] += 1
    return tot


def _distributed_epoch(
    net: Supernet,
    cfg: SearchConfig,
    objective: Callable[..., torch.Tensor],
    dual: DualLambda,
    a_opt: torch.optim.Optimizer,
    w_opt: torch.optim.SGD,
    lw: DataLoader,
    la: DataLoader,
    epoch: int,
    ckpt_path: Path,
    dist: Dist,
) -> dict[str, float]:
    """One epoch of this process's shards of the single-process loaders ``lw`` and ``la``.

    Returns the epoch's totals over every process (``loss`` summed per example, ``correct``,
    ``seen``, ``e_lat_ms`` summed per step, ``steps``); afterwards the BatchNorm running statistics
    are averaged over the processes and the parameters checked to be the same on all of them.
    """
    from hwnas.distributed import average_bn_stats, check_lockstep, shard_loader

    dev = dist.device
    local = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen: this shard's
    e_sum, steps = 0.0, 0
    shards = zip(shard_loader(lw, dist.rank, dist.world), shard_loader(la, dist.rank, dist.world), strict=False)
    for step, (batch, val) in enumerate(shards):
        x, y, w = (t.to(dev, non_blocking=True) for t in batch)
        xa, ya, wa = (t.to(dev, non_blocking=True) for t in val)
        check = functools.partial(_check_finite, epoch=epoch, step=step, ckpt=ckpt_path)
        if epoch >= (cfg.warmup_epochs or 0):
            e_sum += arch_step(net, a_opt, objective, dual, cfg.budget_ms, (xa, ya, wa), check, dist=dist)
        else:
            e_sum += _expected_ms(net)
        _, logits = weight_step(net, w_opt, (x, y, w), check, dist=dist)
        with torch.no_grad():
            ce = F.cross_entropy(logits, y, reduction="none")
            local += torch.stack([(ce * w).sum(), ((logits.argmax(1) == y).float() * w).sum(), w.sum()]).double().cpu()
        steps += 1
    loss, correct, seen = dist.all_reduce_sum(local).tolist()
    average_bn_stats(net, dist)
    check_lockstep([*net.parameters(), torch.get_rng_state()], dist)  # same weights, logits and RNG stream
    return {"loss": loss, "correct": round(correct), "seen": round(seen), "e_lat_ms": e_sum, "steps": steps}


def _expected_ms(net: Supernet) -> float:
    with torch.no_grad():
        return float(net.expected_latency_ms())


def arch_step(
    net: Supernet,
    a_opt: torch.optim.Optimizer,
    objective: Callable[..., torch.Tensor],
    dual: DualLambda,
    budget_ms: float,
    val_batch: tuple[torch.Tensor, ...],
    check: Callable[[torch.Tensor], None],
    train_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    w_opt: torch.optim.SGD | None = None,
    unrolled: bool = False,
    dist: Dist | None = None,
) -> float:
    """One architecture step on ``val_batch``: CE + latency term, backward into the logits only,
    optimiser step, binary's rescale, dual ascent on lam. Returns E[lat] (ms) after the step.

    ``unrolled`` takes DARTS's second-order gradient (needs ``train_batch`` and ``w_opt``).
    ``check`` is called on the loss before it is used (it raises on NaN / inf).

    With ``dist`` (data-parallel, first order only), ``val_batch`` is this process's shard
    ``(x, y, weight)``: the CE is the global batch's mean (:func:`hwnas.distributed.global_mean`)
    and the logits' gradients are averaged over the processes before the optimiser step.
    """
    strategy = net.strategy
    strategy.phase = "arch"

    def arch_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return objective(F.cross_entropy(logits, target), net.expected_latency_ms(), budget_ms, dual.value)

    if dist is not None:
        from hwnas.distributed import average_grads, global_mean

        if unrolled:
            raise ValueError("the unrolled step runs in one process only")
        x, y, w = val_batch  # type: ignore[misc]
        ce = global_mean(F.cross_entropy(net(x), y, reduction="none"), w, dist)
        a_loss = objective(ce, net.expected_latency_ms(), budget_ms, dual.value)
        check(a_loss)
        a_opt.zero_grad(set_to_none=True)
        a_loss.backward(inputs=net.arch_parameters())
        average_grads(net.arch_parameters(), dist)
    elif unrolled:
        if train_batch is None or w_opt is None:
            raise ValueError("the unrolled step needs the training batch and the weight optimiser")
        check(unrolled_arch_grad(net, train_batch, val_batch, w_opt, arch_loss))
    else:
        a_loss = arch_loss(net(val_batch[0]), val_batch[1])
        check(a_loss)
        a_opt.zero_grad(set_to_none=True)
        a_loss.backward(inputs=net.arch_parameters())  # weight gradients here would be thrown away
    before = [a.detach().clone() for a in net.arch_parameters()]
    a_opt.step()
    if isinstance(strategy, Binary):
        for key, pair in strategy.sampled.items():
            r = net.rows[key]
            a, old = net.alphas[r.param], before[r.param]
            Binary.rescale(a.data if r.row is None else a.data[r.row], old if r.row is None else old[r.row], pair)
    e_lat = _expected_ms(net)
    dual.step(e_lat, budget_ms)
    return e_lat


def weight_step(
    net: Supernet,
    w_opt: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, ...],
    check: Callable[[torch.Tensor], None],
    dist: Dist | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One weight step on ``batch`` (no gradient clipping: clipping at 5, DARTS's value, stalled
    learning on Fashion-MNIST). Returns the (detached) loss and the logits.

    With ``dist`` (data-parallel), ``batch`` is this process's shard ``(x, y, weight)``: the loss
    is the global batch's mean (the value returned, the same on every process), the weights'
    gradients are averaged over the processes, and the logits are this shard's."""
    net.strategy.phase = "weights"
    logits = net(batch[0])
    if dist is None:
        loss = F.cross_entropy(logits, batch[1])
    else:
        from hwnas.distributed import global_mean

        loss = global_mean(F.cross_entropy(logits, batch[1], reduction="none"), batch[2], dist)
    check(loss)
    w_opt.zero_grad(set_to_none=True)
    loss.backward()
    if dist is not None:
        from hwnas.distributed import average_grads

        average_grads([p for g in w_opt.param_groups for p in g["params"]], dist)
    w_opt.step()
    return loss.detach(), logits.detach()


def _check_finite(loss: torch.Tensor, epoch: int, step: int, ckpt: Path) -> None:
    if not math.isfinite(float(loss.detach())):
        last = f"the last good checkpoint is {ckpt}" if ckpt.exists() else "no checkpoint was written yet"
        raise HwnasError(
            f"the loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}; {last} (lower --lr)"
        )


def _save_checkpoint(
    path: Path, epoch: int, cfg: SearchConfig, net: Supernet, w_opt, a_opt, sched, dual, history
) -> None:
    # world-size independent: global batches, one RNG stream, averaged BN statistics (hwnas.distributed)
    checkpoint.save(
        path,
        {"epoch": epoch, "config": json.dumps(asdict(cfg), sort_keys=True), "history": json.dumps(history)},
        _parts(net, w_opt, a_opt, sched, dual),
    )


def _parts(net: Supernet, w_opt, a_opt, sched, dual) -> dict[str, checkpoint.Stateful]:
    """The search state's parts, by their names in the checkpoint."""
    return {"model": net, "w_opt": w_opt, "a_opt": a_opt, "sched": sched, "dual": dual}


def _load_checkpoint(
    path: Path, cfg: SearchConfig, net: Supernet, w_opt, a_opt, sched, dual, data: bytes | None = None
):
    """Restore a checkpoint (``data``: its bytes, else read from ``path``) into the search's state;
    returns (epochs done, history). Tensors load onto the CPU, then into ``net``'s device."""
    if data is None and not path.exists():
        raise HwnasError(f"--resume: {path} does not exist; start without --resume")
    with checkpoint.readable(path, "checkpoint"):
        state = checkpoint.load_bytes(path.read_bytes() if data is None else data)
        said = settings_differ(state["config"], asdict(cfg), CONFIG_KEYS_ADDED)
        if said:
            raise HwnasError(
                f"--resume: {path} was written by a search with other settings ({said}); pass the same options"
            )
        checkpoint.restore(state, _parts(net, w_opt, a_opt, sched, dual))
        return int(state["epoch"]), json.loads(state["history"])
