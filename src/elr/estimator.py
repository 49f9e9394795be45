"""ELRClassifier: ELR on feature arrays (tables, embeddings) as an sklearn classifier; a fit writes no files.

The network is the project's MLP, the loss its ``ELRLoss``, the step ``methods.Standard`` and the
epoch loop ``engine.Engine``: the same code `elr train` runs, held in memory.
"""

from __future__ import annotations

import copy
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .config import MonitorConfig, OptimConfig
from .data import InMemoryDataset, TrainData, stratified_split
from .evidence import evidence_rows
from .engine import Engine
from .label_issues import _argmax_flags, _scores, _suggest, check_probabilities
from .errors import DivergedError
from .losses import ELRLoss
from .methods import Runtime, Standard, cpu_threads, pick_device
from .models import create_model
from .prepare import derived_seeds

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils import check_random_state, check_scalar
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data  # scikit-learn >= 1.6
except ImportError as error:  # importing elr works without scikit-learn; ELRClassifier() says what to install
    _MISSING: str | None = (f"ELRClassifier needs scikit-learn >= 1.6 ({error}); "
                            "install it with: pip install 'elr[sklearn]'")

    class BaseEstimator:  # type: ignore[no-redef]
        """Stands in for sklearn's base class when scikit-learn is missing."""

    class ClassifierMixin:  # type: ignore[no-redef]
        """Stands in for sklearn's mixin when scikit-learn is missing."""
else:
    _MISSING = None

__all__ = ["ELRClassifier"]

SCHEDULES = ("cosine", "constant")
_PREDICT_BATCH = 4096


class ELRClassifier(ClassifierMixin, BaseEstimator):
    """A small network trained on feature vectors with Early-Learning Regularization (Liu et al., 2020).

    For tabular records or embeddings from a pretrained encoder whose labels are partly wrong. Every
    epoch each training example's prediction is averaged into its target
    (``t <- beta t + (1 - beta) p``) and ``lam * log(1 - <p, t>)`` is added to the cross entropy, which
    keeps the network from memorizing the wrong labels. After ``fit`` the targets rank the training
    labels: ``label_issues_`` flags the rows whose target prefers another class.

    Parameters (keyword-only; the constructor only stores them, ``fit`` checks them)
    ----------
    hidden_layer_sizes : sequence of int or int, default (256, 256)
        Widths of the hidden ReLU layers; ``()`` gives a linear softmax model.
    lam : float >= 0, default 3.0
        Weight of the ELR term; ``0`` is plain cross entropy (the targets are still kept). lam, beta
        and lr were chosen together by noisy-validation accuracy (README, "Tables and embeddings");
        at a small lr a large lam can collapse unless beta is high.
    beta : float in [0, 1), default 0.7
        Momentum of the targets' running average.
    epochs : int >= 1, default 200
        Passes over the training rows (no early stopping; see ``validation_fraction``).
    lr : float > 0, default 0.01
        SGD learning rate. ELR on feature vectors can collapse silently (finite loss, low accuracy) at
        a rate that suits cross entropy; see the README's "Tables and embeddings" for the measurements.
    momentum : float in [0, 1), default 0.9
    weight_decay : float >= 0, default 5e-4
    batch_size : int >= 1, default 32
    lr_schedule : {"cosine", "constant"}, default "cosine"
        Cosine decay from ``lr`` to 0 over the epochs, or a constant rate.
    standardize : bool, default True
        Scale each feature to zero mean and unit variance (sklearn's ``StandardScaler``, fitted on the
        training rows); stored in ``scaler_`` and applied by ``predict``.
    validation_fraction : float in (0, 1) or None, default None
        Hold out this share of each class (of the noisy labels) and keep the network and targets of
        the epoch with the best accuracy on it (the earliest best: the rule by which ``elr train``
        reports its ``selected`` epoch; here that epoch is also restored). Held-out rows get no
        target: their ``targets_`` row is the kept network's prediction, from a network chosen for
        agreeing with those same noisy labels. None trains on every row and keeps the last epoch.
    random_state : int, numpy RandomState or None, default None
        Seeds the weights, the batch order and the validation split; the same int gives the same
        model, bitwise on the same CPU (training runs on one torch thread there, as ``elr train``
        does on feature vectors: a small network gains little from more and collapses when another job
        holds a core). None draws a seed from NumPy's global generator.
    device : str or torch.device, default "cpu"
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or ``"auto"`` (CUDA when available).
    verbose : int, default 0
        ``>= 1`` prints one line per epoch.

    Attributes
    ----------
    classes_ : ndarray, shape (C,)
        The sorted class labels of ``y`` (any type sklearn accepts, strings included).
    n_features_in_ : int
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Only when ``X`` was a DataFrame with string column names.
    model_ : torch.nn.Module
        The trained network (eval mode, on ``device``); its input is the standardised features.
        Prediction runs where the network is: a fit on CUDA unpickles only where CUDA is, unless
        ``clf.model_.cpu()`` is called before pickling.
    scaler_ : sklearn.preprocessing.StandardScaler or None
    history_ : list of dict
        Per epoch: ``epoch``, ``lr``, ``train_loss``, ``train_acc`` (against the noisy labels),
        ``val_acc`` (with ``validation_fraction``) and seconds.
    best_epoch_ : int
        The epoch whose network (and targets) the estimator keeps.
    targets_ : ndarray of float64, shape (N, C)
        Per fitted row (in ``X``'s order), the normalised ELR target; for held-out rows the kept
        network's prediction. Usable as ``pred_probs`` by cleanlab.
    validation_mask_ : ndarray of bool, shape (N,)
        Rows held out for validation.
    label_quality_ : ndarray of float64, shape (N,)
        ``targets_[i, given class]`` (self-confidence); lower means more likely mislabelled.
    label_issues_ : ndarray of bool, shape (N,)
        Rows whose target puts more probability on another class than on the given label.
    suggested_labels_ : ndarray, shape (N,)
        The most probable class of each row's target, as a label of ``classes_``.

    Examples
    --------
    >>> from elr import ELRClassifier
    >>> clf = ELRClassifier(random_state=0).fit(X_train, y_noisy)      # doctest: +SKIP
    >>> clf.score(X_test, y_test), X_train[clf.label_issues_]          # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        hidden_layer_sizes: Sequence[int] | int = (256, 256),
        lam: float = 3.0,
        beta: float = 0.7,
        epochs: int = 200,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        batch_size: int = 32,
        lr_schedule: str = "cosine",
        standardize: bool = True,
        validation_fraction: float | None = None,
        random_state: Any = None,
        device: str | torch.device = "cpu",
        verbose: int = 0,
    ) -> None:
        if _MISSING is not None:
            raise ImportError(_MISSING)
        self.hidden_layer_sizes = hidden_layer_sizes
        self.lam = lam
        self.beta = beta
        self.epochs = epochs
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.lr_schedule = lr_schedule
        self.standardize = standardize
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ---- fit -------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> ELRClassifier:
        """Train on features ``X`` (N, D) and possibly wrong labels ``y`` (N,); return ``self``.

        Dense float features only: NaN, inf and sparse matrices are refused (convert sparse input
        with ``.toarray()`` when it fits in memory). A fit that fails leaves the estimator unfitted,
        never half of one fit and half of another.
        """
        self._forget_fit()
        try:
            return self._fit(X, y)
        except BaseException:
            self._forget_fit()
            raise

    def _forget_fit(self) -> None:
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, name)

    def _fit(self, X: Any, y: Any) -> ELRClassifier:
        hidden, optim, validation = self._checked_params()
        try:
            device = pick_device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'auto' or a torch.device, "
                             f"got {self.device!r}") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be a CPU or CUDA device, got {self.device!r}")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"ELRClassifier needs at least 2 classes in y; got only one class: {self.classes_.tolist()[0]!r}")
        seeds = derived_seeds(self._seed())
        n, num_classes = len(y_index), len(self.classes_)
        train_pos, val_pos = stratified_split(y_index, validation or 0.0, seed=seeds["split"])
        if validation is not None and len(val_pos) == 0:
            raise ValueError(f"validation_fraction={validation} holds out no row: each class's share of the {n} "
                             f"rows rounds to 0; raise it or pass None (no model selection)")
        untrained = sorted(set(range(num_classes)) - set(y_index[train_pos].tolist()))
        if untrained:
            raise ValueError(f"validation_fraction={validation} moves every row of class "
                             f"{self.classes_.tolist()[untrained[0]]!r} to the validation split; lower it")

        self.scaler_ = StandardScaler().fit(X[train_pos]) if self.standardize else None
        features = self._scaled(X)

        def dataset(rows: np.ndarray) -> InMemoryDataset:
            return InMemoryDataset(features[rows], y_index[rows], num_classes=num_classes).to(device)

        with torch.random.fork_rng(devices=[]):  # the user's global torch RNG is left as it was
            torch.default_generator.manual_seed(seeds["train"])  # torch.manual_seed would reseed CUDA's too
            model = create_model("mlp", num_classes, in_features=features.shape[1], hidden=hidden)
        loss = ELRLoss(len(train_pos), num_classes, lam=float(self.lam), beta=float(self.beta),
                       check_values=device.type != "cuda")  # value checks would sync CUDA every step
        method = Standard(model, loss, optim, Runtime(device))
        data = TrainData(train=dataset(train_pos), val=dataset(val_pos) if len(val_pos) else None,
                         num_classes=num_classes)
        engine = Engine(method, data, optim=optim, monitor=MonitorConfig(memorization=False),
                        eval_batch_size=_PREDICT_BATCH, seed=seeds["train"],
                        progress=_EpochPrinter() if self.verbose else None)
        with cpu_threads("auto", device, (features.shape[1],)):  # one thread on the CPU, as `elr train` on features
            kept = self._train(engine, method, with_validation=len(val_pos) > 0)

        self.model_ = method.model.eval()
        self.history_ = engine.history
        self.best_epoch_ = kept
        held_out = [(data.val, val_pos)] if data.val is not None else []
        self.targets_ = evidence_rows(method, data.train, train_pos, held_out, n=n, batch_size=_PREDICT_BATCH).probs
        self.validation_mask_ = np.zeros(n, dtype=bool)
        self.validation_mask_[val_pos] = True
        given, probs = check_probabilities(y_index, self.targets_)  # checked once for the three verdicts
        self.label_quality_ = _scores(given, probs, "self_confidence")
        self.label_issues_ = _argmax_flags(given, probs)
        self.suggested_labels_ = self.classes_[_suggest(probs, given)[0]]
        self._warn_if_collapsed(features[train_pos], y_index[train_pos])
        return self

    def _train(self, engine: Engine, method: Standard, *, with_validation: bool) -> int:
        """Run the epochs; with validation restore the best epoch's network and targets. Return the kept epoch."""
        best: tuple[float, int, dict[str, Any], torch.Tensor] | None = None
        try:
            while engine.epoch < engine.optim.epochs:
                record = engine.run_epoch()
                if with_validation and (best is None or record["val_acc"] > best[0]):  # earliest epoch wins ties
                    best = (record["val_acc"], record["epoch"], copy.deepcopy(method.model.state_dict()),
                            method.loss.targets.clone())
        except DivergedError:
            raise DivergedError(f"ELRClassifier: the training loss became infinite or NaN in epoch "
                                f"{engine.epoch + 1}; lower lr (now {self.lr}) or lam (now {self.lam})") from None
        if best is None:
            return engine.epoch
        method.model.load_state_dict(best[2])
        method.loss.targets.copy_(best[3])
        return best[1]

    def _warn_if_collapsed(self, features: np.ndarray, labels: np.ndarray) -> None:
        """ELR's silent failure on features (finite loss, low accuracy): whole classes never predicted.

        Measured: at a learning rate too low or too high for the data the targets can lock onto the
        classes the network guessed first, and a class given to 38% of the rows is predicted for none.
        """
        shares = np.bincount(labels, minlength=len(self.classes_)) / len(labels)
        predicted = np.bincount(self._logits(features).argmax(axis=1), minlength=len(self.classes_))
        lost = [c for c in range(len(self.classes_)) if shares[c] >= 0.05 and predicted[c] == 0]
        if lost:
            names = ", ".join(repr(self.classes_.tolist()[c]) for c in lost)
            warnings.warn(f"ELRClassifier predicts no training row as {names} although "
                          f"{100 * shares[lost].sum():.0f}% of the labels say so: the network likely collapsed; "
                          f"try another lr (now {self.lr}) or a smaller lam (now {self.lam})", ConvergenceWarning,
                          stacklevel=4)  # the user's fit call: fit -> _fit -> here

    # ---- predict ---------------------------------------------------------------------------------

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, float64 of shape (N, C), columns in ``classes_`` order."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        logits = torch.from_numpy(self._logits(self._scaled(X)))
        return torch.softmax(logits.double(), dim=1).numpy()

    def _logits(self, features: np.ndarray) -> np.ndarray:
        """The network's float32 logits (N, C) of scaled features, in batches."""
        device = next(self.model_.parameters()).device
        out = [np.zeros((0, len(self.classes_)), dtype=np.float32)]
        with torch.no_grad():
            for start in range(0, len(features), _PREDICT_BATCH):
                x = torch.from_numpy(features[start:start + _PREDICT_BATCH]).to(device)
                out.append(self.model_(x).float().cpu().numpy())
        return np.concatenate(out)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row, as a label of ``classes_``."""
        proba = self.predict_proba(X)  # checks that the estimator is fitted before classes_ is read
        return self.classes_[np.argmax(proba, axis=1)]

    # ---- helpers ---------------------------------------------------------------------------------

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        if self.scaler_ is not None:
            X = self.scaler_.transform(X)
        return np.ascontiguousarray(X, dtype=np.float32)

    def _checked_params(self) -> tuple[tuple[int, ...], OptimConfig, float | None]:
        """Check the constructor's values (sklearn's check_scalar names the parameter) and build the SGD settings."""
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden,)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or not all(
                isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be a sequence of positive ints (() for a linear model), "
                             f"got {self.hidden_layer_sizes!r}")
        check_scalar(self.lam, "lam", numbers.Real, min_val=0.0)
        check_scalar(self.beta, "beta", numbers.Real, min_val=0.0, max_val=1.0, include_boundaries="left")
        check_scalar(self.epochs, "epochs", numbers.Integral, min_val=1)
        check_scalar(self.lr, "lr", numbers.Real, min_val=0.0, include_boundaries="neither")
        check_scalar(self.momentum, "momentum", numbers.Real, min_val=0.0, max_val=1.0, include_boundaries="left")
        check_scalar(self.weight_decay, "weight_decay", numbers.Real, min_val=0.0)
        check_scalar(self.batch_size, "batch_size", numbers.Integral, min_val=1)
        check_scalar(self.verbose, "verbose", numbers.Integral, min_val=0)
        for name in ("lam", "beta", "lr", "momentum", "weight_decay", "epochs", "batch_size"):
            if isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        for name in ("lam", "beta", "lr", "momentum", "weight_decay"):
            if not np.isfinite(getattr(self, name)):  # check_scalar lets NaN through
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ValueError(f"standardize must be True or False, got {self.standardize!r}")
        validation = self.validation_fraction
        if validation is not None:
            check_scalar(validation, "validation_fraction", numbers.Real, min_val=0.0, max_val=1.0,
                         include_boundaries="neither")
            if isinstance(validation, bool) or not np.isfinite(validation):
                raise ValueError(f"validation_fraction must be None or a number in (0, 1), got {validation!r}")
        optim = OptimConfig(lr=float(self.lr), momentum=float(self.momentum), weight_decay=float(self.weight_decay),
                            batch_size=int(self.batch_size), epochs=int(self.epochs), schedule=self.lr_schedule,
                            milestones=[])
        return tuple(int(h) for h in hidden), optim, None if validation is None else float(validation)

    def _seed(self) -> int:
        """An int seed: ``random_state`` itself when it is one, else a draw from its generator."""
        state = self.random_state
        refusal = f"random_state must be an int in [0, 2**32), a numpy RandomState or None, got {state!r}"
        if isinstance(state, numbers.Integral) and not isinstance(state, bool):
            if not 0 <= state < 2**32:
                raise ValueError(refusal)
            return int(state)
        try:
            return int(check_random_state(state).randint(np.iinfo(np.int32).max))
        except ValueError:
            raise ValueError(refusal) from None

class _EpochPrinter:
    """``verbose >= 1``: one line per epoch on stdout, as sklearn's estimators print."""

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self._epochs = epochs

    def batch_end(self) -> None:
        pass

    def epoch_end(self, record: dict[str, Any]) -> None:
        val = f", noisy val acc {record['val_acc']:.4f}" if "val_acc" in record else ""
        print(f"epoch {record['epoch']}/{self._epochs}: loss {record['train_loss']:.4f}, "
              f"noisy train acc {record['train_acc']:.4f}{val} ({record['seconds']:.2f} s)", flush=True)
