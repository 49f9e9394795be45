"""The engine drives any method through its written interface (``elr.engine.Method``, ``elr.targets.TargetBank``).

A method of this file's own, neither ``Standard`` nor ``ELRPlus``, trains, is monitored (memorization,
Figure 2's gradient terms, detection from its target bank), checkpoints and resumes; every figure is
checked against a NumPy computation of its own.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from elr import rundir
from elr.config import MonitorConfig, OptimConfig
from elr.data import InMemoryDataset, TrainData
from elr.distributed import TargetSync, attach_target_sync
from elr.elr_plus import ELRPlus
from elr.engine import Engine, Method
from elr.losses import CrossEntropyLoss, ELRKLLoss, ELRLoss, GCELoss, create_loss
from elr.methods import Runtime, Standard
from elr.targets import TargetBank

N, C, D = 90, 3, 5
CPU = Runtime(torch.device("cpu"))


class AverageBank(nn.Module):
    """A target bank of its own: each row is the plain running mean of the example's predictions."""

    target_storage, target_k, eps = "dense", 1, 1e-4

    def __init__(self, reports: bool, lam: float = 2.0) -> None:
        super().__init__()
        self.num_classes, self.lam, self.reports_gradient_terms, self.target_sync = C, lam, reports, None
        self.register_buffer("rows", torch.zeros(N, C))
        self.register_buffer("seen", torch.zeros(N))

    def target_rows(self, index: torch.Tensor) -> torch.Tensor:
        return self.rows[index].float()

    def add(self, index: torch.Tensor, probs: torch.Tensor) -> None:
        self.seen[index] += 1
        self.rows[index] += (probs - self.rows[index]) / self.seen[index, None]


class LinearMethod:
    """Softmax regression with plain SGD and one bank: no class of the library's methods. Its public names
    are the protocol's alone, so the engine can read nothing else."""

    def __init__(self, seed: int, reports: bool = True) -> None:
        torch.manual_seed(seed)
        self._model = nn.Linear(D, C)
        self._bank = AverageBank(reports)
        self._optimizer = torch.optim.SGD(self._model.parameters(), lr=0.1)

    def train(self) -> None:
        self._model.train()

    def eval(self) -> None:
        self._model.eval()

    def set_lr(self, lr: float) -> None:
        for group in self._optimizer.param_groups:
            group["lr"] = lr

    def train_step(self, x, y, index):
        logits = self._model(x)
        loss = F.cross_entropy(logits, y)
        self._optimizer.zero_grad()
        loss.backward()
        self._optimizer.step()
        self._bank.add(index, F.softmax(logits.detach(), dim=1))
        return loss.detach(), (logits.argmax(dim=1) == y).sum()

    @torch.no_grad()
    def predict(self, x):
        return self._model(x).float()

    @property
    def target_banks(self):
        return [self._bank]

    def state_dict(self):
        return {"model": self._model.state_dict(), "optimizer": self._optimizer.state_dict(),
                "bank": self._bank.state_dict()}

    def load_state_dict(self, state):
        self._model.load_state_dict(state["model"])
        self._optimizer.load_state_dict(state["optimizer"])
        self._bank.load_state_dict(state["bank"])


def data() -> tuple[TrainData, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    true = rng.integers(0, C, N)
    x = (rng.normal(size=(N, D)) + 3.0 * np.eye(C, D)[true]).astype(np.float32)
    noisy = true.copy()
    flip = rng.choice(N, 25, replace=False)
    noisy[flip] = (true[flip] + 1 + rng.integers(0, C - 1, 25)) % C
    train = InMemoryDataset(x, noisy, true_labels=true, num_classes=C)
    test = InMemoryDataset(x[:30], true[:30], num_classes=C)
    return TrainData(train, test, num_classes=C), x, noisy, true


def engine_for(method, train_data, run_dir=None, epochs=3) -> Engine:
    if run_dir is not None:
        run_dir.mkdir(exist_ok=True)
    return Engine(method, train_data, optim=OptimConfig(lr=0.1, batch_size=16, epochs=epochs, schedule="cosine"),
                  monitor=MonitorConfig(memorization=True, gradient_terms=True, detection=True),
                  eval_batch_size=32, seed=7, run_dir=run_dir)


def lemma2_terms(logits: np.ndarray, noisy, true, targets: np.ndarray, lam: float, eps: float) -> dict[str, float]:
    """Figure 2's true-class coefficients by Lemma 2 as the paper writes it, in float64 NumPy."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.clip(np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), eps, 1 - eps)
    rows = np.arange(len(true))
    g = np.array([p[i, true[i]] / (1 - p[i] @ targets[i]) * sum((targets[i, k] - targets[i, true[i]]) * p[i, k]
                                                             for k in range(C)) for i in rows])
    ce = p[rows, true] - (noisy == true)
    out = {}
    for group, mask in (("clean", noisy == true), ("wrong", noisy != true)):
        for term, values in (("ce", ce), ("reg", lam * g), ("total", ce + lam * g)):
            out[f"grad_{group}_{term}_mean"] = values[mask].mean()
    return out


def auroc(scores: np.ndarray, wrong: np.ndarray) -> float:
    """P(a wrong label scores below a correct one), ties one half: by counting every pair."""
    low, high = scores[wrong][:, None], scores[~wrong][None, :]
    return float(((low < high) + 0.5 * (low == high)).mean())


def test_the_engine_trains_monitors_and_resumes_a_method_that_is_none_of_ours(tmp_path):
    train_data, x, noisy, true = data()
    method = LinearMethod(seed=1)
    assert isinstance(method, Method) and isinstance(method._bank, TargetBank)
    assert not isinstance(method, (Standard, ELRPlus)) and not isinstance(method._bank, ELRLoss)
    engine = engine_for(method, train_data, tmp_path / "whole")
    history = engine.fit()
    assert [r["epoch"] for r in history] == [1, 2, 3]

    last = history[-1]
    logits = method._model(torch.from_numpy(x)).detach().double().numpy()
    pred = logits.argmax(axis=1)
    wrong = noisy != true
    assert last["mem_wrong_memorized"] == pytest.approx(np.mean(pred[wrong] == noisy[wrong]))
    assert last["mem_clean_correct"] == pytest.approx(np.mean(pred[~wrong] == true[~wrong]))
    assert last["test_acc"] == pytest.approx(np.mean(pred[:30] == true[:30]))
    # Figure 2 from the method's own bank (it reports gradient terms), by the paper's formula
    targets = method._bank.rows.double().numpy()
    expected = lemma2_terms(logits, noisy, true, targets, method._bank.lam, method._bank.eps)
    for key, value in expected.items():
        assert last[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert abs(expected["grad_wrong_reg_mean"]) > 1e-3  # the regularisation term is measured, not zero
    # detection from the bank alone: a row's probability of its given label ranks the wrong labels
    own = (targets / targets.sum(axis=1, keepdims=True))[np.arange(N), noisy]
    assert last["det_auroc"] == pytest.approx(auroc(own, wrong))
    assert last["det_auroc"] > 0.8

    # what the method checkpoints is all a resume needs: 2 epochs, a fresh method from the checkpoint, 1 more
    first = engine_for(LinearMethod(seed=1), train_data, tmp_path / "cut", epochs=3)
    first.run_epoch()
    first.run_epoch()
    again = engine_for(LinearMethod(seed=99), train_data, tmp_path / "cut", epochs=3)
    again.load_state_dict(rundir.load_checkpoint(tmp_path / "cut"))
    resumed = again.fit()

    def results(h):
        return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in h]

    assert results(resumed) == results(history)
    assert torch.equal(again.method._model.weight, method._model.weight)
    assert torch.equal(again.method._bank.rows, method._bank.rows)


def test_a_bank_that_cannot_report_gradient_terms_gets_none():
    train_data, *_ = data()
    history = engine_for(LinearMethod(seed=1, reports=False), train_data, epochs=1).fit()
    assert "mem_wrong_memorized" in history[0] and "det_auroc" in history[0]
    assert not [k for k in history[0] if k.startswith("grad_")]


def test_the_library_losses_declare_what_they_are():
    elr, kl = ELRLoss(N, C), ELRKLLoss(N, C)
    assert isinstance(elr, TargetBank) and isinstance(kl, TargetBank)
    assert elr.reports_gradient_terms and not kl.reports_gradient_terms  # Lemma 2 is log(1 - <p, t>)'s gradient
    for loss in (CrossEntropyLoss(C), GCELoss(C), create_loss("forward", num_classes=C, transition=np.eye(C))):
        assert not isinstance(loss, TargetBank), type(loss).__name__


@pytest.mark.parametrize("name, banks", [("ce", 0), ("elr", 1), ("elr_kl", 1)])
def test_standard_lists_its_loss_as_a_bank_only_when_it_keeps_targets(name, banks):
    loss = create_loss(name, num_examples=N, num_classes=C)
    method = Standard(nn.Linear(D, C), loss, OptimConfig(), CPU)
    assert method.target_banks == ([loss] if banks else [])
    attach_target_sync(method)  # the distributed sync attaches through the same list
    assert all(isinstance(b.target_sync, TargetSync) for b in method.target_banks)


def test_the_elr_kl_variant_records_no_gradient_terms_and_elr_does():
    train_data, *_ = data()
    keys = {}
    for name in ("elr", "elr_kl"):
        loss = create_loss(name, num_examples=N, num_classes=C)
        engine = engine_for(Standard(nn.Linear(D, C), loss, OptimConfig(lr=0.1), CPU), train_data, epochs=1)
        keys[name] = {k for k in engine.fit()[0] if k.startswith("grad_")}
    assert len(keys["elr"]) == 12 and keys["elr_kl"] == set()


def test_both_methods_follow_the_written_interface_and_the_fake_one_does_too():
    elr_plus = ELRPlus([nn.Linear(D, C), nn.Linear(D, C)], [ELRLoss(N, C), ELRLoss(N, C)], OptimConfig(), CPU)
    attach_target_sync(elr_plus)
    assert elr_plus.target_banks == elr_plus.losses and all(isinstance(b.target_sync, TargetSync)
                                                            for b in elr_plus.losses)
    members = [name for name in Method.__dict__ if not name.startswith("_")]
    assert {"train", "eval", "set_lr", "train_step", "predict", "target_banks", "state_dict",
            "load_state_dict"} <= set(members)
    for kind in (Standard, ELRPlus, LinearMethod):
        for member in members:
            spec = Method.__dict__[member]
            if isinstance(spec, property):
                assert isinstance(getattr(kind, member), property), (kind.__name__, member)
                continue
            ours, theirs = inspect.signature(spec), inspect.signature(getattr(kind, member))
            assert list(ours.parameters) == list(theirs.parameters), (kind.__name__, member)


def test_a_variant_with_its_own_regulariser_does_not_inherit_the_gradient_terms():
    class Squared(ELRLoss):  # another regulariser, no word on the terms: Lemma 2 is not its gradient
        def regularizer(self, probs, targets):
            return ((probs - targets) ** 2).sum(dim=1)

    class Declared(Squared):
        reports_gradient_terms = True  # a subclass may say so itself

    class SameRegulariser(ELRLoss):  # only the constructor differs: the terms still hold
        pass

    assert not Squared(N, C).reports_gradient_terms and Declared(N, C).reports_gradient_terms
    assert SameRegulariser(N, C).reports_gradient_terms


def test_a_loss_with_target_rows_but_not_the_whole_bank_is_refused_by_name():
    class HalfBank(nn.Module):
        num_classes, lam = C, 1.0

        def target_rows(self, index):
            return torch.zeros(len(index), C)

        def forward(self, logits, labels, index):
            return F.cross_entropy(logits, labels)

    with pytest.raises(TypeError, match="HalfBank keeps per-example targets .* lacks target_storage, target_k, eps, "
                                        "reports_gradient_terms, target_sync$"):
        Standard(nn.Linear(D, C), HalfBank(), OptimConfig(), CPU)


def test_one_stage_runs_refuse_a_two_stage_config_before_writing_and_name_the_entry_point(tmp_path):
    from elr import runs
    from elr.config import Config

    config = Config.from_dict({"data": {"dataset": "digits"}, "model": {"name": "mlp"}, "device": "cpu",
                               "loss": {"name": "forward", "transition": "estimate"}}).validate()
    for call in (runs.train, runs.train_or_resume):
        with pytest.raises(ValueError, match="two-stage run: train it with elr.train or elr.train_or_resume"):
            call(config, tmp_path / "fw")
        assert not (tmp_path / "fw").exists()


def test_the_plots_draw_what_they_are_given_and_say_so_for_a_run_directory(tmp_path):
    from elr.plots import plot_gradient_runs, plot_runs

    for draw in (plot_runs, plot_gradient_runs):
        with pytest.raises(TypeError, match=r"\(title, history\) pairs, got 'runs/a'; elr.runs.run_curves"):
            draw(["runs/a"], tmp_path / "x.png")
        with pytest.raises(ValueError, match="at least one"):
            draw([], tmp_path / "x.png")


class _TableMethod:
    """Predicts a fixed logit row per example: the input is the example's number."""

    def __init__(self, table):
        self.table = torch.as_tensor(table, dtype=torch.float32)

    def predict(self, x):
        return self.table[x[:, 0].long()]


@pytest.mark.parametrize("classes, batch", [(7, 3), (7, 64), (4, 3)])
def test_evaluate_counts_top1_and_top5_as_numpy_does(classes, batch):
    from elr.engine import evaluate

    rng = np.random.default_rng(classes + batch)
    logits = rng.normal(size=(23, classes))
    order = np.argsort(-logits, axis=1)
    # labels at every rank of each row: some top-1, some 2nd to 5th, some beyond the 5th
    labels = order[np.arange(23), np.arange(23) % classes]
    data = InMemoryDataset(np.arange(23, dtype=np.float32)[:, None], labels)
    got = evaluate(_TableMethod(logits), data, batch)
    want = {"acc": np.mean(order[:, 0] == labels)}
    if classes >= 5:
        want["top5"] = np.mean((order[:, :5] == labels[:, None]).any(axis=1))
        assert 0 < want["acc"] < want["top5"] < 1  # the case tells top-1, top-5 and misses apart
    assert got == pytest.approx(want, abs=1e-12)
