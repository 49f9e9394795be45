"""Label issues: scores, flags and suggestions on hand-worked cases; `elr detect` on a seeded digits run."""

import csv
import re
import shutil

import numpy as np
import pytest
import torch

from elr import detect_label_issues, read_dataset, rundir
from elr.cli import main
from elr.config import Config
from elr.detect import missing_targets_reason
from elr.label_issues import (
    detection_quality,
    flag_label_issues,
    issues_per_class,
    label_issue_table,
    label_quality_scores,
    suggest_labels,
)
from elr.models import create_model
from elr.prepare import prepare_data
from elr.runs import train

# three examples, three classes: a confident right label, a wrong one, and a tie between two classes
PROBS = np.array([[0.7, 0.2, 0.1],
                  [0.1, 0.3, 0.6],
                  [0.4, 0.4, 0.2]])
LABELS = np.array([0, 1, 1])


def test_scores_by_hand():
    np.testing.assert_allclose(label_quality_scores(LABELS, PROBS), [0.7, 0.3, 0.4])
    # (own - largest other + 1) / 2: (0.7-0.2+1)/2, (0.3-0.6+1)/2, (0.4-0.4+1)/2
    np.testing.assert_allclose(label_quality_scores(LABELS, PROBS, method="normalized_margin"), [0.75, 0.35, 0.5])


def test_flags_and_suggestions_by_hand():
    assert flag_label_issues(LABELS, PROBS).tolist() == [False, True, False]  # a tie is not flagged
    assert flag_label_issues(LABELS, PROBS, rule="threshold", threshold=0.45).tolist() == [False, True, True]
    assert flag_label_issues(LABELS, PROBS, rule="threshold", threshold=0.5,
                             method="normalized_margin").tolist() == [False, True, False]
    suggested, confidence = suggest_labels(PROBS, LABELS)
    assert suggested.tolist() == [0, 2, 1]  # the tie keeps the given label
    np.testing.assert_allclose(confidence, [0.7, 0.6, 0.4])
    assert suggest_labels(PROBS)[0].tolist() == [0, 2, 0]  # without labels: the first largest


def test_table_is_ranked_most_suspect_first_and_stable():
    table = label_issue_table(LABELS, PROBS)
    assert table["index"].tolist() == [1, 2, 0]
    assert table["given_label"].tolist() == [1, 1, 0] and table["suggested_label"].tolist() == [2, 1, 0]
    np.testing.assert_allclose(table["score"], [0.3, 0.4, 0.7])
    assert table["is_issue"].tolist() == [True, False, False]
    same = label_issue_table([0, 0, 0], np.full((3, 2), 0.5))
    assert same["index"].tolist() == [0, 1, 2]  # equal scores keep index order


@pytest.mark.parametrize("labels, probs, message", [
    (LABELS, PROBS[:, 0], r"probs must be a 2-D array .* got shape \(3,\)"),
    (LABELS, PROBS[:, :1], "C >= 2 classes"),
    ([0, 1], PROBS, "labels must be a 1-D array of 3 class indices"),
    ([0, 1, 3], PROBS, r"labels must lie in \[0, 3\) .*labels\[2\] = 3"),
    ([0, -1, 1], PROBS, r"labels\[1\] = -1"),
    ([0.0, 1.0, 1.0], PROBS, "labels must be integer class indices"),
    (LABELS, PROBS * 2, "row 0 sums to 2"),
    (LABELS, np.where(np.eye(3, dtype=bool), np.nan, PROBS), "row 0 holds NaN"),
    (LABELS, [[1.2, -0.2, 0.0]] * 3, "row 0 has a negative entry"),
])
def test_bad_input_is_named(labels, probs, message):
    with pytest.raises(ValueError, match=message):
        label_quality_scores(labels, probs)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="method must be one of self_confidence, normalized_margin; got 'x'"):
        label_quality_scores(LABELS, PROBS, method="x")
    with pytest.raises(ValueError, match="rule must be one of argmax, threshold, cleanlab; got 'cl'"):
        flag_label_issues(LABELS, PROBS, rule="cl")
    with pytest.raises(ValueError, match="filter_by must be one of prune_by_noise_rate, prune_by_class, .*; got 'x'"):
        flag_label_issues(LABELS, PROBS, rule="cleanlab", filter_by="x")
    for bad in (0, 1.5, True, "0.3"):
        with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\]"):
            flag_label_issues(LABELS, PROBS, rule="threshold", threshold=bad)


def test_detection_quality_by_hand_and_against_sklearn():
    q = detection_quality([0.1, 0.2, 0.3, 0.4], [True, False, True, False], [True, False, True, False])
    # wrong 0.1 and 0.3 against clean 0.2 and 0.4: 3 of 4 pairs ordered; AP = 0.5 * 1 + 0.5 * 2/3
    assert q["auroc"] == pytest.approx(0.75) and q["average_precision"] == pytest.approx(5 / 6)
    assert (q["precision"], q["recall"], q["flagged"], q["wrong"]) == (1.0, 1.0, 2, 2)
    none = detection_quality([0.5, 0.5], [False, False], [False, False])
    assert none["auroc"] is None and none["precision"] is None and none["recall"] is None

    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(5, 80))
        scores = rng.integers(0, 6, n) / 5.0 if trial % 2 else rng.random(n)  # half the trials with ties
        wrong = rng.random(n) < 0.3
        wrong[:2] = [True, False]
        q = detection_quality(scores, scores < 0.5, wrong)
        assert q["auroc"] == pytest.approx(metrics.roc_auc_score(wrong, -scores), abs=1e-12)
        assert q["average_precision"] == pytest.approx(metrics.average_precision_score(wrong, -scores), abs=1e-12)


def test_issues_per_class():
    counts = issues_per_class([0, 0, 1, 2, 2, 2], [True, False, False, True, True, False], 4)
    assert counts["examples"].tolist() == [2, 1, 3, 0] and counts["flagged"].tolist() == [1, 0, 2, 0]


# ---- runs ---------------------------------------------------------------------------------------------


def digits_config(**changes):
    base = {
        "seed": 0,
        "data": {"dataset": "digits", "val_fraction": 0.1},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": "mlp", "hidden": [256]},
        "loss": {"name": "elr", "lam": 3.0, "beta": 0.7},
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 64, "epochs": 30,
                  "schedule": "constant"},
        "device": "cpu",
    }
    for key, value in changes.items():  # section__key=value changes one key; section=dict replaces it
        if "__" not in key:
            base[key] = value
            continue
        section, name = key.split("__")
        base[section] = {**base[section], name: value}
    return Config.from_dict(base).validate()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """ELR on digits with 40% symmetric noise and a 10% noisy validation split (seeded)."""
    out = tmp_path_factory.mktemp("detect") / "run"
    train(digits_config(), out)
    return out


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_targets_file_holds_the_checkpoint_targets_and_held_out_predictions(digits_run):
    probs, sources = rundir.read_targets(digits_run)
    noisy = rundir.read_noisy_labels(digits_run)
    val = np.array(rundir.read_noise(digits_run)["val_indices"])
    assert probs.dtype == np.float32 and probs.shape == (len(noisy), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert np.flatnonzero(sources == "held_out_model").tolist() == val.tolist()
    assert (sources[np.setdiff1d(np.arange(len(noisy)), val)] == "targets").all()

    state = rundir.load_checkpoint(digits_run)
    targets = state["method"]["loss"]["targets"].numpy().astype(np.float64)
    trained = np.setdiff1d(np.arange(len(noisy)), val)
    np.testing.assert_allclose(probs[trained], targets / targets.sum(axis=1, keepdims=True), rtol=1e-6)

    config = rundir.read_config(digits_run)  # the held-out rows: the final model on the validation inputs
    prepared = prepare_data(config)
    x_all = torch.as_tensor(read_dataset("digits").x_train).float()  # row k of noisy_labels.npy is input k
    assert torch.equal(prepared.data.train.inputs.float(), x_all[trained])
    assert torch.equal(prepared.data.val.inputs.float(), x_all[val])
    model = create_model("mlp", 10, in_features=64, hidden=[256])
    model.load_state_dict(state["method"]["model"])
    model.eval()
    x, _, _ = next(prepared.data.val.batches(len(val), shuffle=False, train=False))
    with torch.no_grad():
        p = torch.softmax(model(x).double(), dim=1).clamp(1e-4, 1 - 1e-4)
    np.testing.assert_allclose(probs[val], (p / p.sum(dim=1, keepdim=True)).numpy(), rtol=1e-5, atol=1e-7)
    assert np.array_equal(rundir.read_true_labels(digits_run), prepare_data(config).true_labels)


def test_detect_finds_the_flipped_labels(digits_run, capsys):
    assert main(["detect", str(digits_run), "--top", "5"]) == 0
    out = capsys.readouterr().out
    rows = read_csv(digits_run / "label_issues.csv")
    noisy = rundir.read_noisy_labels(digits_run)
    true = rundir.read_true_labels(digits_run)
    probs, _ = rundir.read_targets(digits_run)
    val = set(rundir.read_noise(digits_run)["val_indices"])

    index = np.array([int(r["index"]) for r in rows])
    assert sorted(index.tolist()) == list(range(len(noisy)))  # one row per training example
    assert [int(r["given_label"]) for r in rows] == noisy[index].tolist()
    assert [int(r["true_label"]) for r in rows] == true[index].tolist()
    assert [r["source"] for r in rows] == ["held_out_model" if i in val else "targets" for i in index]
    scores = np.array([float(r["score"]) for r in rows])
    assert (np.diff(scores) >= 0).all()  # most suspect first
    np.testing.assert_allclose(scores, probs[index, noisy[index]], rtol=1e-5)
    flagged = np.array([r["is_issue"] == "True" for r in rows])
    assert flagged.tolist() == (probs[index].max(axis=1) > probs[index, noisy[index]]).tolist()
    assert [r["given_class"] for r in rows] == [str(v) for v in noisy[index]]  # digits' class names

    # measured on this seed: AUROC 0.998, precision 0.972, recall 0.989 (40% noise, 30 epochs)
    wrong = noisy[index] != true[index]
    q = detection_quality(scores, flagged, wrong)
    assert q["auroc"] > 0.98 and q["precision"] > 0.9 and q["recall"] > 0.85
    assert f"AUROC {q['auroc']:.3f}" in out and f"recall {q['recall']:.3f}" in out
    suspects = out.split("lower is more suspect; flag: argmax rule):\n", 1)[1].splitlines()[1:6]
    for line, row in zip(suspects, rows[:5]):  # rank, index, given, suggested, score, flag, source
        cells = line.split()
        assert cells[1] == row["index"] and cells[5] == ("yes" if row["is_issue"] == "True" else "no")
        assert cells[6] == row["source"]
    assert "flagged per given class" in out


def test_threshold_rule_and_margin_score(digits_run, capsys):
    table = detect_label_issues(digits_run, score="normalized_margin", rule="threshold", threshold=0.2)
    probs, _ = rundir.read_targets(digits_run)
    noisy = rundir.read_noisy_labels(digits_run)
    expected = label_quality_scores(noisy, probs, method="normalized_margin")
    np.testing.assert_allclose(table["score"], expected[table["index"]])
    assert table["is_issue"].tolist() == (expected[table["index"]] < 0.2).tolist()
    assert main(["detect", str(digits_run), "--threshold", "0.3", "--top", "0"]) == 0
    assert "--rule threshold (self_confidence < 0.3)" in capsys.readouterr().out
    for args, message in ([["--rule", "argmax", "--threshold", "0.3"], "--threshold applies to --rule threshold"],
                          [["--threshold", "1.5"], r"--threshold must lie in \(0, 1\], got 1.5"],
                          [["--top", "-1"], "--top must be a count >= 0"]):
        assert main(["detect", str(digits_run), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), (err, message)


def test_runs_without_targets_are_refused_in_one_line(tmp_path, capsys):
    ce = tmp_path / "ce"
    train(digits_config(loss={"name": "ce"}, optim__epochs=1), ce)
    capsys.readouterr()
    assert main(["detect", str(ce)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "loss.name=ce, which keeps no per-example targets" in err
    assert "elr train --config <this run>/config.yaml loss.name=elr" in err
    assert not (ce / "targets.npy").exists() and not (ce / "label_issues.csv").exists()

    plus = Config.from_dict({**digits_config().to_dict(), "method": "elr_plus"})
    assert missing_targets_reason(plus) is None  # ELR+ and top-k runs keep targets (tests/test_detect_runs.py)
    assert missing_targets_reason(digits_config(loss__target_storage="topk", loss__target_k=3)) is None
    assert main(["detect", str(tmp_path / "absent")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    unstarted = tmp_path / "unstarted"  # killed before its first checkpoint
    rundir.write_config(unstarted, digits_config())
    with pytest.raises(ValueError, match="never reached its first checkpoint: there is nothing to detect; train it "
                                         "with `elr train --config"):
        detect_label_issues(unstarted)


def test_a_finished_run_without_its_targets_file_is_scored_from_its_checkpoint(digits_run, tmp_path, capsys):
    run = tmp_path / "run"  # a run finished by an elr that did not write targets yet
    shutil.copytree(digits_run, run)
    saved = detect_label_issues(run)
    for name in ("targets.npy", "target_sources.npy", "true_labels.npy"):
        (run / name).unlink()
    rebuilt = detect_label_issues(run)
    assert set(rebuilt) == set(saved)
    for key in saved:  # the same rows, rebuilt from checkpoint.pt (and rounded to float32 as the file is)
        assert np.array_equal(rebuilt[key], saved[key]), key
    assert main(["detect", str(run), "--top", "0"]) == 0
    assert (f"scored from the checkpoint of its last epoch, 30 of 30 (the run has no targets file; "
            f"`elr train --resume {run}` writes it without training again)") in capsys.readouterr().out
    (run / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match=r"has no targets file \(targets.npy or targets_topk.npz\) and its "
                                         r"checkpoint.pt was removed"):
        detect_label_issues(run)
    shutil.copy(digits_run / "targets.npy", run / "targets.npy")
    with pytest.raises(ValueError, match="targets.npy is there but target_sources.npy is missing"):
        detect_label_issues(run)


def test_no_true_labels_without_noise(tmp_path):
    run = tmp_path / "run"
    train(digits_config(noise__type="none", noise__rate=0.0, data__val_fraction=0.0, optim__epochs=1), run)
    assert rundir.read_true_labels(run) is None  # the labels as given: nothing says they are clean
    table = detect_label_issues(run)
    assert "true_label" not in table and set(table["source"]) == {"targets"}
