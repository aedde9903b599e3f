"""PNG overlays for review: label maps, detections and heat maps drawn over an image.

Everything here is pure NumPy + scikit-image (contours with
:func:`skimage.segmentation.find_boundaries`, physical aspect ratio with
:func:`skimage.transform.resize`, markers with :mod:`skimage.draw`), text with Pillow's built-in
font (headless, no GUI, no font files needed) and colour maps from matplotlib (no figure is made).

Conventions
-----------
- 2D images are ``(H, W)`` (rows, columns) gray or ``(H, W, 3)`` RGB; label maps ``(H, W)`` int,
  0 = background. ``spacing`` of a 2D image is ``(row spacing, column spacing)`` in mm.
- 3D volumes are medseg's ``(X, Y, Z)`` arrays (or MONAI MetaTensors ``(1, X, Y, Z)``) with a
  voxel->RAS affine. Views are drawn **in voxel order**: the affine only decides which voxel axis
  is which (axial: rows = the voxel axis nearest A/P, columns = the one nearest R/L; coronal:
  rows S/I, columns R/L; sagittal: rows S/I, columns A/P); the in-plane voxel axes (0, 1) run
  left-to-right / top-to-bottom as a DICOM slice's pixel array is shown, the slice axis (2) runs
  left-to-right or bottom-to-top. Each edge is then labelled with the patient direction the affine
  says it points to (R/L, A/P, S/I). A standard DICOM axial stack therefore shows in the
  radiological convention in all three views (patient's right on the left of the screen, anterior
  and superior at the top), a natively sagittal or coronal series shows its slices as the scanner
  stored them, and a flipped affine moves the letters: a flip is visible to a human.
- Pixels are made square in millimetres (display follows spacing, not voxel counts).
- Every function returns an ``(H, W, 3)`` uint8 RGB array; :func:`save_png` writes it atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.palette import CLASS_COLORS, class_color
from medseg.utils import atomic_write

__all__ = [
    "WINDOWS",
    "CLASS_COLORS",
    "class_color",
    "window_image",
    "orientation_letters",
    "overlay_2d",
    "overlay_volume",
    "lesion_view",
    "montage",
    "heatmap_2d",
    "markers_2d",
    "save_png",
    "save_case_overlays",
]

log = logging.getLogger("medseg.review.overlay")

#: CT window presets, (center, width) in HU
WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}

_LETTERS = {0: ("L", "R"), 1: ("P", "A"), 2: ("I", "S")}  # RAS world axis -> (letter of -, letter of +)
_TEXT_COLOR = (255, 255, 0)
_MIN_SIDE = 256  # volume views are upsampled so the long side is at least this (readable letters)


# --------------------------------------------------------------------------------------- helpers
def _to_numpy(x: Any) -> np.ndarray:
    """Array from a numpy array, torch tensor or MONAI MetaTensor (no copy when possible)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _affine_of(x: Any) -> np.ndarray | None:
    aff = getattr(x, "affine", None)
    if aff is None:
        return None
    aff = _to_numpy(aff).astype(float)
    return aff[0] if aff.ndim == 3 else aff


def _squeeze_channel(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise InputError(f"{name} must be a 3D (X, Y, Z) volume (or (1, X, Y, Z)), got shape {a.shape}")
    return a


def _names(class_names: Mapping[int, str] | Sequence[str] | None) -> dict[int, str]:
    if class_names is None:
        return {}
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    return {i: str(v) for i, v in enumerate(class_names)}


def window_image(image: np.ndarray, window: str | tuple[float, float] | None = None) -> np.ndarray:
    """Map intensities to [0, 1] floats.

    Parameters
    ----------
    image : (H, W) or (X, Y, Z) array (HU for CT).
    window : ``"soft_tissue"`` (40/400), ``"lung"`` (-600/1500), ``"bone"`` (400/1800),
        ``"percentile"`` (1st-99th percentile of the nonzero voxels, for MR / unknown units),
        ``(center, width)``, or ``None`` (uint8 images as they are, else min-max).
    """
    img = _to_numpy(image).astype(np.float32)
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


def _gray_to_rgb(image: np.ndarray, window) -> np.ndarray:
    """(H, W) or (H, W, 3) -> (H, W, 3) float in [0, 1]."""
    a = _to_numpy(image)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3]
        if a.dtype == np.uint8:
            return a.astype(np.float32) / 255.0
        return window_image(a, window)
    if a.ndim != 2:
        raise InputError(f"image must be (H, W) gray or (H, W, 3) RGB, got shape {a.shape}")
    g = window_image(a, window)
    return np.repeat(g[..., None], 3, axis=2)


def _resize(a: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    from skimage.transform import resize

    if tuple(a.shape[:2]) == tuple(shape):
        return a
    if order == 0:
        return resize(a, shape + a.shape[2:], order=0, preserve_range=True, anti_aliasing=False, mode="edge").astype(
            a.dtype
        )
    return resize(
        a.astype(np.float32), shape + a.shape[2:], order=order, preserve_range=True, anti_aliasing=False, mode="edge"
    )


def _physical_shape(shape: tuple[int, int], spacing: Sequence[float], min_side: int = 0) -> tuple[int, int]:
    """Display shape with square pixels: the finer spacing sets the pixel size; optional upsampling."""
    sr, sc = (float(abs(s)) if s else 1.0 for s in spacing)
    px = min(sr, sc)
    h, w = shape[0] * sr / px, shape[1] * sc / px
    if min_side and max(h, w) < min_side:
        f = min_side / max(h, w)
        h, w = h * f, w * f
    return max(1, int(round(h))), max(1, int(round(w)))


def _blend_labels(rgb: np.ndarray, labels: np.ndarray | None, alpha: float, contour: bool) -> np.ndarray:
    """rgb (H, W, 3) float [0,1]; fill each class with its colour at ``alpha``, contour at full opacity."""
    if labels is None:
        return rgb
    from skimage.segmentation import find_boundaries

    out = rgb.copy()
    labels = np.asarray(labels)
    for k in np.unique(labels):
        if k <= 0:
            continue
        m = labels == k
        col = np.array(class_color(int(k)), np.float32) / 255.0
        if alpha > 0:
            out[m] = (1.0 - alpha) * out[m] + alpha * col
        if contour:
            out[find_boundaries(m, mode="inner")] = col
    return out


# --------------------------------------------------------------------------------------- text
@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):  # pragma: no cover - old Pillow / no FreeType
        return ImageFont.load_default()


def _font_size(shape: tuple[int, int]) -> int:
    return int(np.clip(min(shape[:2]) // 14, 12, 24))


def _draw_texts(rgb: np.ndarray, items: list[tuple[str, tuple[int, int], str]], size: int) -> np.ndarray:
    """Draw texts with a dark outline. items: (text, (x, y), anchor as in Pillow, e.g. "mt")."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    font = _font(size)
    for text, xy, anchor in items:
        d.text(
            xy, text, fill=_TEXT_COLOR, font=font, anchor=anchor, stroke_width=max(1, size // 8), stroke_fill=(0, 0, 0)
        )
    return np.asarray(im)


def _draw_letters(rgb: np.ndarray, letters: Mapping[str, str]) -> np.ndarray:
    """letters: {"top","bottom","left","right"} -> text, drawn at the middle of each edge."""
    h, w = rgb.shape[:2]
    size = _font_size((h, w))
    pad = max(2, size // 4)
    pos = {
        "top": ((w // 2, pad), "mt"),
        "bottom": ((w // 2, h - pad), "mb"),
        "left": ((pad, h // 2), "lm"),
        "right": ((w - pad, h // 2), "rm"),
    }
    return _draw_texts(rgb, [(t, *pos[k]) for k, t in letters.items() if t], size)


def _legend(rgb: np.ndarray, classes: Sequence[int], names: Mapping[int, str]) -> np.ndarray:
    """Append a legend strip (colour swatch + class name per present class) below the image."""
    from PIL import Image, ImageDraw

    classes = [int(k) for k in classes if int(k) > 0]
    if not classes:
        return rgb
    h, w = rgb.shape[:2]
    size = max(10, min(16, w // 20))
    font = _font(size)
    line = size + 6
    sw = size
    # flow the entries into rows that fit the width
    rows: list[list[tuple[int, str, int]]] = [[]]
    x = 4
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for k in classes:
        text = names.get(k, f"class {k}")
        tw = int(probe.textlength(text, font=font))
        ew = sw + 4 + tw + 12
        if rows[-1] and x + ew > w:
            rows.append([])
            x = 4
        rows[-1].append((k, text, x))
        x += ew
    strip = Image.new("RGB", (w, line * len(rows) + 4), (0, 0, 0))
    d = ImageDraw.Draw(strip)
    for r, row in enumerate(rows):
        y = 2 + r * line
        for k, text, x0 in row:
            d.rectangle([x0, y + 3, x0 + sw - 1, y + 3 + sw - 1], fill=class_color(k))
            d.text((x0 + sw + 4, y + 3 + sw // 2), text, fill=(255, 255, 255), font=font, anchor="lm")
    return np.concatenate([rgb, np.asarray(strip)], axis=0)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------- 2D
def overlay_2d(
    image: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    window: str | tuple[float, float] | None = None,
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
    img = _to_numpy(image)
    lab = None if labels is None else _to_numpy(labels)
    if lab is not None and lab.shape != img.shape[:2]:
        raise InputError(f"labels shape {lab.shape} does not match image shape {img.shape[:2]}")
    shape = _physical_shape(img.shape[:2], spacing, min_side)
    rgb = _gray_to_rgb(img, window)
    rgb = np.clip(_resize(rgb, shape, order=1), 0.0, 1.0)
    if lab is not None:
        lab = _resize(lab.astype(np.int32), shape, order=0)
    out = _to_uint8(_blend_labels(rgb, lab, alpha, contour))
    if letters:
        out = _draw_letters(out, letters)
    names = _names(class_names)
    if names and lab is not None:
        out = _legend(out, [k for k in np.unique(lab) if k > 0], names)
    return out


# --------------------------------------------------------------------------------------- 3D
def _axis_roles(affine: np.ndarray) -> list[int]:
    """For each voxel axis, the RAS world axis (0 = R/L, 1 = A/P, 2 = S/I) it is nearest to."""
    rot = np.asarray(affine, float)[:3, :3]
    roles = [-1, -1, -1]
    # greedy assignment by largest normalised component so roles are a permutation even when oblique
    norm = rot / np.maximum(np.linalg.norm(rot, axis=0, keepdims=True), 1e-12)
    order = np.dstack(np.unravel_index(np.argsort(-np.abs(norm), axis=None), (3, 3)))[0]
    used_w: set[int] = set()
    for w, v in order:
        if roles[v] == -1 and w not in used_w:
            roles[v] = int(w)
            used_w.add(int(w))
    return roles


def _letter(affine: np.ndarray, vox_axis: int, positive: bool) -> str:
    """Patient direction (R/L/A/P/S/I) that the voxel axis points to (``positive``: increasing index).

    An oblique axis gets a second letter when its second-largest direction component is > sin(22.5°)."""
    d = np.asarray(affine, float)[:3, vox_axis]
    d = d / max(np.linalg.norm(d), 1e-12)
    if not positive:
        d = -d
    order = np.argsort(-np.abs(d))
    out = ""
    for n, w in enumerate(order[:2]):
        if n == 1 and abs(d[w]) <= 0.383:
            break
        out += _LETTERS[int(w)][1] if d[w] > 0 else _LETTERS[int(w)][0]
    return out


_VIEW_WORLD = {"axial": (2, 1, 0), "coronal": (1, 2, 0), "sagittal": (0, 2, 1)}  # (normal, rows, cols)


def orientation_letters(affine: np.ndarray | None, view: str = "axial") -> dict[str, str]:
    """Letters at the edges of a view drawn by :func:`overlay_volume`.

    Parameters
    ----------
    affine : 4x4 voxel->RAS affine (``None``: the RAS identity).
    view : ``"axial"``, ``"coronal"`` or ``"sagittal"``.

    Returns
    -------
    ``{"top", "bottom", "left", "right"}`` -> letters, e.g. for a standard DICOM axial stack
    (affine diag(-sx, -sy, sz)) ``{"top": "A", "bottom": "P", "left": "R", "right": "L"}``.
    """
    _, (_, row_ax, col_ax), flip_rows = _view_axes(affine, view)
    aff = np.eye(4) if affine is None else np.asarray(affine, float)
    return {
        "top": _letter(aff, row_ax, positive=flip_rows),
        "bottom": _letter(aff, row_ax, positive=not flip_rows),
        "left": _letter(aff, col_ax, positive=False),
        "right": _letter(aff, col_ax, positive=True),
    }


def _view_axes(affine: np.ndarray | None, view: str) -> tuple[np.ndarray, tuple[int, int, int], bool]:
    """(affine, (slice voxel axis, row voxel axis, column voxel axis), rows shown bottom-to-top?)."""
    if view not in _VIEW_WORLD:
        raise InputError(f"unknown view {view!r}: use 'axial', 'coronal' or 'sagittal'")
    aff = np.eye(4) if affine is None else np.asarray(affine, float)
    if aff.shape != (4, 4):
        raise InputError(f"affine must be 4x4, got shape {aff.shape}")
    roles = _axis_roles(aff)
    vox = {w: roles.index(w) for w in range(3)}
    n, r, c = (vox[w] for w in _VIEW_WORLD[view])
    return aff, (n, r, c), r == 2  # the slice axis runs bottom-to-top when shown vertically


def _slice_2d(vol: np.ndarray, axes: tuple[int, int, int], index: int, flip_rows: bool) -> np.ndarray:
    n, r, c = axes
    sl = np.take(vol, index, axis=n)
    # remaining axes in ascending order: transpose so rows = r, cols = c
    rem = [a for a in range(3) if a != n]
    sl = sl if rem == [r, c] else sl.T
    return sl[::-1] if flip_rows else sl


def _spacing_of(aff: np.ndarray) -> np.ndarray:
    return np.linalg.norm(aff[:3, :3], axis=0)


def _best_index(lab: np.ndarray | None, axis: int) -> int:
    if lab is None or not np.any(lab > 0):
        return lab.shape[axis] // 2 if lab is not None else -1
    other = tuple(a for a in range(3) if a != axis)
    return int(np.argmax((lab > 0).sum(axis=other)))


def _prepare(image, labels, affine):
    img = _squeeze_channel(_to_numpy(image), "image")
    aff = affine if affine is not None else _affine_of(image)
    lab = None
    if labels is not None:
        lab = _squeeze_channel(_to_numpy(labels), "labels")
        if lab.shape != img.shape:
            raise InputError(f"labels shape {lab.shape} does not match image shape {img.shape}")
        if aff is None:
            aff = _affine_of(labels)
    if aff is None:
        log.debug("no affine given: assuming RAS identity (orientation letters may be meaningless)")
    return img, lab, (np.eye(4) if aff is None else np.asarray(aff, float))


def _render_slice(
    img,
    lab,
    aff,
    view,
    index,
    window,
    alpha,
    contour,
    crop=None,
    min_side=_MIN_SIDE,
    letters=True,
    caption: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    aff, axes, flip_rows = _view_axes(aff, view)
    n, r, c = axes
    sl = _slice_2d(img, axes, index, flip_rows)
    ls = None if lab is None else _slice_2d(lab, axes, index, flip_rows)
    if crop is not None:
        (r0, r1), (c0, c1) = crop
        sl = sl[r0:r1, c0:c1]
        ls = None if ls is None else ls[r0:r1, c0:c1]
    sp = _spacing_of(aff)
    out = overlay_2d(
        sl,
        ls,
        window=window,
        alpha=alpha,
        contour=contour,
        spacing=(sp[r], sp[c]),
        letters=orientation_letters(aff, view) if letters else None,
        min_side=min_side,
    )
    if caption:
        size = max(10, _font_size(out.shape) - 2)
        out = _draw_texts(out, [(caption, (3, 3), "lt")], size)
    return out, ls


def overlay_volume(
    image: Any,
    labels: Any = None,
    *,
    affine: np.ndarray | None = None,
    view: str = "axial",
    index: int | None = None,
    window: str | tuple[float, float] | None = "soft_tissue",
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    alpha: float = 0.4,
    contour: bool = True,
) -> np.ndarray:
    """One slice of a 3D volume with its label map, at physical aspect ratio, with orientation letters.

    Parameters
    ----------
    image : (X, Y, Z) array or MetaTensor ((1, X, Y, Z) accepted), e.g. HU.
    labels : (X, Y, Z) int label map (same grid), or None.
    affine : 4x4 voxel->RAS mm; default: ``image.affine`` for a MetaTensor, else identity.
    view : ``"axial"``, ``"coronal"`` or ``"sagittal"`` (voxel axis picked from the affine).
    index : slice index along the view's voxel axis; default: the slice with the most labelled
        voxels (middle slice without labels).
    window : see :func:`window_image` (``"percentile"`` for MR).
    class_names : {value: name}: legend of the classes present in the slice.
    alpha, contour : see :func:`overlay_2d`.

    Returns
    -------
    (H, W, 3) uint8 RGB, square pixels in mm, long side >= 256 px, letters on each edge, legend below.
    """
    img, lab, aff = _prepare(image, labels, affine)
    _, (n, _, _), _ = _view_axes(aff, view)
    if index is None:
        index = _best_index(lab, n) if lab is not None else img.shape[n] // 2
    if not -img.shape[n] <= index < img.shape[n]:
        raise InputError(f"slice index {index} out of range for a {view} view of shape {img.shape}")
    out, ls = _render_slice(img, lab, aff, view, int(index) % img.shape[n], window, alpha, contour)
    names = _names(class_names)
    if names and ls is not None:
        out = _legend(out, [k for k in np.unique(ls) if k > 0], names)
    return out


def lesion_view(
    image: Any,
    labels: Any,
    *,
    label: int | None = None,
    affine: np.ndarray | None = None,
    view: str = "axial",
    margin_mm: float = 30.0,
    window: str | tuple[float, float] | None = "soft_tissue",
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    alpha: float = 0.3,
) -> np.ndarray:
    """A view centred on the largest connected component of one class (a lesion), cropped around it.

    Parameters
    ----------
    image, labels : (X, Y, Z) arrays / MetaTensors, as in :func:`overlay_volume`.
    label : class value of the structure (default: the highest class value present, e.g. lesion).
    margin_mm : context kept around the component's bounding box, in mm.
    Other parameters as in :func:`overlay_volume`.

    Returns
    -------
    (H, W, 3) uint8 RGB through the component's centroid, with letters and legend.
    """
    from scipy import ndimage

    img, lab, aff = _prepare(image, labels, affine)
    if lab is None:
        raise InputError("lesion_view needs a label map")
    present = [int(v) for v in np.unique(lab) if v > 0]
    if not present:
        raise InputError("lesion_view: the label map is empty")
    label = present[-1] if label is None else int(label)
    comp, ncomp = ndimage.label(lab == label)
    if ncomp == 0:
        raise InputError(f"lesion_view: class {label} is not in the label map")
    sizes = ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, ncomp + 1))
    m = comp == (int(np.argmax(sizes)) + 1)
    aff, axes, flip_rows = _view_axes(aff, view)
    n, r, c = axes
    centroid = np.argwhere(m).mean(axis=0)
    index = int(round(centroid[n]))
    ms = _slice_2d(m.astype(np.uint8), axes, index, flip_rows)
    if not ms.any():  # non-convex component: take its largest slice instead
        index = _best_index(m, n)
        ms = _slice_2d(m.astype(np.uint8), axes, index, flip_rows)
    sp = _spacing_of(aff)
    rr, cc = np.nonzero(ms)
    mr, mc = int(np.ceil(margin_mm / sp[r])), int(np.ceil(margin_mm / sp[c]))
    crop = (
        (max(0, rr.min() - mr), min(ms.shape[0], rr.max() + mr + 1)),
        (max(0, cc.min() - mc), min(ms.shape[1], cc.max() + mc + 1)),
    )
    out, ls = _render_slice(img, lab, aff, view, index, window, alpha, True, crop=crop)
    names = _names(class_names)
    if names and ls is not None:
        out = _legend(out, [k for k in np.unique(ls) if k > 0], names)
    return out


def montage(
    image: Any,
    labels: Any,
    *,
    affine: np.ndarray | None = None,
    view: str = "axial",
    max_slices: int = 12,
    window: str | tuple[float, float] | None = "soft_tissue",
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    alpha: float = 0.4,
    ncols: int | None = None,
) -> np.ndarray:
    """A grid of the slices that contain the structure (labels > 0), evenly spread, with letters.

    Parameters
    ----------
    image, labels : (X, Y, Z) arrays / MetaTensors (``labels`` may be None: evenly spread slices).
    view : slicing direction (``"axial"``, ``"coronal"``, ``"sagittal"``).
    max_slices : at most this many tiles.
    ncols : tiles per row (default: about square).
    Other parameters as in :func:`overlay_volume`. Each tile is captioned with its slice index.

    Returns
    -------
    (H, W, 3) uint8 RGB: the tiles on a black background, one legend for the classes shown.
    """
    img, lab, aff = _prepare(image, labels, affine)
    _, (n, _, _), _ = _view_axes(aff, view)
    if lab is not None and np.any(lab > 0):
        other = tuple(a for a in range(3) if a != n)
        candidates = np.nonzero((lab > 0).any(axis=other))[0]
    else:
        candidates = np.arange(img.shape[n])
    max_slices = max(1, int(max_slices))
    if len(candidates) > max_slices:
        pick = np.unique(np.round(np.linspace(0, len(candidates) - 1, max_slices)).astype(int))
        candidates = candidates[pick]
    tiles, shown = [], set()
    for k in candidates:
        t, ls = _render_slice(
            img, lab, aff, view, int(k), window, alpha, True, min_side=192, caption=f"{view[:3]} {int(k)}"
        )
        tiles.append(t)
        if ls is not None:
            shown.update(int(v) for v in np.unique(ls) if v > 0)
    th, tw = tiles[0].shape[:2]
    ncols = ncols or int(np.ceil(np.sqrt(len(tiles))))
    nrows = int(np.ceil(len(tiles) / ncols))
    gap = 2
    grid = np.zeros((nrows * th + (nrows - 1) * gap, ncols * tw + (ncols - 1) * gap, 3), np.uint8)
    for i, t in enumerate(tiles):
        y, x = (i // ncols) * (th + gap), (i % ncols) * (tw + gap)
        grid[y : y + th, x : x + tw] = t
    names = _names(class_names)
    if names and shown:
        grid = _legend(grid, sorted(shown), names)
    return grid


# --------------------------------------------------------------------------------------- heat maps / markers
def heatmap_2d(
    image: np.ndarray,
    cam: np.ndarray,
    *,
    alpha: float = 0.5,
    window: str | tuple[float, float] | None = None,
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
    from matplotlib import colormaps

    rgb = _gray_to_rgb(image, window)
    c = _to_numpy(cam).astype(np.float32)
    c = np.squeeze(c)
    if c.ndim != 2:
        raise InputError(f"cam must be a 2D (H, W) map, got shape {np.shape(cam)}")
    c = np.nan_to_num(c, nan=0.0)
    lo, hi = float(c.min()), float(c.max())
    c = (c - lo) / (hi - lo) if hi > lo else np.zeros_like(c)
    c = np.clip(_resize(c, rgb.shape[:2], order=1), 0.0, 1.0)
    col = colormaps[cmap](c)[..., :3].astype(np.float32)
    a = alpha * (0.3 + 0.7 * c)[..., None]
    return _to_uint8((1.0 - a) * rgb + a * col)


def markers_2d(
    image: np.ndarray,
    points: np.ndarray,
    *,
    classes: Sequence[int] | np.ndarray | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    radius: int = 6,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    window: str | tuple[float, float] | None = None,
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
    from skimage.draw import circle_perimeter

    rgb = _to_uint8(_gray_to_rgb(image, window))
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
        rgb = _draw_texts(rgb, items, size)
    names = _names(class_names)
    if names and n:
        rgb = _legend(rgb, sorted(set(int(k) for k in cls)), names)
    return rgb


# --------------------------------------------------------------------------------------- output
def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, 3) uint8 RGB (or (H, W) gray) array as PNG, atomically (temp file + rename).

    Returns the path written.
    """
    from PIL import Image

    a = _to_numpy(rgb)
    if a.dtype != np.uint8:
        raise InputError(f"save_png expects uint8 pixels, got {a.dtype} (render with overlay_* first)")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise InputError(f"save_png expects (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    path = Path(path)
    with atomic_write(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(a)).save(tmp, format="PNG", optimize=False)
    return path


def save_case_overlays(
    image: Any,
    labels: Any,
    out_dir: str | Path,
    case_id: str,
    *,
    affine: np.ndarray | None = None,
    window: str | tuple[float, float] | None = "soft_tissue",
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    lesion_label: int | None = None,
    max_slices: int = 12,
) -> dict[str, Path]:
    """The standard review set for one 3D case: three orthogonal views, a montage, a lesion view.

    Parameters
    ----------
    image, labels : (X, Y, Z) arrays / MetaTensors (as in :func:`overlay_volume`).
    out_dir : folder for the PNGs (created). File names are ``{case_id}_{kind}.png``; ``case_id``
        must be medseg's own id (a file stem or an index), never a DICOM value.
    lesion_label : class value for the lesion-centred view (skipped when absent from ``labels``).
    Other parameters as in :func:`overlay_volume` / :func:`montage`.

    Returns
    -------
    ``{"axial", "coronal", "sagittal", "montage"[, "lesion"]} -> PNG path``; ``"axial"`` makes a
    good thumbnail for :class:`~medseg.review.cases.ReviewCase`.
    """
    out_dir = Path(out_dir)
    img, lab, aff = _prepare(image, labels, affine)
    out: dict[str, Path] = {}
    for view in ("axial", "coronal", "sagittal"):
        out[view] = save_png(
            overlay_volume(img, lab, affine=aff, view=view, window=window, class_names=class_names),
            out_dir / f"{case_id}_{view}.png",
        )
    if lab is not None and np.any(lab > 0):
        out["montage"] = save_png(
            montage(img, lab, affine=aff, window=window, class_names=class_names, max_slices=max_slices),
            out_dir / f"{case_id}_montage.png",
        )
        if lesion_label is not None and np.any(lab == lesion_label):
            out["lesion"] = save_png(
                lesion_view(img, lab, label=lesion_label, affine=aff, window=window, class_names=class_names),
                out_dir / f"{case_id}_lesion.png",
            )
    return out
