"""medseg.explain: Grad-CAM / Grad-CAM++ maps (classifiers and segmenters, 2D/3D) and weak supervision.

- :mod:`medseg.explain.cam`: :class:`CAMExplainer`, :func:`grad_cam`, :class:`SegmentationTarget`,
  default target layers.
- :mod:`medseg.explain.writers`: NIfTI / PNG writers of the maps.
- :mod:`medseg.explain.maps`: :func:`classifier_cams` (maps of a trained 2D classifier at each
  image's size) and :func:`resize_map`: the one map helper of ``explain`` and weak supervision.
- :mod:`medseg.explain.weak`: maps -> pseudo-masks and bounding boxes.
- :mod:`medseg.explain.model_maps`: :func:`gradcam` (``medseg.explain.gradcam(model, image, target=...)``),
  the map of a model of :func:`medseg.load_model` on one image, on that image's grid.
"""

from __future__ import annotations

from medseg.explain.cam import CAMExplainer, SegmentationTarget, default_target_layer, grad_cam
from medseg.explain.maps import ClassifierCAMs, classifier_cams, resize_map
from medseg.explain.model_maps import CamInputs, gradcam
from medseg.explain.weak import PseudoLabel, pseudo_masks
from medseg.explain.writers import save_cam_nifti, save_cam_png, save_cam_slices_png

__all__ = [
    "CAMExplainer",
    "SegmentationTarget",
    "grad_cam",
    "gradcam",
    "CamInputs",
    "default_target_layer",
    "save_cam_nifti",
    "save_cam_png",
    "save_cam_slices_png",
    "classifier_cams",
    "ClassifierCAMs",
    "resize_map",
    "pseudo_masks",
    "PseudoLabel",
]
