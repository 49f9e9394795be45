"""Feature standardisation fitted on the training split: the arithmetic of sklearn's ``StandardScaler``, kept as data.

``elr train`` stores it in the run directory (``standardization.json``), so a resumed run and
``elr eval`` scale the features with the values the run started with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Standardization"]


@dataclass(frozen=True)
class Standardization:
    """Per-feature ``(x - mean) / scale``; a constant feature keeps scale 1 (it is only centred).

    Attributes
    ----------
    mean, scale : np.ndarray of float64, shape (D,)
    feature_names : list of str, optional
        The columns the values belong to (CSV headers), recorded for the reader of the file.
    """

    mean: np.ndarray
    scale: np.ndarray
    feature_names: list[str] | None = None

    @classmethod
    def fit(cls, x: np.ndarray, feature_names: list[str] | None = None) -> Standardization:
        """The mean and population standard deviation of each column of ``x`` (N, D), N >= 1.

        Computed as ``StandardScaler.fit`` does (float64 sums, the corrected two-pass variance, scale 1
        for a feature constant up to rounding), so the CLI and ``ELRClassifier`` scale alike.
        """
        x = np.asarray(x)
        n = x.shape[0]
        mean = np.sum(x, axis=0, dtype=np.float64) / n
        centred = x - mean  # float64
        correction = np.sum(centred, axis=0, dtype=np.float64)
        var = (np.sum(centred**2, axis=0, dtype=np.float64) - correction**2 / n) / n
        eps = np.finfo(np.float64).eps
        constant = var <= n * eps * var + (n * mean * eps) ** 2
        scale = np.sqrt(var)
        scale[constant | (scale < 10 * eps)] = 1.0
        return cls(mean, scale, None if feature_names is None else list(feature_names))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / scale`` as float32, computed in ``x``'s own float type (as sklearn does: float32 stays float32)."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise ValueError(f"the standardisation was fitted on {len(self.mean)} features, the data have shape {x.shape}")
        out = np.array(x, dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float64)
        out -= self.mean.astype(out.dtype)
        out /= self.scale.astype(out.dtype)
        return out.astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"mean": self.mean.tolist(), "scale": self.scale.tolist()}
        if self.feature_names is not None:
            record["feature_names"] = list(self.feature_names)
        return record

    @classmethod
    def from_dict(cls, record: Any, where: str) -> Standardization:
        """The inverse of :meth:`to_dict`; ``where`` names the file in the one-line error for a damaged record."""
        try:
            mean = np.asarray(record["mean"], dtype=np.float64)
            scale = np.asarray(record["scale"], dtype=np.float64)
            names = record.get("feature_names")
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"{where}: not a standardisation record (a JSON object with lists mean and scale)") from None
        if mean.ndim != 1 or mean.shape != scale.shape or not all(map(math.isfinite, [*mean, *scale])) \
                or (scale <= 0).any():
            raise ValueError(f"{where}: mean and scale must be lists of one finite number per feature, scale > 0")
        return cls(mean, scale, None if names is None else [str(n) for n in names])
