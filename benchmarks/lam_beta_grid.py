"""ELR's lam x beta grid on one setting: heat maps of test and noisy-validation accuracy, the table, and
what choosing lam / beta by the noisy validation split gives against what the test set would pick.

Reads finished ELR runs (any folders; each run's lam, beta and seed come from its config.yaml) that
differ only in loss.lam, loss.beta and the seed; anything else differing is an error, as is a
(lam, beta, seed) given twice. Writes into --out:

- heatmaps.png: lam x beta, test accuracy beside noisy-validation accuracy, at the last epoch and at
  the epoch selected by noisy validation, for one seed that has every cell (--seed; default the lowest);
  a box marks each panel's best cell.
- table.md: per cell, mean ± sample std (n) over its seeds of the test and noisy-validation accuracy
  (last, selected), the selected epoch, the best test accuracy seen, the wrong labels memorized and
  the AUROC of the targets' ranking of the wrong labels (`elr detect`'s score) at the last epoch;
  then, per seed with every cell, what each choice rule picks and its test accuracy (regret against
  the cell the test set would pick); the rank agreement of noisy validation with test across cells; the
  pairs of cells of one seed it orders as the test set does, by how far apart they are on test; and
  how noisy-validation accuracy follows test accuracy over all epochs of all runs, against the noise
  model's slope.
- grid.json: the per-run numbers the table is made of.

Noise model: with a fraction r of the validation labels replaced by one of the K - 1 other classes at
random, and a model whose mistakes on an example do not favour its wrong label, the expected
noisy-validation accuracy of a model with clean accuracy a is (1 - r) a + r (1 - a) / (K - 1): a line of
slope 1 - r K / (K - 1) (0.60 at r = 0.36, K = 10). A slope below 1 shrinks real differences while the
split's sampling noise (about sqrt(v (1 - v) / n) for n examples) stays, which is what makes a noisy
split a coarse guide.

    .venv/bin/python benchmarks/lam_beta_grid.py benchmarks/cifar10_cpu/results_lam_beta \\
        benchmarks/cifar10_cpu/results/ELR/symmetric-0.4/seed-[12] --out benchmarks/cifar10_cpu/lam_beta
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from elr import rundir  # noqa: E402

DEFAULT = (3.0, 0.7)  # the authors' CIFAR-10 lam / beta, and configs/cpu/bench_base.yaml's
VARYING = ("seed",)  # besides loss.lam and loss.beta, which make the cells
IGNORED = rundir.RUNTIME_KEYS  # how a run was computed, not what


@dataclass
class Run:
    lam: float
    beta: float
    seed: int
    path: str
    test_last: float
    val_last: float
    test_selected: float
    val_selected: float
    selected_epoch: int
    best_test: float
    best_epoch: int
    memorized_last: float | None
    auroc_last: float | None  # how well the targets rank the wrong labels (runs from before detection: None)
    realised_rate: float | None
    curve: list[tuple[float, float]]  # (test, noisy val) per epoch

    @property
    def cell(self) -> tuple[float, float]:
        return (self.lam, self.beta)


def _setting(config: dict) -> dict:
    """The config without the grid's keys and the runtime keys: equal for every run of one grid."""
    rest = {k: v for k, v in config.items() if k not in VARYING and k not in IGNORED}
    rest["loss"] = {k: v for k, v in config["loss"].items() if k not in ("lam", "beta")}
    return rest


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _differences(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}: {a.get(k)!r} vs {b.get(k)!r}")
    return out


def collect(dirs: list[str | Path]) -> list[Run]:
    """Every finished run under ``dirs`` as a :class:`Run`; ValueError for runs that do not make one grid."""
    paths: dict[Path, Path] = {}  # resolved -> as found: a folder given twice, or inside another, counts once
    for d in map(Path, dirs):
        if not d.is_dir():
            raise FileNotFoundError(f"no such directory: {d}")
        for p in rundir.find_summaries(d):
            paths.setdefault(p.parent.resolve(), p.parent)
    if not paths:
        raise FileNotFoundError(f"no finished run ({rundir.SUMMARY}) under " + ", ".join(map(str, dirs)))
    runs: list[Run] = []
    reference: tuple[Path, dict] | None = None
    seen: dict[tuple, Path] = {}
    for path in paths.values():
        config = rundir.read_config(path).to_dict()
        if config["loss"]["name"] != "elr" or config.get("method", "standard") != "standard":
            raise ValueError(f"{path}: not an ELR run (method {config.get('method')!r}, loss {config['loss']['name']!r})")
        setting = _setting(config)
        if reference is None:
            reference = (path, setting)
        elif setting != reference[1]:
            diff = "; ".join(_differences(reference[1], setting)[:3])
            raise ValueError(f"{path} and {reference[0]} differ in more than lam, beta and the seed ({diff})")
        key = (float(config["loss"]["lam"]), float(config["loss"]["beta"]), int(config["seed"]))
        if key in seen:
            raise ValueError(f"lam {key[0]:g}, beta {key[1]:g}, seed {key[2]} twice: {seen[key]} and {path}; "
                             "give one of them")
        seen[key] = path
        summary = rundir.read_summary(path, strict=True)
        selected = summary.get("selected")
        if not selected:
            raise ValueError(f"{path}: no epoch selected by noisy validation (data.val_fraction=0?)")
        epochs = rundir.read_metrics(path)
        if not epochs:
            raise ValueError(f"{path}: no per-epoch figures ({rundir.METRICS} is missing or empty)")
        best = max(epochs, key=lambda e: e["test_acc"])  # the first of equal values
        runs.append(Run(
            lam=key[0], beta=key[1], seed=key[2], path=str(path),
            test_last=summary["last"]["test_acc"], val_last=summary["last"]["val_acc"],
            test_selected=selected["test_acc"], val_selected=selected["val_acc"], selected_epoch=selected["epoch"],
            best_test=best["test_acc"], best_epoch=best["epoch"],
            memorized_last=summary["last"].get("mem_wrong_memorized"), auroc_last=summary["last"].get("det_auroc"),
            realised_rate=(summary.get("noise") or {}).get("realised_rate"),
            curve=[(e["test_acc"], e["val_acc"]) for e in epochs]))
    return sorted(runs, key=lambda r: (r.lam, r.beta, r.seed))


def axes(runs: list[Run]) -> tuple[list[float], list[float]]:
    return sorted({r.lam for r in runs}), sorted({r.beta for r in runs})


def complete_seeds(runs: list[Run]) -> list[int]:
    """The seeds that have a run in every (lam, beta) cell of the grid."""
    lams, betas = axes(runs)
    cells = set(itertools.product(lams, betas))
    return sorted(s for s in {r.seed for r in runs} if {r.cell for r in runs if r.seed == s} == cells)


def _pct(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f} (1)"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f} ({len(values)})"


def table_markdown(runs: list[Run]) -> str:
    lams, betas = axes(runs)
    lines = ["| lam | beta | test, last | noisy val, last | test, selected | noisy val, selected | selected epoch | "
             "best test (epoch) | memorized, last | wrong-label AUROC, last |", "|---|---|---|---|---|---|---|---|---|---|"]
    for lam, beta in itertools.product(lams, betas):
        rs = [r for r in runs if r.cell == (lam, beta)]
        if not rs:
            continue
        mark = "**" if (lam, beta) == DEFAULT else ""
        mem = [r.memorized_last for r in rs if r.memorized_last is not None]
        auroc = [r.auroc_last for r in rs if r.auroc_last is not None]
        lines.append(
            f"| {mark}{lam:g}{mark} | {mark}{beta:g}{mark} | {_pct([r.test_last for r in rs])} | "
            f"{_pct([r.val_last for r in rs])} | {_pct([r.test_selected for r in rs])} | "
            f"{_pct([r.val_selected for r in rs])} | {', '.join(str(r.selected_epoch) for r in rs)} | "
            f"{', '.join(f'{100 * r.best_test:.1f} ({r.best_epoch})' for r in rs)} | {_pct(mem) if mem else '–'} | "
            f"{_pct(auroc) if auroc else '–'} |")
    return "\n".join(lines)


# (rule, accuracy used) -> pick a run among one seed's cells
RULES = {
    "noisy validation, last epoch": ("test_last", lambda rs: max(rs, key=lambda r: r.val_last)),
    "noisy validation, selected epoch": ("test_selected", lambda rs: max(rs, key=lambda r: r.val_selected)),
    "default (lam 3, beta 0.7), last epoch": ("test_last", lambda rs: next(r for r in rs if r.cell == DEFAULT)),
    "default (lam 3, beta 0.7), selected epoch": ("test_selected", lambda rs: next(r for r in rs if r.cell == DEFAULT)),
    "test set (oracle), last epoch": ("test_last", lambda rs: max(rs, key=lambda r: r.test_last)),
    "test set (oracle), selected epoch": ("test_selected", lambda rs: max(rs, key=lambda r: r.test_selected)),
}


def choices(runs: list[Run]) -> list[dict]:
    """Per complete seed and rule: the cell picked, its test accuracy, and the regret against the oracle of the
    same epoch choice (last or selected). Ties go to the cell listed first (smaller lam, then beta)."""
    out = []
    for seed in complete_seeds(runs):
        rs = [r for r in runs if r.seed == seed]
        oracle = {what: max(getattr(r, what) for r in rs) for what in ("test_last", "test_selected")}
        worst = {what: min(getattr(r, what) for r in rs) for what in ("test_last", "test_selected")}
        for name, (what, pick) in RULES.items():
            if name.startswith("default") and not any(r.cell == DEFAULT for r in rs):
                continue
            r = pick(rs)
            out.append({"seed": seed, "rule": name, "lam": r.lam, "beta": r.beta, "test": getattr(r, what),
                        "regret": oracle[what] - getattr(r, what), "grid_worst": worst[what]})
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either side is constant (undefined)."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


GAPS = (0.0, 1.0, 3.0)  # test-accuracy gaps (points) that bin the pairs of cells: < 1, 1-3, >= 3


def concordance(runs: list[Run], when: str) -> list[dict]:
    """Every pair of cells trained on one seed, binned by their test-accuracy gap (``GAPS``): how many
    pairs the noisy validation split orders as the test set does (``when``: "last" or "selected" epoch).
    A tie on the split counts as not ordered; pairs tied on test are left out."""
    bins = [{"from": lo, "to": hi, "pairs": 0, "ordered": 0} for lo, hi in zip(GAPS, GAPS[1:] + (math.inf,))]
    for seed in sorted({r.seed for r in runs}):
        rs = [r for r in runs if r.seed == seed]
        for a, b in itertools.combinations(rs, 2):
            test = getattr(a, f"test_{when}") - getattr(b, f"test_{when}")
            val = getattr(a, f"val_{when}") - getattr(b, f"val_{when}")
            if test == 0:
                continue
            gap = round(100 * abs(test), 6)  # 0.47 - 0.45 is 1.99999... points: compare at the figures' precision
            row = next(x for x in bins if x["from"] <= gap < x["to"])
            row["pairs"] += 1
            row["ordered"] += (test > 0) == (val > 0) and val != 0
    return bins


def agreement(runs: list[Run], classes: int = 10) -> dict:
    """How far noisy validation tells the cells apart as the test set does.

    ``spearman``: per complete seed, the rank correlation across cells of noisy-validation and test
    accuracy (last; selected), for grids of 2 cells or more. ``pairs``: :func:`concordance` at the last
    and the selected epoch. ``fit``: noisy val = a + b test over every epoch of every run (least squares),
    with the residual standard deviation (None under 3 epochs), beside the noise model's slope
    1 - r K / (K - 1) for K = ``classes``, r the runs' mean realised rate (of the whole noisy subset: the
    validation split's own rate differs by its sampling noise).
    """
    ranks = {}
    for seed in complete_seeds(runs):
        rs = [r for r in runs if r.seed == seed]
        if len(rs) < 2:
            continue
        ranks[seed] = {"last": spearman([r.val_last for r in rs], [r.test_last for r in rs]),
                       "selected": spearman([r.val_selected for r in rs], [r.test_selected for r in rs])}
    pairs = {what: concordance(runs, what) for what in ("last", "selected")}
    points = np.array([p for r in runs for p in r.curve])
    fit = None
    if len(points) >= 3:
        slope, intercept = np.polyfit(points[:, 0], points[:, 1], 1)
        residual = points[:, 1] - (intercept + slope * points[:, 0])
        fit = {"slope": float(slope), "intercept": float(intercept), "residual_std": float(residual.std(ddof=2)),
               "points": len(points)}
    rates = [r.realised_rate for r in runs if r.realised_rate is not None]
    rate = statistics.mean(rates) if rates else None
    return {"spearman": ranks, "pairs": pairs, "fit": fit, "realised_rate": rate, "model_slope": None if rate is None else 1 - rate * classes / (classes - 1)}


def report_markdown(runs: list[Run], classes: int = 10) -> str:
    lams, betas = axes(runs)
    seeds = sorted({r.seed for r in runs})
    parts = [f"{len(runs)} runs: lam {', '.join(f'{x:g}' for x in lams)} x beta {', '.join(f'{x:g}' for x in betas)}, "
             f"seeds {', '.join(map(str, seeds))} (every cell: {', '.join(map(str, complete_seeds(runs))) or 'none'}). "
             "Accuracy in %, mean ± sample std (n seeds); selected = the epoch of best noisy-validation accuracy.",
             "", table_markdown(runs)]
    picks = choices(runs)
    if picks:
        parts += ["", "| seed | rule | lam | beta | test accuracy | regret vs the test set's pick | worst cell |",
                  "|---|---|---|---|---|---|---|"]
        parts += [f"| {p['seed']} | {p['rule']} | {p['lam']:g} | {p['beta']:g} | {100 * p['test']:.1f} | "
                  f"{100 * p['regret']:.1f} | {100 * p['grid_worst']:.1f} |" for p in picks]
    agree = agreement(runs, classes)
    for seed, rho in agree["spearman"].items():
        shown = {k: "undefined (constant)" if v is None else f"{v:.2f}" for k, v in rho.items()}
        parts += ["", f"Seed {seed}: rank correlation of noisy validation with test across the cells "
                      f"{shown['last']} at the last epoch, {shown['selected']} at the selected epoch."]
    for when, bins in agree["pairs"].items():
        words = [f"gap {b['from']:g}" + ("+" if math.isinf(b["to"]) else f"–{b['to']:g}") + f": {b['ordered']}/{b['pairs']}"
                 for b in bins]
        parts += ["", f"Pairs of cells on one seed that noisy validation orders as test does, by their test gap in "
                      f"points ({when} epoch): {'; '.join(words)}."]
    fit = agree["fit"]
    if fit is not None:
        line = (f"Over all {fit['points']} epochs: noisy val = {100 * fit['intercept']:.1f} + {fit['slope']:.2f} x "
                f"test (%), residual std {100 * fit['residual_std']:.1f} points")
        if agree["model_slope"] is not None:
            line += (f"; the noise model's slope at the realised rate {agree['realised_rate']:.3f} is "
                     f"{agree['model_slope']:.2f}")
        parts += ["", line + "."]
    return "\n".join(parts) + "\n"


def heatmaps(runs: list[Run], path: str | Path, seed: int) -> None:
    """lam x beta panels for one seed: rows last / selected epoch, columns test / noisy validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    lams, betas = axes(runs)
    cells = {r.cell: r for r in runs if r.seed == seed}
    panels = (("test_last", "clean test, last epoch"), ("val_last", "noisy validation, last epoch"),
              ("test_selected", "clean test, selected epoch"), ("val_selected", "noisy validation, selected epoch"))
    fig, grid = plt.subplots(2, 2, figsize=(6.0, 6.6), constrained_layout=True)
    for ax, (what, title) in zip(grid.flat, panels):
        values = np.array([[100 * getattr(cells[(lam, beta)], what) for beta in betas] for lam in lams])
        low, high = values.min(), values.max()
        ax.imshow(values, cmap="viridis", vmin=low, vmax=high if high > low else low + 1)
        for (a, lam), (b, beta) in itertools.product(enumerate(lams), enumerate(betas)):
            dark = values[a, b] < (low + high) / 2
            text = f"{values[a, b]:.1f}" + ("\n(default)" if (lam, beta) == DEFAULT else "")
            ax.text(b, a, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        a, b = np.unravel_index(np.argmax(values), values.shape)  # the first of equal values, as choices() picks
        ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        ax.set_xticks(range(len(betas)), [f"{x:g}" for x in betas])
        ax.set_yticks(range(len(lams)), [f"{x:g}" for x in lams])
        ax.set_xlabel("beta")
        ax.set_ylabel("lam")
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"ELR accuracy (%), seed {seed}; red box: each panel's best cell", fontsize=10)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="folders holding the finished runs (searched recursively)")
    parser.add_argument("--out", help="folder for heatmaps.png, table.md and grid.json (default: print the table only)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes, for the noise model's slope (default 10)")
    parser.add_argument("--seed", type=int, help="the seed of the heat maps (default: the lowest seed with every cell)")
    args = parser.parse_args(argv)
    try:
        runs = collect(args.dirs)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.classes < 2:
        print(f"error: --classes must be at least 2, got {args.classes}", file=sys.stderr)
        return 2
    text = report_markdown(runs, args.classes)
    print(text, end="")
    if args.seed is not None and not args.out:
        print("note: --seed chooses the heat maps' seed, and only --out writes them", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        full = complete_seeds(runs)
        seed = args.seed if args.seed is not None else (full[0] if full else None)
        if seed is not None and seed not in full:
            print(f"error: --seed {seed} does not have every cell; seeds that do: {full or 'none'}", file=sys.stderr)
            return 2
        if seed is not None:
            heatmaps(runs, out / "heatmaps.png", seed)
        else:
            print("note: no seed has every cell, so no heat maps", file=sys.stderr)
        (out / "table.md").write_text(text)
        record = {"runs": [{k: v for k, v in asdict(r).items() if k != "curve"} for r in runs],
                  "choices": choices(runs), "agreement": agreement(runs, args.classes)}
        (out / "grid.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
