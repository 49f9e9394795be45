"""Readers that turn data set files (CIFAR pickles, .npz, scikit-learn digits) into NumPy arrays."""

from __future__ import annotations

import codecs
import numbers
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .split import stratified_split

__all__ = ["RawData", "read_cifar", "read_npz", "read_digits", "read_dataset", "check_classes", "load_npz",
           "RefusedPickleError",
           "NORMALIZATION", "CIFAR10_CLASSES"]

# Per-channel (mean, std) in [0, 1] pixel units, as used by the ELR authors.
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class RawData:
    """A data set as NumPy arrays, before any noise, split or tensor conversion.

    Attributes
    ----------
    x_train, x_test : np.ndarray
        uint8 images of shape (N, H, W, C), or float features of shape (N, D) (float32; the ``features``
        data set keeps float64 as read until it is standardised).
    y_train, y_test : np.ndarray, int64, shape (N,)
        Labels as distributed with the data set (taken to be the true labels).
    class_names : list of str
        One name per class, in label order.
    name : str
        Data set name, e.g. ``"cifar10"``.
    mean, std : tuple of float or None
        Per-channel normalisation constants in [0, 1] pixel units (length C); None for features.
    pixels : (int, int) or None
        Features that are a small image's pixels (digits), for pictures of suspects.
    y_train_true : np.ndarray or None
        Clean training labels a file gives beside the (possibly noisy) ``y_train``.
    clean : bool
        Without ``y_train_true``: True when ``y_train`` are the true labels (CIFAR, digits, an npz), False
        when they are labels as given whose truth is unknown (``features``: the user's own labels).
    label_to_index : dict or None
        Labels written as names -> class index (None for indices).
    feature_names : list of str or None
        The feature columns of a table.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    name: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    pixels: tuple[int, int] | None = None  # features that are a small image's pixels in [0, 1] (digits: 8 x 8)
    y_train_true: np.ndarray | None = None  # clean training labels when the file gives them apart from y_train
    clean: bool = True  # without y_train_true: y_train are the true labels (published sets), or unknown (features)
    label_to_index: dict[str, int] | None = None  # labels written as names -> class index
    feature_names: list[str] | None = None  # a table's feature columns

    @property
    def num_classes(self) -> int:
        """Number of classes: ``len(class_names)``."""
        return len(self.class_names)

    @property
    def is_image(self) -> bool:
        """True for uint8 image arrays (N, H, W, C), False for feature arrays (N, D)."""
        return self.x_train.ndim == 4


# ----------------------------------------------------------------------------------------------
# CIFAR (the "python version" pickles)

_CIFAR_LAYOUTS = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": "test_batch",
        "meta": "batches.meta",
        "label_key": b"labels",
        "names_key": b"label_names",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": "test",
        "meta": "meta",
        "label_key": b"fine_labels",
        "names_key": b"fine_label_names",
    },
}


def _multiarray(name: str):
    # Resolve through numpy._core when it exists, so numpy 2 does not warn about numpy.core.
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return getattr(multiarray, name)


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1"); admit
    # exactly that use and no other codec.
    if codecs.lookup(encoding).name != "iso8859-1":
        raise RefusedPickleError(f"_codecs.encode is allowed with latin1 only, got encoding {encoding!r}")
    if not isinstance(text, str):
        raise RefusedPickleError(f"_codecs.encode is allowed on str only, got {type(text).__name__}")
    return text.encode("latin1", errors)


# (module, name) -> how to build the object. Nothing else may be named inside a CIFAR pickle.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _multiarray("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _multiarray("_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _multiarray("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _multiarray("scalar"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only NumPy arrays, dtypes and scalars (plus plain containers)."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")  # real files were written by Python 2 cPickle
        self._path = path

    def find_class(self, module: str, name: str):
        make = _ALLOWED_GLOBALS.get((module, name))
        if make is None:
            raise RefusedPickleError(
                f"{self._path}: refusing to load global {module}.{name}; a CIFAR pickle holds only "
                "numpy arrays (numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype), "
                "so this file is not a genuine CIFAR batch"
            )
        return make()


class RefusedPickleError(pickle.UnpicklingError, ValueError):
    """A CIFAR pickle names something other than NumPy arrays: refused unread (the message names the file)."""


def _load_pickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        try:
            obj = _RestrictedUnpickler(fh, path).load()
        except RefusedPickleError as exc:
            if str(path) in str(exc):
                raise
            raise RefusedPickleError(f"{path}: {exc}") from None
        except Exception as exc:  # truncated or corrupt files
            raise ValueError(f"{path}: not a readable CIFAR pickle, truncated or damaged ({type(exc).__name__}: "
                             f"{exc}); download the data set again") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _get(d: dict, key: bytes, path: Path):
    if key not in d:
        found = sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in d)
        raise ValueError(f"{path}: missing key {key.decode()!r}; keys found: {found}")
    return d[key]


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path)
    data = np.asarray(_get(d, b"data", path))
    labels = np.asarray(_get(d, label_key, path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: {label_key.decode()!r} must be {len(data)} integers, got {labels.dtype} {labels.shape}")
    # rows are channel-major: 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _cifar_folder(root: Path, layout: dict, dataset: str) -> Path:
    expected = (
        f"the CIFAR 'python version' layout: folder {layout['folder']}/ holding "
        f"{', '.join(layout['train'])}, {layout['test']} and {layout['meta']}"
    )
    if not root.exists():
        raise FileNotFoundError(f"root {root} does not exist; {dataset} expects {expected}")
    folder = root / layout["folder"]
    if not folder.is_dir() and (root / layout["test"]).is_file():
        folder = root  # root is the folder itself
    for name in [*layout["train"], layout["test"], layout["meta"]]:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found; {dataset} expects {expected} (root may be that folder or its parent)")
    return folder


def read_cifar(root: str | Path, dataset: str = "cifar10") -> RawData:
    """Read CIFAR-10 or CIFAR-100 from the official "python version" pickles.

    The pickles are read with a restricted unpickler that builds only NumPy arrays and plain
    containers, so a tampered file cannot run code: any other global raises
    :class:`RefusedPickleError` (a ``pickle.UnpicklingError`` and a ``ValueError``) naming the file
    and the global.

    Parameters
    ----------
    root : str or Path
        The folder ``cifar-10-batches-py`` (CIFAR-10: ``data_batch_1`` ... ``data_batch_5``,
        ``test_batch``, ``batches.meta``) or ``cifar-100-python`` (CIFAR-100: ``train``,
        ``test``, ``meta``; fine labels), or the folder that contains it.
    dataset : {"cifar10", "cifar100"}

    Returns
    -------
    RawData
        uint8 images (N, 32, 32, 3) in RGB, int64 labels, the class names and the authors'
        normalisation constants.

    Raises
    ------
    FileNotFoundError
        A folder or file of the layout is missing (the message names the expected path).
    ValueError
        Unknown ``dataset`` or malformed contents.
    """
    if dataset not in _CIFAR_LAYOUTS:
        raise ValueError(f"dataset must be one of {sorted(_CIFAR_LAYOUTS)}, got {dataset!r}")
    layout = _CIFAR_LAYOUTS[dataset]
    folder = _cifar_folder(Path(root), layout, dataset)
    parts = [_read_cifar_batch(folder / name, layout["label_key"]) for name in layout["train"]]
    x_train = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    y_train = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    x_test, y_test = _read_cifar_batch(folder / layout["test"], layout["label_key"])
    meta_path = folder / layout["meta"]
    names = _get(_load_pickle(meta_path), layout["names_key"], meta_path)
    class_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    top = int(max(y_train.max(initial=-1), y_test.max(initial=-1)))
    if min(y_train.min(initial=0), y_test.min(initial=0)) < 0 or top >= len(class_names):
        raise ValueError(f"{folder}: labels must lie in [0, {len(class_names)}) (one per class name), found up to {top}")
    mean, std = NORMALIZATION[dataset]
    return RawData(x_train, y_train, x_test, y_test, class_names, dataset, mean, std)


# ----------------------------------------------------------------------------------------------
# .npz

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _check_inputs(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.dtype == np.uint8 and x.ndim == 4:
        return x
    if x.ndim == 2 and np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"{path}: {key} holds {int(bad.sum())} NaN or infinite values (the first at row {row}, "
                             f"column {col}, {x[row, col]}); features must be finite numbers: impute or drop them")
        return x.astype(np.float32, copy=False)
    raise ValueError(
        f"{path}: {key} must be uint8 images of shape (N, H, W, C) or float features of shape (N, D), "
        f"got {x.dtype} {x.shape}"
    )


def load_npz(path: Path, keys: tuple[str, ...], holding: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays of ``keys`` an ``.npz`` file holds (no pickle), and all its keys; ``holding`` says what it should
    hold, for messages. Other arrays are not read."""
    with open(path, "rb"):  # an unreadable file says so, not "not an archive"
        pass
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an .npz archive (a zip of .npy arrays, as np.savez writes) holding {holding}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys if k in z.files}, list(z.files)
    except ValueError as exc:
        if "pickle" not in str(exc):  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
            raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
        raise ValueError(f"{path}: an array holds Python objects (stored pickled, which is not read); store numeric "
                         f"arrays (and names as str arrays)") from None
    except Exception as exc:  # corrupt member
        raise ValueError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None


def _check_labels(y: np.ndarray, n: int, key: str, inputs: str, path: Path) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{path}: {key} must hold one label per row of {inputs} ({n}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        whole = y.dtype.kind == "f" and bool(np.all(np.isfinite(y) & (y == np.round(y))))
        hint = f"; they are whole numbers: store {key}.astype(np.int64)" if whole else ""
        raise ValueError(f"{path}: {key} must hold integer class indices 0, 1, ..., got dtype {y.dtype}{hint}")
    if n and y.min() < 0:
        at = int(np.argmin(y))
        raise ValueError(f"{path}: {key} must hold class indices >= 0, found {int(y[at])} at position {at}")
    return y.astype(np.int64, copy=False)


def check_classes(y_train: np.ndarray, y_test: np.ndarray, num_classes: int, where: str,
                  train: str = "y_train", test: str = "y_test") -> None:
    """Every class ``0 .. num_classes - 1`` has a training example, and every test label is one of them.

    A label beyond the classes, or a class without a training example, would otherwise become a
    class of its own that nothing teaches (and label noise would flip labels into it).
    """
    if len(y_train) and int(y_train.max()) >= num_classes:  # before bincount, which would size itself by it
        at = int(np.argmax(y_train >= num_classes))
        raise ValueError(f"{where}: {train} holds label {int(y_train[at])} at position {at}, but there are "
                         f"{num_classes} classes (0 .. {num_classes - 1})")
    counts = np.bincount(y_train, minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        named = ", ".join(str(int(c)) for c in empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise ValueError(f"{where}: {train} has no example of class {named} of 0 .. {num_classes - 1}; number the "
                         f"classes 0 .. K-1 without gaps (each one in {train})")
    outside = np.flatnonzero(y_test >= num_classes)
    if len(outside):
        at = int(outside[0])
        raise ValueError(f"{where}: {test} holds label {int(y_test[at])} at position {at}, a class no {train} label "
                         f"has ({train} has classes 0 .. {num_classes - 1})")


def read_npz(path: str | Path, *, name: str = "cifar10") -> RawData:
    """Read a data set stored as arrays in an ``.npz`` file (no pickle).

    Parameters
    ----------
    path : str or Path
        File with ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``class_names``
        (str array). Inputs are uint8 images (N, H, W, C) or float features (N, D); labels are
        integers (stored as int64).
    name : str
        Data set name. ``"cifar10"`` and ``"cifar100"`` pick the authors' normalisation
        constants; for any other name the per-channel mean and std are computed from
        ``x_train`` (images) or left None (features).

    Returns
    -------
    RawData
        When ``class_names`` is absent: the CIFAR-10 names for ``name="cifar10"`` with 10
        classes, otherwise ``"0"``, ``"1"``, ... up to the largest label.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A required key is missing (the message lists the keys found) or an array has the wrong
        shape or dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"npz file {path} not found (expected arrays {', '.join(_NPZ_KEYS)})")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    arrays, files = load_npz(path, (*_NPZ_KEYS, "class_names"), ", ".join(_NPZ_KEYS))
    missing = [k for k in _NPZ_KEYS if k not in files]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; keys found: {sorted(files)}; required: {list(_NPZ_KEYS)}")
    names = arrays.get("class_names")

    x_train = _check_inputs(arrays["x_train"], "x_train", path)
    x_test = _check_inputs(arrays["x_test"], "x_test", path)
    if x_train.shape[1:] != x_test.shape[1:] or x_train.dtype != x_test.dtype:
        raise ValueError(f"{path}: x_train and x_test must agree in dtype and example shape, got "
                         f"{x_train.dtype} {x_train.shape[1:]} and {x_test.dtype} {x_test.shape[1:]}")
    y_train = _check_labels(arrays["y_train"], len(x_train), "y_train", "x_train", path)
    y_test = _check_labels(arrays["y_test"], len(x_test), "y_test", "x_test", path)
    if not len(y_train):
        raise ValueError(f"{path}: x_train holds no examples")

    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise ValueError(f"{path}: class_names must be a 1-D str array, got {names.dtype} {names.shape}")
        class_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names.tolist()]
        top = int(max(y_train.max(), y_test.max(initial=-1)))
        if top >= len(class_names):
            key = "y_train" if y_train.max() == top else "y_test"
            raise ValueError(f"{path}: {key} holds label {top} but class_names names {len(class_names)} classes "
                             f"(0 .. {len(class_names) - 1})")
    else:
        present = np.unique(y_train)
        top = int(present[-1])
        if len(present) != top + 1:  # a gap, or a stray large label: named before any list of K names is built
            missing = [i for i, v in zip(range(top + 1), present) if v != i][:1] or [len(present)]
            raise ValueError(f"{path}: y_train has no example of class {missing[0]} of 0 .. {top} (without "
                             f"class_names the classes are 0 .. max(y_train)); number the classes 0 .. K-1 "
                             f"without gaps (each one in y_train)")
        class_names = list(CIFAR10_CLASSES) if name == "cifar10" and top == 9 else [str(i) for i in range(top + 1)]
    if len(class_names) < 2:
        raise ValueError(f"{path}: y_train holds one class only; a classifier needs two or more")
    check_classes(y_train, y_test, len(class_names), str(path))

    mean = std = None
    if x_train.ndim == 4:
        channels = x_train.shape[3]
        if name in NORMALIZATION and channels == 3:
            mean, std = NORMALIZATION[name]
        else:
            mean, std = _channel_stats(x_train)
    return RawData(x_train, y_train, x_test, y_test, class_names, name, mean, std)


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # per-channel moments in [0, 1] units, accumulated in float64 one channel at a time
    mean, std = [], []
    for c in range(x.shape[3]):
        v = x[..., c].astype(np.float64) / 255.0
        mean.append(float(v.mean()))
        std.append(max(float(v.std()), 1e-6))  # a constant channel must not divide by zero
    return tuple(mean), tuple(std)


# ----------------------------------------------------------------------------------------------
# scikit-learn digits (small demo data set)


def read_digits(*, test_fraction: float = 0.2, seed: int = 0) -> RawData:
    """Read scikit-learn's handwritten digits (1797 8x8 images, 10 classes) as features.

    Parameters
    ----------
    test_fraction : float in (0, 1)
        Share of each class held out as the test set (stratified, rounded half up per class).
    seed : int
        Seed of the split (:func:`elr.data.stratified_split`).

    Returns
    -------
    RawData
        float32 features of shape (N, 64) scaled to [0, 1] (pixel / 16), int64 labels,
        class names ``"0"`` ... ``"9"``, ``mean = std = None``.

    Raises
    ------
    ImportError
        scikit-learn is not installed (``pip install 'elr[demo]'``).
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("read_digits needs scikit-learn: pip install 'elr[demo]'") from exc
    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = stratified_split(y, float(test_fraction), seed=seed)
    class_names = [str(i) for i in range(10)]
    return RawData(x[train_idx], y[train_idx], x[test_idx], y[test_idx], class_names, "digits", None, None,
                   pixels=(8, 8))


# ----------------------------------------------------------------------------------------------

_READERS = ("cifar10", "cifar100", "npz", "digits")


def read_dataset(name: str, /, root: str | Path | None = None, **kw) -> RawData:
    """Read a data set by name.

    Parameters
    ----------
    name : {"cifar10", "cifar100", "npz", "digits"}
        ``cifar10``/``cifar100``: :func:`read_cifar` on ``root`` (required). ``npz``:
        :func:`read_npz` on the file ``root`` (required; ``kw`` may give ``name``, which is
        why ``name`` here is positional-only). (The ``features`` data set has its own
        reader with its own settings: :func:`elr.data.read_features`.)
        ``digits``: :func:`read_digits` with ``kw``; ``root`` is not used.
    root : str or Path, optional
        Folder or file to read from.
    **kw
        Passed to the reader.
    """
    if name not in _READERS:
        raise ValueError(f"unknown data set name {name!r}; known: {', '.join(_READERS)}")
    if name == "digits":
        return read_digits(**kw)
    if root is None:
        what = "the .npz file" if name == "npz" else "the CIFAR folder or its parent"
        raise ValueError(f"root is required for data set {name!r}: give {what}")
    if name == "npz":
        return read_npz(root, **kw)
    return read_cifar(root, name, **kw)
