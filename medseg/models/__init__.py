"""Networks: U-Net, FCN, detection heads, classifiers, pretrained backbones; a name registry.

Model modules register their builders on import (``@register_model("unet")``); importing this
package imports all of them, so :func:`build_model` knows every name.
"""

from __future__ import annotations

from medseg.models import classifier, detection, fcn, unet  # noqa: F401  (they register their builders)
from medseg.models.registry import available_models, build_model, model_parameters, register_model

__all__ = [
    "build_model",
    "register_model",
    "available_models",
    "model_parameters",
    "classifier",
    "detection",
    "fcn",
    "unet",
]
