"""Training-set monitor: memorization fractions (paper Figure 1) and the targets' detection quality, by hand."""

import pytest
import torch

import numpy as np
from torch import nn

from elr.losses import ELRLoss
from elr.monitor import memorization_fractions, target_detection


def test_fractions_by_hand():
    true = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    noisy = torch.tensor([0, 1, 2, 0, 2, 0, 1, 0])  # first four clean, last four wrong
    pred = torch.tensor([0, 2, 2, 0, 1, 0, 2, 0])
    # clean: 0->0 ok, 1->2 wrong, 2->2 ok, 0->0 ok  => 3/4 correct
    # wrong: (true 1, given 2, pred 1) true; (2, 0, 0) memorized; (0, 1, 2) other; (1, 0, 0) memorized
    f = memorization_fractions(pred, noisy, true)
    assert f["clean_correct"] == pytest.approx(0.75) and f["clean_incorrect"] == pytest.approx(0.25)
    assert f["wrong_true"] == pytest.approx(0.25)
    assert f["wrong_memorized"] == pytest.approx(0.5)
    assert f["wrong_other"] == pytest.approx(0.25)


def test_no_wrong_labels_gives_none():
    y = torch.tensor([0, 1, 1])
    f = memorization_fractions(torch.tensor([0, 0, 1]), y, y)
    assert f["wrong_memorized"] is None and f["clean_correct"] == pytest.approx(2 / 3)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="equal length"):
        memorization_fractions(torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long))


def test_gradient_terms_match_autograd_of_the_elr_loss():
    from elr.monitor import gradient_terms

    torch.manual_seed(0)
    n, c, lam = 12, 4, 3.0
    logits = (torch.randn(n, c, dtype=torch.float64) * 0.5).requires_grad_()
    targets = torch.softmax(torch.randn(n, c, dtype=torch.float64), dim=1) * 0.9
    true = torch.randint(0, c, (n,))
    noisy = true.clone()
    noisy[:5] = (true[:5] + 1) % c  # five wrong labels
    p = torch.softmax(logits, dim=1)
    ce = torch.nn.functional.cross_entropy(logits, noisy, reduction="sum")
    (ce + lam * torch.log(1 - (p * targets).sum(dim=1)).sum()).backward()
    total = logits.grad[torch.arange(n), true]  # per-example gradient at the true class
    ce_term = p.detach()[torch.arange(n), true] - (noisy == true).double()
    got = gradient_terms(logits.detach(), noisy, true, targets, lam=lam)
    wrong = torch.arange(n) < 5
    assert got["grad_wrong_total_mean"] == pytest.approx(float(total[wrong].mean()), abs=1e-6)
    assert got["grad_clean_total_mean"] == pytest.approx(float(total[~wrong].mean()), abs=1e-6)
    assert got["grad_clean_total_std"] == pytest.approx(float(total[~wrong].std(unbiased=False)), abs=1e-6)
    assert got["grad_wrong_ce_mean"] == pytest.approx(float(ce_term[wrong].mean()), abs=1e-6)
    reg = total - ce_term
    assert got["grad_clean_reg_mean"] == pytest.approx(float(reg[~wrong].mean()), abs=1e-6)
    assert got["grad_wrong_ce_mean"] > 0  # a wrong label pushes p_true down: positive CE coefficient


# ---- how well the targets find the wrong labels (det_* keys) ------------------------------------------


class Bank(nn.Module):
    """A hand-made dense target bank: fixed rows, read as target_detection reads an ELR loss's."""

    target_storage, target_k = "dense", None

    def __init__(self, rows):
        super().__init__()
        self.register_buffer("rows", torch.as_tensor(rows, dtype=torch.float32))
        self.num_classes = self.rows.shape[1]

    def target_rows(self, index):
        return self.rows[index]


def pairwise_auroc(score, wrong):
    """P(a wrong label scores below a correct one), ties one half: every pair counted by hand."""
    bad, good = score[wrong], score[~wrong]
    return ((bad[:, None] < good[None, :]).sum() + 0.5 * (bad[:, None] == good[None, :]).sum()) / (len(bad) * len(good))


def average_precision(score, wrong):
    """Mean over the wrong labels of the precision at their rank (no ties in the cases below)."""
    order = np.argsort(score)
    hits = wrong[order]
    return np.mean([hits[:k + 1].mean() for k in np.flatnonzero(hits)])


def test_detection_of_a_hand_made_bank():
    # rows need not sum to one (targets start at zero and sum to 1 - beta^n): they are normalised first;
    # eighths of 1/2, so that every score and tie below is exact in float32
    rows = np.array([[4, 2, 2], [1, 6, 1], [1, 1, 6], [3, 3, 2],
                     [2, 3, 3], [2, 4, 2], [5, 2, 1], [0, 0, 0]]) / 16  # last: never trained
    given = torch.tensor([0, 1, 0, 1, 2, 0, 1, 2])
    true = torch.tensor([0, 1, 2, 0, 2, 1, 0, 0])  # rows 2, 3, 5, 6 (and the untrained 7) carry wrong labels
    got = target_detection([Bank(rows)], given, true)
    # scores (the given label's share of its row): 4/8, 6/8, 1/8 W, 3/8 W, 3/8, 2/8 W, 2/8 W
    # AUROC: 4 wrong x 3 correct pairs, all ordered but row 3 against row 4 (a tie, one half): 11.5 / 12
    # average precision: thresholds 1/8 (1 of 1 wrong, recall 1/4), 2/8 (3 of 3, recall 3/4),
    # 3/8 (4 of 5, recall 1): 1/4 * 1 + 1/2 * 1 + 1/4 * 4/5 = 0.95
    # flags: rows 2, 5, 6; row 3 ties its label with class 0 and is kept
    assert got == pytest.approx({"auroc": 11.5 / 12, "average_precision": 0.95, "precision": 1.0, "recall": 0.75,
                                 "flagged": 3, "examples": 7})
    score = rows[:7][np.arange(7), given[:7].numpy()] / rows[:7].sum(axis=1)
    assert got["auroc"] == pytest.approx(pairwise_auroc(score, (given != true).numpy()[:7]))


def test_detection_of_two_banks_uses_their_mean_and_a_real_elr_bank():
    rng = np.random.default_rng(0)
    n, c = 40, 4
    a, b = rng.random((n, c)), rng.random((n, c))
    given = torch.from_numpy(rng.integers(0, c, n))
    true = given.clone()
    true[:15] = (true[:15] + 1) % c
    mean = (a / a.sum(1, keepdims=True) + b / b.sum(1, keepdims=True)) / 2
    score = mean[np.arange(n), given.numpy()]
    wrong = (given != true).numpy()
    got = target_detection([Bank(a), Bank(b)], given, true)
    assert got["auroc"] == pytest.approx(pairwise_auroc(score, wrong))
    assert got["average_precision"] == pytest.approx(average_precision(score, wrong))
    flags = score < mean.max(axis=1)
    assert got["flagged"] == flags.sum()
    assert got["precision"] == pytest.approx((flags & wrong).sum() / flags.sum())
    assert got["recall"] == pytest.approx((flags & wrong).sum() / wrong.sum())

    loss = ELRLoss(num_examples=n, num_classes=c, lam=3.0, beta=0.7)  # the real bank reads the same
    with torch.no_grad():
        loss.targets.copy_(torch.from_numpy(a).float())
    assert target_detection([loss], given, true) == target_detection([Bank(a)], given, true)


def test_detection_needs_a_wrong_label():
    y = torch.tensor([0, 1, 1])
    assert target_detection([Bank(np.eye(2)[[0, 1, 1]])], y, y) == {}
