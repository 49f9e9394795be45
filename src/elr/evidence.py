"""What an ELR run leaves for label issues: one probability row per training example.

At the end of an ELR run (and from any checkpoint of one) every training example gets a probability
row, in ``noisy_labels.npy`` order: its ELR target when it was trained on, otherwise the model's
prediction of it (the noisy validation split, or an example a class-balanced draw never picked),
which is a held-out prediction because the model never trained on it. The same rows are kept
during training at the epoch the noisy validation accuracy selects (:class:`SelectedTargetsKeeper`,
``targets_selected.npz``).

- One network: the rows of its target bank.
- ELR+ with two networks: each network's bank, and their **mean** as the run's rows. Network k's
  targets are the running average of the *other* network's weight-averaged predictions, so the
  two banks are two views of one example. The mean of two running averages is the running
  average of the mean prediction: a row on the same scale as a single network's targets and the
  held-out rows, and with top-k storage it never empties a row (a product keeps only the classes
  both rows kept). Measured on digits (benchmarks/label_issues_banks_rules.py, README "Find the
  wrong labels"): the four choices differ by at most 0.007 in average precision; the mean sits
  between the two banks, beats the product at the preset's 50 epochs and trails it slightly once
  the targets start to memorize (200 epochs).
- ``loss.target_storage=topk``: the k largest entries of each row (:class:`elr.TopKProbs`), every
  row built a block at a time, so N x C is never held at once; held-out rows keep the top k of
  their prediction, renormalised like the targets.

The held-out rows are the final model's predictions (ELR+: the mean logits of its networks, or of
their weight averages with ``predict_with: ema``), the same rows in each network's file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import rundir
from .config import FILE_DATASETS, Config
from .data.cifar_n import CIFAR_N
from .label_issues import BLOCK_ENTRIES, TopKProbs
from .targets import mean_row, normalised_bank_rows, top_k_renormalised

log = logging.getLogger(__name__)

__all__ = ["Evidence", "missing_targets_reason", "save_label_evidence", "SelectedTargetsKeeper", "collect_evidence",
           "evidence_rows", "example_files", "truth_known"]

_TARGETS, _HELD_OUT, _UNREADABLE, _UNTRAINED = rundir.TARGET_SOURCE_NAMES


@dataclass
class Evidence:
    """The rows of a run: ``probs`` (float64 (N, C), or TopKProbs), their ``sources`` (str (N,)),
    each network's rows when there are two (``networks``), and the ``epoch`` they are from."""

    probs: np.ndarray | TopKProbs
    sources: np.ndarray
    networks: list[np.ndarray | TopKProbs] = field(default_factory=list)
    epoch: int | None = None


def missing_targets_reason(config: Config) -> str | None:
    """Why a run of ``config`` leaves no targets for label issues; None when it does."""
    if config.loss.name not in ("elr", "elr_kl"):
        instead = (f"`elr train --config <this run>/{rundir.CONFIG} loss.name=elr --out NEW_RUN`"
                   if not config.loss.params else "a config with loss: {name: elr, lam: 3.0, beta: 0.7}")
        return (f"was trained with loss.name={config.loss.name}, which keeps no per-example targets, so the run "
                f"cannot rank its own labels; train ELR on the same data with {instead}, then `elr detect` that run")
    return None


# ---- at the end of training ---------------------------------------------------------------------


def save_label_evidence(run_dir: str | Path, config: Config, method: Any, prepared: Any, *,
                        write: bool = True) -> None:
    """Write the targets (``targets.npy`` or ``targets_topk.npz``, ELR+'s two banks beside them) and
    ``target_sources.npy``, and ``true_labels.npy`` and ``examples.csv`` when known.

    ``method`` is the trained method and ``prepared`` the run's :class:`~elr.prepare.PreparedData`.
    Under torchrun every rank calls this (the held-out predictions run on each, as evaluation does)
    and only the one with ``write`` writes.
    """
    evidence = collect_evidence(config, method, prepared)
    if not write:
        return
    rundir.write_targets(run_dir, evidence.probs, evidence.sources, networks=evidence.networks)
    _write_label_context(run_dir, config, prepared)


def _write_label_context(run_dir: str | Path, config: Config, prepared: Any) -> None:
    """``true_labels.npy`` when known and, for image files, ``examples.csv``: what scores the rows."""
    if truth_known(config, prepared):
        rundir.write_true_labels(run_dir, prepared.true_labels)
    if config.data.dataset in FILE_DATASETS:
        files = example_files(prepared)
        rundir.write_examples(run_dir, files["path"].tolist(), files.get("line"))


class SelectedTargetsKeeper:
    """An :class:`~elr.engine.Engine` ``on_epoch_end`` hook keeping ``targets_selected.npz``: the run's
    rows (as at the end of training) at the epoch the noisy validation accuracy selects.

    After each epoch's checkpoint, when that epoch is the selected one so far (the best ``val_acc``,
    the earliest of equals, as the summary's ``selected``), its rows are written. A kill between the
    checkpoint and this write leaves the file an improvement behind: the checkpoint then holds the
    selected epoch itself, and :meth:`catch_up` (called on resume) writes its rows from it.

    Costs one held-out prediction of the validation split per improving epoch. Training examples no
    class-balanced draw (``data.batches_per_epoch``) has picked yet are not predicted (that could be
    most of a large data set early on): their source is ``untrained``, no verdict. Under torchrun
    every rank calls it (the prediction runs on each, keeping the ranks in step) and only the one
    with ``write`` writes.
    """

    def __init__(self, config: Config, prepared: Any, run_dir: str | Path, *, write: bool = True) -> None:
        self.config, self.prepared, self.run_dir, self.write = config, prepared, Path(run_dir), write
        self._context_written = False

    @classmethod
    def for_run(cls, config: Config, prepared: Any, run_dir: str | Path, *, write: bool = True
                ) -> SelectedTargetsKeeper | None:
        """The keeper of a run; None when it keeps no targets or has no validation set."""
        val = prepared.data.val
        if missing_targets_reason(config) is not None or val is None or len(val) == 0:
            return None
        return cls(config, prepared, run_dir, write=write)

    def __call__(self, engine: Any, record: dict[str, Any]) -> None:
        if rundir.selected_record(engine.history) is record:
            self._keep(engine.method, record["epoch"])

    def catch_up(self, engine: Any) -> None:
        """On resume: the checkpoint's epoch is the selected one, whose rows a kill may have cut off."""
        chosen = rundir.selected_record(engine.history)
        if chosen is not None and chosen["epoch"] == engine.epoch:
            self._keep(engine.method, engine.epoch)

    def _keep(self, method: Any, epoch: int) -> None:
        found = collect_evidence(self.config, method, self.prepared, epoch=epoch, predict_untrained=False)
        data = self.prepared.data
        for dataset in (data.train, data.val):  # what it could not read is not the next epoch's to report
            if hasattr(dataset, "take_skipped"):
                dataset.take_skipped()
        if not self.write:
            return
        if not self._context_written:  # an unfinished run's selected rows are scored with them
            _write_label_context(self.run_dir, self.config, self.prepared)
            self._context_written = True
        rundir.write_selected_targets(self.run_dir, found.probs, found.sources, epoch=epoch)


def collect_evidence(config: Config, method: Any, prepared: Any, epoch: int | None = None, *,
                     predict_untrained: bool = True) -> Evidence:
    """Every training example's row from ``method`` (trained, or restored from a checkpoint);
    ``predict_untrained``: see :func:`evidence_rows`."""
    data = prepared.data
    n = len(prepared.noisy_labels)
    held_out = [(data.val, np.asarray(prepared.val_indices))] if len(prepared.val_indices) and data.val is not None \
        else []
    evidence = evidence_rows(method, data.train, _train_positions(n, prepared.val_indices), held_out, n=n,
                             batch_size=config.eval_batch_for(data.train.device.type),
                             predict_untrained=predict_untrained)
    unreadable = int((evidence.sources == _UNREADABLE).sum())
    if unreadable:
        log.warning("%d training examples could not be read: no label verdict for them", unreadable)
    evidence.epoch = epoch
    return evidence


def _train_positions(n: int, val_indices: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.arange(n), val_indices)  # stratified_split's train part: sorted


def evidence_rows(method: Any, train: Any, train_pos: np.ndarray, held_out: list[tuple[Any, np.ndarray]], *,
                  n: int, batch_size: int, predict_untrained: bool = True) -> Evidence:
    """One probability row per example: its normalised ELR target, else a held-out prediction of it.

    ``method`` is a trained ELR method (its ``target_banks`` hold the targets of ``train``, whose
    example ``k`` sits at position ``train_pos[k]`` of the ``n`` examples); ``held_out`` lists
    ``(dataset, positions)`` the model never trained on (a validation split). A training row
    without target mass (never drawn) is predicted by the final model too, or with
    ``predict_untrained=False`` left uniform with the source ``untrained`` (no verdict).

    Returns an :class:`Evidence` with float64 rows (n, C), or TopKProbs for top-k storage, and the
    sources (object array of ``rundir.TARGET_SOURCE_NAMES``); a row no prediction reaches
    (unreadable images) stays uniform (over its first k classes with top-k) and ``unreadable``.
    """
    banks = method.target_banks
    if not banks:
        raise ValueError("the method keeps no ELR targets: label issues need loss.name elr")
    if len(train_pos) != len(train):
        raise RuntimeError(f"the training split holds {len(train)} examples, not the {len(train_pos)} "
                           "positions outside the validation indices")
    first = banks[0]
    k = first.target_k if first.target_storage == "topk" else None
    sinks = [_Rows(n, first.num_classes, k) for _ in range(1 + (len(banks) if len(banks) > 1 else 0))]
    sources = np.full(n, _UNREADABLE, dtype=object)
    step = max(1, BLOCK_ENTRIES // first.num_classes)
    untrained = []
    for block in torch.arange(len(train)).split(step):
        rows, trained_rows = normalised_bank_rows(banks, block)
        trained = trained_rows.cpu().numpy()
        where = train_pos[block.numpy()[trained]]
        sinks[0].put(where, mean_row(rows)[trained_rows].cpu().numpy())
        for sink, rows_k in zip(sinks[1:], rows):
            sink.put(where, rows_k[trained_rows].cpu().numpy())
        sources[where] = _TARGETS
        untrained.append(block.numpy()[~trained])
    untrained = np.concatenate(untrained) if untrained else np.zeros(0, dtype=np.int64)
    if len(untrained) and predict_untrained:
        held_out = [(train.subset(untrained), train_pos[untrained]), *held_out]
    elif len(untrained):
        sources[train_pos[untrained]] = _UNTRAINED
    for dataset, positions in held_out:
        for got, p in _predict(method, dataset, batch_size, first.eps):
            for sink in sinks:
                sink.put(positions[got], p)
            sources[positions[got]] = _HELD_OUT
    return Evidence(sinks[0].result(), sources, [sink.result() for sink in sinks[1:]])


class _Rows:
    """Where rows go: a dense (n, C) float64 array, or the top k entries of each row."""

    def __init__(self, n: int, num_classes: int, k: int | None) -> None:
        self.num_classes, self.k = num_classes, k
        if k is None:
            self.dense = np.full((n, num_classes), 1.0 / num_classes)
        else:
            self.values = np.full((n, k), 1.0 / k, dtype=np.float32)
            self.indices = np.tile(np.arange(k, dtype=np.int32), (n, 1))

    def put(self, positions: np.ndarray, rows: np.ndarray) -> None:
        if self.k is None:
            self.dense[positions] = rows
            return
        kept, where = top_k_renormalised(torch.from_numpy(np.ascontiguousarray(rows)), self.k)
        self.values[positions] = kept.numpy()
        self.indices[positions] = where.numpy()

    def result(self) -> np.ndarray | TopKProbs:
        return self.dense if self.k is None else TopKProbs(self.values, self.indices, self.num_classes)


@torch.no_grad()
def _predict(method: Any, dataset: Any, batch_size: int, eps: float):
    """Yield, batch by batch, the positions in ``dataset`` of the examples it yields and their
    probability rows (float64).

    Clamped to ``[eps, 1 - eps]`` and renormalised as ELR clamps the predictions its targets
    average, so a held-out row's score sits on the targets' scale (no 1e-10 outranking 1e-4).
    """
    method.eval()
    for x, _, index in dataset.batches(batch_size, shuffle=False, train=False):
        p = torch.softmax(method.predict(x).double(), dim=1).clamp(eps, 1.0 - eps)
        yield index.cpu().numpy(), (p / p.sum(dim=1, keepdim=True)).cpu().numpy()


def truth_known(config: Config, prepared: Any) -> bool:
    """Clean labels are known for synthetic noise, CIFAR-N and a true-label column (image CSV lists, feature tables).

    A published in-memory data set without noise has only its labels as given: nothing says they are
    clean. Image files and feature files have true labels (``prepared.true_labels``) only from a column.
    """
    if prepared.true_labels is None:
        return False
    n = config.noise
    labels_apart = config.data.dataset in (*FILE_DATASETS, "features")  # read from their own column
    return labels_apart or n.type in CIFAR_N or (n.type != "none" and n.rate > 0)


def example_files(prepared: Any) -> dict[str, np.ndarray]:
    """Image-file data: each training example's path (str (N,)) and, when listed in a CSV, its
    1-based ``line`` (int64 (N,)), in ``noisy_labels.npy`` order (what examples.csv holds)."""
    n = len(prepared.noisy_labels)
    val = np.asarray(prepared.val_indices)
    parts = [(prepared.data.train.images, _train_positions(n, val))]
    if len(val):
        parts.append((prepared.data.val.images, val))
    paths = np.empty(n, dtype=object)
    lines = np.zeros(n, dtype=np.int64)
    for images, positions in parts:
        paths[positions] = [images.path(k) for k in range(len(positions))]
        if images.lines is not None:
            lines[positions] = images.lines
    out = {"path": paths}
    if all(images.lines is not None for images, _ in parts):
        out["line"] = lines
    return out
