"""Forward with an estimated T in one run: stage 1 (CE), anchor-point estimate, stage 2 (Forward)."""

import json

import numpy as np
import pytest
import torch

from elr.checkpoint import load_checkpoint
from elr.cli import main
from elr.config import Config, ConfigError
from elr.engine import predict_all
from elr.prepare import prepare_data
from elr.build import build_method, resolve_runtime
from elr.runs import evaluate_run, resume
from elr.two_stage import train


def forward_config(**loss):
    raw = {
        "seed": 5,
        "data": {"dataset": "digits", "val_fraction": 0.1},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": "mlp", "hidden": [32]},
        "loss": {"name": "forward", "transition": "estimate", "estimate_epochs": 4, **loss},
        "optim": {"lr": 0.05, "batch_size": 64, "epochs": 2, "schedule": "cosine"},
        "device": "cpu",
    }
    return Config.from_dict(raw).validate()


def anchor_estimate(probs, percentile):
    """Patrini's anchor rule written out independently: per class, drop entries at or above the
    percentile (the 'higher' order statistic), take the most confident remaining example's row."""
    n, c = probs.shape
    rows = []
    for i in range(c):
        col = probs[:, i]
        k = int(np.ceil(percentile / 100 * (n - 1)))  # index of the 'higher' percentile in sorted order
        thr = np.sort(col)[k]
        anchor = np.argmax(np.where(col >= thr, 0.0, col))
        rows.append(probs[anchor] / probs[anchor].sum())
    return np.stack(rows)


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fwd") / "run"
    summary = train(forward_config(), out)
    return out, summary


def test_stage1_is_a_ce_run_of_the_same_setting(two_stage_run):
    out, _ = two_stage_run
    stage1 = json.loads((out / "stage1_ce" / "summary.json").read_text())
    assert stage1["loss"] == "ce" and stage1["epochs"] == 4  # estimate_epochs, not the run's 2
    assert np.array_equal(np.load(out / "stage1_ce" / "noisy_labels.npy"), np.load(out / "noisy_labels.npy"))
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_estimate_follows_the_anchor_rule_on_the_stage1_model(two_stage_run):
    out, summary = two_stage_run
    ce = Config.load(out / "stage1_ce" / "config.yaml")
    runtime = resolve_runtime(ce)
    prepared = prepare_data(ce, runtime.device)
    method = build_method(ce, prepared, runtime)
    method.load_state_dict(load_checkpoint(out / "stage1_ce" / "checkpoint.pt")["method"])
    method.eval()
    probs = torch.softmax(predict_all(method, prepared.data.train, 256), dim=1).double().numpy()
    # the training split only: every noisy label but the validation split's (held out of the estimate)
    held_out = json.loads((out / "stage1_ce" / "noise.json").read_text())["val_indices"]
    assert len(held_out) > 100 and len(probs) == len(np.load(out / "noisy_labels.npy")) - len(held_out)
    want = anchor_estimate(probs, 97.0)
    saved = np.load(out / "transition.npy")
    np.testing.assert_allclose(saved, want, atol=1e-6)
    used = load_checkpoint(out / "checkpoint.pt")["method"]["loss"]["transition"].numpy()
    np.testing.assert_allclose(used, saved, atol=1e-6)  # stage 2 trained with exactly this T
    true = 0.6 * np.eye(10) + 0.04  # symmetric 40%, the new label drawn from all 10 classes
    report = summary["transition_estimate"]
    assert report["mean_diagonal"] == pytest.approx(np.diag(saved).mean())
    assert report["true_mean_diagonal"] == pytest.approx(0.64)
    assert report["mean_abs_error"] == pytest.approx(np.abs(saved - true).mean())


def test_killed_in_stage1_continues_from_the_stage1_checkpoint(tmp_path, two_stage_run):
    class StopAfterEpoch2:
        def epoch_start(self, epoch, epochs, batches):
            self.epoch = epoch

        def batch_end(self):
            pass

        def epoch_end(self, record):
            if self.epoch == 2:
                raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(forward_config(), out, progress=StopAfterEpoch2())
    assert not (out / "config.yaml").exists()  # the run itself has not started: a sweep sees it as new
    stage1_metrics = (out / "stage1_ce" / "metrics.jsonl").read_text().splitlines()
    assert len(stage1_metrics) == 2
    train(forward_config(), out)
    straight, _ = two_stage_run
    np.testing.assert_array_equal(np.load(out / "transition.npy"), np.load(straight / "transition.npy"))
    got = [json.loads(line)["test_acc"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(line)["test_acc"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(got) == 2 and got == want


def test_resume_and_eval_rebuild_forward_with_the_saved_matrix(two_stage_run):
    out, summary = two_stage_run
    before = {name: (out / name).read_bytes() for name in ("metrics.jsonl", "checkpoint.pt", "transition.npy")}
    again = resume(out)  # finished: nothing to train, same result
    assert again["last"] == summary["last"]
    assert {name: (out / name).read_bytes() for name in before} == before  # nothing trained or estimated again
    assert evaluate_run(out)["test_acc"] == pytest.approx(summary["last"]["test_acc"])
    (out / "transition.npy").rename(out / "moved.npy")
    try:
        with pytest.raises(FileNotFoundError, match="transition.npy"):
            evaluate_run(out)
    finally:
        (out / "moved.npy").rename(out / "transition.npy")


def test_transition_from_a_npy_file(tmp_path):
    t = np.full((10, 10), 0.05) + 0.5 * np.eye(10)
    path = tmp_path / "t.npy"
    np.save(path, t)
    raw = forward_config().to_dict()
    raw["loss"] = {"name": "forward", "transition": str(path)}
    raw["optim"]["epochs"] = 1
    out = tmp_path / "run"
    train(Config.from_dict(raw).validate(), out)
    used = load_checkpoint(out / "checkpoint.pt")["method"]["loss"]["transition"].numpy()
    np.testing.assert_allclose(used, t, atol=1e-7)
    assert not (out / "stage1_ce").exists()


def test_cli_does_both_stages_in_one_command(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(forward_config(estimate_epochs=1).to_yaml())
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "optim.epochs=1", "loss.percentile=90"]) == 0
    assert (out / "stage1_ce" / "checkpoint.pt").is_file() and (out / "transition.npy").is_file()
    assert "transition_estimate" in json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("loss, message", [
    ({"name": "forward"}, "needs loss.transition"),
    ({"name": "forward", "transition": True, "percentile": 97}, "only used with loss.transition=estimate"),
    ({"name": "forward", "transition": "estimate", "percentile": 101}, "percentile must be a number in"),
    ({"name": "forward", "transition": "estimate", "estimate_epochs": 0}, "estimate_epochs must be an integer"),
    ({"name": "forward", "transition": "guess"}, "a .npy path, true or estimate"),
    ({"name": "forward", "transition": False}, "use loss.name=ce"),
    ({"name": "ce", "percentile": 97}, "unknown key loss.percentile"),
])
def test_bad_forward_settings_are_refused_with_the_key_named(loss, message):
    raw = forward_config().to_dict()
    raw["loss"] = loss
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(raw).validate()


def test_sweep_cost_counts_the_stage1_epochs(tmp_path, two_stage_run):
    from elr.two_stage import stage1_epochs_left

    assert stage1_epochs_left(forward_config(), tmp_path / "new") == 4
    assert stage1_epochs_left(forward_config(estimate_epochs=7), tmp_path / "new") == 7
    done, _ = two_stage_run
    assert stage1_epochs_left(forward_config(), done) == 0
    raw = forward_config().to_dict()
    raw["loss"] = {"name": "forward", "transition": True}
    assert stage1_epochs_left(Config.from_dict(raw).validate(), tmp_path / "new") == 0
