"""ELRLoss against independent NumPy computations of Eq. 6, Eq. 9 and Lemma 2."""

import numpy as np
import pytest
import torch

from elr.losses import ELRLoss

EPS = 1e-4


def np_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def np_elr_step(logits, labels, targets_rows, lam, beta):
    """One ELR step in NumPy: update the rows, then CE + lam * log(1 - <p, t>) per example."""
    p = np.clip(np_softmax(logits), EPS, 1 - EPS)
    new_t = beta * targets_rows + (1 - beta) * p / p.sum(axis=1, keepdims=True)
    logp = logits - logits.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    ce = -logp[np.arange(len(labels)), labels]
    reg = np.log(1 - (p * new_t).sum(axis=1))
    return ce + lam * reg, new_t


def test_loss_equals_numpy_eq6_over_several_steps():
    rng = np.random.default_rng(0)
    n, c, lam, beta = 20, 5, 3.0, 0.7
    crit = ELRLoss(n, c, lam=lam, beta=beta, reduction="none")
    targets = np.zeros((n, c))
    for _ in range(4):
        idx = rng.choice(n, size=8, replace=False)
        logits = rng.normal(size=(8, c)) * 2
        labels = rng.integers(0, c, size=8)
        expected, new_rows = np_elr_step(logits, labels, targets[idx], lam, beta)
        targets[idx] = new_rows
        got = crit(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels), torch.tensor(idx))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(crit.targets.numpy(), targets, rtol=1e-5, atol=1e-6)


def test_reductions_agree():
    torch.manual_seed(0)
    logits, labels, idx = torch.randn(6, 4), torch.randint(0, 4, (6,)), torch.arange(6)
    per = ELRLoss(6, 4, reduction="none")(logits, labels, idx)
    assert torch.allclose(ELRLoss(6, 4, reduction="mean")(logits, labels, idx), per.mean())
    assert torch.allclose(ELRLoss(6, 4, reduction="sum")(logits, labels, idx), per.sum())


def test_gradient_equals_lemma2_in_float64():
    rng = np.random.default_rng(1)
    n, c, b, lam, beta = 30, 6, 10, 3.0, 0.7
    crit = ELRLoss(n, c, lam=lam, beta=beta).double()
    # Visit the examples a few times so the targets are non-trivial.
    idx = torch.tensor(rng.choice(n, size=b, replace=False))
    for _ in range(3):
        crit(torch.tensor(rng.normal(size=(b, c))), torch.zeros(b, dtype=torch.long), idx)
    z = rng.normal(size=(b, c)) * 0.5  # moderate logits keep p away from the clamp
    labels = rng.integers(0, c, size=b)
    logits = torch.tensor(z, requires_grad=True)
    crit(logits, torch.tensor(labels), idx).backward()

    p = np_softmax(z)
    assert p.min() > EPS and p.max() < 1 - EPS
    t = crit.targets[idx].numpy()  # already includes this step's update, as the loss used it
    y = np.eye(c)[labels]
    pt = (p * t).sum(axis=1, keepdims=True)
    # Eq. 8: g_c = p_c / (1 - <p,t>) * sum_k (t_k - t_c) p_k
    g = p / (1 - pt) * ((t * p).sum(axis=1, keepdims=True) - t * p.sum(axis=1, keepdims=True))
    expected = (p - y + lam * g) / b
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=0, atol=1e-12)  # float64 throughout


def test_target_is_closed_form_ema_after_k_visits():
    rng = np.random.default_rng(2)
    c, beta, k = 4, 0.9, 5
    crit = ELRLoss(3, c, beta=beta)
    probs = []
    for _ in range(k):
        z = rng.normal(size=(1, c))
        probs.append(np.clip(np_softmax(z), EPS, 1 - EPS)[0])
        crit(torch.tensor(z, dtype=torch.float32), torch.tensor([0]), torch.tensor([1]))
    probs = [q / q.sum() for q in probs]
    # t_k = sum_j (1 - beta) beta^(k - j) q_j for j = 1..k, starting from zero (no bias correction)
    expected = sum((1 - beta) * beta ** (k - j) * probs[j - 1] for j in range(1, k + 1))
    np.testing.assert_allclose(crit.targets[1].numpy(), expected, rtol=1e-5)
    assert torch.count_nonzero(crit.targets[[0, 2]]) == 0  # examples never seen stay untouched


def test_target_probs_replace_the_models_own_prediction():
    crit = ELRLoss(4, 3, beta=0.5)
    other = torch.tensor([[0.2, 0.3, 0.5]])
    crit(torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([0]), torch.tensor([2]), target_probs=other)
    np.testing.assert_allclose(crit.targets[2].numpy(), 0.5 * other[0].numpy(), rtol=1e-6)


def test_targets_round_trip_through_state_dict():
    crit = ELRLoss(5, 3)
    crit(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([3, 4]))
    state = crit.state_dict()
    assert set(state) == {"targets"}
    fresh = ELRLoss(5, 3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.targets, crit.targets)
    assert torch.count_nonzero(fresh.targets[3:]) > 0


def test_zero_lam_is_cross_entropy():
    logits, labels = torch.randn(7, 5), torch.randint(0, 5, (7,))
    got = ELRLoss(7, 5, lam=0.0)(logits, labels, torch.arange(7))
    assert torch.allclose(got, torch.nn.functional.cross_entropy(logits, labels))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lam": -1.0}, "lam"),
        ({"beta": 1.0}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ELRLoss(10, 3, **kwargs)


def test_constructor_sizes_validated():
    with pytest.raises(ValueError, match="num_examples"):
        ELRLoss(0, 3)
    with pytest.raises(ValueError, match="num_classes"):
        ELRLoss(10, 1)


@pytest.mark.parametrize(
    "logits, labels, index, match",
    [
        (torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 10]), "index"),
        (torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([-1, 0]), "index"),
        (torch.randn(2, 3), torch.tensor([0, 3]), torch.tensor([0, 1]), "labels"),
        (torch.randn(2, 3), torch.tensor([0, 1, 2]), torch.tensor([0, 1]), "labels"),
        (torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0]), "index"),
        (torch.randn(2, 4), torch.tensor([0, 1]), torch.tensor([0, 1]), "num_classes"),
        (torch.tensor([[0.0, float("nan"), 1.0], [0.0, 0.0, 0.0]]), torch.tensor([0, 1]), torch.tensor([0, 1]), "logits"),
        (torch.tensor([[0.0, float("inf"), 1.0], [0.0, 0.0, 0.0]]), torch.tensor([0, 1]), torch.tensor([0, 1]), "logits"),
    ],
)
def test_bad_batches_raise(logits, labels, index, match):
    with pytest.raises(ValueError, match=match):
        ELRLoss(10, 3)(logits, labels, index)


def test_bad_target_probs_shape():
    with pytest.raises(ValueError, match="target_probs"):
        ELRLoss(10, 3)(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 1]), target_probs=torch.rand(2, 4))


def test_targets_move_only_in_training_mode_with_autograd():
    """A validation loss (no_grad, or eval()) reads the targets and leaves them; training moves them as Eq. 9."""
    rng = np.random.default_rng(3)
    n, c, lam, beta = 6, 4, 3.0, 0.7
    crit = ELRLoss(n, c, lam=lam, beta=beta, reduction="none")
    idx = np.array([1, 4, 5])
    train_logits, val_logits = rng.normal(size=(3, c)), rng.normal(size=(3, c)) * 3
    labels = np.array([0, 2, 3])
    crit(torch.tensor(train_logits, dtype=torch.float32), torch.tensor(labels), torch.tensor(idx))
    _, rows = np_elr_step(train_logits, labels, np.zeros((3, c)), lam, beta)
    before = crit.targets.clone()
    assert np.allclose(before[idx].numpy(), rows, atol=1e-6)

    # the loss of a validation batch under no_grad: CE + lam * log(1 - <p, t>) with the stored t, unchanged
    p = np.clip(np_softmax(val_logits), EPS, 1 - EPS)
    logp = val_logits - val_logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    expected = -logp[np.arange(3), labels] + lam * np.log(1 - (p * rows).sum(axis=1))
    with torch.no_grad():
        got = crit(torch.tensor(val_logits, dtype=torch.float32), torch.tensor(labels), torch.tensor(idx))
    assert torch.equal(crit.targets, before)
    assert np.allclose(got.numpy(), expected, atol=1e-5)
    crit.eval()  # eval mode with autograd on: the same
    assert not crit.updates_targets
    got = crit(torch.tensor(val_logits, dtype=torch.float32), torch.tensor(labels), torch.tensor(idx))
    assert torch.equal(crit.targets, before) and np.allclose(got.detach().numpy(), expected, atol=1e-5)
    crit.train()  # back to training: the rows move again, by Eq. 9 from where they were
    crit(torch.tensor(val_logits, dtype=torch.float32), torch.tensor(labels), torch.tensor(idx))
    _, rows2 = np_elr_step(val_logits, labels, rows, lam, beta)
    assert np.allclose(crit.targets[idx].numpy(), rows2, atol=1e-6)


def test_index_and_labels_as_lists_or_arrays_equal_tensors():
    logits = torch.randn(3, 4)
    a, b = ELRLoss(5, 4), ELRLoss(5, 4)
    want = a(logits, torch.tensor([0, 1, 3]), torch.tensor([4, 0, 2]))
    got = b(logits, [0, 1, 3], np.array([4, 0, 2], dtype=np.int32))
    assert torch.equal(want, got) and torch.equal(a.targets, b.targets)


@pytest.mark.parametrize("index, match", [
    (np.array([0.0, 1.0]), "index must be a LongTensor of dataset positions .* got ndarray of dtype float64"),
    ("01", "index must be a LongTensor of dataset positions .* got str"),
])
def test_index_that_is_not_integers_names_the_longtensor(index, match):
    with pytest.raises(ValueError, match=match):
        ELRLoss(5, 3)(torch.randn(2, 3), torch.tensor([0, 1]), index)


@pytest.mark.parametrize("kwargs, match", [
    ({"lam": "3"}, "lam must be a finite number >= 0, got '3'"),
    ({"beta": None}, "beta must lie in"),
    ({"eps": [0.1]}, "eps must lie in"),
])
def test_constructor_refuses_values_of_the_wrong_type_with_a_valueerror(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ELRLoss(10, 3, **kwargs)


def test_check_loss_params_uses_the_constructors_checks():
    from elr.losses import check_loss_params

    check_loss_params("elr", {"lam": 3.0, "beta": 0.7, "target_storage": "topk", "target_k": 50})
    check_loss_params("forward", {"transition": "estimate"})  # forward's transition is the config's to check
    for name, params, match in [("elr", {"lam": -3}, "lam must be"), ("gce", {"q": 2.0}, "q must"),
                                ("elr", {"target_k": 0, "target_storage": "topk"}, "target_k"),
                                ("sce", {"alpha": "x"}, "alpha")]:
        with pytest.raises(ValueError, match=match):
            check_loss_params(name, params)
