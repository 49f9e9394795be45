"""Readers for the real-noise benchmarks on their official layouts: Clothing1M and mini-WebVision (+ ImageNet val)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .image_lists import ImageList, ImageSets, _class_folder_files, _encode, check_files_exist

__all__ = ["read_clothing1m", "read_webvision", "IMAGENET_MEAN_STD", "CLOTHING1M_MEAN_STD"]

# Per-channel (mean, std) in [0, 1] pixel units, as in the ELR authors' transforms.
CLOTHING1M_MEAN_STD = ((0.6959, 0.6537, 0.6371), (0.3113, 0.3192, 0.3214))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # WebVision and the user's own images

CLOTHING1M_CLASSES = 14
WEBVISION_CLASSES = 50  # mini-WebVision: the first 50 classes of the Google subset


def _lines(file: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based numbers."""
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{file}: not UTF-8 text ({exc})") from None
    return [(k, line.strip()) for k, line in enumerate(text.splitlines(), 1) if line.strip()]


def _path_label(file: Path, line: int, text: str, num_classes: int) -> tuple[str, int]:
    parts = text.split()
    if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
        raise ValueError(f"{file} line {line}: expected '<image path> <integer label>', got {text!r}")
    label = int(parts[1])
    if label < 0 or label >= num_classes:
        raise ValueError(f"{file} line {line}: label {label} is outside the class list [0, {num_classes})")
    return parts[0], label


# ---- Clothing1M --------------------------------------------------------------------------------


def _label_map(file: Path, num_classes: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line, text in _lines(file):
        key, label = _path_label(file, line, text, num_classes)
        if out.get(key, label) != label:
            raise ValueError(f"{file} line {line}: {key} is listed twice with different labels ({out[key]} and {label})")
        out[key] = label
    return out


def _checked_list(root: Path, paths: list[str], ys: list[int], file: Path, lines: list[int]) -> ImageList:
    """The list read from ``file`` (with its line numbers for errors), every image checked to exist."""
    images = ImageList(str(root), _encode(paths), np.asarray(ys, dtype=np.int64), None, str(file),
                       np.asarray(lines, dtype=np.int64))
    check_files_exist(images)
    return images


def _keyed_list(root: Path, key_file: Path, labels: dict[str, int], label_file: Path) -> ImageList:
    keys, ys, lines = [], [], []
    for line, key in _lines(key_file):
        if key not in labels:
            raise ValueError(f"{key_file} line {line}: {key} has no label in {label_file}")
        keys.append(key)
        ys.append(labels[key])
        lines.append(line)
    if not keys:
        raise ValueError(f"{key_file} lists no images")
    return _checked_list(root, keys, ys, key_file, lines)


def read_clothing1m(root: str | Path) -> ImageSets:
    """Read Clothing1M from its official layout under ``root``.

    ``root`` holds ``images/``, ``noisy_label_kv.txt`` and ``clean_label_kv.txt`` (lines
    ``images/a/b/name.jpg <label>``), ``noisy_train_key_list.txt``, ``clean_val_key_list.txt``,
    ``clean_test_key_list.txt`` (one image path per line) and ``category_names_eng.txt`` (14 names).

    Returns the noisy training list (true labels unknown) and the clean validation and test lists.
    Every listed image must exist; a key without a label, or a label outside [0, 14), is an error
    naming the file and line.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Clothing1M root {root} is not a folder")
    names = [text for _, text in _lines(root / "category_names_eng.txt")]
    if len(names) != CLOTHING1M_CLASSES:
        raise ValueError(f"{root / 'category_names_eng.txt'}: expected {CLOTHING1M_CLASSES} class names, got {len(names)}")
    noisy_file, clean_file = root / "noisy_label_kv.txt", root / "clean_label_kv.txt"
    noisy, clean = _label_map(noisy_file, len(names)), _label_map(clean_file, len(names))
    train = _keyed_list(root, root / "noisy_train_key_list.txt", noisy, noisy_file)
    val = _keyed_list(root, root / "clean_val_key_list.txt", clean, clean_file)
    test = _keyed_list(root, root / "clean_test_key_list.txt", clean, clean_file)
    return ImageSets("clothing1m", names, train, test, val)


# ---- mini-WebVision and ImageNet val -----------------------------------------------------------


def _filelist(file: Path, image_root: Path, num_classes: int, keep: int) -> ImageList:
    paths, ys, lines = [], [], []
    for line, text in _lines(file):
        path, label = _path_label(file, line, text, num_classes)
        if label < keep:
            paths.append(path)
            ys.append(label)
            lines.append(line)
    if not paths:
        raise ValueError(f"{file} lists no images of the first {keep} classes")
    return _checked_list(image_root, paths, ys, file, lines)


def _imagenet_val(folder: Path, synsets: list[str]) -> ImageList:
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet validation folder {folder} not found (data.imagenet_root)")
    paths, ys = [], []
    for label, synset in enumerate(synsets):
        sub = folder / synset
        if not sub.is_dir():
            raise FileNotFoundError(f"{sub} not found: data.imagenet_root must hold the ILSVRC2012 validation images "
                                    f"in one folder per synset ({synset} is class {label} in info/synsets.txt)")
        files = _class_folder_files(sub)
        paths += [os.path.relpath(f, folder) for f in files]
        ys += [label] * len(files)
    if not paths:
        raise ValueError(f"{folder} holds no images of the {len(synsets)} mini-WebVision synsets")
    return ImageList(str(folder), _encode(paths), np.asarray(ys, dtype=np.int64), None, str(folder))


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
    synset_lines = _lines(info / "synsets.txt")
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
