"""Lists of labelled image files: image folders (one sub-folder per class), CSV/TSV label files, `<path> <label>` lists."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .image_transform import IMAGE_EXTENSIONS
from .label_columns import LabelColumn, csv_rows, delimiter_of, encode_labels

__all__ = ["ImageList", "ImageSets", "read_image_folder", "read_label_files", "check_files_exist", "encode_paths",
           "class_folder_files", "read_lines", "path_and_label", "checked_list"]


@dataclass
class ImageList:
    """Image files with their labels, in a fixed order (the position is the example's index).

    Attributes
    ----------
    root : str
        Folder the paths are relative to.
    paths : np.ndarray of bytes (UTF-8), shape (N,)
        A NumPy array rather than a list of str: DataLoader workers share it without copying.
    labels : np.ndarray, int64, shape (N,)
        Given (possibly noisy) labels.
    true_labels : np.ndarray, int64, shape (N,), or None
        Clean labels where known.
    source : str
        The list file (or folder) the entries come from, for error messages.
    lines : np.ndarray, int64, shape (N,), or None
        1-based line of each entry in ``source`` (None for folders: the path says it all).
    """

    root: str
    paths: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray | None = None
    source: str = ""
    lines: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.paths[i].decode("utf-8"))

    def where(self, i: int) -> str:
        """The file of entry ``i`` and where it was listed, for error messages."""
        text = self.path(i)
        return f"{text} (listed in {self.source} line {int(self.lines[i])})" if self.lines is not None else text

    def take(self, idx) -> ImageList:
        idx = np.asarray(idx, dtype=np.int64)
        return ImageList(self.root, self.paths[idx], self.labels[idx],
                         None if self.true_labels is None else self.true_labels[idx],
                         self.source, None if self.lines is None else self.lines[idx])


@dataclass
class ImageSets:
    """What a file reader returns: the training list, the evaluation lists and the classes.

    ``label_to_index`` maps the labels as written in the files to class indices when they were
    names (CSV with string labels); None when the files held indices or folders named the classes.
    ``extra_tests`` are further evaluation sets reported under their own name (WebVision: ``imagenet``).
    """

    name: str
    class_names: list[str]
    train: ImageList
    test: ImageList
    val: ImageList | None = None
    extra_tests: dict[str, ImageList] = field(default_factory=dict)
    label_to_index: dict[str, int] | None = None


def encode_paths(paths: list[str]) -> np.ndarray:
    """Paths as one NumPy array of UTF-8 bytes (what :class:`ImageList` holds)."""
    return np.array([p.encode("utf-8") for p in paths], dtype=bytes) if paths else np.zeros(0, dtype="S1")


def check_files_exist(images: ImageList) -> None:
    """Raise FileNotFoundError naming the first listed image that is not a file (and its list line)."""
    for i in range(len(images)):
        if not os.path.isfile(images.path(i)):
            raise FileNotFoundError(f"image not found: {images.where(i)}")


# ---- image folders -------------------------------------------------------------------------------


def class_folder_files(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursively, sorted), relative to its parent's parent."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue  # .DS_Store and friends are not data
            full = Path(dirpath) / name
            if full.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ValueError(f"{full} is not an image file (accepted extensions: {', '.join(IMAGE_EXTENSIONS)}); "
                                 "move it out of the image folder")
            found.append(str(full))
    return found


def _read_split_folder(split_dir: Path, classes: list[str] | None) -> tuple[list[str], list[int], list[str]]:
    entries = sorted(p for p in split_dir.iterdir() if not p.name.startswith("."))
    stray = [p for p in entries if not p.is_dir()]
    if stray:
        raise ValueError(f"{stray[0]} is a file directly in {split_dir}: every image must sit in a sub-folder "
                         "named after its class")
    names = [p.name for p in entries]
    if classes is None:
        classes = names
    else:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise ValueError(f"{split_dir / unknown[0]}: class {unknown[0]!r} does not exist in the training folder "
                             f"(classes: {', '.join(classes)})")
    paths, labels = [], []
    for p in entries:
        files = class_folder_files(p)
        paths += [os.path.relpath(f, split_dir) for f in files]
        labels += [classes.index(p.name)] * len(files)
    return paths, labels, classes


def read_image_folder(root: str | Path) -> ImageSets:
    """Read ``root/train/<class>/...``, ``root/test/<class>/...`` and optionally ``root/val/<class>/...``.

    Class names are the sub-folder names of ``train`` in sorted order (label ``i`` is the ``i``-th);
    ``test`` and ``val`` may leave out classes but not add any. Images may sit in nested folders
    below their class folder; hidden files are ignored and any other non-image file is an error.
    The labels are the folders' (no true labels are known).
    """
    root = Path(root)
    layout = "root/train/<class>/<image> and root/test/<class>/<image> (optional root/val/<class>/<image>)"
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise FileNotFoundError(f"{root / part} is not a folder; data.dataset=image_folder expects {layout}")
    paths, labels, classes = _read_split_folder(root / "train", None)
    if not paths:
        raise ValueError(f"{root / 'train'} holds no images; expected {layout}")
    present = set(labels)
    empty = [name for i, name in enumerate(classes) if i not in present]
    if empty:
        raise ValueError(f"{root / 'train' / empty[0]} holds no images: every class folder of the training set needs "
                         f"at least one (remove the folder, or add its images)")

    def split(part: str) -> ImageList:
        p, y, _ = _read_split_folder(root / part, classes)
        if not p:
            raise ValueError(f"{root / part} holds no images")
        return ImageList(str(root / part), encode_paths(p), np.asarray(y, dtype=np.int64), source=str(root / part))

    train = ImageList(str(root / "train"), encode_paths(paths), np.asarray(labels, dtype=np.int64), source=str(root / "train"))
    val = split("val") if (root / "val").is_dir() else None
    return ImageSets("image_folder", classes, train, split("test"), val)


# ---- CSV / TSV label files -----------------------------------------------------------------------


@dataclass
class _Rows:
    file: Path
    paths: list[str]
    labels: list[str]
    true_labels: list[str] | None
    lines: list[int]


def _read_rows(file: Path) -> _Rows:
    if not file.is_file():
        raise FileNotFoundError(f"label file not found: {file}")
    delimiter = delimiter_of(file)
    paths, labels, trues, lines = [], [], [], []
    width = None
    for line, cells in csv_rows(file):
        if width is None and [c.lower() for c in cells] in (["path", "label"], ["path", "label", "true_label"]):
            width = len(cells)  # header row
            continue
        if len(cells) not in (2, 3) or (width is not None and len(cells) != width):
            expected = f"{width} columns" if width else "2 or 3 columns"
            raise ValueError(f"{file} line {line}: expected path{delimiter}label[{delimiter}true_label] "
                             f"({expected}), got {len(cells)}: {cells!r}")
        width = len(cells)
        if not cells[0] or not cells[1] or (width == 3 and not cells[2]):
            raise ValueError(f"{file} line {line}: empty path or label in {cells!r}")
        paths.append(cells[0])
        labels.append(cells[1])
        if width == 3:
            trues.append(cells[2])
        lines.append(line)
    if not paths:
        raise ValueError(f"{file} lists no images (expected lines of path{delimiter}label[{delimiter}true_label])")
    return _Rows(file, paths, labels, trues if width == 3 else None, lines)


def read_label_files(root: str | Path, label_file: str | Path, test_label_file: str | Path,
                     val_label_file: str | Path | None = None) -> ImageSets:
    """Read CSV (or TSV, by the ``.tsv`` suffix) files of ``path,label[,true_label]`` lines.

    Paths are relative to ``root`` (absolute paths also work). An optional header row
    ``path,label[,true_label]`` is skipped. If every label in every file is a non-negative integer
    the labels are class indices (classes ``"0"`` .. ``"K-1"``, each with a line of the training
    file); if none is, every label is a class name, and names are numbered in sorted order of the
    training file's labels (and true labels); a mix is an error. A test or validation label that is
    not one of the training file's classes is an error naming file and line.
    Relative file names are taken relative to ``root``. Every listed image must exist.
    """
    root = Path(root)

    def resolve(name) -> Path:
        p = Path(name).expanduser()
        return p if p.is_absolute() else root / p

    files = {"train": _read_rows(resolve(label_file)), "test": _read_rows(resolve(test_label_file))}
    if val_label_file is not None:
        files["val"] = _read_rows(resolve(val_label_file))
    columns = {part: LabelColumn(rows.file, rows.labels, rows.true_labels, rows.lines) for part, rows in files.items()}
    class_names, mapping, indices = encode_labels(columns)
    lists = {}
    for part, rows in files.items():
        labels, true_labels = indices[part]
        lists[part] = ImageList(str(root), encode_paths(rows.paths), labels, true_labels, str(rows.file),
                                np.asarray(rows.lines, dtype=np.int64))
        check_files_exist(lists[part])
    return ImageSets("csv", class_names, lists["train"], lists["test"], lists.get("val"), label_to_index=mapping)


# ---- text lists of '<path> <label>' lines (the benchmarks' layouts) -------------------------------


def read_lines(file: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based numbers."""
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{file}: not UTF-8 text ({exc})") from None
    return [(k, line.strip()) for k, line in enumerate(text.splitlines(), 1) if line.strip()]


def path_and_label(file: Path, line: int, text: str, num_classes: int) -> tuple[str, int]:
    """Line ``line`` of ``file`` as ``<image path> <integer label>``, the label in [0, num_classes)."""
    parts = text.split()
    if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
        raise ValueError(f"{file} line {line}: expected '<image path> <integer label>', got {text!r}")
    label = int(parts[1])
    if label < 0 or label >= num_classes:
        raise ValueError(f"{file} line {line}: label {label} is outside the class list [0, {num_classes})")
    return parts[0], label


def checked_list(root: Path, paths: list[str], ys: list[int], file: Path, lines: list[int]) -> ImageList:
    """The list read from ``file`` (with its line numbers for errors), every image checked to exist."""
    images = ImageList(str(root), encode_paths(paths), np.asarray(ys, dtype=np.int64), None, str(file),
                       np.asarray(lines, dtype=np.int64))
    check_files_exist(images)
    return images
