"""The ``elr`` command: parses arguments, calls the library, formats what it returns."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from . import rundir, theory
from .config import OVERRIDE_RULES, Config, apply_overrides, describe_keys, locate_paths
from .demo import run_demo
from .detect import (TARGET_CHOICES, detect_label_issues, label_issue_report, read_run_evidence, resume_command,
                     suspect_images)
from .distributed import is_main_process
from .experiments import Sweep, plan_sweep, run_sweep
from .label_issues import CLEANLAB_FILTERS, cleanlab_filter
from .plots import MAX_SUSPECT_PANELS, plot_gradient_runs, plot_runs, plot_suspects
from .report import build_report, write_report
from .rundir import (CONFIG, LABEL_ISSUES_PLOT, NO_VERDICT_SOURCES, STAGE1, SUMMARY, TARGETS_SELECTED, holder_text, lock,
                     write_label_issues)
from .runs import evaluate_run, resume, run_curves
from .two_stage import train
from .version import __version__

EXIT_USAGE = 2


class TerminalProgress:
    """Bars on a terminal (tqdm): one for the run's epochs, one for the batches of the current epoch.

    Otherwise (a log file, CI) one concise line per epoch.
    """

    def __init__(self, label: str = "", stream=None, *, announce: bool = False) -> None:
        self.label = f"{label} " if label else ""
        self.stream = stream or sys.stderr
        self.bars = self.stream.isatty()
        self.announce = announce  # say where the run goes, or which epoch it resumes from
        self._announced: set[Path] = set()
        self._bar = None
        self._epoch_bar = None

    def fit_start(self, run_dir: Path | None, done: int, epochs: int) -> None:
        if not self.announce or run_dir is None:
            return
        stage = ""
        if run_dir.name == STAGE1:  # a two-stage run: its cross-entropy stage trains first, inside it
            stage = " (stage 1 of 2: cross entropy, to estimate the transition matrix)"
            self._announced.add(run_dir.parent)
        elif run_dir in self._announced:
            stage = " (stage 2 of 2)"
        if done == 0:
            line = f"run directory: {run_dir}{stage}"
        elif done < epochs:
            line = f"resuming {run_dir}{stage} from epoch {done + 1} of {epochs}"
        else:
            line = f"{run_dir} has trained all {epochs} epochs; writing its summary and plots again"
        print(line, file=self.stream, flush=True)

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        if self.bars:
            from tqdm import tqdm

            if self._epoch_bar is None:  # first epoch of this session (may be a resumed one)
                self._epoch_bar = tqdm(total=epochs, initial=epoch - 1, desc=f"{self.label}epochs", position=0,
                                       file=self.stream, unit="epoch")
            self._bar = tqdm(total=batches, desc=f"{self.label}epoch {epoch}/{epochs}", leave=False,
                             position=1, file=self.stream, unit="batch")
        self._epoch, self._epochs = epoch, epochs

    def eval_start(self, batches: int) -> None:
        """The training batches are done: the bar now counts the evaluation's batches."""
        if self._bar is not None:
            self._bar.reset(total=batches)
            self._bar.set_description(f"{self.label}epoch {self._epoch}/{self._epochs} evaluating", refresh=True)

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
        if record.get("det_auroc") is not None:
            parts.append(f"wrong-label AUROC {record['det_auroc']:.3f}")
        evaluation = f" (evaluation {record['eval_seconds']:.1f}s)" if "eval_seconds" in record else ""
        parts.append(f"{record['seconds']:.1f}s{evaluation}")
        line = "  ".join(parts)
        if self._epoch_bar is not None:
            self._epoch_bar.update()
            self._epoch_bar.write(line, file=self.stream)  # above the bars, which stay at the bottom
            if record["epoch"] >= self._epochs:
                self._epoch_bar.close()
                self._epoch_bar = None
        else:
            print(line, file=self.stream, flush=True)


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
    if last.get("det_auroc") is not None:
        at = [f"last epoch {last['det_auroc']:.3f}"]
        if selected and selected.get("det_auroc") is not None:
            at.append(f"selected epoch {selected['det_auroc']:.3f}")
        best = summary.get("best_det_auroc")
        if best:
            at.append(f"best {best['auroc']:.3f} at epoch {best['epoch']}")
        print(f"the targets' AUROC for the wrong labels: {', '.join(at)}")


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        if args.config or args.overrides:
            raise ValueError(f"--resume takes only the run directory (the run's own {CONFIG} is used)")
        out = Path(args.resume)
    else:
        if not args.config:
            raise ValueError("give --config FILE (see configs/) or --resume RUN_DIR")
        config = locate_paths(Config.load(args.config, args.overrides), Path(args.config).parent)
        out = Path(args.out) if args.out else _default_out(args.config)
    progress = TerminalProgress(announce=True)  # prints the run directory once it exists
    try:
        if args.resume:
            summary = resume(out, progress=progress, device=args.device)
        else:
            summary = train(config, out, progress=progress, device=args.device)
    except KeyboardInterrupt:
        if is_main_process():
            print(f"interrupted{_carry_on(out, args)}", file=sys.stderr)
        return 130
    except OSError as err:  # a full disk, a read-only --out, ...: what it left and how to carry on
        if isinstance(err, (FileNotFoundError, FileExistsError)) or not is_main_process():
            raise
        raise ValueError(f"{os_error_text(err)}; stopped{_carry_on(out, args)}") from err
    if not is_main_process():  # under torchrun rank 0 reports; the library already keeps the others quiet
        return 0
    _print_summary(summary)
    print(f"wrote {out}")
    if not summary.get("plots"):
        print("no plots (install matplotlib: pip install 'elr[plot]')")
    return 0


def _carry_on(out: Path, args: argparse.Namespace) -> str:
    """What a stopped ``elr train`` left in ``out`` and the command that carries on from there."""
    st = rundir.status(out)
    if st.state == rundir.RESUMABLE:
        return f"; continue with `elr train --resume {shlex.quote(str(out))}`"
    if st.state == rundir.FINISHED:
        return f" after the last epoch; {out} holds the finished run"
    if st.state == rundir.NEW:
        return f" before anything was written to {out}"
    if st.state == rundir.UNSTARTED and args.config:  # the same command, but into the same folder
        again = ["elr", "train", "--config", args.config, "--out", str(out), *args.overrides]
        return f" before the first checkpoint; start it again with `{shlex.join(again)}`"
    return f"; {out} is {st.state}"


def os_error_text(err: OSError) -> str:
    """An OSError in one line: the file, what went wrong, and what to do about a disk that refuses writes."""
    if err.strerror is None:  # raised by elr with a message of its own
        return str(err)
    text = f"{err.filename}: {err.strerror}" if err.filename is not None else err.strerror
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        text += " (free space, or choose a folder on another disk)"
    elif err.errno == errno.EROFS:
        text += " (choose a folder you can write)"
    return text


def cmd_eval(args: argparse.Namespace) -> int:
    result = evaluate_run(args.run_dir, device=args.device)
    print(json.dumps(result, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.epochs < 1:
        raise ValueError(f"--epochs must be a count >= 1, got {args.epochs}")
    if args.threads != "auto" and (not args.threads.isdigit() or int(args.threads) < 1):
        raise ValueError(f"--threads must be auto or a count >= 1, got {args.threads}")
    args.threads = args.threads if args.threads == "auto" else int(args.threads)
    print(f"Training CE and ELR on sklearn digits with 40% symmetric label noise ({args.epochs} epochs each)...",
          file=sys.stderr)
    try:
        result = run_demo(out, epochs=args.epochs, seed=args.seed, threads=args.threads,
                          progress=lambda name: _QuietProgress(name))
    except KeyboardInterrupt:
        print("interrupted; the same `elr demo` command continues where it stopped", file=sys.stderr)
        return 130
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
    config = theory.TheoryConfig.from_overrides(apply_overrides({}, args.overrides))
    result = theory.run(config, args.out)
    for name in ("ce", "elr"):
        series = result[name]
        print(f"{name.upper():>3}: final test accuracy {series['test_acc'][-1]:.3f}, "
              f"memorized {series['memorized'][-1]:.3f}, "
              f"wrong-label accuracy peak {max(series['acc_wrong']):.3f} -> final {series['acc_wrong'][-1]:.3f}")
    print(f"wrote {args.out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    curves = run_curves(args.run_dirs)
    print(f"wrote {plot_runs(curves, out)}")
    gradients = plot_gradient_runs(curves, out.with_name(f"{out.stem}_gradients{out.suffix}"))
    if gradients is not None:
        print(f"wrote {gradients}")
    return 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _cost_line(plan) -> str:
    pending = plan.pending
    if not pending:
        return "estimated cost: nothing left to train"
    epochs = {r.epochs_left for r in pending}
    size = (f"{len(pending)} runs x {epochs.pop()} epochs = {plan.epochs_left} epochs" if len(epochs) == 1
            else f"{len(pending)} runs, {plan.epochs_left} epochs in all")
    speeds = sorted({round(r.seconds_per_epoch, 1) for r in pending if r.seconds_per_epoch is not None})
    if not speeds:
        return f"estimated cost: {size}; time unknown (no run of the same setting measured yet)"
    speed = f"{speeds[0]} s/epoch" if len(speeds) == 1 else f"{speeds[0]}-{speeds[-1]} s/epoch"
    time_text = f"about {_duration(plan.estimated_seconds)} at {speed} measured from earlier runs"
    if plan.unknown_speed:
        time_text = f"at least {_duration(plan.estimated_seconds)} ({speed} measured); {plan.unknown_speed} runs of unknown speed"
    return f"estimated cost: {size}; {time_text}"


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise ValueError(f"--jobs must be a count >= 1, got {args.jobs}")
    sweep = Sweep.load(args.sweep, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / sweep.name
    plan = plan_sweep(sweep, out, only=args.only)  # validates every run before anything trains
    counts = ", ".join(f"{n} {status}" for status, n in plan.counts().items() if n)
    header = f"sweep {sweep.name}: {len(plan.runs)} runs in {out} ({counts})"
    if args.dry_run:
        width = max(len(r.name) for r in plan.runs)
        for r in plan.runs:
            detail = f"{r.epochs_left} epochs left" if r.status in ("new", "resume", "restart") else r.reason
            if r.holder is not None:
                detail += f" (being trained by another process: {holder_text(r.holder)})"
            print(f"{r.status:<8}  {r.name:<{width}}  {detail}".rstrip())
        print(header)
        print(_cost_line(plan))
        return EXIT_USAGE if plan.counts()["conflict"] else 0

    print(header, file=sys.stderr)
    print(_cost_line(plan), file=sys.stderr)
    total, started = len(plan.pending), []
    verbs = {"new": "training", "resume": "resuming", "restart": "restarting (killed before its first checkpoint)"}

    def on_start(run) -> None:
        started.append(run.name)
        verb = verbs[run.status] if args.jobs == 1 else f"queued ({run.status})"
        print(f"[{len(started)}/{total}] {run.name}: {verb}", file=sys.stderr, flush=True)

    def on_end(outcome) -> None:
        if outcome.result == "failed":
            print(f"FAILED {outcome.name}: {outcome.error}", file=sys.stderr, flush=True)
        elif outcome.result == "busy":
            print(f"left {outcome.name} to the process that holds it ({outcome.error})", file=sys.stderr, flush=True)
        elif outcome.result != "skipped" and args.jobs > 1:
            acc = outcome.summary["last"]["test_acc"]
            print(f"{outcome.result} {outcome.name}: test accuracy {100 * acc:.2f}%", file=sys.stderr, flush=True)

    try:
        result = run_sweep(sweep, out, jobs=args.jobs, device=args.device, only=args.only,
                           on_start=on_start, on_end=on_end,
                           progress=(lambda name: TerminalProgress(label=name)) if args.jobs == 1 else None)
    except KeyboardInterrupt:
        print("interrupted; run the same `elr sweep` command again to continue where it stopped", file=sys.stderr)
        return 130
    tally = {}
    for outcome in result.outcomes:
        tally[outcome.result] = tally.get(outcome.result, 0) + 1
    print(f"sweep {sweep.name}: " + ", ".join(f"{n} {k}" for k, n in tally.items()))
    for outcome in result.failed:
        print(f"failed: {outcome.name}: {outcome.error}")
    if tally.get("busy"):
        print(f"{tally['busy']} run(s) were being trained by another process and were left to it; "
              "`elr sweep --dry-run` shows when they are done")
    print(f"tabulate with: elr report {out}")
    return 1 if result.failed else 0


def cmd_detect(args: argparse.Namespace) -> int:
    if args.top < 0:
        raise ValueError(f"--top must be a count >= 0, got {args.top}")
    rule, _, filter_by = (args.rule or "").partition(":")
    if rule not in ("", "argmax", "threshold", "cleanlab") or (filter_by and rule != "cleanlab"):
        raise ValueError(f"--rule must be argmax, threshold, cleanlab or cleanlab:FILTER, got {args.rule!r}")
    if filter_by and filter_by not in CLEANLAB_FILTERS:
        raise ValueError(f"--rule cleanlab:FILTER takes one of cleanlab's filters ({', '.join(CLEANLAB_FILTERS)}), "
                         f"got {filter_by!r}")
    if args.threshold is not None and rule not in ("", "threshold"):
        raise ValueError(f"--threshold applies to --rule threshold (the {rule} rule has no threshold)")
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise ValueError(f"--threshold must lie in (0, 1], got {args.threshold}")
    rule = rule or ("threshold" if args.threshold is not None else "argmax")
    filter_by = filter_by or CLEANLAB_FILTERS[0]
    threshold = 0.5 if args.threshold is None else args.threshold
    if rule == "cleanlab":
        cleanlab_filter()  # missing: say so before a run is read or restored
    with lock(args.run_dir, create=False):  # not while another process resumes or rewrites the run
        evidence = read_run_evidence(args.run_dir, device=args.device, targets=args.targets)
        table = detect_label_issues(args.run_dir, score=args.score, rule=rule, threshold=threshold,
                                    filter_by=filter_by, evidence=evidence)
        report = label_issue_report(evidence, table)
        path = write_label_issues(args.run_dir, table)
        (Path(args.run_dir) / LABEL_ISSUES_PLOT).unlink(missing_ok=True)  # never beside a CSV it does not show
        picture = None if args.no_plot else _suspects_picture(Path(args.run_dir) / LABEL_ISSUES_PLOT, evidence,
                                                              table, args.top)
    n, flagged, src = len(table["index"]), report["flagged"], report["sources"]
    where = [f"ELR targets for {src['targets']}"]
    if src["held_out_model"]:
        whose = "selected epoch's " if report["selected"] else "" if report["from_checkpoint"] else "final "
        where.append(f"the {whose}model's held-out predictions for "
                     f"{src['held_out_model']}")
    if src["unreadable"]:
        where.append(f"no verdict for {src['unreadable']} unreadable images")
    if src["untrained"]:
        where.append(f"no verdict for {src['untrained']} examples no class-balanced draw had picked by then")
    print(f"{n} training labels of {args.run_dir}: " + ", ".join(where))
    epochs = report["epochs"] or "?"
    if report["selected"]:
        print(f"scored from the targets of epoch {report['epoch']} of {epochs}, the epoch the noisy validation "
              f"split selected{'' if report['finished'] else ' so far (the run is unfinished)'}")
    elif report["from_checkpoint"] and not report["finished"]:
        print(f"scored from the checkpoint of epoch {report['epoch']} of {epochs} (the run is unfinished; "
              f"its targets file is written when it finishes)")
    elif report["from_checkpoint"]:
        print(f"scored from the checkpoint of its last epoch, {report['epoch']} of {epochs} (the run has no "
              f"targets file; `{resume_command(args.run_dir)}` writes it without training again)")
    else:
        print(f"scored from the targets of its last epoch, {report['epoch']} of {epochs}")
    how = {"argmax": "another class more probable than the label", "threshold": f"{args.score} < {threshold:g}",
           "cleanlab": f"cleanlab.filter.find_label_issues, filter_by={filter_by}"}[rule]
    shown = f"cleanlab:{filter_by}" if rule == "cleanlab" else rule
    readable = n - src["unreadable"] - src["untrained"]
    print(f"flagged {flagged} ({100 * flagged / max(readable, 1):.1f}%) by --rule {shown} ({how})")
    if args.top and readable:
        print(f"\nmost likely wrong ({args.score}, lower is more suspect; flag: {shown} rule):")
        _print_suspects(table, min(args.top, readable))
    print("\nflagged per given class:")
    width = max(5, *(len(_class_text(r["label"], r["name"])) for r in report["per_class"]))
    print(f"  {'class':<{width}}  {'labels':>7}  {'flagged':>7}  {'share':>6}")
    for r in report["per_class"]:
        share = f"{100 * r['flagged'] / r['examples']:.1f}%" if r["examples"] else "-"
        print(f"  {_class_text(r['label'], r['name']):<{width}}  {r['examples']:>7}  {r['flagged']:>7}  {share:>6}")
    q = report["quality"]
    if q is not None:
        def text(v):
            return "n/a" if v is None else f"{v:.3f}"
        print(f"\nagainst the true labels ({q['wrong']} of {q['examples']} wrong): AUROC {text(q['auroc'])}, "
              f"average precision {text(q['average_precision'])}, flags: precision {text(q['precision'])}, "
              f"recall {text(q['recall'])}")
    print(f"wrote {path}")
    if picture:
        print(picture)
    return 0


def _suspects_picture(path: Path, evidence: Any, table: dict[str, Any], top: int) -> str | None:
    """Draw the top suspects at ``path``; return what to print about it (None: nothing to say)."""
    import numpy as np


    shown = min(top, MAX_SUSPECT_PANELS, int((~np.isin(table["source"], NO_VERDICT_SOURCES)).sum()))
    if shown == 0:
        return None
    try:
        images = suspect_images(evidence, table["index"][:shown])
        if images is None:
            return None  # feature vectors: nothing to look at
        plot_suspects(images, {k: v[:shown] for k, v in table.items()}, path, class_names=evidence.names)
    except (ImportError, OSError, ValueError) as err:  # the verdicts stand without it (moved data, no matplotlib)
        return f"no {path.name}: {err} (--no-plot skips the picture)"
    return f"wrote {path} (the top {shown} suspects)"


def _class_text(label: int, name: str | None) -> str:
    return str(label) if name is None or name == str(label) else f"{label} {name}"


def _print_suspects(table: dict[str, Any], k: int) -> None:
    named = "given_class" in table
    rows = []
    for i in range(k):
        given = _class_text(int(table["given_label"][i]), table["given_class"][i] if named else None)
        suggested = _class_text(int(table["suggested_label"][i]), table["suggested_class"][i] if named else None)
        where = str(table["path"][i]) if "path" in table else ""
        if "line" in table:
            where += f" (line {int(table['line'][i])})"
        rows.append((str(i + 1), str(int(table["index"][i])), given, suggested,
                     f"{table['score'][i]:.4g}", "yes" if table["is_issue"][i] else "no", str(table["source"][i]),
                     where))
    header = ("rank", "index", "given", "suggested", "score", "flag", "source", "file" if "path" in table else "")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        print("  " + "  ".join(v.rjust(w) if c < 2 else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths))).rstrip())


def cmd_report(args: argparse.Namespace) -> int:
    report = build_report(args.dirs, metric=args.metric)
    written = write_report(report, Path(args.out) if args.out else Path(args.dirs[0]))
    print(report.markdown(), end="")
    for key in ("markdown", "csv", "png"):
        if written[key] is not None:
            print(f"wrote {written[key]}", file=sys.stderr)
    for note in written["notes"]:
        print(note, file=sys.stderr)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in one line, like every other error of ``elr`` (no usage block)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, _usage_line(self.prog, message) + "\n")


def _usage_line(prog: str, message: str) -> str:
    return f"{prog}: error: {message} (see `{prog} --help`)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="elr", description="Early-Learning Regularization for noisy labels.")
    parser.add_argument("--version", action="version", version=f"elr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages and show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a run from a config, or resume one",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"{OVERRIDE_RULES}\n\n{describe_keys()}")
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--out", help="run directory to create (default runs/<config>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="config overrides, e.g. optim.lr=0.01")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint on its test set")
    p.add_argument("run_dir")
    p.add_argument("--device")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="CE vs ELR on digits with 40%% label noise (offline, ~1 min on 2 cores)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", default="auto", help="torch CPU threads (default auto: one, for this small MLP)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("plot", help="Figure 1 (and Figure 2 when recorded) side by side for runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="figure1.png", help="PNG to write; Figure 2 goes beside it as *_gradients.png")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("sweep", help="train every run of a sweep file (skips finished runs, resumes interrupted ones)")
    p.add_argument("sweep", metavar="SWEEP.yaml", help="sweep file (see configs/sweeps/)")
    p.add_argument("--out", help="sweep directory (default runs/<sweep name>)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process (default 1)")
    p.add_argument("--dry-run", action="store_true", help="list the runs, their status and the estimated cost; train nothing")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")
    p.add_argument("--only", action="append", metavar="PATTERN",
                   help="train only the runs whose name matches this shell-style pattern, e.g. 'ELR+*/*' "
                        "(repeatable; names as --dry-run lists them)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="applied to every run, e.g. data.root=/data/cifar")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="tables (Markdown, CSV) and a plot of finished runs: methods x noise, mean ± std over seeds")
    p.add_argument("dirs", nargs="+", metavar="DIR", help=f"sweep or run directories, searched recursively for {SUMMARY}")
    p.add_argument("--metric", choices=("last", "selected", "best"), default="last",
                   help="last epoch (default); selected by noisy validation; best test accuracy (selects on test: papers only)")
    p.add_argument("--out", help="where report.md/.csv/.png go (default: the first DIR)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("detect", help="rank the training labels most likely wrong, from an ELR or ELR+ run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="an ELR or ELR+ run (loss.name: elr), finished or not: an "
                                                      "unfinished run is scored from its last checkpoint")
    p.add_argument("--top", type=int, default=20, help=f"suspects to print and draw in {LABEL_ISSUES_PLOT} (default 20, "
                                                       f"at most 100 drawn; the CSV lists every example)")
    p.add_argument("--rule", metavar="RULE",
                   help="argmax (default): flag when another class is more probable than the label; threshold: "
                        "when the score is below --threshold; cleanlab[:FILTER]: what cleanlab's find_label_issues "
                        f"finds in the targets (FILTER: {CLEANLAB_FILTERS[0]} (default), "
                        f"{', '.join(CLEANLAB_FILTERS[1:])}; needs pip install 'elr[cleanlab]')")
    p.add_argument("--threshold", type=float, help="score below which a label is flagged (implies --rule "
                                                   "threshold; default 0.5)")
    p.add_argument("--score", choices=("self_confidence", "normalized_margin"), default="self_confidence",
                   help="self_confidence: the probability of the given label (default); normalized_margin: "
                        "(that minus the largest other + 1) / 2")
    p.add_argument("--targets", choices=TARGET_CHOICES, default="last",
                   help="whose targets to score: the last epoch's (default) or those of the epoch the noisy "
                        f"validation split selected ({TARGETS_SELECTED}; best when the targets memorize late)")
    p.add_argument("--no-plot", action="store_true", help=f"do not draw {LABEL_ISSUES_PLOT} (image data only)")
    p.add_argument("--device", help="where an unfinished run is restored to score it (default: the run's "
                                    "config.device); e.g. cpu for a run trained on a GPU")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("theory", help="the linear model of Section 3: early learning, then memorization")
    p.add_argument("--out", default="runs/theory")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="e.g. n=1000 p=900 sigma=0.2")
    p.set_defaults(func=cmd_theory)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a positional list at the first option: `elr sweep S.yaml --dry-run a=b`
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        print(_usage_line(f"elr {args.command}", f"unrecognized arguments: {' '.join(extra)}"), file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:  # `elr train` and `elr sweep` say how to carry on themselves
        print(f"elr {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as err:
        if args.verbose or os.environ.get("ELR_DEBUG"):
            raise
        if not getattr(err, "relayed", False):  # under torchrun rank 0's error, repeated by the others
            text = os_error_text(err) if isinstance(err, OSError) else str(err)
            print(f"elr {args.command}: error: {' '.join(text.split())}", file=sys.stderr)  # one line
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
