"""Training losses with one call signature, ``forward(logits, labels, index) -> loss``: ELR and baselines."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import targets as target_bank
from .errors import DivergedError

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    return per_example


def _as_index_tensor(value: object, name: str, what: str, device: torch.device) -> Tensor:
    """``value`` as a tensor: a list or NumPy array of integers is converted; anything else is refused."""
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    if array is None or array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a LongTensor of {what} (a list or NumPy array of integers is converted), "
                         f"got {type(value).__name__}" + (f" of dtype {array.dtype}" if array is not None else ""))
    return torch.as_tensor(array.astype(np.int64), device=device)


def check_batch(
    logits: Tensor,
    labels: Tensor,
    index: Tensor | None,
    *,
    num_classes: int,
    num_examples: int | None = None,
    check_values: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Validate one batch of (logits, labels, index); raise ValueError naming the bad argument.

    Shape checks cost nothing. Value checks (label and index ranges, finite logits) read the
    tensors back to the host, which synchronises a GPU; pass ``check_values=False`` to skip them
    in a tuned training loop. Returns ``(labels, index)`` as tensors: a list or NumPy array of
    integers is converted to int64 on the logits' device.
    """
    if not isinstance(logits, Tensor):
        raise ValueError(f"logits must be a float Tensor of shape (batch, num_classes), got {type(logits).__name__}")
    labels = _as_index_tensor(labels, "labels", "class indices", logits.device)
    if index is not None:
        index = _as_index_tensor(index, "index", "dataset positions", logits.device)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (batch, num_classes), got {tuple(logits.shape)}")
    batch, classes = logits.shape
    if classes != num_classes:
        raise ValueError(f"logits has {classes} classes but the loss was built for num_classes={num_classes}")
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise ValueError(f"labels must have shape ({batch},) to match logits, got {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be an integer tensor of class indices, got dtype {labels.dtype}")
    if index is not None:
        if index.dim() != 1 or index.shape[0] != batch:
            raise ValueError(f"index must have shape ({batch},) to match logits, got {tuple(index.shape)}")
        if index.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"index must be an integer tensor of dataset positions, got dtype {index.dtype}")
    if not check_values or batch == 0:
        return labels, index
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    if index is not None and num_examples is not None and (int(index.min()) < 0 or int(index.max()) >= num_examples):
        raise ValueError(
            f"index must lie in [0, num_examples={num_examples}), got values in [{int(index.min())}, {int(index.max())}]"
        )
    if not bool(torch.isfinite(logits).all()):
        raise DivergedError("logits contain NaN or infinite values; the model has diverged (lower the learning rate?)")
    return labels, index


class ELRLoss(nn.Module):
    r"""Early-learning regularised cross entropy (paper Eq. 6 with the temporal-ensembling targets of Eq. 9).

    For a batch of examples ``i`` with predictions ``p_i = clamp(softmax(logits_i), eps, 1 - eps)``
    the per-example loss is ``CE(logits_i, y_i) + lam * log(1 - <p_i, t_i>)`` where ``t_i`` is a running
    average of the example's past (detached, renormalised) predictions. The targets of the batch are
    updated *before* the regulariser reads them, so the current prediction is part of its own target.
    The total is usually negative; that is expected.

    The targets move only while the criterion is in training mode *and* autograd is enabled
    (:attr:`updates_targets`): a validation loss computed under ``torch.no_grad()`` or after
    ``criterion.eval()`` reads the stored targets and leaves them as they are.

    Parameters
    ----------
    num_examples : int
        Size of the training set; ``index`` values must lie in ``[0, num_examples)``.
    num_classes : int
        Number of classes ``C``.
    lam : float, default 3.0
        Regularisation weight, ``>= 0``. ``lam=0`` is plain cross entropy (targets are still tracked).
    beta : float, default 0.7
        Temporal-ensembling momentum in ``[0, 1)``.
    reduction : {"mean", "sum", "none"}, default "mean"
    eps : float, default 1e-4
        Probabilities are clamped to ``[eps, 1 - eps]`` as in the authors' code.
    check_values : bool, default True
        Check label/index ranges and finite logits on every call (synchronises a GPU).
    target_storage : {"dense", "topk"}, default "dense"
        ``dense`` keeps every class of every example; ``topk`` keeps the ``target_k`` largest
        entries of each row (see :mod:`elr.targets`), for class counts in the thousands.
    target_dtype : {"float32", "float16", "bfloat16"}, default "float32"
        Storage dtype of the target values; the update and the loss compute in float32.
    target_k : int, default 10
        Entries kept per example with ``target_storage="topk"``.

    Attributes
    ----------
    targets : Tensor, shape (num_examples, num_classes), dense storage only
        Registered buffer in ``target_dtype``: saved in ``state_dict()`` and moved by ``.to(device)``.
        Starts at zero. With ``topk`` the buffers are ``target_values`` (num_examples, k) and
        ``target_indices`` (int32). :meth:`target_rows` reads either as dense float32 rows.
    target_sync : callable or None
        None in one process. Under torchrun it is an :class:`elr.distributed.TargetSync`: ``forward``
        passes ``(index, probs)`` through it (all ranks' rows, de-duplicated) before :meth:`update_targets`.
    reports_gradient_terms : bool
        True: the monitor's Figure 2 terms (Lemma 2) are the gradient of this regulariser. The class
        follows :class:`elr.targets.TargetBank`, the interface the engine reads a target bank through.
    """

    reports_gradient_terms = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Lemma 2's terms are this regulariser's gradient: a subclass with another one does not inherit the claim
        if "regularizer" in cls.__dict__ and "reports_gradient_terms" not in cls.__dict__:
            cls.reports_gradient_terms = False

    def __init__(
        self,
        num_examples: int,
        num_classes: int,
        *,
        lam: float = 3.0,
        beta: float = 0.7,
        reduction: str = "mean",
        eps: float = 1e-4,
        check_values: bool = True,
        target_storage: str = "dense",
        target_dtype: str = "float32",
        target_k: int = 10,
    ) -> None:
        super().__init__()
        if not isinstance(num_examples, int) or num_examples < 1:
            raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not _is_real(lam) or lam < 0:
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        if not _is_real(beta) or not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
        if not _is_real(eps) or not 0.0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps!r}")
        self.num_examples = num_examples
        self.num_classes = num_classes
        self.lam = float(lam)
        self.beta = float(beta)
        self.reduction = _check_reduction(reduction)
        self.eps = float(eps)
        self.check_values = check_values
        target_bank.check_storage(target_storage, target_dtype, target_k, num_classes)
        self.target_storage, self.target_dtype, self.target_k = target_storage, target_dtype, target_k
        dtype = target_bank.DTYPES[target_dtype]
        if target_storage == "dense":
            self.register_buffer("targets", torch.zeros(num_examples, num_classes, dtype=dtype))
        else:
            self.register_buffer("target_values", torch.zeros(num_examples, target_k, dtype=dtype))
            first_k = torch.arange(target_k, dtype=torch.int32).expand(num_examples, target_k)
            self.register_buffer("target_indices", first_k.contiguous())
        # None in one process; a distributed run sets elr.distributed.TargetSync, which turns this
        # rank's (index, probs) into all ranks' (de-duplicated) before the update
        self.target_sync: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None

    @property
    def target_bytes_per_example(self) -> int:
        """Memory of one example's targets in the chosen storage."""
        return target_bank.bytes_per_example(self.target_storage, self.target_dtype, self.target_k, self.num_classes)

    def extra_repr(self) -> str:
        storage = "" if self.target_storage == "dense" and self.target_dtype == "float32" else \
            f", target_storage={self.target_storage!r}, target_dtype={self.target_dtype!r}" + \
            (f", target_k={self.target_k}" if self.target_storage == "topk" else "")
        return (
            f"num_examples={self.num_examples}, num_classes={self.num_classes}, lam={self.lam}, "
            f"beta={self.beta}, reduction={self.reduction!r}{storage}"
        )

    @property
    def updates_targets(self) -> bool:
        """Whether :meth:`forward` moves the targets: in training mode with autograd enabled only.

        A validation loss computed with the criterion (under ``torch.no_grad()``, or after
        ``criterion.eval()``) reads the targets without overwriting the training examples' rows.
        """
        return self.training and torch.is_grad_enabled()

    def target_rows(self, index: Tensor) -> Tensor:
        """The targets of the examples ``index`` as dense float32 rows (batch, num_classes)."""
        if self.target_storage == "dense":
            return _compute_precision(self.targets[index])
        return target_bank.topk_rows(self.target_values, self.target_indices, index, self.num_classes)

    @torch.no_grad()
    def update_targets(self, index: Tensor, probs: Tensor) -> None:
        """Eq. 9: ``t[i] <- beta * t[i] + (1 - beta) * p_i / sum(p_i)`` for every ``i`` in ``index``.

        ``probs`` (batch, C) is clamped to ``[eps, 1 - eps]`` and renormalised first. This is the only
        place the targets change, so a distributed run can all-gather (index, probs) before calling it.
        Indices within one call are expected to be unique.
        """
        p = _compute_precision(probs.detach()).clamp(self.eps, 1.0 - self.eps)
        p = p / p.sum(dim=1, keepdim=True)
        if self.target_storage == "topk":
            target_bank.topk_update(self.target_values, self.target_indices, index, p, self.beta)
        elif self.targets.dtype not in (torch.float16, torch.bfloat16):
            self.targets[index] = self.beta * self.targets[index] + (1.0 - self.beta) * p.to(self.targets.dtype)
        else:  # half-precision storage: average in float32, round once
            self.targets[index] = (self.beta * self.targets[index].float() + (1.0 - self.beta) * p).to(self.targets.dtype)

    def regularizer(self, probs: Tensor, targets: Tensor) -> Tensor:
        """Per-example ``log(1 - <p, t>)`` for clamped probabilities ``probs`` and targets (batch, C)."""
        return torch.log(1.0 - (probs * targets).sum(dim=1))

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        index: Tensor,
        target_probs: Tensor | None = None,
        *,
        mixup: tuple[float, Tensor] | None = None,
    ) -> Tensor:
        """Loss of one batch.

        Parameters
        ----------
        logits : Tensor, float, shape (B, C)
            With ``mixup``, the outputs on the mixed inputs ``l * x + (1 - l) * x[perm]``.
        labels : Tensor, int64, shape (B,)
            The (possibly noisy) training labels, of the un-mixed batch.
        index : Tensor, int64, shape (B,)
            Dataset positions of the examples (of the un-mixed batch), in ``[0, num_examples)``.
        target_probs : Tensor, float, shape (B, C), optional
            Probabilities that update the targets instead of the model's own softmax (ELR+ passes
            the other network's weight-averaged predictions). Required with ``mixup``: the
            probabilities of the un-mixed batch.
        mixup : (float, Tensor), optional
            ``(l, perm)``: the mixing weight in ``[0, 1]`` and the batch permutation (int64, (B,))
            the inputs were mixed with (ELR+). The targets of ``index`` are updated from
            ``target_probs`` as usual; then labels and targets are mixed with the same ``l`` and
            ``perm``: ``y~ = l * onehot(y) + (1 - l) * onehot(y[perm])``,
            ``q = l * t[index] + (1 - l) * t[index][perm]``, and the per-example loss is
            ``CE(logits, y~) + lam * log(1 - <p, q>)``.

        Returns
        -------
        Tensor
            Scalar for reductions "mean"/"sum", shape (B,) for "none".
        """
        labels, index = check_batch(
            logits,
            labels,
            index,
            num_classes=self.num_classes,
            num_examples=self.num_examples,
            check_values=self.check_values,
        )
        if target_probs is not None and target_probs.shape != logits.shape:
            raise ValueError(
                f"target_probs must have the shape of logits {tuple(logits.shape)}, got {tuple(target_probs.shape)}"
            )
        if mixup is not None:
            mix_weight, perm = _check_mixup(mixup, logits.shape[0], self.check_values)
            if target_probs is None:
                # the model's own softmax is of the mixed inputs: it would store mixtures as targets
                raise ValueError("mixup needs target_probs: the probabilities of the un-mixed batch")
        logits = _compute_precision(logits)  # autocast may hand us bf16; the log terms want float32
        probs = F.softmax(logits, dim=1).clamp(self.eps, 1.0 - self.eps)
        source = probs if target_probs is None else target_probs
        if self.updates_targets:
            if self.target_sync is None:
                self.update_targets(index, source)
            else:
                self.update_targets(*self.target_sync(index, source))
        if mixup is None:
            ce = F.cross_entropy(logits, labels.long(), reduction="none")
            reg = self.regularizer(probs, self.target_rows(index))
        else:
            targets = self.target_rows(index)
            mixed_targets = mix_weight * targets + (1.0 - mix_weight) * targets[perm]
            onehot = F.one_hot(labels.long(), self.num_classes).to(logits.dtype)
            soft_labels = mix_weight * onehot + (1.0 - mix_weight) * onehot[perm]
            ce = F.cross_entropy(logits, soft_labels, reduction="none")
            reg = self.regularizer(probs, mixed_targets)
        return _reduce(ce + self.lam * reg, self.reduction)


def _compute_precision(t: Tensor) -> Tensor:
    """float64 stays float64 (exact checks, research use); anything else computes in float32."""
    return t if t.dtype == torch.float64 else t.float()


def _check_mixup(mixup: object, batch: int, check_values: bool) -> tuple[float, Tensor]:
    """Validate ELRLoss's ``mixup=(l, perm)`` argument; return ``l`` as a float and ``perm``."""
    if not isinstance(mixup, (tuple, list)) or len(mixup) != 2:
        raise ValueError(f"mixup must be a pair (l, perm), got {type(mixup).__name__}")
    weight, perm = mixup
    weight = _check_real("mixup weight l", float(weight) if isinstance(weight, Tensor) else weight, 0.0, 1.0)
    if not isinstance(perm, Tensor) or perm.dim() != 1 or perm.shape[0] != batch:
        raise ValueError(f"mixup permutation must be an integer tensor of shape ({batch},)")
    if perm.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"mixup permutation must be an integer tensor, got dtype {perm.dtype}")
    if check_values and batch and (int(perm.min()) < 0 or int(perm.max()) >= batch):
        raise ValueError(f"mixup permutation must hold batch positions in [0, {batch})")
    return weight, perm


class CrossEntropyLoss(nn.Module):
    """Plain cross entropy with the shared ``forward(logits, labels, index)`` signature (index ignored).

    Parameters
    ----------
    num_classes : int, optional
        Number of classes ``C``. When given, logits with another width are rejected; when omitted,
        the width of each batch's logits is taken as ``C``.
    reduction : {"mean", "sum", "none"}, default "mean"
    check_values : bool, default True
        Check the label range and finite logits on every call (synchronises a GPU).
    """

    def __init__(self, num_classes: int | None = None, *, reduction: str = "mean", check_values: bool = True) -> None:
        super().__init__()
        if num_classes is not None:
            _check_num_classes(num_classes)
        self.num_classes = num_classes
        self.reduction = _check_reduction(reduction)
        self.check_values = check_values

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, reduction={self.reduction!r}"

    def forward(self, logits: Tensor, labels: Tensor, index: Tensor | None = None) -> Tensor:
        num_classes = self.num_classes if self.num_classes is not None else (logits.shape[-1] if logits.dim() else 0)
        check_batch(logits, labels, index, num_classes=num_classes, check_values=self.check_values)
        return F.cross_entropy(logits.float(), labels.long(), reduction=self.reduction)


# ---- baselines ---------------------------------------------------------------------------------

_PROB_FLOOR = 1e-7  # lower clamp on probabilities inside logs and powers (GCE, SCE)


def _is_real(value: object) -> bool:
    """A finite real number (not a bool, not a string)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return num_classes


def _check_real(
    name: str, value: object, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> float:
    """Return ``value`` as a float if it lies in the interval, else raise ValueError naming ``name``."""
    interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    value = float(value)
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if below or above:
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return value


class _BaselineLoss(nn.Module):
    """Shared constructor checks and batch validation of the baseline losses."""

    def __init__(self, num_classes: int, *, reduction: str, check_values: bool) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        self.reduction = _check_reduction(reduction)
        self.check_values = check_values

    def _prepare(self, logits: Tensor, labels: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor]:
        labels, _ = check_batch(logits, labels, index, num_classes=self.num_classes, check_values=self.check_values)
        return logits.float(), labels.long()  # autocast may hand us bf16; logs and powers want float32


class BootstrapLoss(_BaselineLoss):
    r"""Bootstrapping loss of Reed et al. (2015): cross entropy against a mix of label and prediction.

    Per example, with ``p = softmax(logits)`` and one-hot label ``y``:

    * ``mode="soft"``: ``-sum_c (beta * y_c + (1 - beta) * p_c) * log p_c``
      ``= beta * CE + (1 - beta) * H(p)``.
    * ``mode="hard"``: ``-sum_c (beta * y_c + (1 - beta) * z_c) * log p_c`` with ``z`` the one-hot
      of ``argmax p``, i.e. ``beta * CE - (1 - beta) * log p_argmax``.

    The prediction inside the soft target is **not detached**: Reed et al. present soft
    bootstrapping as softmax regression with minimum-entropy regularisation, which is what
    letting the gradient flow through ``p`` in the target gives (the ``H(p)`` term above). The
    hard target is piecewise constant in the logits, so the question does not arise there.

    Parameters
    ----------
    num_classes : int
        Number of classes ``C``.
    beta : float, optional
        Weight of the given label, in ``[0, 1]``. Defaults to Reed et al.'s values: 0.95 for
        ``"soft"``, 0.8 for ``"hard"``. ``beta=1`` is plain cross entropy.
    mode : {"soft", "hard"}, default "soft"
    reduction : {"mean", "sum", "none"}, default "mean"
    check_values : bool, default True
        Check the label range and finite logits on every call (synchronises a GPU).
    """

    DEFAULT_BETA = {"soft": 0.95, "hard": 0.8}

    def __init__(
        self,
        num_classes: int,
        *,
        beta: float | None = None,
        mode: str = "soft",
        reduction: str = "mean",
        check_values: bool = True,
    ) -> None:
        super().__init__(num_classes, reduction=reduction, check_values=check_values)
        if mode not in self.DEFAULT_BETA:
            raise ValueError(f"mode must be one of {tuple(self.DEFAULT_BETA)}, got {mode!r}")
        self.mode = mode
        self.beta = self.DEFAULT_BETA[mode] if beta is None else _check_real("beta", beta, 0.0, 1.0)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, beta={self.beta}, mode={self.mode!r}, reduction={self.reduction!r}"

    def forward(self, logits: Tensor, labels: Tensor, index: Tensor | None = None) -> Tensor:
        logits, labels = self._prepare(logits, labels, index)
        log_p = F.log_softmax(logits, dim=1)
        ce = -log_p.gather(1, labels[:, None]).squeeze(1)
        if self.mode == "soft":
            own = -(log_p.exp() * log_p).sum(dim=1)  # entropy of p; gradient flows through both factors
        else:
            own = -log_p.gather(1, log_p.detach().argmax(dim=1, keepdim=True)).squeeze(1)
        return _reduce(self.beta * ce + (1.0 - self.beta) * own, self.reduction)


def _as_transition(transition: object, num_classes: int) -> Tensor:
    """Validate a row-stochastic (C, C) transition matrix and return it as float32."""
    try:
        t = torch.as_tensor(np.asarray(transition, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise ValueError(f"transition must be a numeric (num_classes, num_classes) matrix: {err}") from None
    if t.shape != (num_classes, num_classes):
        raise ValueError(
            f"transition must have shape (num_classes, num_classes) = ({num_classes}, {num_classes}), "
            f"got {tuple(t.shape)}"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError("transition must contain only finite values")
    if bool((t < 0).any()):
        raise ValueError(f"transition entries must lie in [0, 1], got minimum {float(t.min())}")
    row_sums = t.sum(dim=1)
    worst = int((row_sums - 1.0).abs().argmax())
    if abs(float(row_sums[worst]) - 1.0) > 1e-4:
        raise ValueError(
            f"transition rows must sum to 1 (within 1e-4): row {worst} sums to {float(row_sums[worst])}"
        )
    return t.float()


class ForwardLoss(_BaselineLoss):
    r"""Forward loss correction of Patrini et al. (2017): cross entropy of the *noisy* posterior.

    Per example ``-log (softmax(logits) @ T)_y`` where ``T[i, j] = P(noisy label = j | true label = i)``.
    It is computed in log space, ``-logsumexp_j(log p_j + log T[j, y])``, which is exact, stable for
    small probabilities and allows zeros in ``T`` (a label whose column of ``T`` is all zero has
    infinite loss, as it is impossible under ``T``).

    Parameters
    ----------
    num_classes : int
        Number of classes ``C``.
    transition : array-like, shape (C, C)
        Row-stochastic matrix: finite, non-negative, rows summing to 1 within 1e-4. Estimate it
        with :func:`estimate_transition_matrix`, or pass the known noise matrix.
    reduction : {"mean", "sum", "none"}, default "mean"
    check_values : bool, default True
        Check the label range and finite logits on every call (synchronises a GPU).

    Attributes
    ----------
    transition : Tensor, float32, shape (C, C)
        Registered buffer: saved in ``state_dict()`` and moved by ``.to(device)``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        transition: object,
        reduction: str = "mean",
        check_values: bool = True,
    ) -> None:
        super().__init__(num_classes, reduction=reduction, check_values=check_values)
        self.register_buffer("transition", _as_transition(transition, self.num_classes))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, reduction={self.reduction!r}"

    def forward(self, logits: Tensor, labels: Tensor, index: Tensor | None = None) -> Tensor:
        logits, labels = self._prepare(logits, labels, index)
        log_p = F.log_softmax(logits, dim=1)
        log_t_col = torch.log(self.transition.float()).t()[labels]  # row b holds log T[:, y_b]
        return _reduce(-torch.logsumexp(log_p + log_t_col, dim=1), self.reduction)


def estimate_transition_matrix(probs: object, *, percentile: float | None = 97.0) -> np.ndarray:
    """Estimate the noise transition matrix from anchor points (Patrini et al., 2017).

    For each class ``i`` the anchor is the example the model is most confident belongs to ``i``,
    after discarding the top outliers: with ``thr = percentile(probs[:, i], percentile)`` (NumPy's
    ``method="higher"``, as in the authors' code), entries ``>= thr`` are ignored and the anchor is
    the argmax of the rest. Row ``i`` of the estimate is the anchor's predicted distribution; rows
    are then normalised to sum to 1. The authors' code zeroes the ignored entries in place, which
    corrupts the rows of later classes; here the input is never modified.

    Parameters
    ----------
    probs : array-like, shape (N, C)
        Softmax outputs on the noisy training set of a model trained with plain cross entropy.
    percentile : float or None, default 97.0
        Outlier percentile in ``[0, 100]``; ``None`` takes the plain argmax (no outlier filter).

    Returns
    -------
    numpy.ndarray, float64, shape (C, C)
        Row-stochastic estimate of ``T[i, j] = P(noisy = j | true = i)``.
    """
    p = np.array(probs, dtype=np.float64)  # a copy: the filter below must not touch the caller's array
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (N >= 1, num_classes >= 2), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs must contain finite, non-negative probabilities")
    if percentile is not None:
        percentile = _check_real("percentile", percentile, 0.0, 100.0)
    num_classes = p.shape[1]
    t = np.empty((num_classes, num_classes))
    for i in range(num_classes):
        column = p[:, i].copy()
        if percentile is not None:
            column[column >= np.percentile(column, percentile, method="higher")] = 0.0
        t[i] = p[int(np.argmax(column))]
    sums = t.sum(axis=1, keepdims=True)
    if (sums <= 0).any():
        raise ValueError("probs: an anchor example has all-zero probabilities; pass softmax outputs")
    return t / sums


class GCELoss(_BaselineLoss):
    r"""Generalised cross entropy of Zhang & Sabuncu (2018): ``(1 - p_y^q) / q``.

    ``q -> 0`` gives cross entropy, ``q = 1`` the mean absolute error ``1 - p_y`` (up to a factor 2).
    ``p_y`` is clamped to ``>= 1e-7`` so that its power and gradient stay finite for confident wrong
    predictions; the value is computed as ``-expm1(q * log p_y) / q`` for accuracy at small ``q``.

    Parameters
    ----------
    num_classes : int
        Number of classes ``C``.
    q : float, default 0.7
        Exponent in ``(0, 1]``; the authors use 0.7.
    reduction : {"mean", "sum", "none"}, default "mean"
    check_values : bool, default True
        Check the label range and finite logits on every call (synchronises a GPU).
    """

    def __init__(self, num_classes: int, *, q: float = 0.7, reduction: str = "mean", check_values: bool = True) -> None:
        super().__init__(num_classes, reduction=reduction, check_values=check_values)
        self.q = _check_real("q", q, 0.0, 1.0, lo_open=True)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, q={self.q}, reduction={self.reduction!r}"

    def forward(self, logits: Tensor, labels: Tensor, index: Tensor | None = None) -> Tensor:
        logits, labels = self._prepare(logits, labels, index)
        log_py = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
        log_py = log_py.clamp(min=math.log(_PROB_FLOOR))
        return _reduce(-torch.expm1(self.q * log_py) / self.q, self.reduction)


class SCELoss(_BaselineLoss):
    r"""Symmetric cross entropy of Wang et al. (2019): ``alpha * CE + beta * RCE``.

    The reverse cross entropy swaps prediction and label, ``RCE = -sum_c p_c log y_c``, with
    ``log 0`` replaced by ``log_clip = A``; so ``RCE = -A * sum_{c != y} p_c = -A * (1 - p_y)``.
    ``p`` is clamped to ``[1e-7, 1]`` in the RCE term as in the authors' code. The paper uses
    ``A = -4``, ``alpha = 0.1, beta = 1.0`` on CIFAR-10 and ``alpha = 6.0, beta = 0.1`` on CIFAR-100.

    Parameters
    ----------
    num_classes : int
        Number of classes ``C``.
    alpha : float, default 0.1
        Weight of cross entropy, ``>= 0``.
    beta : float, default 1.0
        Weight of reverse cross entropy, ``>= 0``; ``alpha`` and ``beta`` may not both be 0.
    log_clip : float, default -4.0
        The value ``A < 0`` that stands in for ``log 0``.
    reduction : {"mean", "sum", "none"}, default "mean"
    check_values : bool, default True
        Check the label range and finite logits on every call (synchronises a GPU).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        alpha: float = 0.1,
        beta: float = 1.0,
        log_clip: float = -4.0,
        reduction: str = "mean",
        check_values: bool = True,
    ) -> None:
        super().__init__(num_classes, reduction=reduction, check_values=check_values)
        self.alpha = _check_real("alpha", alpha, 0.0, math.inf)
        self.beta = _check_real("beta", beta, 0.0, math.inf)
        if self.alpha == 0.0 and self.beta == 0.0:
            raise ValueError("alpha and beta must not both be 0 (alpha >= 0, beta >= 0, alpha + beta > 0)")
        self.log_clip = _check_real("log_clip", log_clip, -math.inf, 0.0, hi_open=True)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, alpha={self.alpha}, beta={self.beta}, "
            f"log_clip={self.log_clip}, reduction={self.reduction!r}"
        )

    def forward(self, logits: Tensor, labels: Tensor, index: Tensor | None = None) -> Tensor:
        logits, labels = self._prepare(logits, labels, index)
        ce = F.cross_entropy(logits, labels, reduction="none")
        p = F.softmax(logits, dim=1).clamp(_PROB_FLOOR, 1.0)
        off_label = 1.0 - F.one_hot(labels, self.num_classes).to(p.dtype)
        rce = -self.log_clip * (p * off_label).sum(dim=1)
        return _reduce(self.alpha * ce + self.beta * rce, self.reduction)


class ELRKLLoss(ELRLoss):
    r"""ELR with the KL alternative of the paper's Section C: ``CE + lam * KL(t || p)``.

    Same constructor, targets bank and update (Eq. 9) as :class:`ELRLoss`; only the regulariser
    changes, from ``log(1 - <p, t>)`` to ``sum_c t_c log(t_c / p_c)`` (with ``0 log 0 = 0``). Both
    are added with weight ``+lam`` and minimised. The targets are used as they are, without
    renormalising (their rows sum to ``1 - beta^k`` after ``k`` updates). The paper shows this
    variant overfits the targets; it is here for that comparison.
    """

    reports_gradient_terms = False  # Lemma 2's terms are the gradient of log(1 - <p, t>), not of the KL

    def regularizer(self, probs: Tensor, targets: Tensor) -> Tensor:
        """Per-example ``KL(t || p) = sum_c t_c log t_c - t_c log p_c`` for clamped ``probs`` (batch, C)."""
        # xlogy(t, t) is 0 where t = 0; log(probs) is finite because ELRLoss clamps probs to [eps, 1 - eps]
        return (torch.xlogy(targets, targets) - targets * torch.log(probs)).sum(dim=1)


# ---- registry ----------------------------------------------------------------------------------

# name -> (class, fixed keyword arguments, whether the class takes num_examples)
_LOSSES: dict[str, tuple[type[nn.Module], dict[str, object], bool]] = {
    "ce": (CrossEntropyLoss, {}, False),
    "elr": (ELRLoss, {}, True),
    "elr_kl": (ELRKLLoss, {}, True),
    "bootstrap_soft": (BootstrapLoss, {"mode": "soft"}, False),
    "bootstrap_hard": (BootstrapLoss, {"mode": "hard"}, False),
    "forward": (ForwardLoss, {}, False),
    "gce": (GCELoss, {}, False),
    "sce": (SCELoss, {}, False),
}


def list_losses() -> list[str]:
    """Names accepted by :func:`create_loss`."""
    return list(_LOSSES)


def _lookup(name: str) -> tuple[type[nn.Module], dict[str, object], bool]:
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(_LOSSES)}")
    return _LOSSES[name]


def loss_params(name: str) -> tuple[str, ...]:
    """Keyword parameters that :func:`create_loss` accepts for loss ``name`` (beyond the sizes)."""
    cls, fixed, _ = _lookup(name)
    signature = inspect.signature(cls.__init__)
    return tuple(
        p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name not in fixed
    )


def create_loss(name: str, *, num_examples: int | None = None, num_classes: int, **params: object) -> nn.Module:
    """Build a loss by name.

    Parameters
    ----------
    name : str
        One of :func:`list_losses`: "ce", "elr", "elr_kl", "bootstrap_soft", "bootstrap_hard",
        "forward", "gce", "sce".
    num_examples : int, optional
        Training-set size; required by "elr" and "elr_kl", ignored by the others.
    num_classes : int
        Number of classes.
    **params
        The loss's keyword parameters (see :func:`loss_params`), e.g. ``lam``, ``beta``, ``q``;
        "forward" requires ``transition``.

    Returns
    -------
    nn.Module
        A loss with the call signature ``loss(logits, labels, index)``.
    """
    cls, fixed, needs_examples = _lookup(name)
    accepted = loss_params(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {name!r} got unknown parameter(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    required = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name not in params
    ]
    if required:
        raise ValueError(f"loss {name!r} requires parameter(s) {', '.join(required)}")
    if needs_examples:
        if num_examples is None:
            raise ValueError(f"loss {name!r} requires num_examples (the training-set size)")
        return cls(num_examples, num_classes, **fixed, **params)
    return cls(num_classes, **fixed, **params)


def check_loss_params(name: str, params: dict[str, object]) -> None:
    """Raise ValueError for a parameter value that loss ``name`` refuses whatever the data.

    Builds the loss for a stand-in one-example data set whose class count admits every
    size-dependent parameter (``target_k``), so the checks are the constructors' own; a config is
    validated before any data are read. ``forward``'s ``transition`` is a file or a keyword in a
    config (checked by :meth:`elr.config.Config.validate`) and becomes a matrix only with the
    data, so forward's parameters are left to it.
    """
    if name == "forward":
        return
    k = params.get("target_k", inspect.signature(ELRLoss).parameters["target_k"].default)
    classes = max(2, k) if isinstance(k, int) and not isinstance(k, bool) else 2  # admits any valid target_k
    try:
        create_loss(name, num_examples=1, num_classes=classes, **params)
    except TypeError as err:  # a value of a type the constructor cannot even compare
        raise ValueError(f"loss {name!r}: {err}") from None
