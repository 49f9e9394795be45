"""Which labels are wrong, side by side: one ELR run (`elr detect`) against cleanlab's K-fold pipeline.

Setting: sklearn's digits (bundled, offline), 1438 training labels, 40% symmetric noise, the demo's MLP
64-512-512-10, SGD lr 0.05 momentum 0.9, batch 64, constant lr. For every seed, on the same noisy labels:

- ELR: one run of ``configs/cpu/digits_elr_sym40.yaml`` (50 epochs, 10% noisy validation split scored
  by the final model), then :func:`elr.detect_label_issues` (self-confidence, argmax rule);
- cleanlab: out-of-sample predicted probabilities from K-fold cross-validation of the same MLP trained
  with cross entropy (K trainings on (K-1)/K of the labels, stratified folds), then
  ``cleanlab.rank.get_label_quality_scores`` (self-confidence) for the ranking and
  ``cleanlab.filter.find_label_issues`` (its default, prune_by_noise_rate) for the flags; with the
  same 50 epochs, and stopped at 15 and 5 (before cross entropy memorizes; a user would have to pick
  the stop without the true labels);
- cleanlab's filter on ELR's ``targets.npy`` (what a cleanlab user does with our file).

AUROC and average precision rank all 1438 labels against the true flips; precision and recall are of
the flags; seconds are the training time (one torch thread). Needs ``pip install cleanlab scikit-learn``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/label_issues_digits.py                 # ~3 min on 1 core
    .venv/bin/python benchmarks/label_issues_digits.py --seeds 0 --folds 3 --ce-epochs 5  # quick look
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from elr import detect_label_issues, detection_quality, rundir
from elr.config import Config, OptimConfig, MonitorConfig
from elr.data import InMemoryDataset
from elr.engine import Engine, TrainData, predict_all
from elr.losses import CrossEntropyLoss
from elr.methods import Runtime, Standard
from elr.models import create_model
from elr.runs import prepare_data, train

PRESET = Path(__file__).resolve().parents[1] / "configs" / "cpu" / "digits_elr_sym40.yaml"


def elr_row(config: Config, out: Path) -> tuple[dict, np.ndarray]:
    start = time.perf_counter()
    train(config, out)
    seconds = time.perf_counter() - start
    table = detect_label_issues(out)
    wrong = table["given_label"] != table["true_label"]
    q = detection_quality(table["score"], table["is_issue"], wrong)
    return {**q, "seconds": seconds, "trainings": 1}, rundir.read_targets(out)[0]


def cross_validated_probs(config: Config, x: torch.Tensor, noisy: np.ndarray, test: InMemoryDataset, *,
                          folds: int, epochs: int, seed: int) -> tuple[np.ndarray, float]:
    """Out-of-sample softmax rows from ``folds`` cross-entropy trainings of the config's MLP."""
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(noisy), 10))
    optim = OptimConfig(**{**config.optim.__dict__, "epochs": epochs})
    start = time.perf_counter()
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(noisy)), noisy)
    for k, (fit_idx, held_idx) in enumerate(split):
        torch.manual_seed(seed * 100 + k)
        model = create_model("mlp", 10, in_features=64, hidden=list(config.model.params["hidden"]))
        method = Standard(model, CrossEntropyLoss(10), optim, Runtime(torch.device("cpu")))
        part = InMemoryDataset(x[fit_idx], torch.from_numpy(noisy[fit_idx]))
        Engine(method, TrainData(train=part, test=test, num_classes=10), optim=optim,
               monitor=MonitorConfig(memorization=False), eval_batch_size=512, seed=seed * 100 + k).fit()
        method.eval()
        held = InMemoryDataset(x[held_idx], torch.from_numpy(noisy[held_idx]))
        probs[held_idx] = torch.softmax(predict_all(method, held, 512).double(), dim=1).numpy()
    return probs, time.perf_counter() - start


def cleanlab_row(noisy: np.ndarray, probs: np.ndarray, true: np.ndarray, seconds: float, trainings: int) -> dict:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    scores = get_label_quality_scores(noisy, probs, method="self_confidence")
    flags = find_label_issues(noisy, probs)
    return {**detection_quality(scores, flags, noisy != true), "seconds": seconds, "trainings": trainings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--ce-epochs", type=int, nargs="+", default=[50, 15, 5],
                        help="epochs of the cross-entropy folds: the ELR run's 50, and earlier stops")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            config = Config.load(PRESET, [f"seed={seed}", "monitor.memorization=false"])
            prepared = prepare_data(config)
            noisy, true = prepared.noisy_labels, prepared.true_labels
            train_set, val_set = prepared.data.train, prepared.data.val
            x = torch.empty((len(noisy), 64))  # the inputs in noisy_labels.npy order
            x[np.setdiff1d(np.arange(len(noisy)), prepared.val_indices)] = train_set.inputs.float()
            x[prepared.val_indices] = val_set.inputs.float()
            elr, targets = elr_row(config, Path(tmp) / f"elr{seed}")
            rows.setdefault("ELR, one run (elr detect)", []).append(elr)
            from cleanlab.filter import find_label_issues

            flags = find_label_issues(noisy, targets.astype(np.float64))
            scores = targets[np.arange(len(noisy)), noisy]
            rows.setdefault("cleanlab's filter on ELR's targets.npy", []).append(
                {**detection_quality(scores, flags, noisy != true), "seconds": elr["seconds"], "trainings": 1})
            for epochs in args.ce_epochs:
                probs, seconds = cross_validated_probs(config, x, noisy, prepared.data.test, folds=args.folds,
                                                       epochs=epochs, seed=seed)
                name = f"cleanlab, {args.folds}-fold CE, {epochs} epochs"
                rows.setdefault(name, []).append(cleanlab_row(noisy, probs, true, seconds, args.folds))
            print(f"seed {seed} done", flush=True)
    print(f"\n{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}); mean (min-max over seeds)\n")
    print("| pipeline | trainings | AUROC | average precision | flagged | precision | recall | training s |")
    print("|---|---|---|---|---|---|---|---|")

    def cell(name: str, values: list[dict], fmt: str) -> str:
        v = np.array([r[name] for r in values], dtype=float)
        return f"{v.mean():{fmt}}" + (f" ({v.min():{fmt}}-{v.max():{fmt}})" if len(v) > 1 else "")

    for name, values in rows.items():
        print(f"| {name} | {values[0]['trainings']} | {cell('auroc', values, '.3f')} | "
              f"{cell('average_precision', values, '.3f')} | {cell('flagged', values, '.0f')} | "
              f"{cell('precision', values, '.3f')} | {cell('recall', values, '.3f')} | {cell('seconds', values, '.1f')} |")
    print(f"\nwrong labels per seed: {[r['wrong'] for r in rows['ELR, one run (elr detect)']]} of "
          f"{rows['ELR, one run (elr detect)'][0]['examples']}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
