"""Training losses with one call signature, ``forward(logits, labels, index) -> loss``: ELR and baselines."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def check_batch(
    logits: Tensor,
    labels: Tensor,
    index: Tensor | None,
    *,
    num_classes: int,
    num_examples: int | None = None,
    check_values: bool = True,
) -> None:
    """Validate one batch of (logits, labels, index); raise ValueError naming the bad argument.

    Shape checks cost nothing. Value checks (label and index ranges, finite logits) read the
    tensors back to the host, which synchronises a GPU; pass ``check_values=False`` to skip them
    in a tuned training loop.
    """
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
        return
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    if index is not None and num_examples is not None and (int(index.min()) < 0 or int(index.max()) >= num_examples):
        raise ValueError(
            f"index must lie in [0, num_examples={num_examples}), got values in [{int(index.min())}, {int(index.max())}]"
        )
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN or infinite values; the model has diverged (lower the learning rate?)")


class ELRLoss(nn.Module):
    r"""Early-learning regularised cross entropy (paper Eq. 6 with the temporal-ensembling targets of Eq. 9).

    For a batch of examples ``i`` with predictions ``p_i = clamp(softmax(logits_i), eps, 1 - eps)``
    the per-example loss is ``CE(logits_i, y_i) + lam * log(1 - <p_i, t_i>)`` where ``t_i`` is a running
    average of the example's past (detached, renormalised) predictions. The targets of the batch are
    updated *before* the regulariser reads them, so the current prediction is part of its own target.
    The total is usually negative; that is expected.

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

    Attributes
    ----------
    targets : Tensor, float32, shape (num_examples, num_classes)
        Registered buffer: saved in ``state_dict()`` and moved by ``.to(device)``. Starts at zero.
    """

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
    ) -> None:
        super().__init__()
        if not isinstance(num_examples, int) or num_examples < 1:
            raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not math.isfinite(lam) or lam < 0:
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        if not math.isfinite(beta) or not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps!r}")
        self.num_examples = num_examples
        self.num_classes = num_classes
        self.lam = float(lam)
        self.beta = float(beta)
        self.reduction = _check_reduction(reduction)
        self.eps = float(eps)
        self.check_values = check_values
        self.register_buffer("targets", torch.zeros(num_examples, num_classes))

    def extra_repr(self) -> str:
        return (
            f"num_examples={self.num_examples}, num_classes={self.num_classes}, lam={self.lam}, "
            f"beta={self.beta}, reduction={self.reduction!r}"
        )

    @torch.no_grad()
    def update_targets(self, index: Tensor, probs: Tensor) -> None:
        """Eq. 9: ``t[i] <- beta * t[i] + (1 - beta) * p_i / sum(p_i)`` for every ``i`` in ``index``.

        ``probs`` (batch, C) is clamped to ``[eps, 1 - eps]`` and renormalised first. This is the only
        place the targets change, so a distributed run can all-gather (index, probs) before calling it.
        Indices within one call are expected to be unique.
        """
        p = probs.detach().to(self.targets.dtype).clamp(self.eps, 1.0 - self.eps)
        p = p / p.sum(dim=1, keepdim=True)
        self.targets[index] = self.beta * self.targets[index] + (1.0 - self.beta) * p

    def regularizer(self, probs: Tensor, targets: Tensor) -> Tensor:
        """Per-example ``log(1 - <p, t>)`` for clamped probabilities ``probs`` and targets (batch, C)."""
        return torch.log(1.0 - (probs * targets).sum(dim=1))

    def forward(self, logits: Tensor, labels: Tensor, index: Tensor, target_probs: Tensor | None = None) -> Tensor:
        """Loss of one batch.

        Parameters
        ----------
        logits : Tensor, float, shape (B, C)
        labels : Tensor, int64, shape (B,)
            The (possibly noisy) training labels.
        index : Tensor, int64, shape (B,)
            Dataset positions of the examples, in ``[0, num_examples)``.
        target_probs : Tensor, float, shape (B, C), optional
            Probabilities that update the targets instead of the model's own softmax (ELR+ passes
            the other network's weight-averaged predictions).

        Returns
        -------
        Tensor
            Scalar for reductions "mean"/"sum", shape (B,) for "none".
        """
        check_batch(
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
        logits = logits.float()  # autocast may hand us bf16; the log terms want float32
        probs = F.softmax(logits, dim=1).clamp(self.eps, 1.0 - self.eps)
        self.update_targets(index, probs if target_probs is None else target_probs)
        ce = F.cross_entropy(logits, labels.long(), reduction="none")
        reg = self.regularizer(probs, self.targets[index])
        return _reduce(ce + self.lam * reg, self.reduction)


class CrossEntropyLoss(nn.Module):
    """Plain cross entropy with the shared ``forward(logits, labels, index)`` signature (index ignored)."""

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: Tensor, labels: Tensor, index: Tensor | None = None) -> Tensor:
        return F.cross_entropy(logits.float(), labels.long(), reduction=self.reduction)
