"""Cost of the engine around the network: one ELR training epoch vs a bare loop on pre-made tensors.

The engine epoch is the real thing (``Engine.run_epoch``): batches drawn from the in-memory set,
crop+flip augmentation, per-batch learning rate, ELR with its target bank, loss and accuracy
accumulated on the device, checkpoint off (no run directory), memorization monitor off. The bare
loop runs the same network's forward, cross entropy, backward and SGD step on tensors made once,
with the same batch count and shapes. Epochs alternate (engine, bare, bare, engine, ...) and the
medians are compared. A second engine with the memorization monitor on gives the evaluation cost
(test set, noisy validation split, monitor subset), reported beside the training epoch.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/epoch_overhead.py      # ~4 min on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from elr.build import build_method, resolve_runtime
from elr.config import Config
from elr.engine import Engine
from elr.methods import make_sgd
from elr.models import create_model
from elr.prepare import derived_seeds, prepare_data

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10.npz"


def make_engine(args, memorization: bool) -> tuple[Engine, Config]:
    config = Config.from_dict({
        "seed": 0,
        "data": {"dataset": "npz", "root": str(args.data), "train_size": args.train_size, "val_fraction": 0.1,
                 "augment": True},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": args.model},
        "loss": {"name": "elr", "lam": 3.0, "beta": 0.7},
        "optim": {"lr": 0.02, "batch_size": args.batch, "epochs": 1000, "schedule": "cosine"},
        "monitor": {"memorization": memorization, "subset": 2000},
        "eval_batch_size": args.eval_batch,
        "device": args.device,
    }).validate()
    runtime = resolve_runtime(config)
    prepared = prepare_data(config, runtime.device)
    method = build_method(config, prepared, runtime)
    engine = Engine(method, prepared.data, optim=config.optim, monitor=config.monitor,
                    eval_batch_size=config.eval_batch_size, seed=derived_seeds(0)["train"])
    return engine, config


def bare_epoch(model, optimizer, batches, device) -> float:
    model.train()
    start = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    float(loss.detach())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="CIFAR-10 .npz (x_train uint8 N x 32 x 32 x 3, ...)")
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--eval-batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4, help="measured epochs of each kind")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"--data: {args.data} not found (the CIFAR-10 .npz of ../shared/data)")

    engine, config = make_engine(args, memorization=False)
    monitored, _ = make_engine(args, memorization=True)
    device = engine.data.train.device
    n_train = len(engine.data.train)
    g = torch.Generator().manual_seed(0)
    full = n_train // args.batch
    shapes = [args.batch] * full + ([n_train - full * args.batch] if n_train % args.batch else [])
    batches = [(torch.randn(b, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (b,), generator=g).to(device))
               for b in shapes]
    torch.manual_seed(0)
    model = create_model(args.model, 10).to(device)
    optimizer = make_sgd(model, config.optim)

    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads; {args.model}, "
          f"{n_train} training images, batch {args.batch}; {args.rounds} measured epochs of each kind after 1 warm-up")
    engine.run_epoch(), monitored.run_epoch(), bare_epoch(model, optimizer, batches, device)  # warm-up
    eng, bare, eval_off, eval_on = [], [], [], []
    for r in range(args.rounds):
        pair = ("engine", "bare") if r % 2 == 0 else ("bare", "engine")
        for kind in pair:
            if kind == "engine":
                record = engine.run_epoch()
                eng.append(record["train_seconds"])
                eval_off.append(record["eval_seconds"])
            else:
                bare.append(bare_epoch(model, optimizer, batches, device))
        eval_on.append(monitored.run_epoch()["eval_seconds"])
    e, b = statistics.median(eng), statistics.median(bare)
    off, on = statistics.median(eval_off), statistics.median(eval_on)
    print("\n| measure | seconds | ratio |")
    print("|---|---|---|")
    print(f"| bare loop, one epoch | {b:.2f} | 1 |")
    print(f"| engine ELR training epoch (monitor off) | {e:.2f} | {e / b:.3f} x bare |")
    print(f"| evaluation: test {len(engine.data.test)} + validation {len(engine.data.val)} | {off:.2f} | "
          f"{off / e:.3f} x training epoch |")
    print(f"| evaluation with the memorization monitor (+2000 training images) | {on:.2f} | {on / off:.3f} x "
          f"evaluation without |")


if __name__ == "__main__":
    main()
