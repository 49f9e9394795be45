"""What the engine needs of a data set (the ``Batches`` protocol) and the data sets of one run (``TrainData``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["Batches", "TrainData"]


@runtime_checkable
class Batches(Protocol):
    """A labelled data set that yields ``(x, y, index)`` batches on its device.

    Implemented by :class:`~elr.data.InMemoryDataset` (tensors held whole on one device) and
    :class:`~elr.data.FileDataset` (image files decoded by DataLoader workers); a new kind of data
    that is not arrays implements these members and goes through the same engine.

    A data set may also have ``take_skipped() -> int`` (files left out since the last call, with
    ``decode_errors: skip``): the engine then records ``skipped_images`` each epoch.
    """

    @property
    def labels(self) -> Tensor:
        """Training (possibly noisy) labels, int64 (N,), on :attr:`device`."""

    @property
    def true_labels(self) -> Tensor | None:
        """Clean labels, int64 (N,), or None when unknown (the monitor is then off)."""

    @property
    def num_classes(self) -> int:
        """Number of classes K; every label lies in [0, K)."""

    @property
    def device(self) -> torch.device:
        """Where batches, labels and indices are."""

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one example as batches yield it, e.g. (3, 32, 32) or (64,)."""

    def __len__(self) -> int: ...

    def to(self, device: torch.device | str) -> Batches:
        """The same data set on ``device`` (data preparation places the sets it builds)."""

    def subset(self, idx) -> Batches:
        """The examples at positions ``idx`` (ints as a Tensor or array, or a boolean mask), re-numbered ``0 .. len(idx) - 1``."""

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Batches a training epoch of ``batch_size`` yields (known before the epoch is drawn)."""

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
                drop_last: bool = False, train: bool | None = None,
                shard: tuple[int, int] | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """One epoch of ``(x, y, index)``: float32 inputs, int64 labels, int64 positions in this data set.

        Every random draw (order, augmentation) comes from ``generator`` when this is called, so a
        restored generator repeats an epoch. ``train`` (default ``shuffle``) augments;
        ``shard=(rank, world_size)`` gives this rank its slice of each global batch.
        """


@dataclass
class TrainData:
    """The data sets of a run: noisy training set, optional noisy validation split, clean test set.

    ``test`` is None when there is none to measure (an ``ELRClassifier`` fit): no ``test_acc``.
    ``extra_tests`` are reported as ``<name>_acc`` and ``<name>_top5`` (WebVision: ``imagenet``).
    """

    train: Batches
    test: Batches | None = None
    val: Batches | None = None
    num_classes: int = 0
    extra_tests: dict[str, Batches] = field(default_factory=dict)
