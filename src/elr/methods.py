"""How one training step works: a method owns its model(s), loss(es) and optimizer(s)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .config import OptimConfig
from .targets import TargetBank


# ---- CPU threads ---------------------------------------------------------------------------------


@contextlib.contextmanager
def cpu_threads(threads: int | str, device: torch.device, sample_shape: tuple[int, ...]):
    """Torch's CPU threads while a network trains on examples of ``sample_shape`` (yields the count; the
    process's own count comes back after): the config's ``threads`` key, ``elr train`` and ELRClassifier alike.

    A count is taken as given. ``auto`` keeps the process's count (every core, or
    ``OMP_NUM_THREADS``, or a sweep worker's share of the cores) except for feature vectors on the
    CPU, whose small networks get one thread: their steps are too short to share, and with a core
    taken by other work the second thread waits on every operation (``elr demo`` on 2 cores with 2
    threads: 0.8-1.2x the one-thread time when quiet, 2.5-3x with one core busy; ``benchmarks/threads.py``).
    The choice depends on the setting, the data's shape and the machine, never on its load, so a run
    repeats bit for bit (the thread count changes the order of sums).
    """
    previous = torch.get_num_threads()
    if threads != "auto":
        count = int(threads)
    elif device.type == "cpu" and len(sample_shape) == 1:
        count = 1
    else:
        count = previous
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)


def pick_device(name: str | torch.device) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``, checked against this machine.

    Raises ValueError naming the device when CUDA (or that CUDA index) is not there.
    """
    if isinstance(name, str) and name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} was asked for but CUDA is not available; use device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={name} was asked for but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


@dataclass(frozen=True)
class Runtime:
    """Device and numeric settings shared by every method."""

    device: torch.device
    amp_dtype: torch.dtype | None = None  # bf16 autocast when set
    channels_last: bool = False
    compile: bool = False
    distributed: bool = False  # wrap trainable models in DistributedDataParallel (set under torchrun)
    sync_batchnorm: bool = False  # distributed only: BatchNorm statistics over the global batch (CUDA)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def prepare_input(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, model: nn.Module, *, trainable: bool = True) -> tuple[nn.Module, nn.Module]:
        """Move ``model`` to the device; return (module to keep for state_dict, module to call).

        In a distributed run a ``trainable`` model is called through DistributedDataParallel (which
        averages its gradients over the ranks); the kept module stays unwrapped, so checkpoints
        have the same keys as in one process. EMA copies pass ``trainable=False``.
        """
        if self.distributed and trainable and self.sync_batchnorm:
            if self.device.type != "cuda":
                raise ValueError("sync_batchnorm needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); "
                                 "set sync_batchnorm: false on CPU")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        forward = model
        if self.distributed and trainable:
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return model, (torch.compile(forward) if self.compile else forward)


def make_sgd(model: nn.Module, optim: OptimConfig) -> torch.optim.SGD:
    """SGD over all parameters with the config's momentum, weight decay and Nesterov setting."""
    return torch.optim.SGD(
        model.parameters(), lr=optim.lr, momentum=optim.momentum,
        weight_decay=optim.weight_decay, nesterov=optim.nesterov,
    )


class Standard:
    """One network trained with one loss: cross entropy, ELR or any baseline loss.

    The loss must follow the shared signature ``loss(logits, labels, index)``.
    """

    def __init__(self, model: nn.Module, loss: nn.Module, optim: OptimConfig, runtime: Runtime) -> None:
        if hasattr(loss, "target_rows") and not isinstance(loss, TargetBank):  # keeps targets, half a bank
            missing = [m for m in (*TargetBank.__annotations__, "target_rows", "buffers") if not hasattr(loss, m)]
            raise TypeError(f"loss {type(loss).__name__} keeps per-example targets (target_rows) but does not follow "
                            f"elr.targets.TargetBank: it lacks {', '.join(missing)}")
        self.runtime = runtime
        self.model, self._forward = runtime.prepare_model(model)
        self.loss = loss.to(runtime.device)
        self.optimizer = make_sgd(self.model, optim)

    # The engine drives every method through these few calls.
    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def train_step(self, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """One SGD step; returns the batch's mean loss and its number of correct predictions (on device)."""
        x = self.runtime.prepare_input(x)
        with self.runtime.autocast():
            logits = self._forward(x)
        loss = self.loss(logits, y, index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), (logits.detach().argmax(dim=1) == y).sum()

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Float32 logits of the network in its current mode."""
        with self.runtime.autocast():
            return self._forward(self.runtime.prepare_input(x)).float()

    @property
    def target_banks(self) -> list[TargetBank]:
        """The loss when it keeps per-example targets (the ELR losses), else none."""
        return [self.loss] if isinstance(self.loss, TargetBank) else []

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "loss": self.loss.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
