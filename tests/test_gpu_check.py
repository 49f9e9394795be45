"""The prepared GPU check (benchmarks/gpu_check.py): its tiny CPU mode, the subset it carries, the per-image path."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from elr.data.readers import read_npz

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCHMARKS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load_script()


def test_tiny_mode_writes_every_part_with_figures_that_agree(tmp_path):
    out = tmp_path / "check.md"
    assert gpu_check.main(["--tiny", "--out", str(out), "--device", "cpu"]) == 0
    text = out.read_text()
    for heading in ("## 1. Training throughput", "## 2. The data path", "## 3. Projected time",
                    "## 4. A shortened Table 1 cell", "## 5. torch.compile on"):
        assert heading in text
    figures = json.loads(re.search(r"```json\n(.*)\n```", text, re.S).group(1))
    assert figures["failed"] == []
    elr, ce, plus = figures["ResNet-34 elr"], figures["ResNet-34 ce"], figures["PreAct ResNet-18 x 2 elr+"]
    for m in (elr, ce, plus, figures["PreAct ResNet-18 elr"]):  # 64 images in 4 steps of 16: ips x ms = 1000 x 16
        assert m["train_ips"] * m["step_ms"] == pytest.approx(1000 * 16)
    assert figures["elr_over_ce_step"] == pytest.approx(elr["step_ms"] / ce["step_ms"])
    assert figures["pipeline_ratio"] == pytest.approx(figures["on_device_ips"] / figures["per_image_ips"])
    assert figures["on_device_ips"] == elr["train_ips"]
    table1 = 150 * (45000 / elr["train_ips"] + 25000 / elr["eval_ips"]) / 60
    table2 = 200 * (45000 / plus["train_ips"] + 25000 / plus["eval_ips"]) / 60
    assert (figures["table1_run_minutes"], figures["table2_run_minutes"]) == pytest.approx((table1, table2))
    assert figures["table1_sweep_hours"] == pytest.approx(43200 * table1 / 150 / 60)
    assert f"| Table 1: ResNet-34, ELR, 150 epochs | {table1:.1f} |" in text
    assert f"| Table 2: ELR+, two PreAct ResNet-18, 200 epochs | {table2:.1f} |" in text
    for label in ("CE", "ELR"):
        cell = figures[f"cell {label}"]
        assert cell["epochs"] == 1 and cell["best"] >= max(cell["last"], cell["selected"])
        assert 0 <= cell["memorized"] <= 1
        assert (f"| {label} | 1 | {100 * cell['last']:.2f} | {100 * cell['selected']:.2f} | {100 * cell['best']:.2f} | "
                f"{100 * cell['memorized']:.1f} |") in text
    assert "**synthetic random images** (tiny mode)" in text and "Not measured: tiny mode" in text
    assert f"`python benchmarks/gpu_check.py --tiny --out {out} --device cpu`" in text


def source_npz(path, n_train=200, n_test=100):
    rng = np.random.default_rng(3)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
              "y_train": np.repeat(np.arange(10), n_train // 10),
              "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
              "y_test": np.repeat(np.arange(10), n_test // 10),
              "class_names": np.array([f"c{i}" for i in range(10)])}
    rng.shuffle(arrays["y_train"])
    np.savez(path, **arrays)
    return arrays


def test_prepare_writes_a_stratified_subset_that_elr_reads(tmp_path):
    source = source_npz(tmp_path / "cifar10.npz")
    out = tmp_path / "carried" / "subset.npz"
    done = gpu_check.prepare(tmp_path / "cifar10.npz", out, 50, 20)
    assert done["mib"] == pytest.approx(out.stat().st_size / 2**20) and (done["train"], done["test"]) == (50, 20)
    with np.load(out) as d:
        rows, test_rows = d["train_rows"], d["test_rows"]
        assert np.all(np.diff(rows) > 0) and np.all(np.diff(test_rows) > 0)
        np.testing.assert_array_equal(d["x_train"], source["x_train"][rows])
        np.testing.assert_array_equal(d["y_train"], source["y_train"][rows])
        np.testing.assert_array_equal(d["x_test"], source["x_test"][test_rows])
        assert np.bincount(d["y_train"]).tolist() == [5] * 10 and np.bincount(d["y_test"]).tolist() == [2] * 10
    assert str(tmp_path / "cifar10.npz") in gpu_check.load_images(out, tiny=False)[1]  # the note names the source
    raw = read_npz(out)
    assert raw.x_train.shape == (50, 32, 32, 3) and list(raw.class_names) == [f"c{i}" for i in range(10)]
    assert [p.name for p in out.parent.iterdir()] == ["subset.npz"]


def test_prepare_refuses_what_cannot_travel(tmp_path):
    source_npz(tmp_path / "cifar10.npz")
    out = tmp_path / "carried" / "subset.npz"
    with pytest.raises(SystemExit, match=r"the subset would be 0\.\d MiB, over the 0\.01 MiB"):
        gpu_check.prepare(tmp_path / "cifar10.npz", out, 50, 20, max_mib=0.01)
    assert list(out.parent.iterdir()) == []  # no subset, no partial file
    with pytest.raises(SystemExit, match=r"--train-images must lie in \[10, 200\]; got 500"):
        gpu_check.prepare(tmp_path / "cifar10.npz", out, 500, 20)
    with pytest.raises(SystemExit, match="--source .*missing.npz: no such file"):
        gpu_check.prepare(tmp_path / "missing.npz", out, 50, 20)


def test_without_the_subset_it_trains_on_synthetic_images_and_says_so(tmp_path):
    arrays, note, _ = gpu_check.load_images(tmp_path / "absent.npz", tiny=False)
    assert arrays["x_train"].shape == (14000, 32, 32, 3) and arrays["x_test"].shape == (2000, 32, 32, 3)
    assert "**synthetic random images**" in note and "absent.npz not found" in note and "--prepare" in note


def test_per_image_path_is_pad_crop_flip_normalise(tmp_path):
    """The authors' per-image transform, recomputed in NumPy from the same random draws."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    dataset = gpu_check.PerImageDataset(images, np.array([0, 1, 2]))
    dataset.transform = None  # the Pillow path (torchvision's when installed does the same)
    mean, std = np.array(gpu_check.CIFAR_MEAN), np.array(gpu_check.CIFAR_STD)
    flips = set()
    for seed in range(8):
        torch.manual_seed(seed)
        top, left = torch.randint(0, 9, (2,)).tolist()
        flip = bool(torch.rand(()) < 0.5)
        flips.add(flip)
        padded = np.pad(images[seed % 3], ((4, 4), (4, 4), (0, 0)))
        crop = padded[top:top + 32, left:left + 32]
        crop = crop[:, ::-1] if flip else crop
        expected = ((crop / 255.0 - mean) / std).transpose(2, 0, 1)
        torch.manual_seed(seed)
        x, y, index = dataset[seed % 3]
        np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)
        assert (int(y), index) == (seed % 3, seed % 3)
    assert flips == {True, False}


def test_throughput_script_json_lines_are_what_part_5_reads():
    env_path = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_throughput.py"), "--device", "cpu", "--models", "resnet8",
                           "--settings", "bf16", "--train-size", "32", "--eval-size", "16", "--epochs", "1", "--json"],
                          capture_output=True, text=True, timeout=300, check=True,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    m = json.loads(lines[0])
    assert m["model"] == "resnet8" and m["setting"] == "bf16 + channels_last"
    assert m["train_ips"] * m["step_ms"] == pytest.approx(1000 * 32)  # 32 images in one step of 128


def test_the_cell_runs_whole_cosine_cycles_within_the_time():
    assert gpu_check.cell_epochs(100, 2.0) == 20  # 25 fit: two whole 10-epoch cycles
    assert gpu_check.cell_epochs(39.9, 2.0) == 9  # under one cycle: as many as fit
    assert gpu_check.cell_epochs(0, 2.0) == gpu_check.cell_epochs(-50, 2.0) == 1
    assert gpu_check.cell_epochs(10**6, 1.0) == 150  # never past Table 1's 150


def test_the_table1_sweep_counts_its_asymmetric_epochs_and_forwards_first_stage():
    # 140 symmetric runs x 150 + 140 asymmetric x 120, plus Forward's CE stage 1: 20 x 150 + 20 x 120
    assert gpu_check.sweep_epochs(gpu_check.REPO / "configs" / "sweeps" / "table1_cifar10.yaml") == (280, 43200)


def compile_check(tmp_path, monkeypatch, outcome):
    """Part 5 as on a CUDA machine, with the child process replaced by ``outcome(command, timeout)``."""
    args = gpu_check.argparse.Namespace(tiny=False, device="cuda", budget=1000.0, compile_reserve=0.0, workers=0,
                                        out=str(tmp_path / "check.md"), data="", argv=[])
    check = gpu_check.Check(args)
    check.figures["ResNet-34 elr"] = {"train_ips": 1000.0}
    check.figures["PreAct ResNet-18 elr"] = {"train_ips": 2000.0}
    seen = {}

    def run(command, *, timeout, **kwargs):
        seen.update(command=command, timeout=timeout)
        return outcome(command, timeout)

    monkeypatch.setattr(gpu_check.subprocess, "run", run)
    check.compiled()
    return check, (tmp_path / "check.md").read_text(), seen


LINE = {"resnet34": '{"model": "resnet34", "setting": "s", "train_ips": 3000.0, "eval_ips": 9000.0, "step_ms": 1.0}',
        "preact_resnet18": '{"model": "preact_resnet18", "setting": "s", "train_ips": 5000.0, "eval_ips": 20000.0, '
                           '"step_ms": 2.0}'}


def test_compile_part_reads_the_childs_json_lines(tmp_path, monkeypatch):
    def finished(command, timeout):
        return subprocess.CompletedProcess(command, 0, stdout="compiling...\n" + "\n".join(LINE.values()) + "\n", stderr="")

    check, text, seen = compile_check(tmp_path, monkeypatch, finished)
    command = seen["command"]
    assert command[command.index("--models") + 1:command.index("--models") + 3] == ["resnet34", "preact_resnet18"]
    assert command[command.index("--train-size") + 1] == "6912" and command[command.index("--eval-size") + 1] == "2048"
    assert 970 < seen["timeout"] <= 990  # the budget left, less 10 s
    minutes = 150 * (45000 / 3000 + 25000 / 9000) / 60
    assert f"| ResNet-34 | 3,000 | 9,000 | 3.00x | {minutes:.1f} |" in text
    assert "| PreAct ResNet-18 | 5,000 | 20,000 | 2.50x |" in text
    assert check.figures["ResNet-34 compile"] == {"train_ips": 3000.0, "eval_ips": 9000.0, "step_ms": 1.0}
    assert check.failed == []


def test_compile_part_keeps_what_finished_before_the_timeout(tmp_path, monkeypatch):
    def slow(command, timeout):
        raise subprocess.TimeoutExpired(command, timeout, output=(LINE["resnet34"] + "\n").encode())

    check, text, _ = compile_check(tmp_path, monkeypatch, slow)
    assert "| ResNet-34 | 3,000 | 9,000 | 3.00x |" in text
    assert "| PreAct ResNet-18 | not measured: compiling, a warm-up and a measured epoch went past the" in text
    assert "PreAct ResNet-18 compile" not in check.figures and check.failed == []


def test_compile_part_failing_is_written_down_and_counted(tmp_path, monkeypatch):
    def broken(command, timeout):
        raise subprocess.CalledProcessError(1, command, output="", stderr="Traceback ...\nRuntimeError: inductor broke\n")

    check, text, _ = compile_check(tmp_path, monkeypatch, broken)
    assert text.count("failed: `RuntimeError: inductor broke`") == 2
    assert check.failed == ["compile: RuntimeError: inductor broke"]
