"""Small-CPU defaults: torch threads, the evaluation batch, evaluation in the progress display, and
relative data paths found from another working directory."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from elr import rundir
from elr.build import build_method, resolve_runtime
from elr.cli import main
from elr.config import Config, ConfigError, locate_paths
from elr.engine import predict_all
from elr.experiments import Sweep, SweepError, run_sweep
from elr.methods import cpu_threads
from elr.prepare import prepare_data
from elr.runs import train

REPO = Path(__file__).resolve().parents[1]


def tiny_images(path: Path, n_train: int = 120, n_test: int = 40) -> Path:
    """A CIFAR-shaped .npz whose class shifts the mean colour (what the CPU presets read)."""
    rng = np.random.default_rng(0)

    def make(n):
        y = np.arange(n) % 10
        x = rng.integers(0, 128, size=(n, 32, 32, 3)) + (y * 12)[:, None, None, None]
        return x.astype(np.uint8), y.astype(np.int64)

    (x, y), (xt, yt) = make(n_train), make(n_test)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


# A CPU preset shrunk to seconds: its data.root stays as the test gives it (relative).
SHRINK = ["data.train_size=100", "optim.epochs=1", "optim.batch_size=50", "monitor.subset=20",
          "model.widths=[4,4,8]", "device=cpu"]


# ---- the two auto keys ---------------------------------------------------------------------------


def test_threads_and_eval_batch_size_take_auto_or_a_count():
    config = Config.load(None, ["threads=3", "eval_batch_size=256"])
    assert (config.threads, config.eval_batch_size) == (3, 256)
    assert config.eval_batch_for("cpu") == config.eval_batch_for("cuda") == 256
    auto = Config.load(None, [])
    assert (auto.threads, auto.eval_batch_size) == ("auto", "auto")
    assert (auto.eval_batch_for("cpu"), auto.eval_batch_for("cuda")) == (128, 1024)
    for key, bad in (("threads", "0"), ("threads", "many"), ("eval_batch_size", "true"), ("eval_batch_size", "-4")):
        with pytest.raises(ConfigError, match=rf"^{key} must be auto or an integer >= 1, got "):
            Config.load(None, [f"{key}={bad}"])
    # runtime keys: a run resumes whatever they are set to
    assert rundir.config_difference(config, auto.to_dict()) == []


def test_the_evaluation_batch_changes_speed_not_logits(tmp_path):
    """Why eval_batch_size may follow the device: an image network's logits are the same bit for bit."""
    config = Config.load(None, ["data.dataset=npz", f"data.root={tiny_images(tmp_path / 'x.npz')}",
                                "model.widths=[4,4,8]", "device=cpu", "noise.rate=0.0"])
    prepared = prepare_data(config)
    method = build_method(config, prepared, resolve_runtime(config))
    method.eval()
    small, large = (predict_all(method, prepared.data.test, size) for size in (7, 1024))
    assert small.shape == (40, 10) and torch.equal(small, large)


@pytest.mark.parametrize("threads, shape, device, expected", [
    ("auto", (64,), "cpu", 1),  # feature vectors on the CPU: one thread
    ("auto", (3, 32, 32), "cpu", None),  # images: the process's own count
    ("auto", (64,), "cuda", None),  # the CPU only feeds a GPU: left alone
    (3, (64,), "cpu", 3),  # a count is taken as given
])
def test_cpu_threads_chooses_by_the_data_and_gives_the_count_back(threads, shape, device, expected):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        config = Config.from_dict({"threads": threads}).validate()
        with cpu_threads(config.threads, torch.device(device), shape) as count:
            assert count == torch.get_num_threads() == (expected or 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_feature_run_trains_on_one_thread_and_says_so(tmp_path):
    seen = []

    class Watch:
        def epoch_start(self, epoch, epochs, batches):
            seen.append(torch.get_num_threads())

        def batch_end(self):
            pass

        def epoch_end(self, record):
            pass

    before = torch.get_num_threads()
    config = Config.load(None, ["optim.epochs=2", "model.hidden=[16]", "noise.rate=0.2", "device=cpu"])
    summary = train(config, tmp_path / "run", progress=Watch())
    assert seen == [1, 1] and summary["threads_this_session"] == 1
    assert json.loads((tmp_path / "run" / rundir.SUMMARY).read_text())["threads_this_session"] == 1
    assert torch.get_num_threads() == before


# ---- evaluation in the progress display ----------------------------------------------------------


def test_the_evaluation_phase_is_announced_with_its_batch_count(tmp_path):
    events = []  # [phase, batches announced, batch_end calls]

    class Record:
        def epoch_start(self, epoch, epochs, batches):
            events.append(["train", batches, 0])

        def eval_start(self, batches):
            events.append(["eval", batches, 0])

        def batch_end(self):
            events[-1][2] += 1

        def epoch_end(self, record):
            pass

    config = Config.load(None, ["optim.epochs=2", "optim.batch_size=100", "eval_batch_size=64", "data.val_fraction=0.2",
                                "monitor.subset=300", "noise.rate=0.4", "model.hidden=[16]", "device=cpu"])
    train(config, tmp_path / "run", progress=Record())
    # digits: 1797 examples in all; the run's noisy labels cover training + validation rows
    noise = json.loads((tmp_path / "run" / rundir.NOISE).read_text())
    n_val = len(noise["val_indices"])
    n_train = len(np.load(tmp_path / "run" / rundir.NOISY_LABELS)) - n_val
    n_test = 1797 - n_train - n_val
    expected_eval = math.ceil(n_test / 64) + math.ceil(n_val / 64) + math.ceil(300 / 64)
    steps = math.ceil(n_train / 100)
    assert events == [["train", steps, steps], ["eval", expected_eval, expected_eval]] * 2


# ---- relative data paths -------------------------------------------------------------------------


def test_locate_paths_tries_the_working_directory_then_the_config_folder(tmp_path, monkeypatch):
    here, there = tmp_path / "here", tmp_path / "configs"
    tiny_images(here / "data" / "a.npz")
    tiny_images(there / "data" / "b.npz")
    np.save(there / "T.npy", np.eye(10))
    (there / "weights.pth").write_bytes(b"")
    monkeypatch.chdir(here)
    config = Config.load(None, ["data.dataset=npz", "data.root=data/a.npz"])
    assert locate_paths(config, there).data.root == "data/a.npz"  # the working directory first: unchanged
    moved = Config.load(None, ["data.dataset=npz", "data.root=data/b.npz", "loss.name=forward", "loss.transition=T.npy",
                               "model.name=resnet8", "model.pretrained=weights.pth"])
    found = locate_paths(moved, there)
    assert found.model.params["pretrained"] == str((there / "weights.pth").resolve())
    assert found.data.root == str((there / "data" / "b.npz").resolve())  # beside the config file
    assert found.loss.params["transition"] == str((there / "T.npy").resolve())
    assert moved.data.root == "data/b.npz"  # the given config is left as it was
    missing = Config.load(None, ["data.dataset=npz", "data.root=data/c.npz"])
    with pytest.raises(ConfigError) as err:
        locate_paths(missing, there)
    message = str(err.value)
    assert message.startswith("data.root=data/c.npz: not found as ")
    assert str(here / "data" / "c.npz") in message and str(there.resolve() / "data" / "c.npz") in message
    assert locate_paths(missing, there, strict=False).data.root == "data/c.npz"
    absolute = Config.load(None, ["data.dataset=npz", f"data.root={tmp_path / 'nowhere.npz'}"])
    assert locate_paths(absolute, there).data.root == str(tmp_path / "nowhere.npz")  # the reader reports it


def test_a_cpu_preset_runs_from_another_working_directory(tmp_path, monkeypatch, capsys):
    """The preset as shipped, from a folder that is not the repository: data.root relative to that folder."""
    elsewhere = tmp_path / "elsewhere"
    tiny_images(elsewhere / "cifar" / "cifar10.npz")
    monkeypatch.chdir(elsewhere)
    preset = REPO / "configs" / "cpu" / "cifar10_elr_sym40.yaml"
    assert main(["train", "--config", str(preset), "data.root=cifar/cifar10.npz", *SHRINK, "--out", "run"]) == 0
    stored = yaml.safe_load((elsewhere / "run" / rundir.CONFIG).read_text())
    assert stored["data"]["root"] == "cifar/cifar10.npz" and stored["model"]["name"] == "resnet8"
    assert json.loads((elsewhere / "run" / rundir.SUMMARY).read_text())["last"]["epoch"] == 1


def test_a_config_finds_its_data_beside_it_from_any_working_directory(tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    tiny_images(project / "configs" / "data" / "mine.npz")
    text = (REPO / "configs" / "cpu" / "cifar10_elr_sym40.yaml").read_text()
    (project / "configs" / "mine.yaml").write_text(text.replace("../shared/data/cifar10.npz", "data/mine.npz"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["train", "--config", "../project/configs/mine.yaml", *SHRINK, "--out", "run"]) == 0
    stored = yaml.safe_load((work / "run" / rundir.CONFIG).read_text())
    assert stored["data"]["root"] == str((project / "configs" / "data" / "mine.npz").resolve())
    # neither from here nor beside the config: one line naming both paths, nothing written
    (project / "configs" / "lost.yaml").write_text(text.replace("../shared/data/cifar10.npz", "data/lost.npz"))
    capsys.readouterr()
    assert main(["train", "--config", "../project/configs/lost.yaml", *SHRINK, "--out", "lost"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("elr train: error: data.root=data/lost.npz: not found as ") and "\n" not in err
    assert str(work / "data" / "lost.npz") in err and str((project / "configs").resolve() / "data" / "lost.npz") in err
    assert not (work / "lost").exists()


def test_a_sweep_finds_its_base_configs_data_and_stops_before_any_run_when_it_is_missing(tmp_path, monkeypatch):
    project = tmp_path / "project"
    tiny_images(project / "configs" / "data" / "mine.npz")
    base = {"data": {"dataset": "npz", "root": "data/mine.npz", "train_size": 100},
            "model": {"name": "resnet8", "widths": [4, 4, 8]}, "noise": {"type": "symmetric", "rate": 0.4},
            "optim": {"epochs": 1, "batch_size": 50}, "monitor": {"subset": 20}, "device": "cpu"}
    (project / "configs" / "base.yaml").write_text(yaml.safe_dump(base))
    (project / "sweeps").mkdir()
    (project / "sweeps" / "s.yaml").write_text(yaml.safe_dump({"base": "../configs/base.yaml",
                                                                "grid": {"loss.lam": [1.0, 3.0]}}))
    monkeypatch.chdir(tmp_path)
    sweep = Sweep.load(project / "sweeps" / "s.yaml")
    result = run_sweep(sweep, tmp_path / "out")
    assert set(result.results().values()) == {"trained"}
    (project / "configs" / "data" / "mine.npz").rename(project / "configs" / "data" / "gone.npz")
    with pytest.raises(SweepError, match=r"data\.root=data/mine\.npz: not found as .* nor .*configs/data/mine\.npz"):
        run_sweep(Sweep.load(project / "sweeps" / "s.yaml", ["loss.beta=0.9"]), tmp_path / "out2")
    assert not (tmp_path / "out2").exists() or not any(os.scandir(tmp_path / "out2"))


def test_train_help_states_the_override_rules_and_lists_every_key(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    listed = " ".join(text.split())
    assert "loss.name=ce on an ELR preset drops lam and beta" in listed
    assert "from the working directory first, then from the --config file's folder" in listed
    for key, value in Config().to_dict().items():
        if isinstance(value, dict) and key not in ("model", "loss"):
            for sub, default in value.items():
                assert f"{key}.{sub}=" in listed, f"{key}.{sub} missing from elr train --help"
        elif key not in ("model", "loss"):
            assert f"{key}=" in listed
    assert "threads=auto" in listed and "eval_batch_size=auto" in listed
    assert "mlp: in_features hidden dropout pretrained" in listed
    assert "elr: lam beta reduction eps" in listed and "forward: transition" in listed


# ---- your own data: the README's one command each ---------------------------------------------------


def _write_images(folder: Path, per_class: int, offset: int = 0) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(offset)
    written = []
    for label, name in enumerate(("cat", "dog")):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 100, size=(80, 90, 3)) + 120 * label
            path = folder / name / f"{offset + i:03d}.png"
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            written.append(f"{path.parent.name}/{path.name},{name}")
    return written


FAST = ["optim.epochs=1", "optim.batch_size=8", "device=cpu"]


@pytest.mark.parametrize("kind", ["image_folder", "csv", "features"])
def test_the_own_data_presets_train_from_a_relative_root(kind, tmp_path, monkeypatch, capsys):
    """The README's "Your own data" commands, from the data's folder (the configs named by full path)."""
    monkeypatch.chdir(tmp_path)
    if kind == "features":
        rng = np.random.default_rng(0)
        y = np.arange(40) % 2
        rows = [f"{a:.4f},{b:.4f},{'yes' if t else 'no'}" for (a, b), t in zip(rng.normal(size=(40, 2)) + y[:, None], y)]
        (tmp_path / "mine.csv").write_text("f1,f2,y\n" + "\n".join(rows) + "\n")
        config = REPO / "configs" / "features" / "elr.yaml"
        assert main(["train", "--config", str(config), "data.root=mine.csv", "data.label_column=y",
                     "optim.epochs=2", "--out", "runs/mine"]) == 0
        summary = json.loads((tmp_path / "runs" / "mine" / rundir.SUMMARY).read_text())
        assert len(np.load(tmp_path / "runs" / "mine" / rundir.NOISY_LABELS)) == 28  # test_fraction 0.3: 6 of 20 a class
        assert summary["last"]["epoch"] == 2 and summary["threads_this_session"] == 1
        return
    if kind == "image_folder":
        _write_images(tmp_path / "pets" / "train", 12)
        _write_images(tmp_path / "pets" / "test", 4, offset=100)
        argv = ["data.root=pets"]
    else:
        lines = _write_images(tmp_path / "photos", 16)
        train_lines = [x for i, x in enumerate(lines) if i % 4]
        test_lines = [x for i, x in enumerate(lines) if not i % 4]
        (tmp_path / "photos" / "train.csv").write_text("path,label\n" + "\n".join(train_lines) + "\n")
        (tmp_path / "photos" / "test.csv").write_text("\n".join(test_lines) + "\n")
        argv = ["data.root=photos", "data.label_file=train.csv", "data.test_label_file=test.csv"]
    config = REPO / "configs" / "own" / f"{kind}.yaml"
    assert main(["train", "--config", str(config), *argv, *FAST, "--out", "runs/mine"]) == 0
    summary = json.loads((tmp_path / "runs" / "mine" / rundir.SUMMARY).read_text())
    n_test = 8  # 4 test images a class in both layouts
    assert summary["last"]["epoch"] == 1 and summary["last"]["test_acc"] * n_test == round(summary["last"]["test_acc"] * n_test)
    classes = json.loads((tmp_path / "runs" / "mine" / rundir.CLASSES).read_text())
    assert "cat" in json.dumps(classes) and "dog" in json.dumps(classes)
    capsys.readouterr()
    assert main(["detect", "runs/mine"]) == 0
    assert (tmp_path / "runs" / "mine" / rundir.LABEL_ISSUES).is_file()
