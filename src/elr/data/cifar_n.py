"""CIFAR-N: human noisy labels of the CIFAR-10/100 training images, read safely from the official .pt files."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .readers import RefusedPickleError

__all__ = [
    "CIFAR_N",
    "CIFAR10N_LABEL_SETS",
    "find_label_file",
    "load_label_file",
    "read_cifar_n",
]

# noise.type -> (official file name, number of classes)
CIFAR_N: dict[str, tuple[str, int]] = {
    "cifar10n": ("CIFAR-10_human.pt", 10),
    "cifar100n": ("CIFAR-100_human.pt", 100),
}

# noise.label_set -> key in CIFAR-10_human.pt (published noise rates: 9.0%, 17.2%, ..., 40.2%)
CIFAR10N_LABEL_SETS: dict[str, str] = {
    "aggregate": "aggre_label",
    "random1": "random_label1",
    "random2": "random_label2",
    "random3": "random_label3",
    "worst": "worse_label",
}
_CIFAR100N_KEY = "noisy_label"


def _allowed_globals() -> list[Any]:
    """The only globals a CIFAR-N file may name: NumPy's array reconstruction and integer dtypes."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    rebuild = multiarray._reconstruct
    integer_dtypes = {type(np.dtype(code)) for code in "bBhHiIlLqQ"}
    # files written under numpy 1.x name numpy.core, under numpy 2.x numpy._core: admit both spellings
    return [rebuild, (rebuild, "numpy.core.multiarray._reconstruct"),
            (rebuild, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype, *integer_dtypes]


def load_label_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read a dict of NumPy integer arrays saved with ``torch.save`` without arbitrary unpickling.

    ``torch.load(weights_only=True)`` runs with an allowlist of exactly NumPy's array
    reconstruction, ``numpy.ndarray``, ``numpy.dtype`` and the integer dtype classes; any other
    global in the file (a function to call, a class to build) is refused before it is touched.

    Parameters
    ----------
    path : str or Path
        A ``.pt`` file in torch's zip or legacy format.

    Returns
    -------
    dict of str to np.ndarray

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    RefusedPickleError
        The file names a global outside the allowlist (the message names the file and the global); a
        ``pickle.UnpicklingError`` and a ``ValueError``.
    ValueError
        The file is not a readable torch file or does not hold a dict of arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-N label file {path} not found")
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:
        raise RuntimeError(f"reading CIFAR-N files safely needs torch >= 2.5 (torch.serialization.safe_globals); "
                           f"found torch {torch.__version__}")
    try:
        with safe_globals(_allowed_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _refusal_reason(err)
        if not re.search(r"global|can only build", reason, re.IGNORECASE):
            raise ValueError(f"{path}: not a readable torch .pt file ({reason})") from None
        raise RefusedPickleError(
            f"{path}: refusing to load: a CIFAR-N file holds only NumPy integer arrays, and this one asks for "
            f"something else ({reason})") from None
    except Exception as exc:  # truncated, not a torch file
        raise ValueError(f"{path}: not a readable torch .pt file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of NumPy arrays (the CIFAR-N format), got {type(obj).__name__}")
    return {str(k): v for k, v in obj.items()}


def _refusal_reason(err: Exception) -> str:
    """The line of torch's weights_only message that names the refused global (its advice left out)."""
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    text = str(err).replace("WeightsUnpickler error:", "\n")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(advice)]
    return lines[0].split(". Please")[0] if lines else type(err).__name__


def find_label_file(noise_type: str, file: str | Path | None, root: str | Path | None) -> Path:
    """The CIFAR-N file to read: ``file`` when given, else the official name inside or next to ``root``.

    Looked for, in order: ``root/NAME`` (when ``root`` is a folder) and ``NAME`` in the folder that
    holds ``root``; NAME is ``CIFAR-10_human.pt`` or ``CIFAR-100_human.pt``.
    """
    name = _spec(noise_type)[0]
    if file is not None:
        path = Path(file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"noise.file={file}: no such file (expected {name} of CIFAR-N)")
        return path
    if root is None:
        raise FileNotFoundError(f"noise.type={noise_type} needs {name}: give noise.file=PATH")
    root = Path(root).expanduser()
    candidates = ([root / name] if root.is_dir() else []) + [root.parent / name]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"noise.type={noise_type}: {name} not found (looked at {tried}); "
                            f"download it from the CIFAR-N release and give noise.file=PATH")


def read_cifar_n(noise_type: str, *, label_set: str | None, true_labels: np.ndarray,
                 file: str | Path | None = None, root: str | Path | None = None) -> np.ndarray:
    """The human noisy labels of the whole CIFAR training set, checked against its true labels.

    Parameters
    ----------
    noise_type : {"cifar10n", "cifar100n"}
    label_set : {"aggregate", "random1", "random2", "random3", "worst"} or None
        Which CIFAR-10N annotation to use (keys ``aggre_label``, ``random_label1..3``,
        ``worse_label``); must be None for ``cifar100n`` (key ``noisy_label``).
    true_labels : np.ndarray of int, shape (N,)
        The training labels of the data set, in file order (50,000 for CIFAR).
    file, root : str or Path, optional
        See :func:`find_label_file`.

    Returns
    -------
    np.ndarray of int64, shape (N,)
        Noisy labels aligned with ``true_labels``.

    Raises
    ------
    ValueError
        Unknown label set, a missing key, a wrong length or label range, or a ``clean_label``
        array that differs from ``true_labels`` (wrong file, or training set in another order).
    """
    name, num_classes = _spec(noise_type)
    if noise_type == "cifar10n":
        if label_set not in CIFAR10N_LABEL_SETS:
            raise ValueError(f"noise.label_set must be one of {', '.join(CIFAR10N_LABEL_SETS)} for "
                             f"noise.type=cifar10n; got {label_set!r}")
        key = CIFAR10N_LABEL_SETS[label_set]
    else:
        if label_set is not None:
            raise ValueError(f"noise.label_set is for cifar10n only; cifar100n has one label set ({_CIFAR100N_KEY})")
        key = _CIFAR100N_KEY
    true_labels = np.asarray(true_labels)
    path = find_label_file(noise_type, file, root)
    arrays = load_label_file(path)
    if key not in arrays:
        raise ValueError(f"{path}: no {key!r} array (keys found: {', '.join(sorted(arrays))}); is this {name}?")
    noisy = _labels(arrays[key], key, path, len(true_labels), num_classes)
    if "clean_label" in arrays:
        clean = _labels(arrays["clean_label"], "clean_label", path, len(true_labels), num_classes)
        if not np.array_equal(clean, true_labels):
            first = int(np.flatnonzero(clean != true_labels)[0])
            raise ValueError(
                f"{path}: its clean_label differs from the data set's training labels (first at index {first}: "
                f"{int(clean[first])} vs {int(true_labels[first])}, {int((clean != true_labels).sum())} in all): "
                f"wrong file for this data set, or the training set is in another order than the CIFAR batches")
    return noisy


def _spec(noise_type: str) -> tuple[str, int]:
    if noise_type not in CIFAR_N:
        raise ValueError(f"CIFAR-N noise type must be one of {', '.join(CIFAR_N)}; got {noise_type!r}")
    return CIFAR_N[noise_type]


def _labels(values: np.ndarray, key: str, path: Path, n: int, num_classes: int) -> np.ndarray:
    if values.ndim != 1 or values.dtype.kind not in "iu":
        raise ValueError(f"{path}: {key} must be a 1-D integer array, got {values.dtype} {values.shape}")
    if len(values) != n:
        raise ValueError(f"{path}: {key} holds {len(values)} labels but the training set has {n} examples")
    if n and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"{path}: {key} must lie in [0, {num_classes}), found {int(values.min())}..{int(values.max())}")
    return values.astype(np.int64)
