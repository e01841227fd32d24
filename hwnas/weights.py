"""Trained weights of a derived network: the file ``hwnas train`` writes and ``hwnas export`` reads.

A weights file is ``torch.save`` of a plain dict (loaded with ``weights_only=True``, never pickle
objects)::

    {"format": "hwnas.weights/1",
     "arch": "<arch JSON of the network as trained>",   # str, Arch.to_json()
     "state_dict": {...},                               # PlanNet.state_dict(): "nodes.<i>.<...>"
     "epoch": int,                                      # epochs trained
     "test_acc": float | None}                          # share in [0, 1], None if not evaluated

The arch stored is the network the tensors belong to. For DARTS it may differ from the searched
arch in ``C`` and ``layers`` (evaluation-time settings of ``hwnas train``); the genotype is the
same. Auxiliary heads are training-only and are not stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas import checkpoint
from hwnas.arch import Arch, ArchError
from hwnas.errors import HwnasError

FORMAT = "hwnas.weights/1"


class WeightsError(HwnasError):
    """A weights file that cannot be read or does not fit the network."""


@dataclass(frozen=True)
class Weights:
    arch: Arch
    state_dict: dict[str, torch.Tensor]
    epoch: int
    test_acc: float | None
    sha256: str  # of the file bytes that were read (what an export records)


def save_weights(path: Path, arch: Arch, net: nn.Module, epoch: int, test_acc: float | None = None) -> None:
    """Atomically write ``net``'s weights (``arch`` is the network they belong to)."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "arch": arch.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "epoch": int(epoch),
        "test_acc": None if test_acc is None else float(test_acc),
    }
    checkpoint.write(Path(path), doc)


def load_weights(path: Path) -> Weights:
    """Read a weights file; a missing, corrupt or foreign file is a :class:`WeightsError`."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such weights file (hwnas train writes runs/<name>/train/best.pt)")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise WeightsError(f"{p}: cannot read ({e.strerror})") from None
    try:
        doc = checkpoint.load_bytes(data)
    except Exception as e:  # torch raises many types for corrupt or unsafe files
        raise WeightsError(f"{p}: not a readable hwnas weights file ({type(e).__name__}); re-run hwnas train") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise WeightsError(f"{p}: format {got!r} is not {FORMAT!r}; write it with this hwnas version's hwnas train")
    try:
        import json

        arch = Arch.from_dict(json.loads(doc["arch"]), f"{p} (stored arch)")
    except (KeyError, TypeError, ValueError, ArchError) as e:
        raise WeightsError(f"{p}: the stored arch is unusable ({e})") from None
    sd = doc.get("state_dict")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{p}: 'state_dict' is missing or holds non-tensors; re-run hwnas train")
    acc = doc.get("test_acc")
    return Weights(
        arch, sd, int(doc.get("epoch", 0)), None if acc is None else float(acc), hashlib.sha256(data).hexdigest()
    )


def load_into(net: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state_dict`` into ``net``; any mismatch names the first tensor at fault."""
    own = net.state_dict()
    for k in own:
        if k not in state_dict:
            raise WeightsError(f"{source}: weights do not match the arch: tensor {k!r} is missing")
        if tuple(state_dict[k].shape) != tuple(own[k].shape):
            raise WeightsError(
                f"{source}: weights do not match the arch: tensor {k!r} has shape "
                f"{tuple(state_dict[k].shape)}, the arch needs {tuple(own[k].shape)}"
            )
    for k in state_dict:
        if k not in own:
            raise WeightsError(f"{source}: weights do not match the arch: unexpected tensor {k!r}")
    net.load_state_dict(state_dict, strict=True)


def same_network(a: Arch, b: Arch) -> bool:
    """Whether ``a`` and ``b`` describe the same layers (``info`` and ``input`` size aside)."""
    return a.kind == b.kind and dict(a.body) == dict(b.body) and a.input[0] == b.input[0]


def same_genotype(a: Arch, b: Arch) -> bool:
    """DARTS archs with the same cells, input channels and classes (``C``/``layers`` and the input
    size may differ); blocks: the same network."""
    if a.kind != b.kind:
        return False
    if a.kind == "cells":
        return (
            a.body["genotype"] == b.body["genotype"]
            and a.body["classes"] == b.body["classes"]
            and a.input[0] == b.input[0]
        )
    return same_network(a, b)
