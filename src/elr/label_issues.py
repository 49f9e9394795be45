"""Which labels are wrong: scores, flags and suggested labels from ELR targets or any predicted probabilities.

NumPy in, NumPy out; no torch, no files. ``probs`` is any (N, C) array of per-example class
probabilities: ELR's targets (a running average of each example's predictions, which resists
memorising a wrong label), a held-out model's predictions, or a user's own out-of-sample
``pred_probs``; or a :class:`TopKProbs` that keeps the k largest entries of each row (scored a
block of rows at a time, never densified whole). Scores lie in [0, 1]; **lower means more likely
wrong**. The score names and formulas are cleanlab's (``get_label_quality_scores``), so numbers can
be compared one to one; ``rule="cleanlab"`` flags with cleanlab's own ``find_label_issues``
(optional: ``pip install 'elr[cleanlab]'``).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SCORES",
    "RULES",
    "CLEANLAB_FILTERS",
    "TopKProbs",
    "cleanlab_label_issues",
    "check_probabilities",
    "label_quality_scores",
    "suggest_labels",
    "flag_label_issues",
    "label_issue_table",
    "detection_quality",
    "issues_per_class",
]

SCORES = ("self_confidence", "normalized_margin")
RULES = ("argmax", "threshold", "cleanlab")
# cleanlab 2.9's ``filter_by`` options of ``cleanlab.filter.find_label_issues``; its default first
CLEANLAB_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
                    "low_normalized_margin", "low_self_confidence")
_SUM_TOLERANCE = 1e-3  # float32 softmax rows and renormalised targets sum to 1 within ~1e-6
BLOCK_ENTRIES = 1 << 22  # top-k rows are densified this many entries (32 MB of float64) at a time


@dataclass(frozen=True, eq=False)
class TopKProbs:
    """Probability rows that keep only their k largest entries; every other class holds 0.

    Parameters
    ----------
    values : array of float, shape (N, k)
        The kept probabilities; each row sums to 1.
    indices : array of int, shape (N, k)
        Their classes, distinct within a row, in ``[0, num_classes)``.
    num_classes : int
        C, the width of the dense rows they stand for.

    What ``loss.target_storage=topk`` runs leave in ``targets_topk.npz``. Scoring it equals scoring
    its dense rows (:meth:`dense`), computed a block of rows at a time.
    """

    values: np.ndarray
    indices: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        v, i = np.asarray(self.values), np.asarray(self.indices)
        if v.ndim != 2 or i.shape != v.shape:
            raise ValueError(f"values and indices must be 2-D arrays of one shape (N, k), got {v.shape} and {i.shape}")
        c = self.num_classes
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not max(2, v.shape[1]) <= c:
            raise ValueError(f"num_classes must be an integer >= max(2, k={v.shape[1]}), got {c!r}")
        if not np.issubdtype(i.dtype, np.integer):
            raise ValueError(f"indices must be integer class indices, got dtype {i.dtype}")
        if i.size and (i.min() < 0 or i.max() >= c):
            raise ValueError(f"indices must lie in [0, {c}) (num_classes), found {int(i.min())}..{int(i.max())}")
        repeated = (np.diff(np.sort(i, axis=1), axis=1) == 0).any(axis=1)
        if repeated.any():
            raise ValueError(f"indices must be distinct within a row: row {int(np.flatnonzero(repeated)[0])} names a "
                             f"class twice")
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "indices", i)
        object.__setattr__(self, "num_classes", int(c))

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, num_classes)``, the shape of the dense rows."""
        return len(self.values), self.num_classes

    def __len__(self) -> int:
        return len(self.values)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as dense float64 rows (zeros outside the kept classes)."""
        out = np.zeros((len(self.values[start:stop]), self.num_classes))
        np.put_along_axis(out, self.indices[start:stop].astype(np.int64), self.values[start:stop], axis=1)
        return out

    def dense(self) -> np.ndarray:
        """All rows as one dense float64 array (N, num_classes)."""
        return self.rows(0, len(self))


def check_probabilities(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``labels`` and ``probs``; return them as int64 (N,) and float64 (N, C).

    Raises ValueError naming the argument: ``probs`` not 2-D with at least 2 classes, NaN or
    infinite, negative, or a row that does not sum to 1 (within 1e-3); ``labels`` not 1-D
    integers of the same length, or outside ``[0, C)``. A :class:`TopKProbs` is returned dense.
    """
    return _check(labels, probs.dense() if isinstance(probs, TopKProbs) else probs, 0)


def _check(labels: Any, probs: Any, _first_row: int) -> tuple[np.ndarray, np.ndarray]:
    """check_probabilities on a block of rows starting at row ``_first_row`` (named in the errors)."""
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be a 2-D array (N examples, C >= 2 classes), got shape {p.shape}")
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"probs must hold numbers, got dtype {p.dtype}")
    p = p.astype(np.float64, copy=False)
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        raise ValueError(f"probs must be finite: row {_first_row + int(np.flatnonzero(bad)[0])} holds NaN or infinity")
    negative = (p < 0).any(axis=1)
    if negative.any():
        raise ValueError(f"probs must be non-negative: row {_first_row + int(np.flatnonzero(negative)[0])} has a "
                         f"negative entry")
    off = np.abs(p.sum(axis=1) - 1.0) > _SUM_TOLERANCE
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise ValueError(f"probs rows must be distributions summing to 1: row {_first_row + i} sums to "
                         f"{p[i].sum():.6g}")
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
        raise ValueError(f"labels must lie in [0, {p.shape[1]}) (the columns of probs): labels[{_first_row + i}] = "
                         f"{int(y[i])}")
    return y, p


def _checked_blocks(labels: Any, probs: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(labels, dense probs)`` checked, in one block for an array, in blocks of rows for a TopKProbs."""
    if not isinstance(probs, TopKProbs):
        yield check_probabilities(labels, probs)
        return
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(probs):
        raise ValueError(f"labels must be a 1-D array of {len(probs)} class indices (one per row of probs), "
                         f"got shape {y.shape}")
    step = max(1, BLOCK_ENTRIES // probs.num_classes)
    for start in range(0, max(len(probs), 1), step):
        yield _check(y[start:start + step], probs.rows(start, start + step), start)


def _verdicts(labels: Any, probs: Any, method: str, rule: str | None, threshold: float
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Scores, flags (None for the cleanlab rule or ``rule=None``), suggestions and their probability."""
    parts = []
    for y, p in _checked_blocks(labels, probs):
        score = _scores(y, p, method)
        flags = _argmax_flags(y, p) if rule == "argmax" else score < threshold if rule == "threshold" else None
        parts.append((score, flags, *_suggest(p, y)))
    score, flags, suggested, confidence = (list(column) for column in zip(*parts))
    return (np.concatenate(score), None if flags[0] is None else np.concatenate(flags), np.concatenate(suggested),
            np.concatenate(confidence))


def label_quality_scores(labels: Any, probs: Any, *, method: str = "self_confidence") -> np.ndarray:
    """A score in [0, 1] per example; lower means the given label is more likely wrong.

    Parameters
    ----------
    labels : array of int, shape (N,)
        The given (possibly noisy) labels.
    probs : array of float, shape (N, C), or TopKProbs
        Rows are probability distributions over the C classes.
    method : {"self_confidence", "normalized_margin"}
        ``self_confidence``: ``probs[i, labels[i]]``, the mass on the given label.
        ``normalized_margin``: ``(probs[i, labels[i]] - max_{k != labels[i]} probs[i, k] + 1) / 2``;
        below 0.5 exactly when another class has more mass than the given label.

    Returns
    -------
    np.ndarray, float64, shape (N,)
    """
    _check_choice("method", method, SCORES)
    return _verdicts(labels, probs, method, None, 0.5)[0]


def suggest_labels(probs: Any, labels: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The most probable class of each example and its probability.

    Parameters
    ----------
    probs : array of float, shape (N, C), or TopKProbs
    labels : array of int, shape (N,), optional
        Given labels: where the given label ties for the largest probability it is kept as the
        suggestion (no change is suggested on a tie).

    Returns
    -------
    suggested : np.ndarray, int64, shape (N,)
    confidence : np.ndarray, float64, shape (N,)
        ``probs[i, suggested[i]]``.
    """
    if labels is None:
        n = len(probs) if isinstance(probs, TopKProbs) else len(np.atleast_1d(np.asarray(probs)))
        blocks = _checked_blocks(np.zeros(n, dtype=np.int64), probs)
        suggested, confidence = zip(*(_suggest(p, None) for _, p in blocks))
        return np.concatenate(suggested), np.concatenate(confidence)
    _, _, suggested, confidence = _verdicts(labels, probs, "self_confidence", None, 0.5)
    return suggested, confidence


def flag_label_issues(labels: Any, probs: Any, *, rule: str = "argmax", threshold: float = 0.5,
                      method: str = "self_confidence", filter_by: str = "prune_by_noise_rate") -> np.ndarray:
    """Which labels look wrong, by a simple rule or by cleanlab's filter.

    Parameters
    ----------
    labels : array of int, shape (N,)
    probs : array of float, shape (N, C), or TopKProbs
    rule : {"argmax", "threshold", "cleanlab"}
        ``argmax``: another class has strictly more probability than the given label (a tie is
        not flagged). ``threshold``: the ``method`` score is below ``threshold``. ``cleanlab``:
        :func:`cleanlab_label_issues` with ``filter_by``.
    threshold : float in (0, 1], default 0.5
        Used by ``rule="threshold"`` only.
    method : {"self_confidence", "normalized_margin"}
        The score the threshold applies to.
    filter_by : one of CLEANLAB_FILTERS, default "prune_by_noise_rate"
        Used by ``rule="cleanlab"`` only.

    Returns
    -------
    np.ndarray, bool, shape (N,)
    """
    _check_rule(rule, threshold, filter_by)
    _check_choice("method", method, SCORES)
    if rule == "cleanlab":
        return cleanlab_label_issues(labels, probs, filter_by=filter_by)
    return _verdicts(labels, probs, method, rule, threshold)[1]


def cleanlab_label_issues(labels: Any, probs: Any, *, filter_by: str = "prune_by_noise_rate",
                          **cleanlab_options: Any) -> np.ndarray:
    """cleanlab's ``cleanlab.filter.find_label_issues(labels, probs, filter_by=...)``, as a bool mask.

    ``probs`` play cleanlab's ``pred_probs`` (cleanlab asks for out-of-sample predictions: ELR's
    targets stand in for them). The labels and probabilities are checked here first (a
    :class:`TopKProbs` is densified: cleanlab takes dense arrays); ``cleanlab_options`` go to
    ``find_label_issues`` as they are (e.g. ``frac_noise``, ``n_jobs``). Needs cleanlab
    (``pip install 'elr[cleanlab]'``): ImportError in one line when it is missing.

    Returns
    -------
    np.ndarray, bool, shape (N,)
    """
    _check_choice("filter_by", filter_by, CLEANLAB_FILTERS)
    y, p = check_probabilities(labels, probs)
    find_label_issues = cleanlab_filter().find_label_issues
    if len(y) == 0:  # cleanlab fails on no rows without saying so
        return np.zeros(0, dtype=bool)
    mask = find_label_issues(y, p, filter_by=filter_by, **cleanlab_options)
    return np.asarray(mask, dtype=bool)


def cleanlab_filter():
    """The ``cleanlab.filter`` module, or an ImportError in one line that says how to install it."""
    try:
        from cleanlab import filter as cleanlab_filter_module
    except ImportError:
        raise ImportError("the cleanlab rule needs cleanlab, which is not installed: "
                          "pip install 'elr[cleanlab]' (or pip install cleanlab)") from None
    return cleanlab_filter_module


def label_issue_table(labels: Any, probs: Any, *, method: str = "self_confidence", rule: str = "argmax",
                      threshold: float = 0.5, filter_by: str = "prune_by_noise_rate") -> dict[str, np.ndarray]:
    """Every example's verdict, most likely wrong first.

    Rows are sorted by ascending score; equal scores keep index order, so the table is the same
    on every run. ``rule``, ``threshold`` and ``filter_by`` as in :func:`flag_label_issues`.

    Returns
    -------
    dict of np.ndarray, each of shape (N,)
        ``index`` (int64, the row of ``labels``/``probs``), ``given_label`` (int64),
        ``suggested_label`` (int64), ``suggested_confidence`` (float64), ``score`` (float64) and
        ``is_issue`` (bool, by ``rule``).
    """
    _check_choice("method", method, SCORES)
    _check_rule(rule, threshold, filter_by)
    score, flagged, suggested, confidence = _verdicts(labels, probs, method, rule, threshold)
    if rule == "cleanlab":
        flagged = cleanlab_label_issues(labels, probs, filter_by=filter_by)
    y = np.asarray(labels).astype(np.int64)
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


def _check_rule(rule: Any, threshold: Any, filter_by: Any) -> None:
    _check_choice("rule", rule, RULES)
    _check_threshold(threshold)
    _check_choice("filter_by", filter_by, CLEANLAB_FILTERS)


def _check_threshold(threshold: Any) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
