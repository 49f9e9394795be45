"""The `features` data set: its reader (.npz, a folder of .npy files, CSV/TSV), standardisation, and runs through `elr train`."""

import csv
import inspect
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from elr.checkpoint import load_checkpoint
from elr.cli import main
from elr.config import Config, ConfigError
from elr.data import Standardization, read_features
from elr.data.split import stratified_split
from elr.runs import evaluate_run, restore_run, train
from test_engine import KILLER  # a training process that kills itself in epoch 3

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "features"
NAMES = ["ant", "bee", "cat"]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, text
    return text


# ---- the reader: tables ----------------------------------------------------------------------------


def test_a_table_with_names_a_header_and_a_test_table_in_another_column_order(tmp_path):
    train = write(tmp_path / "train.csv", """
        width,species,height
        1.5,cat,10
        2,ant,20

        3.25,bee,30
        4,cat,-40
    """)
    test = write(tmp_path / "test.csv", """
        height,width,species
        7,0.5,bee
    """)
    raw = read_features(train, test_file=test, label_column="species")
    assert raw.class_names == NAMES and raw.label_to_index == {"ant": 0, "bee": 1, "cat": 2}
    assert raw.feature_names == ["width", "height"]
    np.testing.assert_array_equal(raw.x_train, [[1.5, 10], [2, 20], [3.25, 30], [4, -40]])
    assert raw.y_train.tolist() == [2, 0, 1, 2] and raw.y_train_true is None and not raw.clean
    np.testing.assert_array_equal(raw.x_test, [[0.5, 7]])  # columns matched by name, not position
    assert raw.y_test.tolist() == [1]


def test_integer_labels_are_class_indices_and_a_gap_is_refused(tmp_path):
    raw = read_features(write(tmp_path / "a.tsv", "f\tlabel\n0.1\t2\n0.2\t0\n0.3\t1\n0.4\t1\n"), test_fraction=0.25)
    assert raw.class_names == ["0", "1", "2"] and raw.label_to_index is None
    assert sorted(raw.y_train.tolist() + raw.y_test.tolist()) == [0, 1, 1, 2]
    with pytest.raises(ValueError) as err:
        read_features(write(tmp_path / "b.csv", "f,label\n1,0\n2,2\n"), test_fraction=0.5)
    assert "b.csv: labels are class indices 0 .. 2, but class 1 has no line" in one_line(err)


@pytest.mark.parametrize("body, test_body, expected", [
    ("a,b,label\n1,2,x\n3,4\n", None, r"bad\.csv line 3: 2 fields, but the header \(line 1\) names 3 columns"),
    ("a,b,label\n1,2,x\n3,four,y\n", None, r"bad\.csv line 3, column 'b': 'four' is not a number"),
    ("a,b,label\n1,2,x\n3,,y\n", None, r"bad\.csv line 3, column 'b': '' is not a number"),
    ("a,b,label\n1,2,x\n3,nan,y\n", None, r"bad\.csv line 3, column 'b': 'nan' \(1 NaN or infinite values in all\)"),
    ("a,b,label\n1,-inf,x\n3,4,y\n", None, r"bad\.csv line 2, column 'b': '-inf'.*finite numbers"),
    ("a,b,label\n1,2,x\n3,4,\n", None, r"bad\.csv line 3: empty label in column 'label'"),
    ("a,b,y\n1,2,x\n", None, r"bad\.csv: no column 'label' \(data\.label_column\); the header names: a, b, y"),
    ("1,2,3\n4,5,6\n", None, r"bad\.csv line 1: the first row must be a header naming the columns"),
    ("a,a,label\n1,2,x\n", None, r"bad\.csv line 1: a repeated column name 'a'"),
    ("a,label\n", None, r"bad\.csv holds a header but no rows"),
    ("a,label\n1,x\n2,y\n", "a,label\n1,z\n", r"test\.csv line 2: unknown label 'z'; .* define the classes: x, y"),
    ("a,label\n1,x\n2,y\n", "label,b\ny,1\n", r"test\.csv: no column 'a' \(data\.feature_columns\)"),
    ("a,label\n1,0\n2,1\n3,cat\n", None, r"bad\.csv line 2: label '0' is a class index but .*bad\.csv line 4 has the name 'cat'"),
    ("a,label\n1,x\n2,x\n", None, r"the training labels hold one class only \('x'\)"),
])
def test_bad_tables_are_refused_in_one_line_naming_file_row_and_column(tmp_path, body, test_body, expected):
    path = write(tmp_path / "bad.csv", body)
    kw = {"test_file": write(tmp_path / "test.csv", test_body)} if test_body else {"test_fraction": 0.5}
    with pytest.raises(ValueError) as err:
        read_features(path, **kw)
    assert err.match(expected), one_line(err)
    one_line(err)


def test_chosen_feature_columns_a_clean_label_column_and_a_held_out_test_fraction(tmp_path):
    rows = ["id,f1,f2,noisy,clean"]
    rng = np.random.default_rng(0)
    clean = np.repeat([0, 1, 2], [10, 6, 4])
    noisy = clean.copy()
    noisy[[0, 11]] = [1, 2]
    x = rng.normal(size=(20, 2)).round(3)
    for i in range(20):
        rows.append(f"{i},{x[i, 0]},{x[i, 1]},{NAMES[noisy[i]]},{NAMES[clean[i]]}")
    path = write(tmp_path / "t.csv", "\n".join(rows) + "\n")
    raw = read_features(path, label_column="noisy", true_label_column="clean", feature_columns=["f2", "f1"],
                        test_fraction=0.25)
    train_pos, test_pos = stratified_split(noisy, 0.25, seed=0)  # of the given labels, fixed seed
    assert raw.feature_names == ["f2", "f1"]
    np.testing.assert_array_equal(raw.x_train, x[train_pos][:, ::-1])
    np.testing.assert_array_equal(raw.x_test, x[test_pos][:, ::-1])
    assert raw.y_train.tolist() == noisy[train_pos].tolist() and raw.y_train_true.tolist() == clean[train_pos].tolist()
    assert raw.y_test.tolist() == clean[test_pos].tolist()  # the test rows are scored against the clean labels
    assert len(test_pos) == 5  # round half up per class of the given labels: 9 x .25 -> 2, 6 -> 2 (1.5), 5 -> 1
    with pytest.raises(ValueError, match="data.feature_columns lists the label column 'noisy'"):
        read_features(path, label_column="noisy", feature_columns=["f1", "noisy"], test_fraction=0.25)


# ---- the reader: arrays ----------------------------------------------------------------------------


def test_an_npz_and_a_folder_of_npy_files_read_alike(tmp_path):
    arrays = {"x_train": np.arange(12, dtype=np.int64).reshape(6, 2), "y_train": np.array(["b", "a", "c", "a", "b", "c"]),
              "x_test": np.array([[0.5, 1.5]], dtype=np.float32), "y_test": np.array(["c"])}
    np.savez(tmp_path / "f.npz", **arrays)
    (tmp_path / "npy").mkdir()
    for key, value in arrays.items():
        np.save(tmp_path / "npy" / f"{key}.npy", value)
    for raw in (read_features(tmp_path / "f.npz"), read_features(tmp_path / "npy")):
        assert raw.x_train.dtype == np.float64 and raw.x_test.dtype == np.float32  # ints become float64
        np.testing.assert_array_equal(raw.x_train, arrays["x_train"])
        assert raw.class_names == ["a", "b", "c"] and raw.y_train.tolist() == [1, 0, 2, 0, 1, 2]
        assert raw.y_test.tolist() == [2] and raw.label_to_index == {"a": 0, "b": 1, "c": 2}
    np.savez(tmp_path / "named.npz", x_train=np.ones((3, 2)), y_train=np.array([1, 0, 1]),
             class_names=np.array(["no", "yes"]))
    raw = read_features(tmp_path / "named.npz", test_fraction=0.4)
    assert raw.class_names == ["no", "yes"] and raw.y_test.tolist() == [1]  # per class: round(0.4 x 1) = 0, round(0.4 x 2) = 1


@pytest.mark.parametrize("arrays, kw, expected", [
    ({"x_train": np.ones((4, 2)), "y_train": np.array([0, 1, 0])}, {"test_fraction": 0.5},
     r"f\.npz: y_train must hold one label per row of x_train \(4\), got shape \(3,\)"),
    ({"x_train": np.array([[1.0, 2.0], [3.0, np.nan]]), "y_train": np.array([0, 1])}, {"test_fraction": 0.5},
     r"f\.npz: x_train holds 1 NaN or infinite values \(the first at row 1, column 1: nan\)"),
    ({"x_train": np.ones((2, 2)), "y_train": np.array([0, 1]), "x_test": np.ones((1, 2)), "y_test": np.array([2])}, {},
     r"f\.npz: y_test holds label 2 at row 0, a class no training row has \(y_train has classes 0 \.\. 1\)"),
    ({"x_train": np.ones((2, 2)), "y_train": np.array([0, 3]), "class_names": np.array(["a", "b"])}, {"test_fraction": 0.5},
     r"y_train holds label 3 at row 1, but class_names names 2 classes"),
    ({"x_train": np.ones((2, 2)), "y_train": np.array([0, -1])}, {"test_fraction": 0.5},
     r"y_train holds label -1 at row 1; class indices are 0 \.\. K-1"),
    ({"x_train": np.ones((2, 2)), "y_train": np.array([0.0, 1.0])}, {"test_fraction": 0.5},
     r"got dtype float64; they are whole numbers: store y_train\.astype\(np\.int64\)"),
    ({"x_train": np.zeros((2, 4, 4, 3), np.uint8), "y_train": np.array([0, 1])}, {"test_fraction": 0.5},
     r"x_train must be numbers of shape \(rows, features\), got uint8 \(2, 4, 4, 3\); images are data\.dataset=npz"),
    ({"x_train": np.ones((2, 2)), "y_train": np.array([0, 1]), "x_test": np.ones((1, 2))}, {},
     r"f\.npz: x_test without y_test; give both"),
    ({"x_train": np.ones((2, 2)), "y_train": np.array([0, 1])}, {},
     r"f\.npz holds no test set: give data\.test_fraction .* or x_test and y_test"),
    ({"x_train": np.ones((2, 2)), "y_train": np.array([0, 1]), "x_test": np.ones((1, 3)), "y_test": np.array([1])}, {},
     r"x_train has 2 features a row but x_test 3"),
    ({"x_train": np.ones((2, 2)), "y_train": np.array([0, 1]), "x_test": np.ones((1, 2)), "y_test": np.array([1])},
     {"test_fraction": 0.5}, r"has a test set of its own \(1 rows\): remove test_fraction"),
    ({"x_train": np.ones((2, 2)), "y_train": np.array([0, 1])}, {"test_fraction": 0.5, "label_column": "y"},
     r"label_column is read for CSV/TSV tables only"),
    ({"x_train": np.ones((4, 2)), "y_train": np.array([0, 1, 0, 1]), "x_test": np.zeros((0, 2)),
      "y_test": np.zeros(0, int)}, {}, r"f\.npz: x_test holds no rows"),
    ({"x_train": np.ones((4, 2)), "y_train": np.array([0, 1, 0, 1]), "class_names": np.array(["a", "a"])},
     {"test_fraction": 0.5}, r"class_names names 'a' twice"),
    ({"x_train": np.ones((4, 2)), "y_train": np.array([0, 1, 0, 1]), "class_names": np.array(["a", "b", "c"])},
     {"test_fraction": 0.5}, r"no training row is labelled 'c' \(class 2\), which only class_names names"),
    ({"x_train": np.ones((4, 2)), "y_train": np.array(["y", "n", "y", "q"]), "class_names": np.array(["y", "n"])},
     {"test_fraction": 0.5}, r"y_train\[3\] is 'q', which class_names does not name \(it names y, n\)"),
    ({"x_train": np.ones((2, 2)), "y_train": np.array([b"\xff", b"a"])}, {"test_fraction": 0.5},
     r"y_train holds b'\\xff', which is not UTF-8 text"),
    ({"x_train": np.ones((2, 2)), "y_train": np.array([0, 2**63 + 1], dtype=np.uint64)}, {"test_fraction": 0.5},
     r"y_train holds label 9223372036854775809; class indices are 0 \.\. K-1"),
])
def test_bad_arrays_are_refused_in_one_line(tmp_path, arrays, kw, expected):
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(ValueError) as err:
        read_features(tmp_path / "f.npz", **kw)
    assert err.match(expected), one_line(err)
    one_line(err)


def test_a_single_npy_file_or_a_missing_path_says_what_is_accepted(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"x\.npy: unknown kind of file \(\.npy\); expected an \.npz file or a folder"):
        read_features(tmp_path / "x.npy")
    with pytest.raises(FileNotFoundError, match=r"features .*nothing\.csv not found"):
        read_features(tmp_path / "nothing.csv")


# ---- standardisation -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardization_is_the_arithmetic_of_sklearns_standard_scaler(dtype):
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    rng = np.random.default_rng(1)
    x = (rng.normal(3.0, 2.0, (300, 5)) * [1.0, 1e4, 1e-3, 1.0, 1.0]).astype(dtype)
    x[:, 3] = 2.5  # a constant feature is centred and keeps scale 1
    s = Standardization.fit(x)
    np.testing.assert_allclose(s.mean, x.astype(np.float64).mean(axis=0), rtol=1e-12)
    want_scale = x.astype(np.float64).std(axis=0)
    want_scale[3] = 1.0
    np.testing.assert_allclose(s.scale, want_scale, rtol=1e-10)
    out = s.apply(x)
    assert out.dtype == np.float32 and np.all(out[:, 3] == 0)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    scaler = preprocessing.StandardScaler().fit(x)  # what ELRClassifier uses: the same values, bit for bit
    assert np.array_equal(scaler.mean_, s.mean) and np.array_equal(scaler.scale_, s.scale)
    assert np.array_equal(scaler.transform(x).astype(np.float32), out)
    again = Standardization.from_dict(json.loads(json.dumps(s.to_dict())), "f")
    assert np.array_equal(again.mean, s.mean) and np.array_equal(again.scale, s.scale)
    with pytest.raises(ValueError, match=r"f: mean and scale must be lists of one finite number per feature, scale > 0"):
        Standardization.from_dict({"mean": [0.0], "scale": [0.0]}, "f")
    with pytest.raises(ValueError, match=r"the standardisation was fitted on 5 features, the data have shape \(2, 3\)"):
        s.apply(np.ones((2, 3)))


# ---- config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, expected", [
    (["data.label_column=y"], r"data\.label_column applies to data\.dataset=features, not 'digits'"),
    (["data.dataset=cifar10", "data.root=x", "data.standardize=true"], r"data\.standardize scales feature vectors"),
    (["data.dataset=features", "data.root=t.csv", "data.test_file=u.csv", "data.test_fraction=0.2"],
     r"data\.test_file and data\.test_fraction both give a test set: keep one"),
    (["data.dataset=features", "data.root=t.csv", "data.test_fraction=1"], r"data\.test_fraction must lie in \(0\.0, 1\.0\)"),
    (["data.dataset=features", "data.root=t.csv", "data.feature_columns=[a, a]"], r"data\.feature_columns names a column twice"),
    (["data.dataset=features", "data.root=t.csv", "data.true_label_column=label"], r"data\.true_label_column and data\.label_column are both 'label'"),
    (["data.dataset=features"], r"data\.root is required for data\.dataset='features'"),
    (["data.dataset=features", "data.root=t.csv", "data.standardize=maybe"], r"data\.standardize must be true or false"),
])
def test_the_feature_keys_are_checked_by_name(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        Config.load(None, overrides)


def test_the_presets_are_elrclassifiers_defaults():
    pytest.importorskip("sklearn")
    from elr import ELRClassifier
    defaults = {k: p.default for k, p in inspect.signature(ELRClassifier).parameters.items()}
    elr, ce = Config.load(PRESETS / "elr.yaml"), Config.load(PRESETS / "ce.yaml")
    assert (elr.model.name, tuple(elr.model.params["hidden"])) == ("mlp", defaults["hidden_layer_sizes"])
    assert elr.loss.params == {"lam": defaults["lam"], "beta": defaults["beta"]} and ce.loss.name == "ce"
    for cfg in (elr, ce):
        o = cfg.optim
        assert (o.lr, o.momentum, o.weight_decay, o.batch_size, o.epochs, o.schedule, o.min_lr, o.nesterov) == (
            defaults["lr"], defaults["momentum"], defaults["weight_decay"], defaults["batch_size"], defaults["epochs"],
            defaults["lr_schedule"], 0.0, False)
        assert cfg.data.standardize is defaults["standardize"] and cfg.data.val_fraction == 0.0
        assert (cfg.data.dataset, cfg.noise.type) == ("features", "none")
    assert {k: v for k, v in ce.to_dict().items() if k != "loss"} == {k: v for k, v in elr.to_dict().items() if k != "loss"}


# ---- runs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A three-class table whose features have very different scales, labels as names, no test rows."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    x = rng.normal(size=(120, 4)) + y[:, None] * [1.0, -1.0, 0.5, 0.0]
    x *= [1.0, 100.0, 0.01, 1.0]
    x[:, 1] += 500
    path = tmp_path_factory.mktemp("table") / "table.csv"
    lines = ["f1,f2,f3,f4,kind"] + [",".join(f"{v:.6f}" for v in row) + f",{NAMES[c]}" for row, c in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def table_overrides(path, epochs=4, *more):
    return [f"data.root={path}", "data.label_column=kind", "data.test_fraction=0.25", "data.val_fraction=0.1",
            "noise.type=symmetric", "noise.rate=0.4", "model.hidden=[16]", "optim.lr=0.05", f"optim.epochs={epochs}",
            *more]


def test_a_features_run_through_elr_train_eval_and_detect(tmp_path, table, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", str(PRESETS / "elr.yaml"), *table_overrides(table), "--out", str(run)]) == 0
    capsys.readouterr()
    # the scaling is fitted on the training split only: not the test rows, not the validation rows
    raw = read_features(table, label_column="kind", test_fraction=0.25)
    val = json.loads((run / "noise.json").read_text())["val_indices"]
    fitted_on = np.delete(raw.x_train, val, axis=0)
    stored = json.loads((run / "standardization.json").read_text())
    assert len(val) == 9 and len(fitted_on) == 81
    np.testing.assert_allclose(stored["mean"], fitted_on.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stored["scale"], fitted_on.std(axis=0), rtol=1e-10)
    assert stored["feature_names"] == ["f1", "f2", "f3", "f4"]
    assert json.loads((run / "classes.json").read_text()) == {"class_names": NAMES,
                                                               "label_to_index": {"ant": 0, "bee": 1, "cat": 2}}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4] and "mem_wrong_memorized" in records[-1]

    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == records[-1]["test_acc"]

    # resume and eval scale with the stored values, not with a new fit: change them and the inputs follow
    stored["scale"] = [2 * s for s in stored["scale"]]
    (run / "standardization.json").write_text(json.dumps(stored))
    _, prepared, _, _ = restore_run(run)
    want = ((raw.x_test - np.array(stored["mean"])) / np.array(stored["scale"])).astype(np.float32)
    np.testing.assert_allclose(prepared.data.test.inputs.numpy(), want, rtol=1e-6, atol=1e-6)
    (run / "standardization.json").unlink()
    with pytest.raises(ValueError, match=r"standardization\.json is missing: .*; nothing to evaluate"):
        evaluate_run(run)
    assert main(["eval", str(run)]) == 2
    assert "standardization.json is missing" in capsys.readouterr().err
    (run / "standardization.json").write_text(json.dumps({"mean": [0.0] * 4, "scale": [1.0] * 3}))
    with pytest.raises(ValueError, match=r"standardization\.json: mean and scale must be lists"):
        evaluate_run(run)


def test_elr_detect_on_a_features_run_ranks_the_rows_from_the_saved_targets(tmp_path, table, capsys):
    run = tmp_path / "run"
    train(Config.load(PRESETS / "elr.yaml", table_overrides(table, 6)), run)
    assert main(["detect", str(run)]) == 0
    out = capsys.readouterr().out
    rows = list(csv_rows(run / "label_issues.csv"))
    noisy, true = np.load(run / "noisy_labels.npy"), np.load(run / "true_labels.npy")
    targets = np.load(run / "targets.npy")
    assert len(rows) == len(noisy) == 90
    by_index = {int(r["index"]): r for r in rows}
    flagged = {i for i, r in by_index.items() if r["is_issue"] == "True"}
    # the default rule flags a row whose target prefers another class than its given label
    assert flagged == {i for i in range(90) if targets[i].argmax() != noisy[i]}
    assert all(by_index[i]["given_class"] == NAMES[noisy[i]] and int(by_index[i]["true_label"]) == true[i]
               for i in range(90))
    assert f"against the true labels ({int((noisy != true).sum())} of 90 wrong)" in out


def csv_rows(path):
    with open(path, newline="") as fh:
        yield from csv.DictReader(fh)


def test_a_killed_features_run_resumes_to_the_uninterrupted_run(tmp_path, table, capsys):
    config = Config.load(PRESETS / "elr.yaml", table_overrides(table, 5))
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(path), str(killed)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr  # died by SIGKILL in epoch 3
    assert (killed / "standardization.json").is_file()
    assert main(["train", "--resume", str(killed)]) == 0
    straight = tmp_path / "straight"
    train(config, straight)
    got, want = [(d / "metrics.jsonl").read_text().splitlines() for d in (killed, straight)]
    strip = [{k: v for k, v in json.loads(line).items() if not k.endswith("seconds")} for line in got]
    assert len(got) == 5 and strip == [{k: v for k, v in json.loads(line).items() if not k.endswith("seconds")}
                                       for line in want]
    a, b = load_checkpoint(killed / "checkpoint.pt"), load_checkpoint(straight / "checkpoint.pt")
    assert all(torch.equal(a["method"]["model"][k], v) for k, v in b["method"]["model"].items())
    assert torch.equal(a["method"]["loss"]["targets"], b["method"]["loss"]["targets"])
    assert (killed / "standardization.json").read_text() == (straight / "standardization.json").read_text()


def test_elr_train_and_elrclassifier_train_the_same_network(tmp_path):
    """The preset is ELRClassifier's defaults: same rows, noisy labels and seed give the same weights, bit for bit."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    from elr import ELRClassifier
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = x[:1200], x[1200:], y[:1200], y[1200:]
    np.savez(tmp_path / "digits.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    run = tmp_path / "run"
    train(Config.load(PRESETS / "elr.yaml", [f"data.root={tmp_path / 'digits.npz'}", "data.test_fraction=null",
                                             "noise.type=symmetric", "noise.rate=0.4", "optim.epochs=2", "seed=5"]), run)
    noisy = np.load(run / "noisy_labels.npy")
    assert (noisy != y_train).mean() > 0.3
    with warnings.catch_warnings():  # two epochs are too few to predict every class: the collapse warning says so
        warnings.simplefilter("ignore")
        clf = ELRClassifier(epochs=2, random_state=5).fit(x_train, noisy)
    weights = load_checkpoint(run / "checkpoint.pt")["method"]["model"]
    assert weights.keys() == clf.model_.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in clf.model_.state_dict().items())
    assert np.array_equal(np.load(run / "targets.npy"), clf.targets_.astype(np.float32))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in records] == [r["train_loss"] for r in clf.history_]
    assert records[-1]["test_acc"] == clf.score(x_test, y_test)


def test_standardize_also_scales_digits_and_refuses_an_npz_of_images(tmp_path):
    from elr.prepare import prepare_data
    prepared = prepare_data(Config.load(None, ["data.standardize=true", "data.val_fraction=0.1"]))
    train_inputs = prepared.data.train.inputs.numpy()
    constant = prepared.standardization.scale == 1.0  # digits has always-blank pixels: centred, not scaled
    assert constant.sum() >= 1
    np.testing.assert_allclose(train_inputs.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train_inputs.std(axis=0)[~constant], 1, rtol=1e-4)
    assert len(train_inputs) + len(prepared.val_indices) == len(prepared.noisy_labels)
    np.savez(tmp_path / "images.npz", x_train=np.zeros((4, 8, 8, 3), np.uint8), y_train=np.array([0, 1, 0, 1]),
             x_test=np.zeros((2, 8, 8, 3), np.uint8), y_test=np.array([0, 1]))
    with pytest.raises(ConfigError, match=r"data\.standardize scales feature vectors, and .*images\.npz holds images"):
        prepare_data(Config.load(None, ["data.dataset=npz", f"data.root={tmp_path / 'images.npz'}",
                                        "data.standardize=true"]))


def test_a_clean_label_column_measures_real_noise_without_synthetic_noise(tmp_path, table):
    rows = table.read_text().splitlines()
    rng = np.random.default_rng(3)
    flipped = set(rng.choice(120, size=30, replace=False).tolist())
    lines = [rows[0] + ",given"]
    for i, row in enumerate(rows[1:]):
        true = row.rsplit(",", 1)[1]
        given = NAMES[(NAMES.index(true) + 1) % 3] if i in flipped else true
        lines.append(f"{row},{given}")
    path = tmp_path / "real.csv"
    path.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    train(Config.load(PRESETS / "elr.yaml", [f"data.root={path}", "data.label_column=given",
                                             "data.true_label_column=kind", "data.test_fraction=0.25",
                                             "model.hidden=[16]", "optim.epochs=1"]), run)
    noisy, true = np.load(run / "noisy_labels.npy"), np.load(run / "true_labels.npy")
    raw = read_features(path, label_column="given", true_label_column="kind", test_fraction=0.25)
    assert noisy.tolist() == raw.y_train.tolist() and true.tolist() == raw.y_train_true.tolist()
    assert 0 < (noisy != true).sum() <= 30
    noise_json = json.loads((run / "noise.json").read_text())
    assert noise_json["noise_rate"] == pytest.approx((noisy != true).mean())
    confusion = np.zeros((3, 3), dtype=int)
    np.add.at(confusion, (true, noisy), 1)  # every flip is c -> c + 1 (mod 3)
    assert noise_json["confusion"] == confusion.tolist() and confusion[[0, 1, 2], [2, 0, 1]].sum() == 0
    assert "mem_wrong_memorized" in json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def test_class_names_give_the_order_of_str_labels_and_classes_come_from_their_own_rows(tmp_path):
    np.savez(tmp_path / "f.npz", x_train=np.ones((4, 2)), y_train=np.array(["yes", "no", "yes", "no"]),
             x_test=np.ones((1, 2)), y_test=np.array(["yes"]), class_names=np.array(["yes", "no"]))
    raw = read_features(tmp_path / "f.npz")
    assert raw.class_names == ["yes", "no"] and raw.y_train.tolist() == [0, 1, 0, 1] and raw.y_test.tolist() == [0]
    table = write(tmp_path / "t.csv", "f,label,clean\n1,cat,cat\n2,dog,cat\n3,cat,cat\n4,dog,bird\n")
    with pytest.raises(ValueError, match=r"no training row is labelled 'bird' \(class 0\), which only the clean-label "
                                         r"column names"):
        read_features(table, true_label_column="clean", test_fraction=0.25)
    with pytest.raises(ValueError, match=r"test_fraction=0\.5 holds out every row of class 'a' \(1 row\), leaving none"):
        read_features(write(tmp_path / "u.csv", "f,label\n1,a\n2,b\n3,b\n4,b\n"), test_fraction=0.5)
    # "²" is a digit to str.isdigit but no class index: it is a name, as every other label must then be
    raw = read_features(write(tmp_path / "s.csv", "f,label\n1,²\n2,b\n3,²\n4,b\n"), test_fraction=0.5)
    assert raw.class_names == ["b", "²"]


def test_values_beyond_float32_and_reordered_columns_are_refused_by_name(tmp_path):
    from elr.prepare import prepare_data
    body = "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(20))
    path = write(tmp_path / "t.csv", "small,big,label\n" + body + "1,1e39,a\n")
    base = ["data.dataset=features", f"data.root={path}", "data.test_fraction=0.25", "model.name=mlp"]
    with pytest.raises(ValueError, match=r"t\.csv: feature column 'big' holds 1e\+39, beyond float32's range"):
        prepare_data(Config.load(None, base))
    assert torch.isfinite(prepare_data(Config.load(None, [*base, "data.standardize=true"])).data.train.inputs).all()
    stored = Standardization.fit(np.ones((3, 2)), ["big", "small"])
    with pytest.raises(ValueError, match=r"fitted with feature column 1 'big', but .*t\.csv now has 'small' there"):
        prepare_data(Config.load(None, [*base, "data.standardize=true"]), standardization=stored)


def test_the_example_table_is_sklearns_wine_and_the_presets_read_it():
    datasets = pytest.importorskip("sklearn.datasets")
    cfg = Config.load(PRESETS / "elr.yaml")
    d = cfg.data
    root = PRESETS.parents[1] / d.root  # the presets name it relative to the repository
    raw = read_features(root, label_column=d.label_column, test_fraction=d.test_fraction)
    wine = datasets.load_wine()
    assert (raw.x_train.shape, raw.x_test.shape) == ((125, 13), (53, 13))
    assert raw.class_names == ["cultivar_a", "cultivar_b", "cultivar_c"]
    x = np.concatenate([raw.x_train, raw.x_test])
    y = np.concatenate([raw.y_train, raw.y_test])
    order = np.lexsort(x.T[::-1])
    want = np.lexsort(wine.data.T[::-1])
    np.testing.assert_array_equal(x[order], wine.data[want])
    assert y[order].tolist() == wine.target[want].tolist()
