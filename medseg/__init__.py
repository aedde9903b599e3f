"""medseg: from a folder of DICOM/NIfTI studies to reviewed, trustworthy results.

The public API is exposed lazily (importing ``medseg`` does not import torch)::

    import medseg
    img = medseg.io.load("study/CT")           # MetaTensor (C, X, Y, Z), RAS affine
    cfg = medseg.load_config("configs/seg_ct_phantom.yaml")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "errors",
    "config",
    "io",
    "transforms",
    "models",
    "engine",
    "tasks",
    "explain",
    "review",
    "metrics",
    "data",
    "load_config",
]

_SUBMODULES = {
    "errors",
    "config",
    "io",
    "transforms",
    "models",
    "engine",
    "tasks",
    "explain",
    "review",
    "metrics",
    "data",
    "runs",
    "utils",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"medseg.{name}")
    if name == "load_config":
        from medseg.config import load_config

        return load_config
    raise AttributeError(f"module 'medseg' has no attribute {name!r}")
