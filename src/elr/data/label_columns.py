"""Labels written in text files (CSV/TSV rows): reading the rows, and one rule for turning labels into class indices.

Both CSV readers use it: the image lists (``path,label[,true_label]``) and the feature tables
(``data.dataset: features``), so a label means the same in either.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LabelColumn", "csv_rows", "delimiter_of", "encode_labels", "is_index"]


def delimiter_of(file: Path) -> str:
    """Tab for ``.tsv`` / ``.tab`` files, comma otherwise."""
    return "\t" if file.suffix.lower() in (".tsv", ".tab") else ","


def csv_rows(file: Path) -> Iterator[tuple[int, list[str]]]:
    """The non-blank rows of a CSV/TSV file as ``(line, cells)``, cells stripped of surrounding spaces.

    ``line`` is the physical line a row ends on (what an editor shows; a quoted field may span lines).
    """
    try:
        text = file.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark from a spreadsheet export is no data
    except UnicodeDecodeError as exc:
        raise ValueError(f"{file}: not UTF-8 text ({exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter_of(file))
    try:
        for row in reader:
            cells = [c.strip() for c in row]
            if any(cells):
                yield reader.line_num, cells
    except csv.Error as exc:  # an unclosed quote, a NUL byte
        raise ValueError(f"{file} line {reader.line_num}: not readable as CSV ({exc})") from None


def is_index(text: str) -> bool:
    """A class index as written: a non-negative integer (``"-1"`` or ``"3.0"`` are names)."""
    return text.isascii() and text.isdigit()  # "²" is a digit to str.isdigit, but no int


@dataclass
class LabelColumn:
    """The labels of one file as written, with where each one stands (for messages).

    ``lines`` are 1-based line numbers (text files); without them positions are named as ``key[i]``.
    """

    file: Path | str
    labels: list[str]
    true_labels: list[str] | None = None
    lines: list[int] | None = None
    key: str = "labels"  # names the array in messages when there are no lines

    def where(self, k: int) -> str:
        return f"{self.file} line {self.lines[k]}" if self.lines is not None else f"{self.file}: {self.key}[{k}]"


def encode_labels(columns: dict[str, LabelColumn]
                  ) -> tuple[list[str], dict[str, int] | None, dict[str, tuple[np.ndarray, np.ndarray | None]]]:
    """The classes the ``"train"`` column defines, and every column's labels as class indices.

    If every label of every column is a non-negative integer, the labels are class indices: the
    classes are ``"0"`` .. ``"K-1"``, each with a training label (or true label). If none is, every
    label is a class name, numbered in sorted order of the training column's labels and true labels.
    A mix is an error, as is a label of another column that is not one of the training classes.

    Returns ``(class_names, label_to_index, indices)``: ``label_to_index`` is the name -> index
    mapping (None for indices); ``indices[part]`` is ``(labels, true_labels or None)`` as int64.
    """
    _check_one_kind(columns)
    train = columns["train"]
    mapping = None
    if train.labels and is_index(train.labels[0]):  # every label is an index (checked above)
        given = sorted({int(v) for v in train.labels + (train.true_labels or [])})
        num_classes = given[-1] + 1
        if len(given) != num_classes:  # a gap: the first class index without a line
            missing = next(i for i, v in enumerate(given) if v != i)
            rows = "line" if train.lines is not None else "row"
            raise ValueError(f"{train.file}: labels are class indices 0 .. {num_classes - 1}, but class {missing} "
                             f"has no {rows}; number the classes 0 .. K-1 without gaps, or write class names")
        class_names = [str(i) for i in range(num_classes)]
        every = [v for c in columns.values() for v in (c.labels + (c.true_labels or []))]
        index = {v: int(v) for v in every if int(v) < num_classes}  # "007" is class 7
    else:
        class_names = sorted(set(train.labels) | set(train.true_labels or []))
        index = mapping = {name: i for i, name in enumerate(class_names)}

    def to_indices(column: LabelColumn, values: list[str]) -> np.ndarray:
        out = np.empty(len(values), dtype=np.int64)
        for k, v in enumerate(values):
            if v not in index:
                raise ValueError(f"{column.where(k)}: unknown label {v!r}; the training labels "
                                 f"({train.file}) define the classes: {_listed(class_names)}")
            out[k] = index[v]
        return out

    indices = {part: (to_indices(c, c.labels), None if c.true_labels is None else to_indices(c, c.true_labels))
               for part, c in columns.items()}
    return class_names, mapping, indices


def _listed(names: list[str], limit: int = 20) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} classes)" if len(names) > limit else "")


def _check_one_kind(columns: dict[str, LabelColumn]) -> None:
    """All labels are class indices, or all are names: a mix would make "1" a class name of its own."""
    first: dict[bool, tuple[LabelColumn, int, str]] = {}
    for column in columns.values():
        for values in (column.labels, column.true_labels or []):
            for k, v in enumerate(values):
                first.setdefault(is_index(v), (column, k, v))
    if len(first) == 2:
        (icol, ik, iv), (ncol, nk, nv) = first[True], first[False]
        raise ValueError(f"{icol.where(ik)}: label {iv!r} is a class index but {ncol.where(nk)} has the name {nv!r}: "
                         f"write every label as a name, or every one as an index 0 .. K-1")
