"""A run from a Config: prepare its data, build its method, then train, resume or restart it in its run directory."""

from __future__ import annotations

import builtins
import contextlib
import copy
import dataclasses
import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, evidence, noise, rundir
from .distributed import Distributed, attach_target_sync, init_from_env, launched_distributed
from .config import FILE_DATASETS, Config, ConfigError, check_model_input, component_error
from .data.cifar_n import CIFAR_N
from .elr_plus import ELRPlus
from .engine import Engine, Progress, evaluate
from .losses import create_loss
from .methods import Runtime, Standard, pick_device
from .models import create_model, model_params
from .prepare import PreparedData, derived_seeds, prepare_data
from .two_stage import estimate_in_run_dir, estimates_transition, forward_params

log = logging.getLogger(__name__)


def resolve_runtime(config: Config, device: str | None = None, distributed: Distributed | None = None) -> Runtime:
    """Pick the device (CUDA when present for ``auto``) and the numeric settings that go with it.

    In a distributed run each rank takes ``cuda:LOCAL_RANK`` (whatever CUDA index was named) and
    the models are wrapped in DistributedDataParallel.
    """
    name = device or config.device
    if distributed is not None and name.startswith("cuda"):
        name = "cuda"  # the rank's own index is set below, whatever index was named
    try:
        dev = pick_device(name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if distributed is not None and dev.type == "cuda":
        dev = torch.device(f"cuda:{distributed.local_rank}")
    on_cuda = dev.type == "cuda"
    amp = config.amp == "bf16" or (config.amp == "auto" and on_cuda)
    channels_last = config.channels_last == "on" or (config.channels_last == "auto" and on_cuda)
    if distributed is not None:
        return Runtime(dev, torch.bfloat16 if amp else None, channels_last, config.compile,
                       distributed=True, sync_batchnorm=config.sync_batchnorm)
    return Runtime(dev, torch.bfloat16 if amp else None, channels_last, config.compile)


def true_transition(config: Config, num_classes: int) -> np.ndarray:
    """The transition matrix of the configured synthetic noise model (identity without noise)."""
    n = config.noise
    if n.type in CIFAR_N:
        raise ValueError(f"noise.type={n.type} is human noise from a file: it has no known transition matrix; "
                         "give loss.transition as a .npy file or estimate")
    if n.type == "none" or n.rate == 0:
        return np.eye(num_classes)
    if n.type == "symmetric":
        return noise.transition_matrix("symmetric", n.rate, num_classes, exclude_true=n.exclude_true)
    kind = {10: "cifar10", 100: "cifar100"}.get(num_classes)
    return noise.transition_matrix("asymmetric", n.rate, num_classes, dataset=kind)


def resolve_loss_params(config: Config, num_classes: int, transition: np.ndarray | None = None) -> dict[str, Any]:
    """The loss parameters of the config, with ``forward``'s ``transition`` made a matrix.

    ``transition: true`` is the true matrix of the configured noise model (an oracle T: a sweep file
    cannot hold a 100 x 100 matrix); a string ending in ``.npy`` is loaded from that file;
    ``estimate`` takes ``transition`` (the two-stage estimate, :mod:`elr.two_stage`).
    """
    if config.loss.name != "forward":
        return dict(config.loss.params)
    params = forward_params(config)
    given = params.get("transition")
    if given is True:
        params["transition"] = true_transition(config, num_classes)
    elif given == "estimate":
        if transition is None:
            raise ValueError("loss.transition=estimate: the estimated matrix is missing (stage 1 not run)")
        params["transition"] = transition
    elif isinstance(given, str):
        path = Path(given).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"loss.transition: no such .npy file: {path}")
        params["transition"] = np.load(path, allow_pickle=False)
    return params


def build_method(config: Config, prepared: PreparedData, runtime: Runtime,
                 transition: np.ndarray | None = None, *, from_checkpoint: bool = False) -> Standard | ELRPlus:
    """Create the model(s) and loss(es) named in the config; shapes come from the data.

    ``from_checkpoint``: the weights will be loaded from a checkpoint next, so ``model.pretrained``
    is not read (a resumed or evaluated run does not need the pretrained file any more).

    ``method: elr_plus`` builds :class:`~elr.elr_plus.ELRPlus`. Its first network gets the same
    initial weights as ``method: standard`` (seed ``train``), so one network without weight
    averaging or mixup is exactly ELR; the second network is initialised from its own derived
    seed inside ``fork_rng``, leaving the global torch RNG (dropout) where a one-network run has it.
    """
    num_classes = prepared.data.num_classes
    model_kwargs = dict(config.model.params)
    if from_checkpoint:
        model_kwargs.pop("pretrained", None)
    accepted = model_params(config.model.name)
    shape = prepared.data.train.sample_shape  # one example as batches yield it
    check_model_input(config, int(shape[0]) if len(shape) == 1 else None)
    if "in_channels" in accepted and len(shape) == 3:
        model_kwargs.setdefault("in_channels", int(shape[0]))
    if "in_features" in accepted:
        model_kwargs.setdefault("in_features", int(np.prod(shape)))
    torch.manual_seed(derived_seeds(config.seed)["train"])  # the model's initial weights
    with _named("model", config.model.params):
        model = create_model(config.model.name, num_classes, **model_kwargs)
    with _named("loss", config.loss.params):
        loss = create_loss(config.loss.name, num_examples=len(prepared.data.train), num_classes=num_classes,
                           **resolve_loss_params(config, num_classes, transition))
    if hasattr(loss, "check_values") and runtime.device.type == "cuda":
        loss.check_values = False  # value checks read tensors back to the host every step
    if config.method == "standard":
        return Standard(model, loss, config.optim, runtime)
    if config.method != "elr_plus":
        raise ConfigError(f"method must be one of standard, elr_plus; got {config.method!r}")
    if config.loss.name != "elr":
        raise ConfigError(f"method=elr_plus needs loss.name=elr, got loss.name={config.loss.name!r}")
    seeds = derived_seeds(config.seed)
    settings = dataclasses.asdict(config.elr_plus)
    models, losses = [model], [loss]
    if settings.pop("networks") == 2:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds["network2"])
            models.append(create_model(config.model.name, num_classes, **model_kwargs))
        losses.append(copy.deepcopy(loss))  # same lam, beta, check_values; its own (zero) targets
    return ELRPlus(models, losses, config.optim, runtime, seed=seeds["mixup"], **settings)


@contextlib.contextmanager
def _named(section: str, params: dict[str, Any]):
    """Turn a component's ValueError into a ConfigError naming the config key (``loss.lam must ...``)."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        raise component_error(section, params, err) from None


# ---- the run directory ------------------------------------------------------------------------


def _meta(config: Config, prepared: PreparedData) -> dict[str, Any]:
    return {"config": config.to_dict(), "noisy_labels": torch.from_numpy(prepared.noisy_labels)}


def _versions() -> dict[str, str]:
    return {"elr": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def train(
    config: Config,
    out_dir: str | Path,
    *,
    progress: Progress | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train a new run into ``out_dir``. Returns the summary.

    ``out_dir`` is absent, empty or an unstarted run (one that never reached its first checkpoint:
    its files are replaced). A resumable or finished run, a folder of other files, or one another
    process works in (:class:`elr.rundir.RunDirLockedError`) is refused with FileExistsError and
    left as it was. The config, data and method are checked before the
    first byte is written, so bad input leaves no folder behind.

    Under torchrun (WORLD_SIZE > 1) every process calls this; they train data-parallel and rank 0
    alone writes ``out_dir`` (see :mod:`elr.distributed`).
    """
    return _start(config, Path(out_dir), progress, device, None)


def train_or_resume(
    config: Config,
    run_dir: str | Path,
    *,
    progress: Progress | None = None,
    device: str | None = None,
    sweep_record: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
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
            summary = _start(config, run_dir, progress, device, sweep_record)
            return ("trained" if decision.action == "train" else "restarted"), summary
        if sweep_record is not None:
            rundir.write_sweep_record(run_dir, sweep_record)
        if decision.action == "skip":
            rundir.remove_leftovers(run_dir)
            return "skipped", rundir.read_summary(run_dir)
        return "resumed", resume(run_dir, progress=progress, device=device)


def _lock_alone(run_dir: Path, *, create: bool) -> contextlib.AbstractContextManager[None]:
    """The run directory's lock for a process on its own; under torchrun rank 0 takes it later
    (:func:`_holding`), once the process group can tell the other ranks whether it got it."""
    return contextlib.nullcontext() if launched_distributed() else rundir.lock(run_dir, create=create)


@contextlib.contextmanager
def _holding(run_dir: Path, distributed: Distributed | None, *, create: bool):
    """Hold ``run_dir``'s lock: this process alone, or rank 0 for every rank of a distributed run.

    A rank 0 that cannot take it (another process holds it, the path cannot hold a folder, ...) sends
    its error to the other ranks, which raise it too instead of waiting for rank 0 at the next barrier.
    """
    if distributed is None:
        with rundir.lock(run_dir, create=create):
            yield
        return
    with contextlib.ExitStack() as held:
        failure, relay = None, None
        if distributed.is_main:
            try:
                held.enter_context(rundir.lock(run_dir, create=create))
            except Exception as err:  # busy, or a path that cannot hold a folder: every rank stops
                failure, relay = err, (_builtin_name(err), str(err))
        shared = distributed.broadcast_from_main(relay)  # names and text only: any rank can unpickle them
        if failure is not None:
            raise failure
        if shared is not None:
            relayed = getattr(builtins, shared[0])(shared[1])
            relayed.relayed = True  # rank 0 reports it; the CLI keeps this rank quiet
            raise relayed
        yield


def _builtin_name(err: Exception) -> str:
    """The first builtin exception class of ``err``'s that is made from a message alone."""
    for kind in type(err).__mro__:
        if kind.__module__ == "builtins" and getattr(builtins, kind.__name__, None) is kind:
            try:
                kind("")
            except TypeError:  # UnicodeEncodeError and kin need more than a message
                continue
            return kind.__name__
    return "RuntimeError"


def _start(config: Config, run_dir: Path, progress: Progress | None, device: str | None,
           sweep_record: dict[str, Any] | None) -> dict[str, Any]:
    config.validate()
    distributed = _join_process_group(config, device)
    return _in_process_group(distributed, lambda: _train(config, run_dir, progress, device, distributed,
                                                         sweep_record))


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


def _refusal(st: rundir.RunStatus) -> str:
    """Why a new run cannot go into a folder, and the command the user wants instead."""
    where = st.path
    if st.state == rundir.RESUMABLE:
        return (f"{where} holds an unfinished run ({st.epochs_done} of {st.epochs or '?'} epochs recorded); "
                f"continue it with `elr train --resume {where}`, or choose another --out")
    if st.state == rundir.FINISHED:
        see = (f"inspect it with `elr eval {where}`" if rundir.has_checkpoint(where) else
               f"its results are in {where / rundir.SUMMARY}")
        return f"{where} holds a finished run ({st.epochs} epoch{'s' if st.epochs != 1 else ''}); {see}, or choose another --out"
    return f"{where} {st.reason}; choose another --out (an absent or empty folder)"


def _train(config: Config, run_dir: Path, progress: Progress | None, device: str | None,
           distributed: Distributed | None, sweep_record: dict[str, Any] | None) -> dict[str, Any]:
    with _holding(run_dir, distributed, create=True):  # made here, the folder goes again if nothing is written
        return _train_locked(config, run_dir, progress, device, distributed, sweep_record)


def _train_locked(config: Config, run_dir: Path, progress: Progress | None, device: str | None,
                  distributed: Distributed | None, sweep_record: dict[str, Any] | None) -> dict[str, Any]:
    st = rundir.status(run_dir)
    if st.state not in (rundir.NEW, rundir.UNSTARTED):
        raise FileExistsError(_refusal(st))
    main = distributed is None or distributed.is_main
    if distributed is not None:
        distributed.barrier()  # every rank has looked before rank 0 creates the run's files
    # everything that can reject the input runs before the first byte is written
    runtime = resolve_runtime(config, device, distributed)
    prepared = prepare_data(config, runtime.device)
    two_stage = estimates_transition(config)
    # two-stage Forward: its loss is checked with a stand-in T, the estimate comes from stage 1
    method = build_method(config, prepared, runtime, np.eye(prepared.data.num_classes) if two_stage else None)
    if main and st.state == rundir.UNSTARTED:
        rundir.clear(run_dir)  # the leftovers of a run that never reached a checkpoint; stage1_ce/ stays
    if two_stage:  # stage 1 before the run's own files: a kill here leaves the run unstarted
        transition = estimate_in_run_dir(config, run_dir, progress=progress, device=device)
        method = build_method(config, prepared, runtime, transition)
    if main:
        _write_run_files(config, prepared, run_dir, sweep_record)
    if distributed is not None:
        attach_target_sync(method)
    engine = _engine(config, prepared, method, run_dir, progress, distributed)
    return _finish(config, prepared, engine, run_dir, main)


def _write_run_files(config: Config, prepared: PreparedData, run_dir: Path,
                     sweep_record: dict[str, Any] | None) -> None:
    rundir.write_config(run_dir, config)  # first: it creates the folder and marks it as a run
    rundir.write_noisy_labels(run_dir, prepared.noisy_labels)
    noise_info = {**prepared.noise_summary, "type": config.noise.type, "rate": config.noise.rate,
                  **({"label_set": config.noise.label_set} if config.noise.label_set else {}),
                  "val_indices": prepared.val_indices.tolist()}
    rundir.write_noise(run_dir, noise_info)
    rundir.write_classes(run_dir, prepared.class_names, prepared.label_to_index)
    if sweep_record is not None:
        rundir.write_sweep_record(run_dir, sweep_record)


def resume(run_dir: str | Path, *, progress: Progress | None = None, device: str | None = None) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint; results equal an uninterrupted run.

    A finished run is not trained further: its summary and plots are written again. A distributed
    run resumes under torchrun with the same number of processes; another number is refused (the
    shards, and so the batches, depend on it).
    """
    run_dir = Path(run_dir)
    with _lock_alone(run_dir, create=False):
        config = _checkpointed_run_config(run_dir, "resume")
        distributed = _join_process_group(config, device)
        return _in_process_group(distributed, lambda: _resume(config, run_dir, progress, device, distributed))


def _checkpointed_run_config(run_dir: Path, verb: str) -> Config:
    """The config of a run with a checkpoint; a one-line error naming what the folder is instead."""
    st = rundir.status(run_dir)
    if st.state == rundir.UNSTARTED:
        raise FileNotFoundError(
            f"{run_dir} never reached its first checkpoint: nothing to {verb}; start it again with "
            f"`elr train --config {rundir.config_path(run_dir)} --out {run_dir}`"
            if rundir.config_path(run_dir).is_file() else
            f"{run_dir} never reached its first checkpoint: nothing to {verb}; train it again with its config")
    if st.state == rundir.NEW:
        raise FileNotFoundError(f"{run_dir} is not a run directory: "
                                f"{'it does not exist' if not run_dir.exists() else 'it is empty'}")
    if st.state == rundir.FOREIGN:
        raise FileNotFoundError(f"{run_dir} is not a run directory: it {st.reason}")
    if not rundir.has_checkpoint(run_dir):
        raise FileNotFoundError(f"{run_dir} holds a finished run whose {rundir.CHECKPOINT} was removed: nothing "
                                f"to {verb}; its results are in {run_dir / rundir.SUMMARY}")
    return rundir.read_config(run_dir)


def _resume(config: Config, run_dir: Path, progress: Progress | None, device: str | None,
            distributed: Distributed | None) -> dict[str, Any]:
    with _holding(run_dir, distributed, create=False):
        if distributed is not None:  # rank 0 has just taken the lock: look again
            config = _checkpointed_run_config(run_dir, "resume")
        if distributed is None or distributed.is_main:
            rundir.remove_leftovers(run_dir)  # temporary files of a write the kill cut short
        return _resume_locked(config, run_dir, progress, device, distributed)


def _resume_locked(config: Config, run_dir: Path, progress: Progress | None, device: str | None,
                   distributed: Distributed | None) -> dict[str, Any]:
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
            f"depend on the number of processes; resume with torchrun --nproc_per_node (x --nnodes) = {saved_world}"
            if saved_world > 1 else
            f"{run_dir} was trained in one process; resume it with plain `elr train --resume` (not torchrun)"
        )
    runtime = resolve_runtime(config, device, distributed)
    prepared = prepare_data(config, runtime.device)
    _check_classes(run_dir, prepared, "refusing to resume")
    _check_noisy_labels(run_dir, state, prepared, "refusing to resume")
    method = build_method(config, prepared, runtime, _saved_transition(config, run_dir), from_checkpoint=True)
    if distributed is not None:
        attach_target_sync(method)
    engine = _engine(config, prepared, method, run_dir, progress, distributed)
    engine.load_state_dict(state)
    if isinstance(engine.on_epoch_end, evidence.SelectedTargetsKeeper):
        engine.on_epoch_end.catch_up(engine)
    return _finish(config, prepared, engine, run_dir, distributed is None or distributed.is_main)


def load_run_config(run_dir: str | Path) -> Config:
    """The config a run directory was trained with."""
    return rundir.read_config(run_dir)


def restore_run(run_dir: str | Path, *, device: str | None = None, verb: str = "restore", match_labels: bool = False
                ) -> tuple[Config, PreparedData, Standard | ELRPlus, dict[str, Any]]:
    """A run's config, data and method with its checkpoint's weights and targets, in eval mode.

    Returns ``(config, prepared, method, checkpoint)``; one process whatever the run was trained
    with (a torchrun checkpoint holds every rank's targets). ``verb`` names the purpose in the
    one-line error for a folder without a checkpoint. ``match_labels``: refuse when the data and
    noise no longer give the run's noisy labels (per-example targets would meet other examples).
    """
    run_dir = Path(run_dir)
    config = _checkpointed_run_config(run_dir, verb)
    state = rundir.load_checkpoint(run_dir)
    runtime = resolve_runtime(config, device)
    prepared = prepare_data(config, runtime.device)
    _check_classes(run_dir, prepared, f"nothing to {verb}")
    if match_labels:
        _check_noisy_labels(run_dir, state, prepared, f"its targets cannot be matched to the examples; nothing to "
                                                      f"{verb}")
    method = build_method(config, prepared, runtime, _saved_transition(config, run_dir), from_checkpoint=True)
    method.load_state_dict(state["method"])
    method.eval()
    return config, prepared, method, state


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


def evaluate_run(run_dir: str | Path, *, device: str | None = None) -> dict[str, Any]:
    """Evaluate the checkpoint of a run on its test set (and validation split)."""
    config, prepared, method, state = restore_run(run_dir, device=device, verb="evaluate")
    result = {"epoch": int(state["epoch"])}
    test = evaluate(method, prepared.data.test, config.eval_batch_size)
    result.update({f"test_{k}" if k != "acc" else "test_acc": v for k, v in test.items()})
    if prepared.data.val is not None:
        result["val_acc"] = evaluate(method, prepared.data.val, config.eval_batch_size)["acc"]
    for name, dataset in prepared.data.extra_tests.items():  # WebVision: imagenet_acc, imagenet_top5
        result.update({f"{name}_{k}": v for k, v in evaluate(method, dataset, config.eval_batch_size).items()})
    return result


def _saved_transition(config: Config, run_dir: Path) -> np.ndarray | None:
    return rundir.load_transition(run_dir) if estimates_transition(config) else None


def _engine(config: Config, prepared: PreparedData, method: Standard | ELRPlus, run_dir: Path,
            progress: Progress | None, distributed: Distributed | None = None) -> Engine:
    main = distributed is None or distributed.is_main  # rank 0 alone writes the run directory and shows progress
    meta = _meta(config, prepared)
    if distributed is not None:
        meta["world_size"] = distributed.world_size
    return Engine(method, prepared.data, optim=config.optim, monitor=config.monitor,
                  eval_batch_size=config.eval_batch_size, seed=derived_seeds(config.seed)["train"],
                  run_dir=run_dir if main else None, progress=progress if main else None, checkpoint_meta=meta,
                  distributed=distributed,
                  on_epoch_end=evidence.SelectedTargetsKeeper.for_run(config, prepared, run_dir, write=main))


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


def _finish(config: Config, prepared: PreparedData, engine: Engine, run_dir: Path, main: bool = True) -> dict[str, Any]:
    start = time.perf_counter()
    history = engine.fit()
    if evidence.missing_targets_reason(config) is None:  # before the summary: a kill here leaves it resumable
        evidence.save_label_evidence(run_dir, config, engine.method, prepared, write=main)
    summary = summarize(history, config, prepared)
    if estimates_transition(config):
        summary["transition_estimate"] = _estimate_report(config, prepared, rundir.load_transition(run_dir))
    summary["train_seconds_this_session"] = time.perf_counter() - start
    if not main:  # another rank of a distributed run: rank 0 writes the summary and plots
        return {**summary, "plots": []}
    rundir.write_summary(run_dir, summary)
    summary["plots"] = _plot(run_dir, history, config)
    return summary


def _estimate_report(config: Config, prepared: PreparedData, estimate: np.ndarray) -> dict[str, Any]:
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


def _plot(run_dir: Path, history: list[dict[str, Any]], config: Config) -> list[str]:
    try:
        from .plots import plot_training
    except ImportError:
        return []
    try:
        return [str(p) for p in plot_training(history, run_dir, title=run_title(config))]
    except ImportError as err:
        log.warning("no plots: %s", err)
        return []


def run_title(config: Config) -> str:
    noise_text = "clean labels" if config.noise.type == "none" or config.noise.rate == 0 else \
        f"{config.noise.type} {config.noise.rate:.0%} noise"
    if config.noise.type in CIFAR_N:
        noise_text = f"{config.noise.type} {config.noise.label_set or 'noisy'} labels"
    name = "ELR+" if config.method == "elr_plus" else config.loss.name.upper()
    return f"{name} on {config.data.dataset}, {noise_text}"
