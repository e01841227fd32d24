"""The user-facing error type: one clear line naming the problem and the fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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


def check_out_path(path: Path, force: bool, option: str = "--out") -> None:
    """Refuse an output file before any work: one that exists (without ``force``) or is a
    directory, or whose nearest existing folder is not a directory or cannot be written (probed
    with a temporary file, so a read-only mount is caught even as root). Missing folders are
    created when the file is written. ``option`` is the flag the message names."""
    import os
    import tempfile

    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {p} is a directory; {option} takes the file to write")
    if p.exists() and not force:
        raise UsageError(f"{p} exists; pass --force to overwrite it or choose another {option}")
    parent = p.parent if str(p.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the folder the missing ones will be made in
    if not parent.is_dir():
        raise UsageError(f"{parent} is not a directory; choose another {option}")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.", suffix=".probe")
    except OSError as e:
        raise UsageError(f"{option} {p}: cannot write to {parent} ({e.strerror}); choose another {option}") from None
    os.close(fd)
    os.unlink(tmp)


def settings_differ(stored: str, now: dict[str, Any], added: dict[str, Any] | None = None) -> str | None:
    """What differs between the settings a checkpoint recorded (``stored``, its JSON) and ``now``
    (a config as a dict), as ``"key <there> there, <now> now; ..."``, or ``None`` if nothing does.

    ``added`` gives, for settings introduced after older checkpoints were written, the value those
    checkpoints ran with, so an older checkpoint resumes under the same options."""
    import json

    there = {**(added or {}), **json.loads(stored)}
    here = json.loads(json.dumps(now))  # tuples as lists, as they were stored
    keys = sorted(k for k in there.keys() | here.keys() if there.get(k) != here.get(k))
    return "; ".join(f"{k} {there.get(k)!r} there, {here.get(k)!r} now" for k in keys) or None
