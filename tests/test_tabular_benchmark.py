"""benchmarks/tabular.py: its noise columns, label-issue scores, the rules that pick a setting, and one real cell."""

import importlib.util
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # the benchmark imports its sibling estimator_defaults.py
    try:
        spec = importlib.util.spec_from_file_location("tabular_benchmark", BENCHMARKS / "tabular.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_noise_columns(bench):
    y = np.repeat(np.arange(10), 1000)
    assert np.array_equal(bench.labels(y, "clean", 0), y)
    for rate in (20, 40):
        noisy = bench.labels(y, f"sym{rate}", 0)
        # a uniform redraw over 10 classes keeps the label 1 time in 10: rate * 0.9 flip
        assert abs((noisy != y).mean() - rate / 100 * 0.9) < 0.015
        assert np.array_equal(noisy, bench.labels(y, f"sym{rate}", 0))  # seeded
        assert not np.array_equal(noisy, bench.labels(y, f"sym{rate}", 1))
    pair = bench.labels(y, "pair40", 3)
    flipped = pair != y
    assert abs(flipped.mean() - 0.4) < 0.02
    assert np.array_equal(pair[flipped], (y[flipped] + 1) % 10)  # c -> c+1 only
    binary = np.repeat([0, 1], 1000)
    one_sided = bench.labels(binary, "pair40", 0)
    assert np.array_equal(one_sided[:1000], binary[:1000])  # class 0 never flips
    assert abs((one_sided[1000:] == 0).mean() - 0.4) < 0.04


def test_quality_hand_worked(bench):
    scores = np.array([0.1, 0.2, 0.9, 0.8, 0.15])
    flags = np.array([True, False, False, True, True])
    wrong = np.array([True, True, False, False, False])
    q = bench.quality(scores, flags, wrong)
    # wrong scores {0.1, 0.2} against correct {0.9, 0.8, 0.15}: 5 of 6 pairs ordered right (0.2 > 0.15)
    assert q["auroc"] == pytest.approx(5 / 6)
    assert q["precision"] == pytest.approx(1 / 3) and q["recall"] == pytest.approx(1 / 2)
    assert q["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert bench.quality(scores, np.zeros(5, bool), wrong)["f1"] == 0.0  # nothing flagged finds nothing
    assert bench.quality(scores, flags, np.zeros(5, bool))["f1"] is None  # nothing to find
    assert bench.quality(scores, np.array([False, False, True, False, False]), wrong)["f1"] == 0.0


def _grid_rows(bench, dataset, noise, seed, val, test):
    return [{"dataset": dataset, "noise": noise, "seed": seed, "lam": lam, "beta": beta, "lr": lr,
             "val_last": val(lam, beta, lr), "test_last": test(lam, beta, lr)}
            for lam, beta, lr in bench.grid_settings()]


def test_choice_rules_pick_by_noisy_validation_only(bench):
    settings = bench.grid_settings()
    assert len(settings) == 3 * 3 * 3 + 3  # lam = 0 once per lr (beta changes nothing there)
    assert len(set(settings)) == len(settings)
    # run 1: noisy validation prefers lam 7 / beta 0.9 / lr 0.03, the test set prefers lam 1 / beta 0.5 / lr 0.003
    rows = _grid_rows(bench, "digits", "sym40", 0,
                      val=lambda lam, beta, lr: lam / 10 + beta / 100 + lr,
                      test=lambda lam, beta, lr: 0.9 - lam / 10 + (lam == 1) * (beta == 0.5) * (lr == 0.003))
    # run 2 (wine): validation prefers cross entropy at lr 0.01
    rows += _grid_rows(bench, "wine", "pair40", 0,
                       val=lambda lam, beta, lr: 0.5 + 0.4 * (lam == 0) * (lr == 0.01),
                       test=lambda lam, beta, lr: 0.3 + lr + lam / 100)
    rows += _grid_rows(bench, "wine", "pair40", 1, val=lambda *a: 0.5, test=lambda *a: 0.5)[:-1]  # incomplete: ignored
    result = bench.choices(rows)
    default = result["fixed default (lam 3, beta 0.7, lr 0.01)"]
    assert default["runs"] == 2
    assert default["per_dataset"] == pytest.approx([0.9 - 0.3, None, 0.3 + 0.01 + 0.03])
    whole = result["best noisy val, whole grid (ELR and CE)"]
    assert whole["per_dataset"] == pytest.approx([0.9 - 0.7, None, 0.3 + 0.01])
    assert whole["worst"] == pytest.approx(0.2)
    assert result["best noisy val over lr, lam 3 beta 0.7"]["per_dataset"][0] == pytest.approx(0.6)
    # ELR only on wine: every lam > 0 cell validates at 0.5; the first in grid order (lam 1, beta 0.5, lr 0.003) wins
    assert result["best noisy val, ELR only (lam > 0)"]["per_dataset"][2] == pytest.approx(0.3 + 0.003 + 0.01)
    oracle = result["oracle: best test per run"]
    assert oracle["per_dataset"][0] == pytest.approx(1.8)
    assert oracle["mean"] == pytest.approx((1.8 + 0.3 + 0.03 + 0.07) / 2)
    (lam, beta, lr), val, test = bench.best_fixed(rows)
    assert (lam, beta, lr) == (7.0, 0.9, 0.03)  # mean validation over the three runs' cells


def test_one_table_cell_runs_every_model(bench):
    rows = bench.table_cell("wine", "pair40", 0)
    names = [r["model"] for r in rows]
    expected = list(bench.MODELS) if importlib.util.find_spec("cleanlab") else list(bench.MODELS[:5])
    assert names == expected
    for r in rows:
        assert 0.0 <= r["test_acc"] <= 1.0 and r["seconds"] > 0
        if r["model"] == "ELRClassifier()" or r["model"].startswith("CleanLearning"):
            assert 0.5 < r["auroc"] <= 1.0 and r["f1"] is not None
    # grid_cell asserts that the epoch it reports as selected scores what the kept estimator scores
    cell = bench.grid_cell("wine", "sym40", 0, 3.0, 0.7, 0.01)
    assert 1 <= cell["selected_epoch"] <= 200 and 0.0 <= cell["test_selected"] <= 1.0
    assert list(itertools.islice(cell, 6)) == ["dataset", "noise", "seed", "lam", "beta", "lr"]


def test_cleanlearning_best_base_is_the_best_mean_of_a_column(bench):
    rows = [{"dataset": "wine", "noise": "sym40", "model": model, "seed": seed, "test_acc": acc}
            for model, accs in {"CleanLearning(LogisticRegression)": (0.9, 0.5),   # mean 0.7, best single fit
                                "CleanLearning(MLPClassifier)": (0.75, 0.75),       # mean 0.75: the best base
                                "ELRClassifier()": (0.8, 0.8)}.items()
            for seed, acc in enumerate(accs)]
    rows.append({"dataset": "digits", "noise": "sym40", "model": "CleanLearning(HistGradientBoosting)",
                 "seed": 0, "test_acc": 0.6})
    acc = bench.accuracies(rows)
    assert acc[("wine", "sym40", bench.CL_BEST)] == [0.75, 0.75]
    assert acc[("digits", "sym40", bench.CL_BEST)] == [0.6]
    assert acc[("wine", "sym40", "ELRClassifier()")] == [0.8, 0.8]
    assert ("wine", "clean", bench.CL_BEST) not in acc


def test_run_resumes_shards_and_reruns_incomplete_cells(bench, tmp_path, monkeypatch):
    calls = []
    names = list(bench.make_models(0))

    def fake_cell(dataset, noise, seed):
        calls.append((dataset, noise, seed))
        return [{"dataset": dataset, "noise": noise, "seed": seed, "model": m, "test_acc": 0.5, "seconds": 0.1}
                for m in names]

    tasks = [("wine", "clean", 0), ("wine", "sym20", 0), ("wine", "clean", 1)]
    monkeypatch.setattr(bench, "OUT", tmp_path)
    monkeypatch.setattr(bench, "table_cell", fake_cell)
    monkeypatch.setattr(bench, "table_tasks", lambda: tasks)
    threads = torch.get_num_threads()
    try:
        bench.run("table", 0, 2)
        assert calls == [tasks[0], tasks[2]]  # every 2nd task from the first
        bench.run("table", 1, 2)
        bench.run("table", 0, 2)
        assert calls == [tasks[0], tasks[2], tasks[1]]  # nothing twice
        bench.run("table", 0, 1)  # another shard count reads every part: nothing to do
        assert len(calls) == 3
        part = tmp_path / "table.part0.json"
        rows = [r for r in json.loads(part.read_text()) if not (r["seed"] == 1 and r["model"] == names[-1])]
        part.write_text(json.dumps(rows))  # a cell that lacks a model (e.g. cleanlab installed later) runs again
        bench.run("table", 0, 2)
        assert calls[3:] == [tasks[2]]
        joined = bench.merged("table")
        assert len(joined) == 3 * len(names)  # one row a model a cell, the rerun replacing the old rows
        assert json.loads((tmp_path / "table.json").read_text()) == joined
        for file in tmp_path.glob("table.part*.json"):
            file.unlink()
        bench.run("table", 1, 3)  # the joined file alone counts as done
        assert len(calls) == 4
    finally:
        torch.set_num_threads(threads)
