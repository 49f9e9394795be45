"""Cost of ELR's target synchronisation in a data-parallel step: the all-gather of (index, probs) vs the step.

Runs the configuration of tests/test_distributed.py (digits, MLP with one hidden layer of 32, ELR,
global batch 64 over 2 gloo processes on the CPU) through the library's own pieces: a ``Standard``
method whose model is wrapped in DistributedDataParallel and whose ELRLoss holds a ``TargetSync``.
Each step is timed whole, and the ``TargetSync`` call inside it (gather of the row counts, gather of
the payload, de-duplication) separately; medians over the steps are printed by rank 0, with the
bytes every rank receives per step, ``W * (B / W) * (8 + 4 C)`` (int64 index + float32 probs).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ddp_sync_cost.py      # launches itself with torchrun
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch


def measure(classes: int, batch: int, steps: int) -> tuple[float, float]:
    """Median step time and median TargetSync time, in seconds, on this rank."""
    from elr import distributed
    from elr.config import OptimConfig
    from elr.losses import ELRLoss
    from elr.methods import Runtime, Standard
    from elr.models import create_model

    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    examples = 1400
    torch.manual_seed(0)
    x_all = torch.randn(examples, 64)
    y_all = torch.randint(0, classes, (examples,))
    model = create_model("mlp", classes, in_features=64, hidden=[32])
    loss = ELRLoss(examples, classes)
    method = Standard(model, loss, OptimConfig(lr=0.05, batch_size=batch),
                      Runtime(torch.device("cpu"), distributed=True))
    distributed.attach_target_sync(method)
    sync_times: list[float] = []
    inner = loss.target_sync

    def timed(index, probs):
        start = time.perf_counter()
        out = inner(index, probs)
        sync_times.append(time.perf_counter() - start)
        return out

    loss.target_sync = timed
    generator = torch.Generator().manual_seed(1)
    step_times = []
    method.train()
    for _ in range(steps):
        order = torch.randperm(examples, generator=generator)[:batch]
        index = order[distributed.shard_positions(batch, rank, world)]
        torch.distributed.barrier()  # start every step together, so waiting on a slower rank is not counted
        start = time.perf_counter()
        method.train_step(x_all[index], y_all[index], index)
        step_times.append(time.perf_counter() - start)
    skip = steps // 10  # warm-up
    return statistics.median(step_times[skip:]), statistics.median(sync_times[skip:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64, help="global batch B")
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args()
    if "WORLD_SIZE" not in os.environ:  # relaunch under torchrun
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.procs}",
               __file__, f"--steps={args.steps}", f"--batch={args.batch}", f"--procs={args.procs}"]
        raise SystemExit(subprocess.call(cmd, env=env))
    torch.distributed.init_process_group("gloo")
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    if rank == 0:
        print(f"W={world} gloo processes on the CPU, global batch B={args.batch}, {args.steps} steps, medians")
        print(f"{'C':>5} {'step ms':>8} {'sync ms':>8} {'sync/step':>9} {'bytes in/step':>13}")
    for classes in (10, 100):
        step, sync = measure(classes, args.batch, args.steps)
        if rank == 0:
            moved = world * (args.batch // world) * (8 + 4 * classes)
            print(f"{classes:>5} {1e3 * step:8.3f} {1e3 * sync:8.3f} {sync / step:9.1%} {moved:13d}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
