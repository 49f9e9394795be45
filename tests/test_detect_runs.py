"""`elr detect` on every run with targets: ELR+ (both banks), top-k storage, unfinished runs; the picture; cleanlab."""

import numpy as np
import pytest
import torch

from elr import detect_label_issues, read_dataset, rundir
from elr.cli import main
from elr.detect import read_run_evidence
from elr.label_issues import TopKProbs, detection_quality, label_issue_table, label_quality_scores
from elr.runs import resume, restore_run, train

from test_label_issues import digits_config


class StopAfter:
    """A progress hook that interrupts training after ``epochs`` epochs (a Ctrl-C)."""

    def __init__(self, epochs):
        self.epochs = epochs

    def epoch_start(self, epoch, epochs, batches):
        pass

    def batch_end(self):
        pass

    def epoch_end(self, record):
        if record["epoch"] >= self.epochs:
            raise KeyboardInterrupt


def normalized(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / rows.sum(axis=1, keepdims=True)


def held_out_rows(run):
    """The final model's clamped, renormalised predictions of the validation split (independently of elr.evidence)."""
    config, prepared, method, _ = restore_run(run)
    x, _, index = next(prepared.data.val.batches(len(prepared.data.val), shuffle=False, train=False))
    with torch.no_grad():
        p = torch.softmax(method.predict(x).double(), dim=1).clamp(1e-4, 1 - 1e-4)
    return np.asarray(prepared.val_indices)[index.numpy()], normalized(p.numpy())


def assert_last_detection_is_of(run, dense, sources=None, epoch=None):
    """The det_* figures of ``epoch`` (default: the last) are those of the dense rows ``dense`` on the
    run's target rows (``sources``: default, targets.npy's)."""
    sources = rundir.read_targets(run)[1] if sources is None else sources
    bank = sources == "targets"
    given, true = rundir.read_noisy_labels(run)[bank], rundir.read_true_labels(run)[bank]
    rows = np.asarray(dense)[bank]
    score = rows[np.arange(len(given)), given]
    q = detection_quality(score, score < rows.max(axis=1), given != true)
    last = rundir.read_metrics(run)[-1 if epoch is None else epoch - 1]
    for key in ("auroc", "average_precision", "precision", "recall"):
        assert last[f"det_{key}"] == pytest.approx(q[key], abs=1e-4), key  # float32 rounding of the saved rows
    assert (last["det_flagged"], last["det_examples"]) == (q["flagged"], q["examples"])


# ---- ELR+ ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plus_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plus") / "run"
    config = digits_config(method="elr_plus", optim__epochs=4,
                           elr_plus={"networks": 2, "weight_averaging": True, "mixup": True, "ema_decay": 0.9,
                                     "ema_ramp_steps": 10, "lam_ramp_steps": 10})
    train(config, out)
    return out


def test_elr_plus_saves_both_banks_and_their_mean(plus_run):
    state = rundir.load_checkpoint(plus_run)["method"]
    banks = [loss["targets"].numpy() for loss in state["losses"]]
    val = np.array(rundir.read_noise(plus_run)["val_indices"])
    trained = np.setdiff1d(np.arange(len(rundir.read_noisy_labels(plus_run))), val)
    net1, net2 = (np.load(plus_run / name) for name in ("targets_net1.npy", "targets_net2.npy"))
    combined, sources = rundir.read_targets(plus_run)
    assert [a.dtype for a in (net1, net2, combined)] == [np.float32] * 3
    for rows, bank in zip((net1, net2), banks):  # each network's own targets, normalised
        np.testing.assert_allclose(rows[trained], normalized(bank), rtol=1e-6)
    assert not np.allclose(net1[trained], net2[trained], atol=1e-3)  # two views, not one bank twice
    np.testing.assert_allclose(combined[trained], (normalized(banks[0]) + normalized(banks[1])) / 2, rtol=1e-6)
    where, p = held_out_rows(plus_run)  # held-out rows: the two networks' mean logits, the same in all files
    for rows in (net1, net2, combined):
        np.testing.assert_allclose(rows[where], p, rtol=1e-5, atol=1e-7)
    assert np.flatnonzero(sources == "held_out_model").tolist() == sorted(val.tolist())
    assert [len(b) for b in rundir.read_network_targets(plus_run)] == [len(combined)] * 2
    assert_last_detection_is_of(plus_run, combined)  # per epoch: the mean of the two banks, as targets.npy

    table = detect_label_issues(plus_run)
    noisy = rundir.read_noisy_labels(plus_run)
    np.testing.assert_allclose(table["score"], combined[table["index"], noisy[table["index"]]], rtol=1e-6)


def test_elr_plus_with_one_network_has_one_bank(tmp_path):
    out = tmp_path / "run"
    train(digits_config(method="elr_plus", optim__epochs=1,
                        elr_plus={"networks": 1, "weight_averaging": False, "mixup": False}), out)
    assert not (out / "targets_net1.npy").exists() and rundir.read_network_targets(out) == []
    bank = rundir.load_checkpoint(out)["method"]["losses"][0]["targets"].numpy()
    val = np.array(rundir.read_noise(out)["val_indices"])
    trained = np.setdiff1d(np.arange(len(rundir.read_noisy_labels(out))), val)
    np.testing.assert_allclose(rundir.read_targets(out)[0][trained], normalized(bank), rtol=1e-6)


# ---- top-k storage -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def topk_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("topk") / "run"
    train(digits_config(loss__target_storage="topk", loss__target_k=3, optim__epochs=5), out)
    return out


def test_topk_runs_keep_the_bank_entries_and_score_as_their_dense_rows(topk_run, monkeypatch):
    assert not (topk_run / "targets.npy").exists()
    probs, sources = rundir.read_targets(topk_run)
    assert isinstance(probs, TopKProbs) and probs.values.shape == (1438, 3) and probs.num_classes == 10
    assert probs.values.dtype == np.float32 and probs.indices.dtype == np.int32
    state = rundir.load_checkpoint(topk_run)["method"]["loss"]
    values, indices = state["target_values"].numpy(), state["target_indices"].numpy()
    val = np.array(rundir.read_noise(topk_run)["val_indices"])
    trained = np.setdiff1d(np.arange(1438), val)
    bank = np.zeros((len(values), 10))  # the bank's stored entries, densified and normalised
    np.put_along_axis(bank, indices.astype(np.int64), values, axis=1)
    dense = probs.dense()
    np.testing.assert_allclose(dense[trained], normalized(bank), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, rtol=1e-6)
    where, p = held_out_rows(topk_run)  # held-out rows: the top 3 of the prediction, renormalised
    top = np.argsort(-p, axis=1, kind="stable")[:, :3]
    expected = np.zeros_like(p)
    np.put_along_axis(expected, top, np.take_along_axis(p, top, axis=1), axis=1)
    np.testing.assert_allclose(dense[where], normalized(expected), rtol=1e-6, atol=1e-7)
    assert set(sources[where]) == {"held_out_model"}
    assert_last_detection_is_of(topk_run, dense)

    noisy = rundir.read_noisy_labels(topk_run)
    import elr.label_issues as li

    monkeypatch.setattr(li, "BLOCK_ENTRIES", 70)  # 7 rows a block: 206 blocks, never all rows at once
    widest = []
    rows = TopKProbs.rows
    monkeypatch.setattr(TopKProbs, "rows", lambda self, a, b: widest.append(min(b, len(self)) - a) or rows(self, a, b))
    for score in ("self_confidence", "normalized_margin"):
        widest.clear()
        table = detect_label_issues(topk_run, score=score)
        assert max(widest) == 7 and sum(widest) == 1438
        reference = label_issue_table(noisy, dense, method=score)
        for key, column in reference.items():
            assert np.array_equal(table[key], column), (score, key)
    np.testing.assert_array_equal(label_quality_scores(noisy, probs), dense[np.arange(1438), noisy])


def test_topk_probs_checks_its_input():
    with pytest.raises(ValueError, match=r"values and indices must be 2-D arrays of one shape"):
        TopKProbs(np.ones((2, 2)), np.zeros((2, 3), dtype=int), 4)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
        TopKProbs(np.full((1, 2), 0.5), np.array([[0, 4]]), 4)
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= max\(2, k=2\)"):
        TopKProbs(np.full((1, 2), 0.5), np.array([[0, 1]]), 1)
    with pytest.raises(ValueError, match="indices must be distinct within a row: row 1 names a class twice"):
        TopKProbs(np.full((2, 2), 0.5), np.array([[0, 1], [2, 2]]), 4)
    with pytest.raises(ValueError, match="row 1 sums to 0.9"):  # a row that is not a distribution, by number
        label_quality_scores([0, 0], TopKProbs(np.array([[0.5, 0.5], [0.5, 0.4]]), np.array([[0, 1], [0, 1]]), 3))


# ---- unfinished runs -------------------------------------------------------------------------------


def test_an_unfinished_run_is_scored_from_its_last_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(digits_config(optim__epochs=3), run, progress=StopAfter(2))
    assert rundir.status(run).state == rundir.RESUMABLE and not (run / "targets.npy").exists()
    evidence = read_run_evidence(run)
    assert evidence.from_checkpoint and (evidence.epoch, evidence.epochs) == (2, 3)
    state = rundir.load_checkpoint(run)
    assert int(state["epoch"]) == 2
    val = np.array(rundir.read_noise(run)["val_indices"])
    trained = np.setdiff1d(np.arange(1438), val)
    np.testing.assert_allclose(evidence.probs[trained], normalized(state["method"]["loss"]["targets"].numpy()),
                               rtol=1e-6)
    where, p = held_out_rows(run)
    np.testing.assert_allclose(evidence.probs[where], p, rtol=1e-5, atol=1e-7)
    # the truth of an unfinished run (no true_labels.npy read) is the reader's labels, example by example
    np.testing.assert_array_equal(evidence.true, read_dataset("digits").y_train)
    np.testing.assert_array_equal(evidence.given, rundir.read_noisy_labels(run))
    assert int((evidence.true != evidence.given).sum()) == rundir.read_noise(run)["num_noisy"]

    assert main(["detect", str(run), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "scored from the checkpoint of epoch 2 of 3 (the run is unfinished" in out
    assert "AUROC" in out and not (run / "targets.npy").exists()  # nothing of the run's own is written
    resume(run)
    assert main(["detect", str(run), "--top", "0"]) == 0
    assert "scored from the targets of its last epoch, 3 of 3" in capsys.readouterr().out


# ---- cleanlab ----------------------------------------------------------------------------------------


def test_the_cleanlab_rule_is_cleanlab_on_the_saved_targets(plus_run, topk_run, capsys):
    filters = pytest.importorskip("cleanlab.filter", reason="cleanlab is not installed (pip install 'elr[cleanlab]')")
    noisy = rundir.read_noisy_labels(plus_run)
    targets = rundir.read_targets(plus_run)[0]
    for filter_by in ("prune_by_noise_rate", "confident_learning", "both"):
        expected = filters.find_label_issues(noisy, targets, filter_by=filter_by)
        table = detect_label_issues(plus_run, rule="cleanlab", filter_by=filter_by)
        assert table["is_issue"].tolist() == expected[table["index"]].tolist()
        assert 0 < expected.sum() < len(noisy)
    assert main(["detect", str(plus_run), "--rule", "cleanlab:confident_learning", "--top", "0"]) == 0
    out = capsys.readouterr().out
    flagged = int(filters.find_label_issues(noisy, targets, filter_by="confident_learning").sum())
    assert f"flagged {flagged} (" in out and "--rule cleanlab:confident_learning" in out

    dense = rundir.read_targets(topk_run)[0].dense()  # top-k rows go to cleanlab dense
    table = detect_label_issues(topk_run, rule="cleanlab")
    expected = filters.find_label_issues(rundir.read_noisy_labels(topk_run), dense)
    assert table["is_issue"].tolist() == expected[table["index"]].tolist()


def test_cleanlab_rule_errors_are_one_line(plus_run, capsys, monkeypatch):
    for args, message in ((["--rule", "cleanlab:nope"], "--rule cleanlab:FILTER takes one of cleanlab's filters"),
                          (["--rule", "argmax:both"], "--rule must be argmax, threshold, cleanlab or cleanlab:FILTER"),
                          (["--rule", "cleanlab", "--threshold", "0.2"], "--threshold applies to --rule threshold")):
        assert main(["detect", str(plus_run), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
    import builtins

    real_import = builtins.__import__

    def no_cleanlab(name, *args, **kwargs):
        if name.startswith("cleanlab"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cleanlab)
    assert main(["detect", str(plus_run), "--rule", "cleanlab"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("elr detect: error: the cleanlab rule needs cleanlab, which is not installed: "
                   "pip install 'elr[cleanlab]' (or pip install cleanlab)")


# ---- the picture -------------------------------------------------------------------------------------


COLOURS = np.array([(220, 30, 30), (30, 200, 40), (40, 50, 210)])


def panels(png):
    """The image panels of a PNG, in reading order: the mean RGB (0-255) of each large strongly coloured area."""
    ndimage = pytest.importorskip("scipy.ndimage")
    from matplotlib.image import imread

    rgb = imread(png)[..., :3]
    coloured = rgb.max(axis=2) - rgb.min(axis=2) > 0.4
    labels, count = ndimage.label(coloured)
    found = []
    for k, box in enumerate(ndimage.find_objects(labels), 1):
        area = labels[box] == k
        if area.sum() > 300:  # caption glyphs are a few dozen pixels, a panel thousands
            found.append((box[0].start // 20, box[1].start, 255 * rgb[box][area].mean(axis=0)))
    return [colour for _, _, colour in sorted(found, key=lambda f: f[:2])]


def coloured_npz(path, n_train=60, n_test=30, seed=0):
    """8x8 RGB images, each a solid colour of its (true) class with a little noise: three classes."""
    rng = np.random.default_rng(seed)

    def images(n):
        y = np.arange(n) % 3
        x = np.clip(COLOURS[y][:, None, None, :] + rng.integers(-20, 21, (n, 8, 8, 3)), 0, 255).astype(np.uint8)
        return x, y

    (x_train, y_train), (x_test, y_test) = images(n_train), images(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=np.array(["red", "green", "blue"]))
    return path


def shown_classes(png):
    """The class whose colour each panel shows."""
    return [int(np.argmin(((COLOURS - colour) ** 2).sum(axis=1))) for colour in panels(png)]


def test_the_picture_has_one_panel_per_suspect_showing_its_image(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    data = coloured_npz(tmp_path / "coloured.npz", n_train=90)
    run = tmp_path / "run"
    train(digits_config(data={"dataset": "npz", "root": str(data), "train_size": 60, "val_fraction": 0.1,
                              "augment": False},
                        noise__rate=0.3, model={"name": "mlp", "hidden": [32]}, optim__epochs=3), run)
    capsys.readouterr()
    for top in (7, 11):
        assert main(["detect", str(run), "--top", str(top)]) == 0
        assert f"wrote {run / 'label_issues.png'} (the top {top} suspects)" in capsys.readouterr().out
        table = detect_label_issues(run)
        # each panel is the image of its row: the 60-image subset of 90, found by index (true label = colour)
        assert shown_classes(run / "label_issues.png") == table["true_label"][:top].tolist()
    assert len(set(table["true_label"][:11].tolist())) > 1  # the check can tell images apart

    assert main(["detect", str(run), "--top", "5", "--no-plot"]) == 0  # and removes the picture it would not show
    assert "label_issues.png" not in capsys.readouterr().out and not (run / "label_issues.png").exists()

    import elr.plots

    def no_matplotlib():
        raise ImportError("plots need matplotlib: pip install 'elr[plot]'")

    with monkeypatch.context() as patch:
        patch.setattr(elr.plots, "_pyplot", no_matplotlib)
        assert main(["detect", str(run), "--top", "5"]) == 0  # the verdicts are written all the same
    captured = capsys.readouterr()
    assert ("no label_issues.png: plots need matplotlib: pip install 'elr[plot]' (--no-plot skips the picture)"
            in captured.out.splitlines())
    assert (run / "label_issues.csv").exists() and not (run / "label_issues.png").exists()

    data.rename(tmp_path / "moved.npz")  # the data moved since: the verdicts stand, the picture says why not
    assert main(["detect", str(run), "--top", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("no label_issues.png: ") and "coloured.npz" in line for line in lines)


def test_no_picture_for_feature_vectors(tmp_path, capsys):
    path = tmp_path / "features.npz"
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = (rng.normal(size=(90, 5)) + y[:, None]).astype(np.float32)
    np.savez(path, x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    run = tmp_path / "run"
    train(digits_config(data={"dataset": "npz", "root": str(path), "val_fraction": 0.0},
                        model={"name": "mlp", "hidden": [16]}, optim__epochs=2), run)
    assert main(["detect", str(run), "--top", "5"]) == 0
    assert not (run / "label_issues.png").exists() and "label_issues.png" not in capsys.readouterr().out


def test_an_unfinished_elr_plus_run_is_scored_from_the_mean_of_its_checkpoint_banks(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(digits_config(method="elr_plus", optim__epochs=3, elr_plus={"networks": 2, "ema_ramp_steps": 10}),
              run, progress=StopAfter(1))
    evidence = read_run_evidence(run)
    assert evidence.from_checkpoint and evidence.epoch == 1
    banks = [loss["targets"].numpy() for loss in rundir.load_checkpoint(run)["method"]["losses"]]
    trained = np.setdiff1d(np.arange(1438), np.array(rundir.read_noise(run)["val_indices"]))
    np.testing.assert_allclose(evidence.probs[trained], (normalized(banks[0]) + normalized(banks[1])) / 2, rtol=1e-6)
