"""CIFAR-style ResNets (ResNet-8/18/34 and PreAct ResNet-18) for small images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import check_int, register_model

__all__ = [
    "BasicBlock",
    "PreActBlock",
    "ResNet",
    "PreActResNet",
    "resnet8",
    "resnet18",
    "resnet34",
    "preact_resnet18",
]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    # BN follows (or precedes) every conv, so a conv bias would be redundant.
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, relu); BN weight 1, bias 0; Linear keeps PyTorch default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Post-activation residual block: conv-BN-ReLU-conv-BN, add shortcut, ReLU.

    Parameters
    ----------
    in_planes : int
        Input channels.
    planes : int
        Output channels.
    stride : int, default 1
        Stride of the first conv; a 1x1 conv + BN shortcut is used when the
        stride or channel count changes.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = nn.Sequential(
                _conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016): BN-ReLU-conv twice, add shortcut.

    Parameters
    ----------
    in_planes : int
        Input channels.
    planes : int
        Output channels.
    stride : int, default 1
        Stride of the first conv; a 1x1 conv shortcut (no BN) is used when the
        stride or channel count changes.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = _conv1x1(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # A projection shortcut reads the pre-activated input, as in the original design.
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


def _check_widths(widths: object, num_stages: int) -> tuple[int, ...]:
    if not isinstance(widths, Sequence) or isinstance(widths, str) or len(widths) != num_stages:
        raise ValueError(
            f"widths must be a sequence of {num_stages} positive integers, got {widths!r}"
        )
    return tuple(check_int(w, "widths entry", minimum=1) for w in widths)


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stride-1 stem (no max-pool), BasicBlock stages, global pool, linear.

    Stage ``i`` uses ``widths[i]`` channels; the first stage has stride 1 and
    every later stage stride 2. Adaptive average pooling makes any input of
    at least 8x8 pixels work.

    Parameters
    ----------
    num_blocks : sequence of int
        Number of blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-34.
    num_classes : int
        Output classes (>= 2).
    widths : sequence of int, default (64, 128, 256, 512)
        Channels per stage; same length as `num_blocks`.
    in_channels : int, default 3
        Input image channels.

    Attributes
    ----------
    feature_dim : int
        Width of the pooled features fed to the classifier (``widths[-1]``).
    fc : torch.nn.Linear
        The classifier head; replace it to change the head.
    """

    def __init__(
        self,
        num_blocks: Sequence[int],
        num_classes: int,
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", minimum=2)
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        if not isinstance(num_blocks, Sequence) or len(num_blocks) == 0:
            raise ValueError(f"num_blocks must be a non-empty sequence of ints, got {num_blocks!r}")
        blocks = [check_int(n, "num_blocks entry", minimum=1) for n in num_blocks]
        widths = _check_widths(widths, len(blocks))

        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_planes = widths[0]
        for i, (n, planes) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        self.fc = nn.Linear(self.feature_dim, num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled features of shape ``(N, feature_dim)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        return torch.flatten(self.pool(out), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(N, num_classes)`` for images ``(N, C, H, W)``."""
        return self.fc(self.forward_features(x))


class PreActResNet(nn.Module):
    """Pre-activation CIFAR ResNet: 3x3 stem conv, PreAct stages, final BN-ReLU, pool, linear.

    Parameters
    ----------
    num_blocks : sequence of int
        Number of blocks per stage, e.g. ``(2, 2, 2, 2)`` for PreAct ResNet-18.
    num_classes : int
        Output classes (>= 2).
    widths : sequence of int, default (64, 128, 256, 512)
        Channels per stage; same length as `num_blocks`.
    in_channels : int, default 3
        Input image channels.

    Attributes
    ----------
    feature_dim : int
        Width of the pooled features fed to the classifier (``widths[-1]``).
    fc : torch.nn.Linear
        The classifier head.
    """

    def __init__(
        self,
        num_blocks: Sequence[int],
        num_classes: int,
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", minimum=2)
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        if not isinstance(num_blocks, Sequence) or len(num_blocks) == 0:
            raise ValueError(f"num_blocks must be a non-empty sequence of ints, got {num_blocks!r}")
        blocks = [check_int(n, "num_blocks entry", minimum=1) for n in num_blocks]
        widths = _check_widths(widths, len(blocks))

        # Stem is conv only: the first block's BN-ReLU normalises its output.
        self.conv1 = _conv3x3(in_channels, widths[0])
        stages = []
        in_planes = widths[0]
        for i, (n, planes) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(PreActBlock(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        # Blocks end on a raw residual sum, so normalise and activate before pooling.
        self.bn = nn.BatchNorm2d(widths[-1])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        self.fc = nn.Linear(self.feature_dim, num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled features of shape ``(N, feature_dim)``."""
        out = self.layers(self.conv1(x))
        out = F.relu(self.bn(out))
        return torch.flatten(self.pool(out), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(N, num_classes)`` for images ``(N, C, H, W)``."""
        return self.fc(self.forward_features(x))


@register_model("resnet8")
def resnet8(
    num_classes: int, *, widths: Sequence[int] = (16, 32, 64), in_channels: int = 3
) -> ResNet:
    """Small CPU-friendly ResNet: one BasicBlock per stage, three stages (strides 1, 2, 2).

    About 78k parameters with the default widths and 10 classes.

    Parameters
    ----------
    num_classes : int
        Output classes (>= 2).
    widths : tuple of 3 int, default (16, 32, 64)
        Channels of the three stages; raise them for a wider network.
    in_channels : int, default 3
        Input image channels.

    Returns
    -------
    ResNet
    """
    return ResNet((1, 1, 1), num_classes, widths=_check_widths(widths, 3), in_channels=in_channels)


@register_model("resnet18")
def resnet18(num_classes: int, *, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-18: BasicBlocks [2, 2, 2, 2] at widths 64/128/256/512 (~11.17M params).

    Parameters
    ----------
    num_classes : int
        Output classes (>= 2).
    in_channels : int, default 3
        Input image channels.

    Returns
    -------
    ResNet
    """
    return ResNet((2, 2, 2, 2), num_classes, in_channels=in_channels)


@register_model("resnet34")
def resnet34(num_classes: int, *, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-34 used by ELR on CIFAR-10/100: BasicBlocks [3, 4, 6, 3] (~21.3M params).

    Parameters
    ----------
    num_classes : int
        Output classes (>= 2).
    in_channels : int, default 3
        Input image channels.

    Returns
    -------
    ResNet
    """
    return ResNet((3, 4, 6, 3), num_classes, in_channels=in_channels)


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int, *, in_channels: int = 3) -> PreActResNet:
    """PreAct ResNet-18 used by ELR+ on CIFAR: PreAct blocks [2, 2, 2, 2] (~11.17M params).

    Parameters
    ----------
    num_classes : int
        Output classes (>= 2).
    in_channels : int, default 3
        Input image channels.

    Returns
    -------
    PreActResNet
    """
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels=in_channels)
