"""ELR target storage: dense float32 / float16 / bfloat16 and top-k, against independent computations."""

import numpy as np
import pytest
import torch

from elr.config import Config, ConfigError
from elr.losses import ELRLoss
from elr.targets import mean_row, top_k_renormalised, topk_rows


def random_probs(generator, batch, classes, peaked=True):
    logits = torch.randn(batch, classes, generator=generator) * (4.0 if peaked else 1.0)
    return torch.softmax(logits, dim=1)


def drive(loss, steps=40, batch=16, seed=0):
    """Feed the same random (index, probs) sequence to a loss; indices unique within a batch."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randperm(loss.num_examples, generator=g)[:batch]
        loss.update_targets(index, random_probs(g, batch, loss.num_classes))
    return loss


def numpy_topk_update(values, indices, i, p, beta, eps=1e-4):
    """The documented top-k rule for one example, with Python sets and sorting (no torch)."""
    p = np.clip(p.astype(np.float64), eps, 1 - eps)
    p = p / p.sum()
    k = len(values[i])
    stored = dict(zip(indices[i].tolist(), values[i].tolist()))
    candidates = set(stored) | set(np.argsort(-p)[:k].tolist())
    updated = {c: beta * stored.get(c, 0.0) + (1 - beta) * p[c] for c in candidates}
    mass = beta * sum(stored.values()) + (1 - beta)
    keep = sorted(updated, key=lambda c: -updated[c])[:k]
    total = sum(updated[c] for c in keep)
    values[i] = [updated[c] * mass / total for c in keep]
    indices[i] = keep


def test_bytes_per_example():
    assert ELRLoss(4, 1000).target_bytes_per_example == 4000
    assert ELRLoss(4, 1000, target_dtype="float16").target_bytes_per_example == 2000
    assert ELRLoss(4, 1000, target_dtype="bfloat16").target_bytes_per_example == 2000
    assert ELRLoss(4, 1000, target_storage="topk", target_k=10).target_bytes_per_example == 80
    assert ELRLoss(4, 1000, target_storage="topk", target_k=10, target_dtype="float16").target_bytes_per_example == 60
    topk = ELRLoss(7, 1000, target_storage="topk", target_k=10)
    assert sum(b.numel() * b.element_size() for b in topk.buffers()) == 7 * 80


@pytest.mark.parametrize("classes", [10, 100])
def test_float16_targets_track_float32_within_1e_3(classes):
    exact = drive(ELRLoss(64, classes))
    half = drive(ELRLoss(64, classes, target_dtype="float16"))
    assert half.targets.dtype == torch.float16
    every = torch.arange(64)
    diff = (half.target_rows(every) - exact.target_rows(every)).abs().max().item()
    assert 0 < diff < 1e-3  # rounded, but by less than 1e-3


def test_bfloat16_targets_track_float32_within_its_precision():
    exact = drive(ELRLoss(64, 10))
    bf16 = drive(ELRLoss(64, 10, target_dtype="bfloat16"))
    every = torch.arange(64)
    assert (bf16.target_rows(every) - exact.target_rows(every)).abs().max().item() < 1e-2  # 8-bit mantissa


def test_topk_with_k_equal_to_classes_is_dense():
    dense = drive(ELRLoss(32, 6))
    full = drive(ELRLoss(32, 6, target_storage="topk", target_k=6))
    every = torch.arange(32)
    torch.testing.assert_close(full.target_rows(every), dense.target_rows(every), rtol=1e-5, atol=1e-6)


def test_topk_update_matches_the_rule_written_with_sets():
    loss = ELRLoss(12, 20, beta=0.6, target_storage="topk", target_k=3)
    values = np.zeros((12, 3))
    indices = np.tile(np.arange(3), (12, 1))
    g = torch.Generator().manual_seed(1)
    for _ in range(25):
        index = torch.randperm(12, generator=g)[:5]
        probs = random_probs(g, 5, 20, peaked=False)
        loss.update_targets(index, probs)
        for row, i in enumerate(index.tolist()):
            numpy_topk_update(values, indices, i, probs[row].numpy(), 0.6)
    want = np.zeros((12, 20))
    np.put_along_axis(want, indices, values, axis=1)
    np.testing.assert_allclose(loss.target_rows(torch.arange(12)).numpy(), want, rtol=1e-5, atol=1e-7)


def test_topk_rows_keep_the_dense_mass_and_the_largest_entries():
    dense = drive(ELRLoss(50, 100), steps=60)
    topk = drive(ELRLoss(50, 100, target_storage="topk", target_k=10), steps=60)
    every = torch.arange(50)
    d, t = dense.target_rows(every), topk.target_rows(every)
    torch.testing.assert_close(t.sum(dim=1), d.sum(dim=1), rtol=1e-5, atol=1e-6)  # 1 - beta^n per row
    assert ((t > 0).sum(dim=1) <= 10).all()
    assert torch.equal(t.argmax(dim=1)[d.max(dim=1).values > 0.3], d.argmax(dim=1)[d.max(dim=1).values > 0.3])


def test_topk_loss_value_uses_its_rows():
    loss = ELRLoss(8, 30, lam=3.0, beta=0.7, target_storage="topk", target_k=4)
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 30, generator=g)
    labels = torch.randint(0, 30, (8,), generator=g)
    index = torch.arange(8)
    got = loss(logits, labels, index)
    p = np.clip(torch.softmax(logits, 1).numpy().astype(np.float64), 1e-4, 1 - 1e-4)
    t = loss.target_rows(index).numpy()
    ce = -np.log(torch.softmax(logits, 1).numpy()[np.arange(8), labels.numpy()])
    want = np.mean(ce + 3.0 * np.log(1 - (p * t).sum(1)))
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert ((t > 0).sum(1) == 4).all()


def test_state_dict_round_trip_for_topk_and_half():
    for kwargs in ({"target_storage": "topk", "target_k": 3}, {"target_dtype": "float16"}):
        a = drive(ELRLoss(20, 8, **kwargs))
        b = ELRLoss(20, 8, **kwargs)
        b.load_state_dict(a.state_dict())
        assert torch.equal(a.target_rows(torch.arange(20)), b.target_rows(torch.arange(20)))


@pytest.mark.parametrize("kwargs, message", [
    ({"target_storage": "sparse"}, "target_storage must be one of dense, topk"),
    ({"target_dtype": "float64"}, "target_dtype must be one of"),
    ({"target_storage": "topk", "target_k": 0}, "target_k must be an integer in"),
    ({"target_storage": "topk", "target_k": 11}, r"num_classes=10"),
])
def test_bad_storage_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ELRLoss(5, 10, **kwargs)


def test_storage_is_a_config_key_of_the_elr_loss():
    config = Config.from_dict({"data": {"dataset": "digits"},
                               "loss": {"name": "elr", "target_storage": "topk", "target_k": 5}}).validate()
    assert config.loss.params["target_k"] == 5
    with pytest.raises(ConfigError, match="target_kk"):
        Config.from_dict({"loss": {"name": "elr", "target_kk": 5}}).validate()


def test_k_of_one_is_accepted_and_true_is_not_a_count():
    loss = ELRLoss(4, 5, target_storage="topk", target_k=1, beta=0.5)
    probs = torch.tensor([[0.1, 0.6, 0.1, 0.1, 0.1]] * 2)
    loss.update_targets(torch.tensor([0, 3]), probs)
    rows = loss.target_rows(torch.tensor([0, 3, 1]))
    # one entry: the largest, carrying the whole dense row's mass (1 - beta) after one update
    np.testing.assert_allclose(rows.numpy(), [[0, 0.5, 0, 0, 0], [0, 0.5, 0, 0, 0], [0, 0, 0, 0, 0]], atol=1e-7)
    with pytest.raises(ValueError, match=r"^target_k must be an integer in \[1, num_classes=5\] for "
                                         r"target_storage='topk', got True$"):
        ELRLoss(4, 5, target_storage="topk", target_k=True)
    with pytest.raises(ValueError, match=r"^target_dtype must be one of float32, float16, bfloat16, got 'float64'$"):
        ELRLoss(4, 5, target_dtype="float64")


def test_topk_rows_are_float32_whatever_the_stored_dtype():
    values = torch.tensor([[0.5, 0.25], [0.125, 0.0625]], dtype=torch.float16)
    indices = torch.tensor([[3, 0], [1, 2]], dtype=torch.int32)
    rows = topk_rows(values, indices, torch.tensor([1, 0, 1]), 4)
    assert rows.dtype == torch.float32
    np.testing.assert_array_equal(rows.numpy(), [[0, 0.125, 0.0625, 0], [0.25, 0, 0, 0.5], [0, 0.125, 0.0625, 0]])


def test_mean_row_and_top_k_renormalised_against_numpy():
    rng = np.random.default_rng(4)
    rows = [torch.from_numpy(rng.dirichlet(np.ones(6), size=5)) for _ in range(3)]
    assert mean_row(rows[:1]) is rows[0]  # one bank: its own row
    np.testing.assert_allclose(mean_row(rows).numpy(), np.mean([r.numpy() for r in rows], axis=0), rtol=1e-15)
    np.testing.assert_allclose(mean_row(rows[:2]).numpy(), (rows[0].numpy() + rows[1].numpy()) / 2, rtol=1e-15)
    mean = mean_row(rows)
    for k in (1, 3, 6):
        kept, where = top_k_renormalised(mean, k)
        order = np.argsort(-mean.numpy(), axis=1, kind="stable")[:, :k]
        largest = np.take_along_axis(mean.numpy(), order, axis=1)
        np.testing.assert_array_equal(where.numpy(), order)
        np.testing.assert_allclose(kept.numpy(), largest / largest.sum(axis=1, keepdims=True), rtol=1e-12)
