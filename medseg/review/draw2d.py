"""2D review pictures: a label map, detection markers or a heat map over an image.

Images are ``(H, W)`` (rows, columns) gray or ``(H, W, 3)`` RGB; label maps ``(H, W)`` int with
0 = background; points ``(x, y)`` = (column, row) pixels. Every function returns an ``(H', W', 3)``
uint8 RGB array (write it with :func:`medseg.review.png.save_png`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from skimage.draw import circle_perimeter
from skimage.transform import resize

from medseg.errors import InputError
from medseg.palette import class_color
from medseg.review.annotate import draw_letters, draw_texts, legend
from medseg.review.windowing import (
    Window,
    as_array,
    blend_labels,
    gray_to_rgb,
    names_map,
    physical_shape,
    resize_2d,
    unit_to_uint8,
)

__all__ = ["overlay_2d", "heatmap_2d", "markers_2d", "shrink", "THUMBNAIL_SIDE"]

#: long side (pixels) of the report's thumbnail of a 2D case
THUMBNAIL_SIDE = 512


def shrink(rgb: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """``(H, W[, 3])`` uint8 picture shrunk (anti-aliased) so its long side is at most ``side`` pixels."""
    a = as_array(rgb)
    h, w = a.shape[:2]
    f = side / max(h, w)
    if f >= 1:
        return a
    shape = (max(1, round(h * f)), max(1, round(w * f))) + a.shape[2:]
    out = resize(a.astype(np.float32) / 255.0, shape, order=1, anti_aliasing=True, preserve_range=True)
    return unit_to_uint8(np.clip(out, 0.0, 1.0))


def overlay_2d(
    image: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    window: Window = None,
    alpha: float = 0.4,
    contour: bool = True,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    spacing: Sequence[float] = (1.0, 1.0),
    letters: Mapping[str, str] | None = None,
    min_side: int = 0,
) -> np.ndarray:
    """Draw a label map over a 2D image.

    Parameters
    ----------
    image : (H, W) gray (HU, MR units, ...) or (H, W, 3) RGB (uint8, or floats windowed to [0, 1]).
    labels : (H, W) int label map, 0 = background; each class value gets one colour
        (:func:`class_color`), filled at ``alpha`` and outlined (``contour``) on its boundary pixels.
    window : see :func:`window_image`.
    alpha : opacity of the filled masks (0 = contours only).
    contour : draw each class's boundary at full opacity.
    class_names : {value: name} (or a list indexed by value): adds a legend of the classes present.
    spacing : (row, column) pixel spacing in mm; the output has square pixels (physical aspect ratio).
    letters : optional orientation letters ``{"top", "bottom", "left", "right"} -> "A"...``.
    min_side : upsample so the long side is at least this many pixels (0 = no upsampling).

    Returns
    -------
    (H', W', 3) uint8 RGB; H'/W' follow the physical aspect ratio (plus a legend strip at the bottom).
    """
    img = as_array(image)
    lab = None if labels is None else as_array(labels)
    if lab is not None and lab.shape != img.shape[:2]:
        raise InputError(f"labels shape {lab.shape} does not match image shape {img.shape[:2]}")
    shape = physical_shape(img.shape[:2], spacing, min_side)
    rgb = gray_to_rgb(img, window)
    rgb = np.clip(resize_2d(rgb, shape, order=1), 0.0, 1.0)
    if lab is not None:
        lab = resize_2d(lab.astype(np.int32), shape, order=0)
    out = unit_to_uint8(blend_labels(rgb, lab, alpha, contour))
    if letters:
        out = draw_letters(out, letters)
    names = names_map(class_names)
    if names and lab is not None:
        out = legend(out, [k for k in np.unique(lab) if k > 0], names)
    return out


def heatmap_2d(
    image: np.ndarray,
    cam: np.ndarray,
    *,
    alpha: float = 0.5,
    window: Window = None,
    cmap: str = "jet",
) -> np.ndarray:
    """A Grad-CAM (or any saliency / probability) map over an image.

    Parameters
    ----------
    image : (H, W) gray or (H, W, 3) RGB.
    cam : (h, w) float map; min-max normalised to [0, 1] here and resized (bilinear) to (H, W)
        when its shape differs.
    alpha : opacity of the colour map, weighted by the normalised map (cold areas stay see-through).
    window : intensity window of a gray image (see :func:`window_image`).
    cmap : matplotlib colour map name.

    Returns
    -------
    (H, W, 3) uint8 RGB.
    """
    rgb = gray_to_rgb(image, window)
    c = as_array(cam).astype(np.float32)
    c = np.squeeze(c)
    if c.ndim != 2:
        raise InputError(f"cam must be a 2D (H, W) map, got shape {np.shape(cam)}")
    c = np.nan_to_num(c, nan=0.0)
    lo, hi = float(c.min()), float(c.max())
    c = (c - lo) / (hi - lo) if hi > lo else np.zeros_like(c)
    c = np.clip(resize_2d(c, rgb.shape[:2], order=1), 0.0, 1.0)
    col = colormaps[cmap](c)[..., :3].astype(np.float32)
    a = alpha * (0.3 + 0.7 * c)[..., None]
    return unit_to_uint8((1.0 - a) * rgb + a * col)


def markers_2d(
    image: np.ndarray,
    points: np.ndarray,
    *,
    classes: Sequence[int] | np.ndarray | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    radius: int = 6,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    window: Window = None,
    show_scores: bool | None = None,
) -> np.ndarray:
    """Detection markers (circles, one colour per class) over an image.

    Parameters
    ----------
    image : (H, W) gray or (H, W, 3) RGB.
    points : (N, 2) centres as (x, y) = (column, row) pixels.
    classes : (N,) int class value per point (default: all class 1).
    scores : (N,) float confidence per point; written beside the marker when ``show_scores``
        (default: when N <= 50).
    radius : circle radius in pixels.
    class_names : {value: name}: legend of the classes present.

    Returns
    -------
    (H, W, 3) uint8 RGB (plus a legend strip when ``class_names`` is given).
    """
    rgb = unit_to_uint8(gray_to_rgb(image, window))
    pts = np.asarray(points, float).reshape(-1, 2)
    n = len(pts)
    cls = np.ones(n, int) if classes is None else np.asarray(classes, int).reshape(-1)
    if len(cls) != n:
        raise InputError(f"classes has {len(cls)} entries for {n} points")
    sc = None if scores is None else np.asarray(scores, float).reshape(-1)
    if sc is not None and len(sc) != n:
        raise InputError(f"scores has {len(sc)} entries for {n} points")
    h, w = rgb.shape[:2]
    for (x, y), k in zip(pts, cls):
        for dr in (0, 1):  # 2-pixel thick ring
            rr, cc = circle_perimeter(int(round(y)), int(round(x)), max(1, int(radius) + dr), shape=(h, w))
            rgb[rr, cc] = class_color(int(k))
    if sc is not None and (show_scores if show_scores is not None else n <= 50):
        size = max(9, min(14, min(h, w) // 25))
        items = [(f"{s:.2f}", (int(x + radius + 2), int(y - radius)), "lt") for (x, y), s in zip(pts, sc)]
        rgb = draw_texts(rgb, items, size)
    names = names_map(class_names)
    if names and n:
        rgb = legend(rgb, sorted(set(int(k) for k in cls)), names)
    return rgb
