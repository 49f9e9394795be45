"""Seeded, stratified train/validation index splits."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["stratified_split"]

# A class's share n_c * val_fraction is rounded half up; this slack keeps products such as
# 0.1 * 25 = 2.5000000000000004 or 0.3 * 5 = 1.4999999999999998 on the intended side.
_ROUND_SLACK = 1e-9


def stratified_split(labels, val_fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split example positions into train and validation parts, class by class.

    Stratify by the labels you train on. For noisy-label training these are the NOISY labels,
    as the ELR authors do: the validation split then looks like the training data a user has.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class of each example (any integers; each distinct value is one stratum).
    val_fraction : float in [0, 1)
        Share of each class that goes to validation. Class ``c`` with ``n_c`` examples gives
        ``floor(val_fraction * n_c + 0.5)`` examples, i.e. rounded half up (an exact half goes to
        validation). ``0`` gives an empty validation array.
    seed : int
        Seed of the ``np.random.default_rng`` that picks the examples; the same seed and labels
        give the same split.

    Returns
    -------
    train_idx, val_idx : np.ndarray, int64, shapes (N - V,) and (V,)
        Sorted, disjoint positions into ``labels`` that together cover ``range(N)``.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D integer array, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must hold integers, got dtype {y.dtype}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")

    rng = np.random.default_rng(int(seed))
    picked = []
    # np.unique sorts the classes, so the draws happen in a fixed class order
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = int(np.floor(float(val_fraction) * len(members) + 0.5 + _ROUND_SLACK))
        if k:
            picked.append(rng.choice(members, size=k, replace=False))
    in_val = np.zeros(len(y), dtype=bool)
    if picked:
        in_val[np.concatenate(picked)] = True
    train_idx = np.flatnonzero(~in_val).astype(np.int64)
    val_idx = np.flatnonzero(in_val).astype(np.int64)
    return train_idx, val_idx
