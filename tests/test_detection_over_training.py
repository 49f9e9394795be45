"""Detection quality per epoch (det_* keys, summary, plot) and the targets of the validation-selected epoch."""

import csv
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from elr import detect_label_issues, evidence, read_dataset, rundir
from elr.cli import main
from elr.detect import read_run_evidence
from elr.label_issues import TopKProbs, detection_quality, label_issue_table
from elr.runs import resume, train

from test_detect_runs import StopAfter, assert_last_detection_is_of
from test_image_files import image_folder, small_run
from test_label_issues import digits_config

EPOCHS, SELECTED = 8, 5  # digits_config's noisy validation split peaks at epoch 5 of 8 (constant lr)


def timeless(history):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in history]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("selected") / "run"
    train(digits_config(optim__epochs=EPOCHS), out)
    return out


def test_each_epoch_records_detection_quality_from_the_bank(run):
    history = rundir.read_metrics(run)
    assert all(r["det_examples"] == 1294 for r in history)  # the training split; the 144 validation rows are not in the bank
    aurocs = [r["det_auroc"] for r in history]
    assert 0.5 < aurocs[0] < aurocs[-1] <= 1.0  # the targets learn which labels are wrong
    assert_last_detection_is_of(run, rundir.read_targets(run)[0])  # targets.npy's target rows, as written


def test_summary_reports_detection_at_last_and_selected_epoch(run):
    summary = rundir.read_summary(run)
    history = rundir.read_metrics(run)
    assert summary["selected"]["epoch"] == SELECTED
    for part, epoch in (("last", EPOCHS), ("selected", SELECTED)):
        record = history[epoch - 1]
        assert {k: summary[part][k] for k in summary[part] if k.startswith("det_")} == \
            {k: record[k] for k in ("det_auroc", "det_average_precision", "det_precision", "det_recall", "det_flagged")}
    best = max(history, key=lambda r: (r["det_auroc"], -r["epoch"]))
    assert summary["best_det_auroc"] == {"epoch": best["epoch"], "auroc": best["det_auroc"]}


def test_selected_targets_equal_a_run_stopped_at_that_epoch(run, tmp_path):
    chosen = rundir.read_selected_targets(run)
    assert chosen.epoch == SELECTED
    # with a constant lr the first 5 epochs of the 8-epoch run are a 5-epoch run: its final rows
    # (targets and the held-out validation predictions) are the selected epoch's, bit for bit
    short = tmp_path / "short"
    train(digits_config(optim__epochs=SELECTED), short)
    targets, sources = rundir.read_targets(short)
    np.testing.assert_array_equal(chosen.probs, targets)
    np.testing.assert_array_equal(chosen.sources, sources)
    assert not np.array_equal(rundir.read_targets(run)[0], targets)  # the last epoch's rows differ

    assert_last_detection_is_of(run, chosen.probs, chosen.sources, epoch=SELECTED)  # its det_* figures
    evidence = read_run_evidence(run, targets="selected")
    assert (evidence.epoch, evidence.selected, evidence.finished) == (SELECTED, True, True)
    np.testing.assert_array_equal(evidence.given, rundir.read_noisy_labels(run))


def test_detect_cli_scores_the_selected_epoch(run, capsys):
    assert main(["detect", str(run), "--targets", "selected", "--top", "0", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert f"scored from the targets of epoch {SELECTED} of {EPOCHS}, the epoch the noisy validation split selected" in out
    assert "the selected epoch's model's held-out predictions for 144" in out
    chosen = rundir.read_selected_targets(run)
    expected = label_issue_table(rundir.read_noisy_labels(run), chosen.probs)
    with open(run / "label_issues.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows[:50]] == expected["index"][:50].tolist()
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected["score"], rtol=1e-5)  # 6 digits


def test_resumed_run_keeps_the_same_selected_targets(run, tmp_path):
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train(digits_config(optim__epochs=EPOCHS), out, progress=StopAfter(SELECTED + 1))
    assert rundir.read_selected_targets(out).epoch == SELECTED  # written after its epoch, before the next
    unfinished = read_run_evidence(out, targets="selected")  # an unfinished run: scored with its truth
    assert unfinished.finished is False
    np.testing.assert_array_equal(unfinished.true, read_dataset("digits").y_train)  # the reader's labels
    assert_last_detection_is_of(out, unfinished.probs, unfinished.sources, epoch=SELECTED)
    resume(out)
    a, b = rundir.read_selected_targets(out), rundir.read_selected_targets(run)
    assert a.epoch == b.epoch
    np.testing.assert_array_equal(a.probs, b.probs)
    assert timeless(rundir.read_metrics(out)) == timeless(rundir.read_metrics(run))


def test_a_kill_between_the_checkpoint_and_the_selected_targets_is_caught_up_on_resume(run, tmp_path, monkeypatch,
                                                                                     capsys):
    keep = evidence.SelectedTargetsKeeper._keep

    def killed_at_the_selected_epoch(self, method, epoch):
        if epoch == SELECTED:
            raise KeyboardInterrupt  # the checkpoint of epoch 5 is written, its rows are not
        keep(self, method, epoch)

    out = tmp_path / "killed"
    monkeypatch.setattr(evidence.SelectedTargetsKeeper, "_keep", killed_at_the_selected_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(digits_config(optim__epochs=EPOCHS), out)
    monkeypatch.setattr(evidence.SelectedTargetsKeeper, "_keep", keep)
    assert len(rundir.read_metrics(out)) == SELECTED and rundir.read_selected_targets(out).epoch < SELECTED
    assert main(["detect", str(out), "--targets", "selected"]) == 2  # the file is behind: said, not used
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"selects epoch {SELECTED}" in err[0] and "elr train --resume" in err[0]
    resume(out)
    a, b = rundir.read_selected_targets(out), rundir.read_selected_targets(run)
    assert a.epoch == b.epoch == SELECTED
    np.testing.assert_array_equal(a.probs, b.probs)
    # the catch-up changed nothing the training goes on from: the whole run equals the uninterrupted one
    assert timeless(rundir.read_metrics(out)) == timeless(rundir.read_metrics(run))
    np.testing.assert_array_equal(rundir.read_targets(out)[0], rundir.read_targets(run)[0])


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 truncated"])
def test_a_damaged_selected_targets_file_is_one_line(run, tmp_path, capsys, damage):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / rundir.TARGETS_SELECTED).write_bytes(damage)
    assert main(["detect", str(copy), "--targets", "selected", "--no-plot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "targets_selected.npz cannot be read" in err[0] and "altered" in err[0]


def test_untrained_examples_get_no_verdict_at_the_selected_epoch(tmp_path, capsys):
    # a class-balanced draw of one batch of 4 an epoch leaves most of the training images without a
    # target at the selected epoch: their rows are not predicted (no verdict), unlike at the end
    root = image_folder(tmp_path / "data", train=8)
    out = tmp_path / "draws"
    train(small_run("image_folder", root, "optim.epochs=2", "loss.name=elr", "noise.type=symmetric", "noise.rate=0.4",
                    "data.val_fraction=0.25", "data.batches_per_epoch=1"), out)
    chosen = rundir.read_selected_targets(out)
    untrained = chosen.sources == "untrained"
    trained = rundir.read_metrics(out)[chosen.epoch - 1]["det_examples"]
    n_train = len(chosen.sources) - len(rundir.read_noise(out)["val_indices"])
    assert untrained.sum() == n_train - trained and 0 < trained <= 4 * chosen.epoch < n_train  # 4 drawn an epoch
    np.testing.assert_allclose(chosen.probs[untrained], 1 / 3)  # uniform stand-ins
    assert main(["detect", str(out), "--targets", "selected", "--top", "0", "--no-plot"]) == 0
    printed = capsys.readouterr().out
    assert f"no verdict for {untrained.sum()} examples no class-balanced draw had picked by then" in printed
    flagged = int(re.search(r"flagged (\d+) \(([\d.]+)%\)", printed).group(1))
    assert f"flagged {flagged} ({100 * flagged / (~untrained).sum():.1f}%)" in printed  # of the rows with a verdict
    table = detect_label_issues(out, targets="selected")
    no_verdict = table["source"] == "untrained"
    assert no_verdict[-untrained.sum():].all() and not table["is_issue"][no_verdict].any()
    assert np.isnan(table["score"][no_verdict]).all()
    assert "untrained" not in set(rundir.read_targets(out)[1])  # the end of training predicts them


def test_without_a_validation_split_nothing_is_selected(tmp_path, capsys):
    out = tmp_path / "noval"
    train(digits_config(optim__epochs=2, data={"dataset": "digits", "val_fraction": 0.0}), out)
    assert not (out / rundir.TARGETS_SELECTED).exists()
    assert main(["detect", str(out), "--targets", "selected"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no validation set (data.val_fraction=0" in err[0] and "--targets last" in err[0]
    with pytest.raises(ValueError, match="targets must be one of last, selected"):
        read_run_evidence(out, targets="best")
    with pytest.raises(ValueError, match="targets must be one of last, selected"):
        detect_label_issues(out, targets="best")


def test_detection_panel_without_memorization(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "nomem"
    summary = train(digits_config(optim__epochs=2, monitor={"memorization": False}), out)
    history = rundir.read_metrics(out)
    assert "mem_wrong_memorized" not in history[-1] and history[-1]["det_auroc"] is not None
    assert str(out / rundir.MEMORIZATION_PLOT) in summary["plots"]
    from PIL import Image

    # the detection panel alone: one panel of 5.5 x 4 inches at 110 dpi (three would be 1815 px wide)
    assert Image.open(out / rundir.MEMORIZATION_PLOT).size == (605, 440)


def test_clean_labels_record_no_detection(tmp_path):
    out = tmp_path / "clean"
    train(digits_config(optim__epochs=1, noise={"type": "none", "rate": 0.0}), out)
    assert not any(k.startswith("det_") for k in rundir.read_metrics(out)[0])
    assert "best_det_auroc" not in rundir.read_summary(out)


# ---- the benchmark against cleanlab's K-fold pipeline ------------------------------------------------


def test_benchmark_digits_smoke(tmp_path, capsys):
    pytest.importorskip("cleanlab")
    pytest.importorskip("sklearn")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "label_issues.py"
    spec = importlib.util.spec_from_file_location("label_issues_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # the benchmark sets torch's thread count: keep this process's, which later tests compare runs against
    args = ["--threads", str(torch.get_num_threads()),
            "--dataset", "digits", "--noise", "symmetric", "--seeds", "0", "--epochs", "3", "--folds", "2",
            "--ce-epochs", "1", "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "rows.json")]
    bench.main(args)
    out = capsys.readouterr().out
    assert "| pipeline | trainings | AUROC |" in out
    for name in ("ELR (1 run)", "ELR (1 run), selected epoch", "cleanlab on ELR targets", "cleanlab (2-fold CE)"):
        assert f"| {name}" in out
    rows = json.loads((tmp_path / "rows.json").read_text())["digits, 40% symmetric, 3 epochs"][0]
    # the cross-validated probabilities hold every label once: cleanlab's ranking from the cache equals
    # an independent computation from the two folds' files
    cache = tmp_path / "cache" / "digits-symmetric40-seed0-3epochs-2folds"
    folds = [np.load(cache / f"ce_fold{k}.npz") for k in range(2)]
    held = np.concatenate([f["held"] for f in folds])
    assert np.array_equal(np.sort(held), np.arange(rows["ELR (1 run)"]["examples"]))
    elr = np.load(cache / "elr.npz")
    probs = np.zeros((len(held), 10))
    for f in folds:
        probs[f["held"]] = f["probs"]
    given, true = elr["given"], elr["true"]
    q = detection_quality(probs[np.arange(len(given)), given], np.zeros(len(given), bool), given != true)
    assert rows["cleanlab (2-fold CE)"]["auroc"] == pytest.approx(q["auroc"], abs=1e-6)
    assert rows["cleanlab (2-fold CE)"]["trainings"] == rows["cleanlab (2-fold CE, 1 epochs)"]["trainings"] == 2
    assert rows["cleanlab (2-fold CE, 1 epochs)"]["auroc"] != rows["cleanlab (2-fold CE)"]["auroc"]
    assert rows["ELR (1 run)"]["auroc"] == pytest.approx(rows["cleanlab on ELR targets"]["auroc"])  # one ranking
    bench.main(args)  # a second call trains nothing: the table comes from the cache
    again = capsys.readouterr().out
    assert "trained" not in again and again.count("| ELR (1 run) |") == 1


def test_elr_plus_with_topk_storage_records_the_rows_it_writes(tmp_path):
    # two top-k banks: their mean holds up to 2k classes, of which targets_topk.npz keeps k
    out = tmp_path / "plus_topk"
    train(digits_config(method="elr_plus", optim__epochs=3, loss__target_storage="topk", loss__target_k=2,
                        elr_plus={"networks": 2, "weight_averaging": True, "mixup": True, "ema_decay": 0.9,
                                  "ema_ramp_steps": 10, "lam_ramp_steps": 10}), out)
    probs = rundir.read_targets(out)[0]
    assert isinstance(probs, TopKProbs) and probs.values.shape[1] == 2
    assert_last_detection_is_of(out, probs.dense())


def test_monitor_detection_can_be_switched_off(tmp_path):
    out = tmp_path / "off"
    train(digits_config(optim__epochs=1, monitor={"memorization": True, "detection": False}), out)
    record = rundir.read_metrics(out)[0]
    assert "mem_wrong_memorized" in record and not any(k.startswith("det_") for k in record)
