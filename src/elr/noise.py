"""Label-noise models: pure, seeded functions that corrupt integer label arrays and summarise the result."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = [
    "ASYMMETRIC_DATASETS",
    "asymmetric",
    "asymmetric_mapping",
    "from_transition_matrix",
    "summary",
    "symmetric",
    "transition_matrix",
]

# Number of classes of each dataset with a known asymmetric (class-dependent) noise model.
_DATASET_CLASSES = {"cifar10": 10, "cifar100": 100}
ASYMMETRIC_DATASETS: tuple[str, ...] = tuple(_DATASET_CLASSES)

# CIFAR-10 flips of Patrini et al. (2017), used by the ELR paper:
# truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog.
_CIFAR10_MAPPING = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

_ROW_SUM_TOL = 1e-6


# --------------------------------------------------------------------------- validation


def _as_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """Return a fresh int64 copy of a 1-D array of non-negative integer labels, or raise ValueError."""
    try:
        arr = np.asarray(labels)
    except Exception as exc:  # e.g. ragged nested lists
        raise ValueError(f"{name} must be a 1-D array of integer class indices; could not convert: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer class indices, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        raise ValueError(f"{name} must hold integer class indices, got a boolean array")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must hold integer class indices, found NaN or infinite values")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer class indices, found non-integer floats")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    # astype copies, so callers' arrays are never modified through the result.
    out = arr.astype(np.int64)
    if out.size and int(out.min()) < 0:
        raise ValueError(f"{name} must be non-negative class indices, found {int(out.min())}")
    return out


def _check_rate(rate: Any) -> float:
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real):
        raise ValueError(f"rate must be a real number in [0, 1], got {rate!r}")
    value = float(rate)
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"rate must be a finite number in [0, 1], got {rate!r}")
    return value


def _check_seed(seed: Any) -> int:
    if seed is None:
        raise ValueError(
            "seed must be an int >= 0; None is not accepted because it would give different noise "
            "on every call, and noisy labels must be reproducible"
        )
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int >= 0, got {seed!r} of type {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed}")
    return int(seed)


def _check_num_classes(num_classes: Any, labels: np.ndarray, labels_name: str = "labels") -> int:
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes}")
    if labels.size and int(labels.max()) >= num_classes:
        raise ValueError(
            f"num_classes must be larger than every label, got num_classes={num_classes} "
            f"but {labels_name} contains {int(labels.max())}"
        )
    return int(num_classes)


def _check_dataset(dataset: Any) -> str:
    key = dataset.lower() if isinstance(dataset, str) else None  # a list or dict is no name either
    if key not in _DATASET_CLASSES:
        raise ValueError(f"dataset must be one of {list(ASYMMETRIC_DATASETS)}, got {dataset!r}")
    return key


# --------------------------------------------------------------------------- noise models


def symmetric(
    labels: Any,
    rate: float,
    num_classes: int,
    *,
    seed: int,
    exclude_true: bool = False,
) -> np.ndarray:
    """Symmetric (uniform) label noise, paper Eq. 1.

    Each example independently, with probability ``rate``, has its label replaced by a class
    drawn uniformly from all ``num_classes`` classes. The draw may return the true class, so the
    expected fraction of labels that actually change is ``rate * (1 - 1/num_classes)``. With
    ``exclude_true=True`` the replacement is drawn uniformly from the *other* classes instead, so
    the expected fraction that changes is ``rate`` (the definition some benchmarks use).

    The draws are per-example Bernoulli trials, so the number of corrupted labels is itself
    random (binomial), as in Eq. 1; use :func:`summary` to report the realised rate.

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        Clean class indices in ``[0, num_classes)``. Lists and integral floats are accepted.
        Never modified.
    rate : float
        Replacement probability in ``[0, 1]``.
    num_classes : int
        Number of classes, ``>= 2`` and larger than every label.
    seed : int
        Seed (``>= 0``) of a private ``numpy.random.default_rng``; global RNG state is unused.
    exclude_true : bool, default False
        Draw replacements only from classes other than the true one.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        Noisy labels (a new array).
    """
    y = _as_labels(labels)
    rate = _check_rate(rate)
    num_classes = _check_num_classes(num_classes, y)
    rng = np.random.default_rng(_check_seed(seed))
    n = y.shape[0]
    # random() is in [0, 1): rate 0 never flips, rate 1 always does.
    flip = rng.random(n) < rate
    if exclude_true:
        # A non-zero offset modulo C is uniform over the C - 1 other classes.
        replacement = (y + rng.integers(1, num_classes, size=n)) % num_classes
    else:
        replacement = rng.integers(0, num_classes, size=n)
    return np.where(flip, replacement, y).astype(np.int64, copy=False)


def asymmetric_mapping(dataset: str) -> dict[int, int]:
    """Source -> target class of the asymmetric (class-dependent) noise model of ``dataset``.

    ``"cifar10"``: truck(9)->automobile(1), bird(2)->airplane(0), deer(4)->horse(7),
    cat(3)<->dog(5); other classes are never flipped and are absent from the mapping.
    ``"cifar100"``: the 100 classes form 20 groups of 5 consecutive indices; every class maps to
    the next class of its group, the last one wrapping to the first (4->0, ..., 99->95).

    Parameters
    ----------
    dataset : {"cifar10", "cifar100"}

    Returns
    -------
    dict[int, int]
        A new dict, safe to modify.
    """
    key = _check_dataset(dataset)
    if key == "cifar10":
        return dict(_CIFAR10_MAPPING)
    return {c: (c // 5) * 5 + (c % 5 + 1) % 5 for c in range(100)}


def asymmetric(labels: Any, rate: float, *, dataset: str, seed: int) -> np.ndarray:
    """Asymmetric (class-dependent) label noise for CIFAR-10 or CIFAR-100.

    For every source class ``c`` of :func:`asymmetric_mapping`, exactly ``round(rate * n_c)``
    of its ``n_c`` examples (Python ``round``, half to even) are chosen uniformly without
    replacement and relabelled to the target class. Examples are chosen from the *original*
    labels, so a swap such as cat <-> dog corrupts both classes at exactly ``rate``. (The
    authors' code flips class by class on already-modified labels, which leaves cat at about
    24% instead of 40% for ``rate=0.4``.)

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        Clean class indices in ``[0, 10)`` for CIFAR-10 or ``[0, 100)`` for CIFAR-100.
        Never modified.
    rate : float
        Fraction in ``[0, 1]`` of each source class to flip.
    dataset : {"cifar10", "cifar100"}
    seed : int
        Seed (``>= 0``) of a private ``numpy.random.default_rng``.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        Noisy labels (a new array).
    """
    key = _check_dataset(dataset)
    y = _as_labels(labels)
    rate = _check_rate(rate)
    num_classes = _DATASET_CLASSES[key]
    if y.size and int(y.max()) >= num_classes:
        raise ValueError(
            f"labels must be in [0, {num_classes}) for dataset {key!r}, found {int(y.max())}"
        )
    rng = np.random.default_rng(_check_seed(seed))
    noisy = y.copy()
    # Sorted order fixes which draws go to which class, so a seed means the same thing always.
    for source, target in sorted(asymmetric_mapping(key).items()):
        members = np.flatnonzero(y == source)
        k = round(rate * members.size)
        if k:
            chosen = rng.choice(members, size=k, replace=False)
            noisy[chosen] = target
    return noisy


def from_transition_matrix(labels: Any, T: Any, *, seed: int) -> np.ndarray:
    """Label noise from a row-stochastic transition matrix: ``P(noisy=j | true=i) = T[i, j]``.

    Each label ``y`` is replaced by an independent draw from row ``T[y]`` by inverse-CDF
    sampling with one uniform number per example.

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        Clean class indices in ``[0, C)``. Never modified.
    T : array_like of float, shape (C, C)
        Non-negative, finite, each row summing to 1 within 1e-6, with ``C >= 2`` larger than
        every label.
    seed : int
        Seed (``>= 0``) of a private ``numpy.random.default_rng``.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        Noisy labels (a new array).
    """
    y = _as_labels(labels)
    T = _check_transition_matrix(T)
    num_classes = T.shape[0]
    if y.size and int(y.max()) >= num_classes:
        raise ValueError(
            f"T must have more classes than the largest label: T is {num_classes}x{num_classes} "
            f"but labels contains {int(y.max())}"
        )
    rng = np.random.default_rng(_check_seed(seed))
    u = rng.random(y.shape[0])

    cdf = np.cumsum(T / T.sum(axis=1, keepdims=True), axis=1)
    # From each row's last positive entry on, the CDF is exactly 1, so rounding in the cumulative
    # sum can never pick a zero-probability class at the end of a row (u is always < 1).
    last_positive = num_classes - 1 - np.argmax(T[:, ::-1] > 0, axis=1)
    cdf[np.arange(num_classes)[None, :] >= last_positive[:, None]] = 1.0

    noisy = np.empty_like(y)
    # Group by class so memory stays O(n + C^2) rather than O(n * C).
    for c in np.unique(y):
        members = y == c
        # side="right" counts CDF entries <= u: zero-probability classes (flat CDF steps) are skipped.
        noisy[members] = np.searchsorted(cdf[c], u[members], side="right")
    return noisy


def _check_transition_matrix(T: Any) -> np.ndarray:
    try:
        mat = np.array(T, dtype=np.float64)
    except Exception as exc:
        raise ValueError(f"T must be a square (C, C) array of probabilities; could not convert: {exc}") from exc
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"T must be a square (C, C) array of probabilities, got shape {mat.shape}")
    if mat.shape[0] < 2:
        raise ValueError(f"T must describe at least 2 classes, got shape {mat.shape}")
    if not np.all(np.isfinite(mat)):
        raise ValueError("T must be finite, found NaN or infinite entries")
    if np.any(mat < 0):
        raise ValueError(f"T must be non-negative, found minimum entry {mat.min()}")
    row_sums = mat.sum(axis=1)
    bad = np.flatnonzero(np.abs(row_sums - 1.0) > _ROW_SUM_TOL)
    if bad.size:
        raise ValueError(
            f"T must be row-stochastic (each row sums to 1 within {_ROW_SUM_TOL}); "
            f"row {int(bad[0])} sums to {row_sums[bad[0]]!r}"
        )
    return mat


def transition_matrix(
    kind: str,
    rate: float,
    num_classes: int | None = None,
    *,
    dataset: str | None = None,
    exclude_true: bool = False,
) -> np.ndarray:
    """Expected transition matrix ``T[i, j] = P(noisy=j | true=i)`` of a noise model.

    ``kind="symmetric"`` matches :func:`symmetric`: ``T = (1 - rate) I + rate / C`` (or, with
    ``exclude_true=True``, ``1 - rate`` on the diagonal and ``rate / (C - 1)`` elsewhere).
    ``kind="asymmetric"`` matches :func:`asymmetric` in expectation: ``1 - rate`` on the diagonal
    of each source class and ``rate`` at its target; other rows are identity. (The function flips
    an exact count per class; this matrix is its per-example marginal.) Useful for loss
    correction (Forward) and for :func:`from_transition_matrix`.

    Parameters
    ----------
    kind : {"symmetric", "asymmetric"}
    rate : float
        Noise rate in ``[0, 1]``.
    num_classes : int, optional
        Required for ``"symmetric"``; for ``"asymmetric"`` it is implied by ``dataset`` and, if
        given, must agree.
    dataset : {"cifar10", "cifar100"}, optional
        Required for ``"asymmetric"``.
    exclude_true : bool, default False
        Only for ``"symmetric"``.

    Returns
    -------
    numpy.ndarray of float64, shape (C, C)
        Row-stochastic matrix.
    """
    rate = _check_rate(rate)
    no_labels = np.empty(0, dtype=np.int64)
    if kind == "symmetric":
        if num_classes is None:
            raise ValueError("num_classes is required for kind='symmetric'")
        c = _check_num_classes(num_classes, no_labels)
        if exclude_true:
            mat = np.full((c, c), rate / (c - 1))
            np.fill_diagonal(mat, 1.0 - rate)
        else:
            mat = np.full((c, c), rate / c)
            mat[np.diag_indices(c)] += 1.0 - rate
        return mat
    if kind == "asymmetric":
        if dataset is None:
            raise ValueError(f"dataset is required for kind='asymmetric', one of {list(ASYMMETRIC_DATASETS)}")
        key = _check_dataset(dataset)
        c = _DATASET_CLASSES[key]
        if num_classes is not None and num_classes != c:
            raise ValueError(f"num_classes must be {c} for dataset {key!r} (or None), got {num_classes!r}")
        if exclude_true:
            raise ValueError("exclude_true applies only to kind='symmetric'")
        mat = np.eye(c)
        for source, target in asymmetric_mapping(key).items():
            mat[source, source] = 1.0 - rate
            mat[source, target] += rate
        return mat
    raise ValueError(f"kind must be one of ['symmetric', 'asymmetric'], got {kind!r}")


# --------------------------------------------------------------------------- reporting


def summary(noisy: Any, true: Any, num_classes: int | None = None) -> dict[str, Any]:
    """Realised noise statistics of ``noisy`` against ``true``, as JSON-serialisable Python types.

    Parameters
    ----------
    noisy : array_like of int, shape (n,)
        Noisy labels.
    true : array_like of int, shape (n,)
        Clean labels.
    num_classes : int, optional
        Number of classes ``C``; inferred as ``max(label) + 1`` over both arrays when omitted
        (required when both are empty).

    Returns
    -------
    dict
        ``num_examples`` (int), ``num_classes`` (int), ``num_noisy`` (int, count of
        ``noisy != true``), ``noise_rate`` (float, ``num_noisy / n``; None when ``n == 0``),
        ``per_class_count`` (list of C ints, examples per true class), ``per_class_noise_rate``
        (list of C floats: for each *true* class, the fraction whose noisy label differs; None for
        a class with no examples), ``confusion`` (C x C nested list of ints, rows = true class,
        columns = noisy class).
    """
    noisy_arr = _as_labels(noisy, "noisy")
    true_arr = _as_labels(true, "true")
    if noisy_arr.shape != true_arr.shape:
        raise ValueError(
            f"noisy and true must have the same length, got {noisy_arr.shape[0]} and {true_arr.shape[0]}"
        )
    n = int(true_arr.shape[0])
    if num_classes is None:
        if n == 0:
            raise ValueError("num_classes must be given when noisy and true are empty")
        num_classes = int(max(noisy_arr.max(), true_arr.max())) + 1
    else:
        num_classes = _check_num_classes(num_classes, true_arr, "true")
        _check_num_classes(num_classes, noisy_arr, "noisy")
    confusion = np.bincount(true_arr * num_classes + noisy_arr, minlength=num_classes * num_classes)
    confusion = confusion.reshape(num_classes, num_classes).astype(np.int64)
    per_class = confusion.sum(axis=1)
    per_class_wrong = per_class - np.diag(confusion)
    num_noisy = int(per_class_wrong.sum())
    return {
        "num_examples": n,
        "num_classes": int(num_classes),
        "num_noisy": num_noisy,
        "noise_rate": num_noisy / n if n else None,
        "per_class_count": [int(v) for v in per_class],
        "per_class_noise_rate": [
            int(w) / int(t) if t else None for w, t in zip(per_class_wrong, per_class)
        ],
        "confusion": [[int(v) for v in row] for row in confusion],
    }
