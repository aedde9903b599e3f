"""Volume views for review: one slice, a montage, a lesion-centred view, the standard PNG set.

Volumes are medseg's ``(X, Y, Z)`` arrays (or MONAI MetaTensors ``(1, X, Y, Z)``) with a voxel->RAS
affine; they are shown in one radiological convention whatever their stored order (the volume is
reordered by :func:`medseg.review.orientation.canonical` first), lettered on every edge. Slice
indices given to these functions count along the **stored** array's axes. Pixels are square in
millimetres and views are upsampled so their long side is at least 256 px (readable letters).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import InputError
from medseg.review.annotate import draw_texts, font_size, legend
from medseg.review.draw2d import overlay_2d
from medseg.review.orientation import (
    best_index,
    canonical,
    canonical_index,
    orientation_letters,
    slice_2d,
    spacing_of,
    view_axes,
)
from medseg.review.png import save_png
from medseg.review.windowing import Window, as_array, names_map

__all__ = ["overlay_volume", "lesion_view", "montage", "save_case_overlays"]

log = logging.getLogger("medseg.review.overlay")

_MIN_SIDE = 256  # volume views are upsampled so the long side is at least this (readable letters)


def _affine_of(x: Any) -> np.ndarray | None:
    aff = getattr(x, "affine", None)
    if aff is None:
        return None
    aff = as_array(aff).astype(float)
    return aff[0] if aff.ndim == 3 else aff


def _squeeze_channel(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise InputError(f"{name} must be a 3D (X, Y, Z) volume (or (1, X, Y, Z)), got shape {a.shape}")
    return a


def _with_legend(
    rgb: np.ndarray, shown_labels: np.ndarray | None, class_names: Mapping[int, str] | Sequence[str] | None
) -> np.ndarray:
    """``rgb`` with a legend of the classes present in the shown label slice (when names are given)."""
    names = names_map(class_names)
    if not names or shown_labels is None:
        return rgb
    return legend(rgb, [int(k) for k in np.unique(shown_labels) if k > 0], names)


def _prepare(image, labels, affine):
    img = _squeeze_channel(as_array(image), "image")
    aff = affine if affine is not None else _affine_of(image)
    lab = None
    if labels is not None:
        lab = _squeeze_channel(as_array(labels), "labels")
        if lab.shape != img.shape:
            raise InputError(f"labels shape {lab.shape} does not match image shape {img.shape}")
        if aff is None:
            aff = _affine_of(labels)
    if aff is None:
        log.debug("no affine given: assuming RAS identity (orientation letters may be meaningless)")
    aff = np.eye(4) if aff is None else np.asarray(aff, float)
    (shown, lab), aff_c = canonical([img, lab], aff)
    return (img if shown is None else shown), lab, aff_c, aff


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
    aff, axes, flip_rows = view_axes(aff, view)
    n, r, c = axes
    sl = slice_2d(img, axes, index, flip_rows)
    ls = None if lab is None else slice_2d(lab, axes, index, flip_rows)
    if crop is not None:
        (r0, r1), (c0, c1) = crop
        sl = sl[r0:r1, c0:c1]
        ls = None if ls is None else ls[r0:r1, c0:c1]
    sp = spacing_of(aff)
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
        size = max(10, font_size(out.shape) - 2)
        out = draw_texts(out, [(caption, (3, 3), "lt")], size)
    return out, ls


def overlay_volume(
    image: Any,
    labels: Any = None,
    *,
    affine: np.ndarray | None = None,
    view: str = "axial",
    index: int | None = None,
    window: Window = "soft_tissue",
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
    img, lab, aff, stored = _prepare(image, labels, affine)
    _, (n, _, _), _ = view_axes(aff, view)
    if index is None:
        index = best_index(lab, n) if lab is not None else img.shape[n] // 2
    else:  # an index along the stored array's axis: where that slice is in the display order
        size = img.shape[n]
        if not -size <= index < size:
            raise InputError(f"slice index {index} out of range for a {view} view ({size} slices)")
        axis = next(a for a in range(3) if canonical_index(stored, a, 0, size)[0] == n)
        index = canonical_index(stored, axis, int(index) % size, size)[1]
    out, ls = _render_slice(img, lab, aff, view, int(index), window, alpha, contour)
    return _with_legend(out, ls, class_names)


def lesion_view(
    image: Any,
    labels: Any,
    *,
    label: int | None = None,
    affine: np.ndarray | None = None,
    view: str = "axial",
    margin_mm: float = 30.0,
    window: Window = "soft_tissue",
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
    img, lab, aff, _ = _prepare(image, labels, affine)
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
    aff, axes, flip_rows = view_axes(aff, view)
    n, r, c = axes
    centroid = np.argwhere(m).mean(axis=0)
    index = int(round(centroid[n]))
    ms = slice_2d(m.astype(np.uint8), axes, index, flip_rows)
    if not ms.any():  # non-convex component: take its largest slice instead
        index = best_index(m, n)
        ms = slice_2d(m.astype(np.uint8), axes, index, flip_rows)
    sp = spacing_of(aff)
    rr, cc = np.nonzero(ms)
    mr, mc = int(np.ceil(margin_mm / sp[r])), int(np.ceil(margin_mm / sp[c]))
    crop = (
        (max(0, rr.min() - mr), min(ms.shape[0], rr.max() + mr + 1)),
        (max(0, cc.min() - mc), min(ms.shape[1], cc.max() + mc + 1)),
    )
    out, ls = _render_slice(img, lab, aff, view, index, window, alpha, True, crop=crop)
    return _with_legend(out, ls, class_names)


def montage(
    image: Any,
    labels: Any,
    *,
    affine: np.ndarray | None = None,
    view: str = "axial",
    max_slices: int = 12,
    window: Window = "soft_tissue",
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
    img, lab, aff, _ = _prepare(image, labels, affine)
    _, (n, _, _), _ = view_axes(aff, view)
    if lab is not None and np.any(lab > 0):
        other = tuple(a for a in range(3) if a != n)
        candidates = np.nonzero((lab > 0).any(axis=other))[0]
    else:
        candidates = np.arange(img.shape[n])
    max_slices = max(1, int(max_slices))
    if len(candidates) > max_slices:
        pick = np.unique(np.round(np.linspace(0, len(candidates) - 1, max_slices)).astype(int))
        candidates = candidates[pick]
    tiles: list[np.ndarray] = []
    shown: set[int] = set()
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
    names = names_map(class_names)
    if names and shown:
        grid = legend(grid, sorted(shown), names)
    return grid


def save_case_overlays(
    image: Any,
    labels: Any,
    out_dir: str | Path,
    case_id: str,
    *,
    affine: np.ndarray | None = None,
    window: Window = "soft_tissue",
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
    img, lab, aff, _ = _prepare(image, labels, affine)
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
