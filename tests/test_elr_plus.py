"""ELR+: ELRLoss's mixup path against NumPy, EMA and target wiring, the Table 5 switches, equality with ELR, resume."""

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from elr.checkpoint import load_checkpoint
from elr.config import Config, ConfigError, OptimConfig
from elr.elr_plus import ELRPlus, sample_beta, sigmoid_rampup
from elr.losses import ELRLoss
from elr.methods import Runtime
from elr.runs import resume, train

EPS = 1e-4
RESULT_KEYS = ("epoch", "lr", "train_loss", "train_acc", "test_acc", "test_top5", "val_acc",
               "mem_clean_correct", "mem_wrong_memorized")
CPU = Runtime(torch.device("cpu"))


# ---- ELRLoss with mixup, against NumPy ----------------------------------------------------------


def np_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def np_mixup_step(logits, labels, target_probs, rows, lam, beta, mix, perm, c):
    """Update the rows from the un-mixed probabilities, then mix labels and targets; per-example loss."""
    q_in = np.clip(target_probs, EPS, 1 - EPS)
    new_rows = beta * rows + (1 - beta) * q_in / q_in.sum(axis=1, keepdims=True)
    q = mix * new_rows + (1 - mix) * new_rows[perm]
    onehot = np.eye(c)[labels]
    soft = mix * onehot + (1 - mix) * onehot[perm]
    logp = logits - logits.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    p = np.clip(np_softmax(logits), EPS, 1 - EPS)
    return -(soft * logp).sum(axis=1) + lam * np.log(1 - (p * q).sum(axis=1)), new_rows


def test_mixup_loss_equals_numpy_over_several_steps():
    rng = np.random.default_rng(0)
    n, c, b, lam, beta = 24, 5, 8, 3.0, 0.7
    crit = ELRLoss(n, c, lam=lam, beta=beta, reduction="none")
    targets = np.zeros((n, c))
    for _ in range(4):
        idx = rng.choice(n, size=b, replace=False)
        logits = rng.normal(size=(b, c)) * 2
        labels = rng.integers(0, c, size=b)
        probs = np_softmax(rng.normal(size=(b, c)) * 2)
        mix = max(w := rng.beta(1.0, 1.0), 1 - w)
        perm = rng.permutation(b)
        expected, new_rows = np_mixup_step(logits, labels, probs, targets[idx], lam, beta, mix, perm, c)
        targets[idx] = new_rows
        got = crit(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels), torch.tensor(idx),
                   torch.tensor(probs, dtype=torch.float32), mixup=(mix, torch.tensor(perm)))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(crit.targets.numpy(), targets, rtol=1e-5, atol=1e-6)


def test_mixup_with_identity_permutation_is_the_plain_loss():
    torch.manual_seed(0)
    logits, labels, idx, probs = torch.randn(6, 4), torch.randint(0, 4, (6,)), torch.arange(6), torch.rand(6, 4)
    plain = ELRLoss(6, 4, reduction="none")(logits, labels, idx, probs)
    mixed = ELRLoss(6, 4, reduction="none")(logits, labels, idx, probs, mixup=(0.7, torch.arange(6)))
    torch.testing.assert_close(mixed, plain)


def test_mixup_gradient_matches_numpy_and_reaches_the_logits_only():
    """The gradient of the mixup loss equals central differences of the NumPy loss; the other network's
    probabilities (target_probs) get none: they only update the targets."""
    rng = np.random.default_rng(3)
    b, c, lam, beta, mix = 6, 4, 3.0, 0.7, 0.6
    logits0, labels = rng.normal(size=(b, c)) * 2, rng.integers(0, c, size=b)
    probs0, perm = rng.dirichlet(np.ones(c), size=b), np.array([1, 0, 3, 2, 5, 4])
    logits, probs = torch.tensor(logits0, requires_grad=True), torch.tensor(probs0, requires_grad=True)
    loss = ELRLoss(b, c, lam=lam, beta=beta)(logits, torch.tensor(labels), torch.arange(b), probs,
                                             mixup=(mix, torch.tensor(perm)))
    loss.backward()

    def numpy_loss(z):  # fresh (zero) targets at every call, as the loss had
        return np_mixup_step(z, labels, probs0, np.zeros((b, c)), lam, beta, mix, perm, c)[0].mean()

    h, numeric = 1e-6, np.zeros((b, c))
    for i, j in itertools.product(range(b), range(c)):
        step = np.zeros((b, c))
        step[i, j] = h
        numeric[i, j] = (numpy_loss(logits0 + step) - numpy_loss(logits0 - step)) / (2 * h)
    assert float(loss.detach()) == pytest.approx(numpy_loss(logits0), rel=1e-7)
    assert np.abs(numeric).max() > 0.05  # the case has a gradient worth comparing
    np.testing.assert_allclose(logits.grad.numpy(), numeric, atol=1e-7)
    assert probs.grad is None


@pytest.mark.parametrize(
    "mixup, probs, match",
    [
        ((0.7, torch.arange(4)), None, "target_probs"),
        ((1.5, torch.arange(4)), "ok", "mixup weight"),
        ((0.7, torch.arange(3)), "ok", "permutation"),
        ((0.7, torch.tensor([0, 1, 2, 9])), "ok", "permutation"),
        ((0.7,), "ok", "pair"),
    ],
)
def test_bad_mixup_arguments_raise(mixup, probs, match):
    probs = torch.full((4, 3), 1 / 3) if probs == "ok" else probs
    with pytest.raises(ValueError, match=match):
        ELRLoss(4, 3)(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.arange(4), probs, mixup=mixup)


# ---- ramps and the Beta sampler --------------------------------------------------------------


def test_sigmoid_rampup_and_ema_schedules():
    assert sigmoid_rampup(0, 100) == pytest.approx(np.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(np.exp(-5 * 0.25))
    assert sigmoid_rampup(100, 100) == sigmoid_rampup(10**6, 100) == sigmoid_rampup(3, 0) == 1.0
    method = make_method(weight_averaging=True, ema_decay=0.997, ema_ramp_steps=40000)
    assert method.ema_decay_at(20000) == pytest.approx(0.997 * np.exp(-5 * 0.25))
    method = make_method(weight_averaging=True, ema_decay=0.99, ema_schedule="mean_teacher")
    assert [method.ema_decay_at(s) for s in (1, 3, 1000)] == pytest.approx([0.5, 0.75, 0.99])


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_sampler_matches_the_distribution(alpha):
    g = torch.Generator().manual_seed(0)
    draws = np.array([sample_beta(alpha, g) for _ in range(4000)])
    assert ((draws >= 0) & (draws <= 1)).all()
    var = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2
    assert draws.mean() == pytest.approx(0.5, abs=0.03)
    assert draws.var() == pytest.approx(var, rel=0.1)
    again = torch.Generator().manual_seed(0)
    assert [sample_beta(alpha, again) for _ in range(5)] == list(draws[:5])


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_draws_follow_the_whole_distribution(alpha):
    """Kolmogorov-Smirnov against Beta(a, a) (seeded draws), and against Beta(1.5 a, 1.5 a), which the
    test must tell apart: two moments alone let a wrong shape through."""
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    draws = np.array([sample_beta(alpha, g) for _ in range(4000)])
    assert stats.kstest(draws, "beta", args=(alpha, alpha)).pvalue > 1e-3
    assert stats.kstest(draws, "beta", args=(1.5 * alpha, 1.5 * alpha)).pvalue < 1e-6


# ---- the method on tiny models ---------------------------------------------------------------


def tiny_model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def make_method(networks=2, lam=3.0, beta=0.7, **kw):
    models = [tiny_model(s) for s in range(networks)]
    losses = [ELRLoss(16, 3, lam=lam, beta=beta) for _ in range(networks)]
    kw.setdefault("mixup", False)
    return ELRPlus(models, losses, OptimConfig(lr=0.1), CPU, **kw)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g), torch.arange(8) * 2


def renormed(p, beta=0.7):
    p = p.clamp(EPS, 1 - EPS)
    return (1 - beta) * p / p.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("mixup", [False, True])
def test_targets_come_from_the_other_networks_ema_on_the_unmixed_batch(mixup):
    method = make_method(weight_averaging=True, mixup=mixup)
    method.train()
    x, y, index = batch()
    with torch.no_grad():  # EMAs start equal to their networks and run in eval mode
        expected = [torch.softmax(method.emas[1](x), 1), torch.softmax(method.emas[0](x), 1)]
    assert not method.emas[0].training and method.models[0].training
    method.train_step(x, y, index)
    for k in range(2):
        torch.testing.assert_close(method.losses[k].targets[index], renormed(expected[k]))
        assert method.losses[k].targets[torch.arange(1, 16, 2)].abs().sum() == 0  # rows not in the batch


def test_one_network_uses_its_own_ema_and_raw_two_networks_use_each_other():
    method = make_method(networks=1, weight_averaging=True)
    method.train()
    x, y, index = batch()
    with torch.no_grad():
        own = torch.softmax(method.emas[0](x), 1)
    method.train_step(x, y, index)
    torch.testing.assert_close(method.losses[0].targets[index], renormed(own))
    # no averaging, no mixup: the other network's training-mode output on the same batch
    method = make_method(networks=2, weight_averaging=False)
    method.train()
    with torch.no_grad():
        other = [torch.softmax(method.models[1](x), 1), torch.softmax(method.models[0](x), 1)]
    method.train_step(x, y, index)
    for k in range(2):
        torch.testing.assert_close(method.losses[k].targets[index], renormed(other[k]))


def test_ema_averages_weights_and_batchnorm_statistics():
    method = make_method(weight_averaging=True, ema_decay=0.9, ema_ramp_steps=0)
    method.train()
    before = [{k: v.clone() for k, v in ema.state_dict().items()} for ema in method.emas]
    method.train_step(*batch())
    for ema, model, old in zip(method.emas, method.models, before):
        live = model.state_dict()
        for key, value in ema.state_dict().items():
            if value.is_floating_point():
                torch.testing.assert_close(value, 0.9 * old[key] + 0.1 * live[key])
            else:
                assert torch.equal(value, live[key])  # num_batches_tracked is copied
    assert method.step == 1


def test_predict_averages_networks_or_emas():
    x = batch()[0]
    for predict_with in ("networks", "ema"):
        method = make_method(weight_averaging=True, predict_with=predict_with)
        method.train()
        method.train_step(*batch(1))
        method.eval()
        nets = method.emas if predict_with == "ema" else method.models
        with torch.no_grad():
            expected = (nets[0](x) + nets[1](x)) / 2
        torch.testing.assert_close(method.predict(x), expected)


@pytest.mark.parametrize("key, value", [("ema_schedule", "linear"), ("ema_decay", 1.0), ("ema_decay", -0.1),
                                        ("mixup_alpha", 0.0), ("mixup_alpha", float("inf")), ("lam_ramp_steps", -1),
                                        ("ema_ramp_steps", -3), ("predict_with", "mean")])
def test_the_python_method_and_the_config_refuse_a_setting_alike(key, value):
    """One check for both: the message of ELRPlus(...) is the config's without the ``elr_plus.`` prefix."""
    with pytest.raises(ConfigError) as built:
        make_method(**{key: value})
    with pytest.raises(ConfigError) as configured:
        Config.from_dict({"method": "elr_plus", "elr_plus": {key: value}}).validate()
    assert str(configured.value).startswith(f"elr_plus.{key} must ")
    assert str(built.value) == str(configured.value).replace("elr_plus.", "")


def test_predicting_with_the_emas_needs_them():
    with pytest.raises(ConfigError) as built:
        make_method(predict_with="ema", weight_averaging=False)
    assert str(built.value) == ("predict_with=ema needs weight_averaging=true (there is no EMA without it); "
                                "use predict_with=networks")


def test_lam_follows_the_ramp_after_every_step_and_after_a_load():
    method = make_method(weight_averaging=False, lam_ramp_steps=8, lam=2.0)
    method.train()
    for step in range(1, 11):  # step s (counted from 1) uses lam * exp(-5 (1 - min(s, L) / L)^2)
        method.train_step(*batch())
        expected = 2.0 * np.exp(-5 * (1 - min(step, 8) / 8) ** 2)
        assert [loss.lam for loss in method.losses] == pytest.approx([expected, expected], rel=1e-12)
    state = method.state_dict()
    fresh = make_method(weight_averaging=False, lam_ramp_steps=8, lam=2.0)
    assert fresh.losses[0].lam == 2.0  # before any step: the configured value
    fresh.load_state_dict(state)
    assert [loss.lam for loss in fresh.losses] == [2.0, 2.0]  # step 10 >= L: the full value
    partial = make_method(weight_averaging=False, lam_ramp_steps=8, lam=2.0)
    partial.load_state_dict({**state, "step": 3})
    assert partial.losses[1].lam == pytest.approx(2.0 * np.exp(-5 * (1 - 3 / 8) ** 2), rel=1e-12)
    ramp_off = make_method(weight_averaging=False, lam=2.0)
    ramp_off.train()
    ramp_off.train_step(*batch())
    assert ramp_off.losses[0].lam == 2.0
    assert method.target_banks == method.losses  # network 1 first: the gradient-term monitor reads it


# ---- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["method=elr_plus", "loss.name=ce"], "loss.name"),
        (["elr_plus.networks=3"], r"elr_plus\.networks"),
        (["elr_plus.ema_schedule=cosine"], r"elr_plus\.ema_schedule"),
        (["elr_plus.weight_averaging=false", "elr_plus.predict_with=ema"], r"elr_plus\.predict_with"),
        (["elr_plus.mixup_alpha=0"], r"elr_plus\.mixup_alpha"),
        (["elr_plus.colour=red"], r"elr_plus\.colour"),
        (["method=elr+"], "method"),
    ],
)
def test_bad_elr_plus_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        Config.load(None, overrides)


# ---- whole runs ------------------------------------------------------------------------------


def digits_config(method="elr_plus", epochs=2, **elr_plus):
    return Config.from_dict({
        "seed": 3,
        "method": method,
        "data": {"dataset": "digits", "val_fraction": 0.1},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": "mlp", "hidden": [32], "dropout": 0.1},  # dropout: the global RNG must line up
        "loss": {"name": "elr", "lam": 3.0, "beta": 0.7},
        "optim": {"lr": 0.05, "batch_size": 64, "epochs": epochs, "schedule": "cosine"},
        "elr_plus": {"ema_ramp_steps": 20, "lam_ramp_steps": 20, **elr_plus},
        "device": "cpu",
    }).validate()


@pytest.fixture(scope="module")
def image_npz(tmp_path_factory):
    """A tiny CIFAR-shaped data set: random images whose class shifts the mean colour."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"

    def make(n):
        y = rng.integers(0, 10, size=n)
        x = rng.integers(0, 128, size=(n, 32, 32, 3)) + (y * 12)[:, None, None, None]
        return x.astype(np.uint8), y.astype(np.int64)

    x_train, y_train = make(200)
    x_test, y_test = make(40)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def image_config(path, method="elr_plus", epochs=4, **elr_plus):
    return Config.from_dict({
        "seed": 1,
        "method": method,
        "data": {"dataset": "npz", "root": str(path), "val_fraction": 0.1, "augment": True},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": "resnet8", "widths": [8, 8, 16]},  # BatchNorm: EMA statistics are exercised
        "loss": {"name": "elr", "lam": 3.0, "beta": 0.7},
        "optim": {"lr": 0.05, "batch_size": 32, "epochs": epochs, "schedule": "onecycle"},
        "elr_plus": {"ema_ramp_steps": 10, "lam_ramp_steps": 10, **elr_plus},
        "device": "cpu",
    }).validate()


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_results(got_dir, want_dir):
    got, want = read_metrics(got_dir), read_metrics(want_dir)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert {k: a.get(k) for k in RESULT_KEYS} == {k: b.get(k) for k in RESULT_KEYS}


def assert_same_state(a, b, where="method"):
    """Two state dicts (nested dicts, lists, tensors, numbers) equal bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("kind", ["digits", "images"])
def test_one_network_without_averaging_or_mixup_is_exactly_elr(kind, tmp_path, image_npz):
    switches = {"networks": 1, "weight_averaging": False, "mixup": False, "lam_ramp_steps": 0}

    def make(**kw):
        return digits_config(**kw) if kind == "digits" else image_config(image_npz, epochs=2, **kw)

    train(make(method="standard"), tmp_path / "elr")
    train(make(**switches), tmp_path / "plus")
    assert_same_results(tmp_path / "plus", tmp_path / "elr")
    plain = load_checkpoint(tmp_path / "elr" / "checkpoint.pt")
    plus = load_checkpoint(tmp_path / "plus" / "checkpoint.pt")
    assert torch.equal(plus["method"]["losses"][0]["targets"], plain["method"]["loss"]["targets"])
    assert_same_state(plus["method"]["models"][0], plain["method"]["model"])


class Interrupt(Exception):
    pass


class StopInEpoch2:
    """Raises in the middle of epoch 2: the run directory keeps the checkpoint of epoch 1."""

    def epoch_start(self, epoch, epochs, batches):
        self.epoch, self.batch = epoch, 0

    def batch_end(self):
        self.batch += 1
        if self.epoch == 2 and self.batch == 3:
            raise Interrupt

    def epoch_end(self, record):
        pass


TABLE5 = list(itertools.product([1, 2], [True, False], [True, False]))  # networks x weight averaging x mixup


@pytest.mark.parametrize("networks, weight_averaging, mixup", TABLE5)
def test_every_table5_switch_trains_and_resumes_exactly(networks, weight_averaging, mixup, tmp_path):
    config = digits_config(networks=networks, weight_averaging=weight_averaging, mixup=mixup)
    with pytest.raises(Interrupt):
        train(config, tmp_path / "stopped", progress=StopInEpoch2())
    assert [r["epoch"] for r in read_metrics(tmp_path / "stopped")] == [1]
    resume(tmp_path / "stopped")
    train(config, tmp_path / "straight")
    assert_same_results(tmp_path / "stopped", tmp_path / "straight")
    a = load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")["method"]
    b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["method"]
    assert_same_state(a, b)
    assert len(a["models"]) == networks and len(a["emas"]) == (networks if weight_averaging else 0)
    assert a["step"] == 2 * 21  # two epochs of 21 batches (1,293 training digits, batch 64)


KILLER = textwrap.dedent("""
    import os, signal, sys
    from elr.config import Config
    from elr.runs import train

    class KillInEpoch3:
        def epoch_start(self, epoch, epochs, batches):
            self.epoch, self.batch = epoch, 0
        def batch_end(self):
            self.batch += 1
            if self.epoch == 3 and self.batch == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        def epoch_end(self, record):
            pass

    train(Config.load(sys.argv[1]), sys.argv[2], progress=KillInEpoch3())
""")


def test_elr_plus_sigkill_then_resume_equals_uninterrupted_run(tmp_path, image_npz):
    config = image_config(image_npz)  # two networks, EMA (sigmoid ramp), mixup, lam ramp
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config.to_yaml())
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(config_path), str(killed)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr  # died by SIGKILL in epoch 3
    assert [r["epoch"] for r in read_metrics(killed)] == [1, 2]
    resume(killed)
    straight = tmp_path / "straight"
    train(config, straight)
    assert_same_results(killed, straight)
    a, b = load_checkpoint(killed / "checkpoint.pt")["method"], load_checkpoint(straight / "checkpoint.pt")["method"]
    assert_same_state(a, b)  # both networks, both EMAs, both target banks, optimizers, mixup generator, step
    assert len(a["models"]) == len(a["emas"]) == len(a["losses"]) == 2


def test_table2_presets_carry_the_authors_settings():
    root = Path(__file__).resolve().parents[1] / "configs" / "elr_plus"
    paths = sorted(root.glob("*.yaml"))
    assert len(paths) == 10  # CIFAR-10 and CIFAR-100: sym 20/50/80/90, asym 40
    for path in paths:
        c = Config.load(path, ["data.root=/data/somewhere"])
        assert (c.method, c.model.name, c.data.val_fraction) == ("elr_plus", "preact_resnet18", 0.1)
        assert (c.optim.lr, c.optim.weight_decay, c.optim.batch_size, c.optim.gamma) == (0.02, 5e-4, 128, 0.1)
        e = c.elr_plus
        assert (e.networks, e.weight_averaging, e.mixup, e.mixup_alpha) == (2, True, True, 1.0)
        assert (e.ema_decay, e.ema_schedule, e.ema_ramp_steps) == (0.997, "sigmoid", 40000)
        if c.data.dataset == "cifar10":
            want = {"lam": 3.0, "beta": 0.7} if c.noise.type == "symmetric" else {"lam": 1.0, "beta": 0.9}
            assert (c.optim.epochs, c.optim.milestones, e.lam_ramp_steps) == (200, [150], 0)
        else:
            want = {"lam": 7.0, "beta": 0.9}
            assert (c.optim.epochs, c.optim.milestones, e.lam_ramp_steps) == (250, [200], 40000)
        assert c.loss.params == want, path.name
        assert path.stem == f"{c.data.dataset}_{c.noise.type[:3] if c.noise.type == 'symmetric' else 'asym'}" \
                            f"{round(c.noise.rate * 100)}"
