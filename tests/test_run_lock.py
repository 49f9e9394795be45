"""One process per run directory: the lock, two processes on one folder, and the run directory's leftovers.

Processes are started by the tests and killed only by their own PID.
"""

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from elr import rundir
from elr.cli import main
from elr.config import Config
from elr.engine import Engine
from elr.runs import resume
from elr.two_stage import train  # elr.train: runs of one stage or two

DIGITS = """\
seed: 2
data: {dataset: digits, val_fraction: 0.1}
model: {name: mlp, hidden: [16]}
loss: {name: elr, lam: 3.0, beta: 0.7}
optim: {lr: 0.05, batch_size: 64, epochs: EPOCHS, schedule: constant}
device: cpu
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # every process of a comparison computes alike

# holds the lock of argv[1] until killed; says so on stdout first
HOLDER = textwrap.dedent("""
    import sys, time
    from elr import rundir
    with rundir.lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
""")

# imports everything, says "ready", waits for the file argv[1] to appear, then runs the script argv[2] with
# the arguments after it: processes started this way begin their work within milliseconds of each other
TOGETHER = textwrap.dedent("""
    import os, runpy, sys, time
    import torch
    torch.set_num_threads(1)
    import elr.cli, elr.experiments, elr.runs
    print("ready", flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.002)
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")
ELR_CLI = "import sys\nfrom elr.cli import main\nsys.exit(main(sys.argv[1:]))\n"
SWEEP = textwrap.dedent("""
    import json, sys
    from elr.experiments import Sweep, run_sweep
    print(json.dumps(run_sweep(Sweep.load("s.yaml"), sys.argv[1]).results()))
""")

# trains argv[1] into argv[2]; the checkpoint save of epoch 3 writes half its bytes, then SIGKILLs itself
KILLED_MID_SAVE = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    import elr.checkpoint as checkpoint
    from elr.config import Config
    from elr.runs import train
    real_save, saves = torch.save, []

    def half_then_die(obj, handle):
        saves.append(1)
        if len(saves) < 3:
            return real_save(obj, handle)
        handle.write(b"PK half a checkpoint")
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.torch.save = half_then_die
    train(Config.load(sys.argv[1]), sys.argv[2])
""")


def digits_yaml(folder: Path, epochs: int = 2) -> Path:
    path = folder / "D.yaml"
    path.write_text(DIGITS.replace("EPOCHS", str(epochs)))
    return path


def start_holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def run_together(tmp_path: Path, script: str, argvs: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Run ``script`` with each argument list, in processes that start it at the same moment."""
    go, path = tmp_path / "go", tmp_path / "script.py"
    path.write_text(script)
    procs = [subprocess.Popen([sys.executable, "-c", TOGETHER, str(go), str(path), *argv], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in argvs]
    for p in procs:
        assert p.stdout.readline() == "ready\n", p.communicate()[1][-2000:]
    go.touch()
    done = []
    for p, argv in zip(procs, argvs):
        out, err = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(argv, p.returncode, out, err))
    go.unlink()
    return done


@contextlib.contextmanager
def one_thread():
    """This process computes as the one-thread processes of :data:`TOGETHER` do (bitwise alike)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def epochs_of(run_dir: Path) -> list[dict]:
    """The per-epoch records without their timings."""
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rundir.read_metrics(run_dir)]


# ---- the lock itself ------------------------------------------------------------------------------


def test_second_process_is_refused_naming_the_holder_and_a_killed_holder_frees_the_folder(tmp_path):
    run = tmp_path / "run"
    holder = start_holder(run)
    try:
        record = json.loads((run / rundir.LOCK).read_text())
        assert record["pid"] == holder.pid and "time.sleep" not in record["command"]
        with pytest.raises(rundir.RunDirLockedError, match=rf"{run} is in use by another elr process \(pid "
                                                           rf"{holder.pid}, since ") as caught:
            with rundir.lock(run):
                pass
        assert caught.value.holder["pid"] == holder.pid and "\n" not in str(caught.value)
        copy = pickle.loads(pickle.dumps(caught.value))  # as a worker process would send it back
        assert (str(copy), copy.holder) == (str(caught.value), caught.value.holder)
        assert os.listdir(run) == [rundir.LOCK]  # the refused process changed nothing
    finally:
        stop(holder)
    # SIGKILL left the lock file behind, but the lock died with its process
    assert os.listdir(run) == [rundir.LOCK] and rundir.status(run).state == rundir.NEW
    with rundir.lock(run):
        assert json.loads((run / rundir.LOCK).read_text())["pid"] == os.getpid()
        with rundir.lock(run):  # re-entrant in one process
            pass
        assert (run / rundir.LOCK).exists()
    assert os.listdir(run) == []  # the lock file is gone; the folder, made by the holder, stays


def test_holder_names_who_holds_a_folder_without_touching_it(tmp_path):
    run = tmp_path / "run"
    assert rundir.holder(run) is None and not run.exists()
    holder = start_holder(run)
    try:
        assert rundir.holder(run)["pid"] == holder.pid
    finally:
        stop(holder)
    assert rundir.holder(run) is None  # the lock file a killed holder left holds nothing
    probe = "import sys\nfrom elr import rundir\nprint(rundir.holder(sys.argv[1])['pid'])"
    for folder_mode, lock_mode in ((0o755, 0o644), (0o775, 0o664), (0o777, 0o666)):
        run.chmod(folder_mode)  # whoever may write the folder may write its lock file: others must lock it too
        with rundir.lock(run):
            assert (run / rundir.LOCK).stat().st_mode & 0o777 == lock_mode
    with rundir.lock(run):
        assert rundir.holder(run) is None  # not another process; and asking does not drop this process's lock
        seen = subprocess.run([sys.executable, "-c", probe, str(run)], capture_output=True, text=True, timeout=60)
        assert seen.stdout.strip() == str(os.getpid()), seen.stderr


def test_lock_leaves_no_folder_behind_and_never_locks_what_is_not_a_folder(tmp_path):
    deep = tmp_path / "a" / "b" / "run"
    with pytest.raises(KeyError):
        with rundir.lock(deep):
            assert deep.is_dir()
            raise KeyError("refused input")
    assert os.listdir(tmp_path) == []  # every folder it made is gone again
    with rundir.lock(deep):
        (deep / "config.yaml").write_text("mine")
    assert os.listdir(deep) == ["config.yaml"]  # a folder that was written to stays, without the lock
    with rundir.lock(tmp_path / "absent", create=False):
        pass
    afile = tmp_path / "file"
    afile.write_text("x")
    with rundir.lock(afile):
        pass
    assert not (tmp_path / "absent").exists() and afile.read_text() == "x"


def test_a_user_file_that_looks_like_a_temporary_file_is_not_ours():
    assert rundir._is_leftover(".checkpoint.pt.1f3a9c2e", rundir.run_files())  # ours (hex)
    assert rundir._is_leftover(".config.yaml.k2_9mx7q", rundir.run_files())  # ours (tempfile.mkstemp, before)
    for name in (".config.yaml.bak", ".checkpoint.pt.1f3a9c2e.old", ".notes.txt.1f3a9c2e", "checkpoint.pt.1f3a9c2e"):
        assert not rundir._is_leftover(name, rundir.run_files()), name


# ---- two processes on one folder ------------------------------------------------------------------


def test_two_trains_on_one_folder_one_trains_and_equals_a_run_alone(tmp_path):
    config = digits_yaml(tmp_path, epochs=30)
    both = run_together(tmp_path, ELR_CLI, [["train", "--config", str(config), "--out", "X"]] * 2)
    assert sorted(r.returncode for r in both) == [0, 2], [r.stderr[-2000:] for r in both]
    winner, loser = sorted(both, key=lambda r: r.returncode)
    assert loser.stdout == "" and len(loser.stderr.splitlines()) == 1, loser.stderr
    assert loser.stderr.startswith("elr train: error: X is in use by another elr process (pid ")
    assert "script.py train --config" in loser.stderr  # the holder's command line
    assert winner.stderr.splitlines()[0] == "run directory: X" and "wrote X" in winner.stdout
    with one_thread():
        train(Config.load(config), tmp_path / "alone")
    assert len(epochs_of(tmp_path / "X")) == 30 and epochs_of(tmp_path / "X") == epochs_of(tmp_path / "alone")
    assert sorted(os.listdir(tmp_path / "X")) == sorted(os.listdir(tmp_path / "alone"))  # no lock file left


def _raw(epochs: int) -> dict:
    return {"seed": 2, "data": {"dataset": "digits", "val_fraction": 0.1}, "model": {"name": "mlp", "hidden": [16]},
            "optim": {"lr": 0.05, "batch_size": 64, "epochs": epochs, "schedule": "constant"}, "device": "cpu"}


def test_two_sweeps_on_one_folder_train_each_run_once(tmp_path):
    (tmp_path / "s.yaml").write_text(textwrap.dedent(f"""\
        name: pair
        config: {json.dumps(_raw(epochs=30))}
        grid: {{seed: [0, 1, 2]}}
        methods:
          CE: {{loss: {{name: ce}}}}
          ELR: {{loss: {{name: elr, lam: 3.0, beta: 0.7}}}}
        """))
    both = run_together(tmp_path, SWEEP, [["shared"], ["shared"]])
    assert [r.returncode for r in both] == [0, 0], [r.stderr[-3000:] for r in both]
    results = [json.loads(r.stdout.splitlines()[-1]) for r in both]
    names = sorted(results[0])
    assert len(names) == 6 and sorted(results[1]) == names
    for name in names:  # each run trained by exactly one of the two; the other left it or found it done
        got = sorted(r[name] for r in results)
        assert got in (["busy", "trained"], ["skipped", "trained"]), (name, got)
    assert any(r[n] == "busy" for r in results for n in names)  # they did meet

    from elr.experiments import Sweep, run_sweep

    with one_thread():
        alone = run_sweep(Sweep.load(tmp_path / "s.yaml"), tmp_path / "alone")
    assert set(alone.results().values()) == {"trained"}
    for name in names:
        a, b = tmp_path / "shared" / name, tmp_path / "alone" / name
        assert len(epochs_of(a)) == 30 and epochs_of(a) == epochs_of(b), name
        assert sorted(os.listdir(a)) == sorted(os.listdir(b)) and rundir.LOCK not in os.listdir(a)


def test_sweep_leaves_a_run_another_process_holds_and_says_so(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(textwrap.dedent(f"""\
        name: held
        config: {json.dumps(_raw(epochs=2))}
        grid: {{seed: [0, 1]}}
        """))
    holder = start_holder(tmp_path / "out" / "seed-1")
    try:
        capsys.readouterr()
        assert main(["sweep", str(sweep), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["new", "seed-0", "2", "epochs", "left"]
        assert lines[1].startswith(f"new       seed-1  2 epochs left (being trained by another process: pid {holder.pid}, "
                                   "since ")
        assert main(["sweep", str(sweep), "--out", str(tmp_path / "out")]) == 0
        out, err = capsys.readouterr()
        assert f"left seed-1 to the process that holds it (pid {holder.pid}, since " in err
        assert "sweep held: 1 trained, 1 busy" in out and "were left to it" in out
        assert os.listdir(tmp_path / "out" / "seed-1") == [rundir.LOCK]  # not touched
    finally:
        stop(holder)
    assert rundir.status(tmp_path / "out" / "seed-0").state == rundir.FINISHED
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "out")]) == 0  # the holder is gone: trained now
    assert capsys.readouterr().out.startswith("sweep held: 1 skipped, 1 trained")


def test_train_and_resume_refused_while_another_process_holds_the_folder(tmp_path, capsys):
    config = digits_yaml(tmp_path)
    run = tmp_path / "run"
    train(Config.load(config), run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    holder = start_holder(run)
    try:
        for args in (["train", "--resume", run], ["train", "--config", config, "--out", run]):
            capsys.readouterr()
            assert main(list(map(str, args))) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"elr train: error: {run} is in use by another elr process (pid {holder.pid}")
            assert len(err.splitlines()) == 1
    finally:
        stop(holder)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != rundir.LOCK} == before


# ---- the leftovers --------------------------------------------------------------------------------


def test_kill_mid_save_leaves_a_temporary_file_that_resume_removes(tmp_path):
    config = digits_yaml(tmp_path, epochs=5)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_SAVE, str(config), str(killed)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    temporary = [n for n in os.listdir(killed) if n.startswith(f".{rundir.CHECKPOINT}.")]
    assert len(temporary) == 1 and (killed / temporary[0]).read_bytes() == b"PK half a checkpoint"
    assert (killed / rundir.LOCK).exists()  # left by the killed process: blocks nothing
    st = rundir.status(killed)
    assert (st.state, st.epochs_done, st.extra) == (rundir.RESUMABLE, 2, ())
    with one_thread():
        resume(killed)
        train(Config.load(config), straight)
    assert sorted(os.listdir(killed)) == sorted(os.listdir(straight))  # no temporary file, no lock
    assert epochs_of(killed) == epochs_of(straight) and len(epochs_of(killed)) == 5


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_run_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        train(Config.load(digits_yaml(tmp_path)), tmp_path / "run")
    finally:
        os.umask(old)
    run = tmp_path / "run"
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir()}
    assert rundir.CHECKPOINT in modes and rundir.CONFIG in modes and rundir.SUMMARY in modes
    assert set(modes.values()) == {0o666 & ~umask}, modes
    assert run.stat().st_mode & 0o777 == 0o777 & ~umask


def test_cli_says_where_a_run_goes_which_epoch_it_resumes_and_what_ctrl_c_left(tmp_path, capsys, monkeypatch):
    config = digits_yaml(tmp_path, epochs=4)
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--out", str(run), "loss.lam=-1"]) == 2
    assert "run directory" not in capsys.readouterr().err and not run.exists()

    real_epoch = Engine.run_epoch

    def interrupted_after_two(self):
        if self.epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self)

    monkeypatch.setattr(Engine, "run_epoch", interrupted_after_two)
    assert main(["train", "--config", str(config), "--out", str(run)]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"run directory: {run}"
    assert err.splitlines()[-1] == f"interrupted; continue with `elr train --resume {run}`"
    monkeypatch.setattr(Engine, "run_epoch", real_epoch)

    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"resuming {run} from epoch 3 of 4"
    assert [line.split()[1] for line in err.splitlines()[1:]] == ["3/4", "4/4"]
    assert main(["train", "--resume", str(run)]) == 0
    assert capsys.readouterr().err.splitlines()[0] == f"{run} has trained all 4 epochs; writing its summary and plots again"
    assert len(rundir.read_metrics(run)) == 4 and not (run / rundir.LOCK).exists()


def test_ctrl_c_before_the_first_checkpoint_names_the_command_into_the_same_folder(tmp_path, capsys, monkeypatch):
    config = digits_yaml(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "run_epoch", interrupted)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["train", "--config", str(config), "optim.lr=0.04"]) == 130  # the default --out: a new name
    err = capsys.readouterr().err.splitlines()
    out = err[0].removeprefix("run directory: ")
    assert out.startswith("runs/D-") and rundir.status(tmp_path / out).state == rundir.UNSTARTED
    assert err[-1] == (f"interrupted before the first checkpoint; start it again with `elr train --config {config} "
                       f"--out {out} optim.lr=0.04`")

    # the name runs calls (imported from elr.prepare): a stop before anything is written
    monkeypatch.setattr("elr.runs.prepare_data", interrupted)
    assert main(["train", "--config", str(config), "--out", "early"]) == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted before anything was written to early"]
    assert not (tmp_path / "early").exists()


def test_resume_of_a_folder_that_does_not_exist_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="it does not exist"):
        resume(tmp_path / "absent")
    assert os.listdir(tmp_path) == []


def test_two_stage_runs_and_the_demo_take_the_lock_too(tmp_path):
    from elr.demo import run_demo

    raw = _raw(epochs=2)
    raw["loss"] = {"name": "forward", "transition": "estimate", "estimate_epochs": 1}
    two_stage = Config.from_dict(raw).validate()
    for held, refused in ((tmp_path / "fw", "fw"), (tmp_path / "fw" / rundir.STAGE1, f"fw/{rundir.STAGE1}")):
        holder = start_holder(held)
        try:
            with pytest.raises(rundir.RunDirLockedError, match=f"{tmp_path / refused} is in use"):
                train(two_stage, tmp_path / "fw")
        finally:
            stop(holder)
        assert [p.name for p in held.iterdir()] == [rundir.LOCK]  # nothing trained, nothing written
        assert rundir.status(tmp_path / "fw").state == (rundir.NEW if held.name == "fw" else rundir.UNSTARTED)
    # the stale locks of both stages block nothing: the run trains, and no lock file stays behind
    assert train(two_stage, tmp_path / "fw")["epochs"] == 2
    assert rundir.LOCK not in os.listdir(tmp_path / "fw") + os.listdir(tmp_path / "fw" / rundir.STAGE1)
    holder = start_holder(tmp_path / "demo" / "ce")
    try:
        with pytest.raises(rundir.RunDirLockedError, match="demo/ce is in use"):
            run_demo(tmp_path / "demo", epochs=2)
    finally:
        stop(holder)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["ce"]


def test_a_folder_this_process_cannot_write_is_read_without_a_lock(tmp_path, monkeypatch):
    import errno

    from elr.two_stage import train_or_resume

    config = Config.load(digits_yaml(tmp_path))
    run = tmp_path / "run"
    train(config, run)
    real_open = os.open

    def read_only(path, flags, *args):  # what a read-only mount answers to creating the lock file
        if str(path).endswith(rundir.LOCK):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    assert train_or_resume(config, run)[0] == "skipped"  # a finished run in a read-only folder is still skipped

    def disk_full(path, flags, *args):  # any other failure to make the lock file stops the process
        if str(path).endswith(rundir.LOCK):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        train_or_resume(config, run)


def test_a_passing_probe_is_waited_out_and_a_file_system_without_locks_trains_unlocked(tmp_path, monkeypatch, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.LOCK).write_text("")
    # another process asks who holds the folder (a shared lock for 0.2 s, longer than any real probe)
    probe = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import fcntl, os, sys, time
        fd = os.open(sys.argv[1], os.O_RDONLY)
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        print("probing", flush=True)
        time.sleep(0.2)
    """), str(run / rundir.LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout.readline().strip() == "probing"
        with rundir.lock(run):  # not refused: the lock is tried again until the probe lets go
            assert json.loads((run / rundir.LOCK).read_text())["pid"] == os.getpid()
    finally:
        stop(probe)

    import errno
    import fcntl

    def no_locks(fd, operation):  # Lustre without flock, NFS without its lock daemon
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    (run / rundir.LOCK).write_text('{"pid": 7, "host": "other"}')
    with rundir.lock(run):  # a lock file already there may be another host's: it stays, untouched
        pass
    assert json.loads((run / rundir.LOCK).read_text()) == {"pid": 7, "host": "other"}
    config = Config.load(digits_yaml(tmp_path))
    with caplog.at_level("WARNING", logger="elr.rundir"):
        assert train(config, tmp_path / "unlocked")["epochs"] == 2
    assert f"cannot lock {tmp_path / 'unlocked'} (No locks available)" in caplog.text
    assert rundir.LOCK not in os.listdir(tmp_path / "unlocked")


def test_a_lock_file_another_user_left_is_replaced_unless_held(tmp_path, monkeypatch):
    import errno

    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.LOCK).write_text('{"pid": 1}')
    real_open, refused = os.open, []

    def not_ours(path, flags, *args):  # root opens anything: play the user who may not write this file
        if str(path).endswith(rundir.LOCK) and flags & os.O_RDWR and not refused:
            refused.append(path)
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", not_ours)
    with rundir.lock(run):  # nobody holds the other user's file: it is replaced by this process's own
        assert refused and json.loads((run / rundir.LOCK).read_text())["pid"] == os.getpid()
    refused.clear()
    holder = start_holder(run)
    try:
        with pytest.raises(rundir.RunDirLockedError, match=f"pid {holder.pid}"):
            with rundir.lock(run):
                pass
    finally:
        stop(holder)


def test_lock_files_of_another_user_that_cannot_be_opened_stop_with_one_line(tmp_path, monkeypatch):
    import errno

    run = tmp_path / "run"
    run.mkdir()
    real_open, opens = os.open, []

    def refused(path, flags, *args):  # a security module refusing the lock file, readable or not
        if str(path).endswith(rundir.LOCK):
            opens.append(flags)
            assert len(opens) < 1000, "the lock spins"
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refused)
    with pytest.raises(FileExistsError, match=f"{run / rundir.LOCK} belongs to another user and cannot be read"):
        with rundir.lock(run):
            pass
    (run / rundir.LOCK).unlink(missing_ok=True)

    def refused_write_only(path, flags, *args):  # no lock file there, yet opening one is refused
        if str(path).endswith(rundir.LOCK) and flags & os.O_RDWR:
            opens.append(flags)
            assert len(opens) < 1000, "the lock spins"
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refused_write_only)
    opens.clear()
    with pytest.raises(PermissionError, match="Permission denied"):
        with rundir.lock(run):
            pass
    assert 1 < len(opens) <= 25  # tried again a bounded number of times, then said why


def test_rank_0_errors_reach_the_other_ranks_as_builtin_exceptions():
    from elr.distributed import _builtin_name

    assert _builtin_name(rundir.RunDirLockedError(Path("x"), None)) == "FileExistsError"
    assert _builtin_name(NotADirectoryError("x")) == "NotADirectoryError"
    assert _builtin_name(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")) == "UnicodeError"

    class Odd(Exception):  # a class the other ranks could not import
        def __init__(self, a, b):
            super().__init__(a, b)

    assert _builtin_name(Odd(1, 2)) == "Exception"
