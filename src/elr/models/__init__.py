"""Model zoo: `create_model(name, num_classes)` over a registry of CIFAR ResNets and an MLP."""

from . import mlp as _mlp  # noqa: F401  (import registers the models)
from . import resnet as _resnet  # noqa: F401
from .mlp import MLP
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
]
