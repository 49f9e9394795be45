"""Is a method's lead over the best other row larger than the seed spread? Per column of `elr report`'s tables.

First the runs as one table (a row per method; per noise column the test accuracy at the last and at
the selected epoch and the wrong labels memorized at the last epoch, each mean ± std (n) over seeds).
Then, in each of those three measures and every noise column, METHOD is compared with the best other
row (highest mean accuracy, lowest mean memorized; or each row named by --versus) on the seeds both
have. The runs of one seed share the training subset, its noisy labels and the validation
split, so the comparison is paired: the per-seed difference METHOD − other, its mean ± sample std,
the seeds where METHOD is better, and the paired t statistic with its two-sided 5% critical value.

The verdict "better (worse) beyond the spread" needs both: METHOD is better (worse) on every paired
seed, and the mean difference is larger than the seed standard deviation of either row (the spread a
reader sees in the table) and of the per-seed differences. Otherwise "within the spread": the runs
cannot tell the two apart. The second condition alone is |t| > sqrt(n) for the paired t statistic
(1.73 for 3 seeds, two-sided p about 0.2): "beyond the spread" says the difference is consistent, not
that it is established. "; t significant" is added to either verdict when the paired t-test rejects
equal means at 5% (two-sided), which 3 seeds pass only for large, steady differences (|t| > 4.30);
"within the spread; t significant" is a difference that is the same on every seed but smaller than
what the seed moves both rows by.

    .venv/bin/python benchmarks/seed_spread.py benchmarks/cifar10_cpu/results --method ELR
    .venv/bin/python benchmarks/seed_spread.py benchmarks/cifar10_cpu/results_elr_plus --method ELR+ \\
        --versus ELR --versus "ELR+ with one network"
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from elr.report import Cell, Report, _column_sort, build_report, noise_column  # noqa: E402

# two-sided 5% critical values of Student's t by degrees of freedom; scipy (scikit-learn's dependency) for more
T_CRITICAL = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_critical(df: int) -> float | None:
    """Two-sided 5% critical value of Student's t with ``df`` degrees of freedom (None without scipy past 9)."""
    if df in T_CRITICAL:
        return T_CRITICAL[df]
    try:
        from scipy.stats import t
    except ImportError:
        return None
    return round(float(t.ppf(0.975, df)), 3)


TABLES = (("test accuracy, last", "last", "accuracy", True),
          ("test accuracy, selected", "selected", "accuracy", True),
          ("wrong labels memorized, last", "last", "memorized", False))


@dataclass
class Comparison:
    """METHOD against one other row in one column of one table (values in %)."""

    table: str
    column: str
    method: Cell
    other: Cell
    differences: list[float]  # METHOD − other, per paired seed
    higher_is_better: bool

    @property
    def mean(self) -> float:
        return statistics.fmean(self.differences)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.differences) if len(self.differences) > 1 else None

    @property
    def method_better(self) -> int:
        """Paired seeds on which METHOD is better (higher accuracy, lower memorized)."""
        return sum((d > 0) if self.higher_is_better else (d < 0) for d in self.differences)

    @property
    def t(self) -> float | None:
        if self.std is None:
            return None
        if self.std == 0:
            return math.copysign(math.inf, self.mean) if self.mean else 0.0
        return self.mean / (self.std / math.sqrt(len(self.differences)))

    @property
    def t_critical(self) -> float | None:
        return t_critical(len(self.differences) - 1)

    @property
    def verdict(self) -> str:
        n = len(self.differences)
        if n < 2:
            return "one seed: no spread"
        spread = max(self.method.std or 0.0, self.other.std or 0.0, self.std or 0.0)
        same_sign = self.method_better in (0, n) and all(d != 0 for d in self.differences)
        critical = self.t_critical
        significant = "; t significant" if critical is not None and abs(self.t) > critical else ""
        if not (same_sign and abs(self.mean) > spread):
            # a steady paired difference can still be smaller than what the seeds move both rows by
            return "within the spread" + significant
        return ("better" if self.method_better == n else "worse") + " beyond the spread" + significant


def column_of(cell: Cell) -> tuple[str, str, float]:
    return cell.dataset, cell.noise_type, cell.noise_rate


def column_order(column: tuple[str, str, float]) -> tuple:
    """Sort key of a column: by data set, then as ``elr report`` orders its columns."""
    return column[0], _column_sort(column[1:])


def paired(method: Cell, other: Cell) -> list[float]:
    """METHOD − other on the seeds both cells have, in METHOD's seed order."""
    for cell in (method, other):
        if None in cell.seeds or len(set(cell.seeds)) != len(cell.seeds):
            raise ValueError(f"{cell.method} / {cell.column}: seeds {cell.seeds} are missing or repeated "
                             "(runs of several sweeps or copies?): cannot pair runs by seed")
    theirs = dict(zip(other.seeds, other.values))
    return [v - theirs[s] for s, v in zip(method.seeds, method.values) if s in theirs]


def load(dirs: list[str]) -> dict[str, Report]:
    """The ``last`` and ``selected`` reports of the runs under ``dirs`` (read once: runs may finish meanwhile)."""
    return {metric: build_report(dirs, metric=metric) for metric in ("last", "selected")}


def compare(reports: dict[str, Report], method: str, versus: list[str] | None = None) -> list[Comparison]:
    """Every comparison of ``method`` per table and column (see the module docstring).

    Rows are compared on the seeds they share with ``method``; the best other row is the best mean over
    those shared seeds, and rows tied for best are all compared. A row sharing no seed is not compared.
    """
    out = []
    for title, metric, kind, higher in TABLES:
        cells = getattr(reports[metric], kind)
        by_column: dict[tuple, dict[str, Cell]] = {}
        for cell in cells:
            if cell.values:
                by_column.setdefault(column_of(cell), {})[cell.method] = cell
        for key in sorted(by_column, key=column_order):
            rows = by_column[key]
            mine = rows.get(method)
            if mine is None:
                continue
            order = reports[metric].row_order
            shared = sorted(((c, paired(mine, c)) for name, c in rows.items() if name != method),
                            key=lambda pair: order.get(pair[0].method, (math.inf, pair[0].method)))
            shared = [(c, d) for c, d in shared if d]
            if versus:
                chosen = [(c, d) for c, d in shared if c.method in versus]
            elif shared:
                mine_seeds = set(mine.seeds)
                score = {c.method: statistics.fmean(v for seed, v in zip(c.seeds, c.values) if seed in mine_seeds)
                         for c, _ in shared}  # each row's mean over the seeds it shares with METHOD
                best = max(score.values()) if higher else min(score.values())
                chosen = [(c, d) for c, d in shared if score[c.method] == best]
            else:
                chosen = []
            for other, differences in chosen:
                out.append(Comparison(title, mine.column, mine, other, differences, higher))
    return out


def table(reports: dict[str, Report]) -> str:
    """The runs as one Markdown table: a row per method, for each noise column the test accuracy at the
    last and at the selected epoch and the wrong labels memorized at the last epoch (each mean ± std (n))."""
    last, selected = reports["last"], reports["selected"]
    cells = {(what, c.method, *column_of(c)): c
             for what, report_cells in (("last", last.accuracy), ("selected", selected.accuracy),
                                        ("memorized", last.memorized)) for c in report_cells}
    columns = sorted({key[2:] for key in cells}, key=column_order)
    rows = sorted({key[1] for key in cells}, key=lambda m: last.row_order.get(m, (math.inf, m)))
    head = ["method"]
    for dataset, kind, rate in columns:
        name = noise_column(kind, rate) + (f" ({dataset})" if len({c[0] for c in columns}) > 1 else "")
        head += [f"{name}: test acc, last", "selected", "memorized, last"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for method in rows:
        texts = [cells[(what, method, *column)].text() if (what, method, *column) in cells else ""
                 for column in columns for what in ("last", "selected", "memorized")]
        lines.append(f"| {method} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


def markdown(comparisons: list[Comparison], method: str) -> str:
    head = (f"| table | column | {method} | compared with | its value | {method} − it, per seed | "
            f"mean ± std (seeds where {method} is better) | paired t (5%: ±critical) | verdict |")
    lines = [head, "|---" * 9 + "|"]
    for c in comparisons:
        per_seed = ", ".join(f"{d:+.2f}" for d in c.differences)
        std = f" ± {c.std:.2f}" if c.std is not None else ""
        t = "" if c.t is None else f"{c.t:+.2f}" + ("" if c.t_critical is None else f" (±{c.t_critical})")
        lines.append(f"| {c.table} | {c.column} | {c.method.text()} | {c.other.method} | {c.other.text()} | "
                     f"{per_seed} | {c.mean:+.2f}{std} ({c.method_better}/{len(c.differences)}) | {t} | "
                     f"{c.verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="folders of finished runs (as for `elr report`)")
    parser.add_argument("--method", required=True, help="the row compared, as `elr report` labels it (e.g. ELR)")
    parser.add_argument("--versus", action="append",
                        help="a row to compare with (repeatable); default: the best other row of each column")
    args = parser.parse_args(argv)
    try:
        reports = load(args.dirs)
    except (FileNotFoundError, ValueError) as err:  # no finished run, or an unreadable summary
        print(f"seed_spread: {err}", file=sys.stderr)
        return 2
    rows = set(reports["last"].row_order)
    for flag, name in [("--method", args.method)] + [("--versus", v) for v in args.versus or []]:
        if name not in rows:
            print(f"seed_spread: {flag} {name!r} is not a row of the runs (rows: {', '.join(sorted(rows))})",
                  file=sys.stderr)
            return 2
    try:
        comparisons = compare(reports, args.method, args.versus)
    except ValueError as err:  # seeds that cannot be paired
        print(f"seed_spread: {err}", file=sys.stderr)
        return 2
    if not comparisons:
        print(f"seed_spread: no column has {args.method!r} and a row to compare with on a shared seed",
              file=sys.stderr)
        return 2
    print(table(reports))
    print(markdown(comparisons, args.method), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
