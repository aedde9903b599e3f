"""Networks: U-Net, FCN, detection heads, classifiers, pretrained backbones; a name registry.

Model modules register their builders on import (``@register_model("unet")``).
"""

from __future__ import annotations

import importlib

from medseg.models.registry import available_models, build_model, model_parameters, register_model

__all__ = ["build_model", "register_model", "available_models", "model_parameters"]

# Each module registers its builders; a module not written yet is simply absent.
for _mod in ("unet", "fcn", "detection", "classifier"):
    try:
        importlib.import_module(f"medseg.models.{_mod}")
    except ModuleNotFoundError as _e:
        if _e.name != f"medseg.models.{_mod}":
            raise
