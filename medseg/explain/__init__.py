"""medseg.explain: Grad-CAM / Grad-CAM++ maps (classifiers and segmenters, 2D/3D) and weak supervision.

- :mod:`medseg.explain.cam`: :class:`CAMExplainer`, :func:`grad_cam`, :class:`SegmentationTarget`,
  default target layers, NIfTI / PNG writers.
- :mod:`medseg.explain.weak`: maps -> pseudo-masks and bounding boxes.
"""

from __future__ import annotations

import importlib

__all__ = [
    "CAMExplainer",
    "SegmentationTarget",
    "grad_cam",
    "default_target_layer",
    "save_cam_nifti",
    "save_cam_png",
    "save_cam_slices_png",
    "pseudo_masks",
    "PseudoLabel",
]

_WHERE = {"pseudo_masks": "weak", "PseudoLabel": "weak"}


def __getattr__(name: str):  # lazy: importing medseg.explain does not import torch
    if name in __all__:
        return getattr(importlib.import_module(f"medseg.explain.{_WHERE.get(name, 'cam')}"), name)
    raise AttributeError(f"module 'medseg.explain' has no attribute {name!r}")
