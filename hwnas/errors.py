"""The user-facing error type: one clear line naming the problem and the fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class HwnasError(Exception):
    """A problem with the user's input or environment (not a bug in hwnas).

    The CLI prints ``str(error)`` as one line on stderr and exits with :attr:`exit_code`.
    """

    exit_code = 1


class UsageError(HwnasError):
    """A command-line value that cannot be used (exit code 2)."""

    exit_code = 2


@contextmanager
def gpu_memory_hint(batch_size: int, what: str, saved: Path | None = None) -> Iterator[None]:
    """Turn an out-of-memory error of the GPU into one line naming the batch size to try next
    (half the current one) and, if ``saved`` exists, the state ``--resume`` continues from."""
    import torch  # lazily: this module is imported by torch-free code

    try:
        yield
    except torch.OutOfMemoryError:
        smaller = max(1, batch_size // 2)
        again = (
            f"; {saved} holds the last finished epoch (add --resume)" if saved is not None and saved.exists() else ""
        )
        raise HwnasError(
            f"out of GPU memory during {what} at --batch-size {batch_size}; try --batch-size {smaller}{again}"
        ) from None


def training_device(name: str) -> torch.device:  # noqa: F821 - torch is imported lazily
    """The device to train on: ``cpu``, or ``cuda`` (``cuda:N``) when a GPU is present."""
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HwnasError(f"--device {name}: no CUDA GPU is visible here (torch {torch.__version__}); use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise HwnasError(f"--device {name!r}: expected cpu or cuda")
    return torch.device(name)
