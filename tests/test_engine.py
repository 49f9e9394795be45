"""End-to-end runs: the run directory, exact resume after SIGKILL, config refusal, the CLI and the demo."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from elr.checkpoint import load_checkpoint
from elr.cli import main
from elr.config import Config
from elr.runs import evaluate_run, resume, train
from test_elr_plus import assert_same_state

RESULT_KEYS = ("epoch", "lr", "train_loss", "train_acc", "test_acc", "test_top5", "val_acc",
               "mem_clean_correct", "mem_wrong_memorized")


def digits_config(**over):
    raw = {
        "seed": 3,
        "data": {"dataset": "digits", "val_fraction": 0.1},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": "mlp", "hidden": [32], "dropout": 0.1},
        "loss": {"name": "elr", "lam": 3.0, "beta": 0.7},
        "optim": {"lr": 0.05, "batch_size": 64, "epochs": 3, "schedule": "cosine"},
        "device": "cpu",
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            raw[section][name] = value
        else:
            raw[section] = value
    return Config.from_dict(raw).validate()


@pytest.fixture(scope="module")
def image_npz(tmp_path_factory):
    """A tiny CIFAR-shaped data set: random images whose class shifts the mean colour."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"

    def make(n):
        y = rng.integers(0, 10, size=n)
        x = rng.integers(0, 128, size=(n, 32, 32, 3)) + (y * 12)[:, None, None, None]
        return x.astype(np.uint8), y.astype(np.int64)

    x_train, y_train = make(240)
    x_test, y_test = make(60)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def image_config(path, epochs=5):
    return Config.from_dict({
        "seed": 1,
        "data": {"dataset": "npz", "root": str(path), "val_fraction": 0.1, "augment": True},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": "resnet8", "widths": [8, 8, 16]},
        "loss": {"name": "elr", "lam": 3.0, "beta": 0.7},
        "optim": {"lr": 0.05, "batch_size": 32, "epochs": epochs, "schedule": "onecycle"},
        "device": "cpu",
    }).validate()


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_holds_every_file(tmp_path):
    out = tmp_path / "run"
    summary = train(digits_config(), out)
    for name in ("config.yaml", "noisy_labels.npy", "noise.json", "metrics.jsonl", "checkpoint.pt", "summary.json"):
        assert (out / name).is_file(), name
    header = (out / "config.yaml").read_text().splitlines()[0]
    assert "elr" in header and torch.__version__ in header
    records = read_metrics(out)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for key in RESULT_KEYS + ("seconds", "mem_wrong_true", "mem_wrong_other", "mem_clean_incorrect"):
        assert key in records[0], key
    for r in records:  # the epoch's time splits into training and evaluation
        assert r["train_seconds"] > 0 and r["eval_seconds"] > 0
        assert r["seconds"] == pytest.approx(r["train_seconds"] + r["eval_seconds"], abs=1e-6)
    wrong = records[-1]
    assert wrong["mem_wrong_true"] + wrong["mem_wrong_memorized"] + wrong["mem_wrong_other"] == pytest.approx(1)
    # the saved noisy labels reproduce the noise summary
    noisy = np.load(out / "noisy_labels.npy")
    noise_info = json.loads((out / "noise.json").read_text())
    assert noisy.dtype == np.int64 and len(noise_info["val_indices"]) > 0
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["last"]["test_acc"] == records[-1]["test_acc"] == summary["last"]["test_acc"]
    best = max(records, key=lambda r: (r["val_acc"], -r["epoch"]))
    assert on_disk["selected"]["epoch"] == best["epoch"] and on_disk["selected"]["by"].startswith("val_acc")
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 3 and torch.equal(state["noisy_labels"], torch.from_numpy(noisy))
    assert "targets" in state["method"]["loss"]
    # elr eval on the checkpoint reproduces the last epoch's test accuracy
    assert evaluate_run(out)["test_acc"] == pytest.approx(records[-1]["test_acc"])
    pytest.importorskip("matplotlib")
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "memorization.png").stat().st_size > 0


def test_existing_run_directory_is_refused(tmp_path):
    train(digits_config(optim__epochs=1), tmp_path / "run")
    with pytest.raises(FileExistsError, match="holds a finished run .1 epoch.; inspect it with `elr eval"):
        train(digits_config(optim__epochs=1), tmp_path / "run")


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


@pytest.mark.parametrize("kind", ["images", "digits"])
def test_sigkill_then_resume_equals_uninterrupted_run(kind, tmp_path, image_npz):
    config = image_config(image_npz) if kind == "images" else digits_config(optim__epochs=5)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config.to_yaml())
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(config_path), str(killed)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr  # died by SIGKILL in epoch 3
    assert [r["epoch"] for r in read_metrics(killed)] == [1, 2]
    resume(killed)
    straight = tmp_path / "straight"
    train(config, straight)
    got, want = read_metrics(killed), read_metrics(straight)
    assert len(got) == len(want) == 5
    for a, b in zip(got, want):
        assert {k: a.get(k) for k in RESULT_KEYS} == {k: b.get(k) for k in RESULT_KEYS}
    a, b = load_checkpoint(killed / "checkpoint.pt"), load_checkpoint(straight / "checkpoint.pt")
    assert_same_state(a["method"], b["method"])  # weights, BatchNorm statistics, targets, momentum buffers


def test_resume_refuses_a_changed_config(tmp_path):
    out = tmp_path / "run"
    train(digits_config(optim__epochs=1), out)
    text = (out / "config.yaml").read_text().replace("lam: 3.0", "lam: 5.0")
    (out / "config.yaml").write_text(text)
    with pytest.raises(ValueError, match="different config.*loss"):
        resume(out)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err and "Traceback" not in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim: {lrr: 0.1}\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "valid keys" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "optim.lrr=1"]) == 2


def test_cli_train_resume_and_eval(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(digits_config(optim__epochs=2).to_yaml())
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "optim.epochs=1"]) == 0
    assert "last epoch (1)" in capsys.readouterr().out
    first = json.loads((out / "metrics.jsonl").read_text())
    assert main(["train", "--resume", str(out)]) == 0  # already finished: nothing to do, same summary
    assert "last epoch (1)" in capsys.readouterr().out
    assert main(["eval", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["epoch"] == 1 and evaluated["test_acc"] == pytest.approx(first["test_acc"])


def test_demo_elr_beats_ce_by_ten_points(tmp_path):
    from elr.demo import run_demo

    result = run_demo(tmp_path / "demo", epochs=60)
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["ELR"]["test_acc"] >= rows["CE"]["test_acc"] + 0.10, rows
    assert rows["ELR"]["memorized"] < rows["CE"]["memorized"]
    assert (tmp_path / "demo" / "summary.json").is_file()
    # a second demo reuses the finished runs instead of refusing the directory
    again = run_demo(tmp_path / "demo", epochs=60)
    assert again["rows"] == result["rows"]
    with pytest.raises(FileExistsError, match=r"demo/ce holds a run of another config \(differs in: optim\)"):
        run_demo(tmp_path / "demo", epochs=61)
    # the demo records Figure 2's terms: every key, per epoch, in metrics.jsonl
    records = read_metrics(tmp_path / "demo" / "elr")
    for group in ("clean", "wrong"):
        for term in ("ce", "reg", "total"):
            assert isinstance(records[-1][f"grad_{group}_{term}_mean"], float), (group, term)
    last = records[-1]
    for group in ("clean", "wrong"):  # total = CE term + regularisation term, example by example
        assert last[f"grad_{group}_total_mean"] == pytest.approx(
            last[f"grad_{group}_ce_mean"] + last[f"grad_{group}_reg_mean"], abs=1e-6)
    # the ELR run's targets found the wrong labels; the CE run keeps none
    assert records[-1]["det_auroc"] > 0.9 and "det_auroc" not in read_metrics(tmp_path / "demo" / "ce")[-1]
    pytest.importorskip("matplotlib")  # elr plot: Figure 1 and, as the runs recorded them, Figure 2
    out = tmp_path / "fig" / "figure1.png"
    assert main(["plot", str(tmp_path / "demo" / "ce"), str(tmp_path / "demo" / "elr"), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000 and (tmp_path / "fig" / "figure1_gradients.png").stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image  # four panels a row

    assert Image.open(out).size == (2200, 836)


def test_cli_one_line_errors_for_broken_yaml_and_checkpoint(tmp_path, capsys):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("optim: {lr: [\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "Traceback" not in err
    good = tmp_path / "c.yaml"
    good.write_text(digits_config(optim__epochs=1).to_yaml())
    out = tmp_path / "run"
    assert main(["train", "--config", str(good), "--out", str(out), "amp=off", "channels_last=off"]) == 0
    assert Config.load(out / "config.yaml").amp == "off"  # a bare YAML off is the string "off"
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not a checkpoint elr wrote (unreadable" in err and "weights_only" not in err and "Traceback" not in err


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bars_on_a_terminal_lines_otherwise(tty):
    import io

    from elr.cli import TerminalProgress

    class Stream(io.StringIO):
        def isatty(self):
            return tty

    stream = Stream()
    progress = TerminalProgress("ce", stream=stream)
    for epoch in (2, 3):  # a resumed run: its bar starts at epoch 1 of 3 done
        progress.epoch_start(epoch, 3, 4)
        for _ in range(4):
            progress.batch_end()
        progress.eval_start(2)  # the bar turns to the evaluation's batches
        for _ in range(2):
            progress.batch_end()
        progress.epoch_end({"epoch": epoch, "train_loss": 0.5, "test_acc": 0.9, "seconds": 1.0, "eval_seconds": 0.3})
    out = stream.getvalue()
    assert out.count("ce epoch   3/3  loss 0.5000  test 90.00%  1.0s (evaluation 0.3s)") == 1
    assert ("ce epochs: 100%" in out) == tty and ("batch/s" in out) == tty
    assert ("ce epoch 3/3 evaluating:   0%|          | 0/2 " in out) == tty


def test_pick_device_checks_this_machine():
    from elr.config import ConfigError
    from elr.methods import pick_device
    from elr.build import resolve_runtime

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    beyond = f"cuda:{torch.cuda.device_count()}"  # one index past the last device
    message = "but CUDA is not available" if not torch.cuda.is_available() else "CUDA device(s): cuda:0 to"
    with pytest.raises(ValueError, match=message):
        pick_device(beyond)
    with pytest.raises(ConfigError, match=f"device={beyond} was asked for"):
        resolve_runtime(Config(device=beyond))


@pytest.mark.parametrize("method", ["standard", "elr_plus"])
def test_evaluation_never_moves_the_targets(method):
    """Evaluation (test, validation, memorization, gradient terms, detection) reads the banks only."""
    from elr.engine import Engine
    from elr.prepare import derived_seeds, prepare_data
    from elr.build import build_method, resolve_runtime

    over = {"monitor": {"memorization": True, "gradient_terms": method == "standard", "detection": True},
            "optim__epochs": 1}
    if method == "elr_plus":
        over.update(method="elr_plus", elr_plus={"mixup": False, "ema_ramp_steps": 0})
    config = digits_config(**over)
    prepared = prepare_data(config)
    engine = Engine(build_method(config, prepared, resolve_runtime(config)), prepared.data, optim=config.optim,
                    monitor=config.monitor, eval_batch_size=64, seed=derived_seeds(config.seed)["train"])
    engine.fit()
    banks = engine.method.target_banks
    before = [bank.targets.clone() for bank in banks]
    assert all(float(b.abs().sum()) > 0 for b in before)  # trained: the rows hold predictions
    record = engine._evaluate()
    assert record["det_auroc"] is not None and record["mem_wrong_memorized"] is not None
    assert all(torch.equal(bank.targets, b) for bank, b in zip(banks, before))
