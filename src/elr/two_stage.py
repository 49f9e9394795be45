"""Forward correction with an estimated transition matrix, as one two-stage run (Patrini et al., 2017).

``loss: {name: forward, transition: estimate}`` trains in two stages inside one run directory:

1. ``<run>/stage1_ce/`` (:func:`elr.rundir.stage1_dir`): an ordinary run of the same config with plain cross entropy (same data,
   noise, split, model and schedule; ``estimate_epochs`` may shorten it). It is itself a run
   directory, so it is resumed when the two-stage run is interrupted during stage 1.
2. The stage-1 model's softmax on the noisy training split (validation held out) gives the
   anchor-point estimate of ``T`` (:func:`elr.losses.estimate_transition_matrix`, 97th percentile
   unless ``percentile`` says otherwise). The run directory keeps it (:func:`elr.rundir.save_transition`),
   and the Forward run of
   the same config trains in ``<run>/`` with that ``T``.

The stage-1 run and the estimate are done before the run's own files are written, so a run killed
in stage 1 looks unstarted to ``elr sweep`` and picks up its stage-1 checkpoint when trained again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import rundir
from .config import Config, ConfigError
from .losses import estimate_transition_matrix

log = logging.getLogger(__name__)

ESTIMATE_KEYS = ("percentile", "estimate_epochs")  # loss keys of forward that only `estimate` uses


def estimates_transition(config: Config) -> bool:
    """True when the config asks for Forward with a transition matrix estimated in a first stage."""
    return config.loss.name == "forward" and config.loss.params.get("transition") == "estimate"


def validate_forward(config: Config) -> None:
    """Check ``transition`` and the estimate-only keys of a ``forward`` loss section."""
    params = config.loss.params
    if "transition" not in params:
        raise ConfigError("loss forward needs loss.transition: a (C, C) matrix, a .npy file, true (the "
                          "noise model's own T) or estimate (two-stage: CE run, then anchor points)")
    t = params["transition"]
    extra = [k for k in ESTIMATE_KEYS if k in params]
    if t != "estimate" and extra:
        raise ConfigError(f"loss.{extra[0]} is only used with loss.transition=estimate, got transition={t!r}")
    if isinstance(t, str) and t != "estimate" and not t.endswith(".npy"):
        raise ConfigError(f"loss.transition must be a matrix, a .npy path, true or estimate; got {t!r}")
    if t is False:
        raise ConfigError("loss.transition=false is not a transition matrix; use loss.name=ce for no correction")
    if "percentile" in params:
        p = params["percentile"]
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 100):
            raise ConfigError(f"loss.percentile must be a number in [0, 100] or null (plain argmax), got {p!r}")
    if "estimate_epochs" in params:
        e = params["estimate_epochs"]
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            raise ConfigError(f"loss.estimate_epochs must be an integer >= 1, got {e!r}")


def stage1_config(config: Config) -> Config:
    """The cross-entropy run whose predictions estimate ``T``: the same config with ``loss: ce``."""
    raw = config.to_dict()
    epochs = config.loss.params.get("estimate_epochs") or config.optim.epochs
    raw["loss"] = {"name": "ce"}
    raw["optim"] = {**raw["optim"], "epochs": epochs}
    return Config.from_dict(raw).validate()


def forward_params(config: Config) -> dict[str, Any]:
    """The loss keywords ``ForwardLoss`` takes (the estimate-only keys removed)."""
    return {k: v for k, v in config.loss.params.items() if k not in ESTIMATE_KEYS}


def estimate_in_run_dir(config: Config, run_dir: Path, *, progress: Any = None, device: str | None = None) -> np.ndarray:
    """Train, resume or reuse stage 1 in ``run_dir/stage1_ce``, estimate ``T``, save and return it."""
    from .engine import predict_all
    from .prepare import prepare_data
    from .runs import build_method, resolve_runtime, train_or_resume

    stage_dir = rundir.stage1_dir(run_dir)
    ce = stage1_config(config)
    log.info("stage 1 (cross entropy, to estimate the transition matrix) in %s", stage_dir)
    train_or_resume(ce, stage_dir, progress=progress, device=device)

    runtime = resolve_runtime(ce, device)
    prepared = prepare_data(ce, runtime.device)
    method = build_method(ce, prepared, runtime, from_checkpoint=True)
    method.load_state_dict(rundir.load_checkpoint(stage_dir)["method"])
    method.eval()
    probs = torch.softmax(predict_all(method, prepared.data.train, ce.eval_batch_size).float(), dim=1)
    percentile = config.loss.params.get("percentile", 97.0)
    t = estimate_transition_matrix(probs.cpu().numpy(), percentile=percentile)
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
