"""Host-to-device copies that do not stall the training loop."""

from __future__ import annotations

import torch
from torch import Tensor


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """Copy a small CPU tensor (random draws made on the CPU for reproducibility) to ``device``.

    A plain ``.to("cuda")`` from pageable memory waits for the GPU to finish its queued work, once per
    call; from pinned memory with ``non_blocking=True`` the copy is queued and the host runs on. The
    caching host allocator keeps the pinned buffer alive until the copy has run.
    """
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
