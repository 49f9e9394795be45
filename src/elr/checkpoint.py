"""Atomic, safely loadable checkpoints and the random-number-generator states they carry."""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .version import __version__

FORMAT_VERSION = 1


def temporary_beside(path: Path) -> tuple[int, Path]:
    """A new file ``.<name>.<8 random characters>`` beside ``path``, opened for writing: ``(fd, path)``.

    Created with mode 0o666 so the umask decides its permissions, as for any file the user writes
    (``tempfile.mkstemp`` would make every run file 0600).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # 2**32 names: a clash is a leftover of a kill, try another
            continue


def _write_atomically(path: str | Path, write: Callable[[Any], None]) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync it, then rename over ``path``.

    A failed write leaves no temporary file, and its OSError names ``path`` (a full disk's does not).
    """
    path = Path(path)
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:
            raise type(err)(err.errno, err.strerror, str(path)) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``."""
    _write_atomically(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class _KeepWriteError:
    """A file for ``torch.save`` that keeps the OSError of a failed write: torch reports it only as
    a RuntimeError about a position ("unexpected pos ..."), which would hide a full disk."""

    def __init__(self, handle) -> None:
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


def _torch_save(state: dict[str, Any], handle) -> None:
    writer = _KeepWriteError(handle)
    try:
        torch.save({"format": FORMAT_VERSION, **state}, writer)
    except RuntimeError:
        if writer.error is None:
            raise
        raise writer.error from None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save ``state`` atomically: a crash leaves either the old or the new checkpoint, never half of one."""
    _write_atomically(path, lambda handle: _torch_save(state, handle))


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, no code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated or foreign file: torch raises RuntimeError, UnpicklingError, ...
        # torch's own text may advise weights_only=False, which would run whatever the file holds: never
        what = "an empty file" if path.stat().st_size == 0 else f"unreadable: {type(err).__name__}"
        raise ValueError(f"{path} is not a checkpoint elr wrote ({what}); a damaged checkpoint cannot be resumed "
                         f"or evaluated: train the run again into a new --out") from None
    found = state.get("format") if isinstance(state, dict) else None
    if isinstance(found, int) and not isinstance(found, bool) and found > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer elr (checkpoint format {found}; elr {__version__} reads "
                         f"format {FORMAT_VERSION}): upgrade elr to read it")
    if found != FORMAT_VERSION:
        raise ValueError(f"{path} is not a checkpoint elr wrote (no checkpoint format {FORMAT_VERSION} inside)")
    return state


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states (python, numpy, torch, CUDA) as checkpoint-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    python = state["python"]
    random.setstate((python[-1], tuple(python[:-1]), state["python_gauss"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
