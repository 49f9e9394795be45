"""Storage of ELR's per-example targets: dense rows (float32, float16, bfloat16) or the top k entries.

A dense bank holds ``num_examples x num_classes`` values: 4 bytes per class per example in float32,
which is 4 GB for a million examples and 1000 classes. Half precision halves that; ``topk`` keeps
only the k largest entries of each row (values in the chosen dtype plus int32 class indices), which
is what makes temporal ensembling fit for class counts in the thousands.

The top-k update (Eq. 9 restricted to a support): candidates are the union of the stored entries
and the top k of the new prediction; each candidate gets ``beta * t_c + (1 - beta) * p_c`` (``t_c = 0``
when not stored); the k largest are kept and rescaled to the mass the full dense row would have,
``beta * sum(t) + (1 - beta)``, so the rows keep the dense bank's ``1 - beta^n`` total.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

STORAGES = ("dense", "topk")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@runtime_checkable
class TargetBank(Protocol):
    """A loss that keeps per-example targets, as the engine, the monitor, the distributed target sync
    and the label-issue evidence read it (:class:`elr.losses.ELRLoss` and its variants follow it).

    A method lists its banks in ``target_banks`` (see :class:`elr.engine.Method`); nothing else about
    the loss is read.
    """

    num_classes: int
    target_storage: str  # "dense" or "topk"
    target_k: int  # the entries a "topk" row keeps
    lam: float  # the regularisation weight in use (ELR+ ramps it)
    eps: float  # the probability clamp
    # whether Figure 2's gradient terms (elr.monitor.gradient_terms, Lemma 2) are the gradient of this
    # loss's regulariser: a variant with another regulariser declares False and the monitor skips them
    reports_gradient_terms: bool
    # None in one process; under torchrun a callable turning this rank's (index, probs) into every rank's
    target_sync: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None

    def target_rows(self, index: Tensor) -> Tensor:
        """The targets of the examples ``index`` as dense float32 rows (len(index), num_classes)."""
        ...

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        """The tensors that hold the rows (an ``nn.Module``'s): they tell the device ``index`` goes to."""
        ...


def check_storage(storage: str, dtype: str, k: int | None, num_classes: int) -> None:
    """Validate ELRLoss's target_storage, target_dtype and target_k; raise ValueError naming the argument."""
    if storage not in STORAGES:
        raise ValueError(f"target_storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    if dtype not in DTYPES:
        raise ValueError(f"target_dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if storage == "topk":
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_classes:
            raise ValueError(f"target_k must be an integer in [1, num_classes={num_classes}] for "
                             f"target_storage='topk', got {k!r}")


def bytes_per_example(storage: str, dtype: str, k: int | None, num_classes: int) -> int:
    """Memory of one example's target row."""
    width = torch.empty((), dtype=DTYPES[dtype]).element_size()
    return num_classes * width if storage == "dense" else int(k) * (width + 4)  # + int32 class index


def topk_rows(values: Tensor, indices: Tensor, index: Tensor, num_classes: int) -> Tensor:
    """The stored entries of the rows ``index`` as dense float32 rows (batch, num_classes)."""
    rows = torch.zeros(index.shape[0], num_classes, dtype=torch.float32, device=values.device)
    return rows.scatter_(1, indices[index].long(), values[index].float())


@torch.no_grad()
def topk_update(values: Tensor, indices: Tensor, index: Tensor, probs: Tensor, beta: float) -> None:
    """Eq. 9 on the union of the stored entries and the top k of ``probs`` (float32, rows summing to 1)."""
    k = values.shape[1]
    old_idx = indices[index].long()
    old = torch.zeros_like(probs).scatter_(1, old_idx, values[index].to(probs.dtype))
    candidate = torch.zeros_like(probs, dtype=torch.bool)
    candidate.scatter_(1, old_idx, True)
    candidate.scatter_(1, probs.topk(k, dim=1).indices, True)
    updated = beta * old + (1.0 - beta) * probs
    mass = updated.sum(dim=1, keepdim=True)  # what the dense row would sum to
    # non-candidates get -1 so they are never chosen over a candidate (all candidates are >= 0)
    kept, kept_idx = torch.where(candidate, updated, torch.full_like(updated, -1.0)).topk(k, dim=1)
    kept = kept.clamp_min(0.0)
    kept = kept * (mass / kept.sum(dim=1, keepdim=True).clamp_min(torch.finfo(kept.dtype).tiny))
    values[index] = kept.to(values.dtype)
    indices[index] = kept_idx.to(indices.dtype)


# ---- a run's rows, read from its banks (elr.evidence writes them, elr.monitor scores them each epoch) ----


@torch.no_grad()
def normalised_bank_rows(banks: list[TargetBank], index: Tensor) -> tuple[list[Tensor], Tensor]:
    """Each bank's rows ``index`` normalised to sum to one (float64, on the banks' device), and which
    of them every bank has trained (target mass > 0: targets start at zero); untrained rows are zero.

    ``banks`` are :class:`TargetBank` s: one, or ELR+'s two networks'.
    """
    rows, trained = [], None
    for bank in banks:
        r = bank.target_rows(index.to(next(bank.buffers()).device)).double()
        mass = r.sum(dim=1, keepdim=True)
        rows.append(r / mass.clamp_min(torch.finfo(torch.float64).tiny))
        trained = mass[:, 0] > 0 if trained is None else trained & (mass[:, 0] > 0)
    return rows, trained


def mean_row(rows: list[Tensor]) -> Tensor:
    """The run's row from its banks' normalised rows: their mean (ELR+: the running average of the
    two networks' mean prediction; one bank: its row)."""
    return rows[0] if len(rows) == 1 else sum(rows[1:], rows[0]) / len(rows)


def top_k_renormalised(rows: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest entries of each row (largest first) rescaled to sum to one, and their classes:
    what a top-k run keeps of a row (``targets_topk.npz``)."""
    kept, where = rows.topk(k, dim=1)
    return kept / kept.sum(dim=1, keepdim=True), where
