"""Tables of finished runs: methods x noise settings per dataset, mean ± sample std over seeds, as Markdown,
CSV and a figure (``elr report``). Runs are read through :mod:`elr.rundir` (their ``summary.json`` and, for
a sweep's runs, ``sweep.json``), so any finished run directory can be tabulated, a sweep's or not."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import rundir
from .checkpoint import atomic_write_text
from .plots import plot_report

REPORT_METRICS = {
    "last": "last epoch",
    "selected": "selected by noisy validation",
    "best": ("best test accuracy during training (selects on the test set, as the published tables of the paper "
             "and of CIFAR-N do; for comparison with them only)"),
}
_TYPE_ORDER = {"none": 0, "symmetric": 1, "asymmetric": 2}
_TYPE_SHORT = {"symmetric": "sym", "asymmetric": "asym"}


def noise_column(noise_type: str, rate: float) -> str:
    """Column title of a noise setting: ``sym 40%``, ``asym 10%``, ``clean`` or ``cifar10n worst`` (CIFAR-N)."""
    if noise_type.startswith(("cifar10n", "cifar100n")):  # human labels: the label set, not a rate
        return noise_type.replace("-", " ")
    if noise_type == "none" or not rate:
        return "clean"
    return f"{_TYPE_SHORT.get(noise_type, noise_type)} {100 * rate:g}%"


@dataclass
class Cell:
    """One table cell: the values (in %) of the runs of one method and noise setting, over seeds."""

    dataset: str
    method: str
    noise_type: str
    noise_rate: float
    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    missing: int = 0  # runs of this cell without the tabulated value

    @property
    def column(self) -> str:
        return noise_column(self.noise_type, self.noise_rate)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / self.n if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof=1); None for fewer than two seeds."""
        if self.n < 2:
            return None
        mean = self.mean
        return math.sqrt(sum((v - mean) ** 2 for v in self.values) / (self.n - 1))

    def text(self) -> str:
        if not self.values:
            return "missing" if self.missing else ""
        spread = f" ± {self.std:.2f}" if self.std is not None else ""
        return f"{self.mean:.2f}{spread} ({self.n})"


@dataclass
class Report:
    """Test accuracy (and memorized fraction) of runs, as methods x noise settings per dataset."""

    metric: str
    accuracy: list[Cell]
    memorized: list[Cell]
    notes: list[str]
    row_order: dict[str, tuple[float, str]]
    runs: int

    @property
    def metric_label(self) -> str:
        return REPORT_METRICS[self.metric]

    def _tables(self, cells: list[Cell]):
        for dataset in sorted({c.dataset for c in cells}):
            mine = [c for c in cells if c.dataset == dataset]
            columns = sorted({(c.noise_type, c.noise_rate) for c in mine}, key=_column_sort)
            rows = sorted({c.method for c in mine}, key=lambda m: self.row_order.get(m, (math.inf, m)))
            lookup = {(c.method, c.noise_type, c.noise_rate): c for c in mine}
            yield dataset, columns, rows, lookup

    def _markdown_tables(self, cells: list[Cell], what: str) -> list[str]:
        lines = []
        for dataset, columns, rows, lookup in self._tables(cells):
            lines += ["", f"### {dataset}: {what}", ""]
            lines.append("| method | " + " | ".join(noise_column(*c) for c in columns) + " |")
            lines.append("|---" * (len(columns) + 1) + "|")
            for method in rows:
                texts = [lookup[(method, *c)].text() if (method, *c) in lookup else "" for c in columns]
                lines.append(f"| {method} | " + " | ".join(texts) + " |")
        return lines

    def markdown(self) -> str:
        """The tables as Markdown, with what the cells mean and the notes."""
        lines = [f"## Test accuracy (%), {self.metric_label}", "",
                 f"{self.runs} runs. Cells: mean ± sample standard deviation (ddof=1) over seeds, "
                 "number of seeds in parentheses; a single seed shows no ±."]
        lines += self._markdown_tables(self.accuracy, f"test accuracy (%), {self.metric_label}")
        if self.memorized:
            lines += ["", "## Wrong labels memorized at the last epoch (%)", "",
                      "Share of the wrongly-labelled training examples predicted as their wrong label "
                      "(summary `last.mem_wrong_memorized`); lower is better."]
            lines += self._markdown_tables(self.memorized, "wrong labels memorized (%), last epoch")
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def csv_text(self) -> str:
        """One line per cell: dataset, table, metric, method, noise, n, mean and std (in %), seeds."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["dataset", "table", "metric", "method", "noise_type", "noise_rate", "column",
                         "n", "mean", "std", "missing", "seeds"])
        for table, metric, cells in (("test_acc", self.metric, self.accuracy),
                                     ("mem_wrong_memorized", "last", self.memorized)):
            for dataset, columns, rows, lookup in self._tables(cells):
                for method in rows:
                    for column in columns:
                        cell = lookup.get((method, *column))
                        if cell is None:
                            continue
                        writer.writerow([dataset, table, metric, method, cell.noise_type, cell.noise_rate,
                                         cell.column, cell.n, _num(cell.mean), _num(cell.std), cell.missing,
                                         " ".join(map(str, cell.seeds))])
        return buffer.getvalue()

    def plot_rows(self) -> list[dict[str, Any]]:
        """The accuracy cells as plain dicts for :func:`elr.plots.plot_report`."""
        return [{"dataset": c.dataset, "method": c.method, "noise_type": c.noise_type, "noise_rate": c.noise_rate,
                 "mean": c.mean, "std": c.std or 0.0, "n": c.n}
                for c in sorted(self.accuracy, key=lambda c: self.row_order.get(c.method, (math.inf, c.method)))
                if c.values]


def _num(value: float | None) -> str:
    return "" if value is None else repr(value)


def _column_sort(column: tuple[str, float]) -> tuple[int, str, float]:
    kind, rate = column
    if not rate and not kind.startswith(("cifar10n", "cifar100n")):
        kind = "none"  # rate 0 of any synthetic type is the clean column
    return _TYPE_ORDER.get(kind, len(_TYPE_ORDER)), kind, rate


def find_summaries(dirs: Iterable[str | Path]) -> list[Path]:
    """Every ``summary.json`` under the given directories (recursively), each once."""
    found: dict[Path, None] = {}
    for d in map(Path, dirs):
        if not d.is_dir():
            raise FileNotFoundError(f"no such directory: {d}")
        for path in rundir.find_summaries(d):
            found.setdefault(path.resolve(), None)
    return list(found)


def _row_label(summary: dict[str, Any], info: dict[str, Any] | None) -> str:
    label = info.get("method") if info else None
    if label is None:
        method = summary.get("method", "standard")
        label = summary.get("loss", "?") if method == "standard" else method
    # grid settings other than noise and seed tell rows apart (e.g. the ELR+ ablation switches)
    extra = {k: v for k, v in ((info or {}).get("settings") or {}).items()
             if k != "seed" and k != "noise" and not k.startswith("noise.")}
    if extra:
        words = (f"{k.rsplit('.', 1)[-1]}={rundir.setting_text(v)}" for k, v in extra.items())
        label += " [" + ", ".join(words) + "]"
    return str(label)


def build_report(dirs: Iterable[str | Path], *, metric: str = "last") -> Report:
    """Collect the ``summary.json`` files under ``dirs`` into methods x noise tables.

    Rows are the method labels of the sweeps (``sweep.json``; else the loss name), extended by any
    grid setting other than noise and seed; columns are the noise settings; a cell is the mean and
    sample standard deviation over the seeds of that method and noise, one table per dataset.

    Parameters
    ----------
    dirs : paths
        Directories searched recursively (sweep directories, run directories).
    metric : {"last", "selected", "best"}
        ``last``: test accuracy after the final epoch; ``selected``: at the epoch of best noisy
        validation accuracy (runs without a validation split are missing); ``best``: the best test
        accuracy seen during training (selects on the test set; for comparison with papers only).
    """
    if metric not in REPORT_METRICS:
        raise ValueError(f"metric must be one of {', '.join(REPORT_METRICS)}, got {metric!r}")
    paths = find_summaries(dirs)
    if not paths:
        raise FileNotFoundError(f"no {rundir.SUMMARY} (finished run) under " + ", ".join(map(str, dirs)))
    accuracy: dict[tuple, Cell] = {}
    memorized: dict[tuple, Cell] = {}
    order: dict[str, tuple[float, str]] = {}
    without_val = 0
    for path in paths:
        try:
            summary = rundir.read_summary(path.parent, strict=True)
            summary["last"]["test_acc"]
        except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
            raise ValueError(f"{path}: not the summary of a finished run ({type(err).__name__}: {err}); "
                             f"`elr train --resume {path.parent}` writes it again") from None
        info = rundir.read_sweep_record(path.parent)
        label = _row_label(summary, info)
        rank = float(info["order"]) if info and isinstance(info.get("order"), int) else math.inf
        order[label] = min(order.get(label, (math.inf, label)), (rank, label))
        noise = summary.get("noise") or {}
        kind = str(noise.get("type", "none")) + (f"-{noise['label_set']}" if noise.get("label_set") else "")
        key = (str(summary.get("dataset", "?")), label, kind, float(noise.get("rate") or 0.0))
        seed = summary.get("seed")
        if metric == "last":
            value = summary["last"]["test_acc"]
        elif metric == "best":
            value = summary.get("best_test_acc")
        else:
            selected = summary.get("selected")
            value = selected.get("test_acc") if selected else None
            without_val += selected is None
        cell = accuracy.setdefault(key, Cell(*key))
        _add(cell, value, seed)
        mem = summary["last"].get("mem_wrong_memorized")
        if mem is not None:
            _add(memorized.setdefault(key, Cell(*key)), mem, seed)
    notes = []
    if without_val:
        notes.append(f"{without_val} run{'s have' if without_val > 1 else ' has'} no validation split "
                     "(data.val_fraction=0), so nothing was selected by noisy validation: missing from the "
                     "table; use --metric last for them.")
    if metric == "best":
        notes.append("best test accuracy selects the epoch on the test set itself: an optimistic number, "
                     "shown only for comparison with papers that report it.")
    for cell in accuracy.values():
        repeated = sorted({s for s in cell.seeds if cell.seeds.count(s) > 1})
        if repeated:
            notes.append(f"{cell.dataset} / {cell.method} / {cell.column}: seed {', '.join(map(str, repeated))} "
                         "appears more than once (runs of several sweeps or copies?)")
    return Report(metric, list(accuracy.values()), list(memorized.values()), notes, order, len(paths))


def _add(cell: Cell, value: Any, seed: Any) -> None:
    if value is None:
        cell.missing += 1
    else:
        cell.values.append(100.0 * float(value))
        cell.seeds.append(seed)


def write_report(report: Report, out_dir: str | Path) -> dict[str, Any]:
    """Write ``report.md``, ``report.csv`` and ``report.png`` (when matplotlib is installed).

    Returns
    -------
    dict
        ``markdown``, ``csv`` and ``png`` paths (``png`` None without matplotlib) and ``notes``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"markdown": out_dir / "report.md", "csv": out_dir / "report.csv", "png": None,
                               "notes": []}
    atomic_write_text(written["markdown"], report.markdown())
    atomic_write_text(written["csv"], report.csv_text())
    rows = report.plot_rows()
    if rows:
        try:
            written["png"] = plot_report(rows, out_dir / "report.png",
                                         ylabel=f"test accuracy (%), {report.metric_label}")
        except ImportError as err:
            written["notes"].append(f"no report.png: {err}")
    return written
