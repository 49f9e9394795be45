"""Models from timm (optional extra ``elr[timm]``): InceptionResNetV2, the mini-WebVision backbone."""

from __future__ import annotations

from torch import nn

from .registry import check_int, register_model

__all__ = ["inception_resnet_v2"]


def _timm():
    try:
        import timm
    except ImportError as exc:
        raise ImportError("model 'inception_resnet_v2' needs timm, which is not installed: "
                          "pip install 'elr[timm]'") from exc
    return timm


@register_model("inception_resnet_v2")
def inception_resnet_v2(num_classes: int, *, in_channels: int = 3) -> nn.Module:
    """InceptionResNetV2 (Szegedy et al. 2017) from timm, randomly initialised; nothing is downloaded.

    The authors train it from scratch on mini-WebVision with 227x227 crops (inputs of at least
    75x75 work). ``pretrained=PATH`` (see :func:`create_model`) loads a local timm state dict;
    the classifier is timm's ``classif`` layer.

    Parameters
    ----------
    num_classes : int
        Output classes (>= 2).
    in_channels : int, default 3
        Input image channels.

    Returns
    -------
    torch.nn.Module
        The timm model; ``feature_dim`` is set to its pooled feature width.

    Raises
    ------
    ImportError
        timm is not installed (``pip install 'elr[timm]'``).
    """
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    in_channels = check_int(in_channels, "in_channels", minimum=1)
    model = _timm().create_model("inception_resnet_v2", pretrained=False, num_classes=num_classes,
                                 in_chans=in_channels)
    model.feature_dim = model.num_features
    return model
