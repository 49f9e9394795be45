"""A data set of image files decoded by DataLoader workers, following the same Batches protocol as InMemoryDataset."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..distributed import shard_positions
from .augment import check_generator
from .file_lists import ImageList
from .image_transform import ImageTransform, load_rgb, pillow

__all__ = ["FileDataset", "balanced_quotas"]

log = logging.getLogger(__name__)

DECODE_ERRORS = ("raise", "skip")


def balanced_quotas(counts: Sequence[int], total: int) -> np.ndarray:
    """How many examples of each class a class-balanced draw of ``total`` takes (water-filling).

    Every class gets an equal share; a class with fewer examples gives all it has and its unused
    share goes to the others. The result sums to ``min(total, sum(counts))`` and depends only on
    the counts, so the number of batches in an epoch is known before the draw.
    """
    counts = np.asarray(counts, dtype=np.int64)
    quota = np.zeros_like(counts)
    remaining = min(int(total), int(counts.sum()))
    open_ = [c for c in np.argsort(counts, kind="stable") if counts[c] > 0]
    while remaining > 0 and open_:
        share = remaining // len(open_)
        if share == 0:  # fewer left than open classes: one more each for the largest classes
            for c in sorted(open_, key=lambda c: (-(counts[c] - quota[c]), c))[:remaining]:
                quota[c] += 1
            break
        for c in list(open_):
            take = min(share, counts[c] - quota[c])
            quota[c] += take
            remaining -= take
            if quota[c] == counts[c]:
                open_.remove(c)
    return quota


class _Decode(torch.utils.data.Dataset):
    """What a worker runs: item ``k`` of an epoch plan -> (k, uint8 HxWx3 pixels or None, error or None)."""

    def __init__(self, images: ImageList, transform: ImageTransform, index: np.ndarray, epoch_seed: int | None):
        self.images, self.transform, self.index, self.epoch_seed = images, transform, index, epoch_seed

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int):
        i = int(self.index[k])
        try:
            img = load_rgb(self.images.path(i))
            # the crop depends on the epoch's draw and the place in the epoch only, not on the worker
            pixels = self.transform(img, None if self.epoch_seed is None else (self.epoch_seed, k))
        except ImportError:
            raise
        except Exception as exc:  # missing, unreadable or undecodable file: the main process decides
            return k, None, f"{type(exc).__name__}: {exc}"
        return k, pixels, None


def _collate(items):
    ok = [(k, pixels) for k, pixels, err in items if err is None]
    failed = [(k, err) for k, _, err in items if err is not None]
    x = torch.from_numpy(np.stack([p for _, p in ok])) if ok else None
    return x, torch.tensor([k for k, _ in ok], dtype=torch.int64), failed


class FileDataset:
    """Labelled image files, decoded with Pillow by ``workers`` DataLoader processes.

    It follows the :class:`~elr.data.Batches` protocol, as :class:`~elr.data.InMemoryDataset`
    does, and adds ``take_skipped``. All randomness comes from the generator passed to :meth:`batches`, drawn when
    it is called: the class-balanced draw (with ``epoch_examples``), the order, then one seed for
    the epoch's crops and flips. Each example's crop depends on that seed and its place in the
    epoch only, so batches are identical for any number of workers, and a resumed run (generator
    restored) sees the same epochs.

    Parameters
    ----------
    images : ImageList
    transform : ImageTransform
        Sizes and the training crop; evaluation always resizes and centre-crops.
    mean, std : sequence of 3 floats
        Normalisation in [0, 1] pixel units, applied on ``device``.
    num_classes : int
    class_names : sequence of str, optional
    workers : int
        DataLoader worker processes (0 decodes in the calling process).
    decode_errors : {"raise", "skip"}
        What a file that cannot be read or decoded does: raise an error naming it and its list
        line, or leave it out of its batch, log it and count it (:meth:`take_skipped`). In
        evaluation a skipped example counts as misclassified (accuracies divide by ``len``).
    epoch_examples : int, optional
        Training epochs draw this many examples, class-balanced by label
        (:func:`balanced_quotas`), afresh every epoch; default: every example once.
    device : torch.device or str
    """

    def __init__(self, images: ImageList, *, transform: ImageTransform, mean: Sequence[float], std: Sequence[float],
                 num_classes: int, class_names: Sequence[str] | None = None, workers: int = 0,
                 decode_errors: str = "raise", epoch_examples: int | None = None,
                 device: torch.device | str = "cpu"):
        pillow()  # fail now, with the extra to install, rather than in a worker
        if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
            raise ValueError(f"workers must be a non-negative int, got {workers!r}")
        if decode_errors not in DECODE_ERRORS:
            raise ValueError(f"decode_errors must be one of {', '.join(DECODE_ERRORS)}; got {decode_errors!r}")
        if epoch_examples is not None and (isinstance(epoch_examples, bool) or epoch_examples < 1):
            raise ValueError(f"epoch_examples must be a positive int or None, got {epoch_examples!r}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must be 3 numbers each (std > 0), got {mean!r}, {std!r}")
        top = int(max(images.labels.max(initial=-1),
                      -1 if images.true_labels is None else images.true_labels.max(initial=-1)))
        if top >= num_classes:
            raise ValueError(f"labels go up to {top} but num_classes is {num_classes}")
        self.images = images
        self.transform = transform
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.num_classes = int(num_classes)
        self.class_names = None if class_names is None else list(class_names)
        self.workers = int(workers)
        self.decode_errors = decode_errors
        self.epoch_examples = epoch_examples
        self._skipped = [0]  # shared with subsets and copies: the engine reads one count per data set
        self._place(torch.device(device))

    def _place(self, device: torch.device) -> None:
        self._device = device
        self._labels = torch.from_numpy(self.images.labels).to(device)
        t = self.images.true_labels
        self._true_labels = None if t is None else torch.from_numpy(t).to(device)
        # (x / 255 - mean) / std as one multiply-add on the device
        self._scale = (1.0 / (255.0 * torch.tensor(self.std, device=device))).view(1, 3, 1, 1)
        self._shift = (-torch.tensor(self.mean, device=device) / torch.tensor(self.std, device=device)).view(1, 3, 1, 1)

    def _copy(self, images: ImageList, device: torch.device, epoch_examples: int | None) -> FileDataset:
        new = object.__new__(FileDataset)
        new.__dict__.update(self.__dict__)
        new.images, new.epoch_examples = images, epoch_examples
        new._place(device)
        return new

    # ---- what the engine reads ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"FileDataset(n={len(self)}, root={self.images.root!r}, crop={self.transform.crop_size}, "
                f"workers={self.workers}, device={self._device})")

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def labels(self) -> Tensor:
        """Training labels, int64 (N,), on the device."""
        return self._labels

    @property
    def true_labels(self) -> Tensor | None:
        """Clean labels, int64 (N,), or None when unknown (the memorization monitor is then off)."""
        return self._true_labels

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of one example in a batch: (3, crop_size, crop_size)."""
        return (3, self.transform.crop_size, self.transform.crop_size)

    def to(self, device: torch.device | str) -> FileDataset:
        return self._copy(self.images, torch.device(device), self.epoch_examples)

    def subset(self, idx) -> FileDataset:
        """The examples at positions ``idx``, re-numbered ``0 .. len(idx) - 1`` (every one per epoch)."""
        i = idx.cpu().numpy() if isinstance(idx, Tensor) else np.asarray(idx)
        if i.dtype == bool:
            i = np.flatnonzero(i)
        if i.size and (i.min() < 0 or i.max() >= len(self)):
            raise ValueError(f"idx must lie in [0, {len(self)})")
        return self._copy(self.images.take(i), self._device, None)

    def with_labels(self, labels) -> FileDataset:
        """A copy that trains on ``labels`` (int, shape (N,)); the files and true labels are shared."""
        y = np.asarray(labels, dtype=np.int64)
        if y.shape != (len(self),) or (y.size and (y.min() < 0 or y.max() >= self.num_classes)):
            raise ValueError(f"labels must be {len(self)} ints in [0, {self.num_classes})")
        im = self.images
        return self._copy(ImageList(im.root, im.paths, y, im.true_labels, im.source, im.lines), self._device,
                          self.epoch_examples)

    def take_skipped(self) -> int:
        """Number of files skipped (``decode_errors: skip``) since the last call."""
        n, self._skipped[0] = self._skipped[0], 0
        return n

    def _epoch_size(self) -> int:
        if self.epoch_examples is None:
            return len(self)
        counts = np.bincount(self.images.labels, minlength=self.num_classes)
        return int(balanced_quotas(counts, self.epoch_examples).sum())

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Batches in one training epoch (an evaluation pass covers all ``len(self)`` examples)."""
        n = self._epoch_size()
        return n // batch_size if drop_last else math.ceil(n / batch_size)

    # ---- batches ---------------------------------------------------------------------------------
    def _draw(self, generator: torch.Generator) -> np.ndarray:
        labels = self.images.labels
        if self.epoch_examples is None:
            picked = np.arange(len(self))
        else:
            quotas = balanced_quotas(np.bincount(labels, minlength=self.num_classes), self.epoch_examples)
            parts = []
            for c, q in enumerate(quotas):
                if q:
                    members = np.flatnonzero(labels == c)
                    parts.append(members[torch.randperm(len(members), generator=generator)[:q].numpy()])
            picked = np.sort(np.concatenate(parts))
        return picked[torch.randperm(len(picked), generator=generator).numpy()]

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
                drop_last: bool = False, train: bool | None = None,
                shard: tuple[int, int] | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Iterate over one epoch: ``(x, y, index)`` on the device, as :meth:`InMemoryDataset.batches`.

        ``x`` is float32 (B, 3, crop, crop), normalised; ``index`` are positions in this data set.
        With ``decode_errors: skip`` a batch may be shorter than ``batch_size`` (an empty one is
        not yielded). ``shuffle`` draws the epoch (class-balanced with ``epoch_examples``) from
        ``generator``; ``train`` (default ``shuffle``) applies the training crop and flip.
        ``shard=(rank, world_size)``: ``batch_size`` is the global batch and this rank decodes its
        slice of each (as :meth:`InMemoryDataset.batches`); crops depend on the epoch position only.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        train = shuffle if train is None else bool(train)
        augmenting = train and self.transform.augments
        if shuffle or augmenting:
            if generator is None:
                raise ValueError("generator is required when shuffling or augmenting: pass "
                                 "torch.Generator().manual_seed(seed)")
            check_generator(generator)
        index = self._draw(generator) if shuffle else np.arange(len(self))
        # one 62-bit seed for the epoch's crops and flips, drawn after the order
        epoch_seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if augmenting else None
        stop = len(index) - len(index) % batch_size if drop_last else len(index)
        plan = [list(range(s, min(s + batch_size, stop))) for s in range(0, stop, batch_size)]
        if shard is not None:
            plan = [[part[p] for p in shard_positions(len(part), *shard).tolist()] for part in plan]
        return self._iterate(_Decode(self.images, self.transform, index, epoch_seed), plan)

    def _iterate(self, decode: _Decode, plan: list[list[int]]) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        if not plan:
            return
        cuda = self._device.type == "cuda"
        loader = DataLoader(decode, batch_sampler=plan, num_workers=self.workers, collate_fn=_collate,
                            pin_memory=cuda, generator=torch.Generator())  # own generator: global RNG untouched
        positions = torch.from_numpy(decode.index)
        for x, keys, failed in loader:
            for k, err in failed:
                where = self.images.where(int(decode.index[k]))
                if self.decode_errors == "raise":
                    raise ValueError(f"cannot read image {where}: {err} (set data.decode_errors=skip to skip and "
                                     "count such files)")
                self._skipped[0] += 1
                log.warning("skipped unreadable image %s: %s", where, err)
            if x is None:
                continue
            index = positions[keys].to(self._device, non_blocking=cuda)
            x = x.to(self._device, non_blocking=cuda).permute(0, 3, 1, 2).float()
            yield (x * self._scale + self._shift).contiguous(), self._labels[index], index
