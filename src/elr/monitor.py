"""Training-set measurements after each epoch: memorization fractions (paper Figure 1)."""

from __future__ import annotations

import torch
from torch import Tensor


def memorization_fractions(pred: Tensor, noisy: Tensor, true: Tensor) -> dict[str, float | None]:
    """Figure 1's fractions from predicted, given (noisy) and true labels of training examples.

    Parameters
    ----------
    pred, noisy, true : Tensor, int64, shape (N,)

    Returns
    -------
    dict
        ``clean_correct`` / ``clean_incorrect``: among examples whose given label is right, the
        fraction predicted as that label or not. ``wrong_true`` / ``wrong_memorized`` /
        ``wrong_other``: among examples whose given label is wrong, the fraction predicted as the
        true class, as the given wrong label, or as neither. ``None`` when the group is empty.
    """
    if not (pred.shape == noisy.shape == true.shape) or pred.dim() != 1:
        raise ValueError(f"pred, noisy and true must be 1-D of equal length, got {pred.shape}, {noisy.shape}, {true.shape}")
    clean = noisy == true
    wrong = ~clean
    counts = torch.stack([
        clean.sum(), (clean & (pred == true)).sum(),
        wrong.sum(), (wrong & (pred == true)).sum(), (wrong & (pred == noisy)).sum(),
    ]).tolist()  # one device read for all five counts
    n_clean, clean_ok, n_wrong, wrong_true, wrong_mem = counts

    def frac(k: int, n: int) -> float | None:
        return k / n if n else None

    return {
        "clean_correct": frac(clean_ok, n_clean),
        "clean_incorrect": frac(n_clean - clean_ok, n_clean),
        "wrong_true": frac(wrong_true, n_wrong),
        "wrong_memorized": frac(wrong_mem, n_wrong),
        "wrong_other": frac(n_wrong - wrong_true - wrong_mem, n_wrong),
    }
