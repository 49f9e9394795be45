"""Multi-layer perceptron classifier that flattens its input (for tabular or tiny image data)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from .registry import check_int, register_model

__all__ = ["MLP", "mlp"]


class MLP(nn.Module):
    """Flatten, then (Linear-ReLU[-Dropout]) per hidden layer, then a linear classifier.

    Parameters
    ----------
    num_classes : int
        Output classes (>= 2).
    in_features : int
        Number of input features after flattening (e.g. ``C*H*W`` for images).
    hidden : sequence of int, default (512, 512)
        Widths of the hidden layers; an empty sequence gives a linear model.
    dropout : float, default 0.0
        Dropout probability after each hidden ReLU, in ``[0, 1)``.

    Attributes
    ----------
    feature_dim : int
        Width fed to the classifier (last hidden width, or `in_features`).
    fc : torch.nn.Linear
        The classifier head.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_features: int,
        hidden: Sequence[int] = (512, 512),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", minimum=2)
        if in_features is None:
            raise ValueError("in_features is required: pass the flattened input size, e.g. 784")
        in_features = check_int(in_features, "in_features", minimum=1)
        if not isinstance(hidden, Sequence) or isinstance(hidden, str):
            raise ValueError(f"hidden must be a sequence of positive integers, got {hidden!r}")
        widths = [check_int(h, "hidden entry", minimum=1) for h in hidden]
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, numbers.Real)
            or not 0.0 <= dropout < 1.0
        ):
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")

        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in widths:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            width = h
        self.features = nn.Sequential(*layers)
        self.feature_dim = width
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(N, feature_dim)`` features for ``(N, D)`` or ``(N, C, H, W)`` input."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(N, num_classes)``."""
        return self.fc(self.forward_features(x))


@register_model("mlp")
def mlp(
    num_classes: int,
    *,
    in_features: int | None = None,
    hidden: Sequence[int] = (512, 512),
    dropout: float = 0.0,
) -> MLP:
    """Build an `MLP`; `in_features` is required despite its ``None`` default.

    The ``None`` default lets a missing value raise a clear ValueError rather
    than a TypeError.

    Parameters
    ----------
    num_classes : int
        Output classes (>= 2).
    in_features : int
        Flattened input size (required).
    hidden : sequence of int, default (512, 512)
        Hidden layer widths.
    dropout : float, default 0.0
        Dropout probability after each hidden ReLU, in ``[0, 1)``.

    Returns
    -------
    MLP
    """
    return MLP(
        num_classes,
        in_features=in_features,  # type: ignore[arg-type]
        hidden=hidden,
        dropout=dropout,
    )
