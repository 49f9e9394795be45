"""The prepared GPU check: one command, under 5 minutes on one H100/H200-class GPU, one Markdown file of figures.

1. Throughput of a training epoch (bf16 + channels_last), ResNet-34 and PreAct ResNet-18, ELR and CE, and
   ELR+ (two PreAct ResNet-18, the Table 2 preset's settings): images/s, step time, the ELR / CE ratio
   (:func:`gpu_throughput.measure`: the engine's own on-device epoch).
2. The same ResNet-34 ELR epoch fed the way the authors' code feeds it: one PIL image at a time,
   padded, cropped, flipped and normalised in DataLoader worker processes, copied to the GPU per batch
   (torchvision's transforms when installed, else the same operations in Pillow and NumPy).
3. The minutes one Table 1 run (ResNet-34, 150 epochs) and one Table 2 ELR+ run (200 epochs) take.
4. A shortened Table 1 cell: the presets configs/cifar10/ce_sym40.yaml and elr_sym40.yaml (ResNet-34, 40%
   symmetric noise) on the carried CIFAR-10 subset, as many epochs as the time left allows (a multiple of
   the presets' 10-epoch cosine cycle), through ``elr.runs.train``: test accuracy and memorization.
5. ``torch.compile`` on: the throughput again (in a child process with a timeout: compilation time
   varies), with what time is left.

The GPU machine runs it from the source tree with no install step; the CIFAR-10 images come from a
subset file built here beforehand, in an ignored folder that the device call carries:

    .venv/bin/python benchmarks/gpu_check.py --prepare      # here: ../shared/data/cifar10.npz -> benchmarks/gpu_check_data/
    PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT/gpu_check.md     # there, carry: benchmarks/gpu_check_data
    .venv/bin/python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check.md    # CPU, synthetic, a few batches (tests)

Without the subset file it trains on synthetic images and says so (the cell's accuracies then mean nothing).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # gpu_throughput beside this file, also when imported by the tests

from gpu_throughput import (CIFAR_MEAN, CIFAR_STD, arrays_data, build_method, measure,  # noqa: E402
                            TABLE1_EPOCHS, synthetic_images, table1_minutes)

from elr.config import Config  # noqa: E402
from elr.data.split import stratified_split  # noqa: E402
from elr.experiments import Sweep  # noqa: E402
from elr.rundir import read_metrics  # noqa: E402
from elr.runs import train  # noqa: E402

SUBSET = HERE / "gpu_check_data" / "cifar10_subset.npz"
SOURCE = REPO.parent / "shared" / "data" / "cifar10.npz"
MAX_SUBSET_MIB = 50
TABLE2_EPOCHS = 200  # configs/elr_plus/cifar10_*.yaml
COMPILE_TRAIN, COMPILE_EVAL = 54 * 128, 2 * 1024


# ---- the carried data ------------------------------------------------------------------------------------


def prepare(source: Path, out: Path, train_images: int, test_images: int, max_mib: float = MAX_SUBSET_MIB) -> dict:
    """Write a class-stratified subset of a CIFAR-10 npz (same keys, plus the rows it took) to ``out``."""
    if not source.is_file():
        raise SystemExit(f"gpu_check.py: error: --source {source}: no such file (the CIFAR-10 npz: x_train, y_train, "
                         f"x_test, y_test)")
    with np.load(source) as d:
        arrays = {k: d[k] for k in d.files}
    picked = {}
    for split, count in (("train", train_images), ("test", test_images)):
        y = arrays[f"y_{split}"]
        if not 10 <= count <= len(y):
            raise SystemExit(f"gpu_check.py: error: --{split}-images must lie in [10, {len(y)}]; got {count}")
        _, rows = stratified_split(y, count / len(y), seed=0)
        picked[split] = np.sort(rows)
    subset = {"x_train": arrays["x_train"][picked["train"]], "y_train": arrays["y_train"][picked["train"]],
              "x_test": arrays["x_test"][picked["test"]], "y_test": arrays["y_test"][picked["test"]],
              "train_rows": picked["train"], "test_rows": picked["test"], "source": np.array(str(source))}
    if "class_names" in arrays:
        subset["class_names"] = arrays["class_names"]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.npz")
    np.savez_compressed(partial, **subset)
    mib = partial.stat().st_size / 2**20
    if mib > max_mib:
        partial.unlink()
        raise SystemExit(f"gpu_check.py: error: the subset would be {mib:.1f} MiB, over the {max_mib} MiB the device "
                         f"call can carry; lower --train-images / --test-images")
    partial.replace(out)
    return {"path": str(out), "mib": mib, "train": len(picked["train"]), "test": len(picked["test"])}


def load_images(path: Path, tiny: bool) -> tuple[dict[str, np.ndarray], str, Path | None]:
    """The subset's arrays, or synthetic images (with the note that says so), and the file read (None when
    synthetic)."""
    if not tiny and path.is_file():
        with np.load(path) as d:
            arrays = {k: d[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            source = str(d["source"]) if "source" in d.files else "an unrecorded source"
        return arrays, (f"CIFAR-10 subset `{path.relative_to(REPO) if path.is_relative_to(REPO) else path}`: "
                        f"{len(arrays['y_train']):,} training and {len(arrays['y_test']):,} test images, class-stratified, "
                        f"from `{source}`" + (" (a JPEG-compressed copy of CIFAR-10)"
                                              if source.endswith("shared/data/cifar10.npz") else "")), path
    n_train, n_test = (64, 32) if tiny else (14000, 2000)
    (x_train, y_train), (x_test, y_test) = synthetic_images(n_train, 0), synthetic_images(n_test, 1)
    why = "tiny mode" if tiny else f"{path} not found (run `--prepare` here and carry its folder)"
    return ({"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test},
            f"**synthetic random images** ({why}): throughput figures hold, the cell's accuracies mean nothing", None)


# ---- the authors' way of feeding a batch ------------------------------------------------------------------


class PerImageDataset(torch.utils.data.Dataset):
    """One PIL image at a time: pad 4, random 32x32 crop, random flip, to a normalised float tensor."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, torch.as_tensor(labels)
        self.mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CIFAR_STD).view(3, 1, 1)
        try:  # exactly the authors' transforms when torchvision is there
            from torchvision import transforms
            self.transform = transforms.Compose([
                transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
        except ImportError:
            self.transform = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image, ImageOps

        image = Image.fromarray(self.images[i])
        if self.transform is not None:
            return self.transform(image), self.labels[i], i
        top, left = torch.randint(0, 9, (2,)).tolist()
        image = ImageOps.expand(image, border=4, fill=0).crop((left, top, left + 32, top + 32))
        if torch.rand(()) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - self.mean) / self.std, self.labels[i], i


def per_image_epoch_ips(method, dataset: PerImageDataset, device: torch.device, batch: int, workers: int) -> float:
    """Training images/s of one epoch fed by a DataLoader over ``dataset`` (workers start with the epoch)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))
    method.train()
    _sync(device)
    start = time.perf_counter()
    for x, y, index in loader:
        x, y, index = (t.to(device, non_blocking=True) for t in (x, y, index))
        method.train_step(x, y, index)
    _sync(device)
    return len(dataset) / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- the check -------------------------------------------------------------------------------------------


class Check:
    """Runs the parts in order against a time budget, rewriting the Markdown file after each."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.start = args, time.perf_counter()
        self.device = torch.device(args.device)
        self.tiny = args.tiny
        self.lines: list[str] = []
        self.figures: dict[str, Any] = {}
        self.failed: list[str] = []
        self.big, self.small = ("resnet8", "resnet8") if self.tiny else ("resnet34", "preact_resnet18")
        self.batch = 16 if self.tiny else 128
        self.eval_batch = 64 if self.tiny else 1024
        self.cell_overrides = ["model.name=resnet8", "optim.batch_size=16", "monitor.subset=null"] if self.tiny else []

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.start)

    def write(self, *lines: str) -> None:
        self.lines += lines
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        partial.write_text("\n".join(self.lines) + "\n")
        partial.replace(out)
        print("\n".join(lines), flush=True)

    def run(self) -> dict[str, Any]:
        """Every part in turn: a part that fails is written down with its error and the next one runs (the
        figures it needed are then missing from the later parts); in tiny mode (the tests) the error is raised."""
        arrays, data_note, data_file = load_images(Path(self.args.data), self.tiny)
        self.header(data_note)
        # evaluation throughput over 10,000 images (the test images repeated), as a Table 1 epoch evaluates
        repeat = 1 if self.tiny else math.ceil(10000 / len(arrays["y_test"]))
        x_eval, y_eval = (np.concatenate([arrays[k]] * repeat)[:10000] for k in ("x_test", "y_test"))
        train_data = arrays_data(arrays["x_train"], arrays["y_train"], x_eval, y_eval, self.device)
        parts = [lambda: self.throughput(train_data), lambda: self.pipeline(arrays, train_data), self.projections,
                 lambda: self.cell(arrays, data_note, data_file), self.compiled]
        for part in parts:
            try:
                part()
            except Exception as err:
                if self.tiny:
                    raise
                self.failed.append(f"{type(err).__name__}: {err}")
                tail = traceback.format_exc().strip().splitlines()[-6:]
                self.write("", f"**This part failed**: `{type(err).__name__}: {err}`", "", "```", *tail, "```")
        self.figures["failed"] = self.failed
        self.write("", f"Finished in {time.perf_counter() - self.start:.0f} s (budget {self.args.budget:.0f} s)"
                   f"{'; ' + str(len(self.failed)) + ' part(s) failed' if self.failed else ''}.", "",
                   "```json", json.dumps(self.figures, indent=1, sort_keys=True), "```")
        return self.figures

    def figure(self, key: str) -> dict[str, float]:
        if key not in self.figures:
            raise RuntimeError(f"needs the {key!r} figure of part 1, which was not measured")
        return self.figures[key]

    def header(self, data_note: str) -> None:
        d = self.device
        if d.type == "cuda":
            p = torch.cuda.get_device_properties(d)
            where = (f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
                     f"CUDA {torch.version.cuda}")
        else:
            where = f"CPU, {torch.get_num_threads()} torch threads"
        self.write(f"# GPU check ({'tiny CPU mode' if self.tiny else 'full'})", "",
                   f"`{' '.join(['python', 'benchmarks/gpu_check.py', *self.args.argv])}`, "
                   f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
                   f"- torch {torch.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPU cores",
                   f"- device: {where}", f"- data: {data_note}",
                   *(["- tiny mode: ResNet-8 stands in for ResNet-34 and PreAct ResNet-18, batches of 16, "
                      "1 measured epoch; no compile"] if self.tiny else []))

    def throughput(self, train_data) -> None:
        elr_plus = _elr_plus_settings()
        rows = [("ResNet-34", self.big, "elr", None), ("ResNet-34", self.big, "ce", None),
                ("PreAct ResNet-18", self.small, "elr", None), ("PreAct ResNet-18 x 2", self.small, "elr+", elr_plus)]
        self.write("", "## 1. Training throughput (bf16 + channels_last, the engine's on-device epoch)", "",
                   f"{len(train_data.train):,} training and {len(train_data.test):,} evaluated images an epoch, "
                   f"batch {self.batch}; after a warm-up epoch, the median of 3 measured epochs for ResNet-34 (the "
                   "ELR / CE ratio), 1 for the others. ELR+: two networks, EMA targets, mixup (Table 2 preset settings).",
                   "",
                   "| model | loss | train images/s | eval images/s | ms a step |", "|---|---|---|---|---|")
        for label, model, loss, plus in rows:
            m = measure(model, "bf16 + channels_last", train_data, self.device, loss="elr" if loss == "elr+" else loss,
                        batch=self.batch, eval_batch=self.eval_batch, epochs=3 if label == "ResNet-34" else 1,
                        elr_plus=plus)
            self.figures[f"{label} {loss}"] = m
            self.write(f"| {label} | {loss.upper() if loss != 'elr+' else 'ELR+'} | {m['train_ips']:,.0f} | "
                       f"{m['eval_ips']:,.0f} | {m['step_ms']:.2f} |")
        ratio = self.figure("ResNet-34 elr")["step_ms"] / self.figure("ResNet-34 ce")["step_ms"]
        plus_ratio = self.figure("PreAct ResNet-18 x 2 elr+")["step_ms"] / self.figure("PreAct ResNet-18 elr")["step_ms"]
        self.figures.update(elr_over_ce_step=ratio, elr_plus_over_elr_step=plus_ratio)
        self.write("", f"ELR / CE step time (ResNet-34): **{ratio:.2f}**; ELR+ / ELR step (PreAct ResNet-18): "
                   f"{plus_ratio:.2f}.")

    def pipeline(self, arrays, train_data) -> None:
        workers = self.args.workers
        dataset = PerImageDataset(arrays["x_train"], arrays["y_train"])
        method = build_method(self.big, "bf16 + channels_last", train_data, self.device, batch=self.batch)
        per_image_epoch_ips(method, dataset, self.device, self.batch, workers)  # warm-up (cuDNN's choices)
        per_image = per_image_epoch_ips(method, dataset, self.device, self.batch, workers)
        ours = self.figure("ResNet-34 elr")["train_ips"]
        self.figures.update(per_image_ips=per_image, on_device_ips=ours, pipeline_ratio=ours / per_image)
        kind = "torchvision transforms" if dataset.transform is not None else "Pillow + NumPy (no torchvision)"
        self.write("", "## 2. The data path: on the device against one PIL image at a time", "",
                   f"ResNet-34, ELR, bf16 + channels_last, batch {self.batch}, the same training images; the authors' way: "
                   f"{kind} in {workers} DataLoader workers, pinned memory (the second of two epochs, workers "
                   "started with it as the authors' loop does).", "",
                   "| data path | train images/s |", "|---|---|",
                   f"| on-device batches (elr) | {ours:,.0f} |", f"| per-image PIL, {workers} workers | {per_image:,.0f} |",
                   "", f"On-device / per-image: **{ours / per_image:.2f}x**.")

    def projections(self) -> None:
        t1 = self.figure("ResNet-34 elr")
        t2 = self.figure("PreAct ResNet-18 x 2 elr+")
        one = table1_minutes(t1["train_ips"], t1["eval_ips"])
        plus = table1_minutes(t2["train_ips"], t2["eval_ips"], epochs=TABLE2_EPOCHS)
        runs, epochs = sweep_epochs(REPO / "configs" / "sweeps" / "table1_cifar10.yaml")
        sweep_hours = epochs * one / TABLE1_EPOCHS / 60
        self.figures.update(table1_run_minutes=one, table2_run_minutes=plus, table1_sweep_hours=sweep_hours)
        self.write("", "## 3. Projected time of the paper's runs (bf16 + channels_last, no compile)", "",
                   "An epoch: 45,000 training images and 25,000 evaluated (10,000 test, the 5,000 of the validation split, "
                   "the 10,000 of the memorization monitor), at the rates of part 1.", "",
                   "| run | minutes |", "|---|---|",
                   f"| Table 1: ResNet-34, ELR, 150 epochs | {one:.1f} |",
                   f"| Table 1, the CIFAR-10 sweep (configs/sweeps/table1_cifar10.yaml): {runs} runs, {epochs:,} epochs "
                   f"(asymmetric runs 120, Forward's CE stage 1 first), at this ELR epoch | {sweep_hours:.1f} hours |",
                   f"| Table 2: ELR+, two PreAct ResNet-18, 200 epochs | {plus:.1f} |")

    def cell(self, arrays, data_note: str, data_file: Path | None) -> None:
        n_train = len(arrays["y_train"])
        val = round(0.1 * n_train)
        evaluated = len(arrays["y_test"]) + val + min(10000, n_train - val)
        rate = self.figure("ResNet-34 elr")
        epoch_s = 1.15 * ((n_train - val) / rate["train_ips"] + evaluated / rate["eval_ips"]) + 1.0  # + a checkpoint
        epochs = 1 if self.tiny else cell_epochs(self.left() - self.args.compile_reserve - 20, epoch_s)
        self.write("", "## 4. A shortened Table 1 cell: CE against ELR, ResNet-34, 40% symmetric noise", "",
                   f"configs/cifar10/ce_sym40.yaml and elr_sym40.yaml (lr 0.02, cosine restarts every 10 epochs, ELR "
                   f"lambda 3 beta 0.7) for **{epochs} epochs** (the time left, estimated at {epoch_s:.1f} s an epoch), "
                   f"on {data_note.split(':')[0]}: {n_train - val:,} noisy training images, a {val:,}-image noisy "
                   f"validation split, {len(arrays['y_test']):,} clean test images. Test accuracy (%) at the last "
                   "epoch, at the epoch the noisy validation split selects, the best seen (selects on test), and the "
                   "share of the wrongly-labelled training images predicted as their wrong label at the last epoch."
                   + (" Fewer than 10 epochs: the runs end inside their first cosine cycle, at a high learning rate; "
                      "read them as early learning only." if epochs < 10 else ""),
                   "", "| method | epochs | last | selected | best | memorized (last) | s a run |", "|---|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            npz = data_file  # the subset file itself; synthetic images are written out for elr's reader
            if npz is None:
                npz = Path(tmp) / "cell.npz"
                np.savez(npz, **arrays)
            curves = {}
            for label, preset in (("CE", "ce_sym40.yaml"), ("ELR", "elr_sym40.yaml")):
                overrides = ["data.dataset=npz", f"data.root={npz}", f"optim.epochs={epochs}", *self.cell_overrides]
                config = Config.load(REPO / "configs" / "cifar10" / preset, overrides)
                began = time.perf_counter()
                summary = train(config, Path(tmp) / label, device=self.args.device)
                seconds = time.perf_counter() - began
                curves[label] = read_metrics(Path(tmp) / label)
                selected = (summary.get("selected") or {}).get("test_acc")
                result = {"epochs": epochs, "last": summary["last"]["test_acc"], "selected": selected,
                          "best": summary["best_test_acc"], "memorized": summary["last"].get("mem_wrong_memorized"),
                          "seconds": seconds}
                self.figures[f"cell {label}"] = result
                self.write(f"| {label} | {epochs} | {100 * result['last']:.2f} | "
                           f"{'-' if selected is None else f'{100 * selected:.2f}'} | {100 * result['best']:.2f} | "
                           f"{_pct(result['memorized'])} | {seconds:.0f} |")
        marks = sorted({max(1, math.ceil(epochs * q)) for q in (0.25, 0.5, 0.75, 1.0)})
        self.write("", "Along the way (test accuracy / memorized, %):", "", "| epoch | " + " | ".join(curves) + " |",
                   "|---" * (len(curves) + 1) + "|",
                   *(f"| {e} | " + " | ".join(f"{100 * c[e - 1]['test_acc']:.1f} / {_pct(c[e - 1].get('mem_wrong_memorized'))}"
                                              for c in curves.values()) + " |" for e in marks))

    def compiled(self) -> None:
        self.write("", "## 5. torch.compile on (bf16 + channels_last + compile, synthetic images, child process)", "")
        if self.tiny or self.device.type != "cuda":
            self.write("Not measured: tiny mode or no CUDA device.")
            return
        models = {self.big: "ResNet-34", self.small: "PreAct ResNet-18"}
        limit = self.left() - 10
        self.write(f"{COMPILE_TRAIN:,} training and {COMPILE_EVAL:,} evaluated images (whole batches: no recompiles for a "
                   f"short last batch); both models in one child process, given the {max(limit, 0):.0f} s left.", "",
                   "| model | train images/s | eval images/s | vs no compile | Table 1 run, minutes |", "|---|---|---|---|---|")
        if limit < 30:
            self.write(*(f"| {label} | not measured: {max(limit, 0):.0f} s left |  |  |  |" for label in models.values()))
            return
        command = [sys.executable, str(HERE / "gpu_throughput.py"), "--device", str(self.device), "--models", *models,
                   "--settings", "compile", "--train-size", str(COMPILE_TRAIN), "--eval-size", str(COMPILE_EVAL),
                   "--epochs", "1", "--json"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
        missing = ""
        try:
            output = subprocess.run(command, capture_output=True, text=True, timeout=limit, env=env, check=True).stdout
        except subprocess.TimeoutExpired as err:  # what finished before the limit still counts
            output = _text(err.stdout)
            missing = f"not measured: compiling, a warm-up and a measured epoch went past the {limit:.0f} s left"
        except subprocess.CalledProcessError as err:
            output = _text(err.stdout)
            last = (_text(err.stderr).strip().splitlines() or [f"exit status {err.returncode}"])[-1]
            missing = f"failed: `{last}`"
            self.failed.append(f"compile: {last}")
        measured = {}
        for line in output.splitlines():
            try:
                m = json.loads(line)
            except ValueError:
                continue
            measured[m["model"]] = m
        for model, label in models.items():
            m = measured.get(model)
            if m is None:
                self.write(f"| {label} | {missing or 'not measured'} |  |  |  |")
                continue
            base = self.figures.get(f"{label} elr", {}).get("train_ips")
            self.figures[f"{label} compile"] = {k: m[k] for k in ("train_ips", "eval_ips", "step_ms")}
            speedup = "-" if base is None else f"{m['train_ips'] / base:.2f}x"
            self.write(f"| {label} | {m['train_ips']:,.0f} | {m['eval_ips']:,.0f} | {speedup} | "
                       f"{table1_minutes(m['train_ips'], m['eval_ips']):.1f} |")


def sweep_epochs(path: Path) -> tuple[int, int]:
    """(runs, epochs) of a sweep file: a Forward run with an estimated T trains its CE stage 1 first (twice)."""
    specs = Sweep.load(path, ["data.root=/unused"]).expand()
    return len(specs), sum(s.config.optim.epochs * (2 if s.config.loss.params.get("transition") == "estimate" else 1)
                           for s in specs)


def _text(output: str | bytes | None) -> str:
    """A child's captured output: bytes in a TimeoutExpired whatever ``text`` asked for."""
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def cell_epochs(seconds: float, epoch_seconds: float) -> int:
    """Epochs of each of the cell's two runs in ``seconds``: a whole number of the presets' 10-epoch cosine
    cycles when 10 or more fit (so a run ends at the cycle's low learning rate), at most Table 1's 150,
    at least 1."""
    fit = int(seconds / (2 * epoch_seconds))
    return min(150, 10 * (fit // 10)) if fit >= 10 else max(fit, 1)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _elr_plus_settings() -> dict[str, Any]:
    """ELR+'s parts as the Table 2 preset sets them (two networks, EMA ramp, mixup)."""
    config = Config.load(REPO / "configs" / "elr_plus" / "cifar10_sym80.yaml", ["data.root=/unused"])
    return {k: getattr(config.elr_plus, k) for k in config.elr_plus.__dataclass_fields__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", action="store_true", help="write the CIFAR-10 subset to --data and stop")
    parser.add_argument("--source", default=str(SOURCE), help="--prepare: the CIFAR-10 npz (default: %(default)s)")
    parser.add_argument("--train-images", type=int, default=14000, help="--prepare: training images (default: %(default)s)")
    parser.add_argument("--test-images", type=int, default=2000, help="--prepare: test images (default: %(default)s)")
    parser.add_argument("--data", default=str(SUBSET), help="the subset file (default: %(default)s)")
    parser.add_argument("--out", default="gpu_check.md", help="the Markdown file written (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=280.0, help="seconds for the whole check (default: %(default)s)")
    parser.add_argument("--compile-reserve", type=float, default=130.0,
                        help="seconds kept for part 5 when sizing the cell (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of the per-image path (default: 8, tiny mode 2)")
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: synthetic images, ResNet-8, a few batches")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.prepare:
        done = prepare(Path(args.source), Path(args.data), args.train_images, args.test_images)
        print(f"wrote {done['path']}: {done['train']} training and {done['test']} test images, {done['mib']:.1f} MiB; "
              f"carry its folder to the GPU machine")
        return 0
    if args.workers is None:
        args.workers = 2 if args.tiny else 8
    if args.workers < 0 or args.budget <= 0:
        parser.error("--workers must be >= 0 and --budget > 0")
    return 1 if Check(args).run()["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
