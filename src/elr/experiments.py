"""Sweeps over methods x settings x seeds: the sweep file, its runs' names, planning, and running each run
(trained, resumed or skipped). The tables of finished runs are :mod:`elr.report`'s."""

from __future__ import annotations

import copy
import fnmatch
import itertools
import json
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from . import rundir
from .checkpoint import atomic_write_text
from .config import SWITCHES, Config, ConfigError, apply_overrides, did_you_mean, locate_paths, switched
from .engine import Progress
from .two_stage import stage1_epochs_left, train_or_resume

log = logging.getLogger(__name__)

SWEEP_COPY = "sweep.yaml"  # the sweep file as given, copied into the sweep's output directory
SWEEP_KEYS = ("name", "description", "base", "config", "grid", "methods", "rules")
RULE_KEYS = ("if", "methods", "set")
STATUSES = ("new", "resume", "restart", "done", "conflict")
_MISSING = object()


class SweepError(ConfigError):
    """A sweep file or one of its runs is invalid; the message names the sweep, the run and the key."""


# ---- the sweep file -----------------------------------------------------------------------------


@dataclass
class Rule:
    """Overrides applied to the runs whose resolved config matches every condition.

    Conditions map a dotted config key to a value, or to a list of accepted values; ``methods``
    optionally restricts the rule to some method labels.
    """

    conditions: dict[str, Any]
    set: dict[str, Any]
    methods: tuple[str, ...] | None = None

    def matches(self, label: str | None, resolved: dict[str, Any]) -> bool:
        if self.methods is not None and label not in self.methods:
            return False
        for key, wanted in self.conditions.items():
            value = _lookup(resolved, key)
            accepted = wanted if isinstance(wanted, list) else [wanted]
            if value is _MISSING or value not in accepted:
                return False
        return True


@dataclass
class RunSpec:
    """One run of a sweep: its name (also its directory under the sweep's output), label, settings and config."""

    name: str
    label: str | None
    settings: dict[str, Any]
    config: Config
    order: int

    def sweep_info(self, sweep_name: str) -> dict[str, Any]:
        """The run's sweep record (:func:`elr.rundir.write_sweep_record`)."""
        return {"sweep": sweep_name, "method": self.label, "settings": self.settings, "run": self.name,
                "order": self.order}


@dataclass
class Sweep:
    """A grid of runs: a base config, named method variants, a cartesian grid of settings and rules.

    ``Sweep.load(path, overrides)`` reads a sweep file; :meth:`expand` gives the validated runs.
    The config of a run is built in this order: the base file, the inline ``config``, the method's
    overrides, the grid values (in the file's order), the matching rules (in order), and last the
    ``key=value`` overrides given on the command line.
    """

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    methods: dict[str | None, dict[str, Any]] = field(default_factory=lambda: {None: {}})
    rules: list[Rule] = field(default_factory=list)
    overrides: tuple[str, ...] = ()
    description: str = ""
    source: str = ""  # the sweep file's text, copied into the output directory
    folder: str | None = None  # relative data paths not found from the working directory: tried here (base's folder)

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
        """Read a sweep file; ``base`` paths are relative to it."""
        path = Path(path)
        if not path.is_file():
            raise SweepError(f"sweep file not found: {path}")
        text = path.read_text()
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SweepError(f"{path}: not valid YAML ({err})") from None
        sweep = cls.from_dict(raw, root=path.parent, overrides=overrides, default_name=path.stem)
        sweep.source = text
        return sweep

    @classmethod
    def from_dict(cls, raw: Any, *, root: str | Path = ".", overrides: Sequence[str] = (),
                  default_name: str = "sweep") -> Sweep:
        """Build a sweep from the mapping of a sweep file (see the README for the format)."""
        if not isinstance(raw, dict):
            raise SweepError("a sweep file must be a mapping with keys " + ", ".join(SWEEP_KEYS))
        unknown = sorted(set(raw) - set(SWEEP_KEYS))
        if unknown:
            raise SweepError(f"unknown key {unknown[0]!r} in the sweep file; {did_you_mean(unknown[0], SWEEP_KEYS)}"
                             f"valid keys: {', '.join(SWEEP_KEYS)} (a grid of settings goes under grid:)")
        name = str(raw.get("name") or default_name)
        where = f"sweep {name!r}"

        base: dict[str, Any] = {}
        folder = Path(root)
        if raw.get("base") is not None:
            base_path = Path(root) / str(raw["base"])
            folder = base_path.parent
            if not base_path.is_file():
                raise SweepError(f"{where}: base config not found: {base_path}")
            try:
                loaded = yaml.safe_load(base_path.read_text()) or {}
            except yaml.YAMLError as err:
                raise SweepError(f"{where}: base config {base_path} is not valid YAML ({err})") from None
            if not isinstance(loaded, dict):
                raise SweepError(f"{where}: base config {base_path} must be a mapping")
            base = loaded
        inline = raw.get("config") or {}
        if not isinstance(inline, dict):
            raise SweepError(f"{where}: 'config' must be a mapping of config keys, got {inline!r}")
        base = merge(base, inline)

        grid = raw.get("grid") or {}
        if not isinstance(grid, dict):
            raise SweepError(f"{where}: 'grid' must map config keys to lists of values, got {grid!r}")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SweepError(f"{where}: grid.{key} must be a non-empty list of values, got {values!r}")

        methods_raw = raw.get("methods")
        if methods_raw is None:
            methods: dict[str | None, dict[str, Any]] = {None: {}}
        elif not isinstance(methods_raw, dict) or not methods_raw:
            raise SweepError(f"{where}: 'methods' must map labels to config overrides, got {methods_raw!r}")
        else:
            methods = {}
            for label, over in methods_raw.items():
                if over is not None and not isinstance(over, dict):
                    raise SweepError(f"{where}: method {label!r} must be a mapping of config overrides, got {over!r}")
                methods[str(label)] = over or {}

        rules = [_parse_rule(item, i, where, methods) for i, item in enumerate(raw.get("rules") or [], 1)]
        apply_overrides({}, overrides)  # malformed key=value strings fail here, before anything else
        return cls(name=name, base=base, grid=dict(grid), methods=methods, rules=rules,
                   overrides=tuple(overrides), description=str(raw.get("description") or ""), folder=str(folder))

    def expand(self) -> list[RunSpec]:
        """Every run of the sweep, each config validated; the first invalid run raises SweepError."""
        keys = list(self.grid)
        runs = [(label, over, dict(zip(keys, combo))) for label, over in self.methods.items()
                for combo in itertools.product(*(self.grid[k] for k in keys))]
        short = [run_name(label, settings) for label, _, settings in runs]
        full = [run_name(label, settings, paths="whole") for label, _, settings in runs]
        names = short if len(set(short)) == len(set(full)) else full  # files of one name in two folders
        specs: list[RunSpec] = []
        seen: dict[str, dict[str, Any]] = {}
        for (label, method_over, settings), name in zip(runs, names):
            where = f"sweep {self.name!r}: run {name}"
            try:
                raw = merge(self.base, method_over)
                for key, value in settings.items():
                    raw = merge(raw, {key: value})
                for rule in self.rules:
                    if rule.matches(label, Config.from_dict(raw).to_dict()):
                        raw = merge(raw, rule.set)
                raw = apply_overrides(raw, self.overrides)
                config = locate_paths(Config.from_dict(raw).validate(), self.folder, strict=False)
            except ConfigError as err:
                raise SweepError(f"{where}: {err}") from None
            if name in seen:
                raise SweepError(f"sweep {self.name!r}: two runs get the directory {name!r} "
                                 f"(settings {seen[name]} and {settings}); give distinct values or labels")
            seen[name] = {"method": label, **settings}
            specs.append(RunSpec(name, label, _jsonable(settings), config, len(specs)))
        return specs


def _parse_rule(item: Any, number: int, where: str, methods: dict[str | None, Any]) -> Rule:
    what = f"{where}: rule {number}"
    if not isinstance(item, dict) or "set" not in item:
        raise SweepError(f"{what} must be a mapping with 'if' (conditions), optional 'methods' and 'set'")
    unknown = sorted(set(item) - set(RULE_KEYS))
    if unknown:
        raise SweepError(f"{what}: unknown key {unknown[0]!r}; valid keys: {', '.join(RULE_KEYS)}")
    conditions = item.get("if") or {}
    if not isinstance(conditions, dict) or not isinstance(item["set"], dict):
        raise SweepError(f"{what}: 'if' and 'set' must be mappings of config keys")
    sections = {f.name for f in fields(Config)}
    for key in conditions:
        if str(key).split(".")[0] not in sections:
            raise SweepError(f"{what}: unknown config key {key!r} in 'if'; valid top-level keys: {', '.join(sorted(sections))}")
    labels = item.get("methods")
    if labels is not None:
        labels = tuple(str(x) for x in (labels if isinstance(labels, list) else [labels]))
        missing = [x for x in labels if x not in methods]
        if missing:
            raise SweepError(f"{what}: unknown method label {missing[0]!r}; labels: {', '.join(map(str, methods))}")
    return Rule({str(k): v for k, v in conditions.items()}, item["set"], labels)


# ---- merging and naming ---------------------------------------------------------------------------


def nest(mapping: dict[str, Any]) -> dict[str, Any]:
    """Turn dotted keys (``{"loss.lam": 3}``) into nested mappings (``{"loss": {"lam": 3}}``)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        parts = str(key).split(".")
        if any(not p for p in parts):
            raise SweepError(f"invalid config key {key!r}")
        value = nest(value) if isinstance(value, dict) else copy.deepcopy(value)
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SweepError(f"config key {key!r}: {part!r} is given both as a value and as a section")
            node = child
        last = parts[-1]
        if isinstance(node.get(last), dict) and isinstance(value, dict):
            node[last] = {**node[last], **value}
        else:
            node[last] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` (nested or dotted keys) into a copy of ``base``.

    A section given another value of its switch (``model.name``, ``loss.name``, ``noise.type``)
    starts afresh (:func:`elr.config.switched`), so that ``loss: {name: ce}`` does not inherit ELR's
    ``lam`` and ``beta`` nor ``noise: {type: cifar10n}`` a symmetric ``rate``; otherwise the keys are
    merged.
    """
    result = copy.deepcopy(base)
    for key, value in nest(over).items():
        current = result.get(key)
        if key in SWITCHES and isinstance(value, dict) and isinstance(current, dict):
            if SWITCHES[key] in value:  # another loss, model or noise type starts its section afresh
                current = switched(key, current, value[SWITCHES[key]], result)
            result[key] = {**current, **copy.deepcopy(value)}
        elif isinstance(value, dict) and isinstance(current, dict):
            result[key] = merge(current, value)
        else:
            result[key] = value
    return result


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _slug(text: str) -> str:
    """Readable and safe on every file system: letters, digits and ``. _ + -``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.") or "_"


def _part(key: str, value: Any, paths: str = "name") -> str:
    if isinstance(value, dict):  # e.g. noise {type: symmetric, rate: 0.4} -> symmetric-0.4
        words = [(k if v else f"no-{k}") if isinstance(v, bool) else rundir.setting_text(v, paths)
                 for k, v in value.items()]
        return _slug("-".join(words))
    return _slug(f"{key.rsplit('.', 1)[-1]}-{rundir.setting_text(value, paths)}")


def run_name(label: str | None, settings: dict[str, Any], *, paths: str = "name") -> str:
    """Directory of a run inside the sweep, e.g. ``ELR-cosine/symmetric-0.4/seed-0``.

    A path among the settings is named by its file's name (``paths="name"``); :meth:`Sweep.expand`
    uses the whole path (``paths="whole"``, slashes as dashes) only when two files share a name.
    """
    parts = ([_slug(label)] if label is not None else []) + [_part(k, v, paths) for k, v in settings.items()]
    return "/".join(parts) or "run"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# ---- planning: what each run needs --------------------------------------------------------------


@dataclass
class PlannedRun:
    """A run of the sweep and what has to happen to it.

    ``status`` is ``new`` (nothing there), ``resume`` (a checkpoint, no complete summary),
    ``restart`` (an unstarted run, killed or failed before its first checkpoint: its files are
    cleared and it starts over), ``done`` (a summary with every epoch) or ``conflict`` (the
    directory holds a run of a different config, or files that are not a run's; ``reason`` says
    which). See :func:`elr.rundir.decide`. ``holder``: who holds the run directory's lock when
    another process is training it (:func:`elr.rundir.holder`).
    """

    spec: RunSpec
    run_dir: Path
    status: str
    epochs_left: int
    reason: str = ""
    seconds_per_epoch: float | None = None
    holder: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class SweepPlan:
    """All runs of a sweep with their status and the estimated cost of what is left."""

    sweep: Sweep
    out_dir: Path
    runs: list[PlannedRun]

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.runs) for s in STATUSES}

    @property
    def pending(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.status in ("new", "resume", "restart")]

    @property
    def epochs_left(self) -> int:
        return sum(r.epochs_left for r in self.pending)

    @property
    def estimated_seconds(self) -> float | None:
        """Seconds for the pending runs whose speed is known (None when none is known)."""
        known = [r.epochs_left * r.seconds_per_epoch for r in self.pending if r.seconds_per_epoch is not None]
        return sum(known) if known else None

    @property
    def unknown_speed(self) -> int:
        """Pending runs with no measured run of the same setting to estimate their speed from."""
        return sum(r.seconds_per_epoch is None for r in self.pending)


def _cost_key(config: Config) -> str:
    """What decides the time per epoch: everything but the seed, noise, loss and schedule."""
    d = config.to_dict()
    for key in ("seed", "noise", "loss"):  # a loss costs little next to the network
        d.pop(key, None)
    d["optim"] = d["optim"]["batch_size"]
    return json.dumps(d, sort_keys=True, default=str)


def _epoch_seconds(run_dir: Path) -> list[float]:
    seconds = [float(r["seconds"]) for r in rundir.read_metrics(run_dir) if isinstance(r.get("seconds"), (int, float))]
    return seconds[1:] if len(seconds) > 1 else seconds  # the first epoch includes warm-up


_SWEEP_STATUS = {"train": "new", "restart": "restart", "resume": "resume", "skip": "done", "refuse": "conflict"}


def _status(spec: RunSpec, run_dir: Path) -> tuple[str, int, str]:
    """(status, epochs left, reason) of one run directory."""
    decision = rundir.decide(spec.config, run_dir)
    status = _SWEEP_STATUS[decision.action]
    epochs = spec.config.optim.epochs
    if status in ("done", "conflict"):
        return status, 0, decision.reason
    if status == "resume":  # the metrics may run one ahead of the checkpoint: an estimate
        return status, max(epochs - decision.status.epochs_done, 1), ""
    return status, epochs + stage1_epochs_left(spec.config, run_dir), ""  # two-stage: its CE stage first


def select_runs(specs: Sequence[RunSpec], only: Sequence[str] | None) -> list[RunSpec]:
    """The runs whose name matches one of the shell-style patterns ``only`` (all runs when None).

    A run's name is ``method/setting/.../seed-N`` as ``elr sweep --dry-run`` lists it; a pattern
    that matches no run is an error, so a typo never silently selects nothing.
    """
    if only is None:
        return list(specs)
    if isinstance(only, str) or not only:
        raise SweepError(f"only must be a non-empty list of run-name patterns, got {only!r}")
    unmatched = [p for p in only if not any(fnmatch.fnmatchcase(s.name, p) for s in specs)]
    if unmatched:
        names = ", ".join(s.name for s in specs[:8]) + (", ..." if len(specs) > 8 else "")
        raise SweepError(f"--only {' '.join(repr(p) for p in unmatched)} matches no run of the sweep "
                         f"(its runs: {names})")
    return [s for s in specs if any(fnmatch.fnmatchcase(s.name, p) for p in only)]


def plan_sweep(sweep: Sweep, out_dir: str | Path, *, only: Sequence[str] | None = None) -> SweepPlan:
    """Expand and validate the sweep, then find each run's status under ``out_dir``; trains nothing.

    ``only`` keeps the runs whose name matches one of its shell-style patterns (see
    :func:`select_runs`); every run of the sweep is still validated. Seconds per epoch are
    measured from the ``metrics.jsonl`` of this sweep's runs (finished or partial) with the same
    setting apart from seed, noise, loss and schedule (same data, model, method, batch size,
    device); otherwise unknown.
    """
    out_dir = Path(out_dir)
    runs = []
    for spec in select_runs(sweep.expand(), only):
        run_dir = out_dir / spec.name
        status, left, reason = _status(spec, run_dir)
        runs.append(PlannedRun(spec, run_dir, status, left, reason, holder=rundir.holder(run_dir)))
    measured: dict[str, list[float]] = {}
    for run in runs:
        if run.status != "conflict":
            measured.setdefault(_cost_key(run.spec.config), []).extend(_epoch_seconds(run.run_dir))
    for run in runs:
        seconds = measured.get(_cost_key(run.spec.config))
        run.seconds_per_epoch = sum(seconds) / len(seconds) if seconds else None
    return SweepPlan(sweep, out_dir, runs)


# ---- running ---------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What happened to one run: ``result`` is trained, resumed, skipped, busy (another process
    holds it) or failed."""

    name: str
    run_dir: Path
    status: str
    result: str
    error: str | None = None
    summary: dict[str, Any] | None = None


@dataclass
class SweepResult:
    """The outcome of every run, in the sweep's order."""

    plan: SweepPlan
    outcomes: list[RunOutcome]

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.result == "failed"]

    def results(self) -> dict[str, str]:
        """Run name -> trained | resumed | skipped | busy | failed."""
        return {o.name: o.result for o in self.outcomes}


def _execute(task: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Train, resume or restart one run; returns its result. Runs in a worker process with --jobs."""
    run_dir = Path(task["run_dir"])
    try:
        if task.get("threads"):
            import torch

            torch.set_num_threads(task["threads"])
        action, summary = train_or_resume(Config.from_dict(task["config"]).validate(), run_dir, progress=progress,
                                          device=task["device"], sweep_record=task["sweep_info"])
        result = {"restarted": "trained"}.get(action, action)
        return {"result": result, "summary": _jsonable(summary)}
    except rundir.RunDirLockedError as err:  # another process (a second sweep) trains it: left to that process
        return {"result": "busy", "error": rundir.holder_text(err.holder)}
    except Exception as err:  # a failed run is reported and the sweep goes on with the others
        log.warning("run %s failed: %s: %s", run_dir, type(err).__name__, err, exc_info=True)
        return {"result": "failed", "error": f"{type(err).__name__}: {err}"}


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_sweep(
    sweep: Sweep,
    out_dir: str | Path,
    *,
    jobs: int = 1,
    device: str | None = None,
    only: Sequence[str] | None = None,
    progress: Callable[[str], Progress | None] | None = None,
    on_start: Callable[[PlannedRun], None] | None = None,
    on_end: Callable[[RunOutcome], None] | None = None,
) -> SweepResult:
    """Run every unfinished run of the sweep under ``out_dir``; finished runs are skipped.

    Every run's config is validated first, so a typo fails before anything trains. Each run is
    brought to its end by :func:`elr.train_or_resume`: new and unstarted runs are trained,
    interrupted ones (a checkpoint, no complete summary) resumed, so a sweep killed halfway
    continues where it stopped.
    A failed run is recorded with its error and the others still run. A run another process holds
    (a second sweep on the same folder) is left to it and recorded as ``busy``; each run directory
    is locked while trained (:func:`elr.rundir.lock`), so no run is ever trained by two processes.

    Parameters
    ----------
    sweep : Sweep
    out_dir : path
        The sweep's directory; run ``R`` lives in ``out_dir / R.name``.
    jobs : int, default 1
        Runs trained at once. With ``jobs > 1`` each run goes to its own process (spawned) using
        ``max(1, cores // jobs)`` torch threads; one at a time runs in this process.
    device : str, optional
        Overrides the configs' device (``cpu``, ``cuda``, ``cuda:N``).
    only : list of str, optional
        Shell-style patterns on run names (``"ELR+/*"``): train only the matching runs.
    progress : callable, optional
        ``progress(run_name)`` returns a Progress for that run (one at a time only).
    on_start, on_end : callable, optional
        Called with each PlannedRun when it starts and each RunOutcome when it ends (or is skipped).

    Returns
    -------
    SweepResult

    Raises
    ------
    SweepError
        An invalid run (before any training), or run directories holding runs of another config.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise SweepError(f"jobs must be a positive integer, got {jobs!r}")
    plan = plan_sweep(sweep, out_dir, only=only)
    for run in plan.pending:  # a missing data file stops the sweep before any run, naming the paths tried
        try:
            locate_paths(run.spec.config, sweep.folder)
        except ConfigError as err:
            raise SweepError(f"sweep {sweep.name!r}: run {run.name}: {err}") from None
    conflicts = [r for r in plan.runs if r.status == "conflict"]
    if conflicts:
        lines = "; ".join(f"{r.name}: {r.reason}" for r in conflicts[:5])
        raise SweepError(f"sweep {sweep.name!r}: {len(conflicts)} run director{'y' if len(conflicts) == 1 else 'ies'} "
                         f"under {plan.out_dir} do not match the sweep ({lines}); move them away or use another --out")
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    if sweep.source:
        atomic_write_text(plan.out_dir / SWEEP_COPY, sweep.source)

    outcomes: dict[str, RunOutcome] = {}

    def finish(run: PlannedRun, out: dict[str, Any]) -> None:
        outcome = RunOutcome(run.name, run.run_dir, run.status, out["result"], out.get("error"), out.get("summary"))
        outcomes[run.name] = outcome
        if on_end is not None:
            on_end(outcome)

    for run in plan.runs:
        if run.status == "done":
            finish(run, {"result": "skipped"})
    threads = max(1, available_cores() // jobs) if jobs > 1 else None
    tasks = [(run, {"run_dir": str(run.run_dir), "config": run.spec.config.to_dict(),
                    "sweep_info": run.spec.sweep_info(sweep.name), "device": device, "threads": threads})
             for run in plan.pending]
    if jobs == 1:
        for run, task in tasks:
            if on_start is not None:
                on_start(run)
            finish(run, _execute(task, progress(run.name) if progress is not None else None))
    elif tasks:
        context = multiprocessing.get_context("spawn")  # no fork: torch and CUDA state do not survive it
        pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context)
        try:
            futures = {}
            for run, task in tasks:
                if on_start is not None:
                    on_start(run)
                futures[pool.submit(_execute, task)] = run
            for future in as_completed(futures):
                try:
                    out = future.result()
                except Exception as err:  # the worker process died (killed, out of memory)
                    out = {"result": "failed", "error": f"worker process died ({type(err).__name__}: {err}); "
                                                        "run `elr sweep` again to resume"}
                finish(futures[future], out)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    return SweepResult(plan, [outcomes[r.name] for r in plan.runs])
