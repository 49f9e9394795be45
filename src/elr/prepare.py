"""The data of a run from its config, one spine for every kind of data: read, subset, noise, summary, split, data sets."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from . import noise
from .config import FILE_DATASETS, Config, ConfigError
from .data import FileDataset, ImageList, ImageSets, ImageTransform, InMemoryDataset, TrainData
from .data import Standardization, read_clothing1m, read_dataset, read_features, read_image_folder, read_label_files
from .data import read_webvision, stratified_split
from .data.cifar_n import CIFAR_N, read_cifar_n
from .data.clothing1m import CLOTHING1M_MEAN_STD
from .data.image_transform import IMAGENET_MEAN_STD
from .data.readers import RawData

__all__ = ["PreparedData", "derived_seeds", "prepare_data", "read_image_sets", "training_images"]


@dataclass
class PreparedData:
    """The datasets of a run plus what is saved about its labels."""

    data: TrainData
    noisy_labels: np.ndarray  # the whole (sub-sampled) training set, before the validation split
    true_labels: np.ndarray | None  # None when unknown (real-noise image data sets)
    val_indices: np.ndarray
    noise_summary: dict[str, Any]
    class_names: list[str] = field(default_factory=list)
    label_to_index: dict[str, int] | None = None  # labels written as names in a CSV -> class index
    standardization: Standardization | None = None  # data.standardize: what scaled the features


def derived_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for each random choice of a run, all derived from ``config.seed``."""
    # generate_state(n) is prefix-stable: adding names at the end leaves the earlier seeds unchanged
    names = ("subset", "noise", "split", "train", "network2", "mixup")
    words = np.random.SeedSequence(seed).generate_state(len(names))
    return {name: int(w) for name, w in zip(names, words)}


def prepare_data(config: Config, device: torch.device | str = "cpu", *,
                 standardization: Standardization | None = None) -> PreparedData:
    """Read the data set, keep the configured subset, apply label noise, split off validation, scale features.

    The steps are the same for every kind of data; what differs (how a training set is read, kept
    in part and turned into data sets) is a :class:`_Source`: arrays held in memory, or image files.
    With ``data.standardize`` the features are scaled by ``standardization`` (a resumed or evaluated
    run's stored one) or, without it, by one fitted on the training split (not the validation rows).
    """
    d = config.data
    seeds = derived_seeds(config.seed)
    source = _read_source(config)
    labels_before_subset = source.labels  # CIFAR-N labels the whole training set: its subset is taken too
    keep = _subset(config, labels_before_subset, seeds["subset"])
    if keep is not None:
        source = source.take(keep)

    noisy, true = _noisy_labels(config, source, labels_before_subset, keep, seeds["noise"])
    noisy = np.asarray(noisy, dtype=np.int64)
    if true is not None:
        summary = noise.summary(noisy, true, source.num_classes)
    else:
        summary = {"num_examples": len(noisy), "num_classes": source.num_classes, "noise_rate": None,
                   "true_labels": "unknown"}

    if d.val_fraction > 0:
        if source.has_own_val:
            raise ConfigError(f"data.val_fraction: {d.dataset} at {d.root} has its own validation set; set it to 0")
        train_idx, val_idx = stratified_split(noisy, d.val_fraction, seed=seeds["split"])
    else:
        train_idx, val_idx = np.arange(len(noisy)), np.zeros(0, dtype=np.int64)
    scaling = None
    if d.standardize:
        if not isinstance(source, _Arrays) or source.raw.is_image:
            raise ConfigError(f"data.standardize scales feature vectors, and {d.root or d.dataset} holds images; remove it")
        if standardization is not None:
            _check_stored_scaling(standardization, source.x_train.shape[1], source.raw.feature_names, d.root or d.dataset)
        scaling = standardization or Standardization.fit(source.x_train[train_idx], source.raw.feature_names)
        source = source.scaled(scaling)
    data = source.datasets(config, noisy, true, train_idx, val_idx, device)
    return PreparedData(data, noisy, true, val_idx, summary, source.class_names, source.label_to_index, scaling)


def _check_stored_scaling(scaling: Standardization, width: int, names: list[str] | None, where: str) -> None:
    """A stored scaling must meet the columns it was fitted on (a resumed run's file may have changed since)."""
    if len(scaling.mean) != width:
        raise ValueError(f"the run's stored standardisation scales {len(scaling.mean)} features, but {where} now has "
                         f"{width} a row: the data changed")
    if scaling.feature_names is not None and names is not None and scaling.feature_names != names:
        moved = next(k for k, (a, b) in enumerate(zip(scaling.feature_names, names)) if a != b)
        raise ValueError(f"the run's stored standardisation was fitted with feature column {moved + 1} "
                         f"{scaling.feature_names[moved]!r}, but {where} now has {names[moved]!r} there: the columns "
                         f"changed; restore the file, or choose the columns with data.feature_columns")


def training_images(config: Config) -> np.ndarray | None:
    """The training inputs of an in-memory run in ``noisy_labels.npy`` order, as images to look at.

    uint8 (N, H, W, C) for image data, (N, H, W) for features that are pixels (digits); None for
    other feature vectors (``features``) and for image-file data sets (their files are listed in examples.csv).
    """
    if config.data.dataset in (*FILE_DATASETS, "features"):
        return None
    raw = read_dataset(config.data.dataset, config.data.root)
    keep = _subset(config, np.asarray(raw.y_train, dtype=np.int64), derived_seeds(config.seed)["subset"])
    x = raw.x_train if keep is None else raw.x_train[keep]
    if raw.is_image:
        return np.asarray(x)
    if raw.pixels is None:
        return None
    return (np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * 255).round().astype(np.uint8).reshape(-1, *raw.pixels)


# ---- the spine's steps ---------------------------------------------------------------------------


def _subset(config: Config, labels: np.ndarray, seed: int) -> np.ndarray | None:
    """Positions of the configured training subset (stratified by the given labels); None keeps all."""
    size = config.data.train_size
    if size is None or size >= len(labels):
        return None
    return stratified_split(labels, size / len(labels), seed=seed)[1]


def _noisy_labels(config: Config, source: _Source, labels_before_subset: np.ndarray, keep: np.ndarray | None,
                  derived_seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The training labels after the configured noise, and the true labels (None when unknown).

    Noise is drawn from the labels as given; with noise the given labels are the true ones unless the
    source knows better (a CSV ``true_label`` column). Without noise the labels are used as given.
    """
    n, k = config.noise, source.num_classes
    given, known = source.labels, source.true_labels
    seed = n.seed if n.seed is not None else derived_seed
    if n.type in CIFAR_N:
        noisy = _human_labels(config, labels_before_subset, k)
        noisy = noisy if keep is None else noisy[keep]
    elif n.type == "none" or n.rate == 0:
        return given.copy(), known
    elif n.type == "symmetric":
        noisy = noise.symmetric(given, n.rate, k, seed=seed, exclude_true=n.exclude_true)
    else:
        d = config.data
        kind = d.dataset if d.dataset in ("cifar10", "cifar100") else {10: "cifar10", 100: "cifar100"}.get(k)
        if kind is None:
            raise ConfigError("noise.type=asymmetric needs CIFAR-10 or CIFAR-100 classes (10 or 100)")
        noisy = noise.asymmetric(given, n.rate, dataset=kind, seed=seed)
    return noisy, (known if known is not None else given)


def _human_labels(config: Config, y_all: np.ndarray, num_classes: int) -> np.ndarray:
    """CIFAR-N's noisy labels for the whole training set (``y_all``, checked against the file)."""
    n = config.noise
    expected = CIFAR_N[n.type][1]
    if num_classes != expected:
        raise ConfigError(f"noise.type={n.type} needs a data set of {expected} classes, got {num_classes}")
    return read_cifar_n(n.type, label_set=n.label_set, true_labels=y_all, file=n.file, root=config.data.root)


# ---- kinds of data: where a new reader plugs in --------------------------------------------------


class _Source(Protocol):
    """A training set as read, before noise: what the spine needs of one kind of data."""

    labels: np.ndarray  # given training labels, int64 (N,)
    true_labels: np.ndarray | None  # known clean labels, or None
    num_classes: int
    class_names: list[str]
    label_to_index: dict[str, int] | None
    has_own_val: bool  # a validation set of its own: no split may be taken

    def take(self, keep: np.ndarray) -> _Source: ...

    def datasets(self, config: Config, noisy: np.ndarray, true: np.ndarray | None, train_idx: np.ndarray,
                 val_idx: np.ndarray, device: torch.device | str) -> TrainData: ...


def _read_source(config: Config) -> _Source:
    d = config.data
    if d.dataset in FILE_DATASETS:
        return _Files(read_image_sets(config))
    if d.dataset == "features":
        return _Arrays(read_features(d.root, test_file=d.test_file, test_fraction=d.test_fraction,
                                     label_column=d.label_column, feature_columns=d.feature_columns,
                                     true_label_column=d.true_label_column))
    return _Arrays(read_dataset(d.dataset, d.root))


class _Arrays:
    """Arrays read whole into memory (CIFAR, an npz, digits, features): :class:`~elr.data.InMemoryDataset`."""

    has_own_val = False

    def __init__(self, raw: RawData):
        self.raw, self.x_train, self.x_test = raw, raw.x_train, raw.x_test
        self.labels = np.asarray(raw.y_train, dtype=np.int64)
        # published arrays come with their true labels (noise is added here); a table may give them apart
        known = raw.y_train_true if raw.y_train_true is not None else (raw.y_train if raw.clean else None)
        self.true_labels = None if known is None else np.asarray(known, dtype=np.int64)
        self.class_names = list(raw.class_names or [])
        self.label_to_index = raw.label_to_index
        self.num_classes = len(raw.class_names) if raw.class_names else int(max(self.labels.max(), raw.y_test.max()) + 1)

    def take(self, keep: np.ndarray) -> _Arrays:
        part = copy.copy(self)
        part.x_train, part.labels = self.x_train[keep], self.labels[keep]
        part.true_labels = None if self.true_labels is None else self.true_labels[keep]
        return part

    def scaled(self, scaling: Standardization) -> _Arrays:
        part = copy.copy(self)
        part.x_train, part.x_test = scaling.apply(self.x_train), scaling.apply(self.x_test)
        return part

    def datasets(self, config, noisy, true, train_idx, val_idx, device) -> TrainData:
        raw, x, x_test = self.raw, self.x_train, self.x_test
        common = {"mean": raw.mean, "std": raw.std, "class_names": raw.class_names}
        images = np.asarray(x).ndim == 4
        if not images:  # features read as float64 are trained on as float32
            names = raw.feature_names
            x, x_test = _as_float32(x, config.data.root, names), _as_float32(x_test, config.data.root, names)

        def rows(idx):
            return None if true is None else true[idx]
        train = InMemoryDataset(x[train_idx], noisy[train_idx], true_labels=rows(train_idx),
                                augment=config.data.augment and images, **common)
        val = (InMemoryDataset(x[val_idx], noisy[val_idx], true_labels=rows(val_idx), **common)
               if len(val_idx) else None)
        test = InMemoryDataset(x_test, np.asarray(raw.y_test, dtype=np.int64), **common)
        return TrainData(train=train.to(device), test=test.to(device),
                         val=val.to(device) if val is not None else None, num_classes=self.num_classes)


def _as_float32(x: np.ndarray, where: str | None, names: list[str] | None) -> np.ndarray:
    """Features as float32; a value beyond float32's range (it would become inf) is refused, naming its column."""
    if x.dtype != np.float32 and len(x):
        top = np.abs(x).max(axis=0)
        too_big = np.flatnonzero(top > np.finfo(np.float32).max)
        if len(too_big):
            col = int(too_big[0])
            column = repr(names[col]) if names else col
            raise ValueError(f"{where}: feature column {column} holds {float(top[col]):.4g}, beyond float32's range "
                             f"(3.4e38) in which the network computes; rescale it or set data.standardize=true")
    return x.astype(np.float32, copy=False)


# (image_size, crop_size) when the config leaves them out: the authors' sizes for the benchmarks
_SIZES = {"webvision": (256, 227)}
_DEFAULT_SIZES = (256, 224)


def read_image_sets(config: Config) -> ImageSets:
    """Read the file lists of ``config.data`` (every listed file is checked to exist)."""
    d = config.data
    if d.dataset == "image_folder":
        return read_image_folder(d.root)
    if d.dataset == "csv":
        return read_label_files(d.root, d.label_file, d.test_label_file, d.val_label_file)
    if d.dataset == "clothing1m":
        return read_clothing1m(d.root)
    if d.dataset == "webvision":
        return read_webvision(d.root, d.imagenet_root)
    raise ConfigError(f"data.dataset={d.dataset!r} is not an image-file data set")


class _Files:
    """Image files decoded by DataLoader workers (image folders, CSV lists, Clothing1M, WebVision).

    The given labels are used as they are (Clothing1M, WebVision, or the user's own noisy labels)
    unless ``noise.type: symmetric`` adds synthetic noise to them. True labels are known only from
    a CSV ``true_label`` column or, with synthetic noise, as the labels given; otherwise they are
    None and the memorization monitor is off.
    """

    def __init__(self, sets: ImageSets, train: ImageList | None = None):
        self.sets = sets
        self.train = sets.train if train is None else train
        self.labels, self.true_labels = self.train.labels, self.train.true_labels
        self.num_classes = len(sets.class_names)
        self.class_names = list(sets.class_names)
        self.label_to_index = sets.label_to_index
        self.has_own_val = sets.val is not None

    def take(self, keep: np.ndarray) -> _Files:
        return _Files(self.sets, self.train.take(keep))

    def datasets(self, config, noisy, true, train_idx, val_idx, device) -> TrainData:
        d, sets, t = config.data, self.sets, self.train
        labelled = ImageList(t.root, t.paths, noisy, true, t.source, t.lines)
        image_size, crop_size = _SIZES.get(d.dataset, _DEFAULT_SIZES)
        image_size = d.image_size or max(image_size, d.crop_size or 0)
        crop_size = d.crop_size or min(crop_size, image_size)
        train_crop = d.train_crop if d.augment else "none"
        mean, std = CLOTHING1M_MEAN_STD if d.dataset == "clothing1m" else IMAGENET_MEAN_STD
        common = dict(mean=mean, std=std, num_classes=self.num_classes, class_names=sets.class_names,
                      workers=d.workers, decode_errors=d.decode_errors, device=device)
        eval_transform = ImageTransform(image_size, crop_size, "none")
        epoch_examples = d.batches_per_epoch * config.optim.batch_size if d.batches_per_epoch else None
        train = FileDataset(labelled.take(train_idx), transform=ImageTransform(image_size, crop_size, train_crop),
                            epoch_examples=epoch_examples, **common)
        if len(val_idx):
            val = FileDataset(labelled.take(val_idx), transform=eval_transform, **common)
        else:
            val = None if sets.val is None else FileDataset(sets.val, transform=eval_transform, **common)
        test = FileDataset(sets.test, transform=eval_transform, **common)
        extra = {name: FileDataset(lst, transform=eval_transform, **common) for name, lst in sets.extra_tests.items()}
        return TrainData(train=train, test=test, val=val, num_classes=self.num_classes, extra_tests=extra)
