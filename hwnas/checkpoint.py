"""The torch-format files hwnas writes (the search's checkpoint, the training state, trained
weights): writing them atomically and reading them back without pickled objects; for the two
states, saving named ``state_dict`` s with the RNG streams, restoring them, and turning an
unreadable file into one line."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from hwnas.errors import HwnasError
from hwnas.profiling.runner import atomic_write


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


def write(path: Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` (tensors and plain data) to ``path`` atomically, in ``torch.save`` format."""
    buf = io.BytesIO()
    torch.save(dict(doc), buf)
    atomic_write(path, buf.getvalue())


def load_bytes(data: bytes) -> Any:
    """``torch.load`` of such a file's bytes: tensors on the CPU, no pickled objects."""
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def save(path: Path, fields: Mapping[str, Any], parts: Mapping[str, Stateful]) -> None:
    """Write ``fields``, each part's ``state_dict()`` under its name, and torch's RNG state (and
    the CUDA one where CUDA has been used) to ``path`` atomically (``torch.save`` format)."""
    state = {**fields, **{name: p.state_dict() for name, p in parts.items()}, "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # sampling and drop-path draw there on a GPU
        state["cuda_rng"] = torch.cuda.get_rng_state()
    write(path, state)


def restore(state: Mapping[str, Any], parts: Mapping[str, Stateful]) -> None:
    """Load each part from ``state[name]`` and restore the RNG streams :func:`save` recorded."""
    for name, p in parts.items():
        p.load_state_dict(state[name])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])


@contextlib.contextmanager
def readable(path: Path, what: str) -> Iterator[None]:
    """Around a ``--resume``: a :class:`HwnasError` passes; anything else (a truncated or foreign
    file, a state with parts missing or from another network) becomes one line naming ``what``."""
    try:
        yield
    except HwnasError:
        raise
    except Exception as e:
        raise HwnasError(
            f"--resume: {path} is not a readable hwnas {what} ({type(e).__name__}); delete it to start over"
        ) from None
