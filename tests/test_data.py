"""Tests of elr.data: readers (incl. restricted unpickling), stratified splits, crop/flip and InMemoryDataset."""

import builtins
import codecs
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from elr.data import (
    InMemoryDataset,
    RawData,
    apply_crop_flip,
    draw_crop_flip,
    from_raw,
    random_crop_flip,
    read_cifar,
    read_dataset,
    read_digits,
    read_npz,
    stratified_split,
)
from elr.data.readers import NORMALIZATION

REAL_CIFAR10 = Path(__file__).parents[2] / "shared" / "data" / "cifar10.npz"


# ---------------------------------------------------------------------------------------------
# helpers: fake CIFAR folders


class _Py2StylePickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` opcodes, as cPickle did for the real CIFAR files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_binstring(self, data: bytes):
        n = len(data)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + data)
        self.memoize(data)

    def _save_text(self, text: str):
        self._save_binstring(text.encode("latin1"))

    dispatch[bytes] = _save_binstring
    dispatch[str] = _save_text


def dump(obj, path: Path, *, py2: bool = False) -> None:
    if py2:
        import io

        buf = io.BytesIO()
        _Py2StylePickler(buf, protocol=2).dump(obj)
        # numpy 1.x (and so the real files) name numpy.core.multiarray
        path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    else:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)


def make_cifar10(parent: Path, rng, *, per_batch=4, n_test=3, py2=False):
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batches.append((data, labels))
        dump({b"batch_label": b"training batch", b"data": data, b"labels": labels,
              b"filenames": [b"x.png"] * per_batch}, folder / f"data_batch_{i}", py2=py2)
    test_data = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, size=n_test)]
    dump({b"data": test_data, b"labels": test_labels}, folder / "test_batch", py2=py2)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump({b"label_names": names, b"num_cases_per_batch": per_batch}, folder / "batches.meta", py2=py2)
    return folder, batches, (test_data, test_labels)


def make_cifar100(parent: Path, rng, *, n_train=6, n_test=2):
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    train = rng.integers(0, 256, size=(n_train, 3072), dtype=np.uint8)
    y_train = rng.integers(0, 100, size=n_train).astype(np.int64)  # an array also works
    test = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    y_test = [int(v) for v in rng.integers(0, 100, size=n_test)]
    dump({b"data": train, b"fine_labels": y_train, b"coarse_labels": [0] * n_train}, folder / "train")
    dump({b"data": test, b"fine_labels": y_test}, folder / "test")
    dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": []}, folder / "meta")
    return folder, (train, y_train), (test, y_test)


def rows_to_images_slow(data):
    """Independent decoding: pixel (h, w) of channel c sits at c * 1024 + h * 32 + w."""
    out = np.zeros((len(data), 32, 32, 3), dtype=np.uint8)
    for n in range(len(data)):
        for c in range(3):
            for h in range(32):
                out[n, h, :, c] = data[n, c * 1024 + h * 32 : c * 1024 + h * 32 + 32]
    return out


# ---------------------------------------------------------------------------------------------
# CIFAR readers


@pytest.mark.parametrize("py2", [False, True], ids=["py3-protocol2", "py2-style"])
def test_read_cifar10_exact(tmp_path, py2):
    rng = np.random.default_rng(0)
    folder, batches, (test_data, test_labels) = make_cifar10(tmp_path, rng, py2=py2)
    # a hand-set pixel: example 0 of batch 1, green channel, row 5, column 7
    data0 = batches[0][0]
    data0[0] = 0
    data0[0, 1 * 1024 + 5 * 32 + 7] = 201
    dump({b"data": data0, b"labels": batches[0][1]}, folder / "data_batch_1", py2=py2)

    for root in (tmp_path, folder):  # the parent or the folder itself
        raw = read_cifar(root, "cifar10")
        assert raw.x_train.shape == (20, 32, 32, 3) and raw.x_train.dtype == np.uint8
        assert raw.y_train.dtype == np.int64 and raw.y_test.dtype == np.int64
        assert raw.x_train[0, 5, 7, 1] == 201
        assert raw.x_train[0].sum() == 201
        all_data = np.concatenate([b[0] for b in batches])
        np.testing.assert_array_equal(raw.x_train, rows_to_images_slow(all_data))
        np.testing.assert_array_equal(raw.y_train, np.concatenate([b[1] for b in batches]))
        np.testing.assert_array_equal(raw.x_test, rows_to_images_slow(test_data))
        np.testing.assert_array_equal(raw.y_test, test_labels)
        assert raw.class_names[0] == "airplane" and raw.class_names[9] == "truck"
        assert raw.name == "cifar10" and raw.num_classes == 10 and raw.is_image
        assert raw.mean == (0.4914, 0.4822, 0.4465) and raw.std == (0.2023, 0.1994, 0.2010)


def test_read_cifar100_exact(tmp_path):
    rng = np.random.default_rng(1)
    folder, (train, y_train), (test, y_test) = make_cifar100(tmp_path, rng)
    raw = read_dataset("cifar100", tmp_path)
    np.testing.assert_array_equal(raw.x_train, rows_to_images_slow(train))
    np.testing.assert_array_equal(raw.y_train, y_train)
    np.testing.assert_array_equal(raw.x_test, rows_to_images_slow(test))
    np.testing.assert_array_equal(raw.y_test, y_test)
    assert len(raw.class_names) == 100 and raw.class_names[42] == "c42"
    assert (raw.mean, raw.std) == ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    assert read_cifar(folder, "cifar100").x_train.shape == (6, 32, 32, 3)


class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


class _OtherCodec:
    def __reduce__(self):
        return (codecs.encode, ("payload", "rot13"))


@pytest.mark.parametrize("payload", [_SystemCall, _EvalCall], ids=["os.system", "builtins.eval"])
def test_tampered_pickle_is_refused_and_nothing_runs(tmp_path, payload):
    folder, _, _ = make_cifar10(tmp_path, np.random.default_rng(2))
    marker = tmp_path / "pwned"
    dump({b"data": payload(marker), b"labels": [0]}, folder / "data_batch_2")
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_2.*refusing.*(system|eval)"):
        read_cifar(tmp_path, "cifar10")
    assert not marker.exists()


def test_codec_other_than_latin1_is_refused(tmp_path):
    folder, _, _ = make_cifar10(tmp_path, np.random.default_rng(3))
    dump({b"data": _OtherCodec(), b"labels": [0]}, folder / "test_batch")
    with pytest.raises(pickle.UnpicklingError, match="latin1"):
        read_cifar(folder, "cifar10")


def test_cifar_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_cifar(tmp_path / "nowhere", "cifar10")
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*data_batch_1.*python version"):
        read_cifar(tmp_path, "cifar10")
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*train"):
        read_cifar(tmp_path, "cifar100")
    folder, _, _ = make_cifar10(tmp_path, np.random.default_rng(4))
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        read_cifar(tmp_path, "cifar10")
    with pytest.raises(ValueError, match="cifar10"):
        read_cifar(tmp_path, "cifar11")


def test_cifar_malformed_contents(tmp_path):
    folder, _, _ = make_cifar10(tmp_path, np.random.default_rng(5))
    dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, folder / "data_batch_4")
    with pytest.raises(ValueError, match=r"data_batch_4.*3072"):
        read_cifar(tmp_path, "cifar10")
    dump({b"pixels": np.zeros((2, 3072), np.uint8)}, folder / "data_batch_4")
    with pytest.raises(ValueError, match=r"missing key 'data'.*pixels"):
        read_cifar(tmp_path, "cifar10")
    (folder / "data_batch_4").write_bytes(b"\x80\x02}q\x00")  # truncated
    with pytest.raises(ValueError, match="data_batch_4"):
        read_cifar(tmp_path, "cifar10")


# ---------------------------------------------------------------------------------------------
# npz, digits, dispatch


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    arrays = {
        "x_train": rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 3, 12),
        "x_test": rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 3, 5).astype(np.int32),
        "class_names": np.array(["a", "b", "c"]),
    }
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    raw = read_npz(path, name="cifar10")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(raw, key), arrays[key])
    assert raw.y_test.dtype == np.int64 and raw.class_names == ["a", "b", "c"]
    assert (raw.mean, raw.std) == NORMALIZATION["cifar10"]
    # an unknown name: per-channel statistics of x_train in [0, 1] units
    other = read_dataset("npz", path, name="mine")
    v = arrays["x_train"].astype(np.float64) / 255
    np.testing.assert_allclose(other.mean, v.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(other.std, v.std(axis=(0, 1, 2)), rtol=1e-12)
    assert other.name == "mine"


def test_npz_features_and_errors(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, x_train=np.ones((4, 5)), y_train=np.array([0, 1, 2, 1]), x_test=np.zeros((2, 5)), y_test=np.array([0, 2]))
    raw = read_npz(path, name="feat")
    assert raw.x_train.dtype == np.float32 and raw.mean is None and raw.std is None
    assert raw.class_names == ["0", "1", "2"] and not raw.is_image

    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.ones((4, 5)), y_train=np.zeros(4, int), labels_test=np.zeros(2, int))
    with pytest.raises(ValueError, match=r"missing key.*x_test.*keys found.*labels_test"):
        read_npz(bad)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        read_npz(tmp_path / "nope.npz")
    np.savez(bad, x_train=np.ones((4, 5)), y_train=np.zeros(3, int), x_test=np.zeros((2, 5)), y_test=np.zeros(2, int))
    with pytest.raises(ValueError, match="y_train"):
        read_npz(bad)
    np.savez(bad, x_train=np.ones((4, 5), np.int16), y_train=np.zeros(4, int), x_test=np.zeros((2, 5)), y_test=np.zeros(2, int))
    with pytest.raises(ValueError, match="x_train"):
        read_npz(bad)


def _npz(path, **over):
    arrays = {"x_train": np.zeros((6, 2), np.float32), "y_train": np.array([0, 1, 2, 0, 1, 2]),
              "x_test": np.zeros((3, 2), np.float32), "y_test": np.array([0, 1, 2])}
    np.savez(path, **{**arrays, **over})
    return path


@pytest.mark.parametrize("over, message", [
    # no class_names: classes 0 .. max(y_train); a label of 12 among 0 .. 2 leaves 3 .. 11 without an example
    ({"y_train": np.array([0, 1, 2, 0, 1, 12])}, r"y_train has no example of class 3 of 0 \.\. 12 \(without class_names"),
    # a stray huge label is named at once (no list of a billion class names, no bincount of that size)
    ({"y_train": np.array([0, 1, 2, 0, 1, 10**12])}, r"y_train has no example of class 3 of 0 \.\. 1000000000000"),
    ({"y_train": np.array([1, 1, 2, 1, 1, 2])}, r"y_train has no example of class 0 of 0 \.\. 2"),
    ({"y_test": np.array([0, 1, 3])}, r"y_test holds label 3 at position 2, a class no y_train label has "
                                      r"\(y_train has classes 0 \.\. 2\)"),
    ({"class_names": np.array(["a", "b", "c"]), "y_test": np.array([0, 3, 1])},
     r"y_test holds label 3 but class_names names 3 classes \(0 \.\. 2\)"),
    ({"class_names": np.array(["a", "b", "c", "d"])}, r"y_train has no example of class 3 of 0 \.\. 3"),
    ({"y_train": np.array([0, 1, 2, 0, -1, 2])}, r"y_train must hold class indices >= 0, found -1 at position 4"),
    ({"y_train": np.array([0.0, 1, 2, 0, 1, 2])}, r"y_train must hold integer class indices 0, 1, \.\.\., got dtype "
                                                  r"float64; they are whole numbers: store y_train.astype\(np.int64\)"),
    ({"y_test": np.array([0.5, 1, 2])}, r"y_test must hold integer class indices 0, 1, \.\.\., got dtype float64$"),
    ({"y_train": np.array([0, 1, 2, 0, 1])}, r"y_train must hold one label per row of x_train \(6\), got shape \(5,\)"),
    ({"x_train": np.array([[0, 1], [2, np.nan], [0, 0], [0, 0], [0, 0], [0, np.inf]], np.float32)},
     r"x_train holds 2 NaN or infinite values \(the first at row 1, column 1, nan\)"),
    ({"x_test": np.full((3, 2), -np.inf)}, r"x_test holds 6 NaN or infinite values"),
    ({"y_train": np.zeros(6, int), "y_test": np.zeros(3, int)}, "y_train holds one class only"),
    ({"y_train": np.array(["0", "1", "2", "0", "1", "2"], dtype=object)}, r"an array holds Python objects"),
])
def test_npz_labels_and_features_are_checked_where_they_are_read(tmp_path, over, message):
    with pytest.raises(ValueError, match=message) as caught:
        read_npz(_npz(tmp_path / "d.npz", **over))
    assert str(tmp_path / "d.npz") in str(caught.value)  # the file is named


def test_a_file_that_is_not_an_npz_archive_is_named(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"\x80\x04 not a zip")
    with pytest.raises(ValueError, match=r"x.npz: not an .npz archive \(a zip of .npy arrays"):
        read_npz(tmp_path / "x.npz")


def test_a_truncated_cifar_pickle_is_one_valueerror_naming_the_file(tmp_path):
    folder, _, _ = make_cifar10(tmp_path, np.random.default_rng(3))
    (folder / "data_batch_4").write_bytes((folder / "data_batch_4").read_bytes()[:300])
    with pytest.raises(ValueError, match=r"data_batch_4: not a readable CIFAR pickle, truncated or damaged"):
        read_cifar(folder, "cifar10")


@pytest.mark.skipif(not REAL_CIFAR10.exists(), reason=f"{REAL_CIFAR10} not present")
def test_real_cifar10_npz():
    raw = read_npz(REAL_CIFAR10)
    assert raw.x_train.shape == (50000, 32, 32, 3) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (10000, 32, 32, 3)
    assert raw.y_train.shape == (50000,) and raw.y_test.shape == (10000,)
    assert len(raw.class_names) == 10 and raw.class_names[0] == "airplane"
    assert np.bincount(raw.y_train, minlength=10).tolist() == [5000] * 10


def test_digits():
    pytest.importorskip("sklearn")
    raw = read_digits(test_fraction=0.2, seed=0)
    assert raw.x_train.dtype == np.float32 and raw.x_train.shape[1] == 64
    assert len(raw.x_train) + len(raw.x_test) == 1797
    assert 0.0 <= raw.x_train.min() and raw.x_train.max() <= 1.0
    assert raw.mean is None and raw.name == "digits" and raw.class_names == [str(i) for i in range(10)]
    total = np.bincount(raw.y_train, minlength=10) + np.bincount(raw.y_test, minlength=10)
    np.testing.assert_array_equal(np.bincount(raw.y_test, minlength=10), np.floor(0.2 * total + 0.5))
    again = read_dataset("digits", seed=0)
    np.testing.assert_array_equal(again.x_test, raw.x_test)
    with pytest.raises(ValueError, match="test_fraction"):
        read_digits(test_fraction=1.0)


def test_read_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown.*cifar10.*cifar100.*npz.*digits"):
        read_dataset("mnist")
    with pytest.raises(ValueError, match="root is required"):
        read_dataset("cifar10")


# ---------------------------------------------------------------------------------------------
# stratified_split


def test_stratified_split_counts_and_determinism():
    counts = {0: 10, 1: 25, 2: 7, 3: 1, 5: 4}  # 0.1 * 25 = 2.5 rounds up, 0.1 * 4 rounds down
    labels = np.concatenate([np.full(n, c) for c, n in counts.items()])
    labels = labels[np.random.default_rng(0).permutation(len(labels))]
    tr, va = stratified_split(labels, 0.1, seed=3)
    assert tr.dtype == np.int64 and va.dtype == np.int64
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    assert len(np.intersect1d(tr, va)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(labels)))
    expected = {0: 1, 1: 3, 2: 1, 3: 0, 5: 0}
    for c, k in expected.items():
        assert np.sum(labels[va] == c) == k
    tr2, va2 = stratified_split(labels, 0.1, seed=3)
    np.testing.assert_array_equal(va, va2)
    different = [not np.array_equal(va, stratified_split(labels, 0.1, seed=s)[1]) for s in range(4, 8)]
    assert any(different)
    # 0.3 * 5 = 1.4999999999999998 in floating point still counts as 1.5 -> 2
    assert len(stratified_split(np.zeros(5, int), 0.3, seed=0)[1]) == 2


def test_stratified_split_edges():
    tr, va = stratified_split(np.array([0, 1, 1, 2]), 0.0, seed=0)
    assert va.size == 0 and tr.tolist() == [0, 1, 2, 3] and va.dtype == np.int64
    tr, va = stratified_split(np.zeros(0, dtype=np.int64), 0.5, seed=0)
    assert tr.size == 0 and va.size == 0
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match="val_fraction"):
            stratified_split(np.zeros(3, int), bad, seed=0)
    with pytest.raises(ValueError, match="labels"):
        stratified_split(np.zeros((2, 2), int), 0.5, seed=0)
    with pytest.raises(ValueError, match="labels"):
        stratified_split(np.array([0.5, 1.0]), 0.5, seed=0)
    with pytest.raises(ValueError, match="seed"):
        stratified_split(np.zeros(3, int), 0.5, seed=None)


# ---------------------------------------------------------------------------------------------
# random crop and flip


def crop_flip_slow(x, top, left, flips, padding):
    """Per-example reference in NumPy: pad with zeros, slice, mirror."""
    x = np.asarray(x)
    _, _, h, w = x.shape
    out = np.empty_like(x)
    for b in range(len(x)):
        p = np.pad(x[b], ((0, 0), (padding, padding), (padding, padding)))
        crop = p[:, top[b] : top[b] + h, left[b] : left[b] + w]
        out[b] = crop[:, :, ::-1] if flips[b] else crop
    return out


def test_crop_flip_matches_slow_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 7, 9, generator=g)
    top, left, flips = draw_crop_flip(16, padding=3, generator=g)
    assert top.dtype == torch.int64 and flips.dtype == torch.bool
    out = apply_crop_flip(x, top, left, flips, padding=3)
    assert out.is_contiguous() and out.shape == x.shape
    np.testing.assert_array_equal(out.numpy(), crop_flip_slow(x.numpy(), top.numpy(), left.numpy(), flips.numpy(), 3))
    xu = torch.randint(0, 256, (5, 2, 4, 4), dtype=torch.uint8, generator=g)
    t, l, f = draw_crop_flip(5, padding=2, generator=g)
    np.testing.assert_array_equal(apply_crop_flip(xu, t, l, f, padding=2).numpy(),
                                  crop_flip_slow(xu.numpy(), t.numpy(), l.numpy(), f.numpy(), 2))


def test_random_crop_flip_uses_only_the_generator():
    x = torch.rand(32, 3, 8, 8)
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(123)  # global state must not matter
    b = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    params = draw_crop_flip(32, padding=4, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, apply_crop_flip(x, *params, padding=4), rtol=0, atol=0)
    c = random_crop_flip(x, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(a, c)


def test_zero_border_and_ranges():
    x = torch.ones(2, 1, 8, 8)
    top = torch.tensor([0, 8])
    left = torch.tensor([8, 4])
    out = apply_crop_flip(x, top, left, torch.tensor([False, False]), padding=4)
    # example 0 moved down 4 and left 4: top 4 rows and right 4 columns are padding
    assert out[0, 0, :4].eq(0).all() and out[0, 0, :, 4:].eq(0).all() and out[0, 0, 4:, :4].eq(1).all()
    # example 1 moved up 4: bottom 4 rows are padding
    assert out[1, 0, 4:].eq(0).all() and out[1, 0, :4].eq(1).all()
    flipped = apply_crop_flip(x, top, left, torch.tensor([True, False]), padding=4)
    assert flipped[0, 0, :, :4].eq(0).all() and flipped[0, 0, 4:, 4:].eq(1).all()

    t, l, f = draw_crop_flip(4000, padding=4, generator=torch.Generator().manual_seed(0))
    assert set(t.tolist()) == set(range(9)) and set(l.tolist()) == set(range(9))
    assert 0.45 < f.float().mean().item() < 0.55
    _, _, none = draw_crop_flip(50, padding=4, generator=torch.Generator().manual_seed(0), flip=False)
    assert not none.any()
    same = random_crop_flip(x, padding=0, flip=False, generator=torch.Generator())
    torch.testing.assert_close(same, x)


def test_crop_flip_rejects_bad_input():
    with pytest.raises(ValueError, match="generator"):
        random_crop_flip(torch.zeros(1, 1, 4, 4), generator=None)
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(torch.zeros(1, 1, 4, 4), padding=-1, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        random_crop_flip(torch.zeros(4, 4), generator=torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_crop_flip_same_on_cuda():
    x = torch.rand(64, 3, 32, 32)
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(1))
    b = random_crop_flip(x.cuda(), generator=torch.Generator().manual_seed(1))
    assert b.device.type == "cuda"
    torch.testing.assert_close(a, b.cpu(), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# InMemoryDataset

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


def image_data(n=23, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8)  # N, H, W, C
    y = rng.integers(0, 4, n)
    t = rng.integers(0, 4, n)
    return x, y, t


def normalise_np(x_nhwc):
    v = (x_nhwc.astype(np.float64) / 255 - np.array(MEAN)) / np.array(STD)
    return v.transpose(0, 3, 1, 2)


def test_batches_cover_epoch_and_match_inputs():
    x, y, t = image_data()
    ds = InMemoryDataset(x, y, true_labels=t, mean=MEAN, std=STD, class_names=list("abcd"))
    assert ds.inputs.dtype == torch.uint8 and ds.inputs.shape == (23, 3, 6, 5)
    assert ds.num_classes == 4 and len(ds) == 23 and ds.device.type == "cpu" and ds.is_image
    seen = []
    g = torch.Generator().manual_seed(0)
    for xb, yb, ib in ds.batches(5, shuffle=True, generator=g):
        assert xb.dtype == torch.float32 and xb.is_contiguous() and ib.dtype == torch.int64
        idx = ib.numpy()
        np.testing.assert_allclose(xb.numpy(), normalise_np(x[idx]), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(yb.numpy(), y[idx])
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(23)) and seen != list(range(23))
    assert ds.num_batches(5) == 5
    in_order = torch.cat([ib for _, _, ib in ds.batches(5, shuffle=False)])
    assert in_order.tolist() == list(range(23))


def test_drop_last_and_determinism():
    x, y, _ = image_data()
    ds = InMemoryDataset(x, y, mean=MEAN, std=STD)
    a = [ib for _, _, ib in ds.batches(5, shuffle=True, generator=torch.Generator().manual_seed(1), drop_last=True)]
    assert len(a) == ds.num_batches(5, drop_last=True) == 4
    assert all(len(i) == 5 for i in a) and len(set(torch.cat(a).tolist())) == 20
    b = [ib for _, _, ib in ds.batches(5, shuffle=True, generator=torch.Generator().manual_seed(1), drop_last=True)]
    assert all(torch.equal(i, j) for i, j in zip(a, b))


def test_augmented_batches_follow_the_documented_draws():
    x, y, _ = image_data(n=11)
    ds = InMemoryDataset(x, y, mean=MEAN, std=STD, augment=True, padding=2)
    g = torch.Generator().manual_seed(7)
    got = list(ds.batches(4, shuffle=True, generator=g))
    # replay: permutation first, then per batch the crop offsets and flips
    g2 = torch.Generator().manual_seed(7)
    perm = torch.randperm(11, generator=g2)
    for k, (xb, yb, ib) in enumerate(got):
        idx = perm[4 * k : 4 * k + 4]
        assert torch.equal(ib, idx)
        top, left, flips = draw_crop_flip(len(idx), padding=2, generator=g2)
        pixels = crop_flip_slow(x[idx.numpy()].transpose(0, 3, 1, 2), top.numpy(), left.numpy(), flips.numpy(), 2)
        expected = normalise_np(pixels.transpose(0, 2, 3, 1))
        np.testing.assert_allclose(xb.numpy(), expected, rtol=1e-5, atol=1e-5)
    # evaluation batches are never augmented
    xe, _, _ = next(ds.batches(11, shuffle=False))
    np.testing.assert_allclose(xe.numpy(), normalise_np(x), rtol=1e-5, atol=1e-5)
    # padding pixels are zero in pixel space, i.e. -mean/std after normalisation
    ones = InMemoryDataset(np.full((1, 4, 4, 3), 255, np.uint8), [0], mean=MEAN, std=STD, augment=True)
    found = set()
    for s in range(20):
        xb, _, _ = next(ones.batches(1, shuffle=True, generator=torch.Generator().manual_seed(s)))
        found.update(np.round(xb[0, 0].numpy().ravel(), 4).tolist())
    assert round((0 - MEAN[0]) / STD[0], 4) in found and round((1 - MEAN[0]) / STD[0], 4) in found


def test_subset_renumbers_and_keeps_contract():
    x, y, t = image_data()
    ds = InMemoryDataset(x, y, true_labels=t, mean=MEAN, std=STD, augment=True)
    sub = ds.subset(torch.tensor([3, 7, 11]))
    assert len(sub) == 3 and sub.num_classes == ds.num_classes and sub.augment
    assert torch.equal(sub.inputs[1], ds.inputs[7])
    assert sub.labels.tolist() == y[[3, 7, 11]].tolist() and sub.true_labels.tolist() == t[[3, 7, 11]].tolist()
    ib = torch.cat([i for _, _, i in sub.batches(2, shuffle=True, generator=torch.Generator())])
    assert sorted(ib.tolist()) == [0, 1, 2]
    mask = np.zeros(23, bool)
    mask[[0, 22]] = True
    assert ds.subset(mask).labels.tolist() == [y[0], y[22]]
    with pytest.raises(ValueError, match="idx"):
        ds.subset([23])


def test_to_device_and_copies():
    x, y, t = image_data()
    ds = InMemoryDataset(x, y, true_labels=t, mean=MEAN, std=STD)
    moved = ds.to("cpu")
    assert moved.device.type == "cpu" and moved.inputs.dtype == torch.uint8 and len(moved) == 23
    x[0] = 0  # the dataset holds its own copy
    assert ds.inputs[0].sum() > 0
    noisy = (ds.labels + 1) % 4
    re = ds.with_labels(noisy)
    assert torch.equal(re.labels, noisy) and torch.equal(re.true_labels, ds.true_labels)
    assert not torch.equal(ds.labels, noisy)
    with pytest.raises(ValueError, match="labels"):
        ds.with_labels(torch.full((23,), 4))
    with pytest.raises(ValueError, match="labels"):
        ds.with_labels(torch.zeros(3, dtype=torch.long))


def test_features_getitem_and_dataloader():
    rng = np.random.default_rng(0)
    feats = rng.random((10, 4)).astype(np.float64)
    ds = InMemoryDataset(feats, np.arange(10) % 3)
    assert ds.inputs.dtype == torch.float32 and not ds.is_image and ds.num_classes == 3
    xb, yb, ib = next(ds.batches(10, shuffle=False))
    np.testing.assert_allclose(xb.numpy(), feats.astype(np.float32))
    xb += 1  # fresh tensor: the stored inputs are untouched
    np.testing.assert_allclose(ds.inputs.numpy(), feats.astype(np.float32))
    x3, y3, i3 = ds[3]
    assert i3.item() == 3 and y3.item() == 0 and torch.equal(x3, ds.inputs[3])
    assert ds[-1][2].item() == 9
    with pytest.raises(IndexError):
        ds[10]

    x, y, _ = image_data(n=6)
    img = InMemoryDataset(x, y, mean=MEAN, std=STD, augment=True)
    loader = torch.utils.data.DataLoader(img, batch_size=4)
    xl, yl, il = next(iter(loader))
    assert xl.shape == (4, 3, 6, 5) and il.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(xl.numpy(), normalise_np(x[:4]), rtol=1e-5, atol=1e-5)


def test_dataset_rejects_bad_input():
    x, y, _ = image_data()
    with pytest.raises(ValueError, match="generator"):
        InMemoryDataset(x, y).batches(4, shuffle=True)
    with pytest.raises(ValueError, match="batch_size"):
        InMemoryDataset(x, y).batches(0, shuffle=False)
    with pytest.raises(ValueError, match="mean/std"):
        InMemoryDataset(np.zeros((3, 2), np.float32), [0, 1, 0], mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="one value per channel"):
        InMemoryDataset(x, y, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="augment"):
        InMemoryDataset(np.zeros((3, 2), np.float32), [0, 1, 0], augment=True)
    with pytest.raises(ValueError, match="num_classes"):
        InMemoryDataset(x, y, num_classes=2)
    with pytest.raises(ValueError, match="labels"):
        InMemoryDataset(x, y[:-1])
    with pytest.raises(ValueError, match="inputs"):
        InMemoryDataset(np.zeros((3, 2), np.int32), [0, 1, 0])


def test_from_raw():
    x, y, _ = image_data(n=8)
    raw = RawData(x, y, x[:3], y[:3], ["a", "b", "c", "d", "e"], "toy", MEAN, STD)
    train, test = from_raw(raw)
    assert train.augment and not test.augment
    assert train.num_classes == test.num_classes == 5
    assert torch.equal(train.true_labels, train.labels) and test.true_labels is None
