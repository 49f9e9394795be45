"""Model zoo: `create_model(name, num_classes)` over a registry of CIFAR ResNets, an MLP, ResNet-50 and timm models."""

from . import imagenet_resnet as _imagenet_resnet  # noqa: F401
from . import mlp as _mlp  # noqa: F401  (import registers the models)
from . import resnet as _resnet  # noqa: F401
from . import timm_models as _timm_models  # noqa: F401
from .imagenet_resnet import Bottleneck, ImageNetResNet
from .mlp import MLP
from .pretrained import LoadReport, load_pretrained
from .registry import create_model, list_models, model_params, register_model
from .resnet import BasicBlock, PreActBlock, PreActResNet, ResNet

__all__ = [
    "create_model",
    "list_models",
    "model_params",
    "register_model",
    "ResNet",
    "PreActResNet",
    "BasicBlock",
    "PreActBlock",
    "MLP",
    "ImageNetResNet",
    "Bottleneck",
    "load_pretrained",
    "LoadReport",
]
