"""Torch threads on a small CPU: one thread against all cores, on a quiet machine and with one core busy.

Two parts, each measured in one run with the variants interleaved (A B B A ...) and medians compared:

- ``demo``: wall time of ``elr demo`` (CE and ELR, 200 epochs each, a tiny MLP) in a fresh process,
  with elr's default threads against ``OMP_NUM_THREADS=1`` and, with ``--all-cores``, against
  ``--threads`` set to every core (torch's own default, what elr used before ``threads: auto``).
- ``steps``: seconds a training step (forward, cross entropy, backward, SGD) of each model at the
  batch size of its preset, with 1 thread and with every core, in this process.

"Busy" starts ``yes > /dev/null`` (one core spinning, like another user's job) and kills it by its
PID afterwards. Oversubscribed OpenMP threads spin-wait for the slowest thread, so a thread per core
on a machine where one core is taken can run slower than one thread.

    .venv/bin/python benchmarks/threads.py demo --all-cores   # ~10 min on 2 cores
    .venv/bin/python benchmarks/threads.py steps              # ~2 min
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path



@contextlib.contextmanager
def condition(name: str):
    """``quiet``: nothing else started; ``busy``: one core spinning in ``yes`` (killed by its PID)."""
    if name == "quiet":
        yield
        return
    spinner = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def demo_seconds(env_extra: dict[str, str], overrides: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(env_extra)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "elr", "demo", "--out", str(Path(tmp) / "demo"), *overrides],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start


def part_demo(args) -> None:
    cores = os.cpu_count() or 1
    variants = {"elr default threads": ({}, []), "OMP_NUM_THREADS=1": ({"OMP_NUM_THREADS": "1"}, [])}
    if args.all_cores:
        variants[f"--threads {cores}"] = ({}, ["--threads", str(cores)])
    print(f"elr demo (CE + ELR, 200 epochs each), {cores} cores, {args.rounds} rounds of each variant per condition")
    print("\n| condition | variant | median seconds | runs | ratio to OMP_NUM_THREADS=1 |\n|---|---|---|---|---|")
    for cond in args.conditions:
        times: dict[str, list[float]] = {name: [] for name in variants}
        with condition(cond):
            for r in range(args.rounds):
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                for name in order:
                    times[name].append(demo_seconds(*variants[name]))
        base = statistics.median(times["OMP_NUM_THREADS=1"])
        for name, values in times.items():
            m = statistics.median(values)
            print(f"| {cond} | {name} | {m:.1f} | {', '.join(f'{v:.1f}' for v in values)} | {m / base:.2f} |",
                  flush=True)


def part_steps(args) -> None:
    import torch
    import torch.nn.functional as F

    from elr.models import create_model

    cores = os.cpu_count() or 1
    cases = [("mlp", {"in_features": 64, "hidden": [512, 512]}, (64,), 64),  # the demo
             ("mlp", {"in_features": 512, "hidden": [256, 256]}, (512,), 32),  # ELRClassifier on embeddings
             ("resnet8", {}, (3, 32, 32), 128),  # the CPU presets
             ("preact_resnet18", {}, (3, 32, 32), 128)]  # ELR+ (GPU presets)
    cases = [c for c in cases if c[0] in args.models]
    print(f"seconds a training step, median of {args.steps} after 3 warm-up steps; {cores} cores")
    print("\n| condition | model | batch | 1 thread | "
          f"{cores} threads | {cores} threads / 1 thread |\n|---|---|---|---|---|---|")
    for cond in args.conditions:
        with condition(cond):
            for name, params, shape, batch in cases:
                torch.manual_seed(0)
                model = create_model(name, 10, **params)
                opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
                x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
                per: dict[int, list[float]] = {1: [], cores: []}
                for r in range(2 * args.steps + 6):
                    n = (1, cores)[(r // 2) % 2]  # 1 1 N N 1 1 ...: the first step after a switch is discarded
                    torch.set_num_threads(n)
                    start = time.perf_counter()
                    loss = F.cross_entropy(model(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if r >= 6 and r % 2 == 1:
                        per[n].append(time.perf_counter() - start)
                one, many = statistics.median(per[1]), statistics.median(per[cores])
                print(f"| {cond} | {name} {params or ''} | {batch} | {one * 1e3:.1f} ms | {many * 1e3:.1f} ms | "
                      f"{many / one:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("demo", "steps"))
    parser.add_argument("--rounds", type=int, default=2, help="demo: runs of each variant per condition")
    parser.add_argument("--steps", type=int, default=20, help="steps: measured steps of each thread count")
    parser.add_argument("--conditions", nargs="+", default=["quiet", "busy"], choices=("quiet", "busy"))
    parser.add_argument("--all-cores", action="store_true", help="demo: also run with threads = every core")
    parser.add_argument("--models", nargs="+", default=["mlp", "resnet8", "preact_resnet18"],
                        help="steps: the models measured")
    args = parser.parse_args()
    (part_demo if args.part == "demo" else part_steps)(args)


if __name__ == "__main__":
    main()
