"""Which rows and which flags: ELR+'s two target banks combined four ways, and `elr detect`'s argmax rule
against cleanlab's filters on the same targets.

Setting: sklearn's digits (bundled, offline), 1438 training labels, symmetric noise 40% and 80%, seeds 0-2,
``configs/cpu/digits_elr_sym40.yaml`` (MLP 64-512-512-10, 50 epochs, constant lr, 10% noisy validation split
scored by the final model); ``--epochs 200`` trains as long as the demo, where the targets start to memorize. For every seed and noise rate, on the same noisy labels:

- **ELR+ banks** (the preset with ``method: elr_plus``, two networks, weight averaging, mixup, EMA decay
  0.997 ramped over 600 steps): each network's targets alone (``targets_net1.npy``, ``targets_net2.npy``),
  their mean (what ``targets.npy`` holds) and their normalised product, combined on the target rows (the
  held-out rows are the same model prediction in every variant). Ranking by self-confidence (AUROC,
  average precision against the true flips) and the argmax rule's precision and recall.
- **Flag rules** on one single-network ELR run's ``targets.npy``: `elr detect`'s argmax rule against
  ``cleanlab.filter.find_label_issues`` with each ``filter_by`` (what ``--rule cleanlab:FILTER`` does).
  The ranking (self-confidence) is the same for every rule, so only precision and recall differ.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/label_issues_banks_rules.py --out /tmp/banks               # ~3 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/label_issues_banks_rules.py --out /tmp/banks --epochs 200  # ~12 min
    .venv/bin/python benchmarks/label_issues_banks_rules.py --run RUN_DIR   # the banks of any finished ELR+ run

Runs are kept under ``--out`` and reused; the tables go to stdout and ``benchmarks/label_issues/banks_rules.json``.
Needs cleanlab (``pip install 'elr[cleanlab]'``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from elr import rundir
from elr.config import Config
from elr.label_issues import CLEANLAB_FILTERS, cleanlab_label_issues, detection_quality, label_issue_table
from elr.runs import train

PRESET = Path(__file__).resolve().parents[1] / "configs" / "cpu" / "digits_elr_sym40.yaml"
RESULTS = Path(__file__).resolve().parent / "label_issues" / "banks_rules.json"
ELR_PLUS = {"networks": 2, "weight_averaging": True, "mixup": True, "mixup_alpha": 1.0, "ema_decay": 0.997,
            "ema_schedule": "sigmoid", "ema_ramp_steps": 600, "lam_ramp_steps": 0, "predict_with": "networks"}
BANKS = ("network 1", "network 2", "mean (targets.npy)", "product")
RULES = ("argmax", *(f"cleanlab:{f}" for f in CLEANLAB_FILTERS))


def config(seed: int, rate: float, plus: bool, epochs: int) -> Config:
    changes = [f"seed={seed}", f"noise.rate={rate}", f"optim.epochs={epochs}", "monitor.memorization=false"]
    if plus:
        changes.append("method=elr_plus")
    c = Config.load(PRESET, changes)
    if plus:
        c = Config.from_dict({**c.to_dict(), "elr_plus": ELR_PLUS})
    return c.validate()


def trained(c: Config, out: Path) -> Path:
    if not (out / rundir.SUMMARY).is_file():
        train(c, out)
    return out


def quality(noisy: np.ndarray, wrong: np.ndarray, probs: np.ndarray, flags: np.ndarray | None = None) -> dict:
    table = label_issue_table(noisy, probs)
    is_issue = table["is_issue"] if flags is None else flags[table["index"]]
    q = detection_quality(table["score"], is_issue, wrong[table["index"]])
    return {k: q[k] for k in ("auroc", "average_precision", "precision", "recall", "flagged")}


def normalized(rows: np.ndarray) -> np.ndarray:
    return rows / rows.sum(axis=1, keepdims=True)


def bank_quality(run: Path) -> dict:
    """Detection quality of an ELR+ run's rows: each network alone, their mean and their product."""
    noisy, true = rundir.read_noisy_labels(run), rundir.read_true_labels(run)
    wrong = noisy != true
    combined, sources = rundir.read_targets(run)
    net1, net2 = (np.asarray(b, dtype=np.float64) for b in rundir.read_network_targets(run))
    own = sources == "targets"
    product = net1.copy()
    product[own] = normalized(net1[own] * net2[own])
    rows = dict(zip(BANKS, (net1, net2, np.asarray(combined, dtype=np.float64), product)))
    return {name: quality(noisy, wrong, r) for name, r in rows.items()}


def measure(out: Path, seeds: list[int], rates: list[float], epochs: int) -> dict:
    results: dict = {"banks": {}, "rules": {}}
    for rate in rates:
        for seed in seeds:
            key = f"sym{round(rate * 100)}/seed{seed}"
            name = f"sym{round(rate * 100)}_{epochs}ep_seed{seed}"
            plus = trained(config(seed, rate, True, epochs), out / f"elr_plus_{name}")
            results["banks"][key] = bank_quality(plus)

            elr = trained(config(seed, rate, False, epochs), out / f"elr_{name}")
            noisy, true = rundir.read_noisy_labels(elr), rundir.read_true_labels(elr)
            wrong = noisy != true
            targets = np.asarray(rundir.read_targets(elr)[0], dtype=np.float64)
            results["rules"][key] = {"argmax": quality(noisy, wrong, targets)}
            for f in CLEANLAB_FILTERS:
                flags = cleanlab_label_issues(noisy, targets, filter_by=f)
                results["rules"][key][f"cleanlab:{f}"] = quality(noisy, wrong, targets, flags)
            print(f"done {key}", flush=True)
    return results


def table(results: dict, part: str, names: tuple[str, ...], rates: list[float], epochs: int) -> str:
    lines = []
    for rate in rates:
        prefix = f"sym{round(rate * 100)}/"
        cells = [v for k, v in results[part].items() if k.startswith(prefix)]
        lines.append(f"\n{part} at {round(rate * 100)}% symmetric noise, {epochs} epochs, mean ± std over "
                     f"{len(cells)} seeds\n")
        lines.append("| | AUROC | average precision | flagged | precision | recall |")
        lines.append("|---|---|---|---|---|---|")
        for name in names:
            def stat(metric):
                v = np.array([c[name][metric] for c in cells], dtype=np.float64)
                return f"{v.mean():.3f} ± {v.std():.3f}" if metric != "flagged" else f"{v.mean():.0f}"
            lines.append(f"| {name} | " + " | ".join(stat(m) for m in ("auroc", "average_precision", "flagged",
                                                                      "precision", "recall")) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where the runs go (reused when there)")
    parser.add_argument("--run", type=Path, help="instead: the four bank combinations of this finished ELR+ run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.4, 0.8])
    parser.add_argument("--epochs", type=int, default=50, help="the preset's 50 (default); the demo's 200 memorize")
    args = parser.parse_args()
    if args.run is not None:
        for name, q in bank_quality(args.run).items():
            print(f"| {name} | " + " | ".join(f"{q[m]:.3f}" if m != "flagged" else str(q[m]) for m in
                                              ("auroc", "average_precision", "flagged", "precision", "recall")) + " |")
        return
    if args.out is None:
        parser.error("--out (or --run) is required")
    results = measure(args.out, args.seeds, args.rates, args.epochs)
    print(table(results, "banks", BANKS, args.rates, args.epochs))
    print(table(results, "rules", RULES, args.rates, args.epochs))
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    saved[f"{args.epochs} epochs"] = {"seeds": args.seeds, "rates": args.rates, **results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
