"""The slice stack of a 3D case for the report's slice viewer: pre-rendered slices, image and overlay apart.

:func:`slice_stack` renders slices of one view (axial by default) of a volume and its label map
in the report's radiological convention (:mod:`medseg.review.orientation`): for each slice a
windowed image (JPEG, orientation letters drawn in) and a separate label overlay (PNG with
transparency: class colours filled at 40 % and outlined), so that the report can change the
overlay's opacity without re-rendering. :func:`write_stack` stores them as one JSON file of
``data:`` URIs, which :func:`medseg.review.report.write_report` embeds (the report stays one
self-contained file).

Size: at most ``max_slices`` slices (evenly spread over the volume, always including the one
with the most labelled voxels) of at most ``max_side`` pixels; about 5-15 kB per slice.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medseg.palette import class_color
from medseg.review.annotate import draw_letters
from medseg.review.orientation import best_index, canonical, orientation_letters, slice_2d, spacing_of, view_axes
from medseg.review.windowing import (
    Window,
    as_array,
    gray_to_rgb,
    label_edges,
    names_map,
    physical_shape,
    resize_2d,
    unit_to_uint8,
    window_image,
)
from medseg.utils import atomic_write_text

__all__ = ["slice_stack", "write_stack"]


def _data_uri(a: np.ndarray | Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    im = a if isinstance(a, Image.Image) else Image.fromarray(np.ascontiguousarray(a))
    if fmt == "JPEG":
        im.save(buf, format="JPEG", quality=88)
        mime = "image/jpeg"
    else:
        # zlib level 6 (Pillow's default) instead of optimize=True (level 9 + filter search): 3-4x faster to
        # encode for ~11 % more bytes, and the label layers were the largest share of a cohort's review time
        im.save(buf, format="PNG", compress_level=6)  # a palette layer's tRNS comes from im.info (Pillow)
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _label_layer(lab: np.ndarray, alpha: float, classes: Sequence[int]) -> Image.Image:
    """``(H, W)`` label map -> the overlay layer: class colour at ``alpha`` inside, opaque on the boundary.

    A palette image (index 0 transparent, two entries per class: fill and edge) whose decoded RGBA
    pixels are those of the RGBA layer :func:`_label_rgba` makes, at a fraction of the encoding time
    and size; more than 127 classes on one slice fall back to RGBA.
    """
    classes = [int(k) for k in classes if k > 0]
    if len(classes) > 127:
        return Image.fromarray(_label_rgba(lab, alpha), "RGBA")
    fill = int(round(alpha * 255))
    lut = np.zeros(int(lab.max(initial=0)) + 1, np.uint8)
    palette = [0, 0, 0]
    for i, k in enumerate(classes):
        lut[k] = 1 + 2 * i
        palette += list(class_color(k)) * 2
    idx = lut[np.clip(lab, 0, None)]
    idx += label_edges(lab).view(np.uint8)  # the edge entry follows each fill entry
    im = Image.fromarray(idx, "L")
    im.putpalette(palette)
    im.info["transparency"] = bytes([0] + [fill, 255] * len(classes))
    return im


def _label_rgba(lab: np.ndarray, alpha: float) -> np.ndarray:
    """``(H, W)`` label map -> ``(H, W, 4)`` uint8: class colour at ``alpha`` inside, opaque on the boundary."""
    out = np.zeros((*lab.shape, 4), np.uint8)
    pos = lab > 0
    colors = np.zeros((int(lab.max(initial=0)) + 1, 3), np.uint8)
    for k in np.unique(lab[pos]):
        colors[k] = class_color(int(k))
    out[pos, :3] = colors[lab[pos]]
    out[pos, 3] = int(round(alpha * 255))
    out[label_edges(lab), 3] = 255
    return out


def slice_stack(
    image: Any,
    labels: Any,
    affine: np.ndarray,
    *,
    view: str = "axial",
    max_slices: int = 48,
    max_side: int = 224,
    window: Window = "soft_tissue",
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    alpha: float = 0.4,
) -> dict[str, Any]:
    """Pre-rendered slices of one view of a 3D case, for the report's slice viewer.

    Parameters
    ----------
    image : ``(X, Y, Z)`` volume (HU for CT), any stored order.
    labels : ``(X, Y, Z)`` label map on the same grid, or None.
    affine : 4x4 voxel -> RAS mm.
    view : ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    max_slices : at most this many slices (evenly spread; the most labelled one always included).
    max_side : the long side of each rendered slice (pixels; square pixels in mm).
    window : intensity window (see :func:`medseg.review.windowing.window_image`).
    class_names : {value: name} of the legend.
    alpha : fill opacity of the label overlay (boundaries are opaque).

    Returns
    -------
    dict: ``view``, ``slices`` (display-order slice numbers), ``start`` (position of the most labelled
    slice), ``images`` and ``overlays`` (data URIs, one per slice), ``letters``, ``legend``
    ({value: name} of the classes present), ``width``, ``height``.
    """
    img = as_array(image)
    lab = None if labels is None else as_array(labels)
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if lab is not None and lab.ndim == 4 and lab.shape[0] == 1:
        lab = lab[0]
    (shown, lab), aff = canonical([img, lab], np.asarray(affine, float))
    if shown is None:
        raise ValueError("slice_stack needs an image")
    img = shown
    aff, axes, flip_rows = view_axes(aff, view)
    n, r, c = axes
    count = img.shape[n]
    best = best_index(lab, n) if lab is not None else count // 2
    picks = np.unique(np.round(np.linspace(0, count - 1, min(max_slices, count))).astype(int))
    if best not in picks:  # the nearest evenly spread slice gives way to the most labelled one
        picks[np.argmin(np.abs(picks - best))] = best
        picks = np.unique(picks)
    sp = spacing_of(aff)
    shape = physical_shape((img.shape[r], img.shape[c]), (sp[r], sp[c]))
    f = max_side / max(shape)
    shape = (max(1, int(round(shape[0] * f))), max(1, int(round(shape[1] * f))))
    letters = orientation_letters(aff, view)
    images: list[str] = []
    overlays: list[str] = []
    present: set[int] = set()
    # the label slices' nearest-neighbour resize as one index map: order 0 picks a source pixel by position
    # alone, so resizing the flat indices once and gathering gives resize_2d's pixels for every slice
    nearest = (
        None
        if lab is None
        else resize_2d(np.arange(img.shape[r] * img.shape[c]).reshape(img.shape[r], img.shape[c]), shape, order=0)
    )
    for k in picks:
        sl = slice_2d(img, axes, int(k), flip_rows)
        # a grey slice: window and resize its one channel, then make it RGB (the same pixels, a third of the work)
        if sl.ndim == 2:
            rgb = np.repeat(np.clip(resize_2d(window_image(sl, window), shape, order=1), 0.0, 1.0)[..., None], 3, 2)
        else:
            rgb = np.clip(resize_2d(gray_to_rgb(sl, window), shape, order=1), 0.0, 1.0)
        images.append(_data_uri(draw_letters(unit_to_uint8(rgb), letters), "JPEG"))
        if lab is not None and nearest is not None:
            ls = np.ascontiguousarray(slice_2d(lab, axes, int(k), flip_rows), np.int32).ravel()[nearest]
            here = [int(v) for v in np.unique(ls) if v > 0]
            present.update(here)
            overlays.append(_data_uri(_label_layer(ls, alpha, here), "PNG"))
    names = names_map(class_names)
    return {
        "view": view,
        "slices": [int(k) for k in picks],
        "start": int(np.argmin(np.abs(picks - best))),
        "images": images,
        "overlays": overlays,
        "letters": letters,
        "legend": {str(k): names.get(k, f"class {k}") for k in sorted(present)},
        "colors": {str(k): list(class_color(k)) for k in sorted(present)},
        "width": shape[1],
        "height": shape[0],
    }


def write_stack(stack: Mapping[str, Any], path: str | Path) -> Path:
    """Write a :func:`slice_stack` result as JSON (atomically); the report embeds it."""
    return atomic_write_text(path, json.dumps(stack, separators=(",", ":")))
