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
