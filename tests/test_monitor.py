"""Memorization fractions (paper Figure 1) on a hand-made case."""

import pytest
import torch

from elr.monitor import memorization_fractions


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
