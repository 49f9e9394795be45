"""Matplotlib figures: training curves (paper Figure 1), the linear model of Section 3, sweep reports."""

from __future__ import annotations

import json
from pathlib import Path


# ---- training curves (paper Figure 1) ---------------------------------------------------------

_MEM_PANELS = (
    ("clean labels", (("mem_clean_correct", "predicted correctly", "tab:blue"),
                      ("mem_clean_incorrect", "predicted incorrectly", "tab:gray"))),
    ("wrong labels", (("mem_wrong_true", "predicted as true class", "tab:green"),
                      ("mem_wrong_memorized", "memorized (given wrong label)", "tab:red"),
                      ("mem_wrong_other", "other class", "tab:gray"))),
)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'elr[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(history, key):
    pairs = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
    return [p[0] for p in pairs], [100 * p[1] for p in pairs]


def _draw_memorization(axes, history, label_prefix=""):
    for ax, (title, lines) in zip(axes, _MEM_PANELS):
        for key, label, colour in lines:
            xs, ys = _series(history, key)
            if xs:
                ax.plot(xs, ys, label=label, color=colour)
        ax.set_title(f"{label_prefix}{title}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("% of training examples")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")


def _draw_accuracy(ax, history, title):
    for key, label in (("train_acc", "train (noisy labels)"), ("val_acc", "validation (noisy labels)"),
                       ("test_acc", "test (clean labels)")):
        xs, ys = _series(history, key)
        if xs:
            ax.plot(xs, ys, label=label)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def plot_training(history: list[dict], out_dir, *, title: str = "") -> list[Path]:
    """Write ``accuracy.png`` and, when the monitor ran, ``memorization.png`` for one run.

    Parameters
    ----------
    history : list of dict
        The per-epoch records of ``metrics.jsonl``.
    out_dir : path
        Directory to write into.
    title : str
        Names the method and noise, shown above the figures.
    """
    plt = _pyplot()
    out_dir = Path(out_dir)
    written = []
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    _draw_accuracy(ax, history, title or "accuracy")
    fig.savefig(out_dir / "accuracy.png", dpi=110)
    plt.close(fig)
    written.append(out_dir / "accuracy.png")
    if any(r.get("mem_clean_correct") is not None for r in history):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
        _draw_memorization(axes, history)
        fig.suptitle(title)
        fig.savefig(out_dir / "memorization.png", dpi=110)
        plt.close(fig)
        written.append(out_dir / "memorization.png")
    return written


def plot_runs(run_dirs, path) -> Path:
    """Figure 1 side by side: one row per run (clean-label panel, wrong-label panel, test accuracy).

    Parameters
    ----------
    run_dirs : sequence of path
        Run directories holding ``metrics.jsonl`` and ``config.yaml``.
    path : path
        The PNG to write.
    """
    from .runs import load_run_config, run_title

    plt = _pyplot()
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("run_dirs must name at least one run directory")
    fig, axes = plt.subplots(len(run_dirs), 3, figsize=(15, 3.8 * len(run_dirs)), constrained_layout=True,
                             squeeze=False)
    for row, run_dir in zip(axes, run_dirs):
        metrics = run_dir / "metrics.jsonl"
        if not metrics.is_file():
            raise FileNotFoundError(f"{run_dir} has no metrics.jsonl; is it a run directory?")
        history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        title = run_title(load_run_config(run_dir))
        _draw_memorization(row[:2], history, label_prefix=f"{title}\n")
        _draw_accuracy(row[2], history, f"{title}\naccuracy")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
