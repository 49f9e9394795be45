"""Which labels are wrong, side by side: one ELR run (`elr detect`) against cleanlab's 5-fold pipeline.

On the same data, noise, model, optimiser and epochs, for every setting and seed:

- **ELR (1 run)**: one ELR run of the setting's preset (its 10% noisy validation split is scored by a
  held-out prediction), then ``elr detect``'s default verdicts (self-confidence score, argmax rule)
  on ``targets.npy``; the row ``ELR (1 run), selected epoch`` does the same with
  ``targets_selected.npz``, the targets of the epoch the noisy validation split selected
  (``elr detect --targets selected``);
- **cleanlab on ELR targets**: ``cleanlab.filter.find_label_issues`` (its default,
  prune_by_noise_rate) fed with the ELR run's ``targets.npy`` (same ranking as ELR, other flags);
- **cleanlab (5-fold CE)**: cleanlab's prescribed pipeline: out-of-sample predicted probabilities from
  K-fold cross-validation (stratified folds, K = 5: five trainings on 80% of the labels) of the same
  model trained with cross entropy, then ``cleanlab.rank.get_label_quality_scores`` (self-confidence)
  for the ranking and ``find_label_issues`` for the flags; ``--ce-epochs N`` adds the same with
  folds trained for N epochs only (stopped before cross entropy memorizes, a stop a user would
  have to choose without clean labels).

AUROC and average precision rank every training label (validation split included) against the true
flips; precision / recall / F1 are of the flagged set. ``training s`` sums the per-epoch training
loops (what the trainings cost; the ELR run also evaluates test and validation each epoch, reported
apart as ``with evaluation s``). Settings: ``digits`` (configs/cpu/digits_elr_sym40.yaml: sklearn's
digits, MLP 64-512-512-10, 50 epochs) and ``cifar10`` (configs/cpu/bench_base.yaml: 10k images of the
JPEG-compressed CIFAR-10 copy, ResNet-8, 40 epochs), each at 40% symmetric and 40% asymmetric noise
(CIFAR-10's class mapping; ELR's beta 0.9 for asymmetric CIFAR-10 as in the CPU table).

Finished trainings are cached (``--cache``: the ELR run's target rows and per-epoch record, each fold's
held-out probabilities, as compressed .npz), so an interrupted benchmark resumes where it stopped and a
table is rebuilt without training; the ELR run itself resumes from its run directory (``--runs``).
Needs ``pip install cleanlab scikit-learn``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/label_issues.py --dataset digits --ce-epochs 15 5  # ~10 min, 1 core
    # CIFAR: 12 trainings of 5-15 min; two processes with one thread each, then the table from the cache
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/label_issues.py --dataset cifar10 --noise symmetric &
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/label_issues.py --dataset cifar10 --noise asymmetric &
    .venv/bin/python benchmarks/label_issues.py --dataset cifar10 --table-only
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elr import detection_quality, flag_label_issues, label_quality_scores, rundir
from elr.build import build_method, resolve_runtime
from elr.config import Config, MonitorConfig
from elr.data import TrainData
from elr.engine import Engine, predict_all
from elr.prepare import PreparedData, derived_seeds, prepare_data
from elr.runs import resume, train

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"digits": ROOT / "configs" / "cpu" / "digits_elr_sym40.yaml",
           "cifar10": ROOT / "configs" / "cpu" / "bench_base.yaml"}
NOISES = {  # overrides of the preset per noise; CIFAR-10 asymmetric: beta 0.9 (configs/sweeps/cpu_bench_table.yaml)
    ("digits", "symmetric"): ["noise.type=symmetric", "noise.rate=0.4"],
    # class-dependent noise on digits: the same features as an .npz file, whose 10 classes take
    # CIFAR-10's asymmetric map (9->1, 2->0, 4->7, 3<->5; elr's asymmetric noise is defined for it)
    ("digits", "asymmetric"): ["noise.type=asymmetric", "noise.rate=0.4", "data.dataset=npz"],
    ("cifar10", "symmetric"): ["noise.type=symmetric", "noise.rate=0.4"],
    ("cifar10", "asymmetric"): ["noise.type=asymmetric", "noise.rate=0.4", "loss.beta=0.9"],
}
ROWS = ("ELR (1 run)", "ELR (1 run), selected epoch", "cleanlab on ELR targets")  # then cleanlab (K-fold CE)


def kfold_row(folds: int) -> str:
    return f"cleanlab ({folds}-fold CE)"


def setting_config(dataset: str, noise: str, seed: int, epochs: int | None, data_dir: Path) -> Config:
    overrides = [*NOISES[(dataset, noise)], f"seed={seed}", f"threads={torch.get_num_threads()}"]  # main's --threads
    if "data.dataset=npz" in overrides and dataset == "digits":
        overrides.append(f"data.root={digits_npz(data_dir)}")
    if epochs is not None:
        overrides.append(f"optim.epochs={epochs}")
    config = Config.load(PRESETS[dataset], overrides)
    root = config.data.root
    if root and not Path(root).is_absolute():  # the presets name data relative to the repository root
        config = replace(config, data=replace(config.data, root=str(ROOT / root)))
    return config


def digits_npz(folder: Path) -> Path:
    """sklearn's digits exactly as ``data.dataset: digits`` reads them (features / 16, its train/test
    split), written as an ``.npz`` data set of float features."""
    from elr.data import read_digits

    path = folder / "digits_features.npz"
    if not path.is_file():
        raw = read_digits()
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(path, x_train=raw.x_train, y_train=raw.y_train, x_test=raw.x_test, y_test=raw.y_test,
                 class_names=np.array(raw.class_names))
    return path


def setting_name(dataset: str, noise: str, seed: int, epochs: int | None, folds: int) -> str:
    return f"{dataset}-{noise}40-seed{seed}" + (f"-{epochs}epochs" if epochs is not None else "") + f"-{folds}folds"


# ---- the trainings (each cached) -------------------------------------------------------------------


def elr_training(config: Config, run_dir: Path, cache: Path) -> dict[str, Any]:
    """Train (or resume) the ELR run and cache what the table needs from it."""
    if not cache.is_file():
        st = rundir.status(run_dir)
        if st.state == rundir.RESUMABLE:
            resume(run_dir)
        elif st.state != rundir.FINISHED:
            train(config, run_dir)
        history = rundir.read_metrics(run_dir)
        targets, sources = rundir.read_targets(run_dir)
        arrays = {"targets": targets, "sources": sources.astype("U16"), "given": rundir.read_noisy_labels(run_dir),
                  "true": rundir.read_true_labels(run_dir)}
        selected = rundir.read_selected_targets(run_dir)
        if selected is not None:
            arrays.update(targets_selected=selected.probs, sources_selected=selected.sources.astype("U16"),
                          selected_epoch=np.int64(selected.epoch))
        meta = {"train_seconds": sum(r["train_seconds"] for r in history),
                "seconds": sum(r["seconds"] for r in history),
                "history": [{k: v for k, v in r.items() if k.startswith(("det_", "val_acc", "test_acc", "epoch"))}
                            for r in history]}
        _save(cache, meta=np.array(json.dumps(meta)), **arrays)
        print(f"{cache.parent.name}: ELR run trained and cached", flush=True)
    return _load(cache)


def ce_fold(config: Config, everything: PreparedData, k: int, folds: int, cache: Path) -> dict[str, Any]:
    """Train fold ``k``'s cross-entropy model on the other folds; cache its held-out probabilities."""
    if not cache.is_file():
        from sklearn.model_selection import StratifiedKFold  # what cleanlab's own cross-validation uses

        noisy = everything.noisy_labels
        split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
        fit_idx, held_idx = list(split.split(np.zeros(len(noisy)), noisy))[k]
        train_all = everything.data.train
        part = PreparedData(TrainData(train=train_all.subset(torch.from_numpy(fit_idx)),
                                      num_classes=everything.data.num_classes),
                            noisy[fit_idx], None, np.zeros(0, dtype=np.int64), {})
        ce = replace(config, loss=replace(config.loss, name="ce", params={}))
        method = build_method(ce, part, resolve_runtime(ce))
        engine = Engine(method, part.data, optim=ce.optim, monitor=MonitorConfig(memorization=False),
                        eval_batch_size=ce.eval_batch_for(train_all.device.type),
                        seed=derived_seeds(ce.seed)["train"] + k)
        history = engine.fit()
        start = time.perf_counter()
        method.eval()
        held = train_all.subset(torch.from_numpy(held_idx))
        logits = predict_all(method, held, ce.eval_batch_for(train_all.device.type))
        probs = torch.softmax(logits.double(), dim=1).numpy()
        meta = {"train_seconds": sum(r["train_seconds"] for r in history),
                "seconds": sum(r["seconds"] for r in history) + time.perf_counter() - start}
        _save(cache, held=held_idx.astype(np.int64), probs=probs.astype(np.float32), meta=np.array(json.dumps(meta)))
        print(f"{cache.parent.name}: fold {k + 1}/{folds} trained and cached", flush=True)
    return _load(cache)


def _save(path: Path, **arrays: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **{k: v for k, v in arrays.items() if v is not None})
    tmp.replace(path)  # a killed benchmark never leaves half a cache file


def _load(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out.update(json.loads(str(out.pop("meta"))))
    return out


def fold_files(cache: Path, folds: int, ce_epochs: int | None = None) -> list[Path]:
    """The cache files of the K folds (``ce_epochs``: the shorter cross-entropy trainings)."""
    return [cache / (f"ce{ce_epochs}epochs_fold{k}.npz" if ce_epochs else f"ce_fold{k}.npz") for k in range(folds)]


def run_setting(dataset: str, noise: str, seed: int, *, epochs: int | None, folds: int, ce_epochs: list[int],
                cache_root: Path, runs_root: Path, part: str) -> None:
    name = setting_name(dataset, noise, seed, epochs, folds)
    config = setting_config(dataset, noise, seed, epochs, runs_root)
    if part in ("all", "elr"):
        elr_training(config, runs_root / name, cache_root / name / "elr.npz")
    if part not in ("all", "folds"):
        return
    everything = None
    for shorter in [None, *ce_epochs]:
        files = fold_files(cache_root / name, folds, shorter)
        if all(f.is_file() for f in files):
            continue
        if everything is None:  # every label in noisy_labels order, no validation split
            everything = prepare_data(replace(config, data=replace(config.data, val_fraction=0.0)))
            elr_cache = cache_root / name / "elr.npz"
            if elr_cache.is_file() and not np.array_equal(_load(elr_cache)["given"], everything.noisy_labels):
                raise RuntimeError(f"{name}: the folds' noisy labels are not the ELR run's; the data or noise changed")
        fold_config = config if shorter is None else replace(config, optim=replace(config.optim, epochs=shorter))
        for k, path in enumerate(files):
            ce_fold(fold_config, everything, k, folds, path)


# ---- the table ----------------------------------------------------------------------------------


def setting_rows(cache: Path, folds: int, ce_epochs: list[int] = ()) -> dict[str, dict[str, Any]] | None:
    """The rows of one setting and seed from its cache; None while a training is missing."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    kfold = {None: fold_files(cache, folds), **{e: fold_files(cache, folds, e) for e in ce_epochs}}
    if not all(f.is_file() for f in [cache / "elr.npz", *(f for fs in kfold.values() for f in fs)]):
        return None
    elr = _load(cache / "elr.npz")
    given, true = elr["given"], elr["true"]
    wrong = given != true
    rows: dict[str, dict[str, Any]] = {}
    cost = {"trainings": 1, "training_s": elr["train_seconds"], "with_evaluation_s": elr["seconds"]}

    def ours(targets: np.ndarray, sources: np.ndarray) -> dict[str, Any]:
        if np.isin(sources, rundir.NO_VERDICT_SOURCES).any():
            raise RuntimeError("rows without a verdict (unreadable or untrained) are not scored by this benchmark")
        score = label_quality_scores(given, targets)  # elr detect's defaults: self-confidence, argmax
        flags = flag_label_issues(given, targets)
        out = detection_quality(score, flags, wrong)
        held = sources == "held_out_model"
        out["held_out_rows"] = int(held.sum())
        # where the held-out (validation) rows land: their share of the top |wrong| of the ranking
        top = np.argsort(score, kind="stable")[:int(wrong.sum())]
        out["held_out_share_of_top"] = float(held[top].mean())
        for part, mask in (("targets_rows", ~held), ("held_out_rows", held)):
            out[f"auroc_{part}"] = detection_quality(score[mask], flags[mask], wrong[mask])["auroc"]
        # a diagnosis, not a product: each source's scores as their quantile within the source, so a
        # sharper source cannot crowd the top of one ranking
        within = np.empty(len(score))
        for mask in (held, ~held):
            if mask.any():
                ranks = np.argsort(np.argsort(score[mask], kind="stable"), kind="stable")
                within[mask] = (ranks + 0.5) / mask.sum()
        q = detection_quality(within, flags, wrong)
        out["auroc_within_sources"], out["average_precision_within_sources"] = q["auroc"], q["average_precision"]
        return out

    rows[ROWS[0]] = {**ours(elr["targets"], elr["sources"]), **cost}
    over_training = [r for r in elr["history"] if r.get("det_auroc") is not None]
    if over_training:  # the bank's own figures per epoch (training rows only, no held-out rows)
        best = max(over_training, key=lambda r: (r["det_auroc"], -r["epoch"]))
        rows[ROWS[0]]["bank_auroc_by_epoch"] = [(r["epoch"], r["det_auroc"]) for r in over_training]
        rows[ROWS[0]]["bank_best"] = {"epoch": best["epoch"], "auroc": best["det_auroc"]}
    if "targets_selected" in elr:
        rows[ROWS[1]] = {**ours(elr["targets_selected"], elr["sources_selected"]), **cost,
                         "epoch": int(elr["selected_epoch"])}
    probs = elr["targets"].astype(np.float64)
    rows[ROWS[2]] = {**detection_quality(get_label_quality_scores(given, probs), find_label_issues(given, probs),
                                         wrong), **cost}
    for shorter, files in kfold.items():
        oos = np.zeros((len(given), probs.shape[1]))  # every label's out-of-sample row
        fold_s = fold_wall = 0.0
        folds_data = [_load(f) for f in files]
        if not np.array_equal(np.sort(np.concatenate([f["held"] for f in folds_data])), np.arange(len(given))):
            raise RuntimeError(f"{cache}: the folds do not hold out every label exactly once; delete their files")
        for fold in folds_data:
            oos[fold["held"]] = fold["probs"]
            fold_s += fold["train_seconds"]
            fold_wall += fold["seconds"]
        name = kfold_row(folds) if shorter is None else f"cleanlab ({folds}-fold CE, {shorter} epochs)"
        rows[name] = {**detection_quality(get_label_quality_scores(given, oos), find_label_issues(given, oos), wrong),
                      "trainings": folds, "training_s": fold_s, "with_evaluation_s": fold_wall}
    for row in rows.values():
        p, r = row["precision"] or 0.0, row["recall"] or 0.0
        row["f1"] = 2 * p * r / (p + r) if p + r else 0.0
        row["cost_ratio"] = row["training_s"] / elr["train_seconds"]
    return rows


def markdown(results: dict[str, list[dict[str, dict[str, Any]]]]) -> str:
    """One table per setting: mean over seeds (min-max when several)."""
    lines = []
    for name, per_seed in results.items():
        n = len(per_seed)
        seeds = ", ".join(str(s["seed"]) for s in per_seed)
        first = per_seed[0][ROWS[0]]
        where = f" in seed {per_seed[0]['seed']}" if n > 1 else ""
        lines += ["", f"**{name}** (seed{'s' if n > 1 else ''} {seeds}; {first['wrong']} of {first['examples']} "
                  f"labels wrong{where})", "",
                  "| pipeline | trainings | AUROC | average precision | flagged | precision | recall | F1 "
                  "| training s | cost vs ELR |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in [*ROWS, *(r for r in per_seed[0] if r not in ROWS and r != "seed")]:
            values = [s[row] for s in per_seed if row in s]
            if not values:
                continue

            def cell(key: str, fmt: str) -> str:
                v = np.array([r[key] if r[key] is not None else np.nan for r in values], dtype=float)
                return f"{v.mean():{fmt}}" + (f" ({v.min():{fmt}}-{v.max():{fmt}})" if len(v) > 1 else "")

            label = row + (f" (epoch {values[0]['epoch']})" if "epoch" in values[0] and n == 1 else "")
            lines.append(f"| {label} | {values[0]['trainings']} | {cell('auroc', '.3f')} | "
                         f"{cell('average_precision', '.3f')} | {cell('flagged', '.0f')} | {cell('precision', '.3f')} "
                         f"| {cell('recall', '.3f')} | {cell('f1', '.3f')} | {cell('training_s', '.1f')} | "
                         f"{cell('cost_ratio', '.2f')}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--noise", nargs="+", choices=("symmetric", "asymmetric"), default=["symmetric", "asymmetric"])
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 for digits, 0 for cifar10")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, help="override the presets' epochs (a quick look; cached apart)")
    parser.add_argument("--ce-epochs", type=int, nargs="*", default=[],
                        help="extra K-fold rows with the cross-entropy folds trained for these epochs (an earlier "
                             "stop, before they memorize; a user would have to choose it without clean labels)")
    parser.add_argument("--part", choices=("all", "elr", "folds"), default="all",
                        help="train only the ELR runs or only the folds (to share the work between processes)")
    parser.add_argument("--table-only", action="store_true", help="train nothing: the table of what is cached")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "label_issues" / "cache")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "label_issues_benchmark",
                        help="where the ELR runs train (they resume from here)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error(f"--folds must be at least 2, got {args.folds}")
    torch.set_num_threads(args.threads)
    seeds = args.seeds if args.seeds is not None else ([0, 1, 2] if args.dataset == "digits" else [0])
    results: dict[str, list[dict[str, dict[str, Any]]]] = {}
    missing = []
    for noise in args.noise:
        for seed in seeds:
            if not args.table_only:
                run_setting(args.dataset, noise, seed, epochs=args.epochs, folds=args.folds, ce_epochs=args.ce_epochs,
                            cache_root=args.cache, runs_root=args.runs, part=args.part)
            name = setting_name(args.dataset, noise, seed, args.epochs, args.folds)
            rows = setting_rows(args.cache / name, args.folds, args.ce_epochs)
            if rows is None:
                missing.append(name)
                continue
            title = f"{args.dataset}, 40% {noise}" + (f", {args.epochs} epochs" if args.epochs else "")
            results.setdefault(title, []).append({"seed": seed, **rows})
    if missing:
        print(f"not finished yet: {', '.join(missing)}")
    print(markdown(results))
    for title, per_seed in results.items():
        for rows in per_seed:
            seed = rows["seed"]
            elr = rows[ROWS[0]]
            print(f"\n{title}, seed {seed}: ELR's AUROC on its {elr['examples'] - elr['held_out_rows']} target rows "
                  f"{elr['auroc_targets_rows']:.3f}, on its {elr['held_out_rows']} held-out rows "
                  f"{elr['auroc_held_out_rows'] if elr['auroc_held_out_rows'] is None else round(elr['auroc_held_out_rows'], 3)}; "
                  f"held-out rows are {elr['held_out_share_of_top']:.0%} of the top {elr['wrong']} suspects; "
                  f"ranked within sources: AUROC {elr['auroc_within_sources']:.3f}, "
                  f"average precision {elr['average_precision_within_sources']:.3f}")
            if "bank_best" in elr:
                chosen = rows.get(ROWS[1], {}).get("epoch")
                curve = dict(elr["bank_auroc_by_epoch"])
                print(f"  the bank's AUROC over training: best {elr['bank_best']['auroc']:.3f} at epoch "
                      f"{elr['bank_best']['epoch']}, " + (f"selected epoch {chosen} {curve[chosen]:.3f}, "
                                                           if chosen in curve else "") +
                      f"last {curve[max(curve)]:.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
