"""Cost of one training step: CE vs ELR vs ELR+, same model, same batch, measured interleaved.

Each method is the engine's own (``Standard`` with ``CrossEntropyLoss`` or ``ELRLoss``, and
``ELRPlus`` with two networks, weight averaging and mixup), built from the same initial weights and
fed the same batch with fresh random dataset positions (so ELR gathers and scatters rows of a
50,000-example target bank as in training). Rounds run the methods in rotating order (A B C, B C A,
...); after the warm-up rounds the median step time of each method is reported with the ratios.
ELR+ trains two networks and updates two EMA copies, so ~2x CE is its expected cost; the goal of
ELR / CE <= 1.03 is about the regulariser and its bookkeeping.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/step_overhead.py                  # resnet8 and resnet18
    .venv/bin/python benchmarks/step_overhead.py --models resnet34 --device cuda     # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from elr.config import OptimConfig
from elr.elr_plus import ELRPlus
from elr.losses import CrossEntropyLoss, ELRLoss
from elr.methods import Runtime, Standard
from elr.models import create_model

NUM_EXAMPLES = 50_000


def build(name: str, model_name: str, classes: int, runtime: Runtime, check_values: bool):
    optim = OptimConfig(lr=0.01, momentum=0.9, weight_decay=5e-4)

    def net(seed: int = 0):
        torch.manual_seed(seed)
        return create_model(model_name, classes)

    def elr():
        return ELRLoss(NUM_EXAMPLES, classes, check_values=check_values)

    if name == "CE":
        return Standard(net(), CrossEntropyLoss(classes, check_values=check_values), optim, runtime)
    if name == "ELR":
        return Standard(net(), elr(), optim, runtime)
    return ELRPlus([net(0), net(1)], [elr(), elr()], optim, runtime, seed=0, ema_ramp_steps=0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model_name: str, args, runtime: Runtime) -> dict[str, float]:
    classes, device = args.classes, runtime.device
    names = ["CE", "ELR", "ELR+"]
    methods = {n: build(n, model_name, classes, runtime, check_values=device.type != "cuda") for n in names}
    for m in methods.values():
        m.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, classes, (args.batch,), generator=g).to(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.warmup + args.rounds):
        order = names[r % 3:] + names[:r % 3]
        for n in order:
            index = torch.randperm(NUM_EXAMPLES, generator=g)[: args.batch].to(device)
            sync(device)
            start = time.perf_counter()
            loss, _ = methods[n].train_step(x, y, index)
            float(loss.detach())  # the step is done when its loss can be read
            sync(device)
            if r >= args.warmup:
                times[n].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet8", "resnet18"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=25, help="measured rounds (each runs every method once)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    runtime = Runtime(device, torch.bfloat16 if device.type == "cuda" else None, device.type == "cuda")
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.classes} classes, median of {args.rounds} interleaved rounds after {args.warmup} warm-up")
    print("\n| model | CE ms/step | ELR ms/step | ELR+ ms/step | ELR / CE | ELR+ / CE |")
    print("|---|---|---|---|---|---|")
    for model_name in args.models:
        t = measure(model_name, args, runtime)
        print(f"| {model_name} | {1e3 * t['CE']:.1f} | {1e3 * t['ELR']:.1f} | {1e3 * t['ELR+']:.1f} | "
              f"{t['ELR'] / t['CE']:.3f} | {t['ELR+'] / t['CE']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
