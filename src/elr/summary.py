"""A finished run's ``summary.json``: its last, selected and best epochs, noise, timing and versions."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import torch

from . import rundir
from .build import true_transition
from .config import Config
from .prepare import PreparedData
from .version import __version__


# how well the targets find the wrong labels (elr.monitor.target_detection), reported at the last and selected epoch
DETECTION_KEYS = ("det_auroc", "det_average_precision", "det_precision", "det_recall", "det_flagged")


def summarize(history: list[dict[str, Any]], config: Config, prepared: PreparedData) -> dict[str, Any]:
    """Final and validation-selected results of a finished run."""
    last = history[-1]
    extra = tuple(f"{name}_{k}" for name in prepared.data.extra_tests for k in ("acc", "top5"))
    pick = ("test_acc", "test_top5", *extra, "val_acc", "mem_wrong_memorized", "mem_clean_correct", *DETECTION_KEYS)

    def row(record: dict[str, Any]) -> dict[str, Any]:
        return {"epoch": record["epoch"], **{k: record[k] for k in pick if k in record}}

    best_det = rundir.best_record(history, "det_auroc")
    chosen = rundir.selected_record(history)
    selected = None if chosen is None else {"by": "val_acc (noisy validation split)", **row(chosen)}
    return {
        "method": config.method,
        "loss": config.loss.name,
        "model": config.model.name,
        "dataset": config.data.dataset,
        "noise": {"type": config.noise.type, "rate": config.noise.rate,
                  "realised_rate": prepared.noise_summary.get("noise_rate"),
                  **({"label_set": config.noise.label_set} if config.noise.label_set else {})},
        "seed": config.seed,
        "epochs": len(history),
        "train_examples": len(prepared.data.train),
        "last": row(last),
        "selected": selected,
        "best_test_acc": max(r["test_acc"] for r in history),
        **({"best_det_auroc": {"epoch": best_det["epoch"], "auroc": best_det["det_auroc"]}} if best_det else {}),
        **({"skipped_images": sum(r.get("skipped_images", 0) for r in history)}  # decode_errors: skip
           if any("skipped_images" in r for r in history) else {}),
        "total_seconds": sum(r["seconds"] for r in history),
        "versions": _versions(),
    }


def estimate_report(config: Config, prepared: PreparedData, estimate: np.ndarray) -> dict[str, Any]:
    """How far the two-stage estimate of T is from the noise model's true T (reported, never used)."""
    try:
        true = true_transition(config, prepared.data.num_classes)
    except ValueError:  # asymmetric noise outside CIFAR-10/100 has no known T here
        true = None
    report: dict[str, Any] = {"file": rundir.TRANSITION, "stage1": rundir.STAGE1,
                              "mean_diagonal": float(np.diag(estimate).mean())}
    if true is not None:
        report["true_mean_diagonal"] = float(np.diag(true).mean())
        report["mean_abs_error"] = float(np.abs(estimate - true).mean())
    return report


def _versions() -> dict[str, str]:
    return {"elr": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
