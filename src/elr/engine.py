"""The one epoch loop for every method: schedule, evaluation, monitor, checkpoints and metrics."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor

from . import rundir
from .checkpoint import capture_rng_state, restore_rng_state
from .config import MonitorConfig, OptimConfig
from .data import Batches, TrainData
from .errors import DivergedError
from .monitor import gradient_terms, memorization_fractions, target_detection
from .schedules import learning_rate
from .targets import TargetBank

log = logging.getLogger(__name__)


@runtime_checkable
class Method(Protocol):
    """All the engine knows of a method: ``elr.methods.Standard`` and ``elr.elr_plus.ELRPlus`` follow it,
    and so can a method of your own. The engine never asks which method or loss it drives."""

    def train(self) -> None:
        """Put the networks in training mode (called before each epoch's steps)."""
        ...

    def eval(self) -> None:
        """Put the networks in evaluation mode (called before each epoch's evaluation)."""
        ...

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of every optimizer (called before every step)."""
        ...

    def train_step(self, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """One optimisation step on a batch (inputs, given labels, positions in the training set); return the
        batch's mean loss and its number of correct predictions, both on the device (no host sync)."""
        ...

    def predict(self, x: Tensor) -> Tensor:
        """Float32 logits (B, C) of a batch, in the networks' current mode."""
        ...

    @property
    def target_banks(self) -> list[TargetBank]:
        """The losses that keep per-example targets, network 1 first; [] for none. The monitor measures
        detection from them, gradient terms from the first (when it ``reports_gradient_terms``), and a
        distributed run attaches its target sync to each."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (weights, optimizer, targets, the method's own generators): the engine
        checkpoints it every epoch."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave (a resume, or ``elr eval``)."""
        ...


class Progress(Protocol):
    """Receives progress events; the CLI draws bars or prints lines, the library stays silent.

    An object may also have ``fit_start(run_dir, epochs_done, epochs)``, called once when a training
    session starts (``epochs_done > 0``: resumed; ``run_dir`` None without a run directory), and
    ``eval_start`` (below).
    """

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch_end(self) -> None: ...
    def epoch_end(self, record: dict[str, Any]) -> None: ...

    # Optional: ``eval_start(batches)`` when the epoch's evaluation begins (test set, validation split,
    # monitor subset: ``batches`` batches of eval_batch_size in all); ``batch_end`` then follows each of them.


def predict_all(method: Method, dataset: Batches, batch_size: int) -> Tensor:
    """Float32 logits for every example of ``dataset`` in order, shape (N, C)."""
    return _predict_read(method, dataset, batch_size)[0]


@torch.no_grad()
def _predict_read(method: Method, dataset: Batches, batch_size: int, tick: Callable[[], None] | None = None
                  ) -> tuple[Tensor, Tensor]:
    """Logits of the examples the dataset yields and their positions in it (an image file data set
    with ``decode_errors: skip`` leaves unreadable files out); ``tick`` is called after each batch."""
    outs, where = [], []
    for x, _, index in dataset.batches(batch_size, shuffle=False, train=False):
        outs.append(method.predict(x))
        where.append(index)
        if tick is not None:
            tick()
    return torch.cat(outs), torch.cat(where).to(dataset.labels.device)


@torch.no_grad()
def evaluate(method: Method, dataset: Batches, batch_size: int, tick: Callable[[], None] | None = None
             ) -> dict[str, float]:
    """Top-1 (and top-5 when there are at least 5 classes) accuracy against the dataset's labels;
    ``tick`` is called after each batch."""
    correct1 = correct5 = None
    for x, y, _ in dataset.batches(batch_size, shuffle=False, train=False):
        logits = method.predict(x)
        hit1 = (logits.argmax(dim=1) == y).sum()
        correct1 = hit1 if correct1 is None else correct1 + hit1
        if logits.shape[1] >= 5:
            hit5 = (logits.topk(5, dim=1).indices == y[:, None]).any(dim=1).sum()
            correct5 = hit5 if correct5 is None else correct5 + hit5
        if tick is not None:
            tick()
    n = len(dataset)
    result = {"acc": float(correct1) / n}
    if correct5 is not None:
        result["top5"] = float(correct5) / n
    return result


class Engine:
    """Trains a method for ``optim.epochs`` epochs, evaluating and checkpointing after each.

    Parameters
    ----------
    method : Method
        Owns the model(s), loss(es) and optimizer(s).
    data : TrainData
    optim : OptimConfig
        Epochs, batch size and the learning-rate schedule.
    monitor : MonitorConfig
    eval_batch_size : int
    seed : int
        Seeds the generator that draws batch order and augmentation.
    run_dir : Path, optional
        The run directory: the checkpoint and the metrics are written there after every epoch.
    checkpoint_meta : dict, optional
        Extra checkpoint-safe values stored in every checkpoint (config, noisy labels).
    progress : Progress, optional
    distributed : elr.distributed.Distributed, optional
        Set under torchrun: each rank trains on its shard of every global batch of
        ``optim.batch_size`` and the training loss and accuracy are summed over the ranks.
        Evaluation runs the whole test set on every rank (the models are identical), so each
        example is counted once and no reduction is needed. Give ``run_dir`` on rank 0 only.
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(engine, record)`` after each epoch's checkpoint and metrics are
        written (a run keeps its selected epoch's targets this way).
    """

    def __init__(
        self,
        method: Method,
        data: TrainData,
        *,
        optim: OptimConfig,
        monitor: MonitorConfig,
        eval_batch_size: int,
        seed: int,
        run_dir: Path | None = None,
        checkpoint_meta: dict[str, Any] | None = None,
        progress: Progress | None = None,
        distributed: Any = None,
        on_epoch_end: Callable[[Engine, dict[str, Any]], None] | None = None,
    ) -> None:
        self.method = method
        self.distributed = distributed
        self.data = data
        self.optim = optim
        self.monitor = monitor
        self.eval_batch_size = eval_batch_size
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_meta = checkpoint_meta or {}
        self.progress = progress
        self.on_epoch_end = on_epoch_end
        self.generator = torch.Generator().manual_seed(seed)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self._monitor_set = self._choose_monitor_set(seed)

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "method": self.method.state_dict(),
            "generator": self.generator.get_state(),
            "rng": capture_rng_state(),
            "history": self.history,
            **self.checkpoint_meta,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state["method"])
        self.generator.set_state(state["generator"])
        restore_rng_state(state["rng"])
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        if self.run_dir is not None:
            # the metrics may hold an epoch the checkpoint does not: rewrite them from the checkpoint
            rundir.write_metrics(self.run_dir, self.history)

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train from the current epoch to the last; return the per-epoch records."""
        fit_start = getattr(self.progress, "fit_start", None)  # optional: older Progress objects lack it
        if fit_start is not None:
            fit_start(self.run_dir, self.epoch, self.optim.epochs)
        while self.epoch < self.optim.epochs:
            self.run_epoch()
        return self.history

    def run_epoch(self) -> dict[str, Any]:
        """Train and evaluate one epoch, checkpoint it (with a run directory) and return its record."""
        record = self._train_one_epoch()
        self.epoch += 1
        self.history.append(record)
        if self.run_dir is not None:
            rundir.save_checkpoint(self.run_dir, self.state_dict())
            rundir.write_metrics(self.run_dir, self.history)
        if self.on_epoch_end is not None:
            self.on_epoch_end(self, record)
        log.info("epoch %d/%d %s", self.epoch, self.optim.epochs, _brief(record))
        if self.progress is not None:
            self.progress.epoch_end(record)
        return record

    def _train_one_epoch(self) -> dict[str, Any]:
        start = time.perf_counter()
        train, optim, epoch = self.data.train, self.optim, self.epoch
        batches = train.num_batches(optim.batch_size)
        if self.progress is not None:
            self.progress.epoch_start(epoch + 1, optim.epochs, batches)
        self.method.train()
        loss_sum = torch.zeros((), device=train.device)
        correct = torch.zeros((), dtype=torch.long, device=train.device)
        seen = 0  # examples trained on: a file data set may draw a class-balanced part, or skip a bad file
        shard = {} if self.distributed is None else {"shard": self.distributed.shard}
        for b, (x, y, index) in enumerate(train.batches(optim.batch_size, shuffle=True, generator=self.generator,
                                                        **shard)):
            self.method.set_lr(learning_rate(optim, epoch + b / batches))
            loss, hits = self.method.train_step(x, y, index)
            loss_sum += loss.float() * y.shape[0]  # accumulated on the device: no sync per batch
            correct += hits
            seen += y.shape[0]
            if self.progress is not None:
                self.progress.batch_end()
        if self.distributed is not None:  # one reduction per epoch; padding repeats count twice
            totals = self.distributed.all_reduce_sum(
                torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), device=train.device,
                                                                                dtype=torch.float64)]))
            loss_sum, correct, seen = totals[0], totals[1], int(totals[2])
        train_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(train_loss):
            raise DivergedError(f"training loss became {train_loss} in epoch {epoch + 1}; lower optim.lr")
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": learning_rate(optim, epoch),
            "train_loss": train_loss,
            "train_acc": float(correct) / max(seen, 1),
        }
        trained = time.perf_counter()
        skips = getattr(train, "take_skipped", None)  # file data sets with decode_errors: skip
        skipped = [skips()] if skips is not None else []
        record.update(self._evaluate())
        if skips is not None:
            skips()  # the monitor read the training files again: each is reported once an epoch
        skipped += [d.take_skipped() for d in self._datasets()[1:] if hasattr(d, "take_skipped")]
        if skipped:  # what the epoch left out
            record["skipped_images"] = sum(skipped)
        end = time.perf_counter()
        record.update(seconds=end - start, train_seconds=trained - start, eval_seconds=end - trained)
        return record

    def _evaluate(self) -> dict[str, Any]:
        self.method.eval()
        banks = self.method.target_banks
        out: dict[str, Any] = {}
        size, val = self.eval_batch_size, self.data.val if self.data.val is not None and len(self.data.val) else None
        monitored = self._monitor_set[0] if self._monitor_set is not None else None
        tick = self._eval_ticks([self.data.test, val, *self.data.extra_tests.values(), monitored])
        if self.data.test is not None:
            test = evaluate(self.method, self.data.test, size, tick)
            out["test_acc"] = test["acc"]
            if "top5" in test:
                out["test_top5"] = test["top5"]
        if val is not None:
            out["val_acc"] = evaluate(self.method, val, size, tick)["acc"]
        for name, dataset in self.data.extra_tests.items():
            out.update({f"{name}_{k}": v for k, v in evaluate(self.method, dataset, size, tick).items()})
        if self._monitor_set is not None:
            subset, positions = self._monitor_set
            logits, read = _predict_read(self.method, subset, size, tick)  # decode_errors: skip drops some
            noisy, true = subset.labels[read], subset.true_labels[read]
            if self.monitor.memorization:
                fractions = memorization_fractions(logits.argmax(dim=1), noisy, true)
                out.update({f"mem_{k}": v for k, v in fractions.items()})
            first = banks[0] if banks else None
            if self.monitor.gradient_terms and first is not None and first.reports_gradient_terms:
                out.update(gradient_terms(logits, noisy, true, first.target_rows(positions[read]),
                                          lam=first.lam, eps=first.eps))
        train = self.data.train
        if self.monitor.detection and banks and train.true_labels is not None:  # from the banks: no forward pass
            out.update({f"det_{k}": v for k, v in target_detection(banks, train.labels, train.true_labels).items()})
        return out

    def _eval_ticks(self, datasets: list[Batches | None]) -> Callable[[], None] | None:
        """Announce the evaluation's batch count to a progress display that shows it; its per-batch tick."""
        eval_start = getattr(self.progress, "eval_start", None)
        if eval_start is None:
            return None
        eval_start(sum(math.ceil(len(d) / self.eval_batch_size) for d in datasets if d is not None))
        return self.progress.batch_end

    def _datasets(self) -> list[Batches]:
        d = self.data
        return [d.train, *(x for x in (d.test, d.val) if x is not None), *d.extra_tests.values()]

    def _choose_monitor_set(self, seed: int) -> tuple[Batches, Tensor] | None:
        """The training examples the monitor measures, and their positions in the training set."""
        train = self.data.train
        wanted = self.monitor.memorization or self.monitor.gradient_terms
        if not wanted or train.true_labels is None:
            return None
        size = self.monitor.subset
        if size is None or size >= len(train):
            return train, torch.arange(len(train), device=train.device)
        # a fixed subset, drawn from its own generator so the training stream is unaffected
        picked = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))[:size]
        picked = picked.sort().values.to(train.device)
        return train.subset(picked), picked


def _brief(record: dict[str, Any]) -> str:
    keys = ("train_loss", "test_acc", "val_acc", "mem_wrong_memorized", "det_auroc")
    return " ".join(f"{k}={record[k]:.4f}" for k in keys if record.get(k) is not None)
