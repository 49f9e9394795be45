"""A whole data set held as tensors on one device, yielding (x, y, index) batches for ELR."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..distributed import shard_positions
from .augment import check_generator, apply_crop_flip, draw_crop_flip, random_crop_flip
from .readers import RawData

__all__ = ["InMemoryDataset", "from_raw"]


def _as_label_tensor(values, name: str, n: int | None) -> Tensor:
    if isinstance(values, Tensor):
        t = values.detach().clone()
    else:
        a = np.array(values)  # always a copy: later edits to the caller's array do not leak in
        if a.size and a.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
        t = torch.from_numpy(a.astype(np.int64, copy=False))
    if t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D integer array, got shape {tuple(t.shape)}")
    if t.numel() and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
        raise ValueError(f"{name} must hold integers, got dtype {t.dtype}")
    if n is not None and len(t) != n:
        raise ValueError(f"{name} must have one entry per example ({n}), got {len(t)}")
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must be non-negative class indices, found {int(t.min())}")
    return t.to(torch.int64)


def _as_input_tensor(inputs) -> Tensor:
    accepted = "inputs must be uint8 images (N, H, W, C) or float features (N, D, ...)"
    if isinstance(inputs, Tensor):
        t = inputs.detach()
        if t.dtype == torch.uint8:
            if t.dim() == 3:  # grayscale N x H x W
                t = t[..., None]
            if t.dim() != 4:
                raise ValueError(f"{accepted}; got uint8 of shape {tuple(t.shape)}")
            # channels first for convolutions; stay uint8 (4x less memory than float32)
            return t.permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)
        if t.dtype.is_floating_point and t.dim() >= 2:
            return t.to(torch.float32, copy=True)
        raise ValueError(f"{accepted}; got {t.dtype} of shape {tuple(t.shape)}")
    a = np.asarray(inputs)
    if a.dtype == np.uint8:
        if a.ndim == 3:
            a = a[..., None]
        if a.ndim != 4:
            raise ValueError(f"{accepted}; got uint8 of shape {a.shape}")
        # np.array copies into C order, so the tensor owns writable memory in (N, C, H, W)
        return torch.from_numpy(np.array(a.transpose(0, 3, 1, 2), order="C"))
    if a.dtype.kind == "f" and a.ndim >= 2:
        return torch.from_numpy(np.array(a, dtype=np.float32, order="C"))
    raise ValueError(f"{accepted}; got {a.dtype} of shape {a.shape}")


def _channel_constants(values, name: str, channels: int) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of {channels} numbers, got {values!r}") from None
    if len(out) != channels:
        raise ValueError(f"{name} must have one value per channel ({channels}), got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class InMemoryDataset:
    """A labelled data set held as tensors on one device; batches are cut by indexing.

    Every example comes with its position, so ELR can keep one target row per example:
    the yielded ``index`` always lies in ``[0, len(dataset))`` and means the position in THIS
    dataset. :meth:`subset` re-numbers the kept examples ``0 .. len(subset) - 1``. It follows the
    :class:`~elr.data.Batches` protocol the engine reads.

    Parameters
    ----------
    inputs : array or Tensor
        uint8 images of shape (N, H, W, C) (or (N, H, W) for grayscale), stored as uint8
        (N, C, H, W); or float features of shape (N, D, ...), stored as float32. The data are
        copied.
    labels : array or Tensor of int, shape (N,)
        Labels used for training (possibly noisy); stored as int64.
    true_labels : array or Tensor of int, shape (N,), optional
        Clean labels, for measuring memorization; stored as int64.
    mean, std : sequence of float, optional
        Per-channel constants in [0, 1] pixel units (uint8 images only): batches give
        ``(x / 255 - mean) / std``. If omitted, images are only scaled to [0, 1].
    augment : bool
        Random crop (zero padding ``padding``) and horizontal flip on training batches; needs
        4-D inputs.
    padding : int
        Zero border of the random crop, in pixels.
    class_names : sequence of str, optional
    num_classes : int, optional
        Defaults to ``len(class_names)`` if given, else the largest label + 1.

    The tensors stay where ``inputs`` was (CPU for NumPy arrays); use :meth:`to` to move.
    """

    def __init__(
        self,
        inputs,
        labels,
        *,
        true_labels=None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: bool = False,
        padding: int = 4,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
    ):
        x = _as_input_tensor(inputs)
        n = len(x)
        device = x.device
        y = _as_label_tensor(labels, "labels", n).to(device)
        t = None if true_labels is None else _as_label_tensor(true_labels, "true_labels", n).to(device)
        is_image = x.dtype == torch.uint8

        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together (or both omitted)")
        if mean is not None and not is_image:
            raise ValueError("mean/std apply to uint8 images only; float inputs are used unchanged")
        if mean is not None:
            channels = x.shape[1]
            mean = _channel_constants(mean, "mean", channels)
            std = _channel_constants(std, "std", channels)
            if min(std) <= 0:
                raise ValueError(f"std must be positive, got {std}")
        augment = _check_bool(augment, "augment")
        if augment and x.dim() != 4:
            raise ValueError(f"augment=True needs image inputs (N, C, H, W), got shape {tuple(x.shape)}")
        if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
            raise ValueError(f"padding must be a non-negative int, got {padding!r}")

        if class_names is not None:
            if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
                raise ValueError("class_names must be a sequence of str")
            class_names = list(class_names)
        top = max((int(v.max()) for v in (y, t) if v is not None and v.numel()), default=-1)
        if num_classes is None:
            num_classes = len(class_names) if class_names else top + 1
        elif isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
        if top >= num_classes:
            raise ValueError(f"labels go up to {top}, which needs num_classes > {top}; got num_classes={num_classes} "
                             f"({'from class_names' if class_names else 'given'})")
        if class_names and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")

        self._inputs = x
        self._labels = y
        self._true_labels = t
        self._mean = mean
        self._std = std
        self._augment = augment
        self._padding = int(padding)
        self._class_names = class_names
        self._num_classes = int(num_classes)
        self._norm = self._norm_tensors(device)

    # -- construction of variants ------------------------------------------------------------

    def _norm_tensors(self, device) -> tuple[Tensor, Tensor] | None:
        if self._inputs.dtype != torch.uint8:
            return None
        shape = (1, -1, 1, 1)
        mean = self._mean or (0.0,) * self._inputs.shape[1]
        std = self._std or (1.0,) * self._inputs.shape[1]
        m = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
        s = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
        return m, s

    def _replace(self, **fields) -> InMemoryDataset:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(fields)
        return new

    def to(self, device: torch.device | str) -> InMemoryDataset:
        """Return a dataset whose tensors all live on ``device`` (``self`` is unchanged)."""
        device = torch.device(device)
        t = self._true_labels
        return self._replace(
            _inputs=self._inputs.to(device),
            _labels=self._labels.to(device),
            _true_labels=None if t is None else t.to(device),
            _norm=self._norm_tensors(device),
        )

    def subset(self, idx) -> InMemoryDataset:
        """Return the examples at positions ``idx``, re-numbered ``0 .. len(idx) - 1``.

        Parameters
        ----------
        idx : array or Tensor of int, shape (M,), or bool mask of shape (N,)
            Positions in this dataset (may be on any device).
        """
        i = idx if isinstance(idx, Tensor) else torch.as_tensor(np.asarray(idx))
        if i.dtype == torch.bool:
            if i.shape != (len(self),):
                raise ValueError(f"a boolean idx must have shape ({len(self)},), got {tuple(i.shape)}")
            i = torch.nonzero(i.to(self.device)).flatten()
        if i.dim() != 1 or (i.numel() and i.dtype.is_floating_point):
            raise ValueError(f"idx must be a 1-D integer array, got {i.dtype} {tuple(i.shape)}")
        i = i.to(device=self.device, dtype=torch.int64)
        if i.numel() and (int(i.min()) < 0 or int(i.max()) >= len(self)):
            raise ValueError(f"idx must lie in [0, {len(self)}), got values in [{int(i.min())}, {int(i.max())}]")
        t = self._true_labels
        return self._replace(
            _inputs=self._inputs.index_select(0, i),
            _labels=self._labels.index_select(0, i),
            _true_labels=None if t is None else t.index_select(0, i),
        )

    def with_labels(self, labels) -> InMemoryDataset:
        """Return a copy that trains on ``labels`` (shape (N,), ints in [0, num_classes)).

        Inputs and ``true_labels`` are shared with ``self``.
        """
        y = _as_label_tensor(labels, "labels", len(self)).to(self.device)
        if y.numel() and int(y.max()) >= self._num_classes:
            raise ValueError(f"labels must lie in [0, {self._num_classes}), found {int(y.max())}")
        return self._replace(_labels=y)

    # -- read-only views ----------------------------------------------------------------------

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one example as batches yield it: (C, H, W) or (D, ...)."""
        return tuple(self._inputs.shape[1:])

    @property
    def inputs(self) -> Tensor:
        """Stored inputs: uint8 (N, C, H, W) images or float32 (N, D, ...) features."""
        return self._inputs

    @property
    def labels(self) -> Tensor:
        """Training labels, int64 (N,)."""
        return self._labels

    @property
    def true_labels(self) -> Tensor | None:
        """Clean labels, int64 (N,), or None."""
        return self._true_labels

    @property
    def mean(self) -> tuple[float, ...] | None:
        return self._mean

    @property
    def std(self) -> tuple[float, ...] | None:
        return self._std

    @property
    def augment(self) -> bool:
        return self._augment

    @property
    def padding(self) -> int:
        return self._padding

    @property
    def class_names(self) -> list[str] | None:
        return None if self._class_names is None else list(self._class_names)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def device(self) -> torch.device:
        return self._inputs.device

    @property
    def is_image(self) -> bool:
        """True when inputs are uint8 images."""
        return self._inputs.dtype == torch.uint8

    def __len__(self) -> int:
        return len(self._inputs)

    def __repr__(self) -> str:
        return (f"InMemoryDataset(n={len(self)}, inputs={self._inputs.dtype} {tuple(self._inputs.shape[1:])}, "
                f"num_classes={self._num_classes}, augment={self._augment}, device={self.device})")

    # -- examples and batches -----------------------------------------------------------------

    def _prepare(self, x: Tensor) -> Tensor:
        # uint8 -> float32 in [0, 1], then per-channel normalisation; features pass through
        if self._norm is None:
            return x
        m, s = self._norm
        return x.to(torch.float32).div_(255.0).sub_(m).div_(s)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        """One example ``(x, y, index)``: normalised, never augmented (DataLoader-compatible)."""
        if isinstance(i, Tensor) and i.dim() == 0:
            i = int(i)
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} examples")
        i = int(i) % n
        x = self._prepare(self._inputs[i : i + 1].clone())[0]
        return x, self._labels[i].clone(), torch.tensor(i, dtype=torch.int64, device=self.device)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Number of batches :meth:`batches` yields for this ``batch_size``."""
        batch_size = _check_positive_int(batch_size, "batch_size")
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        train: bool | None = None,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Iterate over one epoch in batches, on the dataset's device.

        Parameters
        ----------
        batch_size : int
        shuffle : bool
            Visit examples in the order ``torch.randperm(N, generator=generator)`` (drawn when
            this method is called); otherwise in order.
        generator : torch.Generator, optional
            CPU generator for the permutation and the augmentation draws; required when
            shuffling or augmenting. Draw order: the permutation, then per batch the crop
            offsets and flips (see :func:`elr.data.augment.draw_crop_flip`).
        drop_last : bool
            Skip the final batch if it has fewer than ``batch_size`` examples.
        train : bool, optional
            Whether batches are for training (augmented if the dataset has ``augment=True``).
            Defaults to ``shuffle``.
        shard : (rank, world_size), optional
            Distributed training: ``batch_size`` is the global batch; this rank gets its slice of
            each global batch (:func:`elr.distributed.shard_positions`, ``ceil(m / world_size)``
            examples, padded by repeats). The permutation and the augmentation draws are those of
            the global batch, so the generator advances as in one process.

        Yields
        ------
        x : Tensor, float32, shape (B, C, H, W) or (B, D, ...)
            Fresh contiguous tensor; ``(x / 255 - mean) / std`` for images, features unchanged.
        y : Tensor, int64, shape (B,)
            Training labels.
        index : Tensor, int64, shape (B,)
            Positions in this dataset, in ``[0, len(self))``; each appears once per epoch.
        """
        batch_size = _check_positive_int(batch_size, "batch_size")
        shuffle = _check_bool(shuffle, "shuffle")
        drop_last = _check_bool(drop_last, "drop_last")
        train = shuffle if train is None else _check_bool(train, "train")
        augmenting = self._augment and train
        if shuffle or augmenting:
            if generator is None:
                raise ValueError("generator is required when shuffling or augmenting: pass "
                                 "torch.Generator().manual_seed(seed)")
            check_generator(generator)
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        if shard is not None:
            return self._iterate_shard(order, batch_size, drop_last, augmenting, generator, shard)
        return self._iterate(order, batch_size, drop_last, augmenting, generator)

    def _iterate_shard(self, order: Tensor, batch_size: int, drop_last: bool, augmenting: bool,
                       generator: torch.Generator | None, shard: tuple[int, int]) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        rank, world = shard
        n = len(order)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            batch = order[start : start + batch_size]
            mine = shard_positions(len(batch), rank, world)
            index = batch[mine.to(batch.device)]
            x = self._inputs.index_select(0, index)
            if augmenting:
                # draw for the whole global batch (every rank draws the same), apply this rank's part
                top, left, flips = draw_crop_flip(len(batch), padding=self._padding, generator=generator)
                x = apply_crop_flip(x, top[mine], left[mine], flips[mine], padding=self._padding)
            yield self._prepare(x), self._labels.index_select(0, index), index

    def _iterate(self, order: Tensor, batch_size: int, drop_last: bool, augmenting: bool,
                 generator: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        n = len(order)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]
            x = self._inputs.index_select(0, index)  # a fresh copy, even for float features
            if augmenting:
                # crop in pixel space so the zero border is black, as torchvision pads
                x = random_crop_flip(x, padding=self._padding, generator=generator)
            yield self._prepare(x), self._labels.index_select(0, index), index


def from_raw(raw: RawData, *, augment_train: bool = True, padding: int = 4) -> tuple[InMemoryDataset, InMemoryDataset]:
    """Build the training and test datasets (on the CPU) from a reader's output.

    Parameters
    ----------
    raw : RawData
    augment_train : bool
        Crop-and-flip augmentation for the training set (ignored for features).
    padding : int
        Zero border of the random crop.

    Returns
    -------
    train, test : InMemoryDataset
        ``train.true_labels`` is set to the reader's labels, so ``train.with_labels(noisy)``
        keeps the clean labels for monitoring. Both share ``num_classes``, names, mean and std.
    """
    if not isinstance(raw, RawData):
        raise ValueError(f"raw must be a RawData, got {type(raw).__name__}")
    common = {
        "mean": raw.mean,
        "std": raw.std,
        "class_names": raw.class_names or None,
        "padding": padding,
    }
    top = int(max(np.max(raw.y_train, initial=-1), np.max(raw.y_test, initial=-1)))
    num_classes = len(raw.class_names) if raw.class_names else top + 1
    train = InMemoryDataset(raw.x_train, raw.y_train, true_labels=raw.y_train, num_classes=num_classes,
                            augment=bool(augment_train) and raw.is_image, **common)
    test = InMemoryDataset(raw.x_test, raw.y_test, num_classes=num_classes, **common)
    return train, test
