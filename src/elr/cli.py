"""The ``elr`` command: parses arguments, calls the library, formats what it returns."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class TerminalProgress:
    """Bars on a terminal (tqdm); one concise line per epoch otherwise."""

    def __init__(self, label: str = "", stream=None) -> None:
        self.label = f"{label} " if label else ""
        self.stream = stream or sys.stderr
        self.bars = self.stream.isatty()
        self._bar = None

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        if self.bars:
            from tqdm import tqdm

            self._bar = tqdm(total=batches, desc=f"{self.label}epoch {epoch}/{epochs}", leave=False,
                             file=self.stream, unit="batch")
        self._epochs = epochs

    def batch_end(self) -> None:
        if self._bar is not None:
            self._bar.update()

    def epoch_end(self, record: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        parts = [f"{self.label}epoch {record['epoch']:>3}/{self._epochs}",
                 f"loss {record['train_loss']:.4f}", f"test {100 * record['test_acc']:.2f}%"]
        if record.get("val_acc") is not None:
            parts.append(f"val {100 * record['val_acc']:.2f}%")
        if record.get("mem_wrong_memorized") is not None:
            parts.append(f"memorized {100 * record['mem_wrong_memorized']:.1f}%")
        parts.append(f"{record['seconds']:.1f}s")
        print("  ".join(parts), file=self.stream, flush=True)


def _default_out(config_path: str | None) -> Path:
    stem = Path(config_path).stem if config_path else "run"
    return Path("runs") / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _print_summary(summary: dict[str, Any]) -> None:
    last = summary["last"]
    print(f"last epoch ({last['epoch']}): test accuracy {100 * last['test_acc']:.2f}%")
    selected = summary.get("selected")
    if selected:
        print(f"selected by noisy validation accuracy (epoch {selected['epoch']}): "
              f"test accuracy {100 * selected['test_acc']:.2f}%")
    else:
        print("no validation split (data.val_fraction=0): nothing selected; report the last epoch")
    if last.get("mem_wrong_memorized") is not None:
        print(f"wrong labels memorized at the end: {100 * last['mem_wrong_memorized']:.1f}%")


def cmd_train(args: argparse.Namespace) -> int:
    from .config import Config
    from .runs import resume, train

    if args.resume:
        if args.config or args.overrides:
            raise ValueError("--resume takes only the run directory (the run's own config.yaml is used)")
        summary = resume(args.resume, progress=TerminalProgress(), device=args.device)
        out = Path(args.resume)
    else:
        if not args.config:
            raise ValueError("give --config FILE (see configs/) or --resume RUN_DIR")
        config = Config.load(args.config, args.overrides)
        out = Path(args.out) if args.out else _default_out(args.config)
        print(f"run directory: {out}", file=sys.stderr)
        summary = train(config, out, progress=TerminalProgress(), device=args.device)
    _print_summary(summary)
    print(f"wrote {out}")
    if not summary.get("plots"):
        print("no plots (install matplotlib: pip install 'elr[plot]')")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .runs import evaluate_run

    result = evaluate_run(args.run_dir, device=args.device)
    print(json.dumps(result, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    out = Path(args.out)
    print(f"Training CE and ELR on sklearn digits with 40% symmetric label noise ({args.epochs} epochs each)...",
          file=sys.stderr)
    result = run_demo(out, epochs=args.epochs, seed=args.seed, progress=lambda name: _QuietProgress(name))
    print()
    print("| method | test accuracy (last epoch) | peak test accuracy | wrong labels memorized |")
    print("|---|---|---|---|")
    for row in result["rows"]:
        mem = "n/a" if row["memorized"] is None else f"{100 * row['memorized']:.1f}%"
        print(f"| {row['method']} | {100 * row['test_acc']:.1f}% | {100 * row['best_test_acc']:.1f}% | {mem} |")
    print(f"\nrealised noise: {100 * result['rows'][0]['realised_noise']:.1f}% of training labels are wrong")
    print(f"wrote {result['summary']}" + "".join(f"\nwrote {p}" for p in result["plots"]))
    return 0


class _QuietProgress(TerminalProgress):
    """The demo prints one line every 20 epochs instead of every epoch."""

    def epoch_end(self, record: dict[str, Any]) -> None:
        if record["epoch"] % 20 == 0 or record["epoch"] == self._epochs:
            super().epoch_end(record)
        elif self._bar is not None:
            self._bar.close()
            self._bar = None


def cmd_theory(args: argparse.Namespace) -> int:
    from .config import apply_overrides
    from .theory import TheoryConfig, run

    raw = apply_overrides({}, args.overrides)
    known = TheoryConfig.__dataclass_fields__
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(known)}")
    config = TheoryConfig(**raw)
    result = run(config, args.out)
    for name in ("ce", "elr"):
        series = result[name]
        print(f"{name.upper():>3}: final test accuracy {series['test_acc'][-1]:.3f}, "
              f"memorized {series['memorized'][-1]:.3f}, "
              f"wrong-label accuracy peak {max(series['acc_wrong']):.3f} -> final {series['acc_wrong'][-1]:.3f}")
    print(f"wrote {args.out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .plots import plot_gradient_runs, plot_runs

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {plot_runs(args.run_dirs, out)}")
    gradients = plot_gradient_runs(args.run_dirs, out.with_name(f"{out.stem}_gradients{out.suffix}"))
    if gradients is not None:
        print(f"wrote {gradients}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="elr", description="Early-Learning Regularization for noisy labels.")
    parser.add_argument("--version", action="version", version=f"elr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages and show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a run from a config, or resume one")
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--out", help="run directory to create (default runs/<config>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.01")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint on its test set")
    p.add_argument("run_dir")
    p.add_argument("--device")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="CE vs ELR on digits with 40%% label noise (offline, ~1 minute)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("plot", help="Figure 1 (and Figure 2 when recorded) side by side for runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="figure1.png", help="PNG to write; Figure 2 goes beside it as *_gradients.png")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("theory", help="the linear model of Section 3: early learning, then memorization")
    p.add_argument("--out", default="runs/theory")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. n=1000 p=900 sigma=0.2")
    p.set_defaults(func=cmd_theory)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; resume with `elr train --resume RUN_DIR`", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
        if args.verbose or os.environ.get("ELR_DEBUG"):
            raise
        print(f"elr {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
