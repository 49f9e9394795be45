"""The offline demo: CE and ELR side by side on sklearn's digits with 40% symmetric label noise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .checkpoint import atomic_write_text
from .config import Config
from .engine import CHECKPOINT, METRICS, Progress
from .runs import CONFIG_FILE, NOISE_FILE, NOISY_LABELS, load_run_config, resume, train


def demo_config(loss: str, *, epochs: int = 200, seed: int = 0) -> Config:
    """The demo's setting: an MLP 64-512-512-10, SGD lr 0.05, batch 64, constant schedule."""
    loss_section: dict[str, Any] = {"name": loss}
    if loss == "elr":
        loss_section.update(lam=3.0, beta=0.7)
    return Config.from_dict({
        "seed": seed,
        "data": {"dataset": "digits"},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": "mlp", "hidden": [512, 512]},
        "loss": loss_section,
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 64,
                  "epochs": epochs, "schedule": "constant"},
        "monitor": {"memorization": True, "gradient_terms": True},
        "device": "cpu",
    }).validate()


def _train_or_resume(config: Config, run_dir: Path, progress: Progress | None) -> dict[str, Any]:
    """A second ``make demo`` reuses finished runs and resumes interrupted ones."""
    if (run_dir / CHECKPOINT).is_file():
        if load_run_config(run_dir).to_dict() != config.to_dict():
            raise FileExistsError(f"{run_dir} holds a demo run with other settings; choose another --out")
        return resume(run_dir, progress=progress)
    for name in (CONFIG_FILE, NOISE_FILE, NOISY_LABELS, METRICS):  # killed before its first checkpoint
        (run_dir / name).unlink(missing_ok=True)
    return train(config, run_dir, progress=progress)


def run_demo(
    out_dir: str | Path,
    *,
    epochs: int = 200,
    seed: int = 0,
    progress: Callable[[str], Progress | None] | None = None,
) -> dict[str, Any]:
    """Train CE then ELR into ``out_dir/ce`` and ``out_dir/elr``; write a joint summary and plot.

    Returns ``{"rows": [...], "summary": path, "plots": [...]}`` where each row holds the method,
    last-epoch test accuracy, its peak test accuracy and the memorized fraction of wrong labels.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, runs = [], []
    for loss in ("ce", "elr"):
        summary = _train_or_resume(demo_config(loss, epochs=epochs, seed=seed), out / loss,
                                   progress(loss) if progress else None)
        runs.append(out / loss)
        rows.append({
            "method": loss.upper(),
            "test_acc": summary["last"]["test_acc"],
            "best_test_acc": summary["best_test_acc"],
            "memorized": summary["last"].get("mem_wrong_memorized"),
            "realised_noise": summary["noise"]["realised_rate"],
        })
    atomic_write_text(out / "summary.json", json.dumps({"setting": "digits, 40% symmetric noise, MLP", "rows": rows},
                                                       indent=2) + "\n")
    plots: list[str] = []
    try:
        from .plots import plot_runs

        from .plots import plot_gradient_runs

        plots.append(str(plot_runs(runs, out / "memorization.png")))
        plots.append(str(plot_gradient_runs(runs, out / "gradient_terms.png")))
    except ImportError:
        pass
    return {"rows": rows, "summary": str(out / "summary.json"), "plots": plots}
