"""The README's "Tables and embeddings" example, measured: ELRClassifier against sklearn on noisy digits.

sklearn's digits (1797 x 64, bundled), split 70/30 stratified (seed 0); the 1257 training labels
get 40% symmetric noise (``elr.noise.symmetric``, seeds 0, 1, 2); every model sees the same noisy
labels and is scored on the clean 540 test labels. Rows:

- ``ELRClassifier()``: the defaults (MLP 256-256, lam 3, beta 0.7, 200 epochs, lr 0.01 cosine,
  batch 32, standardised features), ``random_state=seed``;
- the same network and settings with ``lam=0`` (cross entropy; the targets are still kept, so it also
  flags rows);
- ``MLPClassifier()`` and ``LogisticRegression()`` at sklearn's defaults (``max_iter=1000`` for the
  latter) behind a ``StandardScaler``, ``random_state=seed``;
- with cleanlab installed, ``CleanLearning(LogisticRegression)`` (5-fold cross-validation, prune,
  refit): what a cleanlab user picks; its flags are ``label_issues_df['is_label_issue']``.

Flag precision and recall are against the true flips; seconds are one fit on one torch thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tabular_digits.py      # ~2 min on one core
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "estimator" / "tabular_digits.json"
SEEDS = (0, 1, 2)


def main() -> None:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from elr import ELRClassifier, noise

    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    models = {
        "ELRClassifier()": lambda s: ELRClassifier(random_state=s),
        "same network, lam=0 (cross entropy)": lambda s: ELRClassifier(lam=0.0, random_state=s),
        "MLPClassifier()": lambda s: make_pipeline(StandardScaler(), MLPClassifier(random_state=s)),
        "LogisticRegression()": lambda s: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    }
    try:
        from cleanlab.classification import CleanLearning

        models["cleanlab CleanLearning(LogisticRegression)"] = lambda s: CleanLearning(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), seed=s)
    except ImportError:
        print("cleanlab is not installed: its row is left out")
    rows = []
    for seed in SEEDS:
        noisy = noise.symmetric(y_train, 0.4, 10, seed=seed)
        wrong = noisy != y_train
        for name, make in models.items():
            model = make(seed)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X_train, noisy)
            seconds = time.perf_counter() - start
            row = {"model": name, "seed": seed, "noise": float(wrong.mean()),
                   "test_acc": float(model.score(X_test, y_test)), "seconds": seconds}
            flags = getattr(model, "label_issues_", None)
            if hasattr(model, "label_issues_df"):  # cleanlab's CleanLearning
                flags = model.label_issues_df["is_label_issue"].to_numpy()
            if flags is not None:
                row.update(flagged=int(flags.sum()), precision=float((flags & wrong).sum() / max(flags.sum(), 1)),
                           recall=float((flags & wrong).sum() / wrong.sum()))
            rows.append(row)
            print(json.dumps(row), flush=True)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=1))
    print("\n| model | test accuracy (mean ± std, 3 seeds) | flag precision | flag recall | seconds a fit |")
    print("|---|---|---|---|---|")
    for name in models:
        rs = [r for r in rows if r["model"] == name]
        acc = 100 * np.array([r["test_acc"] for r in rs])
        flags = (f"{np.mean([r['precision'] for r in rs]):.3f} | {np.mean([r['recall'] for r in rs]):.3f}"
                 if "precision" in rs[0] else "– | –")
        print(f"| {name} | {acc.mean():.1f} ± {acc.std(ddof=1):.1f} | {flags} | "
              f"{np.mean([r['seconds'] for r in rs]):.2f} |")


if __name__ == "__main__":
    main()
