"""Run configuration: typed dataclasses, YAML files, dotted ``key=value`` overrides and validation."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import textwrap
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .losses import check_loss_params, list_losses, loss_params
from .models import list_models, model_params
from .models.registry import check_model_params


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and what is accepted."""


FILE_DATASETS = ("image_folder", "csv", "clothing1m", "webvision")  # read from image files (elr.prepare, elr.data.file_dataset)
_TABLE_KEYS = ("label_column", "feature_columns", "true_label_column", "test_file", "test_fraction")  # features only
_FILE_KEYS = ("image_size", "crop_size", "train_crop", "workers", "batches_per_epoch", "decode_errors",
              "label_file", "test_label_file", "val_label_file", "imagenet_root")


@dataclass
class DataConfig:
    """Where the examples come from and how they are split."""

    dataset: str = "digits"  # cifar10 | cifar100 | npz | digits | features | image_folder | csv | clothing1m | webvision
    root: str | None = None  # CIFAR's python-version folder, the .npz file, the image files' folder; features: .npz, .npy folder or CSV
    val_fraction: float = 0.0  # noisy validation split held out of the training set (authors: 0.1)
    train_size: int | None = None  # keep a seeded, stratified subset of the training set (CPU presets)
    augment: bool = True  # random crop (padding 4) + horizontal flip for image data
    # image files (image_folder, csv, clothing1m, webvision) only; see elr.data.file_dataset
    image_size: int | None = None  # shorter side after resizing; default 256
    crop_size: int | None = None  # square crop fed to the model; default 224 (webvision 227)
    train_crop: str = "random_crop"  # random_crop | random_resized_crop (augment=false: centre crop)
    workers: int = 0  # DataLoader processes decoding images (0: in the training process)
    batches_per_epoch: int | None = None  # class-balanced draw of this many batches every epoch (Clothing1M: 3000)
    decode_errors: str = "raise"  # raise | skip: an unreadable image stops the run, or is skipped and counted
    label_file: str | None = None  # csv: training list path,label[,true_label], relative to root
    test_label_file: str | None = None  # csv: test list
    val_label_file: str | None = None  # csv: optional validation list
    imagenet_root: str | None = None  # webvision: ILSVRC2012 val images, one folder per synset (second test set)
    # feature vectors (see elr.data.features)
    standardize: bool = False  # features, npz features, digits: mean 0, std 1 per feature, fitted on the training split
    label_column: str = "label"  # features, CSV table: the column of the (possibly wrong) labels
    feature_columns: list[str] | None = None  # features, CSV table: default every column but the label columns
    true_label_column: str | None = None  # features, CSV table: clean labels, when known (measures memorization)
    test_file: str | None = None  # features, CSV table: the test rows, same columns
    test_fraction: float | None = None  # features without a test set: hold out this share of each class as test rows


@dataclass
class NoiseConfig:
    """Label noise applied to the training labels (see ``elr.noise``)."""

    type: str = "symmetric"  # none | symmetric | asymmetric | cifar10n | cifar100n (human labels, CIFAR-N)
    rate: float = 0.0  # synthetic types only; CIFAR-N's rate is the file's (reported as realised_rate)
    exclude_true: bool = False  # symmetric only: flip to a different class (rate = realised rate)
    seed: int | None = None  # defaults to the run seed
    label_set: str | None = None  # cifar10n: aggregate | random1 | random2 | random3 | worst
    file: str | None = None  # CIFAR-N .pt file; default: CIFAR-10_human.pt / CIFAR-100_human.pt in or next to data.root


@dataclass
class Component:
    """A component chosen by name plus its keyword parameters (``model`` and ``loss`` sections)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


@dataclass
class OptimConfig:
    """SGD and the learning-rate schedule (epochs may be fractional inside a schedule)."""

    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-3
    nesterov: bool = False
    batch_size: int = 128
    epochs: int = 150
    schedule: str = "multistep"  # constant | multistep | cosine | cosine_restarts | onecycle
    milestones: list[int] = field(default_factory=lambda: [40, 80])
    gamma: float = 0.01
    restart_period: int = 10  # cosine_restarts: epochs per cycle (T_0)
    min_lr: float = 0.0  # cosine / cosine_restarts floor (authors' cosine rows: 1e-3)
    warmup_fraction: float = 0.25  # onecycle: fraction of training spent rising


@dataclass
class MonitorConfig:
    """What is measured on the training set after every epoch."""

    memorization: bool = True  # paper Figure 1 fractions (needs the true labels)
    subset: int | None = None  # measure on a fixed random subset of this many training examples
    gradient_terms: bool = False  # paper Figure 2 coefficients (ELR losses only)
    detection: bool = True  # ELR: how well the targets find the wrong labels (det_* keys; needs the true labels)


@dataclass
class ElrPlusConfig:
    """ELR+ (``method: elr_plus``, paper Section 4.3): each part can be switched off for the Table 5 ablation."""

    networks: int = 2  # 1 | 2: with 2, each network's targets come from the other network
    weight_averaging: bool = True  # targets from an EMA copy of the (other) network, else from the raw network
    mixup: bool = True  # mix inputs, labels and targets with l ~ Beta(alpha, alpha), l = max(l, 1 - l)
    mixup_alpha: float = 1.0
    ema_decay: float = 0.997  # authors: 0.997 for CIFAR, 0.9999 for Clothing1M
    ema_schedule: str = "sigmoid"  # sigmoid: decay * exp(-5 (1 - step/L)^2) | mean_teacher: min(1 - 1/(step+1), decay)
    ema_ramp_steps: int = 40000  # L of the sigmoid ramp of the EMA decay (0 = constant decay)
    lam_ramp_steps: int = 0  # L of the sigmoid ramp of lambda (authors' CIFAR-100: 40000; 0 = off)
    predict_with: str = "networks"  # networks | ema: whose logits are averaged for evaluation


@dataclass
class Config:
    """Everything that defines a run. ``Config.load(path, overrides)`` is the usual entry point."""

    seed: int = 0
    method: str = "standard"
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: Component = field(default_factory=lambda: Component("mlp"))  # from a file: see default_model
    loss: Component = field(default_factory=lambda: Component("elr", {"lam": 3.0, "beta": 0.7}))
    optim: OptimConfig = field(default_factory=OptimConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    elr_plus: ElrPlusConfig = field(default_factory=ElrPlusConfig)  # read only when method=elr_plus
    eval_batch_size: int | str = "auto"  # auto: 1024 on CUDA, 128 on CPU (smaller batches stay in cache)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | str = "auto"  # torch CPU threads; auto: one for feature vectors on CPU (elr.methods.cpu_threads)
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off
    channels_last: str = "auto"  # auto (on for CUDA) | on | off
    compile: bool = False  # torch.compile the model(s)
    sync_batchnorm: bool = False  # under torchrun: SyncBatchNorm (statistics over the global batch; CUDA only)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        return _build(cls, raw, "")

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
        """Read a YAML file (or start from defaults), apply ``key=value`` overrides, validate."""
        raw: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            try:
                loaded = yaml.safe_load(path.read_text())
            except yaml.YAMLError as err:
                raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"{path}: the top level of a config must be a mapping of keys to values")
            raw = loaded or {}
        raw = apply_overrides(raw, overrides)
        config = cls.from_dict(raw)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def eval_batch_for(self, device_type: str) -> int:
        """``eval_batch_size`` on a device of ``device_type`` ("cuda", "cpu"): auto is 1024 on CUDA, 128 on
        CPU, where a smaller batch's activations stay in cache (ResNet-8: 0.21 vs 0.75 ms an image with 2
        threads, 0.29 vs 0.48 with one; benchmarks/README.md). The logits do not depend on it."""
        if self.eval_batch_size != "auto":
            return int(self.eval_batch_size)
        return 1024 if device_type == "cuda" else 128

    # ---- validation -------------------------------------------------------------------------
    def validate(self) -> Config:
        """Check every value; raise ConfigError naming the key and the accepted values."""
        d, n, o, m = self.data, self.noise, self.optim, self.monitor
        _choice("data.dataset", d.dataset, ("cifar10", "cifar100", "npz", "digits", "features", *FILE_DATASETS))
        if d.dataset in ("cifar10", "cifar100", "npz", "features", *FILE_DATASETS) and not d.root:
            raise ConfigError(f"data.root is required for data.dataset={d.dataset!r}: give data.root=PATH")
        _range("data.val_fraction", d.val_fraction, 0.0, 1.0, hi_open=True)
        _optional_int("data.train_size", d.train_size, 2)
        _choice("noise.type", n.type, ("none", "symmetric", "asymmetric", "cifar10n", "cifar100n"))
        _range("noise.rate", n.rate, 0.0, 1.0)
        self._validate_human_noise()
        if n.type == "asymmetric" and d.dataset not in ("cifar10", "cifar100", "npz"):
            raise ConfigError("noise.type=asymmetric is defined for CIFAR-10/100 only (data.dataset cifar10, cifar100, npz)")
        _optional_int("noise.seed", n.seed, 0)
        _int("seed", self.seed, 0)
        _choice("method", self.method, ("standard", "elr_plus"))
        _range("optim.lr", o.lr, 0.0, math.inf, lo_open=True)
        _range("optim.momentum", o.momentum, 0.0, 1.0, hi_open=True)
        _range("optim.weight_decay", o.weight_decay, 0.0, math.inf)
        _int("optim.batch_size", o.batch_size, 1)
        _int("optim.epochs", o.epochs, 1)
        _choice("optim.schedule", o.schedule, ("constant", "multistep", "cosine", "cosine_restarts", "onecycle"))
        if not isinstance(o.milestones, list) or not all(isinstance(x, int) and x > 0 for x in o.milestones):
            raise ConfigError(f"optim.milestones must be a list of positive epoch numbers, got {o.milestones!r}")
        if o.milestones != sorted(o.milestones):
            raise ConfigError(f"optim.milestones must be increasing, got {o.milestones!r}")
        _range("optim.gamma", o.gamma, 0.0, 1.0, lo_open=True)
        _int("optim.restart_period", o.restart_period, 1)
        _range("optim.min_lr", o.min_lr, 0.0, o.lr)
        _range("optim.warmup_fraction", o.warmup_fraction, 0.0, 1.0, lo_open=True, hi_open=True)
        if o.nesterov and o.momentum == 0:
            raise ConfigError("optim.nesterov=true needs optim.momentum > 0")
        _optional_int("monitor.subset", m.subset, 1)
        _auto_int("eval_batch_size", self.eval_batch_size)
        _auto_int("threads", self.threads)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _choice("amp", self.amp, ("auto", "bf16", "off"))
        _choice("channels_last", self.channels_last, ("auto", "on", "off"))
        _check_component("model", self.model)
        _check_component("loss", self.loss)
        if d.dataset == "digits":  # known before reading: 8 x 8 pixels as 64 features
            check_model_input(self, 64)
        if self.loss.name == "forward":
            _validate_forward(self.loss.params)
        self._validate_elr_plus()
        self._validate_files()
        self._validate_features()
        return self

    def _validate_features(self) -> None:
        """The feature keys of ``data``: standardisation for feature vectors, the table keys for ``features``."""
        d, defaults = self.data, DataConfig()
        if not isinstance(d.standardize, bool):
            raise ConfigError(f"data.standardize must be true or false, got {d.standardize!r}")
        if d.standardize and d.dataset not in ("features", "npz", "digits"):
            raise ConfigError(f"data.standardize scales feature vectors (data.dataset features, npz, digits), not "
                              f"data.dataset={d.dataset!r}; remove it")
        if d.dataset != "features":
            for key in _TABLE_KEYS:
                if getattr(d, key) != getattr(defaults, key):
                    raise ConfigError(f"data.{key} applies to data.dataset=features, not {d.dataset!r}; remove it")
            return
        for key in ("label_column", "true_label_column", "test_file"):
            value = getattr(d, key)
            if (value is not None or key == "label_column") and (not isinstance(value, str) or not value):
                raise ConfigError(f"data.{key} must be {'a path' if key == 'test_file' else 'a column name'}, "
                                  f"got {value!r}")
        if d.true_label_column == d.label_column:
            raise ConfigError(f"data.true_label_column and data.label_column are both {d.label_column!r}: name two "
                              f"columns (the given labels, the clean ones)")
        columns = d.feature_columns
        if columns is not None:
            if (not isinstance(columns, list) or not columns
                    or not all(isinstance(c, str) and c for c in columns)):
                raise ConfigError(f"data.feature_columns must be a non-empty list of column names, got {columns!r}")
            if len(set(columns)) != len(columns):
                raise ConfigError(f"data.feature_columns names a column twice: {columns!r}")
        if d.test_fraction is not None:
            _range("data.test_fraction", d.test_fraction, 0.0, 1.0, lo_open=True, hi_open=True)
            if d.test_file is not None:
                raise ConfigError("data.test_file and data.test_fraction both give a test set: keep one")

    def _validate_files(self) -> None:
        """The image-file keys of ``data``: only for file data sets, and consistent with the data set."""
        d, defaults = self.data, DataConfig()
        if d.dataset not in FILE_DATASETS:
            for key in _FILE_KEYS:
                if getattr(d, key) != getattr(defaults, key):
                    raise ConfigError(f"data.{key} applies to image-file data sets ({', '.join(FILE_DATASETS)}), "
                                      f"not data.dataset={d.dataset!r}; remove it")
            return
        _optional_int("data.image_size", d.image_size, 1)
        _optional_int("data.crop_size", d.crop_size, 1)
        if d.image_size is not None and d.crop_size is not None and d.crop_size > d.image_size:
            raise ConfigError(f"data.crop_size ({d.crop_size}) must not exceed data.image_size ({d.image_size})")
        _choice("data.train_crop", d.train_crop, ("random_crop", "random_resized_crop"))
        _int("data.workers", d.workers, 0)
        _optional_int("data.batches_per_epoch", d.batches_per_epoch, 1)
        _choice("data.decode_errors", d.decode_errors, ("raise", "skip"))
        for key in ("label_file", "test_label_file", "val_label_file", "imagenet_root"):
            value = getattr(d, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"data.{key} must be a path, got {value!r}")
        own = {"csv": ("label_file", "test_label_file", "val_label_file"), "webvision": ("imagenet_root",)}
        for key in ("label_file", "test_label_file", "val_label_file", "imagenet_root"):
            if getattr(d, key) is not None and key not in own.get(d.dataset, ()):
                raise ConfigError(f"data.{key} is not read for data.dataset={d.dataset!r}; remove it")
        if d.dataset == "csv":
            for key in ("label_file", "test_label_file"):
                if getattr(d, key) is None:
                    raise ConfigError(f"data.dataset=csv needs data.{key}=FILE (lines path,label[,true_label])")
        if d.dataset in ("clothing1m", "webvision") and self.noise.type != "none" and self.noise.rate > 0:
            raise ConfigError(f"data.dataset={d.dataset} has real label noise: use noise.type=none")
        if d.dataset == "clothing1m" and d.val_fraction > 0:
            raise ConfigError("data.val_fraction must be 0 for clothing1m: its clean validation list is the validation set")

    def _validate_human_noise(self) -> None:
        """CIFAR-N (``noise.type`` cifar10n / cifar100n) reads its labels from a file: no rate, one label set."""
        n, dataset = self.noise, self.data.dataset
        if n.type not in ("cifar10n", "cifar100n"):
            for key in ("label_set", "file"):
                if getattr(n, key) is not None:
                    raise ConfigError(f"noise.{key} is read only with noise.type=cifar10n or cifar100n, "
                                      f"not with noise.type={n.type!r}; remove it")
            return
        if n.rate != 0:
            raise ConfigError(f"noise.rate has no meaning for noise.type={n.type}: the noisy labels come from the "
                              f"CIFAR-N file (its rate is reported as realised_rate); remove noise.rate")
        if n.exclude_true:
            raise ConfigError(f"noise.exclude_true is for noise.type=symmetric, not {n.type}")
        base = n.type[:-1]
        if dataset not in (base, "npz"):
            raise ConfigError(f"noise.type={n.type} labels the {base} training set: needs data.dataset={base} "
                              f"(or npz holding that training set in its original order), got {dataset!r}")
        if n.type == "cifar10n":
            _choice("noise.label_set", n.label_set, ("aggregate", "random1", "random2", "random3", "worst"))
        elif n.label_set is not None:
            raise ConfigError("noise.label_set is for cifar10n only: cifar100n has one label set; remove it")
        if n.file is not None and not isinstance(n.file, str):
            raise ConfigError(f"noise.file must be a path, got {n.file!r}")

    def _validate_elr_plus(self) -> None:
        check_elr_plus(dataclasses.asdict(self.elr_plus))
        if self.method == "elr_plus" and self.loss.name != "elr":
            raise ConfigError(f"method=elr_plus regularises with ELR and needs loss.name=elr, got "
                              f"loss.name={self.loss.name!r}; use method=standard for other losses")


def default_model(data: Any) -> str:
    """The model of a config that names none: the MLP for feature vectors (digits, features), ResNet-8 for images.

    ``data`` is the config's ``data`` mapping as written (None: the defaults, digits). A ``.npz``
    of feature vectors needs ``model.name: mlp``; ResNet-8 on them is refused naming both keys.
    """
    dataset = data.get("dataset", DataConfig.dataset) if isinstance(data, dict) else DataConfig.dataset
    return "mlp" if dataset in ("digits", "features") else "resnet8"


# ---- where relative data paths point -----------------------------------------------------------

# The keys holding a path that is read as given (data.label_file and its kin are relative to data.root).
PATH_KEYS = ("data.root", "data.imagenet_root", "data.test_file", "noise.file", "loss.transition", "model.pretrained")


def locate_paths(config: Config, folder: str | Path | None, *, strict: bool = True) -> Config:
    """``config`` with each relative path of :data:`PATH_KEYS` found: in the working directory first
    (the presets' ``../shared/...`` are written from the repository root), then in ``folder``, the
    folder of the config file (None: no config file).

    A path found only beside the config file becomes that absolute path; one found in the working
    directory, or absolute, stays as written (the run's identity keeps the value the user wrote). With
    ``strict``, a relative path found in neither place is a ConfigError naming both paths tried;
    otherwise it is left for the reader to report. Returns a new Config; ``config`` is unchanged.
    """
    found = copy.deepcopy(config)
    folder = Path(folder).resolve() if folder is not None else None
    for key in PATH_KEYS:
        section, name = key.split(".")
        holder = getattr(found, section)
        values = holder.params if isinstance(holder, Component) else vars(holder)  # the section's own mapping
        value = values.get(name)
        if not isinstance(value, str) or not value or (key == "loss.transition" and not value.endswith(".npy")):
            continue
        path = Path(value).expanduser()
        if path.is_absolute() or path.exists():
            continue
        beside = folder / path if folder is not None else None
        if beside is not None and beside.exists():
            values[name] = str(beside.resolve())
        elif strict:
            tried = f"{Path.cwd() / path} (from the working directory)"
            if beside is not None:
                tried += f" nor {beside} (from the config file's folder)"
            raise ConfigError(f"{key}={value}: not found as {tried}; give an absolute path or start elr from "
                              f"the folder the path is written from")
    return found


# ---- switching a section -------------------------------------------------------------------

# The key that chooses what a section is: a new value starts the section afresh, keeping only the
# keys the new choice reads (loss.name=ce must not inherit ELR's lam and beta).
SWITCHES = {"model": "name", "loss": "name", "noise": "type"}
_NOISE_READS = {"none": ("seed",), "symmetric": ("rate", "exclude_true", "seed"), "asymmetric": ("rate", "seed"),
                "cifar10n": ("label_set", "file"), "cifar100n": ("file",)}


def switch_default(section: str, raw: dict[str, Any] | None = None) -> Any:
    """The switch value of ``section`` when the config ``raw`` leaves it out (``loss`` -> ``"elr"``;
    ``model`` -> :func:`default_model` of its data)."""
    if section == "model":
        return default_model((raw or {}).get("data"))
    default = getattr(Config(), section)
    return default.name if isinstance(default, Component) else getattr(default, SWITCHES[section])


def switched(section: str, current: Any, choice: Any, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """What remains of a section's mapping ``current`` (of the config ``raw``) when its switch key
    becomes ``choice``.

    The same choice keeps everything; a model or loss of another name keeps nothing; a noise model
    of another type keeps the keys that type reads (a switch to cifar10n drops a symmetric rate).
    """
    if not isinstance(current, dict):
        return {}
    key = SWITCHES[section]
    if current.get(key, switch_default(section, raw)) == choice:
        return dict(current)
    keep = _NOISE_READS.get(choice, ()) if section == "noise" else ()
    return {k: v for k, v in current.items() if k in keep}


# ---- overrides -----------------------------------------------------------------------------


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``a.b.c=value`` strings applied in order; values are parsed as YAML.

    A switch (``model.name``, ``loss.name``, ``noise.type``) rebuilds its section from the section
    as it was before the overrides (or as a whole-section override last gave it): the same choice
    keeps it, another keeps what the new choice reads (:func:`switched`); the keys of the section
    given by earlier overrides stay on top. So ``loss.lam=1 loss.name=elr_kl`` keeps ``lam=1``,
    and the last of several switches wins.
    """
    result = copy.deepcopy(raw)
    base = {section: copy.deepcopy(result.get(section)) for section in SWITCHES}
    given: dict[str, dict[str, Any]] = {section: {} for section in SWITCHES}
    for item in overrides:
        item, key, value = _parse_override(item)
        parts = key.split(".")
        section = parts[0]
        if section in SWITCHES and len(parts) == 1:  # a whole section: the new starting point
            base[section], given[section] = copy.deepcopy(value), {}
        elif section in SWITCHES and len(parts) == 2 and isinstance(result.get(section, {}), dict):
            if parts[1] == SWITCHES[section]:
                result[section] = {**switched(section, base[section] or {}, value, result), **given[section]}
            given[section][parts[1]] = value
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return result


def _parse_override(item: str) -> tuple[str, str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} must look like key=value, e.g. optim.lr=0.01")
    try:
        value = _numeric(yaml.safe_load(text)) if text != "" else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: cannot parse the value ({' '.join(str(err).split())})") from None
    return item, key, value


def did_you_mean(word: str, choices: Any, prefix: str = "") -> str:
    """``"did you mean optim.lr? "`` for the closest of ``choices`` to ``word``; empty when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean {prefix}{close[0]}? " if close else ""


# ---- the keys, as `elr train --help` lists them ------------------------------------------------------

OVERRIDE_RULES = """\
key=value overrides, after the options: dotted keys into the config, applied in order on top of the
--config file; each value is read as YAML (optim.milestones=[40,80], data.root=null, model={name: mlp}).
  - An unknown key is an error naming the closest known one and listing the valid keys.
  - A new model.name, loss.name or noise.type starts its section afresh, keeping only the keys the new
    choice reads (loss.name=ce on an ELR preset drops lam and beta; noise.type=cifar10n drops a rate);
    the section's other overrides then apply to it. A whole section, loss={name: gce, q: 0.7},
    replaces it.
  - Relative paths (data.root, data.test_file, data.imagenet_root, noise.file, loss.transition,
    model.pretrained) are looked for from the working directory first, then from the --config file's
    folder.
  - device, threads, eval_batch_size, amp, channels_last and compile say how a run is computed, not
    which run it is: it resumes whatever they are set to."""


def describe_keys(width: int = 100) -> str:
    """Every config key with its default, and the parameters of each model and loss (for ``--help``)."""
    def line(items: list[str], indent: str = "  ") -> str:
        return textwrap.fill("  ".join(items), width, initial_indent=indent, subsequent_indent=indent + "  ",
                             break_long_words=False, break_on_hyphens=False)

    def shown(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()

    config = Config()
    top, sections = [], []
    for f in fields(Config):
        value = getattr(config, f.name)
        if isinstance(value, Component):
            continue
        if dataclasses.is_dataclass(value):
            sections.append(line([f"{f.name}.{g.name}={shown(getattr(value, g.name))}" for g in fields(value)]))
        else:
            top.append(f"{f.name}={shown(value)}")
    models = [f"{name}: {' '.join(model_params(name)) or '-'}" for name in list_models()]
    losses = [f"{name}: {' '.join(loss_params(name)) or '-'}" for name in list_losses()]
    losses = [f"{x} (transition=estimate: {' '.join(ESTIMATE_KEYS)})" if x.startswith("forward:") else x
              for x in losses]
    return "\n".join([
        "config keys (key=default):", line(top), *sections,
        "  model.name=mlp for feature vectors, resnet8 for images; model.PARAM for the chosen model:",
        *(line([m], "    ") for m in models),
        "  loss.name=elr (lam 3, beta 0.7); loss.PARAM for the chosen loss:",
        *(line([x], "    ") for x in losses),
    ])


# ---- dataclass <-> dict ---------------------------------------------------------------------


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if cls is Component:
        return _build_component(raw, prefix)
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"unknown key {prefix}{unknown[0]} in {where}; {did_you_mean(unknown[0], known, prefix)}"
                          f"valid keys: {', '.join(known)}")
    defaults = cls()
    kwargs = {}
    if cls is Config:  # the model a config does not name follows its data
        defaults.model = kwargs["model"] = Component(default_model(raw.get("data")))
    for name, value in raw.items():
        current = getattr(defaults, name)
        if isinstance(current, Component) and isinstance(value, dict) and "name" not in value:
            # overriding parameters of the default component keeps its name and other parameters
            kwargs[name] = _build_component({**current.to_dict(), **value}, f"{prefix}{name}.")
        elif dataclasses.is_dataclass(current):
            kwargs[name] = _build(type(current), value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", value, current)
    return cls(**kwargs)


def _build_component(raw: Any, prefix: str) -> Component:
    where = prefix.rstrip(".")
    if isinstance(raw, str):
        return Component(raw)
    if not isinstance(raw, dict) or "name" not in raw or not isinstance(raw["name"], str):
        raise ConfigError(f"{where} must be a mapping with a 'name' (and its parameters), got {raw!r}")
    params = {k: _numeric(v) for k, v in raw.items() if k != "name"}
    return Component(raw["name"], params)


def _numeric(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; read number-like strings as numbers."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


_AUTO_INT = ("eval_batch_size", "threads")  # "auto" or a positive integer
_ON_OFF = {"amp": {True: "bf16", False: "off"}, "channels_last": {True: "on", False: "off"}}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Accept ints for floats and None for optional fields; reject other type mismatches."""
    if key in _AUTO_INT:  # auto or a count: checked by validate
        return _numeric(value)
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        value = _numeric(value)
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if isinstance(default, str) and isinstance(value, bool) and key in _ON_OFF:
        return _ON_OFF[key][value]  # YAML reads a bare on/off as a boolean
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{key} must be a list, got {value!r}")
    return value


def _to_dict(obj: Any) -> Any:
    if isinstance(obj, Component):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_dict(x) for x in obj]
    return obj


# ---- value checks ----------------------------------------------------------------------------


EMA_SCHEDULES = ("sigmoid", "mean_teacher")
PREDICT_WITH = ("networks", "ema")


def check_elr_plus(settings: dict[str, Any], prefix: str = "elr_plus.") -> None:
    """The ELR+ settings of a config (keys named ``elr_plus.<key>``) and of :class:`elr.ELRPlus` built in
    Python (``prefix=""``, no ``networks``: it counts its models): a ConfigError naming the first bad key."""
    if "networks" in settings and (isinstance(settings["networks"], bool) or settings["networks"] not in (1, 2)):
        raise ConfigError(f"{prefix}networks must be 1 or 2, got {settings['networks']!r}")
    _range(f"{prefix}mixup_alpha", settings["mixup_alpha"], 0.0, math.inf, lo_open=True)
    _range(f"{prefix}ema_decay", settings["ema_decay"], 0.0, 1.0, hi_open=True)
    _choice(f"{prefix}ema_schedule", settings["ema_schedule"], EMA_SCHEDULES)
    _int(f"{prefix}ema_ramp_steps", settings["ema_ramp_steps"], 0)
    _int(f"{prefix}lam_ramp_steps", settings["lam_ramp_steps"], 0)
    _choice(f"{prefix}predict_with", settings["predict_with"], PREDICT_WITH)
    if settings["predict_with"] == "ema" and not settings["weight_averaging"]:
        raise ConfigError(f"{prefix}predict_with=ema needs {prefix}weight_averaging=true (there is no EMA "
                          "without it); use predict_with=networks")


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _range(key, value, lo, hi, *, lo_open=False, hi_open=False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open or hi == math.inf else ']'}"
        raise ConfigError(f"{key} must lie in {interval}, got {value!r}")


def _int(key: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{key} must be an integer >= {lo}, got {value!r}")


def _auto_int(key: str, value: Any) -> None:
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{key} must be auto or an integer >= 1, got {value!r}")


def _optional_int(key: str, value: Any, lo: int) -> None:
    if value is not None:
        _int(key, value, lo)


def _check_component(section: str, component: Component) -> None:
    """Check the component's name and parameter names against its registry."""
    try:
        if section == "model":
            accepted = model_params(component.name)
        else:
            accepted = loss_params(component.name)
            if component.name == "forward":
                accepted = [*accepted, *ESTIMATE_KEYS]
    except ValueError as err:
        raise ConfigError(f"{section}.name: {err}") from None
    unknown = sorted(set(component.params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"unknown key {section}.{unknown[0]} for {section} {component.name!r}; "
            f"{did_you_mean(unknown[0], accepted, section + '.')}valid keys: {', '.join(['name', *accepted])}"
        )
    try:  # the values, by the constructors' own checks (no data needed)
        if section == "model":
            check_model_params(component.name, component.params)
        else:
            check_loss_params(component.name, component.params)
    except ValueError as err:
        raise component_error(section, component.params, err) from None


# ---- Forward with an estimated transition matrix (the two-stage run of elr.two_stage) -------------

ESTIMATE_KEYS = ("percentile", "estimate_epochs")  # loss keys of forward that only `estimate` uses


def estimates_transition(config: Config) -> bool:
    """True when the config asks for Forward with a transition matrix estimated in a first stage."""
    return config.loss.name == "forward" and config.loss.params.get("transition") == "estimate"


def _validate_forward(params: dict[str, Any]) -> None:
    """Check ``transition`` and the estimate-only keys of a ``forward`` loss section."""
    if "transition" not in params:
        raise ConfigError("loss forward needs loss.transition: a (C, C) matrix, a .npy file, true (the "
                          "noise model's own T) or estimate (two-stage: CE run, then anchor points)")
    t = params["transition"]
    extra = [k for k in ESTIMATE_KEYS if k in params]
    if t != "estimate" and extra:
        raise ConfigError(f"loss.{extra[0]} is only used with loss.transition=estimate, got transition={t!r}")
    if isinstance(t, str) and t != "estimate" and not t.endswith(".npy"):
        raise ConfigError(f"loss.transition must be a matrix, a .npy path, true or estimate; got {t!r}")
    if t is False:
        raise ConfigError("loss.transition=false is not a transition matrix; use loss.name=ce for no correction")
    if "percentile" in params:
        p = params["percentile"]
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 100):
            raise ConfigError(f"loss.percentile must be a number in [0, 100] or null (plain argmax), got {p!r}")
    if "estimate_epochs" in params:
        e = params["estimate_epochs"]
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            raise ConfigError(f"loss.estimate_epochs must be an integer >= 1, got {e!r}")


def component_error(section: str, params: dict[str, Any], err: Exception) -> ConfigError:
    """A model's or loss's ValueError as a ConfigError naming the config key (``loss.lam must ...``)."""
    text = str(err)
    key = text.split(" ", 1)[0]
    return ConfigError(f"{section}.{text}" if key in params else f"{section}: {text}")


def check_model_input(config: Config, features: int | None) -> None:
    """Refuse a model of images on feature vectors (``features`` values a row), naming both keys."""
    if features is None:
        return
    if "in_channels" in model_params(config.model.name):
        raise ConfigError(f"model.name={config.model.name} takes images (channels, height, width), but "
                          f"data.dataset={config.data.dataset} gives feature vectors of {features} values: "
                          f"use model.name=mlp (or a data set of images)")
