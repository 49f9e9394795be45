"""Every file of a run directory: its names, their readers and writers, and the run's status.

No other module spells a run-directory file name. A run directory is one of

- ``new``: absent, or an empty folder;
- ``unstarted``: our files but no checkpoint and no epoch (killed, failed or diverged before its
  first epoch ended): training it again starts it over, and nothing of value is lost;
- ``resumable``: a checkpoint of an unfinished run;
- ``finished``: a summary of every epoch (with its checkpoint, or without when that was deleted);
- ``foreign``: a folder holding files that are not a run's, or epochs of a run whose checkpoint is
  gone; nothing is written into it.

Files of a resumable or finished run that are not ours (a user's notes) are left alone and do not
make it foreign. The names that count as ours are one registry (:func:`register`) that features adding
files to a run extend, so their runs never read as foreign.

One process at a time works in a run directory: :func:`lock` holds an exclusive lock on its
``.elr.lock`` file while a run is trained, resumed or restarted; a second process gets
:class:`RunDirLockedError` naming the holder and changes nothing.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import re
import socket
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # Windows: run directories are not locked
    fcntl = None

from .version import __version__
from .checkpoint import atomic_write_bytes, atomic_write_text
from .checkpoint import load_checkpoint as _load_checkpoint
from .checkpoint import save_checkpoint as _save_checkpoint
from .config import Config, ConfigError
from .label_issues import TopKProbs

log = logging.getLogger(__name__)

NEW, UNSTARTED, RESUMABLE, FINISHED, FOREIGN = "new", "unstarted", "resumable", "finished", "foreign"
STATUSES = (NEW, UNSTARTED, RESUMABLE, FINISHED, FOREIGN)

_REGISTRY: dict[str, str] = {}  # file or folder name -> what it holds


def register(name: str, what: str, *, hidden: bool = False) -> str:
    """Add ``name`` to the run's files (so a run holding it is not foreign) and return it.

    Names are visible (hidden ones start with the dot of the temporary files of atomic writes);
    only the lock file, which no status reads, is ``hidden``.
    """
    if not name or "/" in name or name.startswith(".") != hidden:
        raise ValueError(f"a run file name must be a plain, {'hidden' if hidden else 'visible'} name, got {name!r}")
    _REGISTRY[name] = what
    return name


def run_files() -> dict[str, str]:
    """Every registered name of a run directory and what it holds, in registration order."""
    return dict(_REGISTRY)


CONFIG = register("config.yaml", "the resolved config, headed by the elr/torch/numpy versions")
NOISY_LABELS = register("noisy_labels.npy", "the training labels used (whole training set before the split)")
NOISE = register("noise.json", "realised noise rate, per-class rates, confusion matrix, validation indices")
CLASSES = register("classes.json", "class names in label order and the mapping of labels given as names")
SWEEP_RECORD = register("sweep.json", "the sweep, method label and grid settings of a sweep's run")
METRICS = register("metrics.jsonl", "one JSON object per epoch")
CHECKPOINT = register("checkpoint.pt", "everything needed to continue, written atomically every epoch")
SUMMARY = register("summary.json", "last and selected results, best test accuracy, noise, versions")
ACCURACY_PLOT = register("accuracy.png", "training, validation and test accuracy per epoch")
MEMORIZATION_PLOT = register("memorization.png", "the memorization fractions per epoch (Figure 1) and, for ELR, how "
                             "well the targets find the wrong labels")
GRADIENT_PLOT = register("gradient_terms.png", "the gradient terms per epoch (Figure 2)")
TRANSITION = register("transition.npy", "two-stage Forward: the estimated transition matrix")
STAGE1 = register("stage1_ce", "two-stage Forward: the cross-entropy run that estimates T (a run directory)")
TARGETS = register("targets.npy", "ELR and ELR+: each training example's target (float32 (N, C), rows sum to 1, "
                   "noisy_labels.npy order; ELR+: the mean of its two networks' rows); rows without one hold the "
                   "final model's held-out prediction")
TARGETS_NET1 = register("targets_net1.npy", "ELR+ with two networks: network 1's targets, as targets.npy")
TARGETS_NET2 = register("targets_net2.npy", "ELR+ with two networks: network 2's targets, as targets.npy")
TARGETS_TOPK = register("targets_topk.npz", "loss.target_storage=topk: targets.npy's rows as their k largest "
                        "entries (values float32 (N, k), rows sum to 1; indices int32 (N, k); num_classes), "
                        "ELR+'s two networks as values_net1/indices_net1, values_net2/indices_net2")
TARGET_SOURCES = register("target_sources.npy", "where each row of the targets comes from (uint8 codes of "
                          "TARGET_SOURCE_NAMES: targets, held_out_model, unreadable, untrained)")
TARGETS_SELECTED = register("targets_selected.npz", "ELR and ELR+ with a validation set: targets.npy's rows at the "
                            "epoch the noisy validation accuracy selects (best val_acc so far), rewritten each time it "
                            "improves: targets (float32 (N, C)) or values/indices/num_classes (top-k), sources "
                            "(as target_sources.npy), epoch")
STANDARDIZATION = register("standardization.json", "data.standardize: each feature's mean and scale, fitted on the "
                           "training split when the run started (resume and `elr eval` scale with them)")
TRUE_LABELS = register("true_labels.npy", "the clean labels when known (synthetic noise, CIFAR-N, a true_label column)")
EXAMPLES = register("examples.csv", "image-file data: each training example's path (and list-file line)")
LABEL_ISSUES = register("label_issues.csv", "`elr detect`: every training example's verdict, most likely wrong first")
LABEL_ISSUES_PLOT = register("label_issues.png", "`elr detect` on images: the top suspects, given -> suggested label")
LOCK = register(".elr.lock", "while a process trains the run: its lock (holder's pid, host, start, command); removed "
                "when it ends, harmless when left by a killed one", hidden=True)
# the row sources of targets.npy, in code order: an ELR target; the final model's prediction of an
# example it never trained on (the validation split, or never drawn); an image that could not be read;
# (targets_selected.npz only) an example no class-balanced draw had picked by the selected epoch
TARGET_SOURCE_NAMES = ("targets", "held_out_model", "unreadable", "untrained")
NO_VERDICT_SOURCES = ("unreadable", "untrained")  # their rows are uniform stand-ins

# the first line of every config.yaml written here: it tells a run's config from a user's own file
_HEADER = "# elr "
# a run's config keys that may differ between runs of the same results (devices and speed switches)
RUNTIME_KEYS = ("device", "amp", "channels_last", "compile", "eval_batch_size", "threads")


# ---- status ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStatus:
    """What a folder holds: ``state`` is one of :data:`STATUSES`.

    ``reason`` says why a folder is foreign; ``extra`` lists the files of a run with a checkpoint
    that are not a run's (left alone); ``epochs_done`` counts the epochs in ``metrics.jsonl`` and
    ``epochs`` is what the run's config asks for (None when unknown).
    """

    path: Path
    state: str
    reason: str = ""
    extra: tuple[str, ...] = ()
    epochs_done: int = 0
    epochs: int | None = None


def status(run_dir: str | Path) -> RunStatus:
    """The status of ``run_dir`` (see the module docstring); reads file names and small files only."""
    path = Path(run_dir)
    if not path.exists():
        return RunStatus(path, NEW)
    if not path.is_dir():
        return RunStatus(path, FOREIGN, "is a file, not a folder")
    entries = sorted(e for e in os.listdir(path) if e != LOCK)  # the lock says who works here, not what
    if not entries:
        return RunStatus(path, NEW)
    own_config = _is_our_config(path / CONFIG)
    foreign, stage1 = _not_ours(path, entries, own_config)
    if own_config:
        epochs, done = _configured_epochs(path), len(read_metrics(path))
        summary = read_summary(path)
        # a finished run stays finished when its checkpoint is deleted to save space
        if epochs is not None and summary is not None and summary.get("epochs", 0) >= epochs:
            return RunStatus(path, FINISHED, extra=foreign, epochs_done=done, epochs=epochs)
        if has_checkpoint(path):
            return RunStatus(path, RESUMABLE, extra=foreign, epochs_done=done, epochs=epochs)
        if done:
            return RunStatus(path, FOREIGN, f"holds {done} epoch(s) of a run whose {CHECKPOINT} is gone: it can "
                                            "neither be resumed nor replaced without losing them", epochs_done=done,
                             epochs=epochs)
    if foreign:
        return RunStatus(path, FOREIGN, f"holds {foreign[0]!r}, which is not a file of an elr run")
    # a stage1_ce/ still empty (or holding only a lock) is the start of a two-stage run killed early
    if own_config or stage1 is not None or all(e.startswith(".") for e in entries):
        return RunStatus(path, UNSTARTED, epochs=_configured_epochs(path))
    shown = next(e for e in entries if not e.startswith("."))
    return RunStatus(path, FOREIGN, f"holds {shown!r} but no {CONFIG} written by elr, so it is not a run")


def _not_ours(path: Path, entries: list[str], own_config: bool) -> tuple[tuple[str, ...], str | None]:
    """The entries of ``path`` that are not a run's, and the status of its ``stage1_ce/`` (None: absent)."""
    stage1 = status(path / STAGE1).state if (path / STAGE1).is_dir() else None

    def ours(name: str) -> bool:
        if name == CONFIG:
            return own_config
        if name == STAGE1:
            return stage1 not in (None, FOREIGN)
        return (path / name).is_file() and (name in _REGISTRY or _is_leftover(name, _REGISTRY))

    return tuple(e for e in entries if not ours(e)), stage1


# the 8 random characters of an atomic write's temporary file (hex now; tempfile.mkstemp's alphabet before)
_TEMPORARY_SUFFIX = re.compile(r"\.[a-z0-9_]{8}")


def _is_leftover(name: str, names) -> bool:
    """The temporary file of an atomic write of one of ``names`` killed halfway: ``.<name>.<8 random>``.

    The exact form keeps a user's ``.config.yaml.bak`` from counting as ours (and from being removed).
    """
    return name.startswith(".") and any(name.startswith(f".{known}.") and
                                        _TEMPORARY_SUFFIX.fullmatch(name, len(known) + 1) for known in names)


def remove_leftovers(run_dir: str | Path) -> list[str]:
    """Delete the temporary files that writes killed halfway left in a run directory; their names.

    Call it holding :func:`lock` (another process's temporary file is no leftover) and only on a
    folder that is a run (unstarted, resumable or finished): a foreign folder is never touched.
    """
    path = Path(run_dir)
    gone = []
    for name in sorted(os.listdir(path)):
        if _is_leftover(name, _REGISTRY) and (path / name).is_file():
            with contextlib.suppress(OSError):  # a read-only finished run keeps them, and is still read
                (path / name).unlink()
                gone.append(name)
    return gone


def _is_our_config(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.readline(64).startswith(_HEADER.encode())
    except OSError:
        return False


def _configured_epochs(path: Path) -> int | None:
    try:
        return read_config(path).optim.epochs
    except (ConfigError, OSError):
        return None


@dataclass(frozen=True)
class Decision:
    """What bringing a folder to the end of a config takes.

    ``action`` is ``train`` (new), ``restart`` (unstarted: cleared and trained again, whatever
    config its files hold), ``resume`` (resumable, same config), ``skip`` (finished, same config)
    or ``refuse`` (foreign, or a run of another config; ``reason`` says which).
    """

    action: str
    status: RunStatus
    reason: str = ""


def decide(config: Config, run_dir: str | Path) -> Decision:
    """Whether ``run_dir`` is trained, restarted, resumed, skipped or refused for ``config``."""
    st = status(run_dir)
    if st.state == FOREIGN:
        return Decision("refuse", st, st.reason)
    if st.state in (NEW, UNSTARTED):
        return Decision("train" if st.state == NEW else "restart", st)
    try:
        stored = read_config(st.path)
    except (ConfigError, OSError) as err:
        return Decision("refuse", st, f"holds a run whose {CONFIG} cannot be read ({err})")
    differ = config_difference(config, stored)
    if differ:
        return Decision("refuse", st, f"holds a run of another config (differs in: {', '.join(differ)})")
    return Decision("resume" if st.state == RESUMABLE else "skip", st)


def refusal(st: RunStatus) -> str:
    """Why a new run cannot go into a folder, and the command the user wants instead."""
    where = st.path
    if st.state == RESUMABLE:
        return (f"{where} holds an unfinished run ({st.epochs_done} of {st.epochs or '?'} epochs recorded); "
                f"continue it with `elr train --resume {where}`, or choose another --out")
    if st.state == FINISHED:
        see = (f"inspect it with `elr eval {where}`" if has_checkpoint(where) else
               f"its results are in {where / SUMMARY}")
        return f"{where} holds a finished run ({st.epochs} epoch{'s' if st.epochs != 1 else ''}); {see}, or choose another --out"
    return f"{where} {st.reason}; choose another --out (an absent or empty folder)"


def checkpointed_config(run_dir: Path, verb: str) -> Config:
    """The config of a run with a checkpoint; a one-line error naming what the folder is instead."""
    st = status(run_dir)
    if st.state == UNSTARTED:
        raise FileNotFoundError(
            f"{run_dir} never reached its first checkpoint: nothing to {verb}; start it again with "
            f"`elr train --config {config_path(run_dir)} --out {run_dir}`"
            if config_path(run_dir).is_file() else
            f"{run_dir} never reached its first checkpoint: nothing to {verb}; train it again with its config")
    if st.state == NEW:
        raise FileNotFoundError(f"{run_dir} is not a run directory: "
                                f"{'it does not exist' if not run_dir.exists() else 'it is empty'}")
    if st.state == FOREIGN:
        raise FileNotFoundError(f"{run_dir} is not a run directory: it {st.reason}")
    if not has_checkpoint(run_dir):
        raise FileNotFoundError(f"{run_dir} holds a finished run whose {CHECKPOINT} was removed: nothing "
                                f"to {verb}; its results are in {run_dir / SUMMARY}")
    return read_config(run_dir)


def config_difference(config: Config, stored: Config | dict[str, Any]) -> list[str]:
    """Top-level keys in which two configs differ, the runtime keys (:data:`RUNTIME_KEYS`) ignored.

    A stored mapping is first completed with the defaults of sections added since it was written;
    one holding a key since removed is compared as it is, which reports the difference.
    """
    if isinstance(stored, Config):
        stored = stored.to_dict()
    else:
        try:
            stored = Config.from_dict(stored).to_dict()
        except ConfigError:
            pass
    current = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_KEYS}
    stored = {k: v for k, v in stored.items() if k not in RUNTIME_KEYS}
    return sorted(k for k in set(current) | set(stored) if current.get(k) != stored.get(k))


def clear(run_dir: str | Path) -> None:
    """Remove the files of an unstarted run so that it starts over; ``stage1_ce/`` is kept.

    The stage-1 run of a two-stage Forward run is a run directory of its own that resumes itself;
    files that are not ours are never touched.
    """
    path = Path(run_dir)
    st = status(path)
    if st.state != UNSTARTED:
        raise ValueError(f"{path} is {st.state}, not unstarted: only an unstarted run is cleared")
    entries = [e for e in os.listdir(path) if e != LOCK]  # the lock belongs to the process clearing it
    foreign, _ = _not_ours(path, entries, _is_our_config(path / CONFIG))
    for name in entries:
        if name != STAGE1 and name not in foreign:
            (path / name).unlink()


def foreign_entries(folder: str | Path, allowed: tuple[str, ...]) -> list[str]:
    """Names in ``folder`` (absent: none) other than ``allowed`` and their atomic-write leftovers."""
    path = Path(folder)
    if not path.exists():
        return []
    if not path.is_dir():
        return [path.name]
    return sorted(e for e in os.listdir(path) if e not in allowed and not _is_leftover(e, allowed))


# ---- the lock -----------------------------------------------------------------------------------


class RunDirLockedError(FileExistsError):
    """Another process holds the run directory's lock (``holder``: what it wrote about itself)."""

    def __init__(self, path: Path, holder: dict[str, Any] | None) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{path} is in use by another elr process ({holder_text(holder)}); wait for it to end, "
                         "or stop it and run the same command again")

    def __reduce__(self):  # pickled (a worker process's result) with its own arguments, not the message
        return type(self), (self.path, self.holder)


_HELD: dict[str, int] = {}  # real path of a folder this process has locked -> how many lock() blocks hold it
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)  # the lock's descriptor is not handed to programs this one starts
_BUSY = (errno.EACCES, errno.EAGAIN)  # what lockf answers when another process holds the lock
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_TRIES = 25  # 0.5 s: a holder() probe lets go at once, a holder that has just locked writes its record


@contextlib.contextmanager
def lock(run_dir: str | Path, *, create: bool = True) -> Iterator[None]:
    """Hold ``run_dir``'s exclusive lock for the ``with`` block; :class:`RunDirLockedError` when another
    process holds it.

    A POSIX record lock (``fcntl.lockf``) on ``run_dir/.elr.lock``: the operating system releases it when
    the process dies, so a killed run never leaves a stale lock. (``flock`` would be inherited by
    forked data-loader workers and outlive a killed trainer until they notice.) The file names the
    holder (pid, host, start, command) for the message a second process gets, and is removed when
    the block ends. Re-entrant within a process.

    ``create``: make a missing folder (and parents); folders made here are removed again if the block
    leaves them empty, so input refused inside it leaves nothing behind. Without ``create`` a missing
    folder, or a path that is not a folder, is not locked: the caller's own checks report it; nor is
    a folder this process may not write (read-only: a finished run there can still be read and
    skipped). On a file system without POSIX locks (or on Windows) nothing is locked, with a warning.
    """
    path = Path(run_dir)
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    if fcntl is None or (path.exists() and not path.is_dir()) or (not create and not path.exists()):
        yield
        return
    made: list[Path] = []
    try:
        fd = _acquire(path, made, create)
    except BaseException:
        _remove_if_empty(made)
        raise
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        if fd is not None:
            # unlinked while still held: a process that opened the old file sees it is gone and retries
            with contextlib.suppress(OSError):
                os.unlink(path / LOCK)
            os.close(fd)
        _remove_if_empty(made)


def holder(run_dir: str | Path) -> dict[str, Any] | None:
    """Who holds ``run_dir``'s lock (pid, host, since, command); None when no other process does.

    Reads only: a shared lock tried for an instant, which a second reader does not disturb (a
    process locking the folder meanwhile tries again, see :func:`_acquire`).
    """
    path = Path(run_dir)
    if fcntl is None or os.path.realpath(path) in _HELD:  # closing a second descriptor drops one's own lock
        return None
    try:
        fd = os.open(path / LOCK, os.O_RDONLY | _CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            return (_read_holder(fd) or {}) if err.errno in _BUSY else None
        return None  # free (a lock file a killed process left); closing releases the test lock
    finally:
        os.close(fd)


def _acquire(path: Path, made: list[Path], create: bool) -> int | None:
    """The descriptor holding ``path``'s lock; None where no lock is needed or possible."""
    lock_path = path / LOCK
    busy_tries = clears = 0
    while True:
        try:
            if create:
                made.extend(_make_folders(path))
            existed = lock_path.exists()
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o666)
        except FileNotFoundError:
            if create:  # the folder was removed in between (another process's cleanup): make it again
                continue
            raise
        except OSError as err:
            if err.errno not in _UNWRITABLE:
                raise
            if err.errno == errno.EROFS or not os.access(path if path.exists() else path.parent, os.W_OK):
                return None  # a folder this process cannot write needs no lock: nothing it does there collides
            clears += 1  # bounded: an open refused by a security module would otherwise spin here
            if clears < _TRIES and _clear_lock_of_another_user(path):  # another user's (killed) run's lock file
                continue
            raise
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in _BUSY:  # ENOLCK, ENOSYS, EOPNOTSUPP: this file system has no POSIX locks
                os.close(fd)
                if not existed:  # ours alone: a file another host may hold stays
                    with contextlib.suppress(OSError):
                        os.unlink(lock_path)
                log.warning("cannot lock %s (%s): a second process on this folder would not be stopped",
                            path, os.strerror(err.errno or 0))
                return None
            busy_tries += 1
            if busy_tries < _TRIES:
                os.close(fd)
                time.sleep(0.02)
                continue
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirLockedError(path, holder) from err
        if _is_at(fd, lock_path):
            break
        os.close(fd)  # we locked a file its holder removed on leaving: lock the one now there
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": _command_line()}
    with contextlib.suppress(OSError):
        # readable by all (the holder's record), writable by whoever may write the folder: they could
        # replace the file anyway, and another user locking this folder must open it for writing
        os.fchmod(fd, 0o644 | (os.stat(path).st_mode & 0o022))
    with contextlib.suppress(OSError):  # the record only informs a refused process (a full disk: none)
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
    return fd


def _clear_lock_of_another_user(path: Path) -> bool:
    """Remove a lock file this process may not open for writing, unless its owner holds it; True
    when the caller should try again."""
    lock_path = path / LOCK
    try:
        fd = os.open(lock_path, os.O_RDONLY | _CLOEXEC)
    except FileNotFoundError:
        return True  # gone meanwhile: try again
    except PermissionError:
        raise FileExistsError(f"{lock_path} belongs to another user and cannot be read; remove it if no elr "
                              f"process works in {path}") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in _BUSY:
                raise RunDirLockedError(path, _read_holder(fd)) from err
            raise
        if not _is_at(fd, lock_path):
            return True  # removed or replaced meanwhile (its new holder has it): look again
        try:
            os.unlink(lock_path)  # while the shared lock keeps anyone else from locking this file
        except PermissionError:  # a sticky folder: only its owner may remove it
            raise FileExistsError(f"{lock_path} was left by another user's run and may not be replaced by this "
                                  f"user; remove it (no process holds it)") from None
        return True
    finally:
        os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed, not replaced)."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev)


def _command_line() -> str:
    """This process's command as a user typed it: ``elr train ...`` (``python -m elr`` included)."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    name = program.parent.name if program.name == "__main__.py" else program.name
    return " ".join([name, *sys.argv[1:]])[:300]


def _make_folders(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; the folders created, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise FileExistsError(f"{path} cannot be made: {folder} is a file, not a folder")
            break
        missing.append(folder)
    path.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in dict.fromkeys(folders):  # deepest first; a folder that filled up meanwhile stays
        try:
            folder.rmdir()
        except OSError:
            return


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
    except (OSError, ValueError):  # being written, or from another program
        return None
    return holder if isinstance(holder, dict) else None


def holder_text(holder: dict[str, Any] | None) -> str:
    """The holder of a lock in one line: ``pid 4711 [on host], since ..., command``."""
    if not holder:
        return "holder unknown"
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("host") and holder.get("host") != socket.gethostname():
        parts[0] += f" on {holder['host']}"
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    if holder.get("command"):
        parts.append(" ".join(str(holder["command"]).split()))  # one line whatever the command held
    return ", ".join(parts)


# ---- readers and writers ------------------------------------------------------------------------


def write_config(run_dir: str | Path, config: Config) -> None:
    """Create the folder and write the config first: its header marks the folder as a run."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    header = f"{_HEADER}{__version__}, torch {torch.__version__}, numpy {np.__version__}\n"
    atomic_write_text(Path(run_dir) / CONFIG, header + config.to_yaml())


def read_config(run_dir: str | Path) -> Config:
    """The run's config; FileNotFoundError when ``run_dir`` holds none."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {CONFIG} is missing")
    try:
        return Config.load(path)
    except ConfigError as err:
        writer = _writer_version(path)
        if writer is not None and _version_key(writer) > _version_key(__version__):
            raise ConfigError(f"{path} was written by elr {writer}, newer than this elr {__version__}, and this "
                              f"elr cannot read it ({err}): upgrade elr") from None
        raise


def _writer_version(path: Path) -> str | None:
    """The elr version in a config's header line (``# elr 0.1.0, torch ...``)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline(200)
    except OSError:
        return None
    match = re.match(re.escape(_HEADER) + r"([0-9][^,\s]*)", first)
    return match.group(1) if match else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG


def write_noisy_labels(run_dir: str | Path, labels: np.ndarray) -> None:
    atomic_write_bytes(Path(run_dir) / NOISY_LABELS, _npy_bytes(np.asarray(labels, dtype=np.int64)))


def read_noisy_labels(run_dir: str | Path) -> np.ndarray:
    return np.load(Path(run_dir) / NOISY_LABELS, allow_pickle=False)


def write_noise(run_dir: str | Path, info: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / NOISE, json.dumps(info) + "\n")


def read_noise(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / NOISE).read_text())


def write_classes(run_dir: str | Path, class_names: list[str], label_to_index: dict[str, int] | None) -> None:
    """The class names in label order, and the mapping of labels written as names (CSV lists)."""
    record: dict[str, Any] = {"class_names": list(class_names)}
    if label_to_index is not None:
        record["label_to_index"] = dict(label_to_index)
    atomic_write_text(Path(run_dir) / CLASSES, json.dumps(record, indent=2) + "\n")


def read_classes(run_dir: str | Path) -> dict[str, Any] | None:
    return _read_json(Path(run_dir) / CLASSES)


def write_standardization(run_dir: str | Path, record: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / STANDARDIZATION, json.dumps(record) + "\n")


def read_standardization(run_dir: str | Path) -> tuple[dict[str, Any] | None, str]:
    """The run's stored standardisation record (None when there is none) and the file's path, for messages."""
    path = Path(run_dir) / STANDARDIZATION
    if not path.is_file():
        return None, str(path)
    try:
        return json.loads(path.read_text()), str(path)
    except ValueError:
        raise ValueError(f"{path}: damaged (not JSON); the run's feature scaling cannot be restored") from None


def write_sweep_record(run_dir: str | Path, record: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / SWEEP_RECORD, json.dumps(record, indent=2) + "\n")


def read_sweep_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``sweep.json``; None when it was not trained by a sweep (or the file is unreadable)."""
    return _read_json(Path(run_dir) / SWEEP_RECORD)


def setting_text(value: Any, paths: str = "name") -> str:
    """A grid setting of ``sweep.json`` as the sweep writes it in a run's name and the report in a row's label:
    ``true``/``false``, ``none``, a list joined by ``_``, a path by its file's name (``paths="name"``)."""
    if paths == "name" and isinstance(value, str) and ("/" in value or "\\" in value):
        return Path(value.replace("\\", "/")).name  # a file's name, not where it lies
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "_".join(setting_text(v, paths) for v in value)
    return str(value)


def write_metrics(run_dir: str | Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in history))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records; [] when there are none. A line cut short (an older, non-atomic write) is skipped."""
    path = Path(run_dir) / METRICS
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    path = Path(run_dir) / SUMMARY
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return path


def read_summary(run_dir: str | Path, *, strict: bool = False) -> dict[str, Any] | None:
    """The run's summary; None before the run finished a session (or when it is unreadable).

    ``strict``: a summary that is there but cannot be read raises what went wrong (the OSError, the
    JSON error with its position, or ValueError for JSON that is not an object) instead of None.
    """
    path = Path(run_dir) / SUMMARY
    if not strict:
        summary = _read_json(path)
        return summary if isinstance(summary, dict) else None
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    if not isinstance(summary, dict):
        raise ValueError(f"holds a JSON {type(summary).__name__}, not an object")
    return summary


def find_summaries(folder: str | Path) -> list[Path]:
    """Every run's summary under ``folder``, recursively, sorted: a ``summary.json`` beside the run's
    ``config.yaml`` (``elr demo``'s joint summary of its two runs is not one)."""
    return sorted(p for p in Path(folder).rglob(SUMMARY) if _is_our_config(p.parent / CONFIG))


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> None:
    _save_checkpoint(Path(run_dir) / CHECKPOINT, state)


def load_checkpoint(run_dir: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return _load_checkpoint(Path(run_dir) / CHECKPOINT, map_location=map_location)


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT).is_file()


def save_transition(run_dir: str | Path, matrix: np.ndarray) -> Path:
    path = Path(run_dir) / TRANSITION
    atomic_write_bytes(path, _npy_bytes(np.asarray(matrix)))
    return path


def load_transition(run_dir: str | Path) -> np.ndarray:
    path = Path(run_dir) / TRANSITION
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: {TRANSITION} is missing; the Forward run cannot be rebuilt")
    return np.load(path, allow_pickle=False)


def has_transition(run_dir: str | Path) -> bool:
    return (Path(run_dir) / TRANSITION).is_file()


def stage1_dir(run_dir: str | Path) -> Path:
    """The folder of a two-stage Forward run's cross-entropy stage (itself a run directory)."""
    return Path(run_dir) / STAGE1


def write_targets(run_dir: str | Path, probs: np.ndarray | TopKProbs, sources: np.ndarray, *,
                  networks: Sequence[np.ndarray | TopKProbs] = ()) -> None:
    """The run's target rows and ``target_sources.npy``: each row's source name, one of
    TARGET_SOURCE_NAMES, stored as its uint8 position.

    Dense rows go to ``targets.npy`` (float32; two ``networks`` to ``targets_net1.npy`` and
    ``targets_net2.npy``), a :class:`~elr.label_issues.TopKProbs` to ``targets_topk.npz`` (the
    networks inside it). The combined rows go last: a run killed before has no targets file and is
    detected as a run without them.
    """
    run_dir = Path(run_dir)
    atomic_write_bytes(run_dir / TARGET_SOURCES, _npy_bytes(_source_codes(sources)))
    if isinstance(probs, TopKProbs):
        arrays = {"values": probs.values, "indices": probs.indices}
        for k, net in enumerate(networks, 1):
            arrays.update({f"values_net{k}": net.values, f"indices_net{k}": net.indices})
        buffer = io.BytesIO()
        np.savez(buffer, num_classes=np.int64(probs.num_classes),
                 **{key: np.asarray(a, dtype=np.float32 if key.startswith("values") else np.int32)
                    for key, a in arrays.items()})
        atomic_write_bytes(run_dir / TARGETS_TOPK, buffer.getvalue())
        return
    for name, rows in zip((TARGETS_NET1, TARGETS_NET2), networks):
        atomic_write_bytes(run_dir / name, _npy_bytes(np.asarray(rows, dtype=np.float32)))
    atomic_write_bytes(run_dir / TARGETS, _npy_bytes(np.asarray(probs, dtype=np.float32)))


class SelectedTargets(NamedTuple):
    """The rows of ``targets_selected.npz``: as :func:`read_targets` returns, and their epoch."""

    probs: np.ndarray | TopKProbs
    sources: np.ndarray
    epoch: int


def write_selected_targets(run_dir: str | Path, probs: np.ndarray | TopKProbs, sources: np.ndarray, *,
                           epoch: int) -> None:
    """``targets_selected.npz``: the rows (dense float32, or a TopKProbs' values and indices), their
    sources and their epoch in one file written atomically, so rows and epoch never disagree."""
    arrays: dict[str, np.ndarray] = {"epoch": np.int64(epoch), "sources": _source_codes(sources)}
    if isinstance(probs, TopKProbs):
        arrays.update(values=np.asarray(probs.values, dtype=np.float32),
                      indices=np.asarray(probs.indices, dtype=np.int32), num_classes=np.int64(probs.num_classes))
    else:
        arrays["targets"] = np.asarray(probs, dtype=np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(Path(run_dir) / TARGETS_SELECTED, buffer.getvalue())


def read_selected_targets(run_dir: str | Path) -> SelectedTargets | None:
    """The rows of the validation-selected epoch; None when the run has no ``targets_selected.npz``."""
    path = Path(run_dir) / TARGETS_SELECTED
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            probs = (z["targets"] if "targets" in z.files
                     else TopKProbs(z["values"], z["indices"], int(z["num_classes"])))
            codes, epoch = z["sources"], int(z["epoch"])
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{run_dir}: {TARGETS_SELECTED} cannot be read ({err or type(err).__name__}); the run "
                         f"directory was altered") from None
    if codes.shape != (probs.shape[0],):
        raise ValueError(f"{run_dir}: {TARGETS_SELECTED} holds {probs.shape[0]} rows but sources of shape {codes.shape}; "
                         f"the run directory was altered")
    if (codes >= len(TARGET_SOURCE_NAMES)).any():
        raise ValueError(f"{run_dir}: {TARGETS_SELECTED} holds source codes outside 0-{len(TARGET_SOURCE_NAMES) - 1}; "
                         f"the run directory was altered")
    return SelectedTargets(probs, np.array(TARGET_SOURCE_NAMES)[codes], epoch)


def selected_record(history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch record the noisy validation accuracy selects: the best ``val_acc``, the earliest of
    equals; None without a validation set. ``summary.json``'s ``selected`` and ``targets_selected.npz``."""
    return best_record(history, "val_acc")


def best_record(history: Sequence[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The record with the largest ``key`` (the earliest of equals); None when no record has it."""
    return max((r for r in history if r.get(key) is not None), key=lambda r: (r[key], -r["epoch"]), default=None)


def _source_codes(sources: np.ndarray) -> np.ndarray:
    lookup = {name: code for code, name in enumerate(TARGET_SOURCE_NAMES)}
    return np.array([lookup[name] for name in np.asarray(sources).tolist()], dtype=np.uint8)


def has_targets(run_dir: str | Path) -> bool:
    """Whether the run's target rows were written (targets.npy or targets_topk.npz)."""
    return (Path(run_dir) / TARGETS).is_file() or (Path(run_dir) / TARGETS_TOPK).is_file()


def read_targets(run_dir: str | Path, *, mmap: bool = False) -> tuple[np.ndarray | TopKProbs, np.ndarray] | None:
    """``(targets, sources str (N,))``: float32 (N, C) from targets.npy, or a TopKProbs from
    targets_topk.npz; None when the run has neither.

    ``mmap``: map targets.npy read-only instead of reading it (its shape costs nothing then).
    """
    run_dir = Path(run_dir)
    if not has_targets(run_dir):
        return None
    dense = (run_dir / TARGETS).is_file()
    sources_path = run_dir / TARGET_SOURCES
    if not sources_path.is_file():
        raise ValueError(f"{run_dir}: {TARGETS if dense else TARGETS_TOPK} is there but {TARGET_SOURCES} is "
                         f"missing; the run directory was altered")
    codes = np.load(sources_path, allow_pickle=False)
    if dense:
        targets = np.load(run_dir / TARGETS, allow_pickle=False, mmap_mode="r" if mmap else None)
        shape = targets.shape
    else:
        targets = _read_topk(run_dir, [""])[0]
        shape = targets.values.shape
    if len(shape) != 2 or codes.shape != (shape[0],) or (codes >= len(TARGET_SOURCE_NAMES)).any():
        name = TARGETS if dense else TARGETS_TOPK
        raise ValueError(f"{run_dir}: {name} {shape} and {TARGET_SOURCES} {codes.shape} do not match; "
                         f"the run directory was altered")
    return targets, np.array(TARGET_SOURCE_NAMES)[codes]


def read_network_targets(run_dir: str | Path) -> list[np.ndarray | TopKProbs]:
    """ELR+ with two networks: each network's rows (as :func:`read_targets`); [] for other runs."""
    run_dir = Path(run_dir)
    if (run_dir / TARGETS_TOPK).is_file():
        return _read_topk(run_dir, [f"_net{k}" for k in (1, 2)], missing_ok=True)
    return [np.load(run_dir / name, allow_pickle=False) for name in (TARGETS_NET1, TARGETS_NET2)
            if (run_dir / name).is_file()]


def _read_topk(run_dir: Path, suffixes: Sequence[str], *, missing_ok: bool = False) -> list[TopKProbs]:
    """The TopKProbs stored under ``values<suffix>``/``indices<suffix>`` in targets_topk.npz, one
    opening of the file; ``missing_ok`` skips a suffix the file does not hold."""
    try:
        with np.load(run_dir / TARGETS_TOPK, allow_pickle=False) as z:
            return [TopKProbs(z[f"values{s}"], z[f"indices{s}"], int(z["num_classes"])) for s in suffixes
                    if not missing_ok or f"values{s}" in z.files]
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"{run_dir}: {TARGETS_TOPK} cannot be read ({err}); the run directory was altered") from None


def write_true_labels(run_dir: str | Path, labels: np.ndarray) -> None:
    atomic_write_bytes(Path(run_dir) / TRUE_LABELS, _npy_bytes(np.asarray(labels, dtype=np.int64)))


def read_true_labels(run_dir: str | Path) -> np.ndarray | None:
    """The clean labels; None when the run does not know them."""
    path = Path(run_dir) / TRUE_LABELS
    return np.load(path, allow_pickle=False) if path.is_file() else None


def write_examples(run_dir: str | Path, paths: list[str], lines: np.ndarray | None) -> None:
    """``examples.csv``: ``index,path`` (and ``line``, the 1-based line of a CSV list) per training example."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "path", *(["line"] if lines is not None else [])])
    for i, path in enumerate(paths):
        writer.writerow([i, path, *([int(lines[i])] if lines is not None else [])])
    atomic_write_text(Path(run_dir) / EXAMPLES, out.getvalue())


def read_examples(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """``{"path": str (N,), "line": int64 (N,) when listed}`` from examples.csv; None without one."""
    path = Path(run_dir) / EXAMPLES
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    out = {"path": np.array([r[1] for r in body], dtype=object)}
    if "line" in header:
        out["line"] = np.array([int(r[2]) for r in body], dtype=np.int64)
    return out


def write_label_issues(run_dir: str | Path, columns: dict[str, np.ndarray]) -> Path:
    """``label_issues.csv``: one row per example, the columns in the given order; floats to 6 significant digits."""
    names = list(columns)
    cells = []
    for name in names:
        values = np.asarray(columns[name])
        if values.dtype == bool:
            cells.append(["True" if v else "False" for v in values.tolist()])  # pandas reads these as bool
        elif np.issubdtype(values.dtype, np.floating):
            cells.append([f"{v:.6g}" for v in values.tolist()])
        else:
            cells.append([str(v) for v in values.tolist()])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(zip(*cells))
    path = Path(run_dir) / LABEL_ISSUES
    atomic_write_text(path, out.getvalue())
    return path


def plot_paths(folder: str | Path) -> dict[str, Path]:
    """Where a run's figures go: ``accuracy``, ``memorization`` and ``gradient_terms``."""
    folder = Path(folder)
    return {"accuracy": folder / ACCURACY_PLOT, "memorization": folder / MEMORIZATION_PLOT,
            "gradient_terms": folder / GRADIENT_PLOT}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()
