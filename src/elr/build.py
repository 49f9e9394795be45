"""The method a config names, on the device it picks: model(s), loss(es) and optimizer(s), shaped by the data."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import noise
from .config import ESTIMATE_KEYS, Config, ConfigError, check_model_input, component_error
from .data.cifar_n import CIFAR_N
from .distributed import Distributed
from .elr_plus import ELRPlus
from .losses import create_loss
from .methods import Runtime, Standard, pick_device
from .models import create_model, model_params
from .prepare import PreparedData, derived_seeds


def resolve_runtime(config: Config, device: str | None = None, distributed: Distributed | None = None) -> Runtime:
    """Pick the device (CUDA when present for ``auto``) and the numeric settings that go with it.

    In a distributed run each rank takes ``cuda:LOCAL_RANK`` (whatever CUDA index was named) and
    the models are wrapped in DistributedDataParallel.
    """
    name = device or config.device
    if distributed is not None and name.startswith("cuda"):
        name = "cuda"  # the rank's own index is set below, whatever index was named
    try:
        dev = pick_device(name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if distributed is not None and dev.type == "cuda":
        dev = torch.device(f"cuda:{distributed.local_rank}")
    on_cuda = dev.type == "cuda"
    amp = config.amp == "bf16" or (config.amp == "auto" and on_cuda)
    channels_last = config.channels_last == "on" or (config.channels_last == "auto" and on_cuda)
    if distributed is not None:
        return Runtime(dev, torch.bfloat16 if amp else None, channels_last, config.compile,
                       distributed=True, sync_batchnorm=config.sync_batchnorm)
    return Runtime(dev, torch.bfloat16 if amp else None, channels_last, config.compile)


def true_transition(config: Config, num_classes: int) -> np.ndarray:
    """The transition matrix of the configured synthetic noise model (identity without noise)."""
    n = config.noise
    if n.type in CIFAR_N:
        raise ValueError(f"noise.type={n.type} is human noise from a file: it has no known transition matrix; "
                         "give loss.transition as a .npy file or estimate")
    if n.type == "none" or n.rate == 0:
        return np.eye(num_classes)
    if n.type == "symmetric":
        return noise.transition_matrix("symmetric", n.rate, num_classes, exclude_true=n.exclude_true)
    kind = {10: "cifar10", 100: "cifar100"}.get(num_classes)
    return noise.transition_matrix("asymmetric", n.rate, num_classes, dataset=kind)


def resolve_loss_params(config: Config, num_classes: int, transition: np.ndarray | None = None) -> dict[str, Any]:
    """The loss parameters of the config, with ``forward``'s ``transition`` made a matrix.

    ``transition: true`` is the true matrix of the configured noise model (an oracle T: a sweep file
    cannot hold a 100 x 100 matrix); a string ending in ``.npy`` is loaded from that file;
    ``estimate`` takes ``transition`` (the two-stage estimate, :mod:`elr.two_stage`).
    """
    if config.loss.name != "forward":
        return dict(config.loss.params)
    params = {k: v for k, v in config.loss.params.items() if k not in ESTIMATE_KEYS}  # what ForwardLoss takes
    given = params.get("transition")
    if given is True:
        params["transition"] = true_transition(config, num_classes)
    elif given == "estimate":
        if transition is None:
            raise ValueError("loss.transition=estimate: the estimated matrix is missing (stage 1 not run)")
        params["transition"] = transition
    elif isinstance(given, str):
        path = Path(given).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"loss.transition: no such .npy file: {path}")
        params["transition"] = np.load(path, allow_pickle=False)
    return params


def build_method(config: Config, prepared: PreparedData, runtime: Runtime,
                 transition: np.ndarray | None = None, *, from_checkpoint: bool = False) -> Standard | ELRPlus:
    """Create the model(s) and loss(es) named in the config; shapes come from the data.

    ``from_checkpoint``: the weights will be loaded from a checkpoint next, so ``model.pretrained``
    is not read (a resumed or evaluated run does not need the pretrained file any more).

    ``method: elr_plus`` builds :class:`~elr.elr_plus.ELRPlus`. Its first network gets the same
    initial weights as ``method: standard`` (seed ``train``), so one network without weight
    averaging or mixup is exactly ELR; the second network is initialised from its own derived
    seed inside ``fork_rng``, leaving the global torch RNG (dropout) where a one-network run has it.
    """
    num_classes = prepared.data.num_classes
    model_kwargs = dict(config.model.params)
    if from_checkpoint:
        model_kwargs.pop("pretrained", None)
    accepted = model_params(config.model.name)
    shape = prepared.data.train.sample_shape  # one example as batches yield it
    check_model_input(config, int(shape[0]) if len(shape) == 1 else None)
    if "in_channels" in accepted and len(shape) == 3:
        model_kwargs.setdefault("in_channels", int(shape[0]))
    if "in_features" in accepted:
        model_kwargs.setdefault("in_features", int(np.prod(shape)))
    torch.manual_seed(derived_seeds(config.seed)["train"])  # the model's initial weights
    with _named("model", config.model.params):
        model = create_model(config.model.name, num_classes, **model_kwargs)
    with _named("loss", config.loss.params):
        loss = create_loss(config.loss.name, num_examples=len(prepared.data.train), num_classes=num_classes,
                           **resolve_loss_params(config, num_classes, transition))
    if hasattr(loss, "check_values") and runtime.device.type == "cuda":
        loss.check_values = False  # value checks read tensors back to the host every step
    if config.method == "standard":
        return Standard(model, loss, config.optim, runtime)
    if config.method != "elr_plus":
        raise ConfigError(f"method must be one of standard, elr_plus; got {config.method!r}")
    seeds = derived_seeds(config.seed)
    settings = dataclasses.asdict(config.elr_plus)
    models, losses = [model], [loss]
    if settings.pop("networks") == 2:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds["network2"])
            models.append(create_model(config.model.name, num_classes, **model_kwargs))
        losses.append(copy.deepcopy(loss))  # same lam, beta, check_values; its own (zero) targets
    return ELRPlus(models, losses, config.optim, runtime, seed=seeds["mixup"], **settings)


@contextlib.contextmanager
def _named(section: str, params: dict[str, Any]):
    """Turn a component's ValueError into a ConfigError naming the config key (``loss.lam must ...``)."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        raise component_error(section, params, err) from None
