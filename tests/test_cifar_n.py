"""CIFAR-N human noisy labels: safe loading of the .pt files, checks, and their use in prepare_data and train."""

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from elr.config import Config, ConfigError
from elr.data.cifar_n import CIFAR10N_LABEL_SETS, find_label_file, load_label_file, read_cifar_n
from elr.data.split import stratified_split
from elr.prepare import derived_seeds, prepare_data
from elr.engine import predict_all
from elr.runs import restore_run, train

N_TRAIN = 200
# realised noise rate of each fixture label set (multiples of 1/200, all different)
RATES = {"aggre_label": 0.09, "random_label1": 0.17, "random_label2": 0.18, "random_label3": 0.175,
         "worse_label": 0.40}


def corrupt(y, rate, num_classes, rng):
    """Exactly round(rate * n) labels moved to another class."""
    noisy = y.copy()
    flip = rng.choice(len(y), size=round(rate * len(y)), replace=False)
    noisy[flip] = (y[flip] + rng.integers(1, num_classes, size=len(flip))) % num_classes
    return noisy


@pytest.fixture()
def cifar_like(tmp_path):
    """A CIFAR-10-shaped .npz (200 training images, 10 classes) with CIFAR-10_human.pt beside it."""
    rng = np.random.default_rng(0)
    y_train = np.repeat(np.arange(10), N_TRAIN // 10)
    rng.shuffle(y_train)
    y_test = np.repeat(np.arange(10), 4)
    x_train = (rng.integers(0, 128, size=(N_TRAIN, 32, 32, 3)) + (y_train * 12)[:, None, None, None]).astype(np.uint8)
    x_test = (rng.integers(0, 128, size=(40, 32, 32, 3)) + (y_test * 12)[:, None, None, None]).astype(np.uint8)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    labels = {"clean_label": y_train.copy()}
    for key, rate in RATES.items():
        labels[key] = corrupt(y_train, rate, 10, rng)
    torch.save(labels, tmp_path / "CIFAR-10_human.pt")
    return npz, labels


def config(npz, **noise):
    return Config.from_dict({
        "seed": 2,
        "data": {"dataset": "npz", "root": str(npz), "val_fraction": 0.0, "augment": False},
        "noise": {"type": "cifar10n", **noise},
        "model": {"name": "resnet8", "widths": [8, 8, 16]},
        "loss": {"name": "elr", "lam": 3.0, "beta": 0.7},
        "optim": {"lr": 0.05, "batch_size": 50, "epochs": 1, "schedule": "constant"},
        "monitor": {"memorization": True},
        "device": "cpu",
    }).validate()


@pytest.mark.parametrize("label_set", list(CIFAR10N_LABEL_SETS))
def test_every_label_set_replaces_the_labels(cifar_like, label_set):
    npz, labels = cifar_like
    key = CIFAR10N_LABEL_SETS[label_set]
    prepared = prepare_data(config(npz, label_set=label_set))
    np.testing.assert_array_equal(prepared.noisy_labels, labels[key])
    np.testing.assert_array_equal(prepared.true_labels, labels["clean_label"])
    assert prepared.noise_summary["noise_rate"] == pytest.approx(RATES[key])
    np.testing.assert_array_equal(prepared.data.train.labels.numpy(), labels[key])
    np.testing.assert_array_equal(prepared.data.train.true_labels.numpy(), labels["clean_label"])


def test_subset_and_validation_split_follow_the_file(cifar_like):
    npz, labels = cifar_like
    cfg = config(npz, label_set="worst")
    cfg.data.train_size = 100
    cfg.data.val_fraction = 0.2
    prepared = prepare_data(cfg)
    _, keep = stratified_split(labels["clean_label"], 100 / N_TRAIN, seed=derived_seeds(cfg.seed)["subset"])
    np.testing.assert_array_equal(prepared.noisy_labels, labels["worse_label"][keep])
    np.testing.assert_array_equal(prepared.true_labels, labels["clean_label"][keep])
    val = prepared.val_indices
    assert len(val) == 20 and len(prepared.data.train) == 80
    np.testing.assert_array_equal(prepared.data.val.labels.numpy(), labels["worse_label"][keep][val])
    train_idx = np.setdiff1d(np.arange(100), val)
    np.testing.assert_array_equal(np.sort(prepared.data.train.labels.numpy()),
                                  np.sort(labels["worse_label"][keep][train_idx]))
    realised = float(np.mean(labels["worse_label"][keep] != labels["clean_label"][keep]))
    assert prepared.noise_summary["noise_rate"] == pytest.approx(realised)


def test_cifar100n_and_explicit_file(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 100, size=300)
    noisy = corrupt(y, 0.4, 100, rng)
    path = tmp_path / "elsewhere" / "c100.pt"
    path.parent.mkdir()
    torch.save({"clean_label": y, "noisy_label": noisy.astype(np.int32),
                "clean_coarse_label": y // 5, "noisy_coarse_label": noisy // 5}, path)
    got = read_cifar_n("cifar100n", label_set=None, true_labels=y, file=path)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, noisy)
    with pytest.raises(ValueError, match="cifar10n only"):
        read_cifar_n("cifar100n", label_set="worst", true_labels=y, file=path)


def test_file_is_found_inside_or_next_to_root(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    inside = tmp_path / "cifar-10-batches-py" / "CIFAR-10_human.pt"
    beside = tmp_path / "CIFAR-10_human.pt"
    beside.write_bytes(b"x")
    assert find_label_file("cifar10n", None, tmp_path / "cifar-10-batches-py") == beside
    inside.write_bytes(b"x")
    assert find_label_file("cifar10n", None, tmp_path / "cifar-10-batches-py") == inside
    with pytest.raises(FileNotFoundError, match=r"CIFAR-100_human.pt not found .*noise.file=PATH"):
        find_label_file("cifar100n", None, tmp_path / "cifar-10-batches-py")
    with pytest.raises(FileNotFoundError, match="noise.file=.*missing.pt: no such file"):
        find_label_file("cifar10n", tmp_path / "missing.pt", tmp_path)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "CIFAR-10_human.pt"
    torch.save({"worse_label": Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"CIFAR-10_human.pt: refusing to load.*system"):
        load_label_file(path)
    assert not marker.exists()
    torch.save({"worse_label": np.arange(3.0)}, path)  # float arrays are not labels either
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_label_file(path)


def test_legacy_torch_format_loads(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"noisy_label": np.arange(5, dtype=np.int64)}, path, _use_new_zipfile_serialization=False)
    np.testing.assert_array_equal(load_label_file(path)["noisy_label"], np.arange(5))


def test_bad_files_give_clear_errors(tmp_path):
    y = np.arange(20) % 10
    path = tmp_path / "f.pt"

    def save(**arrays):
        torch.save(arrays, path)

    save(clean_label=y, worse_label=y[:19])
    with pytest.raises(ValueError, match="worse_label holds 19 labels but the training set has 20"):
        read_cifar_n("cifar10n", label_set="worst", true_labels=y, file=path)
    save(clean_label=y, worse_label=y + 1)
    with pytest.raises(ValueError, match=r"worse_label must lie in \[0, 10\), found 1..10"):
        read_cifar_n("cifar10n", label_set="worst", true_labels=y, file=path)
    save(clean_label=np.roll(y, 1), worse_label=y)
    with pytest.raises(ValueError, match=r"clean_label differs .*\(first at index 0: 9 vs 0, 20 in all\): wrong file"):
        read_cifar_n("cifar10n", label_set="worst", true_labels=y, file=path)
    save(noisy_label=y)
    with pytest.raises(ValueError, match=r"no 'aggre_label' array \(keys found: noisy_label\)"):
        read_cifar_n("cifar10n", label_set="aggregate", true_labels=y, file=path)
    with pytest.raises(ValueError, match="label_set must be one of aggregate, random1"):
        read_cifar_n("cifar10n", label_set="best", true_labels=y, file=path)
    save(worse_label=y)  # no clean_label: only length and range are checked
    np.testing.assert_array_equal(read_cifar_n("cifar10n", label_set="worst", true_labels=y, file=path), y)
    torch.save([y], path)
    with pytest.raises(ValueError, match="expected a dict of NumPy arrays"):
        load_label_file(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable torch .pt file"):
        load_label_file(path)


def test_config_rules(cifar_like):
    npz, _ = cifar_like
    with pytest.raises(ConfigError, match="noise.label_set must be one of aggregate, random1, random2, random3, worst"):
        config(npz)
    with pytest.raises(ConfigError, match="noise.rate has no meaning for noise.type=cifar10n"):
        config(npz, label_set="worst", rate=0.4)
    with pytest.raises(ConfigError, match="noise.label_set is read only with noise.type=cifar10n or cifar100n"):
        Config.from_dict({"noise": {"type": "symmetric", "rate": 0.2, "label_set": "worst"}}).validate()
    with pytest.raises(ConfigError, match="noise.file is read only with"):
        Config.from_dict({"noise": {"type": "none", "file": "x.pt"}}).validate()
    with pytest.raises(ConfigError, match="needs data.dataset=cifar100"):
        Config.from_dict({"data": {"dataset": "cifar10", "root": "r"}, "noise": {"type": "cifar100n"}}).validate()
    with pytest.raises(ConfigError, match="cifar100n has one label set"):
        Config.from_dict({"data": {"dataset": "cifar100", "root": "r"},
                          "noise": {"type": "cifar100n", "label_set": "worst"}}).validate()
    with pytest.raises(ConfigError, match="valid keys: type, rate, exclude_true, seed, label_set, file"):
        Config.from_dict({"noise": {"type": "cifar10n", "labelset": "worst"}})
    ok = Config.load(None, ["data.dataset=cifar10", "data.root=r", "noise.type=cifar10n", "noise.label_set=worst"])
    assert (ok.noise.type, ok.noise.label_set, ok.noise.file) == ("cifar10n", "worst", None)


def test_wrong_class_count_is_refused(cifar_like):
    npz, _ = cifar_like
    cfg = config(npz, label_set="worst")
    cfg.noise.type = "cifar100n"
    cfg.noise.label_set = None
    with pytest.raises(ConfigError, match="cifar100n needs a data set of 100 classes, got 10"):
        prepare_data(cfg)


def test_one_epoch_run_with_cifar10n(cifar_like, tmp_path):
    npz, labels = cifar_like
    out = tmp_path / "run"
    summary = train(config(npz, label_set="worst"), out)
    assert summary["noise"] == {"type": "cifar10n", "rate": 0.0, "realised_rate": pytest.approx(0.40),
                                "label_set": "worst"}
    assert summary["epochs"] == 1 and summary["train_examples"] == N_TRAIN
    np.testing.assert_array_equal(np.load(out / "noisy_labels.npy"), labels["worse_label"])
    noise_info = json.loads((out / "noise.json").read_text())
    assert noise_info["type"] == "cifar10n" and noise_info["label_set"] == "worst"
    assert noise_info["noise_rate"] == pytest.approx(0.40) and noise_info["num_noisy"] == 80
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    # the memorization monitor splits examples by the true CIFAR labels (80 wrong, 120 clean): recomputed
    # from the checkpoint's predictions and the label file's two columns
    _, prepared, method, _ = restore_run(out)
    predicted = predict_all(method, prepared.data.train, 64).argmax(dim=1).numpy()
    given, true = labels["worse_label"], labels["clean_label"]
    wrong = given != true
    expected = {"mem_wrong_true": np.mean(predicted[wrong] == true[wrong]),
                "mem_wrong_memorized": np.mean(predicted[wrong] == given[wrong]),
                "mem_clean_correct": np.mean(predicted[~wrong] == true[~wrong])}
    assert {k: record[k] for k in expected} == pytest.approx(expected, abs=1e-12)
    assert 0 < expected["mem_clean_correct"] < 1 and 0 < expected["mem_wrong_true"] < 1  # the case tells them apart


def test_truncated_file_is_not_readable(tmp_path):
    path = tmp_path / "CIFAR-10_human.pt"
    torch.save({"worse_label": np.arange(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="CIFAR-10_human.pt: not a readable torch .pt file"):
        load_label_file(path)


def test_report_names_the_label_set(cifar_like, tmp_path):
    from elr.report import build_report, noise_column

    npz, _ = cifar_like
    for label_set in ("worst", "aggregate"):
        train(config(npz, label_set=label_set), tmp_path / label_set)
    report = build_report([tmp_path / "worst", tmp_path / "aggregate"])
    header = next(line for line in report.markdown().splitlines() if line.startswith("| method"))
    assert header == "| method | cifar10n aggregate | cifar10n worst |"
    assert noise_column("symmetric", 0.4) == "sym 40%" and noise_column("cifar10n", 0.0) == "cifar10n"


def test_detect_scores_cifar10n_labels_against_the_clean_ones(cifar_like, tmp_path, capsys):
    from elr.cli import main
    from elr.rundir import read_true_labels

    npz, labels = cifar_like
    out = tmp_path / "run"
    train(config(npz, label_set="worst"), out)
    np.testing.assert_array_equal(read_true_labels(out), labels["clean_label"])
    assert main(["detect", str(out), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "against the true labels (80 of 200 wrong): AUROC" in text
    rows = (out / "label_issues.csv").read_text().splitlines()
    assert rows[0].split(",")[:6] == ["index", "given_label", "suggested_label", "score", "is_issue", "source"]
    assert len(rows) == 201


# ---- the CIFAR-N presets and sweeps ----------------------------------------------------------------------

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SWEEP_PRESETS = {  # sweep -> {method label: (preset, extra overrides)}
    "cifar10n": {"CE": ("cifar_n/cifar10n_ce.yaml", []), "ELR": ("cifar_n/cifar10n_elr.yaml", []),
                 "ELR+": ("cifar_n/cifar10n_elr_plus.yaml", [])},
    "cifar100n": {"CE": ("cifar_n/cifar100n_ce.yaml", []), "ELR": ("cifar_n/cifar100n_elr.yaml", []),
                  "ELR+": ("cifar_n/cifar100n_elr_plus.yaml", [])},
    "cpu_cifar10n": {"CE": ("cpu/cifar10n_elr_worst.yaml", ["loss.name=ce"]),
                     "ELR": ("cpu/cifar10n_elr_worst.yaml", []),
                     "ELR+": ("cpu/cifar10n_elr_worst.yaml", ["method=elr_plus", "elr_plus.ema_ramp_steps=1200"])},
}


@pytest.mark.parametrize("sweep", list(SWEEP_PRESETS))
def test_cifar_n_sweeps_are_their_presets(sweep):
    """Every run of a CIFAR-N sweep is its method's preset with the run's label set and seed, nothing else."""
    from elr.experiments import Sweep

    root = [] if sweep.startswith("cpu") else ["data.root=/data/x"]
    specs = Sweep.load(CONFIGS / "sweeps" / f"{sweep}.yaml", root).expand()
    label_sets = [None] if sweep == "cifar100n" else list(CIFAR10N_LABEL_SETS)
    assert len(specs) == 3 * len(label_sets) * 3
    for spec in specs:
        info = spec.sweep_info(sweep)
        preset, extra = SWEEP_PRESETS[sweep][info["method"]]
        label_set = info["settings"].get("noise.label_set")
        assert label_set in label_sets
        picked = [f"noise.label_set={label_set}"] if label_set else []
        expected = Config.load(CONFIGS / preset, [*root, *extra, *picked, f"seed={info['settings']['seed']}"])
        assert spec.config.to_yaml() == expected.to_yaml(), spec.name


def test_cifar_n_presets_follow_the_benchmark_recipe_and_scale_the_elr_plus_ramps():
    steps = 100 * math.ceil(45000 / 128)  # 100 epochs of the 45,000 training images left by the 10% split
    for name in ("cifar10n", "cifar100n"):
        for method in ("ce", "elr", "elr_plus"):
            cfg = Config.load(CONFIGS / "cifar_n" / f"{name}_{method}.yaml", ["data.root=/data/x"])
            assert (cfg.model.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.batch_size,
                    cfg.optim.epochs, cfg.optim.schedule, cfg.optim.milestones, cfg.optim.gamma) == \
                ("resnet34", 0.1, 0.9, 5e-4, 128, 100, "multistep", [60], 0.1)
            assert cfg.data.val_fraction == 0.1 and cfg.data.augment
    # the authors' ramps take the same share of their runs: CIFAR-10 40,000 of 200 epochs, CIFAR-100 of 250
    ten = Config.load(CONFIGS / "cifar_n" / "cifar10n_elr_plus.yaml", ["data.root=/data/x"]).elr_plus
    hundred = Config.load(CONFIGS / "cifar_n" / "cifar100n_elr_plus.yaml", ["data.root=/data/x"]).elr_plus
    authors_steps = math.ceil(45000 / 128)
    assert ten.ema_ramp_steps / steps == pytest.approx(40000 / (200 * authors_steps), rel=0.02)
    assert ten.lam_ramp_steps == 0
    assert hundred.ema_ramp_steps / steps == hundred.lam_ramp_steps / steps == \
        pytest.approx(40000 / (250 * authors_steps), rel=0.02)


def tiny(npz):
    """Overrides that make a preset tiny: the synthetic npz and its label file, a small ResNet-8, two epochs."""
    return ["data.dataset=npz", f"data.root={npz}", "data.train_size=null", "model.name=resnet8",
            "model.widths=[8, 8, 16]", "optim.epochs=2", "optim.batch_size=50", "monitor.subset=100", "device=cpu"]


def shrunk(preset, npz, *extra):
    return Config.load(CONFIGS / preset, [*tiny(npz), *extra])


@pytest.mark.parametrize("preset, label_set", [
    ("cifar_n/cifar10n_ce.yaml", "worst"), ("cifar_n/cifar10n_elr.yaml", "aggregate"),
    ("cifar_n/cifar10n_elr_plus.yaml", "random2"), ("cpu/cifar10n_elr_worst.yaml", "worst")])
def test_cifar_n_presets_train_on_a_synthetic_label_file(cifar_like, tmp_path, preset, label_set):
    npz, labels = cifar_like
    cfg = shrunk(preset, npz, f"noise.label_set={label_set}")
    summary = train(cfg, tmp_path / "run")
    given, clean = labels[CIFAR10N_LABEL_SETS[label_set]], labels["clean_label"]
    np.testing.assert_array_equal(np.load(tmp_path / "run" / "noisy_labels.npy"), given)
    assert summary["noise"]["realised_rate"] == pytest.approx(np.mean(given != clean), abs=1e-12)
    val = json.loads((tmp_path / "run" / "noise.json").read_text())["val_indices"]
    assert summary["epochs"] == 2 and summary["train_examples"] == N_TRAIN - len(val) and 19 <= len(val) <= 21
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["best_test_acc"] == max(r["test_acc"] for r in records)
    chosen = max(records, key=lambda r: r["val_acc"])  # the first epoch of the best noisy validation accuracy
    assert summary["selected"]["epoch"] == chosen["epoch"] and summary["selected"]["test_acc"] == chosen["test_acc"]
    assert "mem_wrong_memorized" in records[-1]


def test_cpu_cifar10n_sweep_trains_and_reports_last_selected_and_best(cifar_like, tmp_path, capsys):
    from elr.cli import main
    from elr.report import build_report

    npz, _ = cifar_like
    out = tmp_path / "sweep"
    assert main(["sweep", str(CONFIGS / "sweeps" / "cpu_cifar10n.yaml"), *tiny(npz), "--out", str(out),
                 "--only", "*/seed-0"]) == 0
    summaries = {p.parent.relative_to(out).as_posix(): json.loads(p.read_text()) for p in out.rglob("summary.json")}
    assert len(summaries) == 15
    for metric in ("last", "selected", "best"):
        report = build_report([out], metric=metric)
        lines = report.markdown().splitlines()
        header = next(line for line in lines if line.startswith("| method"))
        assert header == ("| method | cifar10n aggregate | cifar10n random1 | cifar10n random2 | cifar10n random3 | "
                          "cifar10n worst |")
        for cell in report.accuracy:  # each cell: the one run's summary value, in %
            summary = summaries[f"{cell.method}/label_set-{cell.noise_type.split('-', 1)[1]}/seed-0"]
            value = {"last": summary["last"]["test_acc"], "selected": summary["selected"]["test_acc"],
                     "best": summary["best_test_acc"]}[metric]
            assert cell.values == [pytest.approx(100 * value)] and cell.seeds == [0]
        assert {c.method for c in report.accuracy} == {"CE", "ELR", "ELR+"}
        assert ("selects on the test set" in lines[0]) == (metric == "best")


def test_cifar100n_elr_plus_preset_trains_on_a_synthetic_label_file(tmp_path):
    """The CIFAR-100N preset (two networks, lam ramped up) on 100 classes: the file's noisy_label is trained on."""
    rng = np.random.default_rng(4)
    y_train = np.repeat(np.arange(100), 4)
    rng.shuffle(y_train)
    y_test = np.arange(100)
    npz = tmp_path / "c100.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (400, 32, 32, 3), dtype=np.uint8), y_train=y_train,
             x_test=rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8), y_test=y_test)
    noisy = corrupt(y_train, 0.4, 100, rng)
    torch.save({"clean_label": y_train, "noisy_label": noisy}, tmp_path / "CIFAR-100_human.pt")
    cfg = shrunk("cifar_n/cifar100n_elr_plus.yaml", npz)
    assert (cfg.method, cfg.loss.params, cfg.elr_plus.lam_ramp_steps) == ("elr_plus", {"lam": 7.0, "beta": 0.9}, 16000)
    summary = train(cfg, tmp_path / "run")
    np.testing.assert_array_equal(np.load(tmp_path / "run" / "noisy_labels.npy"), noisy)
    assert summary["noise"] == {"type": "cifar100n", "rate": 0.0, "realised_rate": pytest.approx(0.40)}
    assert summary["epochs"] == 2 and summary["selected"] is not None
