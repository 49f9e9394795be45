"""Runs of one stage or two: the entry points :func:`elr.train` and :func:`elr.train_or_resume`.

Most configs train in one stage (:func:`elr.runs.train`). ``loss: {name: forward, transition:
estimate}`` is Forward correction with an estimated transition matrix (Patrini et al., 2017), which
trains in two stages inside one run directory:

1. ``<run>/stage1_ce/`` (:func:`elr.rundir.stage1_dir`): an ordinary run of the same config with plain
   cross entropy (same data, noise, split, model and schedule; ``estimate_epochs`` may shorten it).
   It is itself a run directory, so it is resumed when the two-stage run is interrupted during stage 1.
2. The stage-1 model's softmax on the noisy training split (validation held out) gives the
   anchor-point estimate of ``T`` (:func:`elr.losses.estimate_transition_matrix`, 97th percentile
   unless ``percentile`` says otherwise). The run directory keeps it (:func:`elr.rundir.save_transition`),
   and the Forward run of the same config trains in ``<run>/`` with that ``T``.

The stage-1 run and the estimate are done before the run's own files are written, so a run killed
in stage 1 looks unstarted to ``elr sweep`` and picks up its stage-1 checkpoint when trained again.
This module is the only one that composes runs: a two-stage run contains a CE run. A resumed or
evaluated two-stage run reads its saved ``T`` and needs no stage 1 (:func:`elr.runs.resume`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import rundir, runs
from .build import build_method, resolve_runtime
from .config import Config, estimates_transition
from .engine import Progress, predict_all
from .losses import estimate_transition_matrix
from .prepare import prepare_data

log = logging.getLogger(__name__)


def train(config: Config, out_dir: str | Path, *, progress: Progress | None = None,
          device: str | None = None) -> dict[str, Any]:
    """Train a new run of any config into ``out_dir`` (:func:`elr.runs.train`); return its summary.

    A two-stage Forward run trains (or resumes) its stage 1 first, inside ``out_dir``.
    """
    return runs.train(config, out_dir, progress=progress, device=device,
                      estimate=_stage1(config, Path(out_dir), progress, device))


def train_or_resume(config: Config, run_dir: str | Path, *, progress: Progress | None = None,
                    device: str | None = None, sweep_record: dict[str, Any] | None = None
                    ) -> tuple[str, dict[str, Any]]:
    """Bring ``run_dir`` to the end of any config's training (:func:`elr.runs.train_or_resume`)."""
    return runs.train_or_resume(config, run_dir, progress=progress, device=device, sweep_record=sweep_record,
                                estimate=_stage1(config, Path(run_dir), progress, device))


def _stage1(config: Config, run_dir: Path, progress: Progress | None, device: str | None) -> runs.Estimate | None:
    if not estimates_transition(config):
        return None
    return lambda: estimate_in_run_dir(config, run_dir, progress=progress, device=device)


def stage1_config(config: Config) -> Config:
    """The cross-entropy run whose predictions estimate ``T``: the same config with ``loss: ce``."""
    raw = config.to_dict()
    epochs = config.loss.params.get("estimate_epochs") or config.optim.epochs
    raw["loss"] = {"name": "ce"}
    raw["optim"] = {**raw["optim"], "epochs": epochs}
    return Config.from_dict(raw).validate()


def estimate_in_run_dir(config: Config, run_dir: Path, *, progress: Progress | None = None,
                        device: str | None = None) -> np.ndarray:
    """Train, resume or reuse stage 1 in ``run_dir/stage1_ce``, estimate ``T``, save and return it."""
    stage_dir = rundir.stage1_dir(run_dir)
    ce = stage1_config(config)
    log.info("stage 1 (cross entropy, to estimate the transition matrix) in %s", stage_dir)
    runs.train_or_resume(ce, stage_dir, progress=progress, device=device)
    # this config's runtime keys (device, eval_batch_size), not those stage 1 was trained with
    runtime = resolve_runtime(ce, device)
    scaling = runs.stored_scaling(stage_dir, ce, "the transition matrix cannot be estimated")
    prepared = prepare_data(ce, runtime.device, standardization=scaling)  # the inputs stage 1 was trained on
    method = build_method(ce, prepared, runtime, from_checkpoint=True)
    method.load_state_dict(rundir.load_checkpoint(stage_dir)["method"])
    method.eval()
    logits = predict_all(method, prepared.data.train, ce.eval_batch_for(runtime.device.type))
    probs = torch.softmax(logits.float(), dim=1)
    t = estimate_transition_matrix(probs.cpu().numpy(), percentile=config.loss.params.get("percentile", 97.0))
    path = rundir.save_transition(run_dir, t)
    log.info("estimated transition matrix saved to %s (mean diagonal %.3f)", path, float(np.diag(t).mean()))
    return t


def stage1_epochs_left(config: Config, run_dir: Path) -> int:
    """Epochs stage 1 still has to train before the run itself starts (0 when not two-stage or done)."""
    if not estimates_transition(config) or rundir.has_transition(run_dir):
        return 0
    epochs = stage1_config(config).optim.epochs
    stage = rundir.status(rundir.stage1_dir(run_dir))
    if stage.state == rundir.FINISHED:
        return 0
    return max(epochs - stage.epochs_done, 1)
