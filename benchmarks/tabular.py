"""The tabular benchmark: ELRClassifier against sklearn and cleanlab's CleanLearning, and its λ/β/lr study.

Data sets that ship with scikit-learn (no download): digits (1797 x 64, 10 classes), breast_cancer
(569 x 30, 2), wine (178 x 13, 3) and ``classification``, a ``make_classification`` task of 20,000
rows x 20 features (15 informative, 3 redundant), 10 classes, 2 clusters a class, ``flip_y=0`` (its
labels are clean). Each is split 70/30 stratified by the clean labels (seed 0, the same split for
every seed); the training labels are kept clean or get noise (``estimator_defaults.noisy_labels``,
noise seed 1000 + seed): ``sym20`` / ``sym40`` (a uniform redraw with probability 0.2 / 0.4) or
``pair40`` (class-dependent: c -> c+1 with probability 0.4; for two classes only 1 -> 0). Every model
sees the same noisy labels and is scored on the clean test labels; one thread a process.

Two parts, each cached cell by cell in ``benchmarks/tabular/<part>.part<i>.json`` (an interrupted run
resumes where it stopped, and cells already joined into ``<part>.json`` are not run again; ``--shard
i/n`` splits a part over processes; ``--report`` joins the parts into ``<part>.json`` and prints the
tables):

- ``table``: 4 data sets x {clean, sym20, sym40, pair40} x seeds 0-4. ``ELRClassifier()`` at its
  defaults; the same network with ``lam=0`` (cross entropy); ``LogisticRegression(max_iter=1000)`` and
  ``MLPClassifier()`` behind a ``StandardScaler``; ``HistGradientBoostingClassifier()``; and cleanlab's
  ``CleanLearning`` (5-fold cross-validation, prune, refit) around each of those three (cleanlab is an
  optional extra: without it those rows are left out, and the run says so). Test accuracy, seconds a
  fit, and for ELR and CleanLearning the label-issue quality against the true flips: AUROC of the
  quality score (``label_quality_`` / ``label_issues_df['label_quality']``) and F1 of the flags
  (``label_issues_`` / ``label_issues_df['is_label_issue']``). The report's "CleanLearning, best base
  per column" picks cleanlab's base by the test set, per data set and column (an oracle in its favour).
- ``grid``: ``ELRClassifier(lam, beta, lr, validation_fraction=0.1)`` for lam in {0, 1, 3, 7} x beta in
  {0.5, 0.7, 0.9} (beta only at 0.7 when lam = 0: it then changes nothing) x lr in {0.003, 0.01, 0.03},
  on digits, breast_cancer and wine with sym40 and pair40 noise, seeds 0-2; a benchmark-only subclass
  scores the clean test set after every epoch, so a cell holds test and noisy-validation accuracy at
  the last epoch and at the epoch the noisy validation split selects.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/tabular.py grid --shard 0/2 > /tmp/grid0.log &
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/tabular.py grid --shard 1/2 > /tmp/grid1.log &
    (the same with ``table``)
    .venv/bin/python benchmarks/tabular.py --report      # tables in Markdown, tabular/heatmaps.png
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from estimator_defaults import noisy_labels, probe_fit  # noqa: E402  (the sibling study's noise and probe)

OUT = Path(__file__).resolve().parent / "tabular"
DATASETS = ("digits", "breast_cancer", "wine", "classification")
NOISES = ("clean", "sym20", "sym40", "pair40")
SEEDS = (0, 1, 2, 3, 4)
BASES = ("LogisticRegression", "MLPClassifier", "HistGradientBoosting")
MODELS = ("ELRClassifier()", "same network, cross entropy (lam=0)", *BASES, *(f"CleanLearning({b})" for b in BASES))
GRID_DATASETS = ("digits", "breast_cancer", "wine")
GRID_NOISES = ("sym40", "pair40")
GRID_SEEDS = (0, 1, 2)
GRID_LAMS = (0.0, 1.0, 3.0, 7.0)
GRID_BETAS = (0.5, 0.7, 0.9)
GRID_LRS = (0.003, 0.01, 0.03)
DEFAULT = {"lam": 3.0, "beta": 0.7, "lr": 0.01}


def split(dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    if dataset == "classification":
        X, y = datasets.make_classification(n_samples=20_000, n_features=20, n_informative=15, n_redundant=3,
                                            n_classes=10, n_clusters_per_class=2, flip_y=0.0, random_state=0)
    else:
        X, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


def labels(y_train: np.ndarray, noise: str, seed: int) -> np.ndarray:
    if noise == "clean":
        return y_train.copy()
    kind = {"sym": "symmetric", "pai": "pair"}[noise[:3]]
    return noisy_labels(y_train, kind, seed=1000 + seed, rate=int(noise[-2:]) / 100)


def quality(scores: np.ndarray, flags: np.ndarray, wrong: np.ndarray) -> dict:
    """AUROC of the scores (lower = more suspect) and F1 of the flags against the true flips."""
    from elr import detection_quality

    q = detection_quality(scores, flags, wrong)
    p, r = q["precision"], q["recall"]
    if r is None:  # no wrong label: nothing to find
        f1 = None
    else:  # nothing flagged finds nothing: F1 0
        f1 = 0.0 if not p or not r else 2 * p * r / (p + r)
    return {"auroc": q["auroc"], "f1": f1, "precision": p, "recall": r, "flagged": q["flagged"]}


def make_models(seed: int) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from elr import ELRClassifier

    bases = {
        "LogisticRegression": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "MLPClassifier": lambda: make_pipeline(StandardScaler(), MLPClassifier(random_state=seed)),
        "HistGradientBoosting": lambda: HistGradientBoostingClassifier(random_state=seed),
    }
    models = {"ELRClassifier()": lambda: ELRClassifier(random_state=seed),
              "same network, cross entropy (lam=0)": lambda: ELRClassifier(lam=0.0, random_state=seed),
              **bases}
    try:
        from cleanlab.classification import CleanLearning
    except ImportError:
        return models
    for name, base in bases.items():
        models[f"CleanLearning({name})"] = lambda base=base: CleanLearning(base(), seed=seed)
    return models


def table_cell(dataset: str, noise: str, seed: int) -> list[dict]:
    from sklearn.exceptions import ConvergenceWarning

    X_train, X_test, y_train, y_test = split(dataset)
    given = labels(y_train, noise, seed)
    wrong = given != y_train
    rows = []
    for name, make in make_models(seed).items():
        model = make()
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(X_train, given)
        seconds = time.perf_counter() - start
        row = {"dataset": dataset, "noise": noise, "seed": seed, "model": name,
               "test_acc": float(model.score(X_test, y_test)), "seconds": seconds,
               "realised_noise": float(wrong.mean()),
               "collapse_warning": any("collapsed" in str(w.message) for w in caught)}
        if hasattr(model, "label_issues_df"):  # cleanlab's CleanLearning
            issues = model.label_issues_df
            row.update(quality(issues["label_quality"].to_numpy(), issues["is_label_issue"].to_numpy(), wrong))
        elif hasattr(model, "label_issues_"):
            row.update(quality(model.label_quality_, model.label_issues_, wrong))
        rows.append(row)
    return rows


def grid_cell(dataset: str, noise: str, seed: int, lam: float, beta: float, lr: float) -> dict:
    data = split(dataset)
    fit = probe_fit(data, labels(data[2], noise, seed), lam=lam, beta=beta, lr=lr, random_state=seed)
    return {"dataset": dataset, "noise": noise, "seed": seed, "lam": lam, "beta": beta, "lr": lr,
            **{k: fit[k] for k in ("test_last", "val_last", "test_selected", "val_selected", "selected_epoch",
                                   "auroc_selected", "seconds", "collapse_warning")}}


def table_tasks() -> list[tuple]:
    return [(d, n, s) for s in SEEDS for d in DATASETS for n in NOISES]


def grid_settings() -> list[tuple[float, float, float]]:
    return [(lam, beta, lr) for lam, beta, lr in itertools.product(GRID_LAMS, GRID_BETAS, GRID_LRS)
            if lam > 0 or beta == DEFAULT["beta"]]


def grid_tasks() -> list[tuple]:
    return [(d, n, s, *setting) for s in GRID_SEEDS for n in GRID_NOISES for setting in grid_settings()
            for d in GRID_DATASETS]


def table_key(r: dict) -> str:
    return f"{r['dataset']}|{r['noise']}|{r['seed']}"


def grid_key(r: dict) -> str:
    return f"{r['dataset']}|{r['noise']}|{r['seed']}|{r['lam']}|{r['beta']}|{r['lr']}"


def stored(part: str) -> list[dict]:
    """Every cell on disk: the joined ``<part>.json`` (the parts may be gone) and then each part, later files winning."""
    cells: dict[str, dict] = {}
    for file in [OUT / f"{part}.json", *sorted(OUT.glob(f"{part}.part*.json"))]:
        if file.exists():
            for r in json.loads(file.read_text()):
                cells[table_key(r) + "|" + r["model"] if part == "table" else grid_key(r)] = r
    return list(cells.values())


def write(path: Path, rows: list[dict]) -> None:
    """Replace the file whole, so a kill or a concurrent --report never sees half of it."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(rows, indent=1))
    os.replace(scratch, path)


def run(part: str, shard: int, shards: int) -> None:
    import torch

    torch.set_num_threads(1)
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{part}.part{shard}.json"
    mine = json.loads(path.read_text()) if path.exists() else []
    if part == "table":
        if importlib.util.find_spec("cleanlab") is None:
            print("cleanlab is not installed (pip install 'elr[cleanlab]'): the CleanLearning rows are left out",
                  flush=True)
        expected = set(make_models(0))
        models: dict[str, set[str]] = {}
        for r in stored(part):
            models.setdefault(table_key(r), set()).add(r["model"])
        for i, (dataset, noise, seed) in enumerate(table_tasks()):
            key = table_key({"dataset": dataset, "noise": noise, "seed": seed})
            if i % shards != shard or expected <= models.get(key, set()):  # done: every model of the cell is there
                continue
            rows = table_cell(dataset, noise, seed)
            mine = [r for r in mine if table_key(r) != key] + rows
            write(path, mine)
            print(json.dumps({"cell": key, **{r["model"]: round(r["test_acc"], 4) for r in rows}}), flush=True)
        return
    keys = {grid_key(r) for r in stored(part)}
    for i, (dataset, noise, seed, lam, beta, lr) in enumerate(grid_tasks()):
        probe = {"dataset": dataset, "noise": noise, "seed": seed, "lam": lam, "beta": beta, "lr": lr}
        if i % shards != shard or grid_key(probe) in keys:
            continue
        mine.append(grid_cell(dataset, noise, seed, lam, beta, lr))
        write(path, mine)
        print(json.dumps(mine[-1]), flush=True)


# ---- report ---------------------------------------------------------------------------------------

def merged(part: str) -> list[dict]:
    """Join the parts into ``<part>.json`` (sorted by data set, noise, seed) and return the rows."""
    rows = sorted(stored(part), key=lambda r: json.dumps([r.get(k) for k in ("dataset", "noise", "seed")]))
    if rows:
        write(OUT / f"{part}.json", rows)
    return rows


def mean_std(values: list[float]) -> str:
    v = 100 * np.asarray(values)
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


CL_BEST = "CleanLearning, best base per column (chosen on the test set)"


def accuracies(rows: list[dict]) -> dict[tuple[str, str, str], list[float]]:
    """Test accuracies per (data set, noise, model); CL_BEST is the CleanLearning row with the best mean there.

    CL_BEST chooses cleanlab's base by the test set, column by column: an oracle in cleanlab's favour,
    the strictest reading of "CleanLearning around the best of those" for ELR to be measured against.
    """
    acc: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        acc.setdefault((r["dataset"], r["noise"], r["model"]), []).append(r["test_acc"])
    for dataset, noise in {(d, n) for d, n, _ in acc}:
        cleaned = [acc[(dataset, noise, m)] for m in MODELS if m.startswith("CleanLearning") and (dataset, noise, m) in acc]
        if cleaned:
            acc[(dataset, noise, CL_BEST)] = max(cleaned, key=np.mean)
    return acc


def report_table(rows: list[dict]) -> None:
    seeds = sorted({r["seed"] for r in rows})
    acc = accuracies(rows)
    seconds: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        seconds.setdefault((r["dataset"], r["model"]), []).append(r["seconds"])
    print(f"\n{len(rows)} fits; seeds {seeds}; test accuracy %, mean ± std over seeds (n when fewer); "
          "best of a column in bold\n")
    print("| data set | model | clean | sym 20% | sym 40% | pair 40% | seconds a fit |")
    print("|---|---|---|---|---|---|---|")
    for dataset in DATASETS:
        best = {n: max((np.mean(acc[(dataset, n, m)]) for m in MODELS if (dataset, n, m) in acc), default=None)
                for n in NOISES}
        for model in MODELS:
            if (dataset, model) not in seconds:
                continue
            out = []
            for noise in NOISES:
                values = acc.get((dataset, noise, model))
                if not values:
                    out.append("–")
                    continue
                text = mean_std(values) + ("" if len(values) == len(seeds) else f" ({len(values)})")
                out.append(f"**{text}**" if np.isclose(np.mean(values), best[noise]) else text)
            print(f"| {dataset} | {model} | {' | '.join(out)} | {np.mean(seconds[(dataset, model)]):.2f} |")
    print("\nMean over the data sets of each data set's mean (n data sets when fewer):\n")
    print("| model | clean | sym 20% | sym 40% | pair 40% | seconds a fit on classification (14,000 rows) |")
    print("|---|---|---|---|---|---|")
    for model in (*MODELS, CL_BEST):
        vals = [[np.mean(acc[(d, n, model)]) for d in DATASETS if (d, n, model) in acc] for n in NOISES]
        if not any(vals):
            continue
        cols = ["–" if not v else f"{100 * np.mean(v):.1f}" + ("" if len(v) == len(DATASETS) else f" ({len(v)})")
                for v in vals]
        secs = seconds.get(("classification", model))
        print(f"| {model} | {' | '.join(cols)} | {'–' if not secs else f'{np.mean(secs):.1f}'} |")
    print("\nWhere ELRClassifier() is not the best (noisy columns) or more than 1 point below the best (clean):\n")
    for dataset, noise in itertools.product(DATASETS, NOISES):
        means = {m: np.mean(acc[(dataset, noise, m)]) for m in MODELS if (dataset, noise, m) in acc}
        if "ELRClassifier()" not in means:
            continue
        top = max(means, key=means.get)
        gap = 100 * (means[top] - means["ELRClassifier()"])
        if (noise != "clean" and gap > 0) or gap > 1:
            print(f"- {dataset}, {noise}: {top} {100 * means[top]:.1f} against ELRClassifier() "
                  f"{100 * means['ELRClassifier()']:.1f} ({gap:.1f} points)")
    print("\nLabel-issue quality against the true flips, mean over seeds: AUROC of the score / F1 of the flags "
          "(no flag: F1 0)\n")
    flaggers = ["ELRClassifier()", *(f"CleanLearning({b})" for b in BASES)]
    print("| data set | noise | " + " | ".join(flaggers) + " |")
    print("|---|---|" + "---|" * len(flaggers))
    for dataset, noise in itertools.product(DATASETS, NOISES[1:]):
        out = []
        for model in flaggers:
            rs = [r for r in rows if (r["dataset"], r["noise"], r["model"]) == (dataset, noise, model)]
            f1 = [r["f1"] if r["f1"] is not None else 0.0 for r in rs]
            out.append(f"{np.mean([r['auroc'] for r in rs]):.3f} / {np.mean(f1):.3f}" if rs else "–")
        if any(o != "–" for o in out):
            print(f"| {dataset} | {noise} | " + " | ".join(out) + " |")


def report_grid(rows: list[dict]) -> None:
    settings = grid_settings()
    print(f"\n{len(rows)} fits; seeds {sorted({r['seed'] for r in rows})}\n")
    print("| lam | beta | lr | sym40 test last | sym40 noisy val last | pair40 test last | pair40 noisy val last | "
          "test selected (both) | worst test last | collapse warnings | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for lam, beta, lr in settings:
        rs = [r for r in rows if (r["lam"], r["beta"], r["lr"]) == (lam, beta, lr)]
        if not rs:
            continue

        def m(noise, k):
            v = [r[k] for r in rs if r["noise"] == noise]
            return f"{100 * np.mean(v):.1f}" if v else "–"
        star = "**" if (lam, beta, lr) == (DEFAULT["lam"], DEFAULT["beta"], DEFAULT["lr"]) else ""
        print(f"| {star}{lam:g}{star} | {beta:g} | {lr:g} | {m('sym40', 'test_last')} | {m('sym40', 'val_last')} | "
              f"{m('pair40', 'test_last')} | {m('pair40', 'val_last')} | "
              f"{100 * np.mean([r['test_selected'] for r in rs]):.1f} | {100 * min(r['test_last'] for r in rs):.1f} | "
              f"{sum(r['collapse_warning'] for r in rs)}/{len(rs)} | {np.mean([r['seconds'] for r in rs]):.1f} |")
    report_choice(rows)


CHOICE_RULES = {
    "fixed default (lam 3, beta 0.7, lr 0.01)": lambda cells: cells[(DEFAULT["lam"], DEFAULT["beta"], DEFAULT["lr"])],
    "best noisy val, whole grid (ELR and CE)": lambda cells: max(cells.values(), key=lambda r: r["val_last"]),
    "best noisy val over lr, lam 3 beta 0.7": lambda cells: max(
        (cells[(3.0, 0.7, lr)] for lr in GRID_LRS), key=lambda r: r["val_last"]),
    "best noisy val, ELR only (lam > 0)": lambda cells: max(
        (r for s, r in cells.items() if s[0] > 0), key=lambda r: r["val_last"]),
    "oracle: best test per run": lambda cells: max(cells.values(), key=lambda r: r["test_last"]),
}


def choices(rows: list[dict]) -> dict[str, dict]:
    """Per rule, the last-epoch test accuracy of the setting it picks in each complete run (data set x noise x seed).

    A rule sees one run's grid of cells; max() keeps the first of equal values, so ties go to the
    setting listed first (grid order: smaller lam, beta, lr). Returns per rule ``per_dataset`` (mean
    test accuracy per data set of ``GRID_DATASETS``), ``mean``, ``worst`` and ``runs``.
    """
    settings = grid_settings()
    by_run: dict[tuple, dict[tuple, dict]] = {}
    for r in rows:
        by_run.setdefault((r["dataset"], r["noise"], r["seed"]), {})[(r["lam"], r["beta"], r["lr"])] = r
    complete = {k: {s: v[s] for s in settings} for k, v in by_run.items() if all(s in v for s in settings)}
    out = {}
    for name, rule in CHOICE_RULES.items():
        chosen = [(k, rule(cells)["test_last"]) for k, cells in complete.items()]
        if not chosen:
            continue
        per = [float(np.mean([t for k, t in chosen if k[0] == d])) if any(k[0] == d for k, _ in chosen) else None
               for d in GRID_DATASETS]
        values = [t for _, t in chosen]
        out[name] = {"per_dataset": per, "mean": float(np.mean(values)), "worst": float(min(values)),
                     "runs": len(values)}
    return out


def best_fixed(rows: list[dict]) -> tuple[tuple, float, float]:
    """The setting with the best mean noisy-validation accuracy at the last epoch, its mean and its mean test accuracy."""
    means = {}
    for setting in grid_settings():
        rs = [r for r in rows if (r["lam"], r["beta"], r["lr"]) == setting]
        if rs:
            means[setting] = (float(np.mean([r["val_last"] for r in rs])), float(np.mean([r["test_last"] for r in rs])))
    pick = max(means, key=lambda s: means[s][0])
    return pick, *means[pick]


def report_choice(rows: list[dict]) -> None:
    """Fixed settings against choosing per fit by noisy-validation accuracy (what an automatic choice would do)."""
    result = choices(rows)
    if not result:
        return
    print(f"\nSetting chosen per run ({next(iter(result.values()))['runs']} complete data set x noise x seed runs), "
          "mean test accuracy at the last epoch\n")
    print("| rule | " + " | ".join(GRID_DATASETS) + " | mean | worst |")
    print("|---|" + "---|" * (len(GRID_DATASETS) + 2))
    for name, r in result.items():
        per = " | ".join("–" if v is None else f"{100 * v:.1f}" for v in r["per_dataset"])
        print(f"| {name} | {per} | {100 * r['mean']:.1f} | {100 * r['worst']:.1f} |")
    (lam, beta, lr), val, test = best_fixed(rows)
    print(f"\nBest fixed setting by mean noisy-validation accuracy: lam {lam:g}, beta {beta:g}, lr {lr:g} "
          f"(noisy val {100 * val:.1f}, test {100 * test:.1f})")


def heatmaps(rows: list[dict]) -> None:
    """Test beside noisy-validation accuracy, lam x beta per lr; one colour scale a row, so the lr panels compare."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(GRID_NOISES) * 2, len(GRID_LRS), figsize=(2.9 * len(GRID_LRS), 2.5 * 2 * len(GRID_NOISES)),
                             constrained_layout=True)
    for i, noise in enumerate(GRID_NOISES):
        for j, what in enumerate(("test_last", "val_last")):
            grids = np.full((len(GRID_LRS), len(GRID_LAMS), len(GRID_BETAS)), np.nan)
            for (k, lr), (a, lam), (b, beta) in itertools.product(enumerate(GRID_LRS), enumerate(GRID_LAMS),
                                                                 enumerate(GRID_BETAS)):
                vals = [r[what] for r in rows if r["noise"] == noise and r["lr"] == lr and r["lam"] == lam
                        and (r["beta"] == beta or lam == 0)]  # beta changes nothing when lam = 0
                grids[k, a, b] = 100 * np.mean(vals) if vals else np.nan
            low, high = np.nanmin(grids), np.nanmax(grids)
            for k, lr in enumerate(GRID_LRS):
                ax = axes[2 * i + j, k]
                ax.imshow(grids[k], cmap="viridis", vmin=low, vmax=high)
                for a, b in itertools.product(range(len(GRID_LAMS)), range(len(GRID_BETAS))):
                    if np.isfinite(grids[k, a, b]):
                        dark = grids[k, a, b] < (low + high) / 2
                        ax.text(b, a, f"{grids[k, a, b]:.1f}", ha="center", va="center", fontsize=8,
                                color="white" if dark else "black")
                ax.set_xticks(range(len(GRID_BETAS)), [f"{b:g}" for b in GRID_BETAS])
                ax.set_yticks(range(len(GRID_LAMS)), [f"{v:g}" for v in GRID_LAMS])
                ax.set_xlabel("beta")
                ax.set_ylabel("lam")
                label = "clean test" if what == "test_last" else "noisy validation"
                ax.set_title(f"{noise}, lr {lr:g}: {label}", fontsize=9)
    fig.suptitle("ELRClassifier accuracy (%) at the last epoch, mean over digits, breast_cancer, wine x 3 seeds\n"
                 "(lam 0 = cross entropy, one fit repeated across beta; one colour scale a row)", fontsize=10)
    fig.savefig(OUT / "heatmaps.png", dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=("table", "grid"), help="which part to run")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th cell starting at i")
    parser.add_argument("--report", action="store_true", help="join the parts and print the tables")
    args = parser.parse_args()
    if args.report:
        table, grid = merged("table"), merged("grid")
        if table:
            report_table(table)
        if grid:
            report_grid(grid)
            heatmaps(grid)
        return
    if args.part is None:
        parser.error("name a part (table or grid) or pass --report")
    try:
        i, n = (int(v) for v in args.shard.split("/"))
    except ValueError:
        parser.error(f"--shard must be i/n with integers, got {args.shard!r}")
    if not 0 <= i < n:
        parser.error(f"--shard i/n needs 0 <= i < n, got {args.shard!r}")
    run(args.part, i, n)


if __name__ == "__main__":
    main()
