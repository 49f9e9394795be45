"""Label issues of a run: its target rows scored against its labels, the verdict table `elr detect` builds.

A finished ELR or ELR+ run leaves every training example's probability row (:mod:`elr.evidence`):
``targets.npy``, or ``targets_topk.npz`` for top-k storage. An unfinished run (or one finished by
an elr that did not write them) is scored from its last checkpoint: the method is restored and the
rows are built as at the end of training, in memory. :func:`detect_label_issues` scores the rows
against the given labels with :mod:`elr.label_issues`; nothing is retrained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import rundir
from .config import FILE_DATASETS, Config
from .data.image_transform import load_rgb
from .evidence import collect_evidence, example_files, missing_targets_reason, truth_known
from .label_issues import TopKProbs, cleanlab_label_issues, detection_quality, issues_per_class, label_issue_table
from .prepare import training_images
from .runs import restore_run

TARGET_CHOICES = ("last", "selected")  # whose rows elr detect scores: the last epoch's, or the validation-selected one's

__all__ = ["RunEvidence", "read_run_evidence", "detect_label_issues", "label_issue_report", "suspect_images",
           "resume_command"]

_NO_VERDICT = rundir.NO_VERDICT_SOURCES


@dataclass
class RunEvidence:
    """What a run says about its labels.

    ``probs`` (float32/float64 (N, C) or TopKProbs) and ``sources`` (str (N,)) per training
    example in ``noisy_labels.npy`` order; ``given`` and ``true`` (None when unknown) labels;
    ``examples`` (paths of image files) or None; ``class_names``; ``epoch`` the rows are from, of
    ``epochs``; ``from_checkpoint``: rebuilt from ``checkpoint.pt`` instead of read from the targets
    file (an unfinished run, or a finished one without its targets file); ``finished``; ``config``.
    """

    probs: np.ndarray | TopKProbs
    sources: np.ndarray
    given: np.ndarray
    true: np.ndarray | None
    examples: dict[str, np.ndarray] | None
    class_names: list[str]
    epoch: int
    epochs: int | None
    from_checkpoint: bool
    finished: bool
    config: Config
    selected: bool = False  # the rows of the validation-selected epoch (targets_selected.npz), not the last

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    @property
    def names(self) -> list[str] | None:
        """The class names in label order, or None when they are not known for every class."""
        return list(self.class_names) if len(self.class_names) == self.num_classes else None


def read_run_evidence(run_dir: str | Path, *, device: str | None = None, targets: str = "last") -> RunEvidence:
    """The target rows of a run and what goes with them, from its targets file or its last checkpoint.

    ``device`` (restoring from a checkpoint only): where the held-out predictions run; the run's
    config decides by default. ``targets``: ``last`` (the last epoch's rows; an unfinished run's
    from its checkpoint) or ``selected`` (``targets_selected.npz``: the rows of the epoch the noisy
    validation split selected so far, finished or not).

    Raises
    ------
    ValueError
        The run keeps no targets (cross entropy or a baseline), never reached a checkpoint, or lost
        both its targets file and its checkpoint; the message names the command to run instead.
    FileNotFoundError
        ``run_dir`` is not a run directory; restoring from a checkpoint: the run's data are gone.
    ImportError
        Restoring from a checkpoint needs what the run's data and model need (e.g. Pillow).
    """
    if targets not in TARGET_CHOICES:
        raise ValueError(f"targets must be one of {', '.join(TARGET_CHOICES)}; got {targets!r}")
    run_dir = Path(run_dir)
    st = rundir.status(run_dir)
    if st.state in (rundir.NEW, rundir.FOREIGN):
        raise FileNotFoundError(f"{run_dir} is not a run directory: "
                                f"{st.reason or ('it does not exist' if not run_dir.exists() else 'it is empty')}")
    if st.state == rundir.UNSTARTED:
        again = (f"; train it with `elr train --config {rundir.config_path(run_dir)} --out {run_dir}`"
                 if rundir.config_path(run_dir).is_file() else "; train it again with its config")
        raise ValueError(f"{run_dir} never reached its first checkpoint: there is nothing to detect{again}")
    config = rundir.read_config(run_dir)
    why = missing_targets_reason(config)
    if why is not None:
        raise ValueError(f"{run_dir} {why}")
    names = (rundir.read_classes(run_dir) or {}).get("class_names") or []
    if targets == "selected":
        return _selected_evidence(run_dir, st, config, list(names))
    saved = rundir.read_targets(run_dir) if st.state != rundir.RESUMABLE else None
    if saved is not None:
        probs, sources = saved
        given = rundir.read_noisy_labels(run_dir)
        if len(given) != len(probs):
            raise ValueError(f"{run_dir}: the targets have {len(probs)} rows but {rundir.NOISY_LABELS} "
                             f"{len(given)} labels; the run directory was altered")
        return RunEvidence(probs, sources, given, rundir.read_true_labels(run_dir), rundir.read_examples(run_dir),
                           list(names), st.epochs_done, st.epochs, False, True, config)
    if not rundir.has_checkpoint(run_dir):
        raise ValueError(f"{run_dir} has no targets file ({rundir.TARGETS} or {rundir.TARGETS_TOPK}) and its "
                         f"{rundir.CHECKPOINT} was removed, so its targets are lost; train it again to detect label "
                         f"issues")
    config, prepared, method, state = restore_run(run_dir, device=device, verb="detect", match_labels=True)
    found = collect_evidence(config, method, prepared, epoch=int(state["epoch"]))
    examples = example_files(prepared) if config.data.dataset in FILE_DATASETS else None
    true = prepared.true_labels if truth_known(config, prepared) else None
    probs = found.probs if isinstance(found.probs, TopKProbs) else found.probs.astype(np.float32)  # as written
    return RunEvidence(probs, found.sources.astype(str), prepared.noisy_labels, true, examples,
                       list(names) or list(prepared.class_names), int(state["epoch"]), config.optim.epochs, True,
                       st.state != rundir.RESUMABLE, config)


def _selected_evidence(run_dir: Path, st: rundir.RunStatus, config: Config, names: list[str]) -> RunEvidence:
    chosen = rundir.read_selected_targets(run_dir)
    selected = rundir.selected_record(rundir.read_metrics(run_dir))
    if chosen is None:
        why = ("it has no validation set (data.val_fraction=0 and no validation file), so no epoch was selected"
               if selected is None else f"it has no {rundir.TARGETS_SELECTED} (a run trained before elr kept one)")
        raise ValueError(f"{run_dir}: cannot use the selected epoch's targets: {why}; use --targets last")
    if selected is None or selected["epoch"] != chosen.epoch:  # killed between its checkpoint and this file
        again = (f"resume the run (`{resume_command(run_dir)}` writes it without training again)"
                 if rundir.has_checkpoint(run_dir) else "train the run again")
        raise ValueError(f"{run_dir}: {rundir.TARGETS_SELECTED} is of epoch {chosen.epoch} but the run's noisy "
                         f"validation accuracy selects epoch {selected and selected['epoch']}; {again}, or use "
                         f"--targets last")
    given = rundir.read_noisy_labels(run_dir)
    if len(given) != len(chosen.probs):
        raise ValueError(f"{run_dir}: {rundir.TARGETS_SELECTED} has {len(chosen.probs)} rows but "
                         f"{rundir.NOISY_LABELS} {len(given)} labels; the run directory was altered")
    return RunEvidence(chosen.probs, chosen.sources, given, rundir.read_true_labels(run_dir),
                       rundir.read_examples(run_dir), names, chosen.epoch, st.epochs, False,
                       st.state == rundir.FINISHED, config, selected=True)


def detect_label_issues(run_dir: str | Path, *, score: str = "self_confidence", rule: str = "argmax",
                        threshold: float = 0.5, filter_by: str = "prune_by_noise_rate", targets: str = "last",
                        evidence: RunEvidence | None = None) -> dict[str, np.ndarray]:
    """Every training example's verdict from an ELR or ELR+ run, most likely wrong first.

    Parameters
    ----------
    run_dir : path
        A run directory of ELR (``loss.name: elr`` or ``elr_kl``) or ELR+, finished or not: an
        unfinished run is scored from its last checkpoint (:func:`read_run_evidence`).
    score : {"self_confidence", "normalized_margin"}
        See :func:`elr.label_quality_scores`; lower means more likely wrong.
    rule : {"argmax", "threshold", "cleanlab"}
        ``argmax`` flags an example when another class has more probability than its label;
        ``threshold`` flags a score below ``threshold``; ``cleanlab`` flags what
        ``cleanlab.filter.find_label_issues(filter_by=filter_by)`` finds in the rows (needs cleanlab).
    threshold : float in (0, 1]
    filter_by : one of elr.label_issues.CLEANLAB_FILTERS
    targets : {"last", "selected"}
        Score the last epoch's rows, or those of the epoch the noisy validation split selected
        (``targets_selected.npz``; see :func:`read_run_evidence`).
    evidence : RunEvidence, optional
        What :func:`read_run_evidence` returned for ``run_dir``, to score a run several ways
        without reading (or restoring) it again.

    Returns
    -------
    dict of np.ndarray, each of shape (N,), N = the training set (``noisy_labels.npy``)
        ``index`` (int64, position in ``noisy_labels.npy``), ``given_label``, ``suggested_label``
        (int64), ``score`` (float64; NaN without a verdict), ``is_issue`` (bool), ``source``
        (str: ``targets``, ``held_out_model``; without a verdict ``unreadable``, or with
        ``targets="selected"`` ``untrained``), ``suggested_confidence`` (float64, NaN without a verdict);
        ``given_class`` and ``suggested_class`` (str) when the class names are known;
        ``true_label`` (int64) when the clean labels are known; ``path`` (str) and ``line`` (int64,
        the 1-based line of a CSV list) for image files. Rows without a verdict come last, never flagged.

    Raises
    ------
    ValueError
        The run keeps no targets (cross entropy or a baseline) or never reached a checkpoint; the
        message names the command to run instead.
    FileNotFoundError
        ``run_dir`` is not a run directory.
    """
    ev = evidence if evidence is not None else read_run_evidence(run_dir, targets=targets)
    readable = ~np.isin(ev.sources, _NO_VERDICT)
    if rule == "cleanlab":  # cleanlab sees the rows with a verdict only (the others are uniform stand-ins)
        table = label_issue_table(ev.given, ev.probs, method=score, filter_by=filter_by)  # checks and ranks
        rows = ev.probs.dense() if isinstance(ev.probs, TopKProbs) else np.asarray(ev.probs)
        flags = np.zeros(len(ev.given), dtype=bool)
        flags[readable] = cleanlab_label_issues(ev.given[readable], rows[readable], filter_by=filter_by)
        table["is_issue"] = flags[table["index"]]
    else:
        table = label_issue_table(ev.given, ev.probs, method=score, rule=rule, threshold=threshold)
    source = ev.sources[table["index"]]
    no_verdict = np.isin(source, _NO_VERDICT)
    if no_verdict.any():  # a uniform stand-in row: no verdict, listed last
        table["score"][no_verdict] = np.nan
        table["suggested_confidence"][no_verdict] = np.nan
        table["is_issue"][no_verdict] = False
        table["suggested_label"][no_verdict] = table["given_label"][no_verdict]
        order = np.argsort(no_verdict, kind="stable")
        table = {k: v[order] for k, v in table.items()}
        source = source[order]
    out = {k: table[k] for k in ("index", "given_label", "suggested_label", "score", "is_issue")}
    out["source"] = source.astype(str)
    out["suggested_confidence"] = table["suggested_confidence"]
    if ev.names is not None:
        names = np.array(ev.names, dtype=object)
        out["given_class"], out["suggested_class"] = names[out["given_label"]], names[out["suggested_label"]]
    if ev.true is not None:
        out["true_label"] = np.asarray(ev.true)[out["index"]]
    if ev.examples is not None:
        out.update({k: v[out["index"]] for k, v in ev.examples.items()})
    return out


def label_issue_report(evidence: RunEvidence, table: dict[str, np.ndarray]) -> dict[str, Any]:
    """What `elr detect` prints beside the table.

    Returns
    -------
    dict
        ``per_class``: one dict per class (``label``, ``name`` or None, ``examples``, ``flagged``);
        ``sources``: examples per source; ``flagged``; ``quality``: :func:`elr.detection_quality`
        against the clean labels (readable examples only), or None when they are unknown;
        ``epoch``, ``epochs``, ``from_checkpoint``, ``finished`` and ``selected`` of the evidence.
    """
    num_classes = evidence.num_classes
    names = evidence.names
    counts = issues_per_class(table["given_label"], table["is_issue"], num_classes)
    per_class = [{"label": c, "name": names[c] if names else None,
                  "examples": int(counts["examples"][c]), "flagged": int(counts["flagged"][c])}
                 for c in range(num_classes)]
    sources = {s: int((table["source"] == s).sum()) for s in rundir.TARGET_SOURCE_NAMES}
    quality = None
    if "true_label" in table:
        readable = ~np.isin(table["source"], _NO_VERDICT)
        quality = detection_quality(table["score"][readable], table["is_issue"][readable],
                                    (table["given_label"] != table["true_label"])[readable])
    return {"per_class": per_class, "sources": sources, "flagged": int(table["is_issue"].sum()), "quality": quality,
            "epoch": evidence.epoch, "epochs": evidence.epochs, "from_checkpoint": evidence.from_checkpoint,
            "finished": evidence.finished, "selected": evidence.selected}


def resume_command(run_dir: str | Path) -> str:
    """The command that resumes (or, for a finished run, rewrites the outputs of) a run with a checkpoint:
    under torchrun with the same process count when it was trained so."""
    world = int(rundir.load_checkpoint(run_dir).get("world_size", 1))
    if world > 1:
        return f"torchrun --nproc_per_node={world} -m elr train --resume {run_dir}"
    return f"elr train --resume {run_dir}"


def suspect_images(evidence: RunEvidence, index: np.ndarray) -> list[np.ndarray | None] | None:
    """The images of the examples ``index`` (positions in ``noisy_labels.npy``), to look at.

    uint8 arrays (H, W, 3) or (H, W); an image file that cannot be read is None. Returns None when
    the examples are not images (feature vectors). In-memory data are read again from the run's
    config (the same subset); image files are opened from their paths.
    """
    index = np.asarray(index, dtype=np.int64)
    if evidence.examples is not None:
        images: list[np.ndarray | None] = []
        for path in evidence.examples["path"][index].tolist():
            try:
                img = load_rgb(str(path))
            except ImportError:
                raise
            except Exception:  # noqa: BLE001 - as in training, any file Pillow cannot decode is unreadable
                images.append(None)
                continue
            img.thumbnail((128, 128))  # a panel is about an inch wide: no need for more pixels
            images.append(np.asarray(img))
        return images
    x = training_images(evidence.config)
    if x is None:
        return None
    if len(x) != len(evidence.given):
        raise ValueError(f"the run's data set now holds {len(x)} training examples, not the run's "
                         f"{len(evidence.given)}: it changed since the run")
    return [x[i] for i in index.tolist()]
