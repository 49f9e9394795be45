"""Tests for elr.theory and elr.plots.plot_theory: early learning then memorization, ELR, gradients, I/O."""

import json
import math
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from elr import theory
from elr.theory import TheoryConfig, TheoryRegimeWarning

# A small version of the default setting. p/n = 0.9 stays inside Theorem 1's regime (0.8, 1) for
# noise_rate 0.4. Gradient descent with these steps follows the gradient flow closely, so the
# dynamics depend on step * iteration: a step 5x the default with 300 iterations covers the same
# "time" as the default 1500 steps of 0.1, and each run takes a fraction of a second.
SMALL = TheoryConfig(n=400, p=360, sigma=0.2, noise_rate=0.4, step_size=0.5, iterations=300,
                     record_every=2, n_test=500, seed=0)
# Early phase: step * iteration <= 5 (the first 50 default iterations), where the CE accuracy on
# wrong-labelled examples has peaked, memorization has not started and the gradient still points
# towards the correct separator.
EARLY_ITERATIONS = 10


@pytest.fixture(scope="module")
def small():
    return theory.simulate(SMALL)


def _at(series, key, iteration):
    return series[key][series["iteration"].index(iteration)]


# --------------------------------------------------------------------------- the phenomenon


def test_ce_learns_early_then_memorizes(small):
    ce = small["ce"]
    acc_wrong = np.array(ce["acc_wrong"])
    peak = int(acc_wrong.argmax())
    assert acc_wrong[peak] > acc_wrong[0] + 0.3  # early learning: the wrong labels' true class is found
    assert ce["memorized"][peak] < 0.05
    assert acc_wrong[-1] < acc_wrong[peak] - 0.5  # ... then lost
    assert ce["memorized"][-1] > 0.5
    assert ce["test_acc"][peak] > 0.98 and ce["test_acc"][-1] < ce["test_acc"][peak] - 0.03
    assert ce["acc_clean"][-1] > 0.99  # clean labels are fitted throughout
    assert ce["iteration"][-1] == SMALL.iterations


def test_ce_early_phase_matches_theorem_1(small):
    ce = small["ce"]
    k = ce["iteration"].index(EARLY_ITERATIONS) + 1
    coef_clean, coef_wrong = np.array(ce["coef_clean"][:k]), np.array(ce["coef_wrong"][:k])
    share = np.array(ce["wrong_grad_share"][:k])
    assert np.all(np.diff(coef_clean) < 0)  # clean examples' coefficients shrink
    assert coef_wrong[-1] > coef_wrong[0]  # wrong examples' coefficients grow
    assert np.all(np.diff(share) > 0)  # wrong examples take over the gradient
    assert share[0] < 0.3 and share[-1] > 0.4
    # The descent direction is well correlated with the correct separator early on, not later.
    assert ce["cosine"][0] > 0.9 and min(ce["cosine"][:k]) > 0.2
    assert ce["acc_wrong"][k - 1] > ce["acc_wrong"][0]


def test_elr_prevents_memorization(small):
    ce, elr = small["ce"], small["elr"]
    assert max(elr["memorized"][5:]) < 0.1  # after the first few (initial ties) records
    assert ce["memorized"][-1] > 0.5
    assert elr["test_acc"][-1] > 0.98 > ce["test_acc"][-1]
    # Lemma 2 early on: clean examples keep larger coefficients, wrong ones are damped.
    k = elr["iteration"].index(EARLY_ITERATIONS)
    assert elr["coef_clean"][k] > ce["coef_clean"][k]
    assert elr["wrong_grad_share"][k] < ce["wrong_grad_share"][k]


def test_realised_wrong_fraction_is_about_half_the_rate():
    cfg = replace(SMALL, n=20000, p=10)
    with pytest.warns(TheoryRegimeWarning):  # p/n far outside the regime; irrelevant to the labels
        data = theory.sample(cfg)
    assert abs(data.wrong.mean() - cfg.noise_rate / 2) < 0.02
    assert data.true_labels.sum() == cfg.n // 2  # balanced classes
    # Class 0 sits around +v, class 1 around -v.
    sign = 1 - 2 * data.true_labels
    assert np.allclose((data.x * sign[:, None]).mean(axis=0), data.v, atol=0.01)


# --------------------------------------------------------------------------- gradients


def _torch_loss(theta, x, labels, targets=None, lam=0.0):
    logits = torch.from_numpy(x) @ theta.T
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
    if targets is not None:
        q = torch.softmax(logits, dim=1).clamp(1e-4, 1 - 1e-4)
        loss = loss + lam * torch.log(1 - (q * torch.from_numpy(targets)).sum(dim=1)).mean()
    return loss


def _problem(classes, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    n, p = 9, 5
    theta = scale * rng.standard_normal((classes, p))
    x = rng.standard_normal((n, p))
    labels = rng.integers(0, classes, n)
    targets = rng.dirichlet(np.ones(classes), n) * rng.uniform(0.3, 1.0, (n, 1))
    return theta, x, labels, targets


@pytest.mark.parametrize("classes,scale", [(2, 1.0), (3, 1.0), (2, 6.0), (3, 6.0)])
def test_gradients_match_autograd(classes, scale):
    # scale 6 drives some probabilities past the clamp, where the regulariser passes no gradient.
    theta, x, labels, targets = _problem(classes, seed=classes, scale=scale)
    logits = x @ theta.T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert (probs.max() > 1 - 1e-4) == (scale > 1)  # the clamp is active exactly in the large-scale cases
    t = torch.tensor(theta, requires_grad=True)
    expected_ce = _torch_loss(t, x, labels)
    expected_ce.backward()
    loss, grad = theory.ce_loss_and_grad(theta, x, labels)
    assert loss == pytest.approx(expected_ce.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10, atol=1e-13)

    t = torch.tensor(theta, requires_grad=True)
    expected = _torch_loss(t, x, labels, targets, lam=3.0)
    expected.backward()
    loss, grad = theory.elr_loss_and_grad(theta, x, labels, targets, lam=3.0)
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_elr_gradient_matches_finite_differences():
    theta, x, labels, targets = _problem(2, seed=7)
    _, grad = theory.elr_loss_and_grad(theta, x, labels, targets, lam=3.0)
    h = 1e-6
    numeric = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        plus, minus = theta.copy(), theta.copy()
        plus[idx] += h
        minus[idx] -= h
        numeric[idx] = (theory.elr_loss_and_grad(plus, x, labels, targets, lam=3.0)[0]
                        - theory.elr_loss_and_grad(minus, x, labels, targets, lam=3.0)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_elr_gradient_is_lemma_2_away_from_the_clamp():
    theta, x, labels, targets = _problem(3, seed=3, scale=0.3)
    logits = x @ theta.T
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert p.min() > 1e-4 and p.max() < 1 - 1e-4
    inner = (p * targets).sum(axis=1, keepdims=True)
    g = p / (1 - inner) * np.einsum("nk,nck->nc", p, targets[:, None, :] - targets[:, :, None])
    y = np.eye(3)[labels]
    _, grad = theory.elr_loss_and_grad(theta, x, labels, targets, lam=2.0)
    np.testing.assert_allclose(grad, (p - y + 2.0 * g).T @ x / len(x), rtol=1e-12, atol=1e-14)


def test_simulation_matches_plain_gradient_descent():
    # The simulation works in the span of the training inputs (Gram matrix); replay it in Theta space.
    cfg = TheoryConfig(n=30, p=27, iterations=25, record_every=1, n_test=40, init_scale=0.1, seed=3)
    result = theory.simulate(cfg)
    data = theory.sample(cfg)
    correct = np.concatenate([data.v, -data.v])
    for method in ("ce", "elr"):
        theta, targets = data.theta0.copy(), np.zeros((cfg.n, 2))
        for it in range(cfg.iterations + 1):
            if method == "ce":
                loss, grad = theory.ce_loss_and_grad(theta, data.x, data.labels)
            else:
                p = np.exp(data.x @ theta.T)
                p /= p.sum(axis=1, keepdims=True)
                q = np.clip(p, 1e-4, 1 - 1e-4)
                targets = cfg.beta * targets + (1 - cfg.beta) * q / q.sum(axis=1, keepdims=True)
                loss, grad = theory.elr_loss_and_grad(theta, data.x, data.labels, targets, lam=cfg.lam)
            rec = result[method]
            assert rec["loss"][it] == pytest.approx(loss, rel=1e-9, abs=1e-12)
            assert rec["grad_norm"][it] == pytest.approx(np.linalg.norm(grad), rel=1e-8)
            cosine = -grad.ravel() @ correct / (np.linalg.norm(grad) * np.linalg.norm(correct))
            assert rec["cosine"][it] == pytest.approx(cosine, rel=1e-7, abs=1e-9)
            test_pred = (data.x_test @ theta.T).argmax(axis=1)
            assert rec["test_acc"][it] == pytest.approx((test_pred == data.test_labels).mean())
            pred = (data.x @ theta.T).argmax(axis=1)
            wrong = data.wrong
            assert rec["memorized"][it] == pytest.approx((pred[wrong] == data.labels[wrong]).mean())
            theta = theta - cfg.step_size * grad


# --------------------------------------------------------------------------- determinism, validation


def test_deterministic_per_seed():
    cfg = replace(SMALL, iterations=40, record_every=5)
    a, b = theory.simulate(cfg), theory.simulate(cfg)
    assert a == b
    c = theory.simulate(replace(cfg, seed=1))
    assert c["ce"]["loss"] != a["ce"]["loss"]
    json.dumps(a, allow_nan=False)  # JSON-serialisable as is


def test_same_result_without_threadpoolctl(monkeypatch):
    cfg = replace(SMALL, iterations=40, record_every=5)
    expected = theory.simulate(cfg)
    monkeypatch.setattr(theory, "threadpool_limits", None)
    got = theory.simulate(cfg)
    for method in ("ce", "elr"):
        assert got[method]["memorized"] == expected[method]["memorized"]
        np.testing.assert_allclose(got[method]["loss"], expected[method]["loss"], rtol=1e-9)


def test_no_wrong_labels_gives_none_metrics():
    with pytest.warns(TheoryRegimeWarning):
        result = theory.simulate(replace(SMALL, noise_rate=0.0, iterations=4, record_every=2))
    assert result["ce"]["acc_wrong"] == [None, None, None]
    assert result["data"]["n_wrong"] == 0


@pytest.mark.parametrize("field,value", [
    ("n", 1), ("n", 10.0), ("n", True), ("p", 0), ("sigma", 0.0), ("sigma", float("nan")),
    ("noise_rate", -0.1), ("noise_rate", 1.5), ("step_size", 0), ("iterations", 0), ("record_every", 0),
    ("lam", -1.0), ("beta", 1.0), ("beta", -0.1), ("n_test", 0), ("seed", -1), ("init_scale", -0.1),
    ("sigma", "0.2"),
])
def test_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        replace(TheoryConfig(), **{field: value}).validate()


def test_simulate_rejects_other_configs():
    with pytest.raises(ValueError, match="config"):
        theory.simulate({"n": 10})


def test_regime_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TheoryConfig().validate()  # the default is inside the regime
    with pytest.warns(TheoryRegimeWarning, match="p/n"):
        TheoryConfig(n=100, p=120).validate()
    with pytest.warns(TheoryRegimeWarning, match="p/n"):
        TheoryConfig(n=100, p=50).validate()
    with pytest.warns(TheoryRegimeWarning, match="sigma"):
        TheoryConfig(sigma=0.8).validate()


def test_loss_function_validation():
    theta, x, labels, targets = _problem(2)
    with pytest.raises(ValueError, match="x must"):
        theory.ce_loss_and_grad(theta, x[:, :3], labels)
    with pytest.raises(ValueError, match="labels"):
        theory.ce_loss_and_grad(theta, x, labels + 2)
    with pytest.raises(ValueError, match="targets"):
        theory.elr_loss_and_grad(theta, x, labels, targets * 3, lam=1.0)
    with pytest.raises(ValueError, match="lam"):
        theory.elr_loss_and_grad(theta, x, labels, targets, lam=-1.0)


# --------------------------------------------------------------------------- run() and the figure

TINY = replace(SMALL, iterations=20, record_every=5)


def test_run_writes_json_and_png(tmp_path):
    pytest.importorskip("matplotlib")
    result = theory.run(TINY, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "theory.json").read_text())
    assert written == {k: v for k, v in result.items() if k != "paths"}
    assert written["config"]["n"] == TINY.n
    assert set(written["ce"]) == set(theory.METRICS) == set(written["elr"])
    png = tmp_path / "out" / "theory.png"
    assert result["paths"] == {"json": str(tmp_path / "out" / "theory.json"), "png": str(png)}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_without_matplotlib_writes_json_only(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    result = theory.run(TINY, tmp_path)
    assert (tmp_path / "theory.json").is_file() and not (tmp_path / "theory.png").exists()
    assert result["paths"]["png"] is None
    from elr.plots import plot_theory

    with pytest.raises(ImportError, match=r"pip install 'elr\[plot\]'"):
        plot_theory(result, tmp_path / "x.png")


def test_plot_theory_rejects_other_dicts(tmp_path):
    from elr.plots import plot_theory

    with pytest.raises(ValueError, match="result"):
        plot_theory({"ce": {}}, tmp_path / "x.png")


def test_result_is_finite_json(small):
    text = json.dumps(small, allow_nan=False)
    assert math.isfinite(json.loads(text)["ce"]["loss"][-1])


def test_settings_from_overrides_and_an_unknown_key(tmp_path, capsys):
    assert TheoryConfig.from_overrides({"n": 50, "noise_rate": 0.2}) == replace(TheoryConfig(), n=50, noise_rate=0.2)
    assert TheoryConfig.from_overrides({}) == TheoryConfig()
    unknown = r"^unknown key 'iteratons'; did you mean iterations\? valid keys: n, p, sigma, "
    with pytest.raises(ValueError, match=unknown):
        TheoryConfig.from_overrides({"iteratons": 5, "zzz": 1})
    from elr.cli import main

    assert main(["theory", "--out", str(tmp_path / "t"), "step=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("elr theory: error: unknown key 'step'; did you mean step_size? ") and "\n" not in err
    assert not (tmp_path / "t").exists()
