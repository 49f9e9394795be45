"""Training-set measurements after each epoch: memorization fractions (paper Figure 1), gradient terms
(Figure 2) and how well the ELR targets find the wrong labels."""

from __future__ import annotations

import torch
from torch import Tensor

from .label_issues import BLOCK_ENTRIES, detection_quality
from .targets import TargetBank, mean_row, normalised_bank_rows, top_k_renormalised


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


def gradient_terms(
    logits: Tensor, noisy: Tensor, true: Tensor, targets: Tensor, *, lam: float, eps: float = 1e-4
) -> dict[str, float | None]:
    """Figure 2's coefficients: the true-class entry of the ELR gradient, split into its two terms.

    By Lemma 2 the gradient of example i's loss with respect to its logits is ``p - y + lam * g`` with
    ``g_c = p_c / (1 - <p, t>) * sum_k (t_k - t_c) p_k``. For the true class ``c*`` this returns the mean
    and standard deviation of the cross-entropy term ``p_c* - y_c*``, the regularisation term
    ``lam * g_c*`` and their sum, separately over clean-labelled and wrong-labelled examples.

    Parameters
    ----------
    logits : Tensor, float, shape (N, C)
    noisy, true : Tensor, int64, shape (N,)
        Given and true labels.
    targets : Tensor, float, shape (N, C)
        The examples' current ELR targets.
    lam : float
    eps : float
        The loss's probability clamp.

    Returns
    -------
    dict
        Keys ``grad_{clean,wrong}_{ce,reg,total}_{mean,std}``; ``None`` for an empty group.
    """
    p = torch.softmax(logits.float(), dim=1).clamp(eps, 1 - eps)
    t = targets.float()
    rows = torch.arange(len(true), device=p.device)
    p_true, t_true = p[rows, true], t[rows, true]
    pt = (p * t).sum(dim=1)
    ce = p_true - (noisy == true).float()  # y is the one-hot of the given label
    reg = lam * p_true / (1 - pt) * (pt - t_true * p.sum(dim=1))
    out: dict[str, float | None] = {}
    clean = noisy == true
    for group, mask in (("clean", clean), ("wrong", ~clean)):
        for term, values in (("ce", ce), ("reg", reg), ("total", ce + reg)):
            chosen = values[mask]
            n = chosen.numel()
            out[f"grad_{group}_{term}_mean"] = float(chosen.mean()) if n else None
            out[f"grad_{group}_{term}_std"] = float(chosen.std(unbiased=False)) if n else None
    return out


@torch.no_grad()
def target_detection(banks: list[TargetBank], noisy: Tensor, true: Tensor) -> dict[str, float | int | None]:
    """How well the ELR targets find the wrong labels now, from the banks alone (no forward pass).

    Each training example's row is its normalised target (ELR+ with two networks: the mean of the
    two normalised rows; top-k storage: the k largest entries of that, renormalised), the row
    ``targets.npy`` / ``targets_topk.npz`` holds for it; its score is the row's probability of the given
    label (``elr detect``'s default self-confidence) and it is flagged when another class has more
    (the default argmax rule). Examples never trained on yet (no target mass) are left out.

    Parameters
    ----------
    banks : list of TargetBank
        A method's ``target_banks`` (:class:`elr.targets.TargetBank`), network 1 first.
    noisy, true : Tensor, int64, shape (N,)
        Given and true labels of the training examples, in the banks' order.

    Returns
    -------
    dict
        ``auroc``, ``average_precision``, ``precision``, ``recall`` (see
        :func:`elr.detection_quality`; None when undefined), ``flagged`` and ``examples`` (rows with
        targets); empty when no given label is wrong (nothing to find).
    """
    wrong_all = (noisy != true).cpu().numpy()
    if not wrong_all.any():
        return {}
    first = banks[0]
    top_k = first.target_k if first.target_storage == "topk" and len(banks) > 1 else None  # one bank: k entries
    step = max(1, BLOCK_ENTRIES // first.num_classes)
    scores, flags, kept = [], [], []
    for block in torch.arange(len(noisy)).split(step):
        normalised, trained = normalised_bank_rows(banks, block)
        rows = mean_row(normalised)
        if top_k is not None:  # ELR+ top-k: the mean's k largest entries, as targets_topk.npz keeps them
            values, where = top_k_renormalised(rows, top_k)
            rows = torch.zeros_like(rows).scatter_(1, where, values)
        y = noisy[block].to(rows.device)
        own = rows.gather(1, y[:, None])[:, 0]
        scores.append(own.cpu())
        flags.append((own < rows.max(dim=1).values).cpu())
        kept.append(trained.cpu())
    keep = torch.cat(kept).numpy()
    wrong = wrong_all[keep]
    q = detection_quality(torch.cat(scores).numpy()[keep], torch.cat(flags).numpy()[keep], wrong)
    return {k: q[k] for k in ("auroc", "average_precision", "precision", "recall", "flagged", "examples")}
