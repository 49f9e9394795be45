"""ImageNet ResNet-50 (bottleneck blocks) with torchvision's parameter names, so its state dicts load as they are."""

from __future__ import annotations

import torch
from torch import nn

from .registry import check_int, register_model

__all__ = ["Bottleneck", "ImageNetResNet", "resnet50"]


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, torchvision's "ResNet v1.5"), 1x1 expand by 4; add shortcut, ReLU.

    Parameters
    ----------
    in_planes : int
        Input channels.
    planes : int
        Width of the 3x3 conv; the block outputs ``4 * planes`` channels.
    stride : int, default 1
        Stride of the 3x3 conv. A 1x1 conv + BN ``downsample`` shortcut is used when the
        stride or the channel count changes.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, out, kernel_size=1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ImageNetResNet(nn.Module):
    """ImageNet ResNet: 7x7 stride-2 stem, 3x3 stride-2 max-pool, four bottleneck stages, pool, linear.

    Module names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, ``downsample``, ``fc``) follow
    torchvision, so ``model.load_state_dict(torch.load("resnet50-....pth"))`` works unchanged.

    Parameters
    ----------
    num_blocks : sequence of 4 int
        Bottleneck blocks per stage, ``(3, 4, 6, 3)`` for ResNet-50.
    num_classes : int
        Output classes (>= 2).
    in_channels : int, default 3
        Input image channels.

    Attributes
    ----------
    feature_dim : int
        Width of the pooled features fed to the classifier (2048).
    fc : torch.nn.Linear
        The classifier head.
    """

    def __init__(self, num_blocks: tuple[int, ...], num_classes: int, *, in_channels: int = 3) -> None:
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", minimum=2)
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        for i, (n, planes) in enumerate(zip(num_blocks, (64, 128, 256, 512))):
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(in_planes, planes, stride=2 if i > 0 and j == 0 else 1))
                in_planes = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_planes
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled features of shape ``(N, feature_dim)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(N, num_classes)`` for images ``(N, C, H, W)``."""
        return self.fc(self.forward_features(x))


@register_model("resnet50")
def resnet50(num_classes: int, *, in_channels: int = 3) -> ImageNetResNet:
    """ImageNet ResNet-50 (25,557,032 parameters at 1000 classes), the Clothing1M backbone.

    For ImageNet-pretrained weights pass ``pretrained=PATH`` to :func:`create_model` with a
    torchvision ``resnet50-*.pth`` file; inputs are 224x224 images (any size >= 32 works).

    Parameters
    ----------
    num_classes : int
        Output classes (>= 2).
    in_channels : int, default 3
        Input image channels.

    Returns
    -------
    ImageNetResNet
    """
    return ImageNetResNet((3, 4, 6, 3), num_classes, in_channels=in_channels)
