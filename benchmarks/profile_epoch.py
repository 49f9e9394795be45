"""Profile one ELR training epoch of the engine with the PyTorch profiler (CPU, small ResNet).

Prints the operators with the largest self time, and the share of the epoch spent in the parts
that are ours rather than the network's: the batch gather and augmentation, the ELR loss (its
target update and regulariser), the optimizer step and evaluation.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/profile_epoch.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from elr.build import build_method, resolve_runtime
from elr.config import Config
from elr.engine import Engine
from elr.prepare import derived_seeds, prepare_data

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10.npz"
PARTS = ("elr.batch", "elr.forward", "elr.loss", "elr.backward", "elr.optimizer", "elr.evaluate")


class Labelled:
    """Wraps the method and the dataset so that each part of a step shows up as a profiler range."""

    def __init__(self, method):
        self.method = method

    def __getattr__(self, name):
        return getattr(self.method, name)

    def train_step(self, x, y, index):
        m = self.method
        x = m.runtime.prepare_input(x)
        with record_function("elr.forward"), m.runtime.autocast():
            logits = m._forward(x)
        with record_function("elr.loss"):
            loss = m.loss(logits, y, index)
        with record_function("elr.backward"):
            m.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("elr.optimizer"):
            m.optimizer.step()
        return loss.detach(), (logits.detach().argmax(dim=1) == y).sum()


def labelled_batches(dataset):
    original = dataset.batches

    def batches(*args, **kwargs):
        iterator = original(*args, **kwargs)
        while True:
            with record_function("elr.batch"):
                item = next(iterator, None)
            if item is None:
                return
            yield item

    dataset.batches = batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    config = Config.from_dict({
        "seed": 0,
        "data": {"dataset": "npz", "root": str(args.data), "train_size": args.train_size, "val_fraction": 0.1,
                 "augment": True},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": args.model},
        "loss": {"name": "elr", "lam": 3.0, "beta": 0.7},
        "optim": {"lr": 0.02, "batch_size": 128, "epochs": 10, "schedule": "cosine"},
        "monitor": {"memorization": True, "subset": 2000},
        "eval_batch_size": 128,
        "device": "cpu",
    }).validate()
    runtime = resolve_runtime(config)
    prepared = prepare_data(config, runtime.device)
    method = Labelled(build_method(config, prepared, runtime))
    engine = Engine(method, prepared.data, optim=config.optim, monitor=config.monitor,
                    eval_batch_size=config.eval_batch_size, seed=derived_seeds(0)["train"])
    labelled_batches(prepared.data.train)  # after the engine took its monitor subset (a copy would inherit it)
    original_evaluate = engine._evaluate

    def evaluate():
        with record_function("elr.evaluate"):
            return original_evaluate()

    engine._evaluate = evaluate
    engine.run_epoch()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        record = engine.run_epoch()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.model}, "
          f"{len(prepared.data.train)} training images; epoch {record['seconds']:.2f} s "
          f"(training {record['train_seconds']:.2f} s, evaluation {record['eval_seconds']:.2f} s)\n")
    averages = prof.key_averages()
    total = record["seconds"] * 1e6
    print("| part | seconds | share of the epoch |")
    print("|---|---|---|")
    for part in PARTS:
        us = sum(e.cpu_time_total for e in averages if e.key == part)
        print(f"| {part} | {us / 1e6:.2f} | {us / total:.1%} |")
    print()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
