"""A run from a Config, told in order: train it into a run directory, resume it, evaluate it.

Everything that can reject the input (config, data, method) is checked before the first byte is
written. The data come from :mod:`elr.prepare`, the method from :mod:`elr.build`, the epochs from
:class:`elr.engine.Engine`, the summary from :mod:`elr.summary` and every file from :mod:`elr.rundir`.
Under torchrun every process calls the same function and rank 0 alone writes (:mod:`elr.distributed`).
A two-stage Forward run is composed above this module, in :mod:`elr.two_stage`, which hands
:func:`train` its first stage as ``estimate``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import evidence, rundir
from .build import build_method, resolve_runtime
from .config import FILE_DATASETS, Config, ConfigError, estimates_transition
from .data import Standardization
from .data.cifar_n import CIFAR_N
from .distributed import Distributed, attach_target_sync, init_from_env, launched_distributed
from .engine import Engine, Method, Progress, evaluate
from .methods import cpu_threads
from .plots import plot_training
from .prepare import PreparedData, derived_seeds, prepare_data
from .summary import estimate_report, summarize

log = logging.getLogger(__name__)

Estimate = Callable[[], np.ndarray]  # stage 1 of a two-stage Forward run: trains it, returns the estimated T


# ---- train ---------------------------------------------------------------------------------------


def train(config: Config, out_dir: str | Path, *, progress: Progress | None = None, device: str | None = None,
          estimate: Estimate | None = None) -> dict[str, Any]:
    """Train a new run into ``out_dir``. Returns the summary.

    ``out_dir`` is absent, empty or an unstarted run (one that never reached its first checkpoint:
    its files are replaced). A resumable or finished run, a folder of other files, or one another
    process works in (:class:`elr.rundir.RunDirLockedError`) is refused with FileExistsError and
    left as it was. The config, data and method are checked before the first byte is written, so
    bad input leaves no folder behind.

    ``estimate`` is needed by ``loss: {name: forward, transition: estimate}`` only: it trains stage 1
    and returns the estimated transition matrix; it is called after the checks and before the run's
    own files, so a run stopped in stage 1 stays unstarted. :func:`elr.train` (:mod:`elr.two_stage`)
    passes it.

    Under torchrun (WORLD_SIZE > 1) every process calls this; they train data-parallel and rank 0
    alone writes ``out_dir`` (see :mod:`elr.distributed`).
    """
    return _start(config, Path(out_dir), progress, device, None, estimate)


def train_or_resume(config: Config, run_dir: str | Path, *, progress: Progress | None = None,
                    device: str | None = None, sweep_record: dict[str, Any] | None = None,
                    estimate: Estimate | None = None) -> tuple[str, dict[str, Any]]:
    """Bring ``run_dir`` to the end of ``config``'s training, whatever its status.

    A new folder is trained, an unstarted run is started over, a resumable run of the same config
    is resumed and a finished one is left as it is. A folder of other files, or a run of another
    config, raises FileExistsError and is left as it was; so does a folder another process works
    in (:class:`elr.rundir.RunDirLockedError`): the lock is held from the first look to the last write.

    Parameters
    ----------
    config : Config
    run_dir : path
    progress : Progress, optional
    device : str, optional
    sweep_record : dict, optional
        Written to the run's ``sweep.json`` (the sweep, method label and settings that made it).
    estimate : callable, optional
        As for :func:`train`.

    Returns
    -------
    (action, summary)
        ``action`` is ``trained``, ``restarted``, ``resumed`` or ``skipped`` (finished: its
        ``summary.json`` is returned, nothing is trained).
    """
    run_dir = Path(run_dir)
    with _lock_alone(run_dir, create=True):  # the decision holds while this process works on it
        decision = rundir.decide(config, run_dir)
        if decision.action == "refuse":
            raise FileExistsError(f"{run_dir} {decision.reason}; move it away or choose another folder")
        if decision.action in ("train", "restart"):
            summary = _start(config, run_dir, progress, device, sweep_record, estimate)
            return ("trained" if decision.action == "train" else "restarted"), summary
        if sweep_record is not None:
            rundir.write_sweep_record(run_dir, sweep_record)
        if decision.action == "skip":
            rundir.remove_leftovers(run_dir)
            return "skipped", rundir.read_summary(run_dir)
        return "resumed", resume(run_dir, progress=progress, device=device)


def _start(config: Config, run_dir: Path, progress: Progress | None, device: str | None,
           sweep_record: dict[str, Any] | None, estimate: Estimate | None) -> dict[str, Any]:
    config.validate()
    if not estimates_transition(config):
        estimate = None  # one stage
    elif estimate is None:
        raise ValueError("loss.transition=estimate is a two-stage run: train it with elr.train or "
                         "elr.train_or_resume (elr.two_stage), which train its stage 1 first")
    distributed = _join_process_group(config, device)
    return _in_process_group(distributed, lambda: _train(config, run_dir, progress, device, distributed,
                                                         sweep_record, estimate))


def _train(config: Config, run_dir: Path, progress: Progress | None, device: str | None,
           distributed: Distributed | None, sweep_record: dict[str, Any] | None,
           estimate: Estimate | None) -> dict[str, Any]:
    with _holding(run_dir, distributed, create=True):  # made here, the folder goes again if nothing is written
        st = rundir.status(run_dir)
        if st.state not in (rundir.NEW, rundir.UNSTARTED):
            raise FileExistsError(rundir.refusal(st))
        main = distributed is None or distributed.is_main
        if distributed is not None:
            distributed.barrier()  # every rank has looked before rank 0 creates the run's files
        # everything that can reject the input runs before the first byte is written
        runtime = resolve_runtime(config, device, distributed)
        prepared = prepare_data(config, runtime.device)
        # two-stage Forward: its loss is checked with a stand-in T, the estimate comes from stage 1
        stand_in = np.eye(prepared.data.num_classes) if estimate is not None else None
        method = build_method(config, prepared, runtime, stand_in)
        if main and st.state == rundir.UNSTARTED:
            rundir.clear(run_dir)  # the leftovers of a run that never reached a checkpoint; stage1_ce/ stays
        if estimate is not None:  # stage 1 before the run's own files: a kill here leaves the run unstarted
            method = build_method(config, prepared, runtime, estimate())
        if main:
            _write_run_files(config, prepared, run_dir, sweep_record)
        return _fit(config, prepared, method, run_dir, progress, distributed)


def _write_run_files(config: Config, prepared: PreparedData, run_dir: Path,
                     sweep_record: dict[str, Any] | None) -> None:
    rundir.write_config(run_dir, config)  # first: it creates the folder and marks it as a run
    rundir.write_noisy_labels(run_dir, prepared.noisy_labels)
    noise_info = {**prepared.noise_summary, "type": config.noise.type, "rate": config.noise.rate,
                  **({"label_set": config.noise.label_set} if config.noise.label_set else {}),
                  "val_indices": prepared.val_indices.tolist()}
    rundir.write_noise(run_dir, noise_info)
    rundir.write_classes(run_dir, prepared.class_names, prepared.label_to_index)
    if prepared.standardization is not None:
        rundir.write_standardization(run_dir, prepared.standardization.to_dict())
    if sweep_record is not None:
        rundir.write_sweep_record(run_dir, sweep_record)


# ---- resume --------------------------------------------------------------------------------------


def resume(run_dir: str | Path, *, progress: Progress | None = None, device: str | None = None) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint; results equal an uninterrupted run.

    A finished run is not trained further: its summary and plots are written again. A distributed
    run resumes under torchrun with the same number of processes; another number is refused (the
    shards, and so the batches, depend on it).
    """
    run_dir = Path(run_dir)
    with _lock_alone(run_dir, create=False):
        config = rundir.checkpointed_config(run_dir, "resume")
        distributed = _join_process_group(config, device)
        return _in_process_group(distributed, lambda: _resume(config, run_dir, progress, device, distributed))


def _resume(config: Config, run_dir: Path, progress: Progress | None, device: str | None,
            distributed: Distributed | None) -> dict[str, Any]:
    with _holding(run_dir, distributed, create=False):
        if distributed is not None:  # rank 0 has just taken the lock: look again
            config = rundir.checkpointed_config(run_dir, "resume")
        if distributed is None or distributed.is_main:
            rundir.remove_leftovers(run_dir)  # temporary files of a write the kill cut short
        state = rundir.load_checkpoint(run_dir)
        differ = rundir.config_difference(config, state["config"])
        if differ:
            raise ValueError(f"{run_dir}: the checkpoint was written by a different config (differs in: "
                             f"{', '.join(differ)}); refusing to resume")
        saved_world = int(state.get("world_size", 1))
        world = 1 if distributed is None else distributed.world_size
        if saved_world != world:
            raise ValueError(
                f"{run_dir} was trained by {saved_world} process(es) and this resume has {world}: the data shards "
                f"depend on the number of processes; resume with torchrun --nproc_per_node (x --nnodes) = "
                f"{saved_world}" if saved_world > 1 else
                f"{run_dir} was trained in one process; resume it with plain `elr train --resume` (not torchrun)"
            )
        runtime = resolve_runtime(config, device, distributed)
        scaling = stored_scaling(run_dir, config, "refusing to resume")
        prepared = prepare_data(config, runtime.device, standardization=scaling)
        _check_classes(run_dir, prepared, "refusing to resume")
        _check_noisy_labels(run_dir, state, prepared, "refusing to resume")
        method = build_method(config, prepared, runtime, _saved_transition(config, run_dir), from_checkpoint=True)
        return _fit(config, prepared, method, run_dir, progress, distributed, state)


def stored_scaling(run_dir: Path, config: Config, consequence: str) -> Standardization | None:
    """``data.standardize``: the scaling the run started with (the data read now may differ from the data then).

    None without ``data.standardize``; a missing or damaged file is a one-line ValueError ending in ``consequence``.
    """
    if not config.data.standardize:
        return None
    record, where = rundir.read_standardization(run_dir)
    if record is None:
        raise ValueError(f"{where} is missing: the run scales its features (data.standardize) with the values "
                         f"fitted when it started; {consequence}")
    return Standardization.from_dict(record, where)


def _check_classes(run_dir: Path, prepared: PreparedData, consequence: str) -> None:
    """The data must still give the classes the run's model was built for (``classes.json``)."""
    saved = (rundir.read_classes(run_dir) or {}).get("class_names")
    if saved is None or len(saved) == len(prepared.class_names):
        return
    raise ValueError(f"{run_dir} was trained on {len(saved)} classes ({rundir.CLASSES}) but its data now read as "
                     f"{len(prepared.class_names)}: the data changed, or it is a .npz without class_names and "
                     f"fewer than 10 labels, which earlier elr read as the 10 CIFAR-10 classes (train the run "
                     f"again); {consequence}")


def _check_noisy_labels(run_dir: Path, state: dict[str, Any], prepared: PreparedData, consequence: str) -> None:
    """A checkpoint's per-example state is only valid for the noisy labels it was trained on."""
    if not np.array_equal(state["noisy_labels"].numpy(), prepared.noisy_labels):
        raise ValueError(f"{run_dir}: the data or noise no longer reproduce the run's noisy labels; {consequence}")


def _saved_transition(config: Config, run_dir: Path) -> np.ndarray | None:
    return rundir.load_transition(run_dir) if estimates_transition(config) else None


# ---- evaluate ------------------------------------------------------------------------------------


def evaluate_run(run_dir: str | Path, *, device: str | None = None) -> dict[str, Any]:
    """Evaluate the checkpoint of a run on its test set (and validation split)."""
    config, prepared, method, state = restore_run(run_dir, device=device, verb="evaluate")
    result = {"epoch": int(state["epoch"])}
    batch = config.eval_batch_for(prepared.data.train.device.type)
    test = evaluate(method, prepared.data.test, batch)
    result.update({f"test_{k}" if k != "acc" else "test_acc": v for k, v in test.items()})
    if prepared.data.val is not None:
        result["val_acc"] = evaluate(method, prepared.data.val, batch)["acc"]
    for name, dataset in prepared.data.extra_tests.items():  # WebVision: imagenet_acc, imagenet_top5
        result.update({f"{name}_{k}": v for k, v in evaluate(method, dataset, batch).items()})
    return result


def restore_run(run_dir: str | Path, *, device: str | None = None, verb: str = "restore", match_labels: bool = False
                ) -> tuple[Config, PreparedData, Method, dict[str, Any]]:
    """A run's config, data and method with its checkpoint's weights and targets, in eval mode.

    Returns ``(config, prepared, method, checkpoint)``; one process whatever the run was trained
    with (a torchrun checkpoint holds every rank's targets). ``verb`` names the purpose in the
    one-line error for a folder without a checkpoint. ``match_labels``: refuse when the data and
    noise no longer give the run's noisy labels (per-example targets would meet other examples).
    """
    run_dir = Path(run_dir)
    config = rundir.checkpointed_config(run_dir, verb)
    state = rundir.load_checkpoint(run_dir)
    runtime = resolve_runtime(config, device)
    scaling = stored_scaling(run_dir, config, f"nothing to {verb}")
    prepared = prepare_data(config, runtime.device, standardization=scaling)
    _check_classes(run_dir, prepared, f"nothing to {verb}")
    if match_labels:
        _check_noisy_labels(run_dir, state, prepared, f"its targets cannot be matched to the examples; nothing to "
                                                      f"{verb}")
    method = build_method(config, prepared, runtime, _saved_transition(config, run_dir), from_checkpoint=True)
    method.load_state_dict(state["method"])
    method.eval()
    return config, prepared, method, state


def run_title(config: Config) -> str:
    """The method and noise of a run in a few words, above its figures."""
    noise_text = "clean labels" if config.noise.type == "none" or config.noise.rate == 0 else \
        f"{config.noise.type} {config.noise.rate:.0%} noise"
    if config.noise.type in CIFAR_N:
        noise_text = f"{config.noise.type} {config.noise.label_set or 'noisy'} labels"
    name = "ELR+" if config.method == "elr_plus" else config.loss.name.upper()
    return f"{name} on {config.data.dataset}, {noise_text}"


def run_curves(run_dirs: Sequence[str | Path]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each run's title and per-epoch records (``metrics.jsonl``): what :func:`elr.plots.plot_runs` draws."""
    runs = []
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir} is not a run directory: it does not exist")
        history = rundir.read_metrics(run_dir)
        if not history:
            raise FileNotFoundError(f"{run_dir} has no epochs in {rundir.METRICS}; is it a run directory?")
        runs.append((run_title(rundir.read_config(run_dir)), history))
    if not runs:
        raise ValueError("run_dirs must name at least one run directory")
    return runs


# ---- what training and resuming share: the epochs, the end, the process group and the lock -------


def _fit(config: Config, prepared: PreparedData, method: Method, run_dir: Path, progress: Progress | None,
         distributed: Distributed | None, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train to the last epoch (from ``state``, a checkpoint, when resuming), then write the summary and plots."""
    main = distributed is None or distributed.is_main  # rank 0 alone writes the run directory and shows progress
    meta = {"config": config.to_dict(), "noisy_labels": torch.from_numpy(prepared.noisy_labels)}
    if distributed is not None:
        meta["world_size"] = distributed.world_size
        attach_target_sync(method)
    engine = Engine(method, prepared.data, optim=config.optim, monitor=config.monitor,
                    eval_batch_size=config.eval_batch_for(prepared.data.train.device.type),
                    seed=derived_seeds(config.seed)["train"],
                    run_dir=run_dir if main else None, progress=progress if main else None, checkpoint_meta=meta,
                    distributed=distributed,
                    on_epoch_end=evidence.SelectedTargetsKeeper.for_run(config, prepared, run_dir, write=main))
    if state is not None:
        engine.load_state_dict(state)
        if isinstance(engine.on_epoch_end, evidence.SelectedTargetsKeeper):
            engine.on_epoch_end.catch_up(engine)
    start = time.perf_counter()
    with cpu_threads(config.threads, prepared.data.train.device, prepared.data.train.sample_shape) as threads:
        history = engine.fit()
        if evidence.missing_targets_reason(config) is None:  # before the summary: a kill here leaves it resumable
            evidence.save_label_evidence(run_dir, config, engine.method, prepared, write=main)
    summary = summarize(history, config, prepared)
    if estimates_transition(config):
        summary["transition_estimate"] = estimate_report(config, prepared, rundir.load_transition(run_dir))
    summary["train_seconds_this_session"] = time.perf_counter() - start
    summary["threads_this_session"] = threads  # torch's CPU threads (elr.methods.cpu_threads)
    if not main:  # another rank of a distributed run: rank 0 writes the summary and plots
        return {**summary, "plots": []}
    rundir.write_summary(run_dir, summary)
    try:
        summary["plots"] = [str(p) for p in plot_training(history, run_dir, title=run_title(config))]
    except ImportError as err:  # matplotlib is an optional extra
        log.warning("no plots: %s", err)
        summary["plots"] = []
    return summary


def _join_process_group(config: Config, device: str | None) -> Distributed | None:
    """The process group under torchrun (None in one process), after checking the config suits it."""
    name = device or config.device
    distributed = init_from_env(cuda=name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()))
    if distributed is None:
        return None
    world, batch = distributed.world_size, config.optim.batch_size
    problem = None
    if batch % world:
        problem = (f"optim.batch_size={batch} is the global batch and must be divisible by the number of "
                   f"processes ({world}): each rank trains on batch_size / {world} examples a step")
    elif estimates_transition(config):
        problem = "loss.transition=estimate (two-stage forward) is not supported under torchrun; run it in one process"
    elif config.data.dataset in FILE_DATASETS and config.data.decode_errors == "skip":
        problem = ("data.decode_errors=skip is not supported under torchrun (a skipped batch would leave the "
                   "ranks out of step); clean the file list or use decode_errors=raise")
    if problem is not None:
        distributed.close()
        raise ConfigError(problem)
    return distributed


def _in_process_group(distributed: Distributed | None, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work``; in a distributed run wait for every rank at the end, then leave the group."""
    try:
        result = work()
        if distributed is not None:
            # rank 0 still writes the summary and plots: a rank that tore down its connections
            # first made gloo abort ("terminate called without an active exception")
            distributed.barrier()
        return result
    finally:
        if distributed is not None:
            distributed.close()


def _lock_alone(run_dir: Path, *, create: bool) -> contextlib.AbstractContextManager[None]:
    """The run directory's lock for a process on its own; under torchrun rank 0 takes it later
    (:func:`_holding`), once the process group can tell the other ranks whether it got it."""
    return contextlib.nullcontext() if launched_distributed() else rundir.lock(run_dir, create=create)


def _holding(run_dir: Path, distributed: Distributed | None, *, create: bool
             ) -> contextlib.AbstractContextManager[None]:
    """Hold ``run_dir``'s lock: this process alone, or rank 0 for every rank of a distributed run."""
    if distributed is None:
        return rundir.lock(run_dir, create=create)
    return distributed.main_holds(lambda: rundir.lock(run_dir, create=create))
