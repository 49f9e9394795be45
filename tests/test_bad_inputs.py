"""Every bad input and fault through the CLI: exit status 2, one line naming what is wrong, no traceback.

Each case runs ``elr.cli.main([...])`` in this process on a shared workspace of tiny files, and
checks what the README promises: exit status 2; one line on stderr, ``elr <command>: error: ...``,
naming the argument or file (a case's pattern); no traceback; no run folder left that the same
command, corrected, would refuse; and no file that existed before changed.
"""

import errno
import hashlib
import json
import os
import pickle
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elr import rundir
from elr.cli import main

TINY = ["data.dataset=npz", "model.name=mlp", "model.hidden=[8]", "optim.epochs=1", "optim.batch_size=16",
        "device=cpu", "noise.rate=0.2", "data.val_fraction=0.1"]


class Workspace:
    """Tiny data files, configs and runs, made once; each case writes only into its own ``out/`` folder."""

    def __init__(self, root: Path):
        self.root = root
        rng = np.random.default_rng(0)
        self.good = self.npz("good")
        (root / "tiny.yaml").write_text("seed: 0\nmonitor: {memorization: true}\n")
        self.config = str(root / "tiny.yaml")
        # a finished run, and copies of it to damage
        assert main(["train", "--config", self.config, "--out", str(root / "finished"), f"data.root={self.good}",
                     *TINY]) == 0
        assert main(["train", "--config", self.config, "--out", str(root / "finished_ce"),
                     f"data.root={self.good}", *TINY, "loss.name=ce"]) == 0
        for name in ("random_checkpoint", "empty_checkpoint", "newer_checkpoint", "newer_config"):
            shutil.copytree(root / "finished", root / name)
        (root / "random_checkpoint" / rundir.CHECKPOINT).write_bytes(rng.bytes(3000))
        (root / "empty_checkpoint" / rundir.CHECKPOINT).write_bytes(b"")
        import torch

        torch.save({"format": 99}, root / "newer_checkpoint" / rundir.CHECKPOINT)
        config = root / "newer_config" / rundir.CONFIG
        config.write_text("# elr 9.0.0, torch 9.0, numpy 9.0\n" + config.read_text().split("\n", 1)[1]
                          + "future_section: {wings: 2}\n")
        # a CIFAR-10 folder: one truncated batch, and a copy with a batch that asks to run a command
        self.cifar = root / "cifar" / "cifar-10-batches-py"
        self.cifar.mkdir(parents=True)
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (self.cifar / name).write_bytes(pickle.dumps(batch, protocol=2))
        (self.cifar / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}))
        shutil.copytree(root / "cifar", root / "cifar_tampered")
        (self.cifar / "data_batch_3").write_bytes((self.cifar / "data_batch_3").read_bytes()[:500])
        (root / "cifar_tampered" / "cifar-10-batches-py" / "data_batch_2").write_bytes(
            pickle.dumps({b"data": _Command()}, protocol=2))
        # image files: a folder set with one unreadable image, and CSV lists
        from PIL import Image

        for part, n in (("train", 6), ("test", 2)):
            for c, colour in enumerate(("red", "blue")):
                for i in range(n):
                    path = root / "images" / part / f"class{c}" / f"{i}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", (8, 8), colour).save(path)
        (root / "images" / "train" / "class1" / "9.png").write_bytes(b"not a png")
        (root / "lists").mkdir()
        (root / "lists" / "mixed.csv").write_text("a.png,cat\nb.png,dog\nc.png,1\n")
        (root / "lists" / "test.csv").write_text("a.png,cat\nb.png,bird\n")
        (root / "lists" / "test_ok.csv").write_text("a.png,cat\nb.png,dog\n")
        (root / "lists" / "train.csv").write_text("a.png,cat\nb.png,dog\n")
        for name in ("a.png", "b.png", "c.png"):
            Image.new("RGB", (8, 8), "red").save(root / "lists" / name)
        # feature tables
        (root / "tables").mkdir()
        rows = "".join(f"{i},{i % 5},{'ab'[i % 2]}\n" for i in range(20))
        (root / "tables" / "nan.csv").write_text("f1,f2,label\n" + rows + "3,nan,a\n")
        (root / "tables" / "ragged.csv").write_text("f1,f2,label\n" + rows + "3,a\n")
        (root / "tables" / "words.csv").write_text("f1,f2,label\n" + rows + "3,four,a\n")
        # configs and other files
        (root / "empty.yaml").write_text("")
        (root / "list.yaml").write_text("- a\n- b\n")
        (root / "broken.yaml").write_text("optim: {lr: [\n")
        (root / "not_a_zip.npz").write_bytes(b"\x80\x04 pickled, perhaps")
        np.savez(root / "keys.npz", x_train=np.zeros((4, 2)), y_train=np.zeros(4, int))
        (root / "demo").mkdir()
        (root / "demo" / rundir.SUMMARY).write_text(json.dumps({"setting": "digits", "rows": []}))
        shutil.copytree(root / "finished", root / "damaged_summary")
        (root / "damaged_summary" / rundir.SUMMARY).write_text('{"epochs": 1')
        (root / "sweep.yaml").write_text(
            f"name: s\nbase: tiny.yaml\nconfig: {{data: {{dataset: npz, root: {self.good}}}, model: {{name: mlp}}}}\n"
            "methods:\n  ELR: {loss: {name: elr, lam: -3}}\ngrid: {seed: [0]}\n")
        (root / "sweep_typo.yaml").write_text("name: s\nbase: tiny.yaml\ngrids: {seed: [0]}\n")

    def npz(self, name: str, **over) -> str:
        rng = np.random.default_rng(1)
        arrays = {"x_train": rng.normal(size=(60, 4)).astype(np.float32), "y_train": np.arange(60) % 3,
                  "x_test": rng.normal(size=(30, 4)).astype(np.float32), "y_test": np.arange(30) % 3, **over}
        path = self.root / f"{name}.npz"
        np.savez(path, **arrays)
        return str(path)

    def train(self, case: str, *over: str, data: str | None = None) -> list[str]:
        return ["train", "--config", self.config, "--out", str(self.out(case)), f"data.root={data or self.good}",
                *TINY, *over]

    def table(self, case: str, name: str, *over: str) -> list[str]:
        return self.train(case, "data.dataset=features", "data.test_fraction=0.5", *over,
                          data=str(self.root / "tables" / name))

    def out(self, case: str) -> Path:
        return self.root / "out" / re.sub(r"\W+", "_", case)


class _Command:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def _x_with(value):
    x = np.random.default_rng(2).normal(size=(60, 4)).astype(np.float32)
    x[7, 1] = value
    return x


def _simulate_read_only(monkeypatch, ws):
    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(ws.root / "out" / "read_only")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def _simulate_full_disk(monkeypatch, ws):
    from elr import checkpoint

    def write(self, data):  # the first checkpoint's write finds the disk full
        self.error = OSError(errno.ENOSPC, "No space left on device")
        raise self.error

    monkeypatch.setattr(checkpoint._KeepWriteError, "write", write)


# (case, argv from the workspace, pattern the error line must match, optional fault to simulate)
CASES = [
    # labels and features, checked where the data are read
    ("label beyond the classes", lambda w: w.train("y12", data=w.npz("y12", y_train=np.r_[np.arange(59) % 3, 12])),
     r"y12\.npz: y_train has no example of class 3 of 0 \.\. 12"),
    ("test class the training set lacks", lambda w: w.train("yt", data=w.npz("yt", y_test=np.r_[np.arange(29) % 3, 3])),
     r"yt\.npz: y_test holds label 3 at position 29, a class no y_train label has"),
    ("negative label", lambda w: w.train("neg", data=w.npz("neg", y_train=np.r_[-1, np.arange(59) % 3])),
     r"neg\.npz: y_train must hold class indices >= 0, found -1 at position 0"),
    ("float labels", lambda w: w.train("flt", data=w.npz("flt", y_train=(np.arange(60) % 3) * 1.0)),
     r"flt\.npz: y_train must hold integer class indices .* store y_train\.astype\(np\.int64\)"),
    ("labels of another length", lambda w: w.train("len", data=w.npz("len", y_train=np.arange(59) % 3)),
     r"len\.npz: y_train must hold one label per row of x_train \(60\), got shape \(59,\)"),
    ("NaN features", lambda w: w.train("nan", data=w.npz("nan", x_train=_x_with(np.nan))),
     r"nan\.npz: x_train holds 1 NaN or infinite values \(the first at row 7, column 1"),
    ("infinite features", lambda w: w.train("inf", data=w.npz("inf", x_test=_x_with(np.inf)[:30])),
     r"inf\.npz: x_test holds 1 NaN or infinite values"),
    ("file that is not an npz", lambda w: w.train("nz", data=str(w.root / "not_a_zip.npz")),
     r"not_a_zip\.npz: not an \.npz archive"),
    ("npz without the test arrays", lambda w: w.train("keys", data=str(w.root / "keys.npz")),
     r"keys\.npz: missing key\(s\) \['x_test', 'y_test'\]"),
    ("missing data file", lambda w: w.train("nofile", data=str(w.root / "nowhere.npz")),
     r"npz file .*nowhere\.npz not found"),
    ("CSV mixing names and indices", lambda w: w.train("csv", "data.dataset=csv", "data.label_file=mixed.csv",
                                                       "data.test_label_file=test_ok.csv", data=str(w.root / "lists")),
     r"mixed\.csv line 3: label '1' is a class index but .*mixed\.csv line 1 has the name 'cat'"),
    ("CSV test label no training line has", lambda w: w.train(
        "csv2", "data.dataset=csv", "data.label_file=train.csv", "data.test_label_file=test.csv",
        data=str(w.root / "lists")), r"test\.csv line 2: unknown label 'bird'"),
    ("table with a NaN feature", lambda w: w.table("tnan", "nan.csv"),
     r"nan\.csv line 22, column 'f2': 'nan' \(1 NaN or infinite values in all\); features must be finite numbers"),
    ("table with a short row", lambda w: w.table("tragged", "ragged.csv"),
     r"ragged\.csv line 22: 2 fields, but the header \(line 1\) names 3 columns"),
    ("table with a word among the features", lambda w: w.table("twords", "words.csv"),
     r"words\.csv line 22, column 'f2': 'four' is not a number"),
    ("table without the label column", lambda w: w.table("tcol", "nan.csv", "data.label_column=kind"),
     r"nan\.csv: no column 'kind' \(data\.label_column\); the header names: f1, f2, label"),
    ("truncated CIFAR pickle", lambda w: w.train("cifar", "data.dataset=cifar10", data=str(w.cifar.parent)),
     r"data_batch_3: not a readable CIFAR pickle, truncated or damaged"),
    ("tampered CIFAR pickle", lambda w: w.train("cifar2", "data.dataset=cifar10",
                                                data=str(w.root / "cifar_tampered")),
     r"data_batch_2: refusing to load global posix\.system"),
    # the config
    ("model of images on feature vectors", lambda w: ["train", "--config", str(w.root / "empty.yaml"), "--out",
                                                      str(w.out("resnet")), "model.name=resnet8"],
     r"model\.name=resnet8 takes images .* data\.dataset=digits gives feature vectors of 64 values"),
    ("config file missing", lambda w: ["train", "--config", str(w.root / "none.yaml")], r"config file not found: .*none\.yaml"),
    ("config that is a list", lambda w: ["train", "--config", str(w.root / "list.yaml")],
     r"list\.yaml: the top level of a config must be a mapping"),
    ("config that is not YAML", lambda w: ["train", "--config", str(w.root / "broken.yaml")],
     r"broken\.yaml: not valid YAML"),
    ("epochs as a word", lambda w: w.train("ten", "optim.epochs=ten"), r"optim\.epochs must be an integer, got 'ten'"),
    ("negative epochs", lambda w: w.train("negep", "optim.epochs=-3"), r"optim\.epochs must be an integer >= 1, got -3"),
    ("unknown data set", lambda w: w.train("mnist", "data.dataset=mnist"), r"data\.dataset must be one of .*'mnist'"),
    ("misspelt key", lambda w: w.train("lrr", "optim.lrr=0.1"), r"unknown key optim\.lrr in optim; did you mean optim\.lr\?"),
    ("negative lam", lambda w: w.train("lam", "loss.lam=-3"), r"loss\.lam must be a finite number >= 0, got -3"),
    ("beta as a word", lambda w: w.train("beta", "loss.beta=high"), r"loss\.beta must lie in \[0, 1\), got 'high'"),
    ("a layer of no units", lambda w: w.train("hidden", "model.hidden=[0]"), r"model\.hidden entry must be an integer >= 1"),
    ("override without a value", lambda w: w.train("noeq", "optim.lr"), r"override 'optim\.lr' must look like key=value"),
    ("a rate for human noise", lambda w: w.train("cn", "noise.type=cifar10n", "noise.label_set=worst", "noise.rate=0.4"),
     r"noise\.rate has no meaning for noise\.type=cifar10n"),
    ("validation share of 1.5", lambda w: w.train("vf", "data.val_fraction=1.5"), r"data\.val_fraction must lie in \[0\.0, 1\.0\)"),
    ("resume with overrides", lambda w: ["train", "--resume", str(w.root / "finished"), "optim.lr=1"],
     r"--resume takes only the run directory"),
    ("neither config nor resume", lambda w: ["train"], r"give --config FILE .* or --resume RUN_DIR"),
    ("unknown option", lambda w: ["train", "--config", w.config, "--bogus"], r"unrecognized arguments: --bogus"),
    # run directories and checkpoints
    ("out holding a finished run", lambda w: ["train", "--config", w.config, "--out", str(w.root / "finished"),
                                              f"data.root={w.good}", *TINY], r"finished holds a finished run"),
    ("resume of nothing", lambda w: ["train", "--resume", str(w.root / "nowhere")],
     r"nowhere is not a run directory: it does not exist"),
    ("random-bytes checkpoint", lambda w: ["eval", str(w.root / "random_checkpoint")],
     r"random_checkpoint/checkpoint\.pt is not a checkpoint elr wrote \(unreadable"),
    ("zero-byte checkpoint", lambda w: ["train", "--resume", str(w.root / "empty_checkpoint")],
     r"empty_checkpoint/checkpoint\.pt is not a checkpoint elr wrote \(an empty file\)"),
    ("checkpoint of a newer format", lambda w: ["eval", str(w.root / "newer_checkpoint")],
     r"written by a newer elr \(checkpoint format 99"),
    ("run folder of a newer elr", lambda w: ["eval", str(w.root / "newer_config")],
     r"newer_config.* elr 9\.0\.0"),
    ("eval of a folder that is no run", lambda w: ["eval", str(w.root / "lists")], r"lists is not a run directory"),
    # the other commands
    ("detect on a cross-entropy run", lambda w: ["detect", str(w.root / "finished_ce")],
     r"finished_ce was trained with loss\.name=ce, which keeps no per-example targets"),
    ("detect --top -1", lambda w: ["detect", str(w.root / "finished"), "--top", "-1"], r"--top must be a count >= 0"),
    ("report on a demo's folder", lambda w: ["report", str(w.root / "demo")], r"no summary\.json \(finished run\) under"),
    ("report on a damaged summary", lambda w: ["report", str(w.root / "damaged_summary"), "--out", str(w.out("rep"))],
     r"damaged_summary/summary\.json: not the summary of a finished run"),
    ("sweep file missing", lambda w: ["sweep", str(w.root / "none.yaml")], r"sweep file not found"),
    ("sweep with lam -3, dry run", lambda w: ["sweep", str(w.root / "sweep.yaml"), "--dry-run", "--out", str(w.out("sw"))],
     r"run ELR/seed-0: loss\.lam must be a finite number >= 0, got -3"),
    ("sweep --jobs 0", lambda w: ["sweep", str(w.root / "sweep.yaml"), "--jobs", "0"], r"--jobs must be a count >= 1"),
    ("sweep file key misspelt", lambda w: ["sweep", str(w.root / "sweep_typo.yaml")],
     r"unknown key 'grids' in the sweep file; did you mean grid\?"),
    ("theory with n=-5", lambda w: ["theory", "--out", str(w.out("th")), "n=-5"], r"n must be an integer >= 2"),
    ("theory key misspelt", lambda w: ["theory", "--out", str(w.out("th2")), "sigmaa=1"], r"did you mean sigma\?"),
    ("demo of no epochs", lambda w: ["demo", "--out", str(w.out("demo")), "--epochs", "0"], r"--epochs must be a count >= 1"),
    ("demo on no threads", lambda w: ["demo", "--out", str(w.out("demo")), "--threads", "0"],
     r"--threads must be auto or a count >= 1, got 0"),
    ("train with threads of a word", lambda w: w.train("threads", "threads=many"),
     r"threads must be auto or an integer >= 1, got 'many'"),
    ("plot of no run", lambda w: ["plot", str(w.root / "nowhere"), "--out", str(w.out("plot") / "f.png")],
     r"nowhere is not a run directory: it does not exist"),
    # faults of the machine
    ("read-only --out", lambda w: w.train("read_only"), r"read_only: Read-only file system \(choose a folder you can write\)"
     r"; stopped before anything was written", _simulate_read_only),
    ("disk full at the first checkpoint", lambda w: w.train("full"),
     r"full/checkpoint\.pt: No space left on device .*; stopped before the first checkpoint; start it again with "
     r"`elr train --config", _simulate_full_disk),
    ("unreadable image", lambda w: w.train("image", "data.dataset=image_folder", "data.image_size=8", "data.crop_size=8",
                                           "optim.batch_size=4", data=str(w.root / "images")),
     r"cannot read image .*class1/9\.png"),
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("bad_inputs"))


def _files(root: Path, skip: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and skip not in p.parents}


def test_the_table_has_thirty_cases_or_more_as_the_readme_says():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"`tests/test_bad_inputs.py` walks {len(CASES)} such inputs" in readme


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, ws, capsys, monkeypatch):
    name, argv, pattern, *fault = case
    argv = argv(ws)
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    before = _files(ws.root, ws.root / "out")
    if fault:
        fault[0](monkeypatch, ws)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("elr ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert re.match(rf"elr {argv[0]}: error: ", errors[0]), errors[0]
    assert re.search(pattern, errors[0]), errors[0]
    assert "weights_only" not in errors[0]  # never the advice to unpickle what a file holds
    # anything else on stderr is the run's own progress: it says where the run went
    assert all(line.startswith("run directory: ") for line in lines[:-1]), err
    assert _files(ws.root, ws.root / "out") == before  # nothing that was there changed
    if argv[0] == "train" and out is not None and out.parent == ws.root / "out":
        assert rundir.status(out).state in (rundir.NEW, rundir.UNSTARTED)  # the same command, corrected, runs


def test_corrected_commands_run_where_the_bad_ones_stopped(ws, capsys, monkeypatch):
    """A bad data file stopped before anything was written; a full disk left an unstarted folder:
    the same command with the input corrected (or the disk freed) trains into the same folder."""
    bad = CASES[[c[0] for c in CASES].index("label beyond the classes")][1](ws)
    assert main(bad) == 2
    fixed = [a if not a.startswith("data.root=") else f"data.root={ws.good}" for a in bad]
    assert main(fixed) == 0
    full = ws.train("full again")
    with monkeypatch.context() as patch:
        _simulate_full_disk(patch, ws)
        assert main(full) == 2
    assert rundir.status(ws.out("full again")).state == rundir.UNSTARTED
    assert main(full) == 0
    assert rundir.status(ws.out("full again")).state == rundir.FINISHED


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_a_real_failed_write_is_one_line_and_the_same_command_then_runs(ws, tmp_path):
    """A process whose files may not grow past 40 kB: the first checkpoint's write really fails (EFBIG)."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "elr", "train", "--config", ws.config, "--out", str(out),
               f"data.root={ws.good}", *TINY, "model.hidden=[256]"]

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=limit, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(r"^elr train: error: .*run/checkpoint\.pt: File too large .*stopped before the first checkpoint",
                     done.stderr.splitlines()[-1])
    assert rundir.status(out).state == rundir.UNSTARTED
    assert not [p.name for p in out.iterdir() if p.name.startswith(".checkpoint")]  # no half-written file left
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr


def test_a_run_whose_data_now_read_as_other_classes_is_refused_in_one_line(ws, tmp_path, capsys):
    """Earlier elr read a .npz without class_names and fewer than 10 labels as the 10 CIFAR-10 classes."""
    run = tmp_path / "old"
    shutil.copytree(ws.root / "finished", run)
    classes = json.loads((run / rundir.CLASSES).read_text())
    (run / rundir.CLASSES).write_text(json.dumps({**classes, "class_names": [f"c{i}" for i in range(10)]}))
    for argv in (["eval", str(run)], ["train", "--resume", str(run)]):  # (detect reads the run's files alone)
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert re.fullmatch(rf"elr {argv[0]}: error: .*old was trained on 10 classes \(classes\.json\) but its data "
                            r"now read as 3: .*\n", err), err
