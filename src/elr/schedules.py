"""Learning-rate schedules as pure functions of the (fractional) epoch, so resuming needs no state."""

from __future__ import annotations

import math

from .config import OptimConfig


def learning_rate(optim: OptimConfig, epoch: float) -> float:
    """Learning rate at training progress ``epoch`` (0 at the start, ``optim.epochs`` at the end).

    ``multistep`` and ``cosine_restarts`` change once per epoch, as the authors' per-epoch
    scheduler steps do; ``cosine`` and ``onecycle`` change every step.
    """
    base, total = optim.lr, optim.epochs
    kind = optim.schedule
    if kind == "constant":
        return base
    if kind == "multistep":
        passed = sum(1 for m in optim.milestones if math.floor(epoch) >= m)
        return base * optim.gamma**passed
    if kind == "cosine":
        frac = min(max(epoch / total, 0.0), 1.0)
        return optim.min_lr + (base - optim.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))
    if kind == "cosine_restarts":
        # torch's CosineAnnealingWarmRestarts(T_0=restart_period, T_mult=1) stepped once per epoch
        frac = (math.floor(epoch) % optim.restart_period) / optim.restart_period
        return optim.min_lr + (base - optim.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))
    if kind == "onecycle":
        # linear warm-up from base/25 to base, then cosine down to base/25e4 (torch OneCycleLR's shape)
        frac = min(max(epoch / total, 0.0), 1.0)
        start, end, warm = base / 25.0, base / 25.0 / 1e4, optim.warmup_fraction
        if frac < warm:
            return start + (base - start) * frac / warm
        rest = (frac - warm) / (1.0 - warm)
        return end + (base - end) * 0.5 * (1.0 + math.cos(math.pi * rest))
    raise ValueError(f"optim.schedule must be one of constant, multistep, cosine, cosine_restarts, onecycle; got {kind!r}")
