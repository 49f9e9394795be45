"""A whole epoch of a preset (training through the engine, then evaluation) against a bare training loop.

The engine epoch is the real thing (``Engine.run_epoch`` on the preset's data, model, loss, monitor
and evaluation; no run directory, so no checkpoint). The bare loop runs the same network's forward,
cross entropy, backward and SGD step on tensors made once, with the same batch count and shapes.
They alternate (engine, bare, bare, engine, ...) and the medians are compared. "Before" is the same
model's evaluation as the engine did it with the ``--before`` settings (default: evaluation batch
1024 and a 5,000-image memorization monitor, the preset before ``eval_batch_size: auto``), timed in
the same rounds; evaluation's logits do not depend on the batch size, only its speed does.

    .venv/bin/python benchmarks/epoch_overhead.py                      # configs/cpu/cifar10_elr_sym40.yaml
    .venv/bin/python benchmarks/epoch_overhead.py --config configs/cpu/bench_base.yaml threads=1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from elr.build import build_method, resolve_runtime
from elr.config import Config, locate_paths
from elr.engine import Engine, _predict_read, evaluate
from elr.methods import cpu_threads, make_sgd
from elr.models import create_model
from elr.prepare import derived_seeds, prepare_data

ROOT = Path(__file__).resolve().parents[1]


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


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def evaluation_parts(engine: Engine, batch: int) -> dict[str, float]:
    """Seconds of each part of the evaluation at ``batch`` images a batch."""
    method, data = engine.method, engine.data
    method.eval()
    parts = {f"test set ({len(data.test):,} images)": timed(lambda: evaluate(method, data.test, batch))}
    if data.val is not None and len(data.val):
        parts[f"validation split ({len(data.val):,})"] = timed(lambda: evaluate(method, data.val, batch))
    if engine._monitor_set is not None:
        subset = engine._monitor_set[0]
        parts[f"memorization monitor ({len(subset):,} training images)"] = timed(
            lambda: _predict_read(method, subset, batch))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu" / "cifar10_elr_sym40.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--rounds", type=int, default=3, help="measured epochs of each kind")
    parser.add_argument("--before", nargs="*", default=["eval_batch_size=1024", "monitor.subset=5000"],
                        metavar="KEY=VALUE", help="the evaluation settings compared against (evaluation only)")
    args = parser.parse_args()
    config = locate_paths(Config.load(args.config, args.overrides), args.config.parent)
    before = Config.load(args.config, [*args.overrides, *args.before])
    runtime = resolve_runtime(config)
    prepared = prepare_data(config, runtime.device)
    method = build_method(config, prepared, runtime)
    train = prepared.data.train
    eval_batch, old_batch = config.eval_batch_for(runtime.device.type), before.eval_batch_for(runtime.device.type)
    seed = derived_seeds(config.seed)["train"]
    engine = Engine(method, prepared.data, optim=config.optim, monitor=config.monitor, eval_batch_size=eval_batch,
                    seed=seed)
    old = Engine(method, prepared.data, optim=config.optim, monitor=before.monitor, eval_batch_size=old_batch, seed=seed)
    device, n_train, b = train.device, len(train), config.optim.batch_size
    g = torch.Generator().manual_seed(0)
    shapes = [b] * (n_train // b) + ([n_train % b] if n_train % b else [])
    batches = [(torch.randn(s, *train.sample_shape, generator=g).to(device),
                torch.randint(0, prepared.data.num_classes, (s,), generator=g).to(device)) for s in shapes]
    torch.manual_seed(0)
    shape = {"in_channels": train.sample_shape[0]} if len(train.sample_shape) == 3 else \
        {"in_features": train.sample_shape[0]}
    model = create_model(config.model.name, prepared.data.num_classes, **{**config.model.params, **shape}).to(device)
    optimizer = make_sgd(model, config.optim)

    name = args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
    with cpu_threads(config.threads, device, train.sample_shape) as threads:
        print(f"{name} {' '.join(args.overrides)}: torch {torch.__version__}, {device}, {threads} threads; "
              f"{config.model.name}, {n_train:,} training images, batch {b}; evaluation batch {eval_batch} "
              f"(before: {' '.join(args.before)}); {args.rounds} measured epochs of each kind after 1 warm-up")
        engine.run_epoch(), bare_epoch(model, optimizer, batches, device)  # warm-up
        train_s, eval_s, bare_s, old_s, parts = [], [], [], [], []
        for r in range(args.rounds):
            for kind in (("engine", "bare") if r % 2 == 0 else ("bare", "engine")):
                if kind == "engine":
                    record = engine.run_epoch()
                    train_s.append(record["train_seconds"])
                    eval_s.append(record["eval_seconds"])
                else:
                    bare_s.append(bare_epoch(model, optimizer, batches, device))
            old_s.append(timed(old._evaluate))
            parts.append(evaluation_parts(engine, eval_batch))
    bare, trained, evaluated = statistics.median(bare_s), statistics.median(train_s), statistics.median(eval_s)
    then = statistics.median(old_s)
    print("\n| measure | seconds | ratio |")
    print("|---|---|---|")
    print(f"| bare loop, one epoch | {bare:.2f} | 1 |")
    print(f"| engine training epoch | {trained:.2f} | {trained / bare:.3f} x bare |")
    print(f"| evaluation | {evaluated:.2f} | {evaluated / trained:.3f} x training epoch |")
    print(f"| **whole epoch (training + evaluation) / bare loop** | {trained + evaluated:.2f} | "
          f"**{(trained + evaluated) / bare:.3f}** |")
    print(f"| before: evaluation with {' '.join(args.before)} | {then:.2f} | {then / trained:.3f} x training epoch |")
    print(f"| before: whole epoch / bare loop | {trained + then:.2f} | {(trained + then) / bare:.3f} |")
    print(f"\n| evaluation part (batch {eval_batch}) | seconds | share |")
    print("|---|---|---|")
    shares = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    for part, seconds in shares.items():
        print(f"| {part} | {seconds:.2f} | {seconds / sum(shares.values()):.0%} |")


if __name__ == "__main__":
    main()
