"""Load local pretrained weights into a model: tensors only, a mismatched classifier head re-initialised, nothing downloaded."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = ["LoadReport", "classifier_name", "load_pretrained"]

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: the file, the tensors loaded and the head keys left fresh."""

    path: Path
    loaded: int
    reinitialised: list[str] = field(default_factory=list)


def classifier_name(model: nn.Module) -> str:
    """The attribute of the classifier layer: timm's ``pretrained_cfg["classifier"]``, else ``fc``."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    name = cfg.get("classifier") if isinstance(cfg, Mapping) else None
    return name if isinstance(name, str) else "fc"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained={path}: no such file (weights are read from a local file only)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"pretrained={path}: refusing to load: a weights file holds tensors only "
                         f"(weights_only loading failed: {str(err).splitlines()[0]})") from None
    except Exception as exc:
        raise ValueError(f"pretrained={path}: not a readable torch weights file ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"pretrained={path}: expected a state dict (names to tensors), got {type(obj).__name__}")
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the tensors of a local state dict into ``model`` (in place).

    The classifier head (``classifier_name(model)``, e.g. ``fc``) is skipped when its shapes
    differ from the model's (e.g. 1000 ImageNet classes into 14 Clothing1M classes) or the file
    has none: the model's freshly initialised head is kept and the skipped keys are reported (a warning in the log and
    ``LoadReport.reinitialised``). Every other tensor must match by name and shape.

    Parameters
    ----------
    model : torch.nn.Module
    path : str or Path
        A file written by ``torch.save(state_dict)`` (e.g. torchvision's ``resnet50-*.pth``),
        read with ``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` or ``{"model": ...}``
        wrapper and DataParallel's ``module.`` prefix are accepted.

    Returns
    -------
    LoadReport

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a state dict, or keys are missing, unexpected or of another shape
        outside the head (the message names them).
    """
    path = Path(path).expanduser()
    state = _read_state_dict(path)
    own = model.state_dict()
    head = classifier_name(model) + "."
    head_keys = [k for k in own if k.startswith(head)]
    in_file = [k for k in head_keys if k in state]
    reinitialised, file_head = [], "absent"
    if not in_file or any(state[k].shape != own[k].shape for k in in_file):  # a headless file keeps the fresh head too
        reinitialised = head_keys
        file_head = tuple(state[in_file[0]].shape) if in_file else "absent"
        state = {k: v for k, v in state.items() if not k.startswith(head)}
    # BatchNorm fills a missing num_batches_tracked itself (older torchvision files lack it)
    missing = [k for k in own if k not in state and k not in reinitialised and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                   for k in state if k in own and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if wrong_shape:
        problems.append(f"shapes differ (file vs model): {_names(wrong_shape)}")
    if problems:
        raise ValueError(f"pretrained={path} does not fit model {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)
    if reinitialised:
        log.warning("pretrained=%s: classifier head %s re-initialised for %s (the file's is %s)",
                    path, ", ".join(reinitialised), tuple(own[head_keys[0]].shape), file_head)
    return LoadReport(path, len(state), reinitialised)
