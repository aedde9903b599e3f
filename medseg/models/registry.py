"""Model registry: configs say ``model: {name: unet, ...}``; builders are registered by name.

The model modules register themselves when :mod:`medseg.models` is imported (which Python does
before this module is used, as it is the package's own).

``build_model(name=..., **params)`` checks ``params`` against the builder's signature, so an
unknown parameter is a ConfigError naming the allowed ones (with a "did you mean").
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from medseg.errors import ConfigError

__all__ = ["register_model", "build_model", "available_models", "model_parameters"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator: register ``fn(**params) -> nn.Module`` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[name] = fn
        return fn

    return deco


def available_models() -> list[str]:
    return sorted(_MODELS)


def model_parameters(name: str) -> dict[str, Any]:
    """The builder's parameters and their defaults (for docs and error messages)."""
    sig = inspect.signature(_MODELS[name])
    return {k: (None if p.default is inspect.Parameter.empty else p.default) for k, p in sig.parameters.items()}


def build_model(name: str, **params: Any) -> nn.Module:
    """Build a registered model. Raises ConfigError for an unknown name or parameter."""
    if name not in _MODELS:
        m = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f" (did you mean {m[0]!r}?)" if m else ""
        raise ConfigError(f"unknown model {name!r}{hint}; available: {', '.join(sorted(_MODELS))}")
    fn = _MODELS[name]
    sig = inspect.signature(fn)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        unknown = [k for k in params if k not in sig.parameters]
        if unknown:
            allowed = list(sig.parameters)
            m = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f" (did you mean {m[0]!r}?)" if m else ""
            raise ConfigError(f"model {name!r} has no parameter {unknown[0]!r}{hint}; allowed: {', '.join(allowed)}")
    return fn(**params)
