"""Lesion instances of a label map: connected components of chosen classes, measured in mm and mL.

:func:`find_lesions` turns a label map (any class values, 2D or 3D) and its voxel -> RAS affine into
:class:`Lesion` records (id, class, voxel count, volume in mL, centroid in voxels and RAS mm, longest
diameter in 3D and in the axial plane, bounding box) and an instance map (lesion id per voxel).
:func:`lesion_rows` gives the rows of a ``lesions.csv`` table (:data:`LESION_COLUMNS`).

Rules (written in ``docs/lesions.md``):

- components are computed per class (two touching lesions of different classes stay two lesions)
  with full connectivity by default (26-neighbourhood in 3D, 8 in 2D; ``connectivity=1`` gives
  face neighbours only), by :func:`skimage.measure.label`;
- a component smaller than ``min_ml`` (mL; in 2D the area in mm^2 / 1000) is dropped;
- lesion ids are 1..N, largest volume first (ties: by first voxel in C order);
- diameters are the longest distance between the centres of two voxels of the lesion (as
  PyRadiomics' ``Maximum3DDiameter`` on voxel centres), in mm through the affine (anisotropic and
  oblique grids measured correctly). "In-plane" is the longest such distance within one slice of the
  voxel axis closest to the patient's superior axis (the axial plane of an axial scan: RECIST's
  long axis). A one-voxel lesion has diameter 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist
from skimage.measure import label as cc_label
from skimage.measure import regionprops

from medseg.errors import InputError

__all__ = ["Lesion", "LESION_COLUMNS", "find_lesions", "lesion_rows", "longest_diameter_mm", "axial_axis"]

log = logging.getLogger("medseg.lesions")

#: columns of a lesions.csv (a cohort table puts ``case_id`` first)
LESION_COLUMNS: tuple[str, ...] = (
    "lesion_id",
    "class_value",
    "class_name",
    "voxels",
    "volume_ml",
    "centroid_x_vox",
    "centroid_y_vox",
    "centroid_z_vox",
    "centroid_r_mm",
    "centroid_a_mm",
    "centroid_s_mm",
    "diameter_3d_mm",
    "diameter_inplane_mm",
    "bbox_x0",
    "bbox_y0",
    "bbox_z0",
    "bbox_x1",
    "bbox_y1",
    "bbox_z1",
)

_HULL_MIN_POINTS = 32  # below this, all pairwise distances are cheaper than a hull


@dataclass
class Lesion:
    """One lesion: a connected component of one class.

    Attributes
    ----------
    lesion_id : 1..N within its label map (largest first).
    class_value, class_name : the label value and its name.
    voxels : number of voxels.
    volume_ml : voxels x voxel volume (mL; 2D: area in mm^2 / 1000).
    centroid_vox : centre of mass in voxel indices, one value per array axis.
    centroid_ras : the same point in RAS mm (3 values; 2D images: z = 0 plane of the affine).
    diameter_3d_mm : longest voxel-centre distance in the lesion (mm).
    diameter_inplane_mm : longest voxel-centre distance within one axial slice (mm; 2D: = 3D).
    bbox_min, bbox_max : inclusive voxel-index bounds, one value per array axis.
    """

    lesion_id: int
    class_value: int
    class_name: str
    voxels: int
    volume_ml: float
    centroid_vox: tuple[float, ...]
    centroid_ras: tuple[float, float, float]
    diameter_3d_mm: float
    diameter_inplane_mm: float
    bbox_min: tuple[int, ...]
    bbox_max: tuple[int, ...]

    def row(self) -> dict[str, Any]:
        """The lesions.csv row (:data:`LESION_COLUMNS`; 2D maps leave the z cells empty)."""
        c = list(self.centroid_vox) + [""] * (3 - len(self.centroid_vox))
        lo = list(self.bbox_min) + [""] * (3 - len(self.bbox_min))
        hi = list(self.bbox_max) + [""] * (3 - len(self.bbox_max))
        r = lambda v: round(float(v), 3) if v != "" else ""  # noqa: E731
        return {
            "lesion_id": self.lesion_id,
            "class_value": self.class_value,
            "class_name": self.class_name,
            "voxels": self.voxels,
            "volume_ml": round(self.volume_ml, 4),
            "centroid_x_vox": r(c[0]),
            "centroid_y_vox": r(c[1]),
            "centroid_z_vox": r(c[2]),
            "centroid_r_mm": r(self.centroid_ras[0]),
            "centroid_a_mm": r(self.centroid_ras[1]),
            "centroid_s_mm": r(self.centroid_ras[2]),
            "diameter_3d_mm": round(self.diameter_3d_mm, 2),
            "diameter_inplane_mm": round(self.diameter_inplane_mm, 2),
            "bbox_x0": lo[0],
            "bbox_y0": lo[1],
            "bbox_z0": lo[2],
            "bbox_x1": hi[0],
            "bbox_y1": hi[1],
            "bbox_z1": hi[2],
        }


def _linear(affine: np.ndarray, nd: int) -> np.ndarray:
    """The ``(3, nd)`` voxel-index -> RAS-mm linear part of a 4x4 (or 3x3 for 2D) affine."""
    a = np.asarray(affine, dtype=float)
    if a.shape == (4, 4):
        return a[:3, :nd]
    if a.shape == (3, 3) and nd == 2:  # 2D affine: (x, y) mm, no z
        return np.vstack([a[:2, :2], np.zeros((1, 2))])
    raise InputError(f"the affine must be 4x4 (or 3x3 for a 2D map), got shape {a.shape}")


def _origin(affine: np.ndarray) -> np.ndarray:
    a = np.asarray(affine, dtype=float)
    return a[:3, 3] if a.shape == (4, 4) else np.array([a[0, 2], a[1, 2], 0.0])


def axial_axis(affine: np.ndarray) -> int:
    """The voxel axis (0, 1, 2) whose direction is closest to the patient's superior (S) axis."""
    lin = _linear(affine, 3)
    cos = np.abs(lin[2]) / np.maximum(np.linalg.norm(lin, axis=0), 1e-12)
    return int(np.argmax(cos))


def longest_diameter_mm(coords: np.ndarray, linear: np.ndarray) -> float:
    """Longest distance (mm) between two of the voxel-index points ``coords`` ``(N, d)``.

    ``linear`` ``(3, d)`` maps index steps to mm. The hull of the points is taken in index space (a
    linear map keeps hull vertices), so only its vertices are compared: scipy's Qhull, joggled
    (``QJ``) so flat and collinear sets work too.
    """
    pts = np.asarray(coords, dtype=float)
    if len(pts) < 2:
        return 0.0
    if len(pts) > _HULL_MIN_POINTS:
        pts = np.unique(pts, axis=0)
        if len(pts) > _HULL_MIN_POINTS and pts.shape[1] >= 2:
            pts = pts[ConvexHull(pts, qhull_options="QJ").vertices]
    return float(pdist(pts @ linear.T).max()) if len(pts) >= 2 else 0.0


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Index coordinates of the voxels of ``mask`` with a background face neighbour (the only hull candidates)."""
    pad = np.pad(mask, 1)
    inner = pad.copy()
    for ax in range(mask.ndim):
        inner &= np.roll(pad, 1, axis=ax) & np.roll(pad, -1, axis=ax)
    edge = pad & ~inner
    return np.argwhere(edge[tuple(slice(1, -1) for _ in range(mask.ndim))])


def _inplane_diameter(mask: np.ndarray, linear: np.ndarray, axis: int) -> float:
    """Longest diameter within one slice along ``axis`` (mm), the maximum over the lesion's slices."""
    others = [a for a in range(mask.ndim) if a != axis]
    lin2 = linear[:, others]
    best = 0.0
    for k in range(mask.shape[axis]):
        sl = np.take(mask, k, axis=axis)
        if sl.any():
            best = max(best, longest_diameter_mm(_boundary(sl), lin2))
    return best


def _class_table(classes: Mapping[int, str] | Sequence[int] | None, labels: np.ndarray) -> dict[int, str]:
    if classes is None:
        values = [int(v) for v in np.unique(labels) if v != 0]
        return {v: f"class_{v}" for v in values}
    if isinstance(classes, Mapping):
        return {int(k): str(v) for k, v in classes.items() if int(k) != 0}
    return {int(v): f"class_{int(v)}" for v in classes if int(v) != 0}


def find_lesions(
    labels: np.ndarray,
    affine: np.ndarray,
    classes: Mapping[int, str] | Sequence[int] | None = None,
    *,
    min_ml: float = 0.0,
    connectivity: int | None = None,
) -> tuple[np.ndarray, list[Lesion]]:
    """Split a label map into lesion instances.

    Parameters
    ----------
    labels : ``(X, Y, Z)`` (or ``(X, Y)``, or with a leading channel of 1) integer label map.
    affine : 4x4 voxel-index -> RAS mm (3x3 accepted for a 2D map).
    classes : the lesion classes: ``{value: name}``, a list of values, or None (every non-zero value).
    min_ml : drop components smaller than this (mL; in 2D area in mm^2 / 1000).
    connectivity : neighbourhood of :func:`skimage.measure.label` (1 = faces; default: full, i.e. 26 in 3D).

    Returns
    -------
    (instance map of ``labels``' spatial shape, int32, 0 = background, lesion ids 1..N;
    the lesions, id order = largest first).

    Raises
    ------
    InputError : non-integer labels, a map that is not 2D/3D, or a bad affine.
    """
    lab = np.asarray(labels)
    if lab.ndim in (3, 4) and lab.shape[0] == 1:
        lab = lab[0]
    if lab.ndim not in (2, 3):
        raise InputError(f"a lesion map must be 2D or 3D, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.isfinite(lab)) or not np.allclose(lab, np.round(lab)):
            raise InputError("label map values must be integers (a probability map? threshold it first)")
        lab = np.round(lab).astype(np.int64)
    nd = lab.ndim
    linear = _linear(affine, nd)
    origin = _origin(affine)
    vox_ml = (abs(float(np.linalg.det(linear))) if nd == 3 else float(np.prod(np.linalg.norm(linear, axis=0)))) / 1e3
    ax = axial_axis(affine) if nd == 3 and np.asarray(affine).shape == (4, 4) else -1
    found: list[tuple[int, str, Any]] = []
    dropped = 0
    for value, name in _class_table(classes, lab).items():
        comp = cc_label(lab == value, connectivity=connectivity or nd)
        for rp in regionprops(comp):
            if rp.area * vox_ml < min_ml:
                dropped += 1
                continue
            found.append((value, name, rp))
    found.sort(key=lambda t: (-int(t[2].area), tuple(t[2].coords[0])))
    instances = np.zeros(lab.shape, dtype=np.int32)
    out: list[Lesion] = []
    for i, (value, name, rp) in enumerate(found, start=1):
        coords = rp.coords
        instances[tuple(coords.T)] = i
        bb = rp.bbox
        lo = tuple(int(v) for v in bb[:nd])
        hi = tuple(int(v) - 1 for v in bb[nd:])
        sub = rp.image  # the lesion's mask cropped to its bounding box
        edge = _boundary(sub)
        d3 = longest_diameter_mm(edge, linear)
        d2 = _inplane_diameter(sub, linear, ax) if ax >= 0 else d3
        cen = np.asarray(rp.centroid, dtype=float)
        ras = origin + linear @ cen
        out.append(
            Lesion(
                lesion_id=i,
                class_value=int(value),
                class_name=name,
                voxels=int(rp.area),
                volume_ml=float(rp.area) * vox_ml,
                centroid_vox=tuple(float(v) for v in cen),
                centroid_ras=(float(ras[0]), float(ras[1]), float(ras[2])),
                diameter_3d_mm=d3,
                diameter_inplane_mm=d2,
                bbox_min=lo,
                bbox_max=hi,
            )
        )
    if dropped:
        log.info("%d component(s) under %g mL dropped", dropped, min_ml)
    return instances, out


def lesion_rows(lesions: Sequence[Lesion], case_id: str | None = None) -> list[dict[str, Any]]:
    """The rows of a lesions.csv (``case_id`` first when given)."""
    rows = []
    for les in lesions:
        r = les.row()
        rows.append({"case_id": case_id, **r} if case_id is not None else r)
    return rows
