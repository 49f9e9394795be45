"""Name-to-factory registry behind `create_model`, plus shared argument checks."""

from __future__ import annotations

import inspect
import numbers
from os import PathLike
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from .pretrained import load_pretrained

__all__ = ["create_model", "list_models", "model_params", "register_model"]

_F = TypeVar("_F", bound=Callable[..., nn.Module])
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def check_int(value: object, name: str, *, minimum: int) -> int:
    """Return `value` as a plain int, or raise ValueError if it is not an int >= `minimum`.

    Parameters
    ----------
    value : object
        The value to check. ``bool`` is rejected even though it subclasses ``int``.
    name : str
        Argument name used in the error message.
    minimum : int
        Smallest accepted value.

    Returns
    -------
    int
        ``value`` converted to a built-in ``int``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def register_model(name: str) -> Callable[[_F], _F]:
    """Decorator that registers a model factory under `name`.

    The factory must take ``num_classes`` as its first argument and any options
    as keyword-only arguments; those keyword names are what `create_model`
    accepts for the model.

    Parameters
    ----------
    name : str
        Registry key. Must be a non-empty string not already registered.

    Returns
    -------
    callable
        A decorator that stores the factory and returns it unchanged.

    Raises
    ------
    ValueError
        If `name` is empty, not a string, or already taken.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"name {name!r} is already registered; choose a different name")

    def decorator(factory: _F) -> _F:
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Return the names of all registered models, sorted alphabetically.

    Returns
    -------
    list of str
        Registered model names.
    """
    return sorted(_REGISTRY)


def _accepted_options(factory: Callable[..., nn.Module]) -> tuple[list[str], bool]:
    """Return the keyword options of `factory` and whether it takes ``**kwargs``."""
    params = list(inspect.signature(factory).parameters.values())[1:]  # skip num_classes
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return names, takes_any


def model_params(name: str) -> list[str]:
    """The keyword options `create_model` accepts for model `name` (ValueError for unknown names)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model name {name!r}; known names: {', '.join(list_models())}")
    return [*_accepted_options(_REGISTRY[name])[0], "pretrained"]


def create_model(name: str, num_classes: int, **kwargs: object) -> nn.Module:
    """Build a registered model by name.

    Parameters
    ----------
    name : str
        A name from `list_models`, e.g. ``"resnet34"``, ``"preact_resnet18"``,
        ``"resnet8"`` or ``"mlp"``.
    num_classes : int
        Number of output classes; must be an integer >= 2.
    **kwargs
        Model-specific options, e.g. ``in_channels=1`` for the ResNets or
        ``in_features=784`` for ``"mlp"``; and for every model ``pretrained=PATH``: a local
        state dict loaded with `elr.models.load_pretrained` (a classifier head of another
        shape is re-initialised and reported; nothing is downloaded).

    Returns
    -------
    torch.nn.Module
        A freshly initialised model whose classifier is the attribute ``fc`` and
        whose pre-classifier width is ``feature_dim``.

    Raises
    ------
    ValueError
        If `name` is unknown (the message lists the known names), `num_classes`
        is not an integer >= 2, or a keyword is not an option of the model (the
        message lists the accepted options).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model name {name!r}; known names: {', '.join(list_models())}")
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    factory = _REGISTRY[name]
    accepted, takes_any = _accepted_options(factory)
    pretrained = kwargs.pop("pretrained", None)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and not takes_any:
        options = ", ".join([*accepted, "pretrained"])
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r}; "
            f"accepted options: {options}"
        )
    model = factory(num_classes, **kwargs)
    if pretrained is not None:
        if not isinstance(pretrained, (str, PathLike)):
            raise ValueError(f"pretrained must be the path of a local weights file, got {pretrained!r}")
        load_pretrained(model, pretrained)
    return model


def check_model_params(name: str, params: dict[str, object]) -> None:
    """Raise ValueError for an option value model ``name`` refuses whatever the data.

    The model is built on PyTorch's meta device (no memory, no weights; a ``pretrained`` file is not
    read, only its type checked) for a stand-in 10 classes, so the checks are the constructors' own
    and a config is validated before any data are read. A model that cannot be built there (its
    package is missing, its constructor needs real tensors) is left to the build, which says why.
    """
    import torch

    kwargs = dict(params)
    pretrained = kwargs.pop("pretrained", None)
    if pretrained is not None and not isinstance(pretrained, (str, PathLike)):
        raise ValueError(f"pretrained must be the path of a local weights file, got {pretrained!r}")
    if not kwargs:
        return  # nothing but the defaults: nothing to check
    if "in_features" in model_params(name):
        kwargs.setdefault("in_features", 2)  # filled in from the data by the run
    try:
        with torch.device("meta"):
            create_model(name, 10, **kwargs)
    except ValueError:
        raise
    except TypeError as err:  # a value of a type the constructor cannot even compare
        raise ValueError(f"model {name!r}: {err}") from None
    except Exception:  # a missing package (timm), a constructor that needs real tensors: the build checks
        return
