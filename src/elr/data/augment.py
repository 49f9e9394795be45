"""Batch augmentation on the tensor's device: random crop with zero padding and horizontal flip."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from ..device import to_device

__all__ = ["random_crop_flip", "draw_crop_flip", "apply_crop_flip", "check_generator"]


def check_generator(generator) -> torch.Generator:
    """``generator`` if it is a CPU ``torch.Generator`` (every data set draws from one); else a ValueError."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a CPU torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must live on the CPU (draws stay reproducible across devices), got {generator.device}")
    return generator


def _check_padding(padding) -> int:
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    return int(padding)


def draw_crop_flip(
    batch_size: int, *, padding: int = 4, generator: torch.Generator, flip: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw the per-example crop offsets and flip decisions on the CPU.

    Parameters
    ----------
    batch_size : int
        Number of examples B.
    padding : int
        Zero border added on each side; offsets are drawn uniformly from ``[0, 2 * padding]``,
        as torchvision's ``RandomCrop(size, padding=padding)`` does.
    generator : torch.Generator
        CPU generator; the only source of randomness. Draw order: top offsets, left offsets,
        then (only when ``flip``) the flips.
    flip : bool
        Whether to draw horizontal flips with probability 0.5; if False no flip is drawn.

    Returns
    -------
    top, left : Tensor, int64, shape (B,), on the CPU
        Row and column of each crop's corner in the padded image.
    flips : Tensor, bool, shape (B,), on the CPU
    """
    check_generator(generator)
    padding = _check_padding(padding)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
    top = torch.randint(0, 2 * padding + 1, (batch_size,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (batch_size,), generator=generator)
    if flip:
        flips = torch.randint(0, 2, (batch_size,), generator=generator).bool()
    else:
        flips = torch.zeros(batch_size, dtype=torch.bool)
    return top, left, flips


def apply_crop_flip(x: Tensor, top: Tensor, left: Tensor, flips: Tensor, *, padding: int = 4) -> Tensor:
    """Crop and flip each example with explicit offsets; deterministic, vectorised.

    Parameters
    ----------
    x : Tensor, shape (B, C, H, W), any dtype (uint8 or float)
        Pixels before normalisation, so the zero border is a black pixel.
    top, left : Tensor, int, shape (B,)
        Corner of each crop in the zero-padded image, in ``[0, 2 * padding]``.
    flips : Tensor, bool, shape (B,)
        Examples to mirror left-right (after cropping).
    padding : int
        Zero border added on each side before cropping.

    Returns
    -------
    Tensor, same dtype and device as ``x``, shape (B, C, H, W), contiguous
        ``out[b, :, i, j] = padded[b, :, top[b] + i, left[b] + j']`` with
        ``j' = W - 1 - j`` for flipped examples and ``j' = j`` otherwise.
    """
    padding = _check_padding(padding)
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    for name, t in (("top", top), ("left", left), ("flips", flips)):
        if t.shape != (b,):
            raise ValueError(f"{name} must have shape ({b},) to match x, got {tuple(t.shape)}")
    dev = x.device
    if dev.type == "cuda" and top.device.type == "cpu":  # one queued copy instead of three blocking ones
        top, left, flips = to_device(torch.stack([top, left, flips.to(top.dtype)]), dev)
        flips = flips.bool()
    else:
        top, left, flips = top.to(dev), left.to(dev), flips.to(dev)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    rows = top[:, None] + torch.arange(h, device=dev)  # (B, H)
    cols_fwd = torch.arange(w, device=dev)
    cols = left[:, None] + torch.where(flips[:, None], cols_fwd.flip(0), cols_fwd)  # (B, W)
    # one gather over all examples: broadcast (B,1,1,1), (1,C,1,1), (B,1,H,1), (B,1,1,W)
    return padded[
        torch.arange(b, device=dev)[:, None, None, None],
        torch.arange(c, device=dev)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def random_crop_flip(x: Tensor, *, padding: int = 4, generator: torch.Generator, flip: bool = True) -> Tensor:
    """Randomly crop (after zero padding) and horizontally flip each example of a batch.

    Same distribution as torchvision's ``RandomCrop(H, padding=padding)`` followed by
    ``RandomHorizontalFlip()``, done for the whole batch at once on ``x``'s device. Apply it to
    pixels before normalisation (the zero border is black, as with torchvision).

    Parameters
    ----------
    x : Tensor, shape (B, C, H, W), float or uint8, on any device
    padding : int
        Zero border on each side; the crop's corner moves by up to ``2 * padding`` pixels.
    generator : torch.Generator
        CPU generator supplying all random numbers (see :func:`draw_crop_flip`); the small
        offset tensors are moved to ``x.device``, so results do not depend on the device.
    flip : bool
        Flip each example left-right with probability 0.5.

    Returns
    -------
    Tensor, same shape, dtype and device as ``x``; a new contiguous tensor.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    top, left, flips = draw_crop_flip(x.shape[0], padding=padding, generator=generator, flip=flip)
    return apply_crop_flip(x, top, left, flips, padding=padding)
