"""benchmarks/lam_beta_grid.py: cells read from the runs' configs, the choice rules, rank agreement and the fit,
on hand-worked fake runs."""

import json

import numpy as np
import pytest

from benchmark_script import benchmark_script
from elr import rundir
from elr.config import Config

pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def grid():
    with benchmark_script("lam_beta_grid") as module:
        yield module


def fake_run(root, lam, beta, seed, curve, *, rate=0.4, loss="elr", realised=0.36, auroc=None):
    """A finished run of (test, noisy val) per epoch; selected = the first epoch of the best noisy val."""
    root.mkdir(parents=True, exist_ok=True)
    run_dir = root / f"run-{len(list(root.iterdir()))}"  # a name that says nothing: the cell comes from the config
    params = {"name": "elr", "lam": lam, "beta": beta} if loss == "elr" else {"name": loss}
    config = Config.from_dict({"seed": seed, "loss": params, "noise": {"type": "symmetric", "rate": rate},
                               "threads": seed + 1})  # a runtime key: may differ between the runs
    rundir.write_config(run_dir, config)
    epochs = [{"epoch": i + 1, "test_acc": t, "val_acc": v, "mem_wrong_memorized": 0.1 * (i + 1)}
              for i, (t, v) in enumerate(curve)]
    (run_dir / rundir.METRICS).write_text("".join(json.dumps(e) + "\n" for e in epochs))
    sel = max(epochs, key=lambda e: e["val_acc"])
    summary = {"method": "standard", "loss": loss, "seed": seed, "epochs": len(epochs),
               "noise": {"type": "symmetric", "rate": rate, "realised_rate": realised},
               "last": dict(epochs[-1], **({} if auroc is None else {"det_auroc": auroc})),
               "selected": {"by": "val_acc", **sel}}
    (run_dir / rundir.SUMMARY).write_text(json.dumps(summary))
    return run_dir


# (lam, beta) -> (test, noisy val) at epochs 1 and 2, seed 0; worked out below by hand
CURVES = {(1.0, 0.7): [(0.50, 0.30), (0.45, 0.33)],
          (1.0, 0.9): [(0.48, 0.34), (0.47, 0.31)],
          (3.0, 0.7): [(0.52, 0.32), (0.51, 0.32)],
          (3.0, 0.9): [(0.40, 0.29), (0.49, 0.35)]}


@pytest.fixture
def runs(tmp_path):
    """Two folders: the grid's runs of seed 0, and the default's seed 1 from elsewhere (an older run: no AUROC)."""
    for (lam, beta), curve in CURVES.items():
        fake_run(tmp_path / "grid", lam, beta, 0, curve, auroc=0.8 + lam / 100)
    fake_run(tmp_path / "table", 3.0, 0.7, 1, [(0.50, 0.31), (0.54, 0.33)])
    return [tmp_path / "grid", tmp_path / "table"]


def test_cells_from_configs_and_the_table(grid, runs):
    got = grid.collect(runs)
    assert [(r.lam, r.beta, r.seed) for r in got] == [(1, 0.7, 0), (1, 0.9, 0), (3, 0.7, 0), (3, 0.7, 1), (3, 0.9, 0)]
    assert grid.complete_seeds(got) == [0]
    first = got[0]
    assert (first.test_last, first.val_last, first.test_selected, first.selected_epoch) == (0.45, 0.33, 0.45, 2)
    assert (first.best_test, first.best_epoch, first.memorized_last) == (0.50, 1, 0.2)
    table = grid.table_markdown(got)
    # the default cell: last 51 and 54 -> mean 52.5, sample std 2.12; selected epochs 1 and 2 (as the summaries say)
    assert "| **3** | **0.7** | 52.5 ± 2.1 (2) | 32.5 ± 0.7 (2) | 53.0 ± 1.4 (2) | 32.5 ± 0.7 (2) | 1, 2 | " \
           "52.0 (1), 54.0 (2) | 20.0 ± 0.0 (2) | 83.0 (1) |" in table
    assert "| 1 | 0.9 | 47.0 (1) | 31.0 (1) | 48.0 (1) | 34.0 (1) | 1 | 48.0 (1) | 20.0 (1) | 81.0 (1) |" in table


def test_choices_regret_and_rank_agreement(grid, runs):
    got = grid.collect(runs)
    picks = {p["rule"]: p for p in grid.choices(got)}
    assert {p["seed"] for p in picks.values()} == {0}  # seed 1 has one cell only
    last = picks["noisy validation, last epoch"]  # val .33 .31 .32 .35 -> (3, 0.9), test .49; oracle .51
    assert (last["lam"], last["beta"], last["test"]) == (3.0, 0.9, 0.49)
    assert last["regret"] == pytest.approx(0.02) and last["grid_worst"] == 0.45
    sel = picks["noisy validation, selected epoch"]  # selected val .33 .34 .32 .35 -> (3, 0.9); oracle .52
    assert (sel["lam"], sel["beta"], sel["test"]) == (3.0, 0.9, 0.49) and sel["regret"] == pytest.approx(0.03)
    for name in ("default (lam 3, beta 0.7), last epoch", "test set (oracle), last epoch"):
        assert (picks[name]["lam"], picks[name]["beta"], picks[name]["regret"]) == (3.0, 0.7, 0.0)
    assert picks["test set (oracle), selected epoch"]["test"] == 0.52
    # ranks last: val (3, 1, 2, 4), test (1, 2, 4, 3): sum d^2 = 10, rho = 1 - 6*10/(4*15) = 0
    # selected: val (2, 3, 1, 4), test (1, 2, 4, 3): sum d^2 = 12, rho = 1 - 72/60 = -0.2
    # pairs, last: AB 2 pts (val says the other way), AC 6 (other way), AD 4, BC 4, BD 2 (agree), CD 2 (other way)
    # selected: AB 3 (0.48 - 0.45 is 2.99999...: 3 at the figures' precision; agree), AC 7, BC 4, CD 3 (other way),
    # AD 4 (agree), BD 1 (agree); seed 1 has one cell, so no pair
    pairs = grid.agreement(got)["pairs"]
    assert [(b["ordered"], b["pairs"]) for b in pairs["last"]] == [(0, 0), (1, 3), (2, 3)]
    assert [(b["ordered"], b["pairs"]) for b in pairs["selected"]] == [(0, 0), (1, 1), (2, 5)]
    rho = grid.agreement(got)["spearman"][0]
    assert rho["last"] == pytest.approx(0.0, abs=1e-12) and rho["selected"] == pytest.approx(-0.2)


def test_fit_recovers_the_noise_model_line(grid, tmp_path):
    rng = np.random.default_rng(0)
    for lam in (1.0, 3.0):
        test = rng.uniform(0.3, 0.6, size=5)
        fake_run(tmp_path, lam, 0.7, 0, [(t, 0.04 + 0.6 * t) for t in test])
    agree = grid.agreement(grid.collect([tmp_path]))
    fit = agree["fit"]
    assert fit["points"] == 10 and fit["slope"] == pytest.approx(0.6) and fit["intercept"] == pytest.approx(0.04)
    assert fit["residual_std"] == pytest.approx(0.0, abs=1e-9)
    assert agree["model_slope"] == pytest.approx(1 - 0.36 * 10 / 9)  # 0.6
    assert grid.agreement(grid.collect([tmp_path]), classes=100)["model_slope"] == pytest.approx(1 - 0.36 * 100 / 99)
    # noisy val rises with test on every epoch, so it ranks the two cells as the test set does
    assert agree["spearman"][0]["last"] == pytest.approx(1.0) and agree["spearman"][0]["selected"] == pytest.approx(1.0)


def test_runs_that_are_not_one_grid(grid, runs, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    fake_run(other, 1.0, 0.7, 5, [(0.5, 0.3)], rate=0.2)
    with pytest.raises(ValueError, match=r"differ in more than lam, beta and the seed \(noise.rate: 0.4 vs 0.2\)"):
        grid.collect([*runs, other])
    twice = tmp_path_factory.mktemp("twice")
    fake_run(twice, 1.0, 0.7, 0, [(0.5, 0.3)])
    with pytest.raises(ValueError, match="lam 1, beta 0.7, seed 0 twice"):
        grid.collect([*runs, twice])
    assert len(grid.collect([*runs, runs[0].parent])) == 5  # folders inside another: each run counts once
    (twice / f"run-0/{rundir.METRICS}").unlink()
    with pytest.raises(ValueError, match="no per-epoch figures"):
        grid.collect([twice])
    ce = tmp_path_factory.mktemp("ce")
    fake_run(ce, 1.0, 0.7, 0, [(0.5, 0.3)], loss="ce")
    with pytest.raises(ValueError, match="not an ELR run"):
        grid.collect([ce])
    with pytest.raises(FileNotFoundError, match="no finished run"):
        grid.collect([tmp_path_factory.mktemp("empty")])


def test_cli_writes_the_figure_table_and_record(grid, runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert grid.main([*map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "5 runs: lam 1, 3 x beta 0.7, 0.9, seeds 0, 1 (every cell: 0)" in printed
    assert "| 0 | noisy validation, last epoch | 3 | 0.9 | 49.0 | 2.0 | 45.0 |" in printed
    assert "Seed 0: rank correlation of noisy validation with test across the cells 0.00 at the last epoch, " \
           "-0.20 at the selected epoch." in printed
    assert "(last epoch): gap 0–1: 0/0; gap 1–3: 1/3; gap 3+: 2/3." in printed
    assert (out / "table.md").read_text() == printed
    assert (out / "heatmaps.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((out / "grid.json").read_text())
    assert len(record["runs"]) == 5 and "curve" not in record["runs"][0] and len(record["choices"]) == 6
    assert grid.main([*map(str, runs), "--out", str(out), "--seed", "1"]) == 2
    assert "--seed 1 does not have every cell; seeds that do: [0]" in capsys.readouterr().err
    assert grid.main([*map(str, runs), "--classes", "1"]) == 2
    assert "--classes must be at least 2, got 1" in capsys.readouterr().err
    assert grid.main([str(tmp_path / "missing")]) == 2
    assert "error: no such directory" in capsys.readouterr().err


def test_ties_go_to_the_smaller_lam_and_a_tie_on_the_split_orders_nothing(grid, tmp_path):
    fake_run(tmp_path, 7.0, 0.9, 0, [(0.50, 0.35)])
    fake_run(tmp_path, 3.0, 0.9, 0, [(0.48, 0.35)])  # the same noisy val as lam 7, less test
    picks = {p["rule"]: p for p in grid.choices(grid.collect([tmp_path]))}
    assert (picks["noisy validation, last epoch"]["lam"], picks["noisy validation, last epoch"]["regret"]) == \
        (3.0, pytest.approx(0.02))
    bins = grid.agreement(grid.collect([tmp_path]))["pairs"]["last"]
    assert [(b["ordered"], b["pairs"]) for b in bins] == [(0, 0), (0, 1), (0, 0)]  # 2 points apart, tied on the split
    assert grid.agreement(grid.collect([tmp_path]))["spearman"][0]["last"] is None  # the split is constant: undefined
    assert "across the cells undefined (constant) at the last epoch" in grid.report_markdown(grid.collect([tmp_path]))
    single = tmp_path / "single"
    fake_run(single, 3.0, 0.7, 0, [(0.5, 0.3), (0.5, 0.3)])
    agree = grid.agreement(grid.collect([single]))
    assert agree["spearman"] == {} and agree["fit"] is None  # one cell, two epochs: nothing to rank or fit
    summary = json.loads((single / f"run-0/{rundir.SUMMARY}").read_text())
    del summary["selected"]
    (single / f"run-0/{rundir.SUMMARY}").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="no epoch selected by noisy validation"):
        grid.collect([single])
