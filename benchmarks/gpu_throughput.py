"""Training and evaluation throughput of the engine's GPU path, and the projected time of a Table 1 run.

The data path is the engine's own: the whole training set on the device as uint8, crop+flip drawn
per batch and applied on the device, ELR with its target bank on the device, loss and accuracy
accumulated on the device and read once per epoch. Each setting trains one warm-up epoch, then
measures ``--epochs`` epochs (``Engine.run_epoch``: training and evaluation timed apart).
Settings: plain float32, bf16 autocast + channels_last (the engine's CUDA default), and with
``--compile`` the same plus ``torch.compile``. Projection for one Table 1 run: 150 epochs x
(45,000 training images / training rate + 15,000 evaluated images / evaluation rate).

    .venv/bin/python benchmarks/gpu_throughput.py --device cuda --compile      # on a GPU
    .venv/bin/python benchmarks/gpu_throughput.py --device cpu --train-size 512 --models resnet8   # smoke test

Synthetic CIFAR-shaped data (random uint8 images): throughput does not depend on the pixels.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from elr.config import MonitorConfig, OptimConfig
from elr.data import InMemoryDataset, TrainData
from elr.engine import Engine
from elr.losses import ELRLoss
from elr.methods import Runtime, Standard
from elr.models import create_model

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def data(n_train: int, n_eval: int, device: torch.device) -> TrainData:
    g = torch.Generator().manual_seed(0)

    def images(n):
        return torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)

    def labels(n):
        return torch.randint(0, 10, (n,), generator=g)

    common = {"mean": CIFAR_MEAN, "std": CIFAR_STD, "num_classes": 10}
    train = InMemoryDataset(images(n_train), labels(n_train), augment=True, **common).to(device)
    test = InMemoryDataset(images(n_eval), labels(n_eval), **common).to(device)
    return TrainData(train=train, test=test, num_classes=10)


def measure(model_name: str, setting: str, args, train_data: TrainData, device: torch.device) -> tuple[float, float]:
    """(training images/s, evaluation images/s), medians over the measured epochs."""
    fast = setting != "float32"
    runtime = Runtime(device, torch.bfloat16 if fast else None, fast, compile="compile" in setting)
    torch.manual_seed(0)
    model = create_model(model_name, 10)
    loss = ELRLoss(len(train_data.train), 10, check_values=device.type != "cuda")
    optim = OptimConfig(lr=0.02, batch_size=args.batch, epochs=1000, schedule="cosine")
    method = Standard(model, loss, optim, runtime)
    engine = Engine(method, train_data, optim=optim, monitor=MonitorConfig(memorization=False),
                    eval_batch_size=args.eval_batch, seed=0)
    engine.run_epoch()  # warm-up (and compilation)
    train_rate, eval_rate = [], []
    for _ in range(args.epochs):
        record = engine.run_epoch()
        train_rate.append(len(train_data.train) / record["train_seconds"])
        eval_rate.append(len(train_data.test) / record["eval_seconds"])
    return statistics.median(train_rate), statistics.median(eval_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["resnet34", "preact_resnet18"])
    parser.add_argument("--train-size", type=int, default=45000)
    parser.add_argument("--eval-size", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--eval-batch", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per setting (after one warm-up)")
    parser.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device: {name}; {args.train_size} training images, batch {args.batch}, "
          f"eval batch {args.eval_batch}; median of {args.epochs} epochs after 1 warm-up")
    settings = ["float32", "bf16 + channels_last"] + (["bf16 + channels_last + compile"] if args.compile else [])
    train_data = data(args.train_size, args.eval_size, device)
    print("\n| model | setting | train images/s | eval images/s | speed-up vs float32 | projected minutes, "
          "one Table 1 run (150 epochs) |")
    print("|---|---|---|---|---|---|")
    for model_name in args.models:
        base = None
        for setting in settings:
            train_ips, eval_ips = measure(model_name, setting, args, train_data, device)
            base = base or train_ips
            minutes = 150 * (45000 / train_ips + 15000 / eval_ips) / 60
            print(f"| {model_name} | {setting} | {train_ips:,.0f} | {eval_ips:,.0f} | {train_ips / base:.2f} | "
                  f"{minutes:.1f} |", flush=True)


if __name__ == "__main__":
    main()
