"""Sweeps (grid expansion, skip, resume, validation first, parallel jobs) and the report of a trained sweep."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from elr import noise, rundir
from elr.cli import main
from elr.config import Config
from elr.experiments import Sweep, SweepError, plan_sweep, run_name, run_sweep
from elr.report import build_report
from elr.build import resolve_loss_params
from test_elr_plus import assert_same_state

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "sweeps"

TINY = {
    "name": "tiny",
    "config": {
        "data": {"dataset": "digits", "val_fraction": 0.1},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": "mlp", "hidden": [16]},
        "loss": {"name": "elr", "lam": 3.0, "beta": 0.7},
        "optim": {"lr": 0.05, "batch_size": 64, "epochs": 1, "schedule": "constant"},
        "device": "cpu",
    },
    "grid": {"seed": [0, 1]},
    "methods": {"CE": {"loss": {"name": "ce"}}, "ELR": {"loss.lam": 2.0}},
}


def write_sweep(path, raw):
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def with_config(raw, **sections):
    out = json.loads(json.dumps(raw))
    for section, value in sections.items():
        out["config"][section] = {**out["config"].get(section, {}), **value}
    return out


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """The 2 methods x 2 seeds sweep, trained once for the module."""
    root = tmp_path_factory.mktemp("sweep")
    path = write_sweep(root / "tiny.yaml", TINY)
    out = root / "out"
    result = run_sweep(Sweep.load(path), out)
    return path, out, result


# ---- the sweep file ----------------------------------------------------------------------------


def test_grid_expansion_count_names_and_merging():
    raw = {
        "name": "g",
        "config": {"data": {"dataset": "cifar10", "root": "/x"}, "loss": {"name": "elr", "lam": 3.0, "beta": 0.7}},
        "grid": {"noise": [{"type": "symmetric", "rate": 0.4}, {"type": "asymmetric", "rate": 0.2}],
                 "seed": [0, 1, 2]},
        "methods": {"CE": {"loss": {"name": "ce"}},
                    "ELR (cosine)": {"optim.schedule": "cosine_restarts"}},
        "rules": [{"if": {"noise.type": "asymmetric", "loss.name": "elr"}, "set": {"loss": {"lam": 1.0, "beta": 0.9}}},
                  {"if": {"noise.rate": [0.2, 0.3]}, "set": {"optim.epochs": 120}}],
    }
    specs = Sweep.from_dict(raw).expand()
    assert len(specs) == 2 * 2 * 3
    names = [s.name for s in specs]
    assert names[0] == "CE/symmetric-0.4/seed-0" and names[-1] == "ELR-cosine/asymmetric-0.2/seed-2"
    assert len(set(names)) == len(names) and [s.order for s in specs] == list(range(12))
    by_name = {s.name: s for s in specs}
    assert by_name["CE/asymmetric-0.2/seed-1"].config.loss.params == {}  # a new loss name drops ELR's params
    assert by_name["CE/asymmetric-0.2/seed-1"].config.optim.epochs == 120
    elr_sym = by_name["ELR-cosine/symmetric-0.4/seed-0"].config
    assert elr_sym.loss.params == {"lam": 3.0, "beta": 0.7} and elr_sym.optim.schedule == "cosine_restarts"
    assert elr_sym.optim.epochs == 150
    assert by_name["ELR-cosine/asymmetric-0.2/seed-0"].config.loss.params == {"lam": 1.0, "beta": 0.9}
    assert by_name["CE/asymmetric-0.2/seed-1"].sweep_info("g") == {
        "sweep": "g", "method": "CE", "settings": {"noise": {"type": "asymmetric", "rate": 0.2}, "seed": 1},
        "run": "CE/asymmetric-0.2/seed-1", "order": 4}
    assert run_name(None, {"elr_plus.mixup": False, "optim.milestones": [40, 80]}) == "mixup-false/milestones-40_80"


def test_paper_sweep_files_expand():
    c10 = Sweep.load(CONFIGS / "table1_cifar10.yaml", ["data.root=/x"]).expand()
    c100 = Sweep.load(CONFIGS / "table1_cifar100.yaml", ["data.root=/x"]).expand()
    assert len(c10) == len(c100) == 7 * 8 * 5
    runs = {s.name: s.config for s in c10}
    asym = runs["ELR/asymmetric-0.4/seed-0"]
    assert (asym.loss.params, asym.optim.epochs, asym.optim.milestones) == ({"lam": 1.0, "beta": 0.9}, 120, [40, 80])
    sym = runs["ELR-cosine/symmetric-0.8/seed-4"]
    assert (sym.loss.params, sym.optim.epochs, sym.optim.schedule) == ({"lam": 3.0, "beta": 0.7}, 150, "cosine_restarts")
    assert runs["Forward/symmetric-0.2/seed-0"].loss.params == {"transition": "estimate"}
    sce100 = {s.name: s.config for s in c100}["SCE/asymmetric-0.1/seed-0"]
    assert sce100.loss.params == {"alpha": 6.0, "beta": 0.1} and sce100.optim.milestones == [80, 120]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_sweep_file_expands(path):
    assert len(Sweep.load(path, ["data.root=/x"]).expand()) > 0


def test_lam_beta_sweep_is_the_cpu_setting_but_for_lam_and_beta():
    specs = {s.name: s.config for s in Sweep.load(CONFIGS / "cpu_elr_lam_beta.yaml").expand()}
    assert len(specs) == 4 * 3 * 3
    base = Config.load(CONFIGS.parent / "cpu" / "bench_base.yaml").to_dict()
    for name, config in specs.items():
        lam, beta, seed = (float(part.split("-", 1)[1]) for part in name.split("/"))
        assert config.loss.params == {"lam": lam, "beta": beta}
        got = config.to_dict()
        base_data = dict(base["data"], root=got["data"]["root"])  # the sweep resolves root from its folder
        assert ({**got, "loss": None, "seed": None, "data": None} == {**base, "loss": None, "seed": None, "data": None}
                and got["data"] == base_data and got["seed"] == seed)
    # the default cell's seeds are the CPU table's ELR runs at symmetric 40% (benchmarks/README.md reuses them)
    table = {s.name: s.config for s in Sweep.load(CONFIGS / "cpu_bench_table.yaml").expand()}
    for seed in (0, 1, 2):
        assert specs[f"lam-3.0/beta-0.7/seed-{seed}"].to_dict() == table[f"ELR/symmetric-0.4/seed-{seed}"].to_dict()


def test_forward_true_transition_is_the_noise_model():
    config = Config.from_dict({"data": {"dataset": "cifar10", "root": "/x"}, "noise": {"type": "asymmetric", "rate": 0.3},
                               "loss": {"name": "forward", "transition": True}}).validate()
    got = resolve_loss_params(config, 10)["transition"]
    np.testing.assert_array_equal(got, noise.transition_matrix("asymmetric", 0.3, dataset="cifar10"))
    config.noise.type = "symmetric"
    np.testing.assert_array_equal(resolve_loss_params(config, 10)["transition"],
                                  noise.transition_matrix("symmetric", 0.3, 10))


@pytest.mark.parametrize("bad, message", [
    ({"grid": {"seed": [0], "optim.lrr": [0.1]}}, "unknown key optim.lrr"),
    ({"methods": {"CE": {"loss": {"name": "ce"}}, "ELR": {"loss": {"lamda": 3}}}}, "ELR/seed-0: unknown key loss.lamda"),
    ({"grid": {"seed": [0, -1]}}, "run CE/seed--1: seed must be an integer"),
    ({"methods": {"CE": {"loss": {"name": "ce"}}, "ELR": {"loss": {"lam": -3}}}},
     r"ELR/seed-0: loss\.lam must be a finite number >= 0, got -3"),
    ({"methods": {"CE": {"model": {"hidden": [0]}}}}, r"CE/seed-0: model\.hidden entry must be an integer >= 1"),
])
def test_invalid_run_fails_before_any_training(tmp_path, bad, message):
    path = write_sweep(tmp_path / "bad.yaml", {**TINY, **bad})
    with pytest.raises(SweepError, match=message):
        run_sweep(Sweep.load(path), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_a_noise_type_switch_drops_the_bases_rate_and_names_carry_no_path():
    raw = {"name": "n", "config": {"data": {"dataset": "cifar10", "root": "/data/cifar"},
                                   "noise": {"type": "symmetric", "rate": 0.4}},
           "grid": {"noise": [{"type": "cifar10n", "label_set": "worst", "file": "/data/labels/CIFAR-10_human.pt"},
                              {"type": "asymmetric"}]}}
    human, asym = Sweep.from_dict(raw).expand()
    assert human.name == "cifar10n-worst-CIFAR-10_human.pt"  # the file's name, not its folders
    assert (human.config.noise.rate, human.config.noise.file) == (0.0, "/data/labels/CIFAR-10_human.pt")
    assert (asym.name, asym.config.noise.rate) == ("asymmetric", 0.4)  # asymmetric reads the rate: kept
    # two files of one name in two folders: the whole paths tell the runs apart
    raw["grid"] = {"data.root": ["/data/a/cifar", "/data/b/cifar"]}
    assert [s.name for s in Sweep.from_dict(raw).expand()] == ["root--data-a-cifar", "root--data-b-cifar"]  # as before


def test_sweep_file_errors_are_clear(tmp_path):
    with pytest.raises(SweepError, match="unknown key 'grids' in the sweep file; did you mean grid\\?"):
        Sweep.from_dict({**TINY, "grids": {}})
    with pytest.raises(SweepError, match="grid.seed must be a non-empty list"):
        Sweep.from_dict({**TINY, "grid": {"seed": 3}})
    with pytest.raises(SweepError, match="unknown method label 'EL'"):
        Sweep.from_dict({**TINY, "rules": [{"methods": ["EL"], "set": {"seed": 1}}]})
    with pytest.raises(SweepError, match="two runs get the directory"):
        Sweep.from_dict({**TINY, "methods": {"a b": {}, "a-b": {}}}).expand()


# ---- running -------------------------------------------------------------------------------------


def test_sweep_trains_every_run_then_skips_them(tiny_sweep):
    path, out, result = tiny_sweep
    names = ["CE/seed-0", "CE/seed-1", "ELR/seed-0", "ELR/seed-1"]
    assert result.results() == {n: "trained" for n in names}
    for name in names:
        info = json.loads((out / name / "sweep.json").read_text())
        assert info["sweep"] == "tiny" and info["method"] == name.split("/")[0] and (out / name / "summary.json").is_file()
    assert json.loads((out / "ELR/seed-1/summary.json").read_text())["seed"] == 1
    assert Config.load(out / "ELR/seed-0/config.yaml").loss.params == {"lam": 2.0, "beta": 0.7}
    assert (out / "sweep.yaml").read_text() == path.read_text()
    again = run_sweep(Sweep.load(path), out)
    assert again.results() == {n: "skipped" for n in names} and not again.failed


class StopAtEpoch2:
    def epoch_start(self, epoch, epochs, batches):
        if epoch == 2:
            raise RuntimeError("simulated interruption")

    def batch_end(self):
        pass

    def epoch_end(self, record):
        pass


def test_interrupted_run_is_resumed_not_restarted(tmp_path):
    raw = with_config({**TINY, "methods": {"ELR": {}}}, optim={"epochs": 2})
    sweep = Sweep.from_dict(raw)
    out = tmp_path / "out"
    first = run_sweep(sweep, out, progress=lambda name: StopAtEpoch2() if name == "ELR/seed-1" else None)
    assert first.results() == {"ELR/seed-0": "trained", "ELR/seed-1": "failed"}  # the sweep went on
    assert "simulated interruption" in first.failed[0].error
    run_dir = out / "ELR/seed-1"
    assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "summary.json").exists()
    epoch1 = (run_dir / "metrics.jsonl").read_text().splitlines()[0]
    plan = plan_sweep(sweep, out)
    assert {r.name: (r.status, r.epochs_left) for r in plan.runs} == {"ELR/seed-0": ("done", 0), "ELR/seed-1": ("resume", 1)}
    second = run_sweep(sweep, out)
    assert second.results() == {"ELR/seed-0": "skipped", "ELR/seed-1": "resumed"}
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == epoch1  # epoch 1 (with its wall time) was kept, not retrained
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 2


def test_run_killed_before_first_checkpoint_restarts_and_changed_config_conflicts(tmp_path):
    raw = {**TINY, "methods": {"CE": {"loss": {"name": "ce"}}}, "grid": {"seed": [0]}}
    sweep = Sweep.from_dict(raw)
    out = tmp_path / "out"
    (out / "CE/seed-0").mkdir(parents=True)
    rundir.write_config(out / "CE/seed-0", sweep.expand()[0].config)  # no checkpoint yet
    (out / "CE/seed-0/.checkpoint.pt.x1y2z3w4").write_bytes(b"half")  # the temporary file of a kill mid-save
    assert [r.status for r in plan_sweep(sweep, out).runs] == ["restart"]
    assert run_sweep(sweep, out).results() == {"CE/seed-0": "trained"}
    assert not (out / "CE/seed-0/.checkpoint.pt.x1y2z3w4").exists()
    changed = Sweep.from_dict(raw, overrides=["optim.lr=0.01"])
    assert [(r.status, "optim" in r.reason) for r in plan_sweep(changed, out).runs] == [("conflict", True)]
    with pytest.raises(SweepError, match="do not match the sweep"):
        run_sweep(changed, out)


def test_only_trains_the_matching_runs_and_rejects_a_pattern_matching_none(tmp_path, capsys):
    sweep = Sweep.from_dict(TINY)
    out = tmp_path / "out"
    # a conflicting directory of a run that is not selected does not stop the selected ones
    (out / "CE/seed-0").mkdir(parents=True)
    (out / "CE/seed-0/notes.txt").write_text("not a run")
    assert [r.name for r in plan_sweep(sweep, out, only=["ELR/*", "*/seed-1"]).runs] == [
        "CE/seed-1", "ELR/seed-0", "ELR/seed-1"]  # the sweep's order, each run once
    assert run_sweep(sweep, out, only=["ELR/seed-1"]).results() == {"ELR/seed-1": "trained"}
    assert not (out / "ELR/seed-0").exists() and not (out / "CE/seed-1").exists()
    with pytest.raises(SweepError, match=r"--only 'elr/\*' matches no run of the sweep \(its runs: CE/seed-0"):
        plan_sweep(sweep, out, only=["ELR/*", "elr/*"])  # case-sensitive, like the run directories
    path = write_sweep(tmp_path / "tiny.yaml", TINY)
    assert main(["sweep", str(path), "--out", str(out), "--dry-run", "--only", "ELR/*"]) == 0
    listed = capsys.readouterr().out
    assert "done      ELR/seed-1" in listed and "new       ELR/seed-0" in listed and "CE/" not in listed
    assert main(["sweep", str(path), "--out", str(out), "--only", "SCE/*"]) == 2
    assert "matches no run" in capsys.readouterr().err


def test_parallel_jobs(tmp_path):
    sweep = Sweep.from_dict(TINY)
    result = run_sweep(sweep, tmp_path / "out", jobs=2)
    names = ["CE/seed-0", "CE/seed-1", "ELR/seed-0", "ELR/seed-1"]
    assert result.results() == dict.fromkeys(names, "trained")
    # the same runs trained one at a time are the same runs: labels, every epoch's record, weights and targets
    run_sweep(sweep, tmp_path / "alone")
    for name in names:
        runs = tmp_path / "out" / name, tmp_path / "alone" / name
        a, b = ([{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rundir.read_metrics(run)]
                for run in runs)
        assert len(a) == 1 and a == b, name
        assert np.array_equal(*(rundir.read_noisy_labels(run) for run in runs)), name
        assert_same_state(*(rundir.load_checkpoint(run)["method"] for run in runs), name)


# ---- the CLI ---------------------------------------------------------------------------------------


def test_cli_dry_run_lists_statuses_and_cost(tiny_sweep, tmp_path, capsys):
    path, out, _ = tiny_sweep
    assert main(["sweep", str(path), "--out", str(tmp_path / "fresh"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count("new ") == 4 and "4 runs x 1 epochs = 4 epochs" in text and "time unknown" in text
    assert not (tmp_path / "fresh").exists()
    # half done: the done runs are listed as such and their measured speed prices the rest
    partial = tmp_path / "partial"
    shutil.copytree(out / "CE", partial / "CE")
    assert main(["sweep", str(path), "--out", str(partial), "--dry-run", "optim.epochs=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:4]] == [["done", "CE/seed-0"], ["done", "CE/seed-1"],
                                                        ["new", "ELR/seed-0"], ["new", "ELR/seed-1"]]
    assert "2 runs x 1 epochs = 2 epochs" in lines[-1] and "s/epoch measured" in lines[-1]


def test_cli_failed_run_is_reported_and_exit_status_nonzero(tmp_path, capsys):
    raw = {**TINY, "grid": {"seed": [0]},
           "methods": {"bad": {"data": {"dataset": "npz", "root": str(tmp_path / "missing.npz")}}, "good": {}}}
    path = write_sweep(tmp_path / "s.yaml", raw)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "failed: bad/seed-0" in captured.out and "1 failed" in captured.out and "1 trained" in captured.out
    assert (tmp_path / "out/good/seed-0/summary.json").is_file()


# ---- reports -------------------------------------------------------------------------------------


def test_report_mean_std_match_numpy(tiny_sweep, tmp_path, capsys):
    _, out, _ = tiny_sweep
    report = build_report([out])
    assert report.runs == 4
    for method in ("CE", "ELR"):
        summaries = [json.loads((out / method / f"seed-{s}" / "summary.json").read_text()) for s in (0, 1)]
        acc = np.array([100 * s["last"]["test_acc"] for s in summaries])
        cell = next(c for c in report.accuracy if c.method == method)
        assert (cell.n, cell.column, sorted(cell.seeds)) == (2, "sym 40%", [0, 1])
        assert cell.mean == pytest.approx(acc.mean()) and cell.std == pytest.approx(acc.std(ddof=1))
        assert cell.text() == f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f} (2)"
        mem = np.array([100 * s["last"]["mem_wrong_memorized"] for s in summaries])
        assert next(c for c in report.memorized if c.method == method).mean == pytest.approx(mem.mean())
        best = build_report([out], metric="best")
        best_acc = np.array([100 * s["best_test_acc"] for s in summaries])
        assert next(c for c in best.accuracy if c.method == method).mean == pytest.approx(best_acc.mean())
    # CLI: Markdown on stdout, CSV and PNG beside it
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    text = capsys.readouterr().out
    assert "last epoch" in text and "| method | sym 40% |" in text and "| CE |" in text and "memorized" in text
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rep" / "report.csv").read_text())))
    acc_rows = [r for r in rows if r["table"] == "test_acc"]
    assert [r["method"] for r in acc_rows] == ["CE", "ELR"]
    ce = acc_rows[0]
    assert (ce["n"], ce["metric"], ce["column"], ce["seeds"]) == ("2", "last", "sym 40%", "0 1")
    assert float(ce["mean"]) == pytest.approx(next(c for c in report.accuracy if c.method == "CE").mean)
    assert {r["table"] for r in rows} == {"test_acc", "mem_wrong_memorized"}
    pytest.importorskip("matplotlib")
    assert (tmp_path / "rep" / "report.png").stat().st_size > 0


def test_readme_sweep_example_expands():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Baselines, sweeps and reports", 1)[1]
    raw = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    specs = {s.name: s.config for s in Sweep.from_dict(raw, root=CONFIGS, overrides=["data.root=/x"]).expand()}
    assert len(specs) == 4 * 2 * 5
    assert specs["ELR-cosine/asymmetric-0.4/seed-0"].loss.params == {"lam": 1.0, "beta": 0.9}
    assert specs["ELR/symmetric-0.4/seed-0"].loss.params == {"lam": 3.0, "beta": 0.7}
    assert specs["CE/asymmetric-0.4/seed-0"].loss.params == {} and specs["CE/asymmetric-0.4/seed-0"].optim.epochs == 150
