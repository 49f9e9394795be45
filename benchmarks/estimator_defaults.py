"""How ELRClassifier's defaults were chosen: learning rate x schedule, ELR and cross entropy, two noise kinds, 3 seeds.

Data sets that ship with scikit-learn (no download): digits (1797 x 64, 10 classes), wine (178 x 13,
3 classes), breast_cancer (569 x 30, 2 classes) and a make_classification set (2000 x 20, 5 classes,
10 informative features, 2 clusters a class). Each is split 70/30 stratified by the clean labels
(seed 0); the training labels get 40% noise of one kind:

- ``symmetric``: with probability 0.4 a label is replaced by a uniform draw over all classes;
- ``pair`` (class-dependent): class c flips to c+1 (mod C) with probability 0.4; for two classes
  only class 1 flips (to 0), one-sided.

Every fit is ``ELRClassifier(lr=..., lr_schedule=..., lam=3 (or 0 with the cosine schedule), validation_fraction=0.1,
random_state=seed)`` with the other options at their defaults (MLP 256-256, beta 0.7, 200 epochs,
batch 32, SGD momentum 0.9, weight decay 5e-4, standardised features): the network of the epoch with
the best noisy-validation accuracy is kept. A cell records the clean test accuracy after every epoch
(a benchmark-only subclass scores the test set each epoch): at the last epoch (what a fit without
``validation_fraction`` returns, there on all training rows), at the epoch the noisy validation split
selects, and the best over epochs (an oracle); the noisy-validation accuracy at the last and the
selected epoch; the AUROC of the kept ``label_quality_`` against the true flips (training rows); and
whether ELRClassifier warned of a collapse. Defaults are chosen from the noisy-validation columns
only; the test columns say whether that choice was right.

Cells are cached in the output JSON, so an interrupted run resumes; ``--shard i/n`` splits the grid
over processes (each writes its own file; ``--merge`` joins them).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/estimator_defaults.py --shard 0/2 &
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/estimator_defaults.py --shard 1/2 &
    .venv/bin/python benchmarks/estimator_defaults.py --merge      # table of means over seeds
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "estimator"
LRS = (0.003, 0.01, 0.03, 0.05)
SCHEDULES = ("cosine", "constant")
LAMS = (3.0, 0.0)
NOISES = ("symmetric", "pair")
SEEDS = (0, 1, 2)
DATASETS = ("digits", "wine", "breast_cancer", "synthetic")
RATE = 0.4


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    if name == "synthetic":
        return datasets.make_classification(n_samples=2000, n_features=20, n_informative=10, n_redundant=4,
                                            n_classes=5, n_clusters_per_class=2, random_state=0)
    return getattr(datasets, f"load_{name}")(return_X_y=True)


def noisy_labels(y: np.ndarray, kind: str, seed: int, rate: float = RATE) -> np.ndarray:
    """``symmetric``: a uniform redraw with probability ``rate``; ``pair``: c -> c+1 (one-sided 1 -> 0 for two classes)."""
    from elr import noise

    num_classes = int(y.max()) + 1
    if kind == "symmetric":
        return noise.symmetric(y, rate, num_classes, seed=seed)
    T = np.eye(num_classes)
    if num_classes == 2:  # one-sided: only class 1 flips
        T[1] = (rate, 1 - rate)
    else:
        for c in range(num_classes):
            T[c, c], T[c, (c + 1) % num_classes] = 1 - rate, rate
    return noise.from_transition_matrix(y, T, seed=seed)


def probe_class():
    """ELRClassifier that also scores a clean test set after every epoch (``history_[i]['test_acc']``)."""
    from elr import ELRClassifier
    from elr.data import InMemoryDataset

    class Probe(ELRClassifier):
        def _train(self, engine, method, *, with_validation):
            X_test, y_test = self.probe_test
            index = np.searchsorted(self.classes_, y_test)
            engine.data.test = InMemoryDataset(self._scaled(X_test), index, num_classes=len(self.classes_))
            return super()._train(engine, method, with_validation=with_validation)

    return Probe


def probe_fit(split: tuple, noisy: np.ndarray, **params) -> dict:
    """Fit the probe with a 10% noisy validation split; its test and validation accuracy per epoch and flag quality.

    ``split`` is (X_train, X_test, y_train, y_test) with clean labels; ``noisy`` the training labels fitted.
    """
    from sklearn.exceptions import ConvergenceWarning

    from elr import detection_quality

    X_train, X_test, y_train, y_test = split
    clf = probe_class()(validation_fraction=0.1, **params)
    clf.probe_test = (X_test, y_test)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(X_train, noisy)
    seconds = time.perf_counter() - start
    wrong = noisy != y_train
    trained = ~clf.validation_mask_
    q = detection_quality(clf.label_quality_[trained], clf.label_issues_[trained], wrong[trained])
    h = clf.history_
    kept = h[clf.best_epoch_ - 1]
    assert abs(kept["test_acc"] - clf.score(X_test, y_test)) < 1e-9  # the kept network is that epoch's
    return {
        "test_last": h[-1]["test_acc"], "test_selected": kept["test_acc"], "test_best": max(r["test_acc"] for r in h),
        "val_last": h[-1]["val_acc"], "val_selected": kept["val_acc"],
        "selected_epoch": clf.best_epoch_,
        "realised_noise": float(wrong.mean()),
        "auroc_selected": q["auroc"],
        "collapse_warning": any(issubclass(w.category, ConvergenceWarning) for w in caught),  # ELR's only warning
        "seconds": seconds,
    }


def cell(dataset: str, kind: str, seed: int, lr: float, schedule: str, lam: float) -> dict:
    from sklearn.model_selection import train_test_split

    X, y = load(dataset)
    split = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    noisy = noisy_labels(split[2], kind, seed=1000 + seed)
    fit = probe_fit(split, noisy, lr=lr, lr_schedule=schedule, lam=lam, random_state=seed)
    return {"dataset": dataset, "noise": kind, "seed": seed, "lr": lr, "schedule": schedule, "lam": lam, **fit}


def key(c: dict) -> str:
    return f"{c['dataset']}|{c['noise']}|{c['seed']}|{c['lr']}|{c['schedule']}|{c['lam']}"


def run(shard: int, shards: int) -> None:
    import torch

    torch.set_num_threads(1)
    path = OUT / f"defaults.part{shard}.json"
    done = {key(c): c for c in json.loads(path.read_text())} if path.exists() else {}
    grid = list(itertools.product(SEEDS, NOISES, LRS, SCHEDULES, LAMS, DATASETS))
    for i, (seed, kind, lr, schedule, lam, dataset) in enumerate(grid):
        if i % shards != shard:
            continue
        if lam == 0.0 and schedule != "cosine":  # cross entropy is the reference: one schedule
            continue
        probe = {"dataset": dataset, "noise": kind, "seed": seed, "lr": lr, "schedule": schedule, "lam": lam}
        if key(probe) in done:
            continue
        c = cell(dataset, kind, seed, lr, schedule, lam)
        done[key(c)] = c
        path.write_text(json.dumps(list(done.values()), indent=1))
        print(json.dumps(c), flush=True)


def merge() -> None:
    cells = {}
    for part in sorted(OUT.glob("defaults.part*.json")):
        cells.update({key(c): c for c in json.loads(part.read_text())})
    rows = sorted(cells.values(), key=key)
    (OUT / "defaults.json").write_text(json.dumps(rows, indent=1))
    print(f"{len(rows)} cells")
    print("| lam | schedule | lr | noise | test last | test selected | test best | noisy val last | "
          "noisy val selected | worst test last | collapse warnings |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple, list[dict]] = {}
    for c in rows:
        groups.setdefault((c["lam"], c["schedule"], c["lr"], c["noise"]), []).append(c)
    for (lam, schedule, lr, kind), cs in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
        def mean(k):
            return f"{100 * np.mean([c[k] for c in cs]):.1f}"
        print(f"| {lam:g} | {schedule} | {lr:g} | {kind} | {mean('test_last')} | {mean('test_selected')} | "
              f"{mean('test_best')} | {mean('val_last')} | {mean('val_selected')} | "
              f"{100 * min(c['test_last'] for c in cs):.1f} | {sum(c['collapse_warning'] for c in cs)}/{len(cs)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th cell starting at i")
    parser.add_argument("--merge", action="store_true", help="join the parts and print the table")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.merge:
        merge()
        return
    i, n = (int(v) for v in args.shard.split("/"))
    run(i, n)


if __name__ == "__main__":
    main()
