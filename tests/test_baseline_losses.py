"""Baseline losses (bootstrap, forward, GCE, SCE, ELR-KL) against independent NumPy formulas."""

import math

import numpy as np
import pytest
import torch

from elr.losses import (
    BootstrapLoss,
    CrossEntropyLoss,
    ELRKLLoss,
    ELRLoss,
    ForwardLoss,
    GCELoss,
    SCELoss,
    create_loss,
    estimate_transition_matrix,
    list_losses,
    loss_params,
)

# 3 examples x 3 classes; the second is confidently wrong, the third nearly uniform
LOGITS = np.array([[2.0, 0.5, -1.0], [-0.3, 0.1, 3.0], [0.2, 0.0, 0.1]])
LABELS = np.array([0, 1, 2])
T3 = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.0, 0.3, 0.7]])

# logits (0, 0, ln 2) give p = (1/4, 1/4, 1/2) exactly: used for hand-computed values
HAND_LOGITS = [[0.0, 0.0, math.log(2.0)]]


def np_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def np_onehot(y, c):
    return np.eye(c)[y]


def np_ce(z, y):
    return -np.log(np_softmax(z)[np.arange(len(y)), y])


def np_bootstrap(z, y, beta, mode):
    p = np_softmax(z)
    own = p if mode == "soft" else np_onehot(p.argmax(axis=1), p.shape[1])
    target = beta * np_onehot(y, p.shape[1]) + (1 - beta) * own
    return -(target * np.log(p)).sum(axis=1)


def np_forward(z, y, t):
    return -np.log((np_softmax(z) @ t)[np.arange(len(y)), y])


def np_gce(z, y, q):
    py = np.maximum(np_softmax(z)[np.arange(len(y)), y], 1e-7)
    return (1 - py**q) / q


def np_sce(z, y, alpha, beta, a):
    p = np.clip(np_softmax(z), 1e-7, 1.0)
    log_label = np.where(np_onehot(y, p.shape[1]) > 0, 0.0, a)  # log of the one-hot, log 0 := a
    return alpha * np_ce(z, y) - beta * (p * log_label).sum(axis=1)


def run(loss, logits, labels, index=None):
    return loss(
        torch.tensor(logits, dtype=torch.float32),
        torch.tensor(labels),
        None if index is None else torch.tensor(index),
    )


CASES = [
    (lambda r: BootstrapLoss(3, reduction=r), lambda: np_bootstrap(LOGITS, LABELS, 0.95, "soft")),
    (lambda r: BootstrapLoss(3, beta=0.6, reduction=r), lambda: np_bootstrap(LOGITS, LABELS, 0.6, "soft")),
    (lambda r: BootstrapLoss(3, mode="hard", reduction=r), lambda: np_bootstrap(LOGITS, LABELS, 0.8, "hard")),
    (
        lambda r: BootstrapLoss(3, beta=0.3, mode="hard", reduction=r),
        lambda: np_bootstrap(LOGITS, LABELS, 0.3, "hard"),
    ),
    (lambda r: ForwardLoss(3, transition=T3, reduction=r), lambda: np_forward(LOGITS, LABELS, T3)),
    (lambda r: GCELoss(3, reduction=r), lambda: np_gce(LOGITS, LABELS, 0.7)),
    (lambda r: GCELoss(3, q=0.3, reduction=r), lambda: np_gce(LOGITS, LABELS, 0.3)),
    (lambda r: SCELoss(3, reduction=r), lambda: np_sce(LOGITS, LABELS, 0.1, 1.0, -4.0)),
    (
        lambda r: SCELoss(3, alpha=6.0, beta=0.1, log_clip=-6.0, reduction=r),
        lambda: np_sce(LOGITS, LABELS, 6.0, 0.1, -6.0),
    ),
    (lambda r: CrossEntropyLoss(3, reduction=r), lambda: np_ce(LOGITS, LABELS)),
    (lambda r: CrossEntropyLoss(reduction=r), lambda: np_ce(LOGITS, LABELS)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_matches_numpy_formula(case, reduction):
    make, expected_fn = CASES[case]
    expected = expected_fn()
    got = run(make(reduction), LOGITS, LABELS).numpy()
    if reduction == "mean":
        expected = expected.mean()
    elif reduction == "sum":
        expected = expected.sum()
    assert got.dtype == np.float32
    assert np.shape(got) == np.shape(expected)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_hand_computed_values():
    # p = (1/4, 1/4, 1/2)
    # GCE q=0.5, y=2: (1 - sqrt(1/2)) / 0.5 = 2 - sqrt(2) = 0.585786
    assert run(GCELoss(3, q=0.5), HAND_LOGITS, [2]).item() == pytest.approx(0.585786, abs=1e-6)
    # SCE y=2: 0.1 * ln 2 + 1.0 * 4 * (1/4 + 1/4) = 0.0693147 + 2 = 2.0693147
    assert run(SCELoss(3), HAND_LOGITS, [2]).item() == pytest.approx(2.0693147, abs=1e-6)
    # soft bootstrap y=2: 0.95 * ln 2 + 0.05 * H(p), H(p) = 1.5 ln 2 -> 1.025 ln 2 = 0.710476
    assert run(BootstrapLoss(3), HAND_LOGITS, [2]).item() == pytest.approx(0.710476, abs=1e-6)
    # hard bootstrap y=0: 0.8 * ln 4 + 0.2 * ln 2 (argmax is class 2) = 1.8 ln 2 = 1.247665
    assert run(BootstrapLoss(3, mode="hard"), HAND_LOGITS, [0]).item() == pytest.approx(1.247665, abs=1e-6)
    # forward with T3, y=2: (p @ T)_2 = 0.25*0.1 + 0.25*0.1 + 0.5*0.7 = 0.4 -> -ln 0.4 = 0.916291
    assert run(ForwardLoss(3, transition=T3), HAND_LOGITS, [2]).item() == pytest.approx(0.916291, abs=1e-6)


ALL_LOSSES = [
    lambda: BootstrapLoss(3),
    lambda: BootstrapLoss(3, mode="hard"),
    lambda: ForwardLoss(3, transition=T3),
    lambda: GCELoss(3),
    lambda: GCELoss(3, q=1.0),
    lambda: SCELoss(3),
    lambda: CrossEntropyLoss(3),
    lambda: ELRKLLoss(5, 3),
]


@pytest.mark.parametrize("make", ALL_LOSSES)
@pytest.mark.parametrize("scale", [1.0, 60.0])
def test_gradients_finite(make, scale):
    # scale 60 pushes probabilities far below the clamps (and to exact zeros in float32)
    logits = torch.tensor(LOGITS * scale, dtype=torch.float32, requires_grad=True)
    loss = make()(logits, torch.tensor(LABELS), torch.tensor([0, 3, 4]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("make", ALL_LOSSES)
def test_bfloat16_logits_give_float32_loss(make):
    logits = torch.tensor(LOGITS, dtype=torch.bfloat16)
    loss = make()(logits, torch.tensor(LABELS), torch.tensor([0, 3, 4]))
    assert loss.dtype == torch.float32


def test_soft_bootstrap_gradient_flows_through_prediction_target():
    # not detached: d/dz [beta CE + (1 - beta) H(p)]; with beta=0 only the entropy term remains
    logits = torch.tensor(LOGITS, dtype=torch.float32, requires_grad=True)
    BootstrapLoss(3, beta=0.0, reduction="sum")(logits, torch.tensor(LABELS)).backward()
    p = np_softmax(LOGITS)
    log_p = np.log(p)
    h = -(p * log_p).sum(axis=1, keepdims=True)
    expected = -p * (log_p + h)  # dH/dz_c = -p_c (log p_c + H)
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_gce_limits():
    p = np_softmax(LOGITS)[np.arange(3), LABELS]
    small = run(GCELoss(3, q=1e-4, reduction="none"), LOGITS, LABELS).numpy()
    np.testing.assert_allclose(small, np_ce(LOGITS, LABELS), atol=1e-3)
    mae = run(GCELoss(3, q=1.0, reduction="none"), LOGITS, LABELS).numpy()
    np.testing.assert_allclose(mae, 1 - p, atol=1e-6)


def test_sce_special_cases():
    p = np_softmax(LOGITS)[np.arange(3), LABELS]
    ce = run(SCELoss(3, alpha=1.0, beta=0.0, reduction="none"), LOGITS, LABELS).numpy()
    np.testing.assert_allclose(ce, np_ce(LOGITS, LABELS), rtol=1e-6)
    rce = run(SCELoss(3, alpha=0.0, beta=1.0, reduction="none"), LOGITS, LABELS).numpy()
    np.testing.assert_allclose(rce, 4 * (1 - p), atol=1e-6)


def test_forward_with_identity_equals_cross_entropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(16, 5)) * 3
    labels = rng.integers(0, 5, size=16)
    got = run(ForwardLoss(5, transition=np.eye(5), reduction="none"), logits, labels).numpy()
    np.testing.assert_allclose(got, np_ce(logits, labels), rtol=1e-5, atol=1e-6)


def test_forward_transition_is_a_buffer_and_accepts_lists():
    loss = ForwardLoss(3, transition=T3.tolist())
    assert "transition" in loss.state_dict()
    assert loss.transition.dtype == torch.float32
    np.testing.assert_allclose(loss.transition.numpy(), T3, rtol=1e-6)


def test_estimate_transition_matrix_recovers_known_matrix():
    rng = np.random.default_rng(2)
    c = 3
    t = np.array([[0.7, 0.2, 0.1], [0.15, 0.75, 0.1], [0.1, 0.25, 0.65]])
    rows = []
    for i in range(c):
        rows.append(np.tile(t[i], (20, 1)))  # anchors: clean posterior one-hot -> noisy posterior T[i]
        # overconfident outliers above the anchors, 10 of 200 = 5% > 3%: the filter must skip them
        outlier = np.full(c, 0.01 / (c - 1))
        outlier[i] = 0.99
        rows.append(np.tile(outlier, (10, 1)))
    clean = rng.dirichlet(np.ones(c), size=110)  # ordinary examples: p_i < T[i, i] strictly
    rows.append(clean @ t)
    probs = rng.permutation(np.concatenate(rows))
    assert probs.shape == (200, c)
    before = probs.copy()

    est = estimate_transition_matrix(probs)
    np.testing.assert_allclose(est, t, atol=1e-12)
    np.testing.assert_allclose(est.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(probs, before)  # the input is not modified

    # without the outlier filter the overconfident examples become the anchors
    raw = estimate_transition_matrix(probs, percentile=None)
    np.testing.assert_allclose(np.diag(raw), 0.99)
    np.testing.assert_allclose(raw.sum(axis=1), 1.0)


def test_estimate_transition_matrix_row_normalises():
    probs = np.array([[0.6, 0.2, 0.1], [0.1, 0.5, 0.2], [0.1, 0.1, 0.4]])  # rows not summing to 1
    est = estimate_transition_matrix(probs, percentile=None)
    np.testing.assert_allclose(est, probs / probs.sum(axis=1, keepdims=True))


def test_elr_kl_regularizer_is_kl_with_zero_targets():
    loss = ELRKLLoss(4, 3)
    p = np.array([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]])
    t = np.array([[0.0, 0.4, 0.6], [0.5, 0.0, 0.0]])  # zeros, and a row not summing to 1
    probs = torch.tensor(p, dtype=torch.float32, requires_grad=True)
    reg = loss.regularizer(probs, torch.tensor(t, dtype=torch.float32))
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(t > 0, t * np.log(t / p), 0.0).sum(axis=1)
    np.testing.assert_allclose(reg.detach().numpy(), expected, rtol=1e-5, atol=1e-7)
    reg.sum().backward()
    assert torch.isfinite(probs.grad).all()


def test_elr_kl_matches_numpy_and_shares_target_updates_with_elr():
    rng = np.random.default_rng(3)
    n, c, lam, beta, eps = 12, 4, 2.0, 0.6, 1e-4
    kl = ELRKLLoss(n, c, lam=lam, beta=beta, reduction="none")
    elr = ELRLoss(n, c, lam=lam, beta=beta, reduction="none")
    targets = np.zeros((n, c))
    for _ in range(3):
        idx = rng.choice(n, size=5, replace=False)
        logits = rng.normal(size=(5, c)) * 2
        labels = rng.integers(0, c, size=5)
        got = run(kl, logits, labels, idx).numpy()
        run(elr, logits, labels, idx)
        p = np.clip(np_softmax(logits), eps, 1 - eps)
        targets[idx] = beta * targets[idx] + (1 - beta) * p / p.sum(axis=1, keepdims=True)
        t = targets[idx]
        expected = np_ce(logits, labels) + lam * (t * np.log(t / p)).sum(axis=1)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(kl.targets, elr.targets)
    np.testing.assert_allclose(kl.targets.numpy(), targets, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: GCELoss(3, q=0.0), "q"),
        (lambda: GCELoss(3, q=1.5), "q"),
        (lambda: GCELoss(3, q=float("nan")), "q"),
        (lambda: BootstrapLoss(3, beta=1.2), "beta"),
        (lambda: BootstrapLoss(3, beta=-0.1, mode="hard"), "beta"),
        (lambda: BootstrapLoss(3, mode="medium"), "mode"),
        (lambda: SCELoss(3, alpha=-1.0), "alpha"),
        (lambda: SCELoss(3, beta=-1.0), "beta"),
        (lambda: SCELoss(3, alpha=0.0, beta=0.0), "alpha and beta"),
        (lambda: SCELoss(3, log_clip=0.0), "log_clip"),
        (lambda: GCELoss(1), "num_classes"),
        (lambda: SCELoss(3, reduction="avg"), "reduction"),
        (lambda: CrossEntropyLoss(1), "num_classes"),
        (lambda: ForwardLoss(3, transition=np.eye(4)), "transition"),
        (lambda: ForwardLoss(3, transition=np.full((3, 3), 0.5)), "transition"),
        (lambda: ForwardLoss(3, transition=np.array([[1.5, -0.5, 0], [0, 1, 0], [0, 0, 1]])), "transition"),
        (lambda: ForwardLoss(3, transition=np.where(np.eye(3) > 0, np.nan, 0.0)), "transition"),
        (lambda: estimate_transition_matrix(np.ones((4, 3)) / 3, percentile=101), "percentile"),
        (lambda: estimate_transition_matrix(np.ones(3)), "probs"),
        (lambda: estimate_transition_matrix(-np.ones((4, 3))), "probs"),
    ],
)
def test_bad_parameters_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_batch_is_validated():
    with pytest.raises(ValueError, match="num_classes"):
        run(GCELoss(4), LOGITS, LABELS)
    with pytest.raises(ValueError, match="labels"):
        run(SCELoss(3), LOGITS, np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="logits"):
        run(CrossEntropyLoss(), LOGITS[0], LABELS)


@pytest.mark.parametrize(
    ("name", "cls", "params"),
    [
        ("ce", CrossEntropyLoss, {}),
        ("elr", ELRLoss, {"lam": 1.0}),
        ("elr_kl", ELRKLLoss, {"beta": 0.9}),
        ("bootstrap_soft", BootstrapLoss, {}),
        ("bootstrap_hard", BootstrapLoss, {"beta": 0.7}),
        ("forward", ForwardLoss, {"transition": T3}),
        ("gce", GCELoss, {"q": 0.5}),
        ("sce", SCELoss, {"alpha": 6.0, "beta": 0.1}),
    ],
)
def test_create_loss_builds_each_name(name, cls, params):
    loss = create_loss(name, num_examples=10, num_classes=3, **params)
    assert type(loss) is cls
    assert loss.num_classes == 3
    for key, value in params.items():
        if key != "transition":
            assert getattr(loss, key) == value
    out = loss(torch.tensor(LOGITS, dtype=torch.float32), torch.tensor(LABELS), torch.tensor([1, 2, 3]))
    assert out.shape == () and torch.isfinite(out)


def test_create_loss_bootstrap_modes_and_defaults():
    assert create_loss("bootstrap_soft", num_examples=5, num_classes=3).beta == 0.95
    hard = create_loss("bootstrap_hard", num_examples=5, num_classes=3)
    assert (hard.mode, hard.beta) == ("hard", 0.8)
    assert "mode" not in loss_params("bootstrap_hard")


def test_registry_names_and_errors():
    names = ["ce", "elr", "elr_kl", "bootstrap_soft", "bootstrap_hard", "forward", "gce", "sce"]
    assert list_losses() == names
    with pytest.raises(ValueError, match="known losses: " + ", ".join(names)):
        create_loss("mae", num_examples=5, num_classes=3)
    with pytest.raises(ValueError, match="unknown loss"):
        loss_params("mae")
    with pytest.raises(ValueError, match=r"'gce'.*lam.*accepted: q, reduction, check_values"):
        create_loss("gce", num_examples=5, num_classes=3, lam=3.0)
    with pytest.raises(ValueError, match="transition"):
        create_loss("forward", num_examples=5, num_classes=3)
    with pytest.raises(ValueError, match="num_examples"):
        create_loss("elr", num_classes=3)
    assert set(loss_params("elr")) >= {"lam", "beta", "reduction"}
