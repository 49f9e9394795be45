"""Forward correction with an estimated transition matrix, as one two-stage run (Patrini et al., 2017).

``loss: {name: forward, transition: estimate}`` trains in two stages inside one run directory:

1. ``<run>/stage1_ce/``: an ordinary run of the same config with plain cross entropy (same data,
   noise, split, model and schedule; ``estimate_epochs`` may shorten it). It is itself a run
   directory, so it is resumed when the two-stage run is interrupted during stage 1.
2. The stage-1 model's softmax on the noisy training split (validation held out) gives the
   anchor-point estimate of ``T`` (:func:`elr.losses.estimate_transition_matrix`, 97th percentile
   unless ``percentile`` says otherwise). ``<run>/transition.npy`` keeps it, and the Forward run of
   the same config trains in ``<run>/`` with that ``T``.

The stage-1 run and the estimate are done before the run's own files are written, so a run killed
in stage 1 looks unstarted to ``elr sweep`` and picks up its stage-1 checkpoint when trained again.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import atomic_write_bytes, load_checkpoint
from .config import Config, ConfigError
from .losses import estimate_transition_matrix

log = logging.getLogger(__name__)

STAGE1_DIR = "stage1_ce"
TRANSITION_FILE = "transition.npy"
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


def load_transition(run_dir: Path) -> np.ndarray:
    path = Path(run_dir) / TRANSITION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: {TRANSITION_FILE} is missing; the Forward run cannot be rebuilt")
    return np.load(path)


def estimate_in_run_dir(config: Config, run_dir: Path, *, progress: Any = None, device: str | None = None) -> np.ndarray:
    """Run (or resume) stage 1 in ``run_dir/stage1_ce``, estimate ``T``, save and return it."""
    from .engine import CHECKPOINT, predict_all
    from .runs import CONFIG_FILE, SUMMARY, build_method, prepare_data, resolve_runtime, resume, train

    run_dir = Path(run_dir)
    stage_dir = run_dir / STAGE1_DIR
    ce = stage1_config(config)
    if (stage_dir / SUMMARY).is_file() and _finished(stage_dir, ce.optim.epochs):
        log.info("stage 1 (cross entropy) already finished in %s", stage_dir)
    elif (stage_dir / CHECKPOINT).is_file():
        log.info("stage 1: resuming the cross-entropy run in %s", stage_dir)
        resume(stage_dir, progress=progress, device=device)
    else:
        if (stage_dir / CONFIG_FILE).exists():  # killed before its first checkpoint: nothing to keep
            shutil.rmtree(stage_dir)
        log.info("stage 1: training cross entropy in %s to estimate the transition matrix", stage_dir)
        train(ce, stage_dir, progress=progress, device=device)

    runtime = resolve_runtime(ce, device)
    prepared = prepare_data(ce, runtime.device)
    method = build_method(ce, prepared, runtime, from_checkpoint=True)
    method.load_state_dict(load_checkpoint(stage_dir / CHECKPOINT)["method"])
    method.eval()
    probs = torch.softmax(predict_all(method, prepared.data.train, ce.eval_batch_size).float(), dim=1)
    percentile = config.loss.params.get("percentile", 97.0)
    t = estimate_transition_matrix(probs.cpu().numpy(), percentile=percentile)

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / TRANSITION_FILE, _npy_bytes(t))
    log.info("estimated transition matrix saved to %s (mean diagonal %.3f)", run_dir / TRANSITION_FILE,
             float(np.diag(t).mean()))
    return t


def stage1_epochs_left(config: Config, run_dir: Path) -> int:
    """Epochs stage 1 still has to train before the run itself starts (0 when not two-stage or done)."""
    if not estimates_transition(config) or (Path(run_dir) / TRANSITION_FILE).is_file():
        return 0
    epochs = stage1_config(config).optim.epochs
    stage_dir = Path(run_dir) / STAGE1_DIR
    if _finished(stage_dir, epochs):
        return 0
    try:
        done = len((stage_dir / "metrics.jsonl").read_text().splitlines())
    except OSError:
        done = 0
    return max(epochs - done, 1)


def _finished(stage_dir: Path, epochs: int) -> bool:
    try:
        return json.loads((stage_dir / "summary.json").read_text()).get("epochs", 0) >= epochs
    except (OSError, json.JSONDecodeError):
        return False


def _npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()
