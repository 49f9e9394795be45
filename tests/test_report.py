"""``elr report``: finished runs read through rundir into methods x noise tables (mean ± std over seeds),
CSV and the figure; rows, columns, metrics and the errors of unreadable runs."""

import csv
import io
import json
import re

import numpy as np
import pytest

from elr import rundir
from elr.cli import main
from elr.config import Config
from elr.report import build_report, noise_column, write_report
from elr.runs import train

TINY = {"data": {"dataset": "digits", "val_fraction": 0.1}, "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": "mlp", "hidden": [16]}, "loss": {"name": "ce"},
        "optim": {"lr": 0.05, "batch_size": 64, "epochs": 1, "schedule": "constant"}, "device": "cpu"}


def test_report_selected_metric_marks_runs_without_validation_missing(tmp_path):
    config = Config.from_dict({**TINY, "data": {"dataset": "digits", "val_fraction": 0.0}}).validate()
    train(config, tmp_path / "noval")
    report = build_report([tmp_path], metric="selected")
    (cell,) = report.accuracy
    assert cell.method == "ce" and cell.n == 0 and cell.missing == 1 and cell.text() == "missing"
    assert any("no validation split" in note for note in report.notes)
    assert "selected by noisy validation" in report.markdown() and "| ce | missing |" in report.markdown()


def fake_run(root, name, *, method, noise_type, rate, seed, acc, order, settings=None, dataset="cifar10", mem=None):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    summary = {"method": "standard", "loss": "elr", "dataset": dataset, "seed": seed,
               "noise": {"type": noise_type, "rate": rate}, "epochs": 1,
               "last": {"epoch": 1, "test_acc": acc}, "selected": {"epoch": 1, "test_acc": acc - 0.01},
               "best_test_acc": acc + 0.01}
    if mem is not None:
        summary["last"]["mem_wrong_memorized"] = mem
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "config.yaml").write_text("# elr 0.0 (a stand-in: the header marks a run directory)\n")
    if method is not None:
        info = {"sweep": "s", "method": method, "settings": {"seed": seed, **(settings or {})}, "order": order}
        (run_dir / "sweep.json").write_text(json.dumps(info))


def test_report_layout_columns_rows_and_single_seed(tmp_path):
    cells = [("ELR", "asymmetric", 0.4), ("ELR", "symmetric", 0.4), ("ELR", "symmetric", 0.2), ("CE", "symmetric", 0.2)]
    order = 0
    for method, kind, rate in cells:
        for seed in (0, 1, 2):
            order += 1
            fake_run(tmp_path, f"{method}/{kind}-{rate}/seed-{seed}", method=method, noise_type=kind, rate=rate,
                     seed=seed, acc=0.5 + 0.1 * seed, order=order if method == "CE" else 100 + order)
    fake_run(tmp_path, "loose", method=None, noise_type="none", rate=0.0, seed=0, acc=0.9, order=0)
    fake_run(tmp_path, "ab/one", method="ELR+", noise_type="symmetric", rate=0.2, seed=0, acc=0.7, order=0,
             settings={"elr_plus.mixup": True})
    report = build_report([tmp_path])
    table = report.markdown()
    assert "| method | clean | sym 20% | sym 40% | asym 40% |" in table
    rows = [line.split(" |")[0] for line in table.splitlines() if line.startswith("| ") and "method" not in line]
    assert rows == ["| ELR+ [mixup=true]", "| CE", "| ELR", "| elr"]  # sweep order, then runs without sweep.json
    assert "| ELR+ [mixup=true] |  | 70.00 (1) |  |  |" in table  # one seed: no ±
    assert "60.00 ± 10.00 (3)" in table  # values 50, 60, 70: sample std 10
    assert "test accuracy (%), last epoch" in table
    best = build_report([tmp_path], metric="best").markdown()
    assert "selects on the test set, as the published tables of the paper and of CIFAR-N do" in best and "61.00 ± 10.00 (3)" in best
    written = write_report(report, tmp_path / "rep")
    assert written["csv"].read_text().splitlines()[0] == "dataset,table,metric,method,noise_type,noise_rate,column,n,mean,std,missing,seeds"
    with pytest.raises(ValueError, match="metric must be one of"):
        build_report([tmp_path], metric="test")
    with pytest.raises(FileNotFoundError, match="no summary.json"):
        build_report([tmp_path / "rep"])


def test_cells_are_the_numpy_mean_and_sample_std_of_their_seeds(tmp_path):
    rng = np.random.default_rng(7)
    values = {}
    for method, order in (("CE", 1), ("ELR", 2)):
        for rate in (0.2, 0.4):
            accs, mems = rng.uniform(0.3, 0.9, 4), rng.uniform(0.0, 1.0, 4)
            values[(method, rate)] = (100 * accs, 100 * mems)
            for seed in range(4):
                fake_run(tmp_path, f"{method}/{rate}/seed-{seed}", method=method, noise_type="symmetric", rate=rate,
                         seed=seed, acc=float(accs[seed]), order=order, mem=float(mems[seed]))
    report = build_report([tmp_path])
    assert report.runs == 16
    for table, which in ((report.accuracy, 0), (report.memorized, 1)):
        assert len(table) == 4
        for cell in table:
            expected = values[(cell.method, cell.noise_rate)][which]
            assert cell.n == 4 and sorted(cell.seeds) == [0, 1, 2, 3]
            assert cell.mean == pytest.approx(expected.mean(), rel=1e-12)
            assert cell.std == pytest.approx(expected.std(ddof=1), rel=1e-12)
            assert cell.text() == f"{expected.mean():.2f} ± {expected.std(ddof=1):.2f} (4)"
    rows = list(csv.DictReader(io.StringIO(report.csv_text())))
    assert len(rows) == 8 and [r["method"] for r in rows[:4]] == ["CE", "CE", "ELR", "ELR"]
    for r in rows:
        expected = values[(r["method"], float(r["noise_rate"]))][0 if r["table"] == "test_acc" else 1]
        assert float(r["mean"]) == pytest.approx(expected.mean(), rel=1e-12)  # written in full, not rounded
        assert float(r["std"]) == pytest.approx(expected.std(ddof=1), rel=1e-12)
    assert {r["metric"] for r in rows if r["table"] == "mem_wrong_memorized"} == {"last"}
    plot = report.plot_rows()
    assert [(r["method"], r["noise_rate"]) for r in plot] == [("CE", 0.2), ("CE", 0.4), ("ELR", 0.2), ("ELR", 0.4)]


@pytest.mark.parametrize("text, reason", [
    ("{not json", r"JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 \(char 1\)"),
    ("[1, 2]", "ValueError: holds a JSON list, not an object"),
    ('{"last": {"epoch": 3}}', "KeyError: 'test_acc'"),
    ('{"last": 0.5}', "TypeError: 'float' object is not subscriptable"),
])
def test_a_damaged_summary_is_named_with_what_is_wrong(tmp_path, capsys, text, reason):
    fake_run(tmp_path, "good", method="CE", noise_type="symmetric", rate=0.4, seed=0, acc=0.5, order=0)
    fake_run(tmp_path, "bad", method="CE", noise_type="symmetric", rate=0.4, seed=1, acc=0.5, order=0)
    (tmp_path / "bad" / "summary.json").write_text(text)
    message = (rf"bad/summary\.json: not the summary of a finished run \({reason}\); "
               r"`elr train --resume .*bad` writes it again")
    with pytest.raises(ValueError, match=message):
        build_report([tmp_path])
    assert main(["report", str(tmp_path)]) == 2  # the command: one line, nothing written
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err)
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "report.csv").exists()


def test_only_run_directories_are_read_and_repeated_seeds_are_noted(tmp_path, capsys):
    fake_run(tmp_path / "a", "run", method="CE", noise_type="symmetric", rate=0.4, seed=0, acc=0.5, order=0)
    fake_run(tmp_path / "b", "run", method="CE", noise_type="symmetric", rate=0.4, seed=0, acc=0.7, order=0)
    (tmp_path / "summary.json").write_text(json.dumps({"last": {"test_acc": 0.1}}))  # no config.yaml: not a run
    report = build_report([tmp_path, tmp_path / "a"])  # a directory given twice is read once
    (cell,) = report.accuracy
    assert report.runs == 2 and cell.values == [50.0, 70.0]
    assert report.notes == ["cifar10 / CE / sym 40%: seed 0 appears more than once (runs of several sweeps or copies?)"]
    assert main(["report", str(tmp_path)]) == 0  # --out defaults to the first directory
    printed = capsys.readouterr().out
    assert printed.startswith(report.markdown()) and (tmp_path / "report.md").read_text() == report.markdown()
    assert (tmp_path / "report.csv").read_text() == report.csv_text()
    with pytest.raises(FileNotFoundError, match="no such directory"):
        build_report([tmp_path / "missing"])


def test_noise_columns_and_their_order():
    assert [noise_column(*c) for c in [("none", 0.0), ("symmetric", 0.0), ("symmetric", 0.4), ("asymmetric", 0.1),
                                        ("pairflip", 0.45), ("cifar100n-noisy", 0.0)]] == \
        ["clean", "clean", "sym 40%", "asym 10%", "pairflip 45%", "cifar100n noisy"]


def test_grid_settings_are_written_as_the_sweep_names_them():
    assert [rundir.setting_text(v) for v in (True, False, None, [1, 2.5], "data/noise/worst.pt", 0.7)] == \
        ["true", "false", "none", "1_2.5", "worst.pt", "0.7"]
    assert rundir.setting_text("data/noise/worst.pt", paths="whole") == "data/noise/worst.pt"
