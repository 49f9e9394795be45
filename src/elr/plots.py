"""Matplotlib figures: training curves (paper Figure 1), the linear model of Section 3, sweep reports.

Every figure is drawn from what it is given (per-epoch records, titles, tables); nothing here reads a
run directory. Matplotlib is an optional extra, imported when a figure is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .rundir import best_record, plot_paths, selected_record

Curves = Sequence[tuple[str, list[dict]]]  # (title, per-epoch records) of each run, as elr.runs.run_curves reads them


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


def _save(fig, path, dpi: int = 110) -> Path:
    """Write the figure as a PNG and close it (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt  # loaded already: the figure was drawn with it

    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


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
        if ax.get_legend_handles_labels()[1]:  # an epoch without the monitor's keys draws no line
            ax.legend(fontsize=8, loc="best")


_DETECTION_LINES = (("det_auroc", "AUROC", "tab:purple"), ("det_average_precision", "average precision", "tab:orange"),
                    ("det_precision", "precision of the flags", "tab:red"), ("det_recall", "recall of the flags", "tab:green"))


def _has_detection(history) -> bool:
    return any(r.get("det_auroc") is not None for r in history)


def _draw_detection(ax, history, title="wrong labels found by the targets"):
    """How well the ELR targets rank and flag the wrong labels, per epoch (``det_*`` keys)."""
    for key, label, colour in _DETECTION_LINES:
        xs, ys = _series(history, key)
        if xs:
            ax.plot(xs, ys, label=label, color=colour)
    best = best_record(history, "det_auroc")
    if best is not None:
        ax.axvline(best["epoch"], color="tab:purple", linestyle=":", linewidth=1,
                   label=f"best AUROC {best['det_auroc']:.3f} (epoch {best['epoch']})")
    chosen = selected_record(history)
    if chosen is not None and chosen.get("det_auroc") is not None:  # what targets_selected.npz holds
        ax.axvline(chosen["epoch"], color="gray", linestyle="--", linewidth=1,
                   label=f"selected by validation: AUROC {chosen['det_auroc']:.3f} (epoch {chosen['epoch']})")
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
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


def _band(ax, history, key, label, colour):
    rows = [r for r in history if r.get(f"{key}_mean") is not None]
    if not rows:
        return
    xs = [r["epoch"] for r in rows]
    mean = [r[f"{key}_mean"] for r in rows]
    std = [r[f"{key}_std"] for r in rows]
    ax.plot(xs, mean, label=label, color=colour)
    ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                    color=colour, alpha=0.2, linewidth=0)


def _draw_gradient_terms(axes, history, title=""):
    """Figure 2: total true-class coefficient (left), both terms for clean (centre) and wrong (right) labels."""
    panels = (
        ("p - y + lambda g, true class", (("grad_clean_total", "clean labels", "tab:blue"),
                                          ("grad_wrong_total", "wrong labels", "tab:red"))),
        ("clean labels", (("grad_clean_ce", "cross-entropy term p - y", "navy"),
                          ("grad_clean_reg", "regularization term lambda g", "lightskyblue"))),
        ("wrong labels", (("grad_wrong_ce", "cross-entropy term p - y", "darkred"),
                          ("grad_wrong_reg", "regularization term lambda g", "lightcoral"))),
    )
    for ax, (name, lines) in zip(axes, panels):
        for key, label, colour in lines:
            _band(ax, history, key, label, colour)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"{title}\n{name}" if title else name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("coefficient (true class)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")


def _has_gradient_terms(history) -> bool:
    return any(r.get("grad_clean_total_mean") is not None for r in history)


def plot_training(history: list[dict], out_dir, *, title: str = "") -> list[Path]:
    """Write a run's accuracy figure and, when the monitor ran, its memorization and gradient figures.

    The names are those of :func:`elr.rundir.plot_paths`.

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
    paths = plot_paths(out_dir)
    written = []
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    _draw_accuracy(ax, history, title or "accuracy")
    written.append(_save(fig, paths["accuracy"]))
    memorization, detection = any(r.get("mem_clean_correct") is not None for r in history), _has_detection(history)
    if memorization or detection:  # the detection panel beside the memorization curves it explains
        panels = 2 * memorization + detection
        fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), constrained_layout=True, squeeze=False)
        if memorization:
            _draw_memorization(axes[0][:2], history)
        if detection:
            _draw_detection(axes[0][-1], history)
        fig.suptitle(title)
        written.append(_save(fig, paths["memorization"]))
    if _has_gradient_terms(history):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
        _draw_gradient_terms(axes, history)
        fig.suptitle(title)
        written.append(_save(fig, paths["gradient_terms"]))
    return written


def _checked_curves(runs: Curves) -> list[tuple[str, list[dict]]]:
    runs = list(runs)
    if not runs:
        raise ValueError("runs must hold at least one (title, history) pair")
    for run in runs:
        if not (isinstance(run, (tuple, list)) and len(run) == 2 and isinstance(run[0], str)):
            raise TypeError(f"runs must hold (title, history) pairs, got {run!r}; elr.runs.run_curves(run_dirs) "
                            "reads them from run directories")
    return runs


def plot_runs(runs: Curves, path) -> Path:
    """Figure 1 side by side: one row per run (clean-label panel, wrong-label panel, test accuracy,
    and when a run recorded them, how well its ELR targets found the wrong labels).

    Parameters
    ----------
    runs : sequence of (title, history)
        Each run's title and per-epoch records, at least one run (:func:`elr.runs.run_curves`).
    path : path
        The PNG to write.
    """
    runs = _checked_curves(runs)
    plt = _pyplot()
    detection = any(_has_detection(history) for _, history in runs)
    columns = 3 + detection
    fig, axes = plt.subplots(len(runs), columns, figsize=(5 * columns, 3.8 * len(runs)), constrained_layout=True,
                             squeeze=False)
    for row, (title, history) in zip(axes, runs):
        _draw_memorization(row[:2], history, label_prefix=f"{title}\n")
        _draw_accuracy(row[2], history, f"{title}\naccuracy")
        if not detection:
            continue
        _draw_detection(row[3], history, f"{title}\nwrong labels found by the targets")
        if not _has_detection(history):  # no ELR targets, no true labels, or monitor.detection=false
            row[3].text(0.5, 0.5, "no detection figures (det_*)", ha="center", va="center", transform=row[3].transAxes,
                        color="0.4")
            row[3].set_xlim(row[2].get_xlim())  # the epochs of its other panels
    return _save(fig, path)


def plot_gradient_runs(runs: Curves, path) -> Path | None:
    """Figure 2 for every run that recorded gradient terms (``monitor.gradient_terms=true``), one row each.

    ``runs`` as for :func:`plot_runs`. Returns the written path, or None when no run has gradient terms.
    """
    plt = _pyplot()
    runs = [(t, h) for t, h in _checked_curves(runs) if _has_gradient_terms(h)]
    if not runs:
        return None
    fig, axes = plt.subplots(len(runs), 3, figsize=(15, 3.8 * len(runs)), constrained_layout=True, squeeze=False)
    for row, (title, history) in zip(axes, runs):
        _draw_gradient_terms(row, history, title)
    return _save(fig, path)


# ---- sweep reports (paper Table 1 as curves) ----------------------------------------------------


def plot_report(rows: list[dict], path, *, ylabel: str = "test accuracy (%)") -> Path:
    """Accuracy against noise rate, one line per method with ± std error bars, one panel per noise type.

    Parameters
    ----------
    rows : list of dict
        One per table cell: ``dataset``, ``method``, ``noise_type``, ``noise_rate`` (fraction),
        ``mean`` and ``std`` (in %), ``n`` (seeds), as given by ``elr.report.Report.plot_rows``.
        Clean runs (rate 0) appear at 0% in every panel of their data set.
    path : path
        The PNG to write.
    ylabel : str
        Names the tabulated metric.
    """
    plt = _pyplot()
    if not rows:
        raise ValueError("rows must hold at least one cell")
    datasets = sorted({r["dataset"] for r in rows})
    order = {"symmetric": 0, "asymmetric": 1}
    panels = {d: sorted({r["noise_type"] for r in rows if r["dataset"] == d and r["noise_rate"]},
                        key=lambda t: (order.get(t, 2), t)) or ["none"] for d in datasets}
    width = max(len(p) for p in panels.values())
    fig, axes = plt.subplots(len(datasets), width, figsize=(5.5 * width, 4 * len(datasets)),
                             constrained_layout=True, squeeze=False)
    methods = list(dict.fromkeys(r["method"] for r in rows))  # first-seen order = the table's row order
    for axes_row, dataset in zip(axes, datasets):
        for ax, kind in zip(axes_row, panels[dataset]):
            for i, method in enumerate(methods):
                cells = sorted((r for r in rows if r["dataset"] == dataset and r["method"] == method
                                and (r["noise_type"] == kind or not r["noise_rate"])),
                               key=lambda r: r["noise_rate"])
                if not cells:
                    continue
                dodge = 0.4 * (i - (len(methods) - 1) / 2)  # keeps overlapping error bars apart
                ax.errorbar([100 * r["noise_rate"] + dodge for r in cells], [r["mean"] for r in cells],
                            yerr=[r["std"] for r in cells], marker="o", capsize=3, label=method,
                            color=f"C{i % 10}")
            ax.set_title(f"{dataset}, {kind} noise" if kind != "none" else dataset)
            ax.set_xlabel("noise rate (%)")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best")
        for ax in axes_row[len(panels[dataset]):]:
            ax.set_visible(False)
    return _save(fig, path)


# ---- the linear model of Section 3 (paper Figure A.1) -------------------------------------------

_THEORY_PANELS = (
    ("accuracy w.r.t. true labels", (("acc_clean", "clean-labelled examples", "tab:blue", "-"),
                                     ("acc_wrong", "wrong-labelled examples", "tab:green", "-"),
                                     ("memorized", "memorized (wrong-labelled)", "tab:red", "--"),
                                     ("test_acc", "test (fresh draws)", "black", ":"))),
    ("gradient coefficient magnitude", (("coef_clean", "clean-labelled examples", "tab:blue", "-"),
                                        ("coef_wrong", "wrong-labelled examples", "tab:red", "-"))),
    ("gradient direction", (("cosine", "cosine(-gradient, correct direction)", "tab:purple", "-"),
                            ("wrong_grad_share", "share of wrong-labelled examples", "tab:red", "--"))),
)


def plot_theory(result: dict, path) -> Path:
    """Figure A.1 for :func:`elr.theory.simulate`: CE on the top row, ELR on the bottom row.

    Panels, over gradient-descent iterations: training accuracy on clean- and wrong-labelled examples
    with respect to the true labels, the memorized fraction and the test accuracy; the mean coefficient
    magnitudes of clean vs wrong examples (Theorem 1); the cosine between the descent direction and
    the correct separator, and the wrong-labelled examples' share of the gradient norm.

    Parameters
    ----------
    result : dict
        As returned by ``elr.theory.simulate`` (or loaded from ``theory.json``).
    path : path
        The PNG to write.
    """
    missing = [k for k in ("config", "ce", "elr") if k not in result]
    if missing:
        raise ValueError(f"result must be the dict of elr.theory.simulate; missing key {missing[0]!r}")
    plt = _pyplot()
    cfg = result["config"]
    rows = (("cross entropy", result["ce"]),
            (f"ELR (lambda={cfg.get('lam', '?')}, beta={cfg.get('beta', '?')})", result["elr"]))
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5), constrained_layout=True)
    for ax_row, (name, series) in zip(axes, rows):
        for ax, (title, lines) in zip(ax_row, _THEORY_PANELS):
            for key, label, colour, style in lines:
                pairs = [(i, y) for i, y in zip(series["iteration"], series.get(key, ())) if y is not None]
                if pairs:
                    ax.plot(*zip(*pairs), label=label, color=colour, linestyle=style)
            ax.set_title(f"{name}: {title}")
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best")
        ax_row[0].set_ylim(-0.02, 1.02)
        ax_row[2].axhline(0, color="black", linewidth=0.6)
    fig.suptitle(f"linear model of Section 3: n={cfg.get('n')}, p={cfg.get('p')}, sigma={cfg.get('sigma')}, "
                 f"noise rate={cfg.get('noise_rate')}, step={cfg.get('step_size')}")
    return _save(fig, path)


# ---- label issues: the top suspects ------------------------------------------------------------

MAX_SUSPECT_PANELS = 100  # beyond this a grid is unreadable; label_issues.csv lists every example
_SUSPECT_COLUMNS = 8


def plot_suspects(images, table: dict, path, *, class_names=None, title: str = "") -> Path:
    """A grid of the top suspects: each image with its given -> suggested label and that label's probability.

    Parameters
    ----------
    images : list of (uint8 array (H, W, 3), (H, W) ink, or None for an unreadable file)
        One per row of ``table``, in its order (most suspect first).
    table : dict of arrays
        The first rows of :func:`elr.detect_label_issues`: ``index``, ``given_label``,
        ``suggested_label``, ``suggested_confidence``, ``is_issue``; ``true_label`` (when
        present) as a third line.
    path : path
        The PNG to write. Flagged examples are captioned in red, the others in grey.
    class_names : list of str, optional
        Shown instead of the class indices.
    """
    if len(images) != len(table["index"]):
        raise ValueError(f"images must hold one image per table row ({len(table['index'])}), got {len(images)}")
    if not 0 < len(images) <= MAX_SUSPECT_PANELS:
        raise ValueError(f"plot_suspects draws 1 to {MAX_SUSPECT_PANELS} examples, got {len(images)}")
    plt = _pyplot()
    n = len(images)
    cols = min(_SUSPECT_COLUMNS, n)
    rows = -(-n // cols)
    def name(label) -> str:
        return _short(class_names[int(label)] if class_names else int(label))

    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 2.3 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.flat, images)):
        given, suggested = table["given_label"][i], table["suggested_label"][i]
        confidence = float(table["suggested_confidence"][i])
        lines = [f"#{i + 1}  index {int(table['index'][i])}",
                 f"{name(given)} → {name(suggested)} {confidence:.2f}" if suggested != given else
                 f"{name(given)} {confidence:.2f} (kept)"]
        if "true_label" in table:
            lines.append(f"true: {name(table['true_label'][i])}")
        if image is None:
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=ax.transAxes, color="0.4")
        else:
            image = np.asarray(image)
            ax.imshow(image, cmap="gray_r" if image.ndim == 2 else None, vmin=0, vmax=255,
                      interpolation="nearest" if max(image.shape[:2]) < 64 else "antialiased")
        ax.set_title("\n".join(lines), fontsize=7.5, color="tab:red" if table["is_issue"][i] else "0.35")
    fig.suptitle(title or f"the {n} labels most likely wrong: given → suggested (its probability); "
                          "red: flagged", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985 if rows > 1 else 0.95))
    return _save(fig, path, dpi=100)


def _short(name, width: int = 12) -> str:
    text = str(name)
    return text if len(text) <= width else text[:width - 1] + "…"
