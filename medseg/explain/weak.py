"""Weak supervision: class activation maps -> pseudo-masks and bounding boxes.

A classifier trained on image-level labels only localises what it looks at. This module turns its
Grad-CAM maps into segmentation pseudo-labels:

    map -> normalise to [0, 1] -> threshold (Otsu by default, or a fixed value)
        -> keep the largest connected component(s) -> [optional refinement] -> pseudo-mask, boxes

The optional refinement restricts the mask to foreground by a simple intensity criterion: inside a
dilated copy of the CAM region, voxels on the object's side of an Otsu intensity threshold are
kept (the side is the one with the higher mean map value, so bright and dark objects both work),
then holes are filled and the largest component kept again. Thresholds come from
``skimage.filters.threshold_otsu``, components from ``skimage.measure.label``, morphology from
``scipy.ndimage``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops

from medseg.errors import InputError

__all__ = ["PseudoLabel", "cam_to_mask", "largest_components", "refine_with_intensity", "mask_boxes", "pseudo_masks"]

log = logging.getLogger("medseg.explain")


@dataclass
class PseudoLabel:
    """The pseudo-label of one image.

    Attributes
    ----------
    mask : ``(*S)`` bool pseudo-mask (spatial shape of the map).
    boxes : ``(N, 2 * ndim)`` int array, one box per kept component, MONAI's "xyxy"/"xyzxyz"
        convention in voxel indices: ``[i_min, j_min, (k_min,) i_max, j_max, (k_max)]`` with the max
        exclusive (i = first array axis).
    threshold : the map threshold used (after normalisation to [0, 1]).
    """

    mask: np.ndarray
    boxes: np.ndarray
    threshold: float
    info: dict = field(default_factory=dict)


def _arr(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def cam_to_mask(cam, threshold: Literal["otsu"] | float = "otsu") -> tuple[np.ndarray, float]:
    """Normalise one map ``(*S)`` to [0, 1] and threshold it (Otsu or a value in [0, 1]).

    Returns ``(mask bool (*S), threshold used)``. A constant map gives an empty mask.
    """
    c = _arr(cam).astype(np.float64)
    lo, hi = float(c.min()), float(c.max())
    if hi - lo <= 0:
        return np.zeros(c.shape, dtype=bool), float("nan")
    c = (c - lo) / (hi - lo)
    if threshold == "otsu":
        t = float(threshold_otsu(c))
    else:
        t = float(threshold)
        if not 0.0 <= t <= 1.0:
            raise InputError(f"CAM threshold must be 'otsu' or a number in [0, 1], got {threshold!r}")
    return (c >= t) if t > 0 else (c > 0), t


def largest_components(
    mask: np.ndarray, n: int = 1, min_size: int = 1, weights: np.ndarray | None = None
) -> np.ndarray:
    """Keep the ``n`` largest connected components of a binary mask (full connectivity).

    With ``weights`` (e.g. the CAM), components are ranked by their summed weight instead of
    their size, so the most salient blob wins over a larger, fainter one.
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return m.copy()
    lab = label(m, connectivity=m.ndim)
    ids = np.arange(1, lab.max() + 1)
    sizes = np.bincount(lab.ravel(), minlength=len(ids) + 1)[1:]
    score = (
        sizes.astype(np.float64)
        if weights is None
        else np.bincount(lab.ravel(), weights=np.asarray(weights, dtype=np.float64).ravel(), minlength=len(ids) + 1)[1:]
    )
    ok = sizes >= min_size
    order = [i for i in np.argsort(-score, kind="stable") if ok[i]][: max(1, n)]
    return np.isin(lab, ids[order])


def refine_with_intensity(
    mask: np.ndarray,
    image: np.ndarray,
    cam: np.ndarray | None = None,
    polarity: Literal["auto", "bright", "dark"] = "auto",
    dilate: int = 3,
) -> np.ndarray:
    """Restrict a pseudo-mask to foreground voxels by an Otsu intensity threshold.

    Parameters
    ----------
    mask : ``(*S)`` bool pseudo-mask from the map.
    image : ``(*S)`` or ``(C, *S)`` intensities (channels are averaged).
    cam : ``(*S)`` map; with ``polarity="auto"`` the object side of the threshold is the one with the
        higher mean map value (else the mean intensity inside the mask vs around it decides).
    polarity : "bright" / "dark" objects, or "auto".
    dilate : voxels the mask is grown by before refinement (the CAM is coarse and may be too small).

    Returns
    -------
    ``(*S)`` bool mask: holes filled, largest component kept; the input mask if refinement would
    leave nothing.
    """
    m = np.asarray(mask, dtype=bool)
    img = _arr(image).astype(np.float64)
    if img.ndim == m.ndim + 1:
        img = img.mean(0)
    if img.shape != m.shape:
        raise InputError(f"image shape {img.shape} does not match mask shape {m.shape}")
    if not m.any():
        return m.copy()
    region = ndi.binary_dilation(m, iterations=dilate) if dilate > 0 else m
    vals = img[region]
    if np.ptp(vals) == 0:
        return m.copy()
    t = float(threshold_otsu(vals))
    hi_side = region & (img > t)
    lo_side = region & (img <= t)
    if polarity == "auto":
        if cam is not None:
            c = _arr(cam).astype(np.float64).reshape(m.shape)
            bright = (c[hi_side].mean() if hi_side.any() else -np.inf) >= (
                c[lo_side].mean() if lo_side.any() else -np.inf
            )
        else:
            ring = region & ~m
            bright = img[m].mean() >= (img[ring].mean() if ring.any() else img.mean())
    else:
        bright = polarity == "bright"
    fg = hi_side if bright else lo_side
    fg = ndi.binary_fill_holes(fg)
    fg = largest_components(fg, 1, weights=None if cam is None else _arr(cam).reshape(m.shape))
    if not fg.any():
        return m.copy()
    return fg


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """Bounding boxes ``(N, 2 * ndim)`` (voxel indices, max exclusive) of the connected components."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return np.zeros((0, 2 * m.ndim), dtype=np.int64)
    return np.asarray([r.bbox for r in regionprops(label(m, connectivity=m.ndim))], dtype=np.int64)


def pseudo_masks(
    cams,
    threshold: Literal["otsu"] | float = "otsu",
    n_components: int = 1,
    images=None,
    refine: bool = False,
    min_size: int = 1,
    polarity: Literal["auto", "bright", "dark"] = "auto",
) -> list[PseudoLabel]:
    """Pseudo-masks and boxes for a batch of maps.

    Parameters
    ----------
    cams : ``(B, 1, *S)`` maps (e.g. from :class:`medseg.explain.cam.CAMExplainer`) or ``(B, *S)``.
    threshold : "otsu" (default) or a value in [0, 1] applied to each normalised map.
    n_components : how many components to keep (ranked by summed map value).
    images : ``(B, C, *S)`` images, needed for ``refine``.
    refine : restrict each mask to foreground by :func:`refine_with_intensity`.
    min_size : components smaller than this (voxels) are dropped.

    Returns
    -------
    list of :class:`PseudoLabel`, one per map.
    """
    c = _arr(cams)
    if c.ndim >= 3 and c.shape[1] == 1:
        c = c[:, 0]
    if refine and images is None:
        raise InputError("refine=True needs the images")
    imgs = None if images is None else _arr(images)
    out: list[PseudoLabel] = []
    for i in range(c.shape[0]):
        m, t = cam_to_mask(c[i], threshold)
        m = largest_components(m, n_components, min_size=min_size, weights=c[i])
        if refine and imgs is not None:
            m = refine_with_intensity(m, imgs[i], cam=c[i], polarity=polarity)
        out.append(PseudoLabel(mask=m, boxes=mask_boxes(m), threshold=t, info={"voxels": int(m.sum())}))
    return out
