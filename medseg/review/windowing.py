"""Intensity windows and colour blending of the review pictures (pure NumPy + scikit-image).

- :data:`WINDOWS` and :func:`window_image`: CT window presets (HU) and the mapping of any image's
  intensities to [0, 1].
- :func:`gray_to_rgb`, :func:`unit_to_uint8`: float RGB ``(H, W, 3)`` in [0, 1] and its uint8 form.
- :func:`blend_labels`: one colour per class value (:func:`medseg.palette.class_color`), a filled
  mask at ``alpha`` plus the class boundary at full opacity.
- :func:`physical_shape`, :func:`resize_2d`: square pixels in millimetres.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from skimage.transform import resize

from medseg.errors import InputError
from medseg.palette import CT_WINDOWS, class_color

__all__ = [
    "WINDOWS",
    "Window",
    "window_image",
    "as_array",
    "names_map",
    "gray_to_rgb",
    "unit_to_uint8",
    "resize_2d",
    "physical_shape",
    "blend_labels",
    "label_edges",
]

#: CT window presets (center, width) in HU: the one table of :mod:`medseg.palette`
WINDOWS = CT_WINDOWS

#: a window argument: a preset name of :data:`WINDOWS`, ``"percentile"``, ``(center, width)`` or None
Window = str | tuple[float, float] | None


def as_array(x: Any) -> np.ndarray:
    """Array from a numpy array, torch tensor or MONAI MetaTensor (no copy when possible)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def names_map(class_names: Mapping[int, str] | Sequence[str] | None) -> dict[int, str]:
    """``{class value: name}`` from a mapping or a list indexed by value (empty for None)."""
    if class_names is None:
        return {}
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    return {i: str(v) for i, v in enumerate(class_names)}


def window_image(image: np.ndarray, window: Window = None) -> np.ndarray:
    """Map intensities to [0, 1] floats.

    Parameters
    ----------
    image : (H, W) or (X, Y, Z) array (HU for CT).
    window : ``"soft_tissue"`` (40/400), ``"lung"`` (-600/1500), ``"bone"`` (400/1800),
        ``"percentile"`` (1st-99th percentile of the nonzero voxels, for MR / unknown units),
        ``(center, width)``, or ``None`` (uint8 images as they are, else min-max).
    """
    img = as_array(image).astype(np.float32)
    if isinstance(window, str):
        if window == "percentile":
            vals = img[img != 0] if np.any(img != 0) else img.ravel()
            lo, hi = np.percentile(vals, [1.0, 99.0]) if vals.size else (0.0, 1.0)
        elif window in WINDOWS:
            c, w = WINDOWS[window]
            lo, hi = c - w / 2, c + w / 2
        else:
            raise InputError(
                f"unknown window {window!r}: use one of {sorted(WINDOWS) + ['percentile']} or a (center, width) pair"
            )
    elif window is None:
        if np.asarray(image).dtype == np.uint8:
            lo, hi = 0.0, 255.0
        else:
            lo, hi = (float(img.min()), float(img.max())) if img.size else (0.0, 1.0)
    else:
        c, w = (float(v) for v in window)
        if w <= 0:
            raise InputError(f"window width must be > 0, got {w}")
        lo, hi = c - w / 2, c + w / 2
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def gray_to_rgb(image: np.ndarray, window: Window) -> np.ndarray:
    """(H, W) or (H, W, 3) -> (H, W, 3) float in [0, 1]."""
    a = as_array(image)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3]
        if a.dtype == np.uint8:
            return a.astype(np.float32) / 255.0
        return window_image(a, window)
    if a.ndim != 2:
        raise InputError(f"image must be (H, W) gray or (H, W, 3) RGB, got shape {a.shape}")
    g = window_image(a, window)
    return np.repeat(g[..., None], 3, axis=2)


def resize_2d(a: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """``a`` ``(H, W[, C])`` resized to ``shape`` (order 0: nearest, keeps the dtype; 1: bilinear, float32)."""
    if tuple(a.shape[:2]) == tuple(shape):
        return a
    if order == 0:
        return resize(a, shape + a.shape[2:], order=0, preserve_range=True, anti_aliasing=False, mode="edge").astype(
            a.dtype
        )
    return resize(
        a.astype(np.float32), shape + a.shape[2:], order=order, preserve_range=True, anti_aliasing=False, mode="edge"
    )


def physical_shape(shape: tuple[int, int], spacing: Sequence[float], min_side: int = 0) -> tuple[int, int]:
    """Display shape with square pixels: the finer spacing sets the pixel size; optional upsampling."""
    sr, sc = (float(abs(s)) if s else 1.0 for s in spacing)
    px = min(sr, sc)
    h, w = shape[0] * sr / px, shape[1] * sc / px
    if min_side and max(h, w) < min_side:
        f = min_side / max(h, w)
        h, w = h * f, w * f
    return max(1, int(round(h))), max(1, int(round(w)))


def blend_labels(rgb: np.ndarray, labels: np.ndarray | None, alpha: float, contour: bool) -> np.ndarray:
    """rgb (H, W, 3) float [0,1]; fill each class with its colour at ``alpha``, contour at full opacity."""
    if labels is None:
        return rgb
    out = rgb.copy()
    labels = np.asarray(labels)
    edges = label_edges(labels) if contour else None
    for k in np.unique(labels):
        if k <= 0:
            continue
        m = labels == k
        col = np.array(class_color(int(k)), np.float32) / 255.0
        if alpha > 0:
            out[m] = (1.0 - alpha) * out[m] + alpha * col
        if edges is not None:
            out[m & edges] = col
    return out


def label_edges(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: labelled pixels (> 0) with a 4-neighbour of another value (the border is no edge).

    For each class ``k`` the pixels ``label_edges(labels) & (labels == k)`` are those of
    ``skimage.segmentation.find_boundaries(labels == k, mode="inner")`` (its erosion reflects at the
    border), found in one pass over the map instead of two grey-morphology filters per class: those
    filters were the largest share of rendering the review pictures (tests/review/test_stack_layers.py).
    """
    diff = np.zeros(labels.shape, bool)
    dr = labels[1:, :] != labels[:-1, :]
    diff[1:, :] |= dr
    diff[:-1, :] |= dr
    dc = labels[:, 1:] != labels[:, :-1]
    diff[:, 1:] |= dc
    diff[:, :-1] |= dc
    return diff & (labels > 0)


def unit_to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] -> uint8 0..255 (rounded, clipped)."""
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
