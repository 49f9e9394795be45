"""The ``features`` data set: feature vectors (tables, embeddings) with labels, from .npz, a folder of .npy files, or CSV."""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np

from .label_columns import LabelColumn, csv_rows, encode_labels
from .readers import RawData, check_classes, load_npz
from .split import stratified_split

__all__ = ["read_features", "ARRAY_KEYS", "TABLE_SUFFIXES"]

ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")  # the keys of the npz image set
TABLE_SUFFIXES = (".csv", ".tsv", ".tab")
_WHAT = ("an .npz file or a folder of .npy files holding x_train, y_train (and x_test, y_test), "
         "or a CSV/TSV table with a header row")


def read_features(path: str | Path, *, test_file: str | Path | None = None, test_fraction: float | None = None,
                  label_column: str = "label", feature_columns: list[str] | None = None,
                  true_label_column: str | None = None, split_seed: int = 0) -> RawData:
    """Read feature vectors and their labels.

    Parameters
    ----------
    path : str or Path
        - an ``.npz`` file, or a folder holding ``x_train.npy``, ``y_train.npy`` (and ``x_test.npy``,
          ``y_test.npy``): the keys of the ``npz`` image set. ``x_*`` are numbers of shape (N, D);
          ``y_*`` are class indices 0 .. K-1 (integers) or class names (a str array). An optional
          ``class_names`` array names the integer classes, or orders the named ones.
        - a CSV (``.csv``) or TSV (``.tsv``, ``.tab``) table whose first row is a header naming the
          columns: the label column (``label_column``), the feature columns (``feature_columns``,
          default every other column) and optionally the clean labels (``true_label_column``).
    test_file : str or Path, optional
        A second table of the same columns (in any order) holding the test rows (tables only).
    test_fraction : float in (0, 1), optional
        Without a test set in the data: hold out this share of each class (of the given labels) as the
        test set, the same rows whatever the run's seed (``split_seed``).
    label_column, feature_columns, true_label_column : str, list of str, str
        Column names of a table.

    Labels follow one rule for every file (:func:`elr.data.label_columns.encode_labels`): all
    non-negative integers are class indices 0 .. K-1 without gaps; otherwise every label is a class
    name, numbered in sorted order of the training labels. A test label that is not a training class
    is refused. So are NaN or infinite features, rows of the wrong length, a non-number in a feature
    column and lengths that do not match, each naming the file, the row or column, and what is accepted.

    Returns
    -------
    RawData
        Features as read (float32, or float64 when the file holds float64 or text), ``name="features"``,
        ``clean=False`` (the labels are as given: their truth is known only from ``true_label_column``,
        then ``y_train_true``; a test table's ``true_label_column``, when it has one, gives ``y_test``),
        ``label_to_index`` for names, ``feature_names``.
    """
    path = Path(path)
    if test_fraction is not None and (isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real)
                                      or not 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be a number in (0, 1) or None, got {test_fraction!r}")
    if not path.exists():
        raise FileNotFoundError(f"features {path} not found; expected {_WHAT}")
    table = path.is_file() and path.suffix.lower() in TABLE_SUFFIXES
    if not table:
        for name, value in (("test_file", test_file), ("feature_columns", feature_columns),
                            ("true_label_column", true_label_column)):
            if value is not None:
                raise ValueError(f"{name} is read for CSV/TSV tables only; {path} is {_kind(path)}")
        if label_column != "label":
            raise ValueError(f"label_column is read for CSV/TSV tables only; {path} is {_kind(path)}")
    if table:
        raw = _read_tables(path, None if test_file is None else Path(test_file), label_column, feature_columns,
                           true_label_column)
    elif path.is_dir():
        raw = _read_arrays(path, _npy_folder(path), "file")
    elif path.suffix.lower() == ".npz":
        raw = _read_arrays(path, _npz_arrays(path), "key")
    else:
        raise ValueError(f"features {path}: unknown kind of file ({path.suffix or 'no suffix'}); expected {_WHAT}")
    _check_every_class_labelled(raw, path)
    if raw.x_test is None:
        if test_fraction is None:
            raise ValueError(f"{path} holds no test set: give data.test_fraction (a share of each class held out) or "
                             f"{'data.test_file (a table of the same columns)' if table else 'x_test and y_test'}")
        raw = _split_off_test(raw, float(test_fraction), split_seed, path)
    elif test_fraction is not None:
        raise ValueError(f"{path} has a test set of its own ({len(raw.x_test)} rows): remove test_fraction")
    if raw.num_classes < 2:
        raise ValueError(f"{path}: the training labels hold one class only ({raw.class_names[0]!r}); a classifier "
                         f"needs two or more")
    check_classes(raw.y_train, raw.y_test, raw.num_classes, str(path))  # clean labels need no row of each class
    return raw


def _check_every_class_labelled(raw: RawData, path: Path) -> None:
    """Each class has a training row labelled with it: a class only the clean labels or class_names name is unlearnable."""
    counts = np.bincount(raw.y_train, minlength=raw.num_classes)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        c = int(empty[0])
        source = "the clean-label column" if raw.y_train_true is not None and c in raw.y_train_true else "class_names"
        raise ValueError(f"{path}: no training row is labelled {raw.class_names[c]!r} (class {c}), which only {source} "
                         f"names; every class needs a labelled training row")


def _kind(path: Path) -> str:
    return "a folder" if path.is_dir() else f"a {path.suffix or 'suffix-less'} file"


# ---- arrays: .npz or a folder of .npy --------------------------------------------------------------


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    return load_npz(path, (*ARRAY_KEYS, "class_names"), "x_train, y_train (and x_test, y_test)")[0]


def _npy_folder(folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for key in (*ARRAY_KEYS, "class_names"):
        file = folder / f"{key}.npy"
        if not file.is_file():
            continue
        try:
            arrays[key] = np.load(file, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{file}: not a readable .npy array of numbers or strings ({exc})") from None
    if not arrays:
        raise FileNotFoundError(f"{folder} holds none of {', '.join(k + '.npy' for k in ARRAY_KEYS)}; expected {_WHAT}")
    return arrays


def _read_arrays(path: Path, arrays: dict[str, np.ndarray], word: str) -> RawData:
    """Arrays by key; ``word`` is how a key is named in messages ("key" in an .npz, "file" in a folder)."""
    def named(key: str) -> str:
        return f"{path / (key + '.npy')}" if word == "file" else f"{path}: {key}"

    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing {word}(s) {', '.join(missing)}; found: {', '.join(sorted(arrays)) or 'none'}; "
                         f"required: x_train, y_train (and x_test, y_test, or data.test_fraction)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        have, lack = ("x_test", "y_test") if "x_test" in arrays else ("y_test", "x_test")
        raise ValueError(f"{path}: {have} without {lack}; give both, or neither (and data.test_fraction)")
    x_train = _checked_features(arrays["x_train"], named("x_train"))
    x_test = _checked_features(arrays["x_test"], named("x_test")) if "x_test" in arrays else None
    if x_test is not None and x_test.shape[1] != x_train.shape[1]:
        raise ValueError(f"{path}: x_train has {x_train.shape[1]} features a row but x_test {x_test.shape[1]}; "
                         f"the two must have the same columns")
    for x_key, y_key in (("x_train", "y_train"), ("x_test", "y_test")):
        if y_key in arrays:
            y = arrays[y_key]
            if y.ndim != 1 or len(y) != len(arrays[x_key]):
                raise ValueError(f"{named(y_key)} must hold one label per row of {x_key} ({len(arrays[x_key])}), "
                                 f"got shape {y.shape}")
    for key, x in (("x_train", x_train), ("x_test", x_test)):
        if x is not None and not len(x):
            raise ValueError(f"{named(key)} holds no rows")
    class_names, mapping, y_train, y_test = _array_labels(arrays, named, lambda key: path / f"{key}.npy"
                                                          if word == "file" else path)
    return RawData(x_train, y_train, x_test, y_test, class_names, "features", label_to_index=mapping, clean=False)


def _array_labels(arrays: dict[str, np.ndarray], named, file_of):
    """Integer labels are class indices (``class_names`` may name them); str labels are names."""
    kinds = {k: arrays[k].dtype.kind for k in ("y_train", "y_test") if k in arrays}
    for key, kind in kinds.items():
        if kind not in "iuUS":
            whole = kind == "f" and bool(np.all(np.isfinite(arrays[key]) & (arrays[key] == np.round(arrays[key]))))
            hint = f"; they are whole numbers: store {key}.astype(np.int64)" if whole else ""
            raise ValueError(f"{named(key)} must hold class indices (integers) or class names (str), got dtype "
                             f"{arrays[key].dtype}{hint}")
    if len({kind in "iu" for kind in kinds.values()}) == 2:
        raise ValueError(f"{named('y_train')} and y_test must both hold integers or both names, got "
                         f"{arrays['y_train'].dtype} and {arrays['y_test'].dtype}")
    names = arrays.get("class_names")
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise ValueError(f"{named('class_names')} must be a 1-D str array, got {names.dtype} {names.shape}")
    if names is not None:
        names = [_text(n, named("class_names")) for n in names.tolist()]
        twice = next((n for k, n in enumerate(names) if n in names[:k]), None)
        if twice is not None:
            raise ValueError(f"{named('class_names')} names {twice!r} twice; each class needs a name of its own")
    if kinds["y_train"] in "iu":
        return _indices(arrays, named, names)
    texts = {part: [_text(v, named(f"y_{part}")) for v in arrays[f"y_{part}"]]
             for part in ("train", "test") if f"y_{part}" in arrays}
    if names is None:  # the names are numbered in sorted order
        columns = {part: LabelColumn(file_of(f"y_{part}"), values, key=f"y_{part}") for part, values in texts.items()}
        class_names, mapping, indices = encode_labels(columns)
        return class_names, mapping, indices["train"][0], indices["test"][0] if "test" in indices else None
    mapping = {name: k for k, name in enumerate(names)}  # class_names gives the order
    out = {}
    for part, values in texts.items():
        unknown = next((k for k, v in enumerate(values) if v not in mapping), None)
        if unknown is not None:
            raise ValueError(f"{named(f'y_{part}')}[{unknown}] is {values[unknown]!r}, which class_names does not name "
                             f"(it names {', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
        out[part] = np.array([mapping[v] for v in values], dtype=np.int64)
    return names, mapping, out["train"], out.get("test")


def _text(value, where: str) -> str:
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where} holds {bytes(value)!r}, which is not UTF-8 text; store the names as a str array") from None


def _indices(arrays, named, names: list[str] | None):
    out = {}
    for key in ("y_train", "y_test"):
        if key in arrays:
            if arrays[key].dtype.kind == "u" and len(arrays[key]) and int(arrays[key].max()) > np.iinfo(np.int64).max:
                raise ValueError(f"{named(key)} holds label {int(arrays[key].max())}; class indices are 0 .. K-1")
            y = arrays[key].astype(np.int64)
            if len(y) and y.min() < 0:
                at = int(np.argmin(y))
                raise ValueError(f"{named(key)} holds label {int(y[at])} at row {at}; class indices are 0 .. K-1")
            out[key] = y
    y_train = out["y_train"]
    top = int(y_train.max())
    if names is not None:
        num = len(names)
        for key, y in out.items():
            if len(y) and int(y.max()) >= num:
                at = int(np.argmax(y >= num))
                raise ValueError(f"{named(key)} holds label {int(y[at])} at row {at}, but class_names names {num} "
                                 f"classes (0 .. {num - 1})")
        class_names = names
    else:
        class_names = [str(i) for i in range(top + 1)]
        present = np.unique(y_train)
        if len(present) != top + 1:
            missing = int(np.setdiff1d(np.arange(top + 1), present)[0])
            raise ValueError(f"{named('y_train')} has no row of class {missing} of 0 .. {top}; number the classes "
                             f"0 .. K-1 without gaps (each one in y_train), or store the labels as names")
        y_test = out.get("y_test")
        if y_test is not None and len(y_test) and int(y_test.max()) > top:
            at = int(np.argmax(y_test > top))
            raise ValueError(f"{named('y_test')} holds label {int(y_test[at])} at row {at}, a class no training row "
                             f"has (y_train has classes 0 .. {top})")
    return class_names, None, y_train, out.get("y_test")


def _checked_features(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim != 2 or x.dtype.kind not in "iuf" or x.shape[1] == 0:
        raise ValueError(f"{where} must be numbers of shape (rows, features), got {x.dtype} {x.shape}"
                         + ("; images are data.dataset=npz" if x.ndim == 4 else ""))
    x = x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{where} holds {int(bad.sum())} NaN or infinite values (the first at row {row}, column "
                         f"{col}: {x[row, col]}); features must be finite numbers: impute or drop them")
    return x


# ---- tables: CSV / TSV with a header --------------------------------------------------------------


class _Table:
    """One table's rows: features, labels as written, and the line of each row."""

    def __init__(self, file: Path, label_column: str, feature_columns: list[str] | None, true_label_column: str | None,
                 role: str, *, true_labels_optional: bool = False):
        if not file.is_file():
            raise FileNotFoundError(f"{role} table {file} not found")
        rows = list(csv_rows(file))
        if not rows:
            raise ValueError(f"{file} is empty; expected a header row naming the columns, then one row per example")
        header_line, header = rows[0]
        if all(_is_number(c) for c in header):
            raise ValueError(f"{file} line {header_line}: the first row must be a header naming the columns "
                             f"(e.g. {label_column},f1,f2,...), found numbers only")
        seen = set()
        for name in header:
            if not name or name in seen:
                raise ValueError(f"{file} line {header_line}: {'an empty' if not name else 'a repeated'} column name "
                                 f"{name!r}; every column needs a name of its own")
            seen.add(name)
        if true_labels_optional and true_label_column not in seen:
            true_label_column = None
        for key, name in (("label_column", label_column), ("true_label_column", true_label_column)):
            if name is not None and name not in seen:
                raise ValueError(f"{file}: no column {name!r} (data.{key}); the header names: {_listed(header)}")
        labels_at = {label_column, true_label_column}
        if feature_columns is None:
            feature_columns = [c for c in header if c not in labels_at]
        else:
            absent = [c for c in feature_columns if c not in seen]
            if absent:
                raise ValueError(f"{file}: no column {absent[0]!r} (data.feature_columns); the header names: "
                                 f"{_listed(header)}")
            clash = [c for c in feature_columns if c in labels_at]
            if clash:
                raise ValueError(f"data.feature_columns lists the label column {clash[0]!r}; a label is not a feature")
        if not feature_columns:
            raise ValueError(f"{file}: no feature column (the header names only {_listed(header)})")
        self.file, self.feature_names = file, list(feature_columns)
        body = rows[1:]
        if not body:
            raise ValueError(f"{file} holds a header but no rows")
        width = len(header)
        for line, cells in body:
            if len(cells) != width:
                raise ValueError(f"{file} line {line}: {len(cells)} fields, but the header (line {header_line}) names "
                                 f"{width} columns; every row needs one value per column")
        position = {name: k for k, name in enumerate(header)}
        self.lines = [line for line, _ in body]
        self.labels = self._label_cells(body, position[label_column], label_column)
        self.true_labels = (None if true_label_column is None else
                            self._label_cells(body, position[true_label_column], true_label_column))
        self.x = self._features(body, [position[c] for c in self.feature_names])

    def _label_cells(self, body, k: int, column: str) -> list[str]:
        cells = [cells[k] for _, cells in body]
        for line, value in zip(self.lines, cells):
            if not value:
                raise ValueError(f"{self.file} line {line}: empty label in column {column!r}; every row needs a label")
        return cells

    def _features(self, body, columns: list[int]) -> np.ndarray:
        text = [[cells[k] for k in columns] for _, cells in body]
        try:
            x = np.array(text, dtype=np.float64)
        except ValueError:
            x = None
        if x is None:  # find the first cell that is not a number, to name it
            for line, row in zip(self.lines, text):
                for name, value in zip(self.feature_names, row):
                    if not _is_number(value):
                        raise ValueError(f"{self.file} line {line}, column {name!r}: {value!r} is not a number; feature "
                                         f"columns must hold numbers (choose them with data.feature_columns)")
            raise ValueError(f"{self.file}: feature columns must hold numbers")  # numpy and float() disagree
        bad = ~np.isfinite(x)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"{self.file} line {self.lines[row]}, column {self.feature_names[col]!r}: {text[row][col]!r} "
                             f"({int(bad.sum())} NaN or infinite values in all); features must be finite numbers: impute "
                             f"or drop them")
        return x


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _listed(names: list[str], limit: int = 12) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} columns)" if len(names) > limit else "")


def _read_tables(path: Path, test_file: Path | None, label_column: str, feature_columns: list[str] | None,
                 true_label_column: str | None) -> RawData:
    if not isinstance(label_column, str) or not label_column:
        raise ValueError(f"label_column must be a column name, got {label_column!r}")
    if true_label_column == label_column:
        raise ValueError(f"true_label_column and label_column are both {label_column!r}; they are two columns")
    train = _Table(path, label_column, feature_columns, true_label_column, "training")
    test = None
    if test_file is not None:
        test = _Table(test_file, label_column, train.feature_names, true_label_column, "test", true_labels_optional=True)
    columns = {"train": LabelColumn(path, train.labels, train.true_labels, train.lines)}
    if test is not None:
        columns["test"] = LabelColumn(test_file, test.labels, test.true_labels, test.lines)
    class_names, mapping, indices = encode_labels(columns)
    y_train, y_true = indices["train"]
    if test is not None:  # the test set is scored against clean labels where the table has them
        y_test = indices["test"][1] if indices["test"][1] is not None else indices["test"][0]
    return RawData(train.x, y_train, None if test is None else test.x, None if test is None else y_test,
                   class_names, "features", y_train_true=y_true, label_to_index=mapping,
                   feature_names=train.feature_names, clean=False)


def _split_off_test(raw: RawData, fraction: float, seed: int, path: Path) -> RawData:
    train, test = stratified_split(raw.y_train, fraction, seed=seed)
    if not len(test):
        raise ValueError(f"{path}: test_fraction={fraction} holds out no row (each class's share rounds to 0); raise it")
    left = np.bincount(raw.y_train[train], minlength=raw.num_classes)
    if (left == 0).any():
        c = int(np.flatnonzero(left == 0)[0])
        rows = int((raw.y_train == c).sum())
        raise ValueError(f"{path}: test_fraction={fraction} holds out every row of class {raw.class_names[c]!r} "
                         f"({rows} row{'s' if rows > 1 else ''}), leaving none to train on; lower it or add rows")
    true = raw.y_train_true
    return RawData(raw.x_train[train], raw.y_train[train], raw.x_train[test],
                   raw.y_train[test] if true is None else true[test], raw.class_names, raw.name,
                   y_train_true=None if true is None else true[train], label_to_index=raw.label_to_index,
                   feature_names=raw.feature_names, clean=False)
