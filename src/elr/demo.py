"""The offline demo: CE and ELR side by side on sklearn's digits with 40% symmetric label noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from . import rundir
from .config import Config
from .engine import Progress
from .plots import plot_gradient_runs, plot_runs
from .runs import run_curves
from .two_stage import train_or_resume

LOSSES = ("ce", "elr")  # each trains into the demo folder's subfolder of that name
# the joint summary and figures beside the two runs (the names of a run's own summary and figures)
DEMO_FILES = (*LOSSES, rundir.SUMMARY, rundir.MEMORIZATION_PLOT, rundir.GRADIENT_PLOT)


def demo_config(loss: str, *, epochs: int = 200, seed: int = 0, threads: int | str = "auto") -> Config:
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
        "threads": threads,
    }).validate()


def run_demo(
    out_dir: str | Path,
    *,
    epochs: int = 200,
    seed: int = 0,
    threads: int | str = "auto",
    progress: Callable[[str], Progress | None] | None = None,
) -> dict[str, Any]:
    """Train CE then ELR into ``out_dir/ce`` and ``out_dir/elr``; write a joint summary and plot.

    A second demo into the same folder reuses the finished runs and resumes interrupted ones; a
    folder holding other files, or runs of other settings, is refused and left as it was.

    Returns ``{"rows": [...], "summary": path, "plots": [...]}`` where each row holds the method,
    last-epoch test accuracy, its peak test accuracy and the memorized fraction of wrong labels.
    """
    out = Path(out_dir)
    configs = {loss: demo_config(loss, epochs=epochs, seed=seed, threads=threads) for loss in LOSSES}
    foreign = rundir.foreign_entries(out, DEMO_FILES)
    if foreign:
        raise FileExistsError(f"{out} holds {foreign[0]!r}, which is not the demo's; choose another --out")
    for loss, config in configs.items():  # both runs are checked before either trains
        decision = rundir.decide(config, out / loss)
        if decision.action == "refuse":
            raise FileExistsError(f"{out / loss} {decision.reason}; choose another --out")
    rows, runs = [], []
    for loss, config in configs.items():
        _, summary = train_or_resume(config, out / loss, progress=progress(loss) if progress else None)
        runs.append(out / loss)
        rows.append({
            "method": loss.upper(),
            "test_acc": summary["last"]["test_acc"],
            "best_test_acc": summary["best_test_acc"],
            "memorized": summary["last"].get("mem_wrong_memorized"),
            "realised_noise": summary["noise"]["realised_rate"],
        })
    summary_path = rundir.write_summary(out, {"setting": "digits, 40% symmetric noise, MLP", "rows": rows})
    plots: list[str] = []
    figures, curves = rundir.plot_paths(out), run_curves(runs)
    try:
        plots.append(str(plot_runs(curves, figures["memorization"])))
        plots.append(str(plot_gradient_runs(curves, figures["gradient_terms"])))
    except ImportError:  # matplotlib is an optional extra
        pass
    return {"rows": rows, "summary": str(summary_path), "plots": plots}
