"""Clothing1M on its official layout: the noisy training list and the clean validation and test lists."""

from __future__ import annotations

from pathlib import Path

from .file_lists import ImageList, ImageSets, checked_list, path_and_label, read_lines

__all__ = ["read_clothing1m", "CLOTHING1M_MEAN_STD", "CLOTHING1M_CLASSES"]

# Per-channel (mean, std) in [0, 1] pixel units, as in the ELR authors' transforms.
CLOTHING1M_MEAN_STD = ((0.6959, 0.6537, 0.6371), (0.3113, 0.3192, 0.3214))

CLOTHING1M_CLASSES = 14


def _label_map(file: Path, num_classes: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line, text in read_lines(file):
        key, label = path_and_label(file, line, text, num_classes)
        if out.get(key, label) != label:
            raise ValueError(f"{file} line {line}: {key} is listed twice with different labels ({out[key]} and {label})")
        out[key] = label
    return out


def _keyed_list(root: Path, key_file: Path, labels: dict[str, int], label_file: Path) -> ImageList:
    keys, ys, lines = [], [], []
    for line, key in read_lines(key_file):
        if key not in labels:
            raise ValueError(f"{key_file} line {line}: {key} has no label in {label_file}")
        keys.append(key)
        ys.append(labels[key])
        lines.append(line)
    if not keys:
        raise ValueError(f"{key_file} lists no images")
    return checked_list(root, keys, ys, key_file, lines)


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
    names = [text for _, text in read_lines(root / "category_names_eng.txt")]
    if len(names) != CLOTHING1M_CLASSES:
        raise ValueError(f"{root / 'category_names_eng.txt'}: expected {CLOTHING1M_CLASSES} class names, got {len(names)}")
    noisy_file, clean_file = root / "noisy_label_kv.txt", root / "clean_label_kv.txt"
    noisy, clean = _label_map(noisy_file, len(names)), _label_map(clean_file, len(names))
    train = _keyed_list(root, root / "noisy_train_key_list.txt", noisy, noisy_file)
    val = _keyed_list(root, root / "clean_val_key_list.txt", clean, clean_file)
    test = _keyed_list(root, root / "clean_test_key_list.txt", clean, clean_file)
    return ImageSets("clothing1m", names, train, test, val)
