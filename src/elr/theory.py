"""The linear model of Section 3: a noisy two-Gaussian mixture fitted by gradient descent with CE and with ELR.

Data (paper Section 3). A random unit vector ``v`` in R^p; class 0 draws ``x ~ N(+v, sigma^2 I_p)``,
class 1 draws ``x ~ N(-v, sigma^2 I_p)``; the ``n`` training examples are exactly balanced
(``n // 2`` of class 0, the rest class 1, in random order). Labels are corrupted by Eq. (1): with
probability ``noise_rate`` (Delta) the label is replaced by a uniformly random class out of the two,
which is the true class half the time, so the realised fraction of wrong labels is about
``noise_rate / 2``. An example counts as *wrong-labelled* when its given label differs from its true
label; a resampled label that happens to be the true one is clean.

Model. A linear softmax classifier ``Theta in R^{2 x p}`` without bias, started at zero (or at
``N(0, init_scale^2)`` entries), trained by full-batch gradient descent with step ``step_size`` on

* CE (Eq. 4), gradient Eq. (2): ``grad_Theta = (P - Y)^T X / n``;
* ELR (Eq. 6) with temporal-ensemble targets (Eq. 9, as in ``REFERENCE.md``): every iteration,
  ``t = beta t + (1 - beta) q / sum(q)`` with ``q = clamp(softmax, 1e-4, 1 - 1e-4)``, targets start
  at zero and are updated *before* the regulariser uses them; loss ``CE + lam mean log(1 - <q, t>)``;
  gradient (Lemma 2) ``grad_Theta = (P - Y + lam G)^T X / n``.

The ELR gradient is the exact gradient of the clamped loss, the way autograd differentiates
``torch.clamp``: a class whose probability lies outside ``[1e-4, 1 - 1e-4]`` passes no gradient
through the regulariser. Away from the clamp this is Lemma 2's ``g_c = p_c / (1 - <p,t>)
sum_k (t_k - t_c) p_k``; the targets are constants (detached), as in the paper.

Speed. Gradient descent only ever moves ``Theta`` inside the span of the training inputs, and for two
classes the softmax-gradient coefficients of the two classes are negatives of each other (each row of
``P - Y + lam G`` sums to zero), so the training logits evolve by one matrix-vector product with the
Gram matrix ``K = X X^T`` per iteration: ``logits -= (step/n) (K c) [1, -1]`` where ``c`` is the
class-0 column of the coefficients. Test logits use ``X_test X^T`` the same way. The loop runs
with one BLAS thread when threadpoolctl is installed (it comes with scikit-learn), else with NumPy's
own single-threaded loop: threaded BLAS gains nothing on products this small. Memory is
``O(n^2 + n_test n + (n + n_test) p)`` float64 numbers: about 50 MB at the default setting.

Recorded every ``record_every`` iterations (and at the last one), each a list in the result:

``iteration``
    Gradient-descent steps taken; the metrics describe ``Theta`` after that many steps.
``acc_clean`` / ``acc_wrong``
    Training accuracy with respect to the TRUE labels, on clean-labelled / wrong-labelled examples.
``memorized``
    Among wrong-labelled examples, the fraction predicted as their given (wrong) label. With two
    classes this is ``1 - acc_wrong``.
``test_acc``
    Accuracy on ``n_test`` fresh draws of the same mixture (true labels).
``cosine``
    Cosine between the descent direction ``-grad_Theta L`` and the correct direction, both
    flattened: ``[v; -v]`` (row 0 towards ``+v``, row 1 towards ``-v``). For two classes the two rows
    of the gradient are negatives of each other, so this equals the cosine of each row with its own
    correct direction.
``coef_clean`` / ``coef_wrong``
    Mean over examples and classes of the magnitude of the coefficient that weights ``x_i`` in the
    gradient: ``|S(Theta x_i)_c - y_c|`` for CE (Theorem 1), ``|p_c - y_c + lam g_c|`` for ELR
    (Lemma 2), over clean / wrong-labelled examples.
``wrong_grad_share``
    ``||G_wrong|| / (||G_clean|| + ||G_wrong||)``: the Frobenius norm of the wrong-labelled examples'
    part of the gradient divided by the sum of both parts' norms (0: clean examples alone drive the
    gradient; 1: wrong ones alone).
``grad_norm``
    Frobenius norm of ``grad_Theta L``.
``loss``
    The training loss that gradient descent minimises (for ELR, with the targets of that iteration).

Metrics over an empty set (no wrong labels when ``noise_rate`` is 0) are ``None``. With the default
zero initialisation all logits tie at iteration 0 and every example is predicted as class 0, so the
accuracies start near 0.5 (the classes are balanced).

ELR late in training. Once fitted, the examples sit at the edge of the probability clamp. Beyond it
the regulariser passes no gradient and the CE term of the wrong-labelled examples pulls towards
memorizing them; just inside it the regulariser pushes back harder (``lam |g| > |p - y|``). Full-batch
gradient descent chatters across that edge, so ``cosine``, ``coef_*`` and ``wrong_grad_share`` of ELR
jump between records there, while memorization stays at zero and test accuracy at its maximum.
Differentiating Lemma 2's formula everywhere (ignoring the clamp) gives smooth curves instead, but
would no longer be the gradient of the loss that ``elr.losses.ELRLoss`` and the authors' code train.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .config import did_you_mean
from .plots import plot_theory

try:  # optional (comes with scikit-learn): see _single_thread_blas
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - depends on the environment
    threadpool_limits = None

__all__ = [
    "METRICS",
    "TheoryConfig",
    "TheoryData",
    "TheoryRegimeWarning",
    "ce_loss_and_grad",
    "elr_loss_and_grad",
    "run",
    "sample",
    "simulate",
]

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = (
    "iteration", "acc_clean", "acc_wrong", "memorized", "test_acc", "cosine",
    "coef_clean", "coef_wrong", "wrong_grad_share", "grad_norm", "loss",
)

# Probability clamp of the ELR regulariser (the authors' value; keeps log(1 - <q, t>) finite).
_CLAMP = 1e-4


class TheoryRegimeWarning(UserWarning):
    """A setting outside the regime of Theorem 1; the simulation still runs."""


@dataclass
class TheoryConfig:
    """Settings of the Section 3 simulation.

    Parameters
    ----------
    n : int
        Training examples (>= 2).
    p : int
        Dimension (>= 1). Theorem 1 needs ``p / n`` in ``(1 - noise_rate / 2, 1)``.
    sigma : float
        Standard deviation of each coordinate around the class mean ``+-v`` (> 0); Theorem 1 needs it small.
    noise_rate : float
        Delta of Eq. (1), in [0, 1]; about half of the resampled labels end up wrong.
    step_size : float
        Gradient-descent step, the same for CE and ELR (> 0).
    iterations : int
        Gradient-descent steps (>= 1).
    record_every : int
        Record the metrics every this many steps (>= 1); iteration 0 and the last are always recorded.
    lam : float
        ELR regularisation weight lambda (>= 0).
    beta : float
        Temporal-ensemble momentum of the ELR targets, in [0, 1).
    n_test : int
        Fresh test draws for ``test_acc`` (>= 1).
    seed : int
        Seeds every draw (>= 0).
    init_scale : float
        Standard deviation of the initial entries of Theta (>= 0); 0 starts at zero.
    """

    n: int = 1000
    p: int = 900
    sigma: float = 0.2
    noise_rate: float = 0.4
    step_size: float = 0.1
    iterations: int = 1500
    record_every: int = 10
    lam: float = 3.0
    beta: float = 0.7
    n_test: int = 2000
    seed: int = 0
    init_scale: float = 0.0

    @classmethod
    def from_overrides(cls, settings: dict[str, Any]) -> TheoryConfig:
        """The settings given as ``key=value`` overrides (parsed); an unknown key is a ValueError naming it,
        the nearest valid key and every valid key. Values are checked by :meth:`validate`."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; {did_you_mean(unknown[0], known)}"
                             f"valid keys: {', '.join(known)}")
        return cls(**settings)

    def validate(self) -> None:
        """Raise ValueError for an invalid setting; warn (TheoryRegimeWarning) outside Theorem 1's regime."""
        _int("n", self.n, 2)
        _int("p", self.p, 1)
        _real("sigma", self.sigma, 0.0, math.inf, lo_open=True, hi_open=True)
        _real("noise_rate", self.noise_rate, 0.0, 1.0)
        _real("step_size", self.step_size, 0.0, math.inf, lo_open=True, hi_open=True)
        _int("iterations", self.iterations, 1)
        _int("record_every", self.record_every, 1)
        _real("lam", self.lam, 0.0, math.inf, hi_open=True)
        _real("beta", self.beta, 0.0, 1.0, hi_open=True)
        _int("n_test", self.n_test, 1)
        _int("seed", self.seed, 0)
        _real("init_scale", self.init_scale, 0.0, math.inf, hi_open=True)
        ratio, lo = self.p / self.n, 1.0 - self.noise_rate / 2.0
        if not lo < ratio < 1.0:
            warnings.warn(
                f"p/n = {ratio:.3g} is outside Theorem 1's regime ({lo:.3g}, 1) for noise_rate "
                f"{self.noise_rate:g}; early learning or memorization may not both appear",
                TheoryRegimeWarning, stacklevel=2)
        if self.sigma > 0.5:
            warnings.warn(f"sigma = {self.sigma:g} is large (> 0.5); Theorem 1 assumes a small sigma",
                          TheoryRegimeWarning, stacklevel=2)


def _int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


def _real(name, value, lo, hi, *, lo_open=False, hi_open=False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name} must be a real number in {left}{lo:g}, {hi:g}{right}, got {value!r}")


# --------------------------------------------------------------------------- loss pieces


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _elr_reg(p: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example ``log(1 - <q, t>)`` and its gradient g with respect to the logits (Lemma 2, clamp-exact)."""
    q = np.clip(p, _CLAMP, 1.0 - _CLAMP)
    inner = (q * targets).sum(axis=1)
    # torch.clamp passes the gradient where lo <= p <= hi and blocks it outside; match that.
    passed = np.where((p >= _CLAMP) & (p <= 1.0 - _CLAMP), targets, 0.0)
    g = p / (1.0 - inner)[:, None] * ((passed * p).sum(axis=1, keepdims=True) - passed)
    return np.log1p(-inner), g


def _update_targets(targets: np.ndarray, p: np.ndarray, beta: float) -> None:
    q = np.clip(p, _CLAMP, 1.0 - _CLAMP)
    targets *= beta
    targets += (1.0 - beta) * q / q.sum(axis=1, keepdims=True)


def _check_problem(theta, x, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    theta = np.asarray(theta, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    if theta.ndim != 2 or theta.shape[0] < 2:
        raise ValueError(f"theta must be a (classes >= 2, p) array, got shape {theta.shape}")
    if x.ndim != 2 or x.shape[1] != theta.shape[1] or x.shape[0] < 1:
        raise ValueError(f"x must be an (n >= 1, p={theta.shape[1]}) array, got shape {x.shape}")
    if labels.shape != (x.shape[0],) or labels.dtype.kind not in "iu" \
            or labels.min() < 0 or labels.max() >= theta.shape[0]:
        raise ValueError(f"labels must be {x.shape[0]} integers in [0, {theta.shape[0] - 1}]")
    return theta, x, np.eye(theta.shape[0])[labels]


def ce_loss_and_grad(theta, x, labels) -> tuple[float, np.ndarray]:
    """Cross entropy (Eq. 4) of the linear softmax classifier and its gradient (Eq. 2).

    Parameters
    ----------
    theta : array of shape (C, p)
        Classifier weights; the logits are ``x @ theta.T``.
    x : array of shape (n, p)
        Inputs.
    labels : int array of shape (n,)
        Given labels in ``[0, C - 1]``.

    Returns
    -------
    loss : float
    grad : array of shape (C, p)
        ``(P - Y)^T x / n``.
    """
    theta, x, y = _check_problem(theta, x, labels)
    logits = x @ theta.T
    loss = -float((y * _log_softmax(logits)).sum(axis=1).mean())
    return loss, (_softmax(logits) - y).T @ x / x.shape[0]


def elr_loss_and_grad(theta, x, labels, targets, *, lam: float) -> tuple[float, np.ndarray]:
    """ELR loss (Eq. 6) of the linear softmax classifier for fixed targets, and its gradient (Lemma 2).

    Parameters
    ----------
    theta, x, labels
        As in :func:`ce_loss_and_grad`.
    targets : array of shape (n, C)
        Non-negative targets, each row summing to at most 1; held constant (detached).
    lam : float
        Regularisation weight (>= 0).

    Returns
    -------
    loss : float
        ``CE + lam mean log(1 - <q, t>)``, ``q`` the softmax clamped to ``[1e-4, 1 - 1e-4]``.
    grad : array of shape (C, p)
        ``(P - Y + lam G)^T x / n``, exact for the clamped loss.
    """
    theta, x, y = _check_problem(theta, x, labels)
    _real("lam", lam, 0.0, math.inf, hi_open=True)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.shape != y.shape or (targets < 0).any() or (targets.sum(axis=1) > 1.0 + 1e-12).any():
        raise ValueError(f"targets must be a non-negative {y.shape} array with rows summing to at most 1")
    logits = x @ theta.T
    p = _softmax(logits)
    reg, g = _elr_reg(p, targets)
    loss = -float((y * _log_softmax(logits)).sum(axis=1).mean()) + lam * float(reg.mean())
    return loss, (p - y + lam * g).T @ x / x.shape[0]


# --------------------------------------------------------------------------- simulation


def _draw(rng: np.random.Generator, count: int, v: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``count`` exactly balanced draws of the mixture and their true labels."""
    labels = rng.permutation(np.arange(count) >= count // 2).astype(np.int64)
    sign = 1.0 - 2.0 * labels  # class 0 around +v, class 1 around -v
    x = sigma * rng.standard_normal((count, v.size))
    x += sign[:, None] * v
    return x, labels


def _clean(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _single_thread_blas():
    """One BLAS thread for the loop: its matrix-vector products are too small to gain from threads,
    and on a busy machine OpenBLAS's threads slow each one down tens of times."""
    return threadpool_limits(1, user_api="blas") if threadpool_limits is not None else nullcontext()


def _mv(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Matrix-vector product; without threadpoolctl, NumPy's own single-threaded loop instead of BLAS."""
    if threadpool_limits is None:
        return np.einsum("ij,j->i", matrix, vector)
    return matrix @ vector


def _descend(method: str, cfg: TheoryConfig, data: dict[str, np.ndarray]) -> dict[str, list]:
    """Run gradient descent with ``method`` ("ce" or "elr") and return the recorded metric lists."""
    K, Xv, Kt = data["K"], data["Xv"], data["Kt"]
    y, true, given, wrong = data["y"], data["true"], data["given"], data["wrong"]
    clean = ~wrong
    n, eta = y.shape[0], cfg.step_size
    logits = data["logits0"].copy()
    test_logits0 = data["test_logits0"]
    flip = np.array([1.0, -1.0])
    # Theta_t = Theta_0 - (eta / n) [X^T a; -X^T a], a the running sum of the class-0 coefficients.
    a = np.zeros(n)
    targets = np.zeros_like(y)
    out: dict[str, list] = {m: [] for m in METRICS}

    for it in range(cfg.iterations + 1):
        p = _softmax(logits)
        coef = p - y
        if method == "elr":
            _update_targets(targets, p, cfg.beta)  # before the regulariser uses them (REFERENCE.md)
            reg, g = _elr_reg(p, targets)
            coef += cfg.lam * g
        c = coef[:, 0]  # column 1 is -c: softmax coefficients sum to zero over the classes
        Kc = _mv(K, c)

        if it % cfg.record_every == 0 or it == cfg.iterations:
            loss = -float((y * _log_softmax(logits)).sum(axis=1).mean())
            if method == "elr":
                loss += cfg.lam * float(reg.mean())
            pred = logits.argmax(axis=1)
            test_pred = (test_logits0 - (eta / n) * np.outer(_mv(Kt, a), flip)).argmax(axis=1)
            c_wrong = np.where(wrong, c, 0.0)
            K_wrong = _mv(K, c_wrong)
            # ||G_S||_F = sqrt(2 c_S^T K c_S) / n; the common factor sqrt(2)/n cancels in the ratios below.
            norm_wrong = math.sqrt(max(float(c_wrong @ K_wrong), 0.0))
            norm_clean = math.sqrt(max(float((c - c_wrong) @ (Kc - K_wrong)), 0.0))
            norm_all = math.sqrt(max(float(c @ Kc), 0.0))
            abs_coef = np.abs(coef).mean(axis=1)
            out["iteration"].append(it)
            out["acc_clean"].append(_mean(pred[clean] == true[clean]))
            out["acc_wrong"].append(_mean(pred[wrong] == true[wrong]))
            out["memorized"].append(_mean(pred[wrong] == given[wrong]))
            out["test_acc"].append(float((test_pred == data["test_true"]).mean()))
            # <-grad, [v; -v]> / (||grad|| ||[v; -v]||) = -(c . Xv) / sqrt(c^T K c)
            out["cosine"].append(_clean(-float(c @ Xv) / norm_all) if norm_all > 0 else None)
            out["coef_clean"].append(_mean(abs_coef[clean]))
            out["coef_wrong"].append(_mean(abs_coef[wrong]))
            total = norm_clean + norm_wrong
            out["wrong_grad_share"].append(norm_wrong / total if total > 0 else None)
            out["grad_norm"].append(math.sqrt(2.0) * norm_all / n)
            out["loss"].append(_clean(loss))
        if it == cfg.iterations:
            break
        logits -= (eta / n) * np.outer(Kc, flip)
        a += c
    return out


@dataclass
class TheoryData:
    """One draw of the Section 3 data (see the module docstring).

    Attributes
    ----------
    x : array (n, p)
        Training inputs.
    true_labels, labels : int arrays (n,)
        True and given (noisy, Eq. 1) labels.
    x_test : array (n_test, p)
        Fresh test inputs.
    test_labels : int array (n_test,)
        Their true labels.
    v : array (p,)
        The unit vector of the class means ``+v`` (class 0) and ``-v`` (class 1).
    theta0 : array (2, p)
        Initial classifier weights.
    """

    x: np.ndarray
    true_labels: np.ndarray
    labels: np.ndarray
    x_test: np.ndarray
    test_labels: np.ndarray
    v: np.ndarray
    theta0: np.ndarray

    @property
    def wrong(self) -> np.ndarray:
        """Boolean mask of the wrong-labelled training examples."""
        return self.labels != self.true_labels


def _checked(config: TheoryConfig | None) -> TheoryConfig:
    cfg = TheoryConfig() if config is None else config
    if not isinstance(cfg, TheoryConfig):
        raise ValueError(f"config must be a TheoryConfig, got {type(cfg).__name__}")
    cfg.validate()
    return cfg


def sample(config: TheoryConfig | None = None) -> TheoryData:
    """Draw the training set, noisy labels, test set and initial weights of ``config`` (seeded).

    Parameters
    ----------
    config : TheoryConfig, optional
        The setting (None: the defaults).
    """
    return _sample(_checked(config))


def _sample(cfg: TheoryConfig) -> TheoryData:
    # Independent streams, so that e.g. changing n_test leaves the training set unchanged.
    r_v, r_train, r_noise, r_test, r_init = (np.random.default_rng(s)
                                             for s in np.random.SeedSequence(cfg.seed).spawn(5))
    v = r_v.standard_normal(cfg.p)
    v /= np.linalg.norm(v)
    x, true = _draw(r_train, cfg.n, v, cfg.sigma)
    # Eq. (1): with probability noise_rate, a uniformly random class of the two (possibly the true one).
    resample = r_noise.random(cfg.n) < cfg.noise_rate
    given = np.where(resample, r_noise.integers(0, 2, cfg.n), true)
    x_test, test_true = _draw(r_test, cfg.n_test, v, cfg.sigma)
    theta0 = cfg.init_scale * r_init.standard_normal((2, cfg.p))
    return TheoryData(x, true, given, x_test, test_true, v, theta0)


def simulate(config: TheoryConfig | None = None) -> dict[str, Any]:
    """Train the Section 3 linear model with CE and with ELR on the same noisy data and record both.

    Parameters
    ----------
    config : TheoryConfig, optional
        The setting (None: the defaults, which reproduce the paper's Figure A.1 qualitatively).

    Returns
    -------
    dict
        JSON-serialisable: ``{"config": dict, "data": {"n_wrong", "wrong_fraction"}, "ce": {metric:
        list}, "elr": {metric: list}}`` with the metrics of :data:`METRICS` (see the module docstring).
    """
    cfg = _checked(config)
    start = time.perf_counter()
    d = _sample(cfg)
    X, X_test = d.x, d.x_test
    data = {
        "K": X @ X.T, "Xv": X @ d.v, "Kt": X_test @ X.T,
        "logits0": X @ d.theta0.T, "test_logits0": X_test @ d.theta0.T,
        "y": np.eye(2)[d.labels], "true": d.true_labels, "given": d.labels, "wrong": d.wrong,
        "test_true": d.test_labels,
    }
    del d, X, X_test  # only the Gram matrices are needed from here on
    result = {
        "config": asdict(cfg),
        "data": {"n_wrong": int(data["wrong"].sum()), "wrong_fraction": float(data["wrong"].mean())},
    }
    with _single_thread_blas():
        result["ce"] = _descend("ce", cfg, data)
        result["elr"] = _descend("elr", cfg, data)
    log.info("theory simulation (n=%d, p=%d, %d iterations) took %.2f s", cfg.n, cfg.p, cfg.iterations,
             time.perf_counter() - start)
    return result


def run(config: TheoryConfig | None, out_dir) -> dict[str, Any]:
    """Simulate, write ``theory.json`` and, when matplotlib is installed, ``theory.png`` into ``out_dir``.

    Parameters
    ----------
    config : TheoryConfig or None
        The setting (None: the defaults).
    out_dir : path
        Created if missing.

    Returns
    -------
    dict
        The result of :func:`simulate` plus ``"paths"``: ``{"json": str, "png": str or None}``
        (``png`` is None when matplotlib is missing).
    """
    result = simulate(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "theory.json"
    json_path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    png_path = None
    try:
        png_path = str(plot_theory(result, out / "theory.png"))
    except ImportError as exc:
        log.warning("skipping theory.png: %s", exc)
    result["paths"] = {"json": str(json_path), "png": png_path}
    return result
