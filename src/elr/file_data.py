"""Runs on image files: read the lists named by the config, label them, split, and build FileDatasets."""

from __future__ import annotations

import numpy as np
import torch

from . import noise
from .config import Config, ConfigError
from .data.files import FileDataset
from .data.image_lists import ImageList, ImageSets, read_image_folder, read_label_files
from .data.images import ImageTransform
from .data.real import CLOTHING1M_MEAN_STD, IMAGENET_MEAN_STD, read_clothing1m, read_webvision
from .data.split import stratified_split
from .engine import TrainData

__all__ = ["read_image_sets", "prepare_file_data"]

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


def prepare_file_data(config: Config, device: torch.device | str = "cpu"):
    """The :class:`~elr.runs.PreparedData` of a run on image files.

    The given labels are used as they are (Clothing1M, WebVision, or the user's own noisy labels)
    unless ``noise.type: symmetric`` adds synthetic noise to them. True labels are known only from
    a CSV ``true_label`` column or, with synthetic noise, as the labels given; otherwise they are
    None and the memorization monitor is off.
    """
    from .runs import PreparedData, derived_seeds  # runs imports this module lazily

    d, n = config.data, config.noise
    sets = read_image_sets(config)
    seeds = derived_seeds(config.seed)
    num_classes = len(sets.class_names)
    train_list = sets.train
    if d.train_size is not None and d.train_size < len(train_list):
        _, keep = stratified_split(train_list.labels, d.train_size / len(train_list), seed=seeds["subset"])
        train_list = train_list.take(keep)

    given = train_list.labels
    if n.type == "symmetric" and n.rate > 0:
        seed = n.seed if n.seed is not None else seeds["noise"]
        noisy = noise.symmetric(given, n.rate, num_classes, seed=seed, exclude_true=n.exclude_true)
        true = train_list.true_labels if train_list.true_labels is not None else given
    else:
        noisy, true = given, train_list.true_labels
    if true is not None:
        summary = noise.summary(noisy, true, num_classes)
    else:
        summary = {"num_examples": len(noisy), "num_classes": num_classes, "noise_rate": None,
                   "true_labels": "unknown"}
    labelled = ImageList(train_list.root, train_list.paths, noisy, true, train_list.source, train_list.lines)

    if d.val_fraction > 0:
        if sets.val is not None:
            raise ConfigError(f"data.val_fraction: {d.dataset} at {d.root} has its own validation set; set it to 0")
        train_idx, val_idx = stratified_split(noisy, d.val_fraction, seed=seeds["split"])
    else:
        train_idx, val_idx = np.arange(len(noisy)), np.zeros(0, dtype=np.int64)

    image_size, crop_size = _SIZES.get(d.dataset, _DEFAULT_SIZES)
    image_size = d.image_size or max(image_size, d.crop_size or 0)
    crop_size = d.crop_size or min(crop_size, image_size)
    train_crop = d.train_crop if d.augment else "none"
    mean, std = CLOTHING1M_MEAN_STD if d.dataset == "clothing1m" else IMAGENET_MEAN_STD
    common = dict(mean=mean, std=std, num_classes=num_classes, class_names=sets.class_names, workers=d.workers,
                  decode_errors=d.decode_errors, device=device)
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
    data = TrainData(train=train, test=test, val=val, num_classes=num_classes, extra_tests=extra)
    return PreparedData(data, np.asarray(noisy, dtype=np.int64), true, val_idx, summary, list(sets.class_names),
                        sets.label_to_index)

