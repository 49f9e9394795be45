"""Label issues of a run: what a finished ELR run leaves for them, and the verdict table `elr detect` builds.

At the end of a single-network ELR run every training example gets a probability row
(``targets.npy``, in ``noisy_labels.npy`` order): its ELR target when it was trained on, otherwise
the final model's prediction of it (the noisy validation split, or an example a class-balanced
draw never picked), which is a held-out prediction because the model never trained on it.
:func:`detect_label_issues` scores those rows against the given labels with
:mod:`elr.label_issues`; nothing is retrained and no data is read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import rundir
from .config import FILE_DATASETS, Config
from .data.cifar_n import CIFAR_N
from .label_issues import detection_quality, issues_per_class, label_issue_table

log = logging.getLogger(__name__)

__all__ = ["detect_label_issues", "label_issue_report", "missing_targets_reason", "save_label_evidence"]

_TARGETS, _HELD_OUT, _UNREADABLE = rundir.TARGET_SOURCE_NAMES


def missing_targets_reason(config: Config) -> str | None:
    """Why a run of ``config`` leaves no targets for label issues; None when it does."""
    if config.method == "elr_plus":
        return ("is an ELR+ run (method: elr_plus): label issues from its two networks' targets come in a later "
                "version; `elr detect` reads single-network ELR runs (method: standard, loss.name: elr)")
    if config.loss.name not in ("elr", "elr_kl"):
        instead = (f"`elr train --config <this run>/{rundir.CONFIG} loss.name=elr --out NEW_RUN`"
                   if not config.loss.params else "a config with loss: {name: elr, lam: 3.0, beta: 0.7}")
        return (f"was trained with loss.name={config.loss.name}, which keeps no per-example targets, so the run "
                f"cannot rank its own labels; train ELR on the same data with {instead}, then `elr detect` that run")
    if config.loss.params.get("target_storage", "dense") != "dense":
        return ("keeps only the top-k entries of each target (loss.target_storage=topk): label issues from them "
                "come in a later version; train with loss.target_storage=dense")
    return None


# ---- at the end of training ---------------------------------------------------------------------


def save_label_evidence(run_dir: str | Path, config: Config, method: Any, prepared: Any, *,
                        write: bool = True) -> None:
    """Write ``targets.npy``/``target_sources.npy``, and ``true_labels.npy`` and ``examples.csv`` when known.

    ``method`` is the trained single-network method (its ``elr_loss`` holds the targets) and
    ``prepared`` the run's :class:`~elr.runs.PreparedData`. Under torchrun every rank calls this
    (the held-out predictions run on each, as evaluation does) and only the one with ``write`` writes.
    """
    data = prepared.data
    n = len(prepared.noisy_labels)
    train_pos = np.setdiff1d(np.arange(n), prepared.val_indices)  # stratified_split's train part: sorted
    held_out = [(data.val, np.asarray(prepared.val_indices))] if len(prepared.val_indices) and data.val is not None \
        else []
    probs, sources = evidence_rows(method, data.train, train_pos, held_out, n=n, batch_size=config.eval_batch_size)
    unreadable = int((sources == _UNREADABLE).sum())
    if unreadable:
        log.warning("%d training examples could not be read: no label verdict for them", unreadable)
    if not write:
        return
    rundir.write_targets(run_dir, probs.astype(np.float32), sources)
    if _truth_known(config, prepared):
        rundir.write_true_labels(run_dir, prepared.true_labels)
    if config.data.dataset in FILE_DATASETS:
        _save_examples(run_dir, data, train_pos, prepared.val_indices, n)


def evidence_rows(method: Any, train: Any, train_pos: np.ndarray, held_out: list[tuple[Any, np.ndarray]], *,
                  n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One probability row per example: its normalised ELR target, else a held-out prediction of it.

    ``method`` is a trained single-network ELR method (its ``elr_loss`` holds the targets of
    ``train``, whose example ``k`` sits at position ``train_pos[k]`` of the ``n`` examples);
    ``held_out`` lists ``(dataset, positions)`` the model never trained on (a validation split).
    A training row without target mass (never drawn) is predicted by the final model too.

    Returns float64 rows (n, C) and their sources (object array of ``rundir.TARGET_SOURCE_NAMES``);
    a row no prediction reaches (unreadable images) stays uniform and ``unreadable``.
    """
    loss = method.elr_loss
    if len(train_pos) != len(train):
        raise RuntimeError(f"the training split holds {len(train)} examples, not the {len(train_pos)} "
                           "positions outside the validation indices")
    rows = loss.target_rows(torch.arange(len(train), device=loss.targets.device)).cpu().numpy()
    mass = rows.sum(axis=1, dtype=np.float64)
    trained = mass > 0  # targets start at zero: a row without mass was never trained on
    probs = np.full((n, loss.num_classes), 1.0 / loss.num_classes)
    sources = np.full(n, _UNREADABLE, dtype=object)
    probs[train_pos[trained]] = rows[trained] / mass[trained, None]
    sources[train_pos[trained]] = _TARGETS
    if (~trained).any():
        held_out = [(train.subset(np.flatnonzero(~trained)), train_pos[~trained]), *held_out]
    for dataset, positions in held_out:
        got, p = _predict(method, dataset, batch_size, loss.eps)
        if len(got):  # none when every held-out image was unreadable
            probs[positions[got]] = p
            sources[positions[got]] = _HELD_OUT
    return probs, sources


@torch.no_grad()
def _predict(method: Any, dataset: Any, batch_size: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Probability rows (float64) of the examples the dataset yields, and their positions in it.

    Clamped to ``[eps, 1 - eps]`` and renormalised as ELR clamps the predictions its targets
    average, so a held-out row's score sits on the targets' scale (no 1e-10 outranking 1e-4).
    """
    method.eval()
    probs, where = [], []
    for x, _, index in dataset.batches(batch_size, shuffle=False, train=False):
        p = torch.softmax(method.predict(x).double(), dim=1).clamp(eps, 1.0 - eps)
        probs.append((p / p.sum(dim=1, keepdim=True)).cpu())
        where.append(index.cpu())
    if not probs:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
    return torch.cat(where).numpy(), torch.cat(probs).numpy()


def _truth_known(config: Config, prepared: Any) -> bool:
    """Clean labels are known for synthetic noise, CIFAR-N and a CSV's true_label column.

    An in-memory data set without noise has only its labels as given: nothing says they are clean.
    """
    if prepared.true_labels is None:
        return False
    n = config.noise
    return config.data.dataset in FILE_DATASETS or n.type in CIFAR_N or (n.type != "none" and n.rate > 0)


def _save_examples(run_dir: str | Path, data: Any, train_pos: np.ndarray, val_pos: np.ndarray, n: int) -> None:
    paths: list[str] = [""] * n
    lines = np.zeros(n, dtype=np.int64)
    parts = [(data.train.images, train_pos)] + ([(data.val.images, val_pos)] if len(val_pos) else [])
    for images, positions in parts:
        for k, pos in enumerate(np.asarray(positions).tolist()):
            paths[pos] = images.path(k)
        if images.lines is not None:
            lines[positions] = images.lines
    has_lines = all(images.lines is not None for images, _ in parts)
    rundir.write_examples(run_dir, paths, lines if has_lines else None)


# ---- reading a finished run ----------------------------------------------------------------------


def detect_label_issues(run_dir: str | Path, *, score: str = "self_confidence", rule: str = "argmax",
                        threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Every training example's verdict from a finished single-network ELR run, most likely wrong first.

    Parameters
    ----------
    run_dir : path
        A finished run directory of ``method: standard`` with ``loss.name: elr`` (or ``elr_kl``).
    score : {"self_confidence", "normalized_margin"}
        See :func:`elr.label_quality_scores`; lower means more likely wrong.
    rule : {"argmax", "threshold"}
        ``argmax`` flags an example when another class has more probability than its label;
        ``threshold`` flags a score below ``threshold``.
    threshold : float in (0, 1]

    Returns
    -------
    dict of np.ndarray, each of shape (N,), N = the training set (``noisy_labels.npy``)
        ``index`` (int64, position in ``noisy_labels.npy``), ``given_label``, ``suggested_label``
        (int64), ``score`` (float64; NaN for an unreadable image), ``is_issue`` (bool), ``source``
        (str: ``targets``, ``held_out_model`` or ``unreadable``), ``suggested_confidence`` (float64,
        NaN for an unreadable image);
        ``given_class`` and ``suggested_class`` (str) when the class names are known;
        ``true_label`` (int64) when the clean labels are known; ``path`` (str) and ``line`` (int64,
        the 1-based line of a CSV list) for image files. Unreadable images come last, never flagged.

    Raises
    ------
    ValueError
        The run keeps no usable targets (cross entropy or a baseline, ELR+, top-k storage), or is
        not finished; the message names the command to run instead.
    FileNotFoundError
        ``run_dir`` is not a run directory.
    """
    run_dir = Path(run_dir)
    probs, sources = _read_evidence(run_dir)
    given = rundir.read_noisy_labels(run_dir)
    if len(given) != len(probs):
        raise ValueError(f"{run_dir}: {rundir.TARGETS} has {len(probs)} rows but {rundir.NOISY_LABELS} "
                         f"{len(given)} labels; the run directory was altered")
    table = label_issue_table(given, probs, method=score, rule=rule, threshold=threshold)
    source = sources[table["index"]]
    unreadable = source == _UNREADABLE
    if unreadable.any():  # a uniform stand-in row: no verdict, listed last
        table["score"][unreadable] = np.nan
        table["suggested_confidence"][unreadable] = np.nan
        table["is_issue"][unreadable] = False
        table["suggested_label"][unreadable] = table["given_label"][unreadable]
        order = np.argsort(unreadable, kind="stable")
        table = {k: v[order] for k, v in table.items()}
        source = source[order]
    out = {k: table[k] for k in ("index", "given_label", "suggested_label", "score", "is_issue")}
    out["source"] = source.astype(str)
    out["suggested_confidence"] = table["suggested_confidence"]
    names = (rundir.read_classes(run_dir) or {}).get("class_names") or []
    if len(names) == probs.shape[1]:
        names = np.array(names, dtype=object)
        out["given_class"], out["suggested_class"] = names[out["given_label"]], names[out["suggested_label"]]
    true = rundir.read_true_labels(run_dir)
    if true is not None:
        out["true_label"] = true[out["index"]]
    examples = rundir.read_examples(run_dir)
    if examples is not None:
        out.update({k: v[out["index"]] for k, v in examples.items()})
    return out


def _read_evidence(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """targets.npy and its sources, or a one-line error saying why the run has none and what to run."""
    st = rundir.status(run_dir)
    if st.state in (rundir.NEW, rundir.FOREIGN):
        raise FileNotFoundError(f"{run_dir} is not a run directory: "
                                f"{st.reason or ('it does not exist' if not run_dir.exists() else 'it is empty')}")
    if st.state == rundir.UNSTARTED:
        again = (f"; train it with `elr train --config {rundir.config_path(run_dir)} --out {run_dir}`"
                 if rundir.config_path(run_dir).is_file() else "; train it again with its config")
        raise ValueError(f"{run_dir} never reached its first checkpoint: there is nothing to detect{again}")
    why = missing_targets_reason(rundir.read_config(run_dir))
    if why is not None:
        raise ValueError(f"{run_dir} {why}")
    if st.state == rundir.RESUMABLE:
        raise ValueError(f"{run_dir} is unfinished ({st.epochs_done} of {st.epochs or '?'} epochs): `elr detect` reads "
                         f"finished runs (unfinished ones come in a later version); finish it with "
                         f"`{_resume_command(run_dir)}`, then detect")
    evidence = rundir.read_targets(run_dir)
    if evidence is None:
        if rundir.has_checkpoint(run_dir):
            raise ValueError(f"{run_dir} finished before elr wrote {rundir.TARGETS}; write it with "
                             f"`{_resume_command(run_dir)}` (a finished run is not trained again), then detect")
        raise ValueError(f"{run_dir} has no {rundir.TARGETS} and its {rundir.CHECKPOINT} was removed, so its targets "
                         f"are lost; train it again to detect label issues")
    return evidence


def _resume_command(run_dir: Path) -> str:
    """The resume command of a run: under torchrun with the same process count when it was trained so."""
    world = int(rundir.load_checkpoint(run_dir).get("world_size", 1))
    if world > 1:
        return f"torchrun --nproc_per_node={world} -m elr train --resume {run_dir}"
    return f"elr train --resume {run_dir}"


def label_issue_report(run_dir: str | Path, table: dict[str, np.ndarray]) -> dict[str, Any]:
    """What `elr detect` prints beside the table.

    Returns
    -------
    dict
        ``per_class``: one dict per class (``label``, ``name`` or None, ``examples``, ``flagged``);
        ``sources``: examples per source; ``flagged``; ``quality``: :func:`elr.detection_quality`
        against the clean labels (readable examples only), or None when they are unknown.
    """
    num_classes = int(rundir.read_targets(run_dir, mmap=True)[0].shape[1])
    names = (rundir.read_classes(run_dir) or {}).get("class_names") or []
    counts = issues_per_class(table["given_label"], table["is_issue"], num_classes)
    per_class = [{"label": c, "name": names[c] if len(names) == num_classes else None,
                  "examples": int(counts["examples"][c]), "flagged": int(counts["flagged"][c])}
                 for c in range(num_classes)]
    sources = {s: int((table["source"] == s).sum()) for s in rundir.TARGET_SOURCE_NAMES}
    quality = None
    if "true_label" in table:
        readable = table["source"] != _UNREADABLE
        quality = detection_quality(table["score"][readable], table["is_issue"][readable],
                                    (table["given_label"] != table["true_label"])[readable])
    return {"per_class": per_class, "sources": sources, "flagged": int(table["is_issue"].sum()), "quality": quality}

