"""Image-file data: readers on generated fixture trees, their error cases, FileDataset batches and resume, runs."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from elr import rundir
from elr.config import Config, ConfigError
from elr.data import (FileDataset, ImageTransform, balanced_quotas, read_clothing1m, read_image_folder,
                      read_label_files, read_webvision)
from elr.data.image_transform import IMAGENET_MEAN_STD
from elr.prepare import prepare_data
from elr.engine import predict_all
from elr.runs import evaluate_run, restore_run, resume, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COLORS = [(220, 30, 30), (30, 200, 40), (40, 50, 210), (200, 200, 30), (30, 200, 200)]
SMALL = ["data.image_size=12", "data.crop_size=10", "device=cpu"]


def make_image(path: Path, color, size=(12, 12), seed=0):
    """A class-coloured image with a little seeded noise, so crops differ but classes stay separable."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color)[None, None, :] + rng.integers(-20, 21, (size[1], size[0], 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def image_folder(root: Path, classes=("cat", "dog", "fox"), train=4, test=2, val=0) -> Path:
    for part, count in (("train", train), ("test", test), ("val", val)):
        for c, name in enumerate(classes):
            for k in range(count):
                make_image(root / part / name / f"{k}.png", COLORS[c], seed=100 * len(part) + 10 * c + k)
    return root


def csv_tree(root: Path, n_train=12, n_test=6, tsv=False) -> Path:
    sep = "\t" if tsv else ","
    names = ["zebra", "apple", "moon"]
    rows = {"train": ["path" + sep + "label" + sep + "true_label"], "test": []}
    for part, n in (("train", n_train), ("test", n_test)):
        for k in range(n):
            c = k % 3
            make_image(root / "img" / f"{part}{k}.png", COLORS[c], seed=k)
            given = names[(c + 1) % 3] if part == "train" and k == 0 else names[c]  # one wrong label
            rows[part].append(sep.join([f"img/{part}{k}.png", given] + ([names[c]] if part == "train" else [])))
    ext = "tsv" if tsv else "csv"
    for part, lines in rows.items():
        (root / f"{part}.{ext}").write_text("\n".join(lines) + "\n")
    return root


CLOTHING_NAMES = ["T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket",
                  "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear"]


def clothing_tree(root: Path, per_class=3) -> Path:
    noisy, clean, train_keys, val_keys, test_keys = [], [], [], [], []
    for c in range(14):
        for k in range(per_class):
            key = f"images/{c}/{k:02d}/{c}_{k}.jpg"
            make_image(root / key, COLORS[c % 5], seed=c * 10 + k)
            noisy.append(f"{key} {(c + 1) % 14 if k == 0 else c}")  # a third of the labels are wrong
            train_keys.append(key)
        for split, keys in (("v", val_keys), ("t", test_keys)):
            key = f"images/{c}/{split}/{c}.jpg"
            make_image(root / key, COLORS[c % 5], seed=c)
            clean.append(f"{key} {c}")
            keys.append(key)
    files = {"noisy_label_kv.txt": noisy, "clean_label_kv.txt": clean, "noisy_train_key_list.txt": train_keys,
             "clean_val_key_list.txt": val_keys, "clean_test_key_list.txt": test_keys,
             "category_names_eng.txt": CLOTHING_NAMES}
    for name, lines in files.items():
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def webvision_tree(root: Path) -> tuple[Path, Path]:
    synsets = [f"n{c:08d} class{c}, words" for c in range(52)]
    (root / "info").mkdir(parents=True)
    (root / "info" / "synsets.txt").write_text("\n".join(synsets) + "\n")
    train, val = [], []
    for c in (0, 1, 2, 3, 4, 50, 51):  # 50 and 51 lie outside mini-WebVision
        for k in range(3):
            make_image(root / f"google/q{c:04d}/{k}.jpg", COLORS[c % 5], seed=k)
            train.append(f"google/q{c:04d}/{k}.jpg {c}")
        make_image(root / "val_images_256" / f"val{c:03d}.jpg", COLORS[c % 5], seed=c)
        val.append(f"val{c:03d}.jpg {c}")
    (root / "info" / "train_filelist_google.txt").write_text("\n".join(train) + "\n")
    (root / "info" / "val_filelist.txt").write_text("\n".join(val) + "\n")
    imagenet = root.parent / "imagenet_val"
    for c in range(50):
        (imagenet / f"n{c:08d}").mkdir(parents=True)
        if c < 5:
            for k in range(2):
                make_image(imagenet / f"n{c:08d}" / f"ILSVRC2012_val_{c}{k}.JPEG", COLORS[c], seed=k)
    return root, imagenet


def labelled(ds):
    return [(p.decode(), int(y)) for p, y in zip(ds.paths, ds.labels)]


# ---- transforms and the balanced draw ---------------------------------------------------------


def test_transform_sizes_and_reproducible_crops():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    t = ImageTransform(16, 12, "random_crop")
    assert t(img).shape == (12, 12, 3)
    assert np.array_equal(t(img, (5, 1)), t(img, (5, 1)))
    assert not all(np.array_equal(t(img, (5, 1)), t(img, (5, k))) for k in range(2, 6))
    assert ImageTransform(16, 12, "random_resized_crop")(img, (1, 2)).shape == (12, 12, 3)
    # evaluation: shorter side 20 -> 16 (30 -> 24), then the centre 12 x 12
    want = np.asarray(img.resize((24, 16), Image.BILINEAR).crop((6, 2, 18, 14)))
    assert np.array_equal(t(img), want)
    with pytest.raises(ValueError, match="crop_size"):
        ImageTransform(8, 12)


def test_balanced_quotas_fill_to_the_total():
    assert balanced_quotas([1, 5, 10], 9).tolist() == [1, 4, 4]
    assert balanced_quotas([1, 5, 10], 100).tolist() == [1, 5, 10]
    assert balanced_quotas([5, 5, 5], 10).tolist() in ([4, 3, 3], [3, 4, 3], [3, 3, 4])
    assert balanced_quotas([0, 7, 7], 6).tolist() == [0, 3, 3]


# ---- readers ------------------------------------------------------------------------------------


def test_read_image_folder(tmp_path):
    sets = read_image_folder(image_folder(tmp_path, val=1))
    assert sets.class_names == ["cat", "dog", "fox"]
    assert labelled(sets.train)[:5] == [("cat/0.png", 0), ("cat/1.png", 0), ("cat/2.png", 0), ("cat/3.png", 0),
                                        ("dog/0.png", 1)]
    assert len(sets.train) == 12 and len(sets.test) == 6 and len(sets.val) == 3
    assert sets.train.true_labels is None and sets.label_to_index is None


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.*root/train/<class>"):
        read_image_folder(tmp_path)
    root = image_folder(tmp_path / "a")
    (root / "train" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt is a file directly in"):
        read_image_folder(root)
    root = image_folder(tmp_path / "b")
    (root / "train" / "dog" / "labels.csv").write_text("x")
    with pytest.raises(ValueError, match="labels.csv is not an image file"):
        read_image_folder(root)
    root = image_folder(tmp_path / "c")
    make_image(root / "test" / "wolf" / "0.png", COLORS[0])
    with pytest.raises(ValueError, match="class 'wolf' does not exist"):
        read_image_folder(root)


def test_read_label_files_maps_names_and_keeps_true_labels(tmp_path):
    root = csv_tree(tmp_path)
    sets = read_label_files(root, "train.csv", "test.csv")
    assert sets.class_names == ["apple", "moon", "zebra"]
    assert sets.label_to_index == {"apple": 0, "moon": 1, "zebra": 2}
    # row 0 is a zebra (class 2 in file order 0) labelled apple; rows cycle zebra, apple, moon
    assert sets.train.labels[:4].tolist() == [0, 0, 1, 2]
    assert sets.train.true_labels[:4].tolist() == [2, 0, 1, 2]
    assert sets.train.lines[:2].tolist() == [2, 3]  # line 1 is the header
    tsv = read_label_files(csv_tree(tmp_path / "t", tsv=True), "train.tsv", "test.tsv")
    assert tsv.train.labels.tolist() == sets.train.labels.tolist()


def test_label_files_with_integer_labels(tmp_path):
    make_image(tmp_path / "a.png", COLORS[0])
    make_image(tmp_path / "b.png", COLORS[1])
    (tmp_path / "train.csv").write_text("a.png,0\nb.png,3\na.png,1\nb.png,002\n")
    (tmp_path / "test.csv").write_text("b.png,2\n")
    sets = read_label_files(tmp_path, "train.csv", "test.csv")
    assert sets.class_names == ["0", "1", "2", "3"] and sets.label_to_index is None
    assert sets.train.labels.tolist() == [0, 3, 1, 2] and sets.test.labels.tolist() == [2]


@pytest.mark.parametrize("train, test, message", [
    # a class index without a training line would be a class nothing teaches
    ("a.png,0\nb.png,3\n", "b.png,0\n", r"train.csv: labels are class indices 0 \.\. 3, but class 1 has no line"),
    # a test class the training file lacks is not a new class
    ("a.png,0\nb.png,1\n", "b.png,0\na.png,2\n", r"test.csv line 2: unknown label '2'.*classes: 0, 1"),
    # names and indices mixed would make "1" a class name
    ("a.png,cat\nb.png,dog\n", "a.png,cat\nb.png,1\n",
     r"test.csv line 2: label '1' is a class index but .*train.csv line 1 has the name 'cat'"),
])
def test_label_files_refuse_classes_without_a_training_line_and_mixed_labels(tmp_path, train, test, message):
    make_image(tmp_path / "a.png", COLORS[0])
    make_image(tmp_path / "b.png", COLORS[1])
    (tmp_path / "train.csv").write_text(train)
    (tmp_path / "test.csv").write_text(test)
    with pytest.raises(ValueError, match=message):
        read_label_files(tmp_path, "train.csv", "test.csv")


def test_label_file_errors_name_file_and_line(tmp_path):
    root = csv_tree(tmp_path)
    (root / "bad_test.csv").write_text("img/test0.png,zebra\nimg/test1.png,unicorn\n")
    with pytest.raises(ValueError, match=r"bad_test.csv line 2: unknown label 'unicorn'"):
        read_label_files(root, "train.csv", "bad_test.csv")
    (root / "missing.csv").write_text("img/test0.png,zebra\n\nimg/nothere.png,moon\n")
    with pytest.raises(FileNotFoundError, match=r"nothere.png \(listed in .*missing.csv line 3\)"):
        read_label_files(root, "train.csv", "missing.csv")
    (root / "cols.csv").write_text("img/test0.png,zebra,moon,extra\n")
    with pytest.raises(ValueError, match="cols.csv line 1: expected path,label"):
        read_label_files(root, "train.csv", "cols.csv")
    with pytest.raises(FileNotFoundError, match="label file not found"):
        read_label_files(root, "train.csv", "absent.csv")


def test_read_clothing1m(tmp_path):
    sets = read_clothing1m(clothing_tree(tmp_path))
    assert sets.class_names == CLOTHING_NAMES
    assert len(sets.train) == 42 and len(sets.val) == 14 and len(sets.test) == 14
    assert sets.train.labels[:3].tolist() == [1, 0, 0] and sets.train.true_labels is None
    assert sets.test.labels.tolist() == list(range(14))
    assert sets.train.path(0) == str(tmp_path / "images/0/00/0_0.jpg")


def test_clothing1m_errors_name_file_and_line(tmp_path):
    root = clothing_tree(tmp_path)
    kv = (root / "noisy_label_kv.txt").read_text().splitlines()
    (root / "noisy_label_kv.txt").write_text("\n".join(kv[:4] + [kv[4].rsplit(" ", 1)[0] + " 14"] + kv[5:]) + "\n")
    with pytest.raises(ValueError, match=r"noisy_label_kv.txt line 5: label 14 is outside the class list \[0, 14\)"):
        read_clothing1m(root)
    (root / "noisy_label_kv.txt").write_text("\n".join(kv[1:]) + "\n")
    with pytest.raises(ValueError, match=r"noisy_train_key_list.txt line 1: images/0/00/0_0.jpg has no label"):
        read_clothing1m(root)
    (root / "noisy_label_kv.txt").write_text("\n".join(kv) + "\n")
    (root / "images/0/t/0.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"0.jpg \(listed in .*clean_test_key_list.txt line 1\)"):
        read_clothing1m(root)


def test_read_webvision_first_50_classes_and_imagenet(tmp_path):
    root, imagenet = webvision_tree(tmp_path / "webvision")
    sets = read_webvision(root, imagenet)
    assert len(sets.class_names) == 50 and sets.class_names[3] == "class3, words"
    assert len(sets.train) == 15 and set(sets.train.labels.tolist()) == {0, 1, 2, 3, 4}
    assert len(sets.test) == 5 and sets.val is None
    assert len(sets.extra_tests["imagenet"]) == 10
    assert sets.extra_tests["imagenet"].labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert "imagenet" not in read_webvision(root).extra_tests
    (imagenet / "n00000049").rmdir()
    with pytest.raises(FileNotFoundError, match="n00000049 not found.*class 49"):
        read_webvision(root, imagenet)


# ---- FileDataset ------------------------------------------------------------------------------


def file_dataset(images, **kw):
    mean, std = IMAGENET_MEAN_STD
    kw.setdefault("transform", ImageTransform(12, 10, "random_crop"))
    return FileDataset(images, mean=mean, std=std, num_classes=kw.pop("num_classes", 3), **kw)


def epoch(ds, generator, batch_size=5):
    return [tuple(t.clone() for t in b) for b in ds.batches(batch_size, shuffle=True, generator=generator)]


def same(a, b):
    return len(a) == len(b) and all(all(torch.equal(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


def test_batches_same_for_any_worker_count_and_after_resume(tmp_path):
    images = read_image_folder(image_folder(tmp_path)).train
    g0 = torch.Generator().manual_seed(7)
    first, second = epoch(file_dataset(images), g0), epoch(file_dataset(images), g0)
    g2 = torch.Generator().manual_seed(7)
    two_workers = file_dataset(images, workers=2)
    assert same(epoch(two_workers, g2), first)
    state = g2.get_state()  # a checkpoint after epoch 1
    resumed = torch.Generator()
    resumed.set_state(state)
    assert same(epoch(file_dataset(images), resumed), second)
    assert not same(first, second)  # a new order and new crops every epoch
    x, y, index = first[0]
    assert x.dtype == torch.float32 and x.shape == (5, 3, 10, 10)
    assert torch.equal(y, torch.from_numpy(images.labels)[index])
    assert sorted(torch.cat([b[2] for b in first]).tolist()) == list(range(12))


def test_evaluation_pixels_are_normalised_centre_crops(tmp_path):
    rows, cols = np.meshgrid(np.arange(12), np.arange(16), indexing="ij")  # 12 high, 16 wide: no resize at 12
    pixels = np.stack([15 * cols, 20 * rows, np.full_like(rows, 100)], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "ramp.png")
    (tmp_path / "l.csv").write_text("ramp.png,0\n")
    images = read_label_files(tmp_path, "l.csv", "l.csv").test
    ds = file_dataset(images, num_classes=1)
    x, y, index = next(ds.batches(4, shuffle=False, train=False))
    mean, std = IMAGENET_MEAN_STD
    crop = pixels[1:11, 3:13] / 255.0  # the centred 10 x 10: rows 1-10, columns 3-12
    want = (crop - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(x[0].numpy(), want.transpose(2, 0, 1), atol=1e-6)
    assert index.tolist() == [0]
    trained = [next(ds.batches(4, shuffle=False, train=True, generator=torch.Generator().manual_seed(s)))[0][0]
               for s in range(4)]
    assert any(not torch.equal(t, x[0]) for t in trained)  # training draws other crops and flips


def test_class_balanced_epochs_are_redrawn(tmp_path):
    root = image_folder(tmp_path, train=0)
    for k in range(9):  # classes of 9, 3 and 2 images
        make_image(root / "train" / "cat" / f"{k}.png", COLORS[0], seed=k)
    for c, n in (("dog", 3), ("fox", 2)):
        for k in range(n):
            make_image(root / "train" / c / f"{k}.png", COLORS[1], seed=k)
    ds = file_dataset(read_image_folder(root).train, epoch_examples=8)
    assert ds.num_batches(3) == 3 and len(ds) == 14
    g = torch.Generator().manual_seed(0)
    draws = [torch.cat([b[2] for b in epoch(ds, g, 3)]) for _ in range(3)]
    for drawn in draws:
        assert np.bincount(ds.labels[drawn].numpy(), minlength=3).tolist() == [3, 3, 2]
    assert len({tuple(sorted(d.tolist())) for d in draws}) > 1  # the cats drawn change between epochs


def test_undecodable_image_raises_or_is_skipped_and_counted(tmp_path):
    root = csv_tree(tmp_path)
    (root / "img" / "train3.png").write_bytes(b"this is not a png")
    sets = read_label_files(root, "train.csv", "test.csv")
    with pytest.raises(ValueError, match=r"cannot read image .*train3.png \(listed in .*train.csv line 5\)"):
        list(file_dataset(sets.train).batches(4, shuffle=False))
    ds = file_dataset(sets.train, decode_errors="skip", workers=2)
    batches = list(ds.batches(4, shuffle=False))
    assert [len(b[2]) for b in batches] == [3, 4, 4] and 3 not in torch.cat([b[2] for b in batches]).tolist()
    assert ds.take_skipped() == 1 and ds.take_skipped() == 0


def test_missing_pillow_names_the_extra(tmp_path, monkeypatch):
    images = read_image_folder(image_folder(tmp_path)).train
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install 'elr\[vision\]'"):
        file_dataset(images)


# ---- configs and runs -------------------------------------------------------------------------


def small_run(dataset, root, *extra):
    return Config.load(None, [f"data.dataset={dataset}", f"data.root={root}", *SMALL, "model.name=mlp",
                              "noise.type=none", "optim.batch_size=4", "optim.epochs=2", "optim.lr=0.05",
                              "optim.schedule=constant", "eval_batch_size=8", *extra])


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_config_keys_are_checked():
    with pytest.raises(ConfigError, match="data.workers applies to image-file data sets"):
        Config.load(None, ["data.workers=2"])
    with pytest.raises(ConfigError, match="data.decode_errors must be one of raise, skip"):
        Config.load(None, ["data.dataset=image_folder", "data.root=x", "data.decode_errors=ignore"])
    with pytest.raises(ConfigError, match="data.dataset=csv needs data.test_label_file"):
        Config.load(None, ["data.dataset=csv", "data.root=x", "data.label_file=a.csv"])
    with pytest.raises(ConfigError, match="crop_size .* must not exceed"):
        Config.load(None, ["data.dataset=image_folder", "data.root=x", "data.image_size=8", "data.crop_size=10"])
    with pytest.raises(ConfigError, match="real label noise: use noise.type=none"):
        Config.load(None, ["data.dataset=clothing1m", "data.root=x", "noise.rate=0.2"])
    with pytest.raises(ConfigError, match="data.imagenet_root is not read for data.dataset='csv'"):
        Config.load(None, ["data.dataset=csv", "data.root=x", "data.label_file=a", "data.test_label_file=b",
                           "data.imagenet_root=y"])


def test_image_folder_run_with_synthetic_noise_and_exact_resume(tmp_path):
    root = image_folder(tmp_path / "data", val=1)
    config = small_run("image_folder", root, "noise.type=symmetric", "noise.rate=0.25", "data.workers=0")
    straight = tmp_path / "straight"
    summary = train(config, straight)
    assert summary["epochs"] == 2 and summary["train_examples"] == 12
    assert json.loads((straight / "classes.json").read_text()) == {"class_names": ["cat", "dog", "fox"]}
    records = read_metrics(straight)
    assert {"test_acc", "val_acc", "mem_wrong_memorized", "skipped_images"} <= set(records[0])
    assert records[-1]["skipped_images"] == 0

    class Stop(Exception):
        pass

    class StopAfterOne:
        def epoch_start(self, epoch, epochs, batches):
            pass

        def batch_end(self):
            pass

        def epoch_end(self, record):
            raise Stop

    stopped = tmp_path / "stopped"
    with pytest.raises(Stop):
        train(config, stopped, progress=StopAfterOne())
    assert len(read_metrics(stopped)) == 1
    resume(stopped)
    keys = ("train_loss", "train_acc", "test_acc", "val_acc", "mem_wrong_memorized")
    assert [{k: r[k] for k in keys} for r in read_metrics(stopped)] == [{k: r[k] for k in keys} for r in records]


def test_csv_run_with_workers_maps_labels_and_monitors(tmp_path):
    root = csv_tree(tmp_path / "data")
    config = small_run("csv", root, "data.label_file=train.csv", "data.test_label_file=test.csv",
                       "data.workers=2", "data.train_crop=random_resized_crop", "optim.epochs=1")
    out = tmp_path / "run"
    summary = train(config, out)
    classes = json.loads((out / "classes.json").read_text())
    assert classes == {"class_names": ["apple", "moon", "zebra"], "label_to_index": {"apple": 0, "moon": 1, "zebra": 2}}
    noise_info = json.loads((out / "noise.json").read_text())
    assert noise_info["num_noisy"] == 1  # the one wrong label of the file, against its true_label column
    # memorized = the final network predicts the wrong label of the wrongly-labelled example, recomputed
    # from the checkpoint on the training split (the monitor's examples, read with the evaluation transform)
    _, prepared, method, _ = restore_run(out)
    train_split = prepared.data.train
    predicted = predict_all(method, train_split, 8).argmax(dim=1)
    wrong = train_split.labels != train_split.true_labels
    assert int(wrong.sum()) == 1
    given, true = int(train_split.labels[wrong]), int(train_split.true_labels[wrong])
    guess = int(predicted[wrong])  # one of three answers: exactly one of the fractions is 1
    expected = {"true": float(guess == true), "memorized": float(guess == given),
                "other": float(guess not in (given, true))}
    last = read_metrics(out)[-1]
    assert {k: last[f"mem_wrong_{k}"] for k in expected} == expected
    assert summary["last"]["mem_wrong_memorized"] == expected["memorized"]
    clean = ~wrong
    assert summary["last"]["mem_clean_correct"] == pytest.approx(
        float((predicted[clean] == train_split.true_labels[clean]).float().mean()))
    assert np.load(out / "noisy_labels.npy").tolist()[:3] == [0, 0, 1]


def test_skip_policy_reports_the_count_in_metrics_and_summary(tmp_path):
    root = image_folder(tmp_path / "data")
    (root / "train" / "dog" / "1.png").write_bytes(b"\x89PNG broken")
    summary = train(small_run("image_folder", root, "data.decode_errors=skip", "optim.epochs=1"), tmp_path / "run")
    assert summary["skipped_images"] == 1 and read_metrics(tmp_path / "run")[0]["skipped_images"] == 1


@pytest.mark.parametrize("broken, split", [("fox/2.png", "train"), ("dog/3.png", "val")])
def test_skipped_images_with_the_monitor_and_selected_targets(tmp_path, broken, split):
    # with ELR and known true labels the monitor reads the training files again and the selected epoch's
    # targets predict the validation split again: an unreadable image is still reported once an epoch
    root = image_folder(tmp_path / "data")
    (root / "train" / broken).write_bytes(b"\x89PNG broken")
    out = tmp_path / "run"
    summary = train(small_run("image_folder", root, "data.decode_errors=skip", "optim.epochs=2", "loss.name=elr",
                              "noise.type=symmetric", "noise.rate=0.3", "data.val_fraction=0.25"), out)
    val = json.loads((out / "noise.json").read_text())["val_indices"]
    paths = [line.split(",")[1] for line in (out / "examples.csv").read_text().splitlines()[1:]]
    assert any(paths[i].endswith(broken) for i in val) == (split == "val")
    records = read_metrics(out)
    assert [r["skipped_images"] for r in records] == [1, 1] and summary["skipped_images"] == 2
    trained = 8 if split == "train" else 9  # 9 training examples, less the unreadable one
    assert [r["det_examples"] for r in records] == [trained, trained] and "mem_clean_correct" in records[0]


@pytest.mark.parametrize("name", ["elr", "elr_plus"])
def test_clothing1m_configs_train_on_the_fixture(tmp_path, name):
    root = clothing_tree(tmp_path / "c1m")
    config = Config.load(CONFIGS / "clothing1m" / f"{name}.yaml",
                         [f"data.root={root}", *SMALL, "data.workers=0", "data.batches_per_epoch=3",
                          "model={name: mlp}", "optim.batch_size=7", "optim.epochs=1", "eval_batch_size=32"])
    prepared = prepare_data(config)
    assert prepared.data.train.num_batches(7) == 3 and prepared.true_labels is None
    summary = train(config, tmp_path / "run")
    record = read_metrics(tmp_path / "run")[0]
    assert {"test_acc", "test_top5", "val_acc"} <= set(record) and not any(k.startswith("mem_") for k in record)
    assert summary["noise"]["realised_rate"] is None and summary["selected"]["epoch"] == 1
    # its own validation set selects epoch 1: those rows are kept, examples no draw reached have no verdict
    chosen = rundir.read_selected_targets(tmp_path / "run")
    n = len(prepared.noisy_labels)
    assert chosen.epoch == 1 and len(chosen.sources) == n and set(chosen.sources) == {"targets", "untrained"}
    assert (chosen.sources == "targets").sum() <= 3 * 7 < n and not any(k.startswith("det_") for k in record)


def test_webvision_reports_imagenet_top1_and_top5(tmp_path):
    root, imagenet = webvision_tree(tmp_path / "webvision")
    config = Config.load(CONFIGS / "webvision" / "elr.yaml",
                         [f"data.root={root}", f"data.imagenet_root={imagenet}", *SMALL, "data.workers=0",
                          "model={name: mlp}", "optim.batch_size=8", "optim.epochs=1", "eval_batch_size=8"])
    summary = train(config, tmp_path / "run")
    last = summary["last"]
    assert {"test_acc", "test_top5", "imagenet_acc", "imagenet_top5"} <= set(last)
    # top-1 and top-5 recounted from the checkpoint's logits: an image counts for top-5 when its class is among
    # its 5 largest logits (of 50); WebVision's validation images are classes 0..4 once, ImageNet's twice each
    _, prepared, method, _ = restore_run(tmp_path / "run")
    for name, dataset, labels in (("test", prepared.data.test, [0, 1, 2, 3, 4]),
                                  ("imagenet", prepared.data.extra_tests["imagenet"], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])):
        assert dataset.labels.tolist() == labels
        logits = predict_all(method, dataset, 3).numpy()
        top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
        y = np.array(labels)
        assert last[f"{name}_acc"] == pytest.approx(np.mean(logits.argmax(axis=1) == y), abs=1e-12)
        assert last[f"{name}_top5"] == pytest.approx(np.mean((top5 == y[:, None]).any(axis=1)), abs=1e-12)
    assert len(json.loads((tmp_path / "run" / "classes.json").read_text())["class_names"]) == 50
    evaluated = evaluate_run(tmp_path / "run")  # `elr eval` reports the second test set too
    assert evaluated["imagenet_acc"] == last["imagenet_acc"] and evaluated["imagenet_top5"] == last["imagenet_top5"]



def test_readme_own_data_example_runs():
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Your own data", 1)[1].split("\n## ", 1)[0]
    namespace: dict = {}
    exec(compile(re.search(r"```python\n(.*?)```", section, re.S).group(1), "README own data", "exec"), namespace)
    # 64 examples in 4 batches: every target row was updated once, so it sums to 1 - beta
    assert torch.allclose(namespace["criterion"].targets.sum(dim=1), torch.full((64,), 0.3))
    for block in re.findall(r"```yaml\n(.*?)```", section, re.S):  # the YAML examples are valid configs
        raw = __import__("yaml").safe_load(block)
        Config.from_dict(raw).validate()


def test_val_fraction_splits_the_file_list_by_noisy_label(tmp_path):
    root = csv_tree(tmp_path / "data")
    config = small_run("csv", root, "data.label_file=train.csv", "data.test_label_file=test.csv",
                       "data.val_fraction=0.25")
    prepared = prepare_data(config)
    train_set, val = prepared.data.train, prepared.data.val
    assert len(train_set) == 9 and len(val) == 3 and len(prepared.val_indices) == 3
    assert np.bincount(val.labels.numpy(), minlength=3).tolist() == [1, 1, 1]  # one of each noisy class
    assert val.transform.train_crop == "none" and train_set.transform.train_crop == "random_crop"
    folder = image_folder(tmp_path / "f", val=1)
    with pytest.raises(ConfigError, match="has its own validation set"):
        prepare_data(small_run("image_folder", folder, "data.val_fraction=0.2"))


def test_detect_on_a_csv_list_names_each_file_and_line(tmp_path):
    import csv as csv_module

    from elr import detect_label_issues, rundir

    root = csv_tree(tmp_path / "data", n_train=15)
    out = tmp_path / "run"
    train(small_run("csv", root, "data.label_file=train.csv", "data.test_label_file=test.csv",
                    "data.val_fraction=0.2", "optim.epochs=3"), out)
    table = detect_label_issues(out)
    val = rundir.read_noise(out)["val_indices"]
    assert len(val) == 3 and sorted(table["index"].tolist()) == list(range(15))
    for i, path, line, source in zip(table["index"], table["path"], table["line"], table["source"]):
        assert path == str(root / "img" / f"train{i}.png") and line == i + 2  # line 1 is the header
        assert source == ("held_out_model" if i in val else "targets")
    given = dict(zip(table["index"].tolist(), table["given_class"]))
    assert given[0] == "apple" and table["true_label"][table["index"] == 0][0] == 2  # zebra, the one wrong label
    assert rundir.read_true_labels(out).tolist() == [2, 0, 1] * 5
    with open(out / "examples.csv", newline="") as f:
        rows = list(csv_module.DictReader(f))
    assert rows[4] == {"index": "4", "path": str(root / "img" / "train4.png"), "line": "6"}


def test_detect_on_a_folder_lists_an_unreadable_image_last_without_a_verdict(tmp_path):
    from elr import detect_label_issues, rundir

    root = image_folder(tmp_path / "data")
    (root / "train" / "dog" / "1.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "run"
    train(small_run("image_folder", root, "data.decode_errors=skip", "optim.epochs=1"), out)
    table = detect_label_issues(out)
    assert table["source"].tolist() == ["targets"] * 11 + ["unreadable"]
    assert table["path"][-1] == str(root / "train" / "dog" / "1.png") and "line" not in table
    assert np.isnan(table["score"][-1]) and not table["is_issue"][-1]
    assert np.isfinite(table["score"][:-1]).all()
    assert rundir.read_true_labels(out) is None and "true_label" not in table  # the folder's labels as given


def test_detect_draws_the_suspects_from_their_files(tmp_path, capsys):
    from test_detect_runs import panels

    from elr import detect_label_issues, rundir
    from elr.cli import main

    root = csv_tree(tmp_path / "data", n_train=15)
    out = tmp_path / "run"
    train(small_run("csv", root, "data.label_file=train.csv", "data.test_label_file=test.csv",
                    "data.val_fraction=0.2", "optim.epochs=2"), out)
    (root / "img" / "train3.png").unlink()  # a file gone since the run: its panel says so, the others are drawn
    capsys.readouterr()
    assert main(["detect", str(out), "--top", "15"]) == 0
    assert f"wrote {out / 'label_issues.png'} (the top 15 suspects)" in capsys.readouterr().out
    table = detect_label_issues(out)
    shown = [COLORS.index(tuple(min(COLORS, key=lambda c: sum((np.array(c) - colour) ** 2))))
             for colour in panels(out / "label_issues.png")]
    names = rundir.read_classes(out)["class_names"]  # sorted; csv_tree colours zebra, apple, moon by COLORS[0..2]
    expected = [["zebra", "apple", "moon"].index(names[t]) for i, t in zip(table["index"], table["true_label"]) if i != 3]
    assert shown == expected and len(shown) == 14


def test_the_cleanlab_rule_leaves_unreadable_images_out(tmp_path):
    filters = pytest.importorskip("cleanlab.filter", reason="cleanlab is not installed (pip install 'elr[cleanlab]')")
    from elr import detect_label_issues, rundir

    root = image_folder(tmp_path / "data", train=6)
    (root / "train" / "dog" / "1.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "run"
    train(small_run("image_folder", root, "data.decode_errors=skip", "optim.epochs=2"), out)
    probs, sources = rundir.read_targets(out)
    noisy = rundir.read_noisy_labels(out)
    readable = sources != "unreadable"
    assert readable.sum() == 17
    expected = np.zeros(18, dtype=bool)
    expected[readable] = filters.find_label_issues(noisy[readable], probs[readable], filter_by="prune_by_class")
    table = detect_label_issues(out, rule="cleanlab", filter_by="prune_by_class")
    assert table["is_issue"].tolist() == expected[table["index"]].tolist()
    assert table["source"][-1] == "unreadable" and not table["is_issue"][-1]


def test_an_empty_class_folder_of_the_training_set_is_named(tmp_path):
    for part, cls in [("train", "cat"), ("test", "cat"), ("test", "dog")]:
        make_image(tmp_path / part / cls / "a.png", COLORS[0])
    (tmp_path / "train" / "dog").mkdir()
    with pytest.raises(ValueError, match=r"train/dog holds no images: every class folder of the training set"):
        read_image_folder(tmp_path)
