"""mini-WebVision on its official layout (the first 50 Google classes), with ImageNet val as a second test set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .file_lists import ImageList, ImageSets, checked_list, class_folder_files, encode_paths, path_and_label, read_lines

__all__ = ["read_webvision", "WEBVISION_CLASSES"]

WEBVISION_CLASSES = 50  # mini-WebVision: the first 50 classes of the Google subset


def _filelist(file: Path, image_root: Path, num_classes: int, keep: int) -> ImageList:
    paths, ys, lines = [], [], []
    for line, text in read_lines(file):
        path, label = path_and_label(file, line, text, num_classes)
        if label < keep:
            paths.append(path)
            ys.append(label)
            lines.append(line)
    if not paths:
        raise ValueError(f"{file} lists no images of the first {keep} classes")
    return checked_list(image_root, paths, ys, file, lines)


def _imagenet_val(folder: Path, synsets: list[str]) -> ImageList:
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet validation folder {folder} not found (data.imagenet_root)")
    paths, ys = [], []
    for label, synset in enumerate(synsets):
        sub = folder / synset
        if not sub.is_dir():
            raise FileNotFoundError(f"{sub} not found: data.imagenet_root must hold the ILSVRC2012 validation images "
                                    f"in one folder per synset ({synset} is class {label} in info/synsets.txt)")
        files = class_folder_files(sub)
        paths += [os.path.relpath(f, folder) for f in files]
        ys += [label] * len(files)
    if not paths:
        raise ValueError(f"{folder} holds no images of the {len(synsets)} mini-WebVision synsets")
    return ImageList(str(folder), encode_paths(paths), np.asarray(ys, dtype=np.int64), None, str(folder))


def read_webvision(root: str | Path, imagenet_root: str | Path | None = None,
                   num_classes: int = WEBVISION_CLASSES) -> ImageSets:
    """Read mini-WebVision (the first ``num_classes`` classes of the Google subset) under ``root``.

    ``root`` holds ``info/synsets.txt`` (line ``i``: the synset of class ``i``, then its words),
    ``info/train_filelist_google.txt`` (``google/qNNNN/name.jpg <label>``, relative to ``root``),
    ``info/val_filelist.txt`` (``name.jpg <label>``) and the validation images in
    ``val_images_256/`` (the resized release; ``val_images/`` is used when that is absent).

    The WebVision validation set is the test set. With ``imagenet_root`` (the ILSVRC2012
    validation images sorted into one folder per synset, e.g. ``n01440764/``) the images of the
    same classes form a second test set, ``extra_tests["imagenet"]``.
    """
    root = Path(root)
    info = root / "info"
    synset_lines = read_lines(info / "synsets.txt")
    if len(synset_lines) < num_classes:
        raise ValueError(f"{info / 'synsets.txt'} lists {len(synset_lines)} classes; mini-WebVision needs {num_classes}")
    synsets = [text.split()[0] for _, text in synset_lines]
    words = [text.split(None, 1)[1] if len(text.split(None, 1)) > 1 else text for _, text in synset_lines]
    train = _filelist(info / "train_filelist_google.txt", root, len(synsets), num_classes)
    val_dir = root / "val_images_256"
    if not val_dir.is_dir():
        val_dir = root / "val_images"
    if not val_dir.is_dir():
        raise FileNotFoundError(f"neither {root / 'val_images_256'} nor {root / 'val_images'} is a folder "
                                "(the WebVision validation images)")
    test = _filelist(info / "val_filelist.txt", val_dir, len(synsets), num_classes)
    extra = {}
    if imagenet_root is not None:
        extra["imagenet"] = _imagenet_val(Path(imagenet_root).expanduser(), synsets[:num_classes])
    return ImageSets("webvision", words[:num_classes], train, test, None, extra)
