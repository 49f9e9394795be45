"""Which labels are wrong: scores, flags and suggested labels from ELR targets or any predicted probabilities.

NumPy in, NumPy out; no torch, no files. ``probs`` is any (N, C) array of per-example class
probabilities: ELR's targets (a running average of each example's predictions, which resists
memorising a wrong label), a held-out model's predictions, or a user's own out-of-sample
``pred_probs``. Scores lie in [0, 1]; **lower means more likely wrong**. The score names and
formulas are cleanlab's (``get_label_quality_scores``), so numbers can be compared one to one.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = [
    "SCORES",
    "RULES",
    "check_probabilities",
    "label_quality_scores",
    "suggest_labels",
    "flag_label_issues",
    "label_issue_table",
    "detection_quality",
    "issues_per_class",
]

SCORES = ("self_confidence", "normalized_margin")
RULES = ("argmax", "threshold")
_SUM_TOLERANCE = 1e-3  # float32 softmax rows and renormalised targets sum to 1 within ~1e-6


def check_probabilities(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``labels`` and ``probs``; return them as int64 (N,) and float64 (N, C).

    Raises ValueError naming the argument: ``probs`` not 2-D with at least 2 classes, NaN or
    infinite, negative, or a row that does not sum to 1 (within 1e-3); ``labels`` not 1-D
    integers of the same length, or outside ``[0, C)``.
    """
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be a 2-D array (N examples, C >= 2 classes), got shape {p.shape}")
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"probs must hold numbers, got dtype {p.dtype}")
    p = p.astype(np.float64)
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        raise ValueError(f"probs must be finite: row {int(np.flatnonzero(bad)[0])} holds NaN or infinity")
    negative = (p < 0).any(axis=1)
    if negative.any():
        raise ValueError(f"probs must be non-negative: row {int(np.flatnonzero(negative)[0])} has a negative entry")
    off = np.abs(p.sum(axis=1) - 1.0) > _SUM_TOLERANCE
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise ValueError(f"probs rows must be distributions summing to 1: row {i} sums to {p[i].sum():.6g}")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"labels must be a 1-D array of {len(p)} class indices (one per row of probs), "
                         f"got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    outside = (y < 0) | (y >= p.shape[1])
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"labels must lie in [0, {p.shape[1]}) (the columns of probs): labels[{i}] = {int(y[i])}")
    return y, p


def label_quality_scores(labels: Any, probs: Any, *, method: str = "self_confidence") -> np.ndarray:
    """A score in [0, 1] per example; lower means the given label is more likely wrong.

    Parameters
    ----------
    labels : array of int, shape (N,)
        The given (possibly noisy) labels.
    probs : array of float, shape (N, C)
        Rows are probability distributions over the C classes.
    method : {"self_confidence", "normalized_margin"}
        ``self_confidence``: ``probs[i, labels[i]]``, the mass on the given label.
        ``normalized_margin``: ``(probs[i, labels[i]] - max_{k != labels[i]} probs[i, k] + 1) / 2``;
        below 0.5 exactly when another class has more mass than the given label.

    Returns
    -------
    np.ndarray, float64, shape (N,)
    """
    y, p = check_probabilities(labels, probs)
    _check_choice("method", method, SCORES)
    return _scores(y, p, method)


def suggest_labels(probs: Any, labels: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The most probable class of each example and its probability.

    Parameters
    ----------
    probs : array of float, shape (N, C)
    labels : array of int, shape (N,), optional
        Given labels: where the given label ties for the largest probability it is kept as the
        suggestion (no change is suggested on a tie).

    Returns
    -------
    suggested : np.ndarray, int64, shape (N,)
    confidence : np.ndarray, float64, shape (N,)
        ``probs[i, suggested[i]]``.
    """
    y, p = check_probabilities(np.zeros(len(np.asarray(probs)), dtype=np.int64) if labels is None else labels, probs)
    return _suggest(p, None if labels is None else y)


def flag_label_issues(labels: Any, probs: Any, *, rule: str = "argmax", threshold: float = 0.5,
                      method: str = "self_confidence") -> np.ndarray:
    """Which labels look wrong, by a simple rule.

    Parameters
    ----------
    labels : array of int, shape (N,)
    probs : array of float, shape (N, C)
    rule : {"argmax", "threshold"}
        ``argmax``: another class has strictly more probability than the given label (a tie is
        not flagged). ``threshold``: the ``method`` score is below ``threshold``.
    threshold : float in (0, 1], default 0.5
        Used by ``rule="threshold"`` only.
    method : {"self_confidence", "normalized_margin"}
        The score the threshold applies to.

    Returns
    -------
    np.ndarray, bool, shape (N,)
    """
    _check_choice("rule", rule, RULES)
    _check_threshold(threshold)
    y, p = check_probabilities(labels, probs)
    if rule == "argmax":
        return _argmax_flags(y, p)
    _check_choice("method", method, SCORES)
    return _scores(y, p, method) < threshold


def label_issue_table(labels: Any, probs: Any, *, method: str = "self_confidence", rule: str = "argmax",
                      threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Every example's verdict, most likely wrong first.

    Rows are sorted by ascending score; equal scores keep index order, so the table is the same
    on every run.

    Returns
    -------
    dict of np.ndarray, each of shape (N,)
        ``index`` (int64, the row of ``labels``/``probs``), ``given_label`` (int64),
        ``suggested_label`` (int64), ``suggested_confidence`` (float64), ``score`` (float64) and
        ``is_issue`` (bool, by ``rule``).
    """
    y, p = check_probabilities(labels, probs)  # once: the helpers below take checked arrays
    _check_choice("method", method, SCORES)
    _check_choice("rule", rule, RULES)
    _check_threshold(threshold)
    score = _scores(y, p, method)
    flagged = _argmax_flags(y, p) if rule == "argmax" else score < threshold
    suggested, confidence = _suggest(p, y)
    order = np.argsort(score, kind="stable")
    return {"index": order.astype(np.int64), "given_label": y[order], "suggested_label": suggested[order],
            "suggested_confidence": confidence[order], "score": score[order], "is_issue": flagged[order]}


def detection_quality(scores: Any, is_issue: Any, is_wrong: Any) -> dict[str, Any]:
    """How well scores and flags find the labels known to be wrong.

    Parameters
    ----------
    scores : array of float, shape (N,)
        Lower means more likely wrong.
    is_issue : array of bool, shape (N,)
        The flags.
    is_wrong : array of bool, shape (N,)
        The truth: given label != true label.

    Returns
    -------
    dict
        ``auroc`` (probability that a wrong label scores below a correct one, ties counting one
        half) and ``average_precision`` (of the ranking by ascending score, as sklearn's
        ``average_precision_score``), both None unless wrong and correct labels are both present;
        ``precision`` (None when nothing is flagged) and ``recall`` (None when nothing is wrong)
        of the flags; counts ``examples``, ``wrong``, ``flagged``, ``flagged_wrong``.
    """
    s = np.asarray(scores, dtype=np.float64)
    flag = np.asarray(is_issue, dtype=bool)
    wrong = np.asarray(is_wrong, dtype=bool)
    if not s.ndim == flag.ndim == wrong.ndim == 1 or not len(s) == len(flag) == len(wrong):
        raise ValueError(f"scores, is_issue and is_wrong must be 1-D of one length, got shapes "
                         f"{s.shape}, {flag.shape}, {wrong.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n_wrong, n_flag, hits = int(wrong.sum()), int(flag.sum()), int((flag & wrong).sum())
    both = 0 < n_wrong < len(s)
    return {
        "examples": int(len(s)), "wrong": n_wrong, "flagged": n_flag, "flagged_wrong": hits,
        "auroc": _auroc(-s, wrong) if both else None,
        "average_precision": _average_precision(-s, wrong) if both else None,
        "precision": hits / n_flag if n_flag else None,
        "recall": hits / n_wrong if n_wrong else None,
    }


def issues_per_class(given_label: Any, is_issue: Any, num_classes: int) -> dict[str, np.ndarray]:
    """Examples and flagged examples per given class.

    Returns
    -------
    dict of np.ndarray, int64, shape (num_classes,)
        ``examples`` and ``flagged``.
    """
    y = np.asarray(given_label, dtype=np.int64)
    flag = np.asarray(is_issue, dtype=bool)
    return {"examples": np.bincount(y, minlength=num_classes).astype(np.int64),
            "flagged": np.bincount(y[flag], minlength=num_classes).astype(np.int64)}


def _scores(y: np.ndarray, p: np.ndarray, method: str) -> np.ndarray:
    rows = np.arange(len(y))
    own = p[rows, y]
    if method == "self_confidence":
        return own
    others = p.copy()
    others[rows, y] = -np.inf
    return (own - others.max(axis=1) + 1.0) / 2.0


def _argmax_flags(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p[np.arange(len(y)), y] < p.max(axis=1)


def _suggest(p: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    suggested = p.argmax(axis=1)
    confidence = p.max(axis=1)
    if y is not None:  # a given label that ties for the largest probability is kept
        tie = p[np.arange(len(y)), y] >= confidence
        suggested[tie] = y[tie]
    return suggested.astype(np.int64), confidence


def _auroc(decision: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg) with average ranks for ties."""
    _, inverse, counts = np.unique(decision, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based, ties share their mean rank
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _average_precision(decision: np.ndarray, positive: np.ndarray) -> float:
    """sum_k (R_k - R_{k-1}) P_k over the distinct thresholds, highest first (sklearn's definition)."""
    order = np.argsort(-decision, kind="stable")
    d, hit = decision[order], positive[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(d)), len(d) - 1]  # the last position of each distinct value
    tp = np.cumsum(hit)[last]
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_threshold(threshold: Any) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
