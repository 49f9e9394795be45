"""ELR+ (paper Section 4.3): one or two networks, weight-averaged (EMA) targets and mixup, each switchable.

How one step works (``ELRPlus.train_step``), for a batch ``(x, y, index)`` already augmented by the
engine:

1. With mixup, draw ``l ~ Beta(alpha, alpha)``, ``l = max(l, 1 - l)`` and a permutation of the batch
   from the method's own seeded CPU generator (one ``l`` and one permutation per batch).
2. Target probabilities on the **un-mixed** batch: network ``k`` learns from the *other* network
   (from itself with one network), through its EMA copy with weight averaging, else through the raw
   network. These passes run in eval mode under ``no_grad``; without weight averaging and without
   mixup, the training forward's own (detached) outputs are used instead, which is what makes one
   network without either part exactly ELR.
3. Every network sees the same (mixed) batch and its :class:`~elr.losses.ELRLoss` is called with
   ``target_probs`` (and ``mixup=(l, perm)``): the one implementation of ELR serves ELR+ too.
4. One SGD step per network (each has its own optimizer; the engine sets the same learning rate on
   all), then each EMA moves towards its network.

Choices, and where they differ from the authors' code:

* **Batch order.** The authors train network 1 for a whole epoch, then network 2 for an epoch (each
  with its own data loader). Here both networks take a step on the same batch: one pass over the
  data per epoch, the same number of network updates and the same cost, and the engine's single
  batch-order generator is all a resume needs to replay.
* **EMA mode.** EMA networks always run in eval mode. The authors call the EMA model in train mode,
  so its BatchNorm layers normalise with the statistics of the current batch and its running
  statistics drift with every target pass; in eval mode an example's target does not depend on
  which other examples share its batch and target passes change no state.
* **EMA BatchNorm statistics** are averaged like the weights (floating-point buffers get the same
  decay; integer buffers such as ``num_batches_tracked`` are copied), so the EMA network is a
  complete model whose normalisation matches its averaged weights and can be used for prediction
  (``predict_with="ema"``). The authors average parameters only.
* **Step counting.** ``step`` counts optimizer steps, 1 at the first; the EMA update after step ``s``
  uses ``decay * exp(-5 (1 - min(s, L)/L)^2)`` (``sigmoid``) or ``min(1 - 1/(s + 1), decay)``
  (``mean_teacher``); the loss of step ``s`` uses ``lam * exp(-5 (1 - min(s, L)/L)^2)``.
* **No weight averaging** takes targets from the raw (other) network instead of crashing.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import OptimConfig, check_elr_plus
from .device import to_device
from .distributed import broadcast_buffers
from .losses import ELRLoss
from .methods import Runtime, make_sgd
from .targets import TargetBank

__all__ = ["ELRPlus", "sample_beta", "sigmoid_rampup"]


def sigmoid_rampup(step: int, length: int) -> float:
    """``exp(-5 (1 - min(step, L)/L)^2)``: rises from ``exp(-5)`` at step 0 to 1 at step ``L``; 1 when ``L = 0``."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(step, 0), length) / length
    return math.exp(-5.0 * phase * phase)


def _log_standard_gamma(shape: float, generator: torch.Generator) -> float:
    """Log of one Gamma(shape, 1) draw (Marsaglia and Tsang 2000), using only ``generator``.

    Works in log space so that small shapes (whose draws underflow to 0) stay finite.
    """
    boost = 0.0
    if shape < 1.0:
        # Gamma(a) = Gamma(a + 1) * U^(1/a)
        u = torch.rand((), generator=generator, dtype=torch.float64).item()
        boost = math.log(max(u, 1e-300)) / shape
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = torch.randn((), generator=generator, dtype=torch.float64).item()
        v = 1.0 + c * z
        if v <= 0.0:
            continue
        v = v * v * v
        u = torch.rand((), generator=generator, dtype=torch.float64).item()
        if u > 0.0 and math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
            return math.log(d) + math.log(v) + boost


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of ``Beta(alpha, alpha)`` from a CPU ``generator`` (as the ratio of two Gamma draws).

    ``torch.distributions.Beta`` takes no generator; this keeps mixup reproducible from the
    method's own generator, whatever else uses the global RNG.
    """
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    log_x = _log_standard_gamma(alpha, generator)
    log_y = _log_standard_gamma(alpha, generator)
    # x / (x + y) = sigmoid(log x - log y), stable for any magnitudes
    diff = log_x - log_y
    return 1.0 / (1.0 + math.exp(-diff)) if diff >= 0 else math.exp(diff) / (1.0 + math.exp(diff))


class ELRPlus:
    """ELR+ : one or two networks, weight averaging (EMA) and mixup; driven by the same engine as ``Standard``.

    Parameters
    ----------
    models : sequence of nn.Module
        One or two networks (distinct objects, normally the same architecture from different seeds).
    losses : sequence of ELRLoss
        One ELR loss per network (lam, beta and the per-example targets of that network).
    optim : OptimConfig
        SGD settings; each network gets its own optimizer.
    runtime : Runtime
    weight_averaging : bool, default True
        Keep an EMA copy of each network and compute the targets from it.
    mixup : bool, default True
        Train on mixed inputs, labels and targets.
    mixup_alpha : float, default 1.0
        ``l ~ Beta(alpha, alpha)``, then ``l = max(l, 1 - l)``.
    ema_decay : float, default 0.997
        EMA decay in ``[0, 1)`` (authors: 0.997 for CIFAR, 0.9999 for Clothing1M).
    ema_schedule : {"sigmoid", "mean_teacher"}, default "sigmoid"
        ``sigmoid``: ``ema_decay * exp(-5 (1 - min(step, L)/L)^2)`` with ``L = ema_ramp_steps``;
        ``mean_teacher``: ``min(1 - 1/(step + 1), ema_decay)``.
    ema_ramp_steps : int, default 40000
        ``L`` of the sigmoid EMA ramp; 0 means a constant decay.
    lam_ramp_steps : int, default 0
        ``L`` of the sigmoid ramp of each loss's lam; 0 means no ramp. While ramping, the losses'
        ``lam`` attribute holds the current (ramped) value.
    predict_with : {"networks", "ema"}, default "networks"
        Evaluation averages the logits of the networks, or of their EMA copies.
    seed : int, default 0
        Seeds the generator of the mixup draws.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        losses: Sequence[ELRLoss],
        optim: OptimConfig,
        runtime: Runtime,
        *,
        weight_averaging: bool = True,
        mixup: bool = True,
        mixup_alpha: float = 1.0,
        ema_decay: float = 0.997,
        ema_schedule: str = "sigmoid",
        ema_ramp_steps: int = 40000,
        lam_ramp_steps: int = 0,
        predict_with: str = "networks",
        seed: int = 0,
    ) -> None:
        models, losses = list(models), list(losses)
        if len(models) not in (1, 2):
            raise ValueError(f"models must hold 1 or 2 networks, got {len(models)}")
        if len(losses) != len(models):
            raise ValueError(f"losses must hold one ELRLoss per network ({len(models)}), got {len(losses)}")
        if len(models) == 2 and (models[0] is models[1] or losses[0] is losses[1]):
            raise ValueError("the two networks need distinct model and loss objects")
        for loss in losses:
            if not isinstance(loss, ELRLoss):
                raise ValueError(f"losses must be ELRLoss instances, got {type(loss).__name__}")
        check_elr_plus(dict(weight_averaging=weight_averaging, mixup_alpha=mixup_alpha, ema_decay=ema_decay,
                            ema_schedule=ema_schedule, ema_ramp_steps=ema_ramp_steps, lam_ramp_steps=lam_ramp_steps,
                            predict_with=predict_with), prefix="")

        self.runtime = runtime
        self.weight_averaging = bool(weight_averaging)
        self.mixup = bool(mixup)
        self.mixup_alpha = float(mixup_alpha)
        self.ema_decay = float(ema_decay)
        self.ema_schedule = ema_schedule
        self.ema_ramp_steps = ema_ramp_steps
        self.lam_ramp_steps = lam_ramp_steps
        self.predict_with = predict_with

        self.models: list[nn.Module] = []
        self._forwards: list[nn.Module] = []
        for model in models:
            kept, forward = runtime.prepare_model(model)
            self.models.append(kept)
            self._forwards.append(forward)
        self.losses = [loss.to(runtime.device) for loss in losses]
        self._base_lams = [loss.lam for loss in self.losses]
        self.optimizers = [make_sgd(model, optim) for model in self.models]
        self.emas: list[nn.Module] = []
        self._ema_forwards: list[nn.Module] = []
        if self.weight_averaging:
            for model in self.models:
                ema = copy.deepcopy(model).requires_grad_(False).eval()  # starts equal to its network
                kept, forward = runtime.prepare_model(ema, trainable=False)
                self.emas.append(kept)
                self._ema_forwards.append(forward)
        self.generator = torch.Generator().manual_seed(int(seed))  # mixup draws only
        self.step = 0  # optimizer steps taken; drives the EMA and lam ramps

    @property
    def networks(self) -> int:
        return len(self.models)

    # ---- the calls the engine makes ----------------------------------------------------------
    def train(self) -> None:
        for model in self.models:
            model.train()  # EMA copies stay in eval mode (see the module docstring)

    def eval(self) -> None:
        for model in self.models:
            model.eval()

    def set_lr(self, lr: float) -> None:
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def train_step(self, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """One step of every network on the batch.

        Returns
        -------
        loss : Tensor
            Mean over the networks of their batch losses (on device).
        hits : Tensor
            Correct predictions of the mean logits against ``y`` (with mixup: the dominant label,
            as ``l >= 0.5``), on device.
        """
        self.step += 1
        x = self.runtime.prepare_input(x)
        mix = self._draw_mixup(x.shape[0], x.device) if self.mixup else None
        # targets come from the weights before this step's update
        target_probs: list[Tensor | None] | None = None
        if self.weight_averaging or mix is not None:
            target_probs = self._target_probs(x)
        inputs = x if mix is None else self.runtime.prepare_input(mix[0] * x + (1.0 - mix[0]) * x[mix[1]])
        logits = []
        for forward in self._forwards:
            with self.runtime.autocast():
                logits.append(forward(inputs))
        if target_probs is None:
            # raw networks, no mixup: the training forward's own outputs are the un-mixed predictions
            if self.networks == 1:
                target_probs = [None]  # ELRLoss uses the network's own softmax: exactly ELR
            else:
                own = [F.softmax(out.detach().float(), dim=1) for out in logits]
                target_probs = own[::-1]
        self._ramp_lams()
        batch_losses = [loss(out, y, index, probs, mixup=mix) if mix is not None else loss(out, y, index, probs)
                        for loss, out, probs in zip(self.losses, logits, target_probs)]
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        # the networks share no parameters, so one backward of the sum gives each its own gradient
        (batch_losses[0] if self.networks == 1 else batch_losses[0] + batch_losses[1]).backward()
        for optimizer in self.optimizers:
            optimizer.step()
        if self.weight_averaging:
            self._update_emas()
        if self.networks == 1:
            return batch_losses[0].detach(), (logits[0].detach().argmax(dim=1) == y).sum()
        mean_loss = (batch_losses[0].detach() + batch_losses[1].detach()) / 2
        mean_logits = (logits[0].detach().float() + logits[1].detach().float()) / 2
        return mean_loss, (mean_logits.argmax(dim=1) == y).sum()

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Float32 mean logits of the networks (``predict_with="networks"``, in their current mode) or of the EMAs."""
        x = self.runtime.prepare_input(x)
        forwards = self._ema_forwards if self.predict_with == "ema" else self._forwards
        with self.runtime.autocast():
            outs = [forward(x).float() for forward in forwards]
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(dim=0)

    @property
    def target_banks(self) -> list[TargetBank]:
        """Every network's ELRLoss, network 1 first: each keeps its own per-example targets."""
        return list(self.losses)

    def state_dict(self) -> dict[str, Any]:
        return {
            "models": [model.state_dict() for model in self.models],
            "emas": [ema.state_dict() for ema in self.emas],
            "losses": [loss.state_dict() for loss in self.losses],
            "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
            "generator": self.generator.get_state(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["models"]) != self.networks or len(state["emas"]) != len(self.emas):
            raise ValueError(
                f"the state holds {len(state['models'])} network(s) and {len(state['emas'])} EMA(s); this ELRPlus "
                f"has {self.networks} and {len(self.emas)} (networks or weight_averaging differ)"
            )
        for module, saved in zip(self.models + self.emas + self.losses,
                                 state["models"] + state["emas"] + state["losses"]):
            module.load_state_dict(saved)
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self._ramp_lams()  # the lam of the last step taken, as the monitor reads it

    # ---- the parts of a step -------------------------------------------------------------------
    def _ramp_lams(self) -> None:
        """Each loss's lam at the current step: its configured value times the sigmoid ramp, when ramping."""
        if self.lam_ramp_steps:
            scale = sigmoid_rampup(self.step, self.lam_ramp_steps)
            for loss, base in zip(self.losses, self._base_lams):
                loss.lam = base * scale

    def ema_decay_at(self, step: int) -> float:
        """The decay of the EMA update that follows optimizer step ``step`` (1 at the first)."""
        if self.ema_schedule == "mean_teacher":
            return min(1.0 - 1.0 / (step + 1), self.ema_decay)
        return self.ema_decay * sigmoid_rampup(step, self.ema_ramp_steps)

    def _draw_mixup(self, batch: int, device: torch.device) -> tuple[float, Tensor]:
        weight = sample_beta(self.mixup_alpha, self.generator)
        weight = max(weight, 1.0 - weight)  # the un-permuted example dominates
        perm = to_device(torch.randperm(batch, generator=self.generator), device)
        return weight, perm

    @torch.no_grad()
    def _target_probs(self, x: Tensor) -> list[Tensor]:
        """Softmax of the EMA (or raw) networks on the un-mixed batch, in eval mode; network k gets the other's."""
        sources = self._ema_forwards if self.weight_averaging else self._forwards
        modes = [model.training for model in self.models]
        if not self.weight_averaging:
            for model in self.models:
                model.eval()
        try:
            with self.runtime.autocast():
                outs = [F.softmax(source(x).float(), dim=1) for source in sources]
        finally:
            for model, mode in zip(self.models, modes):
                model.train(mode)
        return outs[::-1]  # with one network this is its own; with two, swapped

    @torch.no_grad()
    def _update_emas(self) -> None:
        weight = 1.0 - self.ema_decay_at(self.step)  # ema <- decay * ema + (1 - decay) * live
        if self.runtime.distributed:
            # each rank's BatchNorm statistics saw only its slice: take rank 0's (as DDP's next
            # forward would use them) so the EMA copies stay identical on every rank
            for model in self.models:
                broadcast_buffers(model)
        for model, ema in zip(self.models, self.emas):
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), weight)
            pairs = list(zip(ema.buffers(), model.buffers()))
            floats = [(e, b) for e, b in pairs if e.is_floating_point()]
            if floats:  # BatchNorm running statistics are averaged like the weights
                torch._foreach_lerp_([e for e, _ in floats], [b for _, b in floats], weight)
            for e, b in pairs:
                if not e.is_floating_point():
                    e.copy_(b)  # e.g. num_batches_tracked
