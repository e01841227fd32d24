"""Data-parallel search on ``torch.distributed``: what ``torchrun ... -m hwnas search`` runs.

Under ``torchrun`` (environment ``WORLD_SIZE`` > 1) :func:`session` joins the process group
(NCCL when CUDA is available, else gloo; ``HWNAS_DIST_BACKEND=gloo|nccl`` overrides) and
:func:`hwnas.search.run_search` runs the same search on every process, each on its shard of every
batch. The contract, which makes N processes compute the gradients of one process:

* **Global batches.** ``--batch-size`` is the global batch. Every process builds the loader a
  single process would (:func:`hwnas.data.make_loader`, same seed: same batches in the same order)
  and keeps a contiguous shard of each batch (:func:`shard`); the shards together are the batch.
* **Global losses.** Each process sums its shard's per-example cross-entropy; one ``all_reduce``
  gives the global sum and count, and :func:`global_mean` returns a loss whose *value* is the
  global batch mean on every process and whose gradient, averaged over the processes
  (:func:`average_grads`), is the gradient of that mean. So a non-linear objective of the
  cross-entropy (``mul-log``) is differentiated at the global value, the NaN check sees the same
  number everywhere, and shards of unequal size weigh what their examples weigh.
* **Same samples.** Every process seeds and consumes torch's global RNG identically (the strategies
  sample paths and Gumbel noise from it in the forward, whose draws do not depend on the batch), so
  every process samples the same paths in every step; :func:`average_grads` checks it (the same
  parameters must have gradients on every process) and raises if not. Every shard holds at least
  ``MIN_SHARD`` examples (padding with zero-weight copies where a batch is smaller than
  ``MIN_SHARD x world``), so that every process runs every forward and BatchNorm never sees a
  single value per channel.
* **BatchNorm statistics are per process** (as with DistributedDataParallel without SyncBatchNorm):
  each shard is normalised by its own mean and variance, so N processes compute what one process
  would compute with "ghost" batch norm over the same N shards, not the single process's full-batch
  statistics. Running statistics (which the search never uses: it trains in train mode) are
  averaged over the processes after every epoch, so the checkpoint holds one set.
* **Lockstep.** Averaged gradients are bitwise the same on every process, so weights,
  architecture logits, optimiser states and the dual multiplier stay identical; parameters and the
  RNG state are broadcast from rank 0 at the start (and after a resume), and checked after every
  epoch. Only rank 0 writes files, logs and progress.

The gradients are averaged by ``all_reduce`` over one flattened tensor (not
``DistributedDataParallel``): the architecture step back-propagates into the logits only (DDP's
reducer would wait for weight gradients that never come), the sampling strategies leave most
weights without a gradient in a step (DDP would need ``find_unused_parameters``), and the same
call serves the weight and the architecture step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from hwnas.errors import HwnasError

ENV_BACKEND = "HWNAS_DIST_BACKEND"
MIN_SHARD = 2  # examples per process and step: BatchNorm in train mode needs > 1 value per channel


@dataclass(frozen=True)
class Dist:
    """This process's place in the process group: ``rank`` of ``world``, tensors on ``device``."""

    rank: int
    world: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and reports progress."""
        return self.rank == 0

    # -- collectives ---------------------------------------------------------------------------
    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """``t`` summed over the processes (in place on a copy on :attr:`device`); returned on ``t``'s device."""
        buf = t.detach().to(self.device, copy=True)
        tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
        return buf.to(t.device)

    def broadcast_(self, t: Tensor) -> None:
        """Overwrite ``t`` in place with rank 0's value."""
        if t.device == self.device:
            tdist.broadcast(t, src=0)
            return
        buf = t.detach().to(self.device)
        tdist.broadcast(buf, src=0)
        t.copy_(buf.to(t.device))

    def broadcast_bytes(self, data: bytes | None) -> bytes | None:
        """Rank 0's ``data`` (or None) on every process (other ranks pass anything); no pickling."""
        n = torch.tensor([-1 if data is None or not self.is_main else len(data)], dtype=torch.int64)
        self.broadcast_(n)
        size = int(n.item())
        if size < 0:
            return None
        if self.is_main and data is not None:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        else:
            buf = torch.empty(size, dtype=torch.uint8)
        self.broadcast_(buf)
        return data if self.is_main else buf.numpy().tobytes()


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it; 1 outside torchrun."""
    return _env_int("WORLD_SIZE", 1)


def env_rank() -> int:
    """``RANK`` as torchrun sets it; 0 outside torchrun (so "am I rank 0" works everywhere)."""
    return _env_int("RANK", 0)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise HwnasError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None


def _backend() -> str:
    chosen = os.environ.get(ENV_BACKEND, "").strip().lower()
    if chosen and chosen not in ("gloo", "nccl"):
        raise HwnasError(f"{ENV_BACKEND}={chosen!r}: expected gloo (CPU) or nccl (CUDA GPUs)")
    if chosen == "nccl" and not torch.cuda.is_available():
        raise HwnasError(f"{ENV_BACKEND}=nccl needs CUDA GPUs and this torch sees none; use gloo")
    return chosen or ("nccl" if torch.cuda.is_available() else "gloo")


@contextmanager
def session() -> Iterator[Dist | None]:
    """The process group of a ``torchrun`` launch, or None for a single process.

    If a default process group is already initialised (the caller made one), it is used and left
    alone. Otherwise, with ``WORLD_SIZE`` > 1 in the environment, one is initialised from
    torchrun's variables (``env://``) and destroyed on exit. With NCCL each process uses the GPU
    ``LOCAL_RANK``; with gloo the CPU.
    """
    if tdist.is_available() and tdist.is_initialized():
        yield _describe(tdist.get_backend())
        return
    if env_world_size() <= 1:
        yield None
        return
    if not tdist.is_available():
        raise HwnasError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process")
    backend = _backend()
    local_rank = _env_int("LOCAL_RANK", 0)
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise HwnasError(
                f"LOCAL_RANK {local_rank} but {torch.cuda.device_count()} GPU(s): start at most one process per GPU"
            )
        torch.cuda.set_device(local_rank)
    tdist.init_process_group(backend=backend)
    try:
        yield _describe(backend)
    finally:
        tdist.destroy_process_group()


def _describe(backend: str) -> Dist:
    local_rank = _env_int("LOCAL_RANK", 0)
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return Dist(tdist.get_rank(), tdist.get_world_size(), local_rank, backend, device)


# -- data ----------------------------------------------------------------------------------------
def shard(n: int, rank: int, world: int, min_size: int = MIN_SHARD) -> tuple[list[int], list[float]]:
    """The positions in a global batch of ``n`` examples that process ``rank`` of ``world`` runs,
    and their loss weights (1 or 0).

    The batch is cut into ``world`` contiguous parts as ``torch.tensor_split`` cuts it (the first
    ``n % world`` parts one longer), so the parts in rank order are the batch in order and every
    example has weight 1 in exactly one part. A part shorter than ``min_size`` is padded with
    weight-0 copies of the batch's first examples (cyclically): every process runs a forward of at
    least ``min_size`` examples in every step, and the padding adds nothing to any loss.
    """
    if n < 1 or not 0 <= rank < world:
        raise ValueError(f"cannot shard a batch of {n} for rank {rank} of {world}")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    pos = list(range(start, stop))
    weights = [1.0] * len(pos)
    k = 0
    while len(pos) < min_size:
        pos.append(k % n)
        weights.append(0.0)
        k += 1
    return pos, weights


class ShardBatchSampler(Sampler[list[tuple[int, float]]]):
    """Yields, for each batch of ``batches``, this process's :func:`shard` of it as
    ``(dataset index, loss weight)`` pairs (read by :class:`WeightedDataset`)."""

    def __init__(self, batches: Sampler[list[int]] | BatchSampler, rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[list[tuple[int, float]]]:
        for batch in self.batches:
            pos, weights = shard(len(batch), self.rank, self.world)
            yield [(batch[p], w) for p, w in zip(pos, weights, strict=True)]

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


class WeightedDataset(Dataset):
    """``dataset`` indexed by ``(index, weight)``: items ``(image, label, weight)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, float]) -> tuple[Tensor, int, Tensor]:
        index, weight = key
        x, y = self.dataset[index]
        return x, y, torch.tensor(weight, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


def shard_loader(loader: DataLoader, rank: int, world: int) -> DataLoader:
    """The shard of process ``rank`` of every batch of ``loader``, batches ``(x, y, weight)``.

    ``loader`` is the single-process loader (:func:`hwnas.data.make_loader`); its batch sampler and
    generator are reused, so the generator is drawn exactly as ``loader`` would draw it and the
    global batches are ``loader``'s, in its order. Only this process's examples are read.
    """
    if loader.batch_sampler is None:
        raise ValueError("shard_loader needs a loader that batches by a batch sampler")
    return DataLoader(
        WeightedDataset(loader.dataset),
        batch_sampler=ShardBatchSampler(loader.batch_sampler, rank, world),
        num_workers=loader.num_workers,
        generator=loader.generator,
        worker_init_fn=loader.worker_init_fn,
    )


# -- losses and gradients ------------------------------------------------------------------------
def global_mean(per_example: Tensor, weight: Tensor, dist: Dist) -> Tensor:
    """The mean of ``per_example`` over the global batch, differentiable on this process's shard.

    Value: ``sum over processes of (weight . per_example) / sum over processes of weight`` (the
    same number on every process). Gradient: ``world x`` the gradient of this shard's share, so
    that :func:`average_grads` (the mean over processes) gives the gradient of the global mean.
    """
    local = (per_example * weight).sum()
    totals = dist.all_reduce_sum(torch.stack([local.detach(), weight.sum().to(local.dtype)]))
    total, count = totals[0], totals[1]
    part = local * (dist.world / count)
    return part + (total / count - part).detach()


def average_grads(params: Sequence[Tensor], dist: Dist) -> None:
    """Replace each parameter's ``.grad`` by its mean over the processes (two ``all_reduce`` s).

    A parameter without a gradient on every process (a path no process sampled) keeps None, as
    in a single process (the optimiser then skips it). The set of parameters with a gradient must
    be the same on every process (every process samples the same paths); if it is not, raises
    RuntimeError on every process (the first all_reduce tells every process the same counts).
    """
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    counts = dist.all_reduce_sum(present).tolist()
    if any(c not in (0.0, float(dist.world)) for c in counts):
        odd = sum(1 for c in counts if c not in (0.0, float(dist.world)))
        raise RuntimeError(
            f"{odd} parameter(s) have gradients on some processes but not on others: the processes sampled "
            "different paths (their RNG states diverged)"
        )
    have = [p for p, c in zip(params, counts, strict=True) if c]
    if not have:
        return
    flat = torch.cat([p.grad.reshape(-1).to(dist.device) for p in have])  # type: ignore[union-attr]
    tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
    flat.div_(dist.world)
    offset = 0
    for p in have:
        g = p.grad
        assert g is not None
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


# -- state ---------------------------------------------------------------------------------------
def broadcast_state(net: nn.Module, dist: Dist) -> None:
    """Rank 0's parameters, buffers and RNG state (CPU, and CUDA where used) on every process."""
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            dist.broadcast_(t.data)
    rng = torch.get_rng_state()
    dist.broadcast_(rng)
    torch.set_rng_state(rng)
    if dist.device.type == "cuda":
        cuda_rng = torch.cuda.get_rng_state()
        dist.broadcast_(cuda_rng)
        torch.cuda.set_rng_state(cuda_rng)


def average_bn_stats(net: nn.Module, dist: Dist) -> None:
    """Average BatchNorm running means and variances over the processes (each saw its shards)."""
    stats = [
        b
        for m in net.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b in (m.running_mean, m.running_var)
        if b is not None
    ]
    if not stats:
        return
    flat = dist.all_reduce_sum(torch.cat([b.reshape(-1) for b in stats])).div_(dist.world)
    offset = 0
    with torch.no_grad():
        for b in stats:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()


def check_lockstep(tensors: Sequence[Tensor], dist: Dist) -> None:
    """Raise RuntimeError on every process if ``tensors`` are not bitwise equal on all of them."""
    fp = torch.stack([t.detach().double().sum() for t in tensors]).cpu() if tensors else torch.zeros(1)
    hi = fp.clone()
    lo = -fp
    both = torch.cat([hi, lo]).to(dist.device)
    tdist.all_reduce(both, op=tdist.ReduceOp.MAX)
    n = len(fp)
    if not torch.equal(both[:n].cpu(), -both[n:].cpu()):
        raise RuntimeError("the processes' parameters diverged (same torch build on every node?)")
