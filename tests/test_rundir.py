"""Run directories: each status, no dead folders after bad input or a kill, user files never touched."""

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from elr import rundir
from elr.cli import main
from elr.config import Config
from elr.runs import train, train_or_resume
from test_elr_plus import assert_same_state

SRC = Path(__file__).resolve().parents[1] / "src" / "elr"
DIGITS = """\
seed: 2
data: {dataset: digits, val_fraction: 0.1}
model: {name: mlp, hidden: [16]}
loss: {name: elr, lam: 3.0, beta: 0.7}
optim: {lr: 0.05, batch_size: 64, epochs: 2, schedule: constant}
device: cpu
"""


@pytest.fixture
def digits_yaml(tmp_path):
    path = tmp_path / "D.yaml"
    path.write_text(DIGITS)
    return path


def config():
    return Config.from_dict({"data": {"dataset": "digits", "val_fraction": 0.1}, "model": {"name": "mlp", "hidden": [16]},
                             "optim": {"epochs": 2, "batch_size": 64}, "device": "cpu"}).validate()


def cli(capsys, *args):
    """Exit status and stderr of one `elr` command run in this process."""
    capsys.readouterr()
    code = main(list(map(str, args)))
    return code, capsys.readouterr().err


def one_error_line(err):
    """The command's error: exactly one line, and no traceback."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ---- statuses ----------------------------------------------------------------------------------------


def test_each_status(tmp_path):
    cfg = config()
    assert rundir.status(tmp_path / "absent").state == rundir.NEW
    (tmp_path / "empty").mkdir()
    assert rundir.status(tmp_path / "empty").state == rundir.NEW

    unstarted = tmp_path / "unstarted"  # what a kill before the first checkpoint leaves
    unstarted.mkdir()
    rundir.write_config(unstarted, cfg)
    rundir.write_noisy_labels(unstarted, np.arange(5))
    (unstarted / ".checkpoint.pt.k2j9m4n8").write_bytes(b"half a checkpoint")
    st = rundir.status(unstarted)
    assert (st.state, st.epochs, st.epochs_done) == (rundir.UNSTARTED, 2, 0)
    temp_only = tmp_path / "temp_only"  # killed while writing the first file
    temp_only.mkdir()
    (temp_only / ".config.yaml.a1b2c3d4").write_text("seed: ")
    assert rundir.status(temp_only).state == rundir.UNSTARTED

    finished = tmp_path / "finished"
    train(cfg, finished)
    st = rundir.status(finished)
    assert (st.state, st.epochs, st.epochs_done, st.extra) == (rundir.FINISHED, 2, 2, ())
    (finished / "notes.txt").write_text("mine")  # a user's note in a run: left alone, still the run
    assert rundir.status(finished).extra == ("notes.txt",)
    summary = json.loads((finished / "summary.json").read_text())
    (finished / "summary.json").write_text(json.dumps({**summary, "epochs": 1}))  # one epoch short
    st = rundir.status(finished)
    assert (st.state, st.extra) == (rundir.RESUMABLE, ("notes.txt",))
    (finished / "summary.json").write_text(json.dumps(summary))
    (finished / "checkpoint.pt").unlink()  # deleted to save space: its results still make it finished
    assert rundir.status(finished).state == rundir.FINISHED
    (finished / "summary.json").unlink()  # epochs recorded, no checkpoint: nothing may replace them
    st = rundir.status(finished)
    assert st.state == rundir.FOREIGN and "2 epoch(s) of a run whose checkpoint.pt is gone" in st.reason


@pytest.mark.parametrize("files, named", [
    ({"notes.txt": "mine"}, "notes.txt"),
    ({"summary.json": "{}", "accuracy.png": "png"}, "accuracy.png"),  # our names, but no run of ours
    ({"config.yaml": "seed: 1\n"}, "config.yaml"),  # a user's own config, not written by elr
    ({"checkpoint.pt": "weights"}, "checkpoint.pt"),
])
def test_foreign_folders_are_named(tmp_path, files, named):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    st = rundir.status(tmp_path)
    assert st.state == rundir.FOREIGN and repr(named) in st.reason
    assert rundir.decide(config(), tmp_path).action == "refuse"
    (tmp_path / "file").write_text("x")
    assert rundir.status(tmp_path / "file").reason == "is a file, not a folder"


def test_registered_names_are_ours_and_stage1_counts_as_started(tmp_path):
    (tmp_path / "later_feature.bin").write_bytes(b"x")
    rundir.write_config(tmp_path, config())
    assert rundir.status(tmp_path).state == rundir.FOREIGN
    try:
        rundir.register("later_feature.bin", "a later feature's file")
        assert rundir.status(tmp_path).state == rundir.UNSTARTED
    finally:
        rundir._REGISTRY.pop("later_feature.bin")
    with pytest.raises(ValueError, match="plain, visible name"):
        rundir.register("a/b", "nested")
    # a two-stage run killed in stage 1: only stage1_ce/ (itself a run) exists
    two = tmp_path / "two"
    rundir.write_config(rundir.stage1_dir(two), config())
    assert rundir.status(two).state == rundir.UNSTARTED
    (rundir.stage1_dir(two) / "mine.txt").write_text("x")  # a stage1_ce of someone else's is not ours
    assert rundir.status(two).state == rundir.FOREIGN


def test_clear_removes_only_our_files_and_keeps_stage1(tmp_path):
    rundir.write_config(tmp_path, config())
    rundir.write_noise(tmp_path, {"noise_rate": 0.4})
    (tmp_path / ".noise.json.zz09ab12").write_text("{")
    rundir.write_config(rundir.stage1_dir(tmp_path), config())
    rundir.clear(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage1_ce"]
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="foreign, not unstarted"):
        rundir.clear(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_decide_and_config_difference(tmp_path):
    cfg = config()
    run = tmp_path / "run"
    assert rundir.decide(cfg, run).action == "train"
    train(cfg, run)
    assert rundir.decide(cfg, run).action == "skip"
    other_device = Config.from_dict({**cfg.to_dict(), "device": "cuda", "eval_batch_size": 7}).validate()
    assert rundir.config_difference(other_device, rundir.read_config(run)) == []  # runtime keys only
    other = Config.from_dict({**cfg.to_dict(), "seed": 9, "optim": {**cfg.to_dict()["optim"], "lr": 0.5}})
    decision = rundir.decide(other, run)
    assert decision.action == "refuse" and decision.reason.endswith("(differs in: optim, seed)")
    stored = rundir.read_config(run).to_dict()
    del stored["elr_plus"]  # a run written before a section existed is completed with its defaults
    assert rundir.config_difference(cfg, stored) == []
    (run / "summary.json").unlink()
    assert rundir.decide(cfg, run).action == "resume"


def test_readers_and_writers_round_trip(tmp_path):
    rundir.write_classes(tmp_path, ["cat", "dog"], {"Cat": 0, "Dog": 1})
    assert rundir.read_classes(tmp_path) == {"class_names": ["cat", "dog"], "label_to_index": {"Cat": 0, "Dog": 1}}
    rundir.write_metrics(tmp_path, [{"epoch": 1}, {"epoch": 2}])
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 3, "lo')  # a line cut short by a kill (older, non-atomic writers)
    assert rundir.read_metrics(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
    assert rundir.read_metrics(tmp_path / "absent") == [] and rundir.read_summary(tmp_path) is None
    t = np.array([[0.8, 0.2], [0.1, 0.9]])
    rundir.save_transition(tmp_path, t)
    assert np.array_equal(rundir.load_transition(tmp_path), t)
    rundir.write_noisy_labels(tmp_path, [3, 1, 2])
    labels = rundir.read_noisy_labels(tmp_path)
    assert labels.dtype == np.int64 and labels.tolist() == [3, 1, 2]
    assert rundir.read_sweep_record(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="is not a run directory: config.yaml is missing"):
        rundir.read_config(tmp_path)
    assert set(rundir.run_files()) >= {"config.yaml", "checkpoint.pt", "metrics.jsonl", "stage1_ce"}


def test_no_module_but_rundir_spells_a_run_file_name():
    names = set(rundir.run_files())
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "rundir.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found += [(path.name, node.lineno, name) for name in names
                          if re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", node.value)]
    assert found == []


# ---- train, resume or restart ----------------------------------------------------------------------------


def test_train_or_resume_by_status(tmp_path):
    cfg = config()
    run = tmp_path / "run"
    record = {"sweep": "s", "run": "r"}
    action, summary = train_or_resume(cfg, run, sweep_record=record)
    assert action == "trained" and rundir.read_sweep_record(run) == record
    action, again = train_or_resume(cfg, run)
    assert action == "skipped" and again == rundir.read_summary(run)
    (run / "summary.json").unlink()
    action, resumed = train_or_resume(cfg, run)
    assert action == "resumed" and resumed["last"]["test_acc"] == summary["last"]["test_acc"]
    leftover = tmp_path / "leftover"  # unstarted, written by another config: started over with this one
    rundir.write_config(leftover, Config.from_dict({**cfg.to_dict(), "seed": 5}))
    action, _ = train_or_resume(cfg, leftover)
    assert action == "restarted" and rundir.read_config(leftover).seed == cfg.seed
    with pytest.raises(FileExistsError, match="holds a run of another config"):
        train_or_resume(Config.from_dict({**cfg.to_dict(), "seed": 5}), run)


# ---- the dead-folder causes: one line, exit 2, then the corrected command trains ---------------------


@pytest.mark.parametrize("bad, message", [
    ("loss.lam=-1", "loss.lam must be a finite number >= 0, got -1"),
    ("loss.beta=1.0", "loss.beta must lie in [0, 1), got 1.0"),
])
def test_bad_loss_parameters_write_nothing(tmp_path, capsys, digits_yaml, bad, message):
    out = tmp_path / "X"
    code, err = cli(capsys, "train", "--config", digits_yaml, bad, "--out", out)
    assert code == 2 and one_error_line(err).endswith(message)
    assert not out.exists()
    code, err = cli(capsys, "train", "--config", digits_yaml, "--out", out)
    assert code == 0 and rundir.status(out).state == rundir.FINISHED


def test_divergence_leaves_an_unstarted_run_the_corrected_command_restarts(tmp_path, capsys, digits_yaml):
    out = tmp_path / "X"
    code, err = cli(capsys, "train", "--config", digits_yaml, "optim.lr=1e9", "--out", out)
    assert code == 2 and "diverged" in one_error_line(err)
    assert rundir.status(out).state == rundir.UNSTARTED and rundir.read_config(out).optim.lr == 1e9
    code, err = cli(capsys, "train", "--resume", out)
    assert code == 2 and one_error_line(err).endswith(
        f"never reached its first checkpoint: nothing to resume; start it again with "
        f"`elr train --config {out / 'config.yaml'} --out {out}`")
    code, err = cli(capsys, "train", "--config", digits_yaml, "--out", out)
    assert code == 0, err
    assert rundir.read_config(out).optim.lr == 0.05 and [r["epoch"] for r in rundir.read_metrics(out)] == [1, 2]


KILL_IN_FIRST_EPOCH = textwrap.dedent("""
    import os, signal, sys
    from elr.config import Config
    from elr.runs import train

    class KillInEpoch1:
        def epoch_start(self, epoch, epochs, batches):
            self.batch = 0
        def batch_end(self):
            self.batch += 1
            if self.batch == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        def epoch_end(self, record):
            pass

    train(Config.load(sys.argv[1]), sys.argv[2], progress=KillInEpoch1())
""")


def test_sigkill_before_the_first_checkpoint_then_the_same_command_trains(tmp_path, capsys, digits_yaml):
    out = tmp_path / "X"
    proc = subprocess.run([sys.executable, "-c", KILL_IN_FIRST_EPOCH, str(digits_yaml), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert rundir.status(out).state == rundir.UNSTARTED and not (out / "checkpoint.pt").exists()
    code, err = cli(capsys, "train", "--config", digits_yaml, "--out", out)
    assert code == 0, err
    assert rundir.status(out).state == rundir.FINISHED
    # the restarted run equals one trained in an empty folder
    straight = tmp_path / "straight"
    assert cli(capsys, "train", "--config", digits_yaml, "--out", straight)[0] == 0
    untimed = [[{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rundir.read_metrics(run)]
               for run in (out, straight)]
    assert len(untimed[0]) >= 2 and untimed[0] == untimed[1]  # every epoch's record, times aside
    np.testing.assert_array_equal(rundir.read_noisy_labels(out), rundir.read_noisy_labels(straight))
    assert_same_state(rundir.load_checkpoint(out)["method"], rundir.load_checkpoint(straight)["method"])
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in straight.iterdir())  # no leftovers


def test_corrupt_image_leaves_a_run_that_restarts_once_fixed(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for part, count in (("train", 6), ("test", 2)):
        for c, name in enumerate(("cat", "dog")):
            for k in range(count):
                path = root / part / name / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.clip(rng.integers(0, 60, (12, 12, 3)) + 150 * c, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(path)
    broken = root / "train" / "dog" / "3.png"
    good = broken.read_bytes()
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot an image")  # listed and present, fails only when decoded
    cfg = tmp_path / "I.yaml"
    cfg.write_text(f"data: {{dataset: image_folder, root: {root}, image_size: 12, crop_size: 10}}\n"
                   "model: {name: mlp, hidden: [8]}\noptim: {batch_size: 4, epochs: 1}\ndevice: cpu\n")
    out = tmp_path / "R"
    code, err = cli(capsys, "train", "--config", cfg, "--out", out)
    assert code == 2 and re.search(r"cannot read image \S*train/dog/3\.png", one_error_line(err))
    assert rundir.status(out).state == rundir.UNSTARTED
    broken.write_bytes(good)
    code, err = cli(capsys, "train", "--config", cfg, "--out", out)
    assert code == 0, err
    assert rundir.status(out).state == rundir.FINISHED


# ---- nothing of the user's is ever overwritten ---------------------------------------------------------


def test_a_folder_of_user_files_is_refused_and_left_byte_identical(tmp_path, capsys, digits_yaml):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "summary.json").write_text('{"my": "results"}\n')
    (folder / "accuracy.png").write_bytes(b"\x89PNG my figure")
    (folder / "notes.txt").write_text("do not touch\n")
    before = snapshot(folder)
    code, err = cli(capsys, "train", "--config", digits_yaml, "--out", folder)
    assert code == 2 and "'accuracy.png', which is not a file of an elr run" not in err
    assert one_error_line(err).endswith(
        "holds 'notes.txt', which is not a file of an elr run; choose another --out (an absent or empty folder)")
    code, err = cli(capsys, "demo", "--out", folder, "--epochs", "1")
    assert code == 2 and "holds 'accuracy.png', which is not the demo's" in one_error_line(err)
    assert cli(capsys, "train", "--resume", folder)[0] == 2
    (folder / "notes.txt").unlink()
    before.pop(Path("notes.txt"))
    code, err = cli(capsys, "train", "--config", digits_yaml, "--out", folder)
    assert code == 2 and "holds 'accuracy.png' but no config.yaml written by elr, so it is not a run" in err
    assert snapshot(folder) == before


def test_train_into_a_run_changes_nothing_and_names_the_command(tmp_path, capsys, digits_yaml):
    out = tmp_path / "X"
    assert cli(capsys, "train", "--config", digits_yaml, "--out", out)[0] == 0
    finished = snapshot(out)
    code, err = cli(capsys, "train", "--config", digits_yaml, "--out", out)
    assert code == 2 and one_error_line(err).endswith(
        f"{out} holds a finished run (2 epochs); inspect it with `elr eval {out}`, or choose another --out")
    assert snapshot(out) == finished
    (out / "summary.json").unlink()
    resumable = snapshot(out)
    code, err = cli(capsys, "train", "--config", digits_yaml, "optim.lr=0.01", "--out", out)
    assert code == 2 and one_error_line(err).endswith(
        f"{out} holds an unfinished run (2 of 2 epochs recorded); continue it with `elr train --resume {out}`, "
        "or choose another --out")
    assert snapshot(out) == resumable


def test_the_readme_table_names_every_run_file():
    readme = (SRC.parents[1] / "README.md").read_text()
    table = readme.split("### The run directory", 1)[1].split("**What `--out` does", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    listed = {name for cell in first_cells for name in re.findall(r"`([\w.]+)/?`", cell)}
    assert set(rundir.run_files()) == listed
    for state in rundir.STATUSES:  # and the status table names every status
        assert f"| `{state}` |" in readme
