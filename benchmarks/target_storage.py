"""ELR target storage at 100 classes: dense float32 vs float16 vs bfloat16 vs top-k, same runs otherwise.

Synthetic data (no download): 100 Gaussian classes in 32 dimensions, 20,000 training and 10,000 test
examples, symmetric 40% label noise, an MLP (256-256), ELR (lam 3, beta 0.7), 30 epochs, cosine lr.
CE is the reference that shows the noise matters. Every storage trains the same seeds through the engine; the script prints the final and the
validation-selected test accuracy (mean over seeds), the difference to dense float32, bytes per
example and seconds per epoch.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/target_storage.py            # ~5 min on 2 cores
    .venv/bin/python benchmarks/target_storage.py --seeds 0 --epochs 5           # quick look
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from elr.config import Config
from elr.losses import ELRLoss
from elr.runs import train

VARIANTS = {
    "dense float32": {},
    "dense float16": {"target_dtype": "float16"},
    "dense bfloat16": {"target_dtype": "bfloat16"},
    "topk k=10": {"target_storage": "topk", "target_k": 10},
    "topk k=3": {"target_storage": "topk", "target_k": 3},
    "CE (reference, no targets)": {"name": "ce"},
}


def make_data(path: Path, classes: int = 100, dim: int = 32, train: int = 20000, test: int = 10000,
              spread: float = 1.5, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim)).astype(np.float32)

    def draw(n):
        y = np.arange(n) % classes
        rng.shuffle(y)
        return (centers[y] + spread * rng.standard_normal((n, dim))).astype(np.float32), y.astype(np.int64)

    x_train, y_train = draw(train)
    x_test, y_test = draw(test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def config(path: Path, seed: int, epochs: int, loss: dict) -> Config:
    return Config.from_dict({
        "seed": seed,
        "data": {"dataset": "npz", "root": str(path), "val_fraction": 0.1},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": "mlp", "hidden": [256, 256]},
        "loss": loss if loss.get("name") == "ce" else {"name": "elr", "lam": 3.0, "beta": 0.7, **loss},
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "epochs": epochs,
                  "schedule": "cosine"},
        "monitor": {"memorization": True, "subset": 2000},
        "device": "cpu",
    }).validate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; seeds {args.seeds}, {args.epochs} epochs")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "gauss100.npz"
        make_data(data)
        results: dict[str, dict] = {}
        for seed in args.seeds:  # seeds outermost, variants interleaved: drifts in machine load hit all alike
            for name, loss in VARIANTS.items():
                out = Path(tmp) / f"{name.replace(' ', '_')}_{seed}"
                start = time.perf_counter()
                summary = train(config(data, seed, args.epochs, loss), out)
                r = results.setdefault(name, {"last": [], "selected": [], "mem": [], "sec": []})
                r["last"].append(summary["last"]["test_acc"])
                r["selected"].append(summary["selected"]["test_acc"])
                r["mem"].append(summary["last"].get("mem_wrong_memorized", float("nan")))
                r["sec"].append((time.perf_counter() - start) / args.epochs)
                print(json.dumps({"variant": name, "seed": seed, "last": summary["last"]["test_acc"],
                                  "selected": summary["selected"]["test_acc"]}), flush=True)
    base_last = np.mean(results["dense float32"]["last"])
    base_sel = np.mean(results["dense float32"]["selected"])
    print("\n| targets | bytes/example (100 classes) | test acc last | Δ vs float32 | test acc selected | Δ | "
          "memorized (last) | s/epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for name, loss in VARIANTS.items():
        r = results[name]
        nbytes = 0 if loss.get("name") == "ce" else ELRLoss(1, 100, **loss).target_bytes_per_example
        last, sel = 100 * np.mean(r["last"]), 100 * np.mean(r["selected"])
        print(f"| {name} | {nbytes} | {last:.2f} ± {100 * np.std(r['last']):.2f} | {last - 100 * base_last:+.2f} | "
              f"{sel:.2f} | {sel - 100 * base_sel:+.2f} | {np.mean(r['mem']):.3f} | {np.mean(r['sec']):.2f} |")


if __name__ == "__main__":
    main()
