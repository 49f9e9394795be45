"""Training and evaluation throughput of the engine's GPU path, and the projected time of a Table 1 run.

The data path is the engine's own: the whole training set on the device as uint8, crop+flip drawn
per batch and applied on the device, ELR with its target bank on the device, loss and accuracy
accumulated on the device and read once per epoch. Each setting trains one warm-up epoch, then
measures ``--epochs`` epochs (``Engine.run_epoch``: training and evaluation timed apart).
Settings (``--settings``): plain float32, bf16 autocast + channels_last (the engine's CUDA default),
and ``compile``: the same plus ``torch.compile``. Projection for one Table 1 run: 150 epochs x
(45,000 training images / training rate + 25,000 evaluated images / evaluation rate: the 10,000 test
images, the 5,000 of the validation split and the 10,000 of the memorization monitor).

    .venv/bin/python benchmarks/gpu_throughput.py --device cuda --compile      # on a GPU
    .venv/bin/python benchmarks/gpu_throughput.py --device cpu --train-size 512 --models resnet8   # smoke test

Synthetic CIFAR-shaped data (random uint8 images): throughput does not depend on the pixels.
``benchmarks/gpu_check.py`` (the prepared one-command GPU check) builds on :func:`measure`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import numpy as np
import torch

from elr.config import MonitorConfig, OptimConfig
from elr.data import InMemoryDataset, TrainData
from elr.elr_plus import ELRPlus
from elr.engine import Engine
from elr.losses import ELRLoss, create_loss
from elr.methods import Runtime, Standard
from elr.models import create_model

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
SETTINGS = {  # name -> (bf16 autocast + channels_last, torch.compile)
    "float32": (False, False),
    "bf16 + channels_last": (True, False),
    "bf16 + channels_last + compile": (True, True),
}
SETTING_FLAGS = {"float32": "float32", "bf16": "bf16 + channels_last", "compile": "bf16 + channels_last + compile"}
TABLE1_EPOCHS, TABLE1_TRAIN, TABLE1_EVAL = 150, 45000, 25000


def table1_minutes(train_ips: float, eval_ips: float, epochs: int = TABLE1_EPOCHS) -> float:
    """Minutes of one run of ``epochs`` epochs of 45,000 training and 25,000 evaluated images."""
    return epochs * (TABLE1_TRAIN / train_ips + TABLE1_EVAL / eval_ips) / 60


def arrays_data(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                device: torch.device, num_classes: int = 10) -> TrainData:
    """uint8 images (N, 32, 32, 3) and labels as the engine's on-device data: training set augmented."""
    common = {"mean": CIFAR_MEAN, "std": CIFAR_STD, "num_classes": num_classes}
    train = InMemoryDataset(x_train, y_train, augment=True, **common).to(device)
    test = InMemoryDataset(x_test, y_test, **common).to(device)
    return TrainData(train=train, test=test, num_classes=num_classes)


def synthetic_images(n: int, seed: int = 0, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random uint8 CIFAR-shaped images and labels."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, num_classes, size=n).astype(np.int64))


def data(n_train: int, n_eval: int, device: torch.device) -> TrainData:
    return arrays_data(*synthetic_images(n_train, 0), *synthetic_images(n_eval, 1), device)


def build_method(model_name: str, setting: str, train_data: TrainData, device: torch.device, *, loss: str = "elr",
                 batch: int = 128, elr_plus: dict[str, Any] | None = None) -> Standard | ELRPlus:
    """A fresh method as the engine trains it: ``loss`` ``elr`` or ``ce``; ``elr_plus``: ELR+'s settings
    (two networks when ``networks`` is 2) instead of one network."""
    fast, compiled = SETTINGS[setting]
    runtime = Runtime(device, torch.bfloat16 if fast else None, fast, compile=compiled)
    n, k = len(train_data.train), train_data.num_classes
    check = device.type != "cuda"  # value checks read back to the host every step: off on CUDA, as in a run
    torch.manual_seed(0)
    if elr_plus is not None:
        settings = dict(elr_plus)
        count = settings.pop("networks", 2)
        models = [create_model(model_name, k) for _ in range(count)]
        losses = [ELRLoss(n, k, check_values=check) for _ in range(count)]
        return ELRPlus(models, losses, _optim(batch), runtime, **settings)
    criterion = ELRLoss(n, k, check_values=check) if loss == "elr" else create_loss(loss, num_classes=k)
    return Standard(create_model(model_name, k), criterion, _optim(batch), runtime)


def _optim(batch: int) -> OptimConfig:
    return OptimConfig(lr=0.02, batch_size=batch, epochs=1000, schedule="cosine")


def measure(model_name: str, setting: str, train_data: TrainData, device: torch.device, *, loss: str = "elr",
            batch: int = 128, eval_batch: int = 1024, epochs: int = 2,
            elr_plus: dict[str, Any] | None = None) -> dict[str, float]:
    """Training and evaluation images/s and the mean training step in ms: medians over ``epochs``
    epochs of :meth:`Engine.run_epoch` after one warm-up epoch (and compilation)."""
    method = build_method(model_name, setting, train_data, device, loss=loss, batch=batch, elr_plus=elr_plus)
    engine = Engine(method, train_data, optim=_optim(batch), monitor=MonitorConfig(memorization=False),
                    eval_batch_size=eval_batch, seed=0)
    engine.run_epoch()  # warm-up (and compilation)
    records = [engine.run_epoch() for _ in range(epochs)]
    n_train, n_eval = len(train_data.train), len(train_data.test)
    steps = train_data.train.num_batches(batch)
    train_s = statistics.median(r["train_seconds"] for r in records)
    return {"train_ips": n_train / train_s, "eval_ips": n_eval / statistics.median(r["eval_seconds"] for r in records),
            "step_ms": 1000 * train_s / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["resnet34", "preact_resnet18"])
    parser.add_argument("--settings", nargs="+", choices=list(SETTING_FLAGS), default=["float32", "bf16"],
                        help="float32; bf16 (+ channels_last); compile (bf16 + channels_last + torch.compile)")
    parser.add_argument("--compile", action="store_true", help="also measure with torch.compile (= --settings ... compile)")
    parser.add_argument("--train-size", type=int, default=45000)
    parser.add_argument("--eval-size", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--eval-batch", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per setting (after one warm-up)")
    parser.add_argument("--json", action="store_true", help="one JSON object a line instead of the Markdown table")
    args = parser.parse_args()
    device = torch.device(args.device)
    settings = [SETTING_FLAGS[s] for s in dict.fromkeys(args.settings + (["compile"] if args.compile else []))]
    train_data = data(args.train_size, args.eval_size, device)
    if not args.json:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"torch {torch.__version__}, device: {name}; {args.train_size} training images, batch {args.batch}, "
              f"eval batch {args.eval_batch}; median of {args.epochs} epochs after 1 warm-up")
        print("\n| model | setting | train images/s | eval images/s | speed-up vs first setting | projected minutes, "
              "one Table 1 run (150 epochs) |")
        print("|---|---|---|---|---|---|")
    for model_name in args.models:
        base = None
        for setting in settings:
            m = measure(model_name, setting, train_data, device, batch=args.batch, eval_batch=args.eval_batch,
                        epochs=args.epochs)
            if args.json:
                print(json.dumps({"model": model_name, "setting": setting, **m}), flush=True)
                continue
            base = base or m["train_ips"]
            print(f"| {model_name} | {setting} | {m['train_ips']:,.0f} | {m['eval_ips']:,.0f} | "
                  f"{m['train_ips'] / base:.2f} | {table1_minutes(m['train_ips'], m['eval_ips']):.1f} |", flush=True)


if __name__ == "__main__":
    main()
