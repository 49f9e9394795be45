"""benchmarks/seed_spread.py: a method's per-seed (paired) difference from the best other row, against the
seed spread, on hand-worked runs."""

import math

import numpy as np
import pytest

from benchmark_script import benchmark_script
from test_report import fake_run


@pytest.fixture(scope="module")
def spread():
    with benchmark_script("seed_spread") as module:
        yield module


# accuracy and memorized fraction per seed 0, 1, 2
RUNS = {
    ("ELR", "symmetric"): ([0.50, 0.52, 0.54], [0.40, 0.50, 0.45]),
    ("GCE", "symmetric"): ([0.49, 0.50, 0.51], [0.30, 0.31, 0.29]),
    ("CE", "symmetric"): ([0.30, 0.35, 0.32], [0.99, 0.98, 0.97]),
    ("Forward", "symmetric"): ([0.49, 0.50, 0.50], [0.99, 0.99, 0.99]),
    ("Bootstrap", "symmetric"): ([0.30, 0.31, 0.32], [0.42, 0.52, 0.475]),
    ("ELR", "asymmetric"): ([0.60, 0.61, 0.62], [0.90, 0.91, 0.92]),
    ("SCE", "asymmetric"): ([0.55, 0.57, 0.56], [0.95, 0.91, 0.93]),
    ("CE", "asymmetric"): ([0.52, 0.53, None], [0.99, 1.00, None]),  # seed 2 not run
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for order, ((method, kind), (accs, mems)) in enumerate(RUNS.items()):
        for seed, (acc, mem) in enumerate(zip(accs, mems)):
            if acc is not None:
                fake_run(root, f"{method}/{kind}/seed-{seed}", method=method, noise_type=kind, rate=0.4, seed=seed,
                         acc=acc, mem=mem, order=order)
    return root


def find(comparisons, table, column):
    (found,) = [c for c in comparisons if c.table == table and c.column == column]
    return found


def test_best_other_row_paired_by_seed_with_numpy_t(spread, runs):
    comparisons = spread.compare(spread.load([str(runs)]), "ELR")
    assert len(comparisons) == 6  # 3 tables x 2 columns
    sym = find(comparisons, "test accuracy, last", "sym 40%")
    assert sym.other.method == "GCE"  # mean 50 beats CE's 32.3
    assert sym.differences == pytest.approx([1.0, 2.0, 3.0])
    d = np.array([1.0, 2.0, 3.0])
    assert sym.mean == pytest.approx(d.mean()) and sym.std == pytest.approx(d.std(ddof=1))
    assert sym.t == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(3)))  # 3.46, below 4.30
    assert sym.t_critical == 4.303 and sym.method_better == 3
    # better on every seed, but the mean lead (2.00) is not larger than ELR's own seed std (2.00)
    assert sym.method.std == pytest.approx(2.0) and sym.verdict == "within the spread"

    asym = find(comparisons, "test accuracy, last", "asym 40%")
    assert asym.other.method == "SCE"  # mean 56 beats CE's 52.5
    assert asym.differences == pytest.approx([5.0, 4.0, 6.0])
    # 5.0 > max(1.0, 1.0, 1.0) on 3 of 3 seeds, and t = 8.66 > 4.303
    assert asym.verdict == "better beyond the spread; t significant"

    # the selected epoch (fake runs: last - 1 point for every run) gives the same differences
    assert find(comparisons, "test accuracy, selected", "asym 40%").differences == pytest.approx([5.0, 4.0, 6.0])


def test_memorized_lower_is_better(spread, runs):
    comparisons = spread.compare(spread.load([str(runs)]), "ELR")
    sym = find(comparisons, "wrong labels memorized, last", "sym 40%")
    assert sym.other.method == "GCE"  # lowest mean memorized (30%)
    assert sym.differences == pytest.approx([10.0, 19.0, 16.0])
    d = np.array([10.0, 19.0, 16.0])  # 15 > max(5.0, 1.0, 4.58); t = 5.67 > 4.303
    assert sym.std == pytest.approx(d.std(ddof=1)) and sym.t == pytest.approx(15 / (d.std(ddof=1) / math.sqrt(3)))
    assert sym.method_better == 0 and sym.verdict == "worse beyond the spread; t significant"
    asym = find(comparisons, "wrong labels memorized, last", "asym 40%")
    assert asym.other.method == "SCE" and asym.differences == pytest.approx([-5.0, 0.0, -1.0])
    assert asym.method_better == 2 and asym.verdict == "within the spread"  # a tied seed is not "every seed"


def test_versus_names_rows_and_pairs_only_shared_seeds(spread, runs):
    comparisons = spread.compare(spread.load([str(runs)]), "ELR", versus=["CE", "no such row"])
    asym = find(comparisons, "test accuracy, last", "asym 40%")
    assert asym.other.method == "CE" and asym.differences == pytest.approx([8.0, 8.0])  # CE has seeds 0, 1
    assert asym.std == pytest.approx(0.0) and asym.t == math.inf and asym.t_critical == 12.706
    assert asym.verdict == "better beyond the spread; t significant"


def test_beyond_the_spread_without_a_significant_t(spread, runs):
    (sym,) = [c for c in spread.compare(spread.load([str(runs)]), "ELR", versus=["Forward"])
              if c.table == "test accuracy, last" and c.column == "sym 40%"]
    d = np.array([1.0, 2.0, 4.0])
    assert sym.differences == pytest.approx(d.tolist())
    # mean 2.33 > max(ELR's 2.00, Forward's 0.58, the differences' 1.53); t = 2.65 < 4.303
    assert sym.t == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(3)))
    assert sym.verdict == "better beyond the spread"


def test_steady_difference_smaller_than_the_seed_spread(spread, runs):
    (sym,) = [c for c in spread.compare(spread.load([str(runs)]), "ELR", versus=["Bootstrap"])
              if c.table == "wrong labels memorized, last" and c.column == "sym 40%"]
    d = np.array([-2.0, -2.0, -2.5])
    assert sym.differences == pytest.approx(d.tolist()) and sym.method_better == 3
    # |mean| 2.17 < ELR's seed std 5.00, but t = -13.0 is beyond -4.303
    assert sym.t == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(3)))
    assert sym.verdict == "within the spread; t significant"


def test_t_critical_values(spread):
    assert spread.t_critical(2) == 4.303 and spread.t_critical(1) == 12.706
    stats = pytest.importorskip("scipy.stats")
    for df in (2, 5, 9):  # the table agrees with scipy
        assert spread.t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)
    assert spread.t_critical(30) == pytest.approx(2.042, abs=1e-3)


def test_edge_cases_one_seed_ties_unshared_and_repeated_seeds(spread, tmp_path):
    def run(name, method, seed, acc, kind="symmetric"):
        fake_run(tmp_path, name, method=method, noise_type=kind, rate=0.4, seed=seed, acc=acc, mem=0.5,
                 order={"ELR": 0, "A": 1, "B": 2, "C": 3}[method])

    run("ELR/s0", "ELR", 0, 0.50)
    run("ELR/s1", "ELR", 1, 0.60)
    run("A/s0", "A", 0, 0.40)
    run("A/s1", "A", 1, 0.50)  # A and B tie: both means 45 on seeds 0, 1
    run("B/s0", "B", 0, 0.45)
    run("B/s1", "B", 1, 0.45)
    run("C/s7", "C", 7, 0.99)  # the best mean, but no seed shared with ELR: not compared
    run("ELR/a0", "ELR", 0, 0.50, kind="asymmetric")  # one seed in this column
    run("A/a0", "A", 0, 0.55, kind="asymmetric")
    comparisons = [c for c in spread.compare(spread.load([str(tmp_path)]), "ELR") if c.table == "test accuracy, last"]
    sym = [c for c in comparisons if c.column == "sym 40%"]
    assert [c.other.method for c in sym] == ["A", "B"]  # both tied rows, in the sweep's order
    assert sym[0].differences == pytest.approx([10.0, 10.0]) and sym[1].differences == pytest.approx([5.0, 15.0])
    assert sym[0].verdict == "better beyond the spread; t significant"  # std 0 -> t infinite
    # mean 10 > max(ELR's 7.07, B's 0, the differences' 7.07): t = 2.00 > sqrt(2) but < 12.706
    assert sym[1].t == pytest.approx(2.0) and sym[1].verdict == "better beyond the spread"
    (asym,) = [c for c in comparisons if c.column == "asym 40%"]
    assert asym.differences == pytest.approx([-5.0]) and asym.t is None and asym.verdict == "one seed: no spread"
    # a seed that appears twice cannot be paired: one line, exit 2
    run("A/s1-copy", "A", 1, 0.52)
    with pytest.raises(ValueError, match="seeds .* are missing or repeated"):
        spread.compare(spread.load([str(tmp_path)]), "ELR")
    assert spread.main([str(tmp_path), "--method", "ELR"]) == 2


def test_markdown_and_cli(spread, runs, capsys):
    assert spread.main([str(runs), "--method", "ELR"]) == 0
    out = capsys.readouterr().out
    assert "| test accuracy, last | sym 40% | 52.00 ± 2.00 (3) | GCE | 50.00 ± 1.00 (3) | +1.00, +2.00, +3.00 | " \
           "+2.00 ± 1.00 (3/3) | +3.46 (±4.303) | within the spread |" in out
    # the table: a row per method, per column last / selected / memorized (mean ± sample std (n))
    assert "| method | sym 40%: test acc, last | selected | memorized, last | asym 40%: test acc, last |" in out
    assert "| ELR | 52.00 ± 2.00 (3) | 51.00 ± 2.00 (3) | 45.00 ± 5.00 (3) | 61.00 ± 1.00 (3) | 60.00 ± 1.00 (3) | " \
           "91.00 ± 1.00 (3) |" in out
    assert "| CE | 32.33 ± 2.52 (3) | " in out and "| 52.50 ± 0.71 (2) | 51.50 ± 0.71 (2) | 99.50 ± 0.71 (2) |" in out
    assert "| SCE |  |  |  | 56.00 ± 1.00 (3) |" in out  # no symmetric runs
    assert spread.main([str(runs), "--method", "ELR+"]) == 2
    assert "--method 'ELR+' is not a row of the runs (rows: Bootstrap, CE, ELR, Forward, GCE, SCE)" in capsys.readouterr().err
    assert spread.main([str(runs), "--method", "ELR", "--versus", "GCE", "--versus", "gce"]) == 2
    assert "--versus 'gce' is not a row" in capsys.readouterr().err
    assert spread.main([str(runs / "CE" / "no such folder"), "--method", "ELR"]) == 2
    assert "seed_spread: no such directory:" in capsys.readouterr().err
    assert spread.main([str(runs / "CE" / "symmetric" / "seed-0" / ".."), "--method", "CE"]) == 2  # CE alone
    assert "no column has 'CE' and a row to compare with" in capsys.readouterr().err
