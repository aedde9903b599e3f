"""Geometry helpers: DICOM (LPS) <-> RAS affines, orientation codes, image/label checks.

Conventions (see ``docs/io.md``):

- Every affine in medseg maps voxel indices ``(i, j, k)`` to patient millimetres in **RAS**
  (+x to the patient's Right, +y Anterior, +z Superior: the NIfTI/nibabel/MONAI convention).
- DICOM stores positions in **LPS**; ``LPS_TO_RAS`` flips the first two axes.
- For a DICOM slice, array index ``i`` follows the *row direction cosine* (along a row = increasing column
  index), ``j`` the *column direction cosine* (increasing row index), ``k`` the sorted slice order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medseg.errors import LabelMismatchError

__all__ = [
    "LPS_TO_RAS",
    "dicom_affine",
    "orientation_code",
    "spacing_from_affine",
    "affines_close",
    "TOLERANCE_GRID_VOXELS",
    "check_image_label",
    "world_to_voxel",
    "voxel_to_world",
]

#: 4x4 matrix converting LPS millimetres to RAS millimetres (and back: it is its own inverse)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def dicom_affine(
    iop: ArrayLike,
    first_position: ArrayLike,
    pixel_spacing: Sequence[float],
    slice_step: ArrayLike | None,
) -> np.ndarray:
    """Voxel -> RAS affine of a DICOM slice stack.

    Parameters
    ----------
    iop : ImageOrientationPatient, 6 floats (row cosine then column cosine, LPS).
    first_position : ImagePositionPatient (LPS mm) of the first slice after sorting.
    pixel_spacing : DICOM PixelSpacing ``[row spacing, column spacing]`` mm; i.e. ``[dy, dx]``.
    slice_step : LPS vector (mm) from one slice to the next; ``None`` for a single slice
        (then the slice normal times 1 mm is used; the caller may override with SliceThickness).

    Returns
    -------
    (4, 4) float64 affine mapping ``(i, j, k, 1)`` to RAS mm.
    """
    cosines = np.asarray(iop, float)
    r = cosines[:3]
    c = cosines[3:6]
    n = np.cross(r, c)
    dy, dx = float(pixel_spacing[0]), float(pixel_spacing[1])
    step = n if slice_step is None else np.asarray(slice_step, float)
    lps = np.eye(4)
    lps[:3, 0] = r * dx
    lps[:3, 1] = c * dy
    lps[:3, 2] = step
    lps[:3, 3] = np.asarray(first_position, float)
    return LPS_TO_RAS @ lps


def orientation_code(affine: np.ndarray) -> str:
    """Three-letter axis code of an affine (nibabel's ``aff2axcodes``), e.g. ``"LPS"`` for a DICOM axial stack."""
    import nibabel as nib  # lazy: keeps `import medseg.io` light

    a = np.asarray(affine, float)
    if a.shape == (3, 3):  # 2D affine: pad
        b = np.eye(4)
        b[:2, :2] = a[:2, :2]
        b[:2, 3] = a[:2, 2]
        a = b
    return "".join(c or "?" for c in nib.aff2axcodes(a))


def spacing_from_affine(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel sizes (mm): the column norms of the affine's linear part."""
    a = np.asarray(affine, float)
    d = a.shape[0] - 1
    return tuple(float(v) for v in np.linalg.norm(a[:d, :d], axis=0))


def voxel_to_world(affine: np.ndarray, ijk: Sequence[float]) -> np.ndarray:
    """RAS mm of voxel index ``ijk`` (3,)."""
    a = np.asarray(affine, float)
    return a[:3, :3] @ np.asarray(ijk, float) + a[:3, 3]


def world_to_voxel(affine: np.ndarray, xyz: Sequence[float]) -> np.ndarray:
    """Continuous voxel index of RAS point ``xyz`` (mm)."""
    a = np.asarray(affine, float)
    return np.linalg.solve(a[:3, :3], np.asarray(xyz, float) - a[:3, 3])


#: the grid width (voxels) over which :func:`affines_close` lets the linear parts' difference add up
TOLERANCE_GRID_VOXELS = 100.0


def affines_close(a: np.ndarray, b: np.ndarray, tol_mm: float = 1e-2) -> bool:
    """True when two affines place the voxels of a 100-voxel-wide grid within ``tol_mm`` of each other.

    The linear part's difference is scaled by :data:`TOLERANCE_GRID_VOXELS` (100 voxels), the
    translation compared directly, so float32 round-off of NIfTI headers passes and half a voxel (or
    a flip) does not: with the default 0.01 mm, a voxel size that differs by 1e-4 mm (0.01 mm over
    100 voxels) is the limit.
    """
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    if a.shape != b.shape:
        return False
    d = a.shape[0] - 1
    lin = np.abs(a[:d, :d] - b[:d, :d]).max() * TOLERANCE_GRID_VOXELS
    trans = np.abs(a[:d, d] - b[:d, d]).max()
    return bool(lin <= tol_mm and trans <= tol_mm)


def _spatial(x: Any) -> tuple[tuple[int, ...], np.ndarray | None]:
    """(spatial shape, affine or None) of a MetaTensor / array (channel-first) / nibabel image."""
    aff = None
    if hasattr(x, "affine") and not isinstance(x, np.ndarray):
        aff = np.asarray(x.affine.detach().cpu().numpy() if hasattr(x.affine, "detach") else x.affine, float)
    shape = tuple(int(s) for s in x.shape)
    if hasattr(x, "dataobj"):  # nibabel image: no channel axis for 3D
        return shape[:3], aff
    return shape[1:], aff


def check_image_label(
    image: Any,
    label: Any,
    image_path: str | Path | None = None,
    label_path: str | Path | None = None,
    *,
    tol_mm: float = 1e-2,
) -> None:
    """Check that a label map overlays its image: same spatial shape, same affine (within ``tol_mm``).

    Parameters
    ----------
    image, label : MetaTensor (C, X, Y[, Z]) with ``affine`` (RAS mm), as from :func:`medseg.io.load`.
    image_path, label_path : file names used in the error message.
    tol_mm : largest allowed difference of the affines (mm; see :func:`affines_close`).

    Raises
    ------
    LabelMismatchError
        naming both files, when the spatial shapes differ or the affines differ by more than ``tol_mm``.
    """
    ishape, iaff = _spatial(image)
    lshape, laff = _spatial(label)
    names = f"image {image_path or '<image>'} and label {label_path or '<label>'}"
    if ishape != lshape:
        raise LabelMismatchError(
            f"{names} do not overlay: spatial shape {ishape} vs {lshape}. The label map must be written on the "
            "image's voxel grid (medseg.io.save_label does this).",
            path=label_path,
        )
    if iaff is not None and laff is not None and not affines_close(iaff, laff, tol_mm):
        diff = float(np.abs(iaff - laff).max())
        raise LabelMismatchError(
            f"{names} do not overlay: their affines differ by up to {diff:.4g} mm (tolerance {tol_mm} mm); "
            f"orientation {orientation_code(iaff)} vs {orientation_code(laff)}. Resample the label onto the "
            "image grid or fix its header.",
            path=label_path,
        )


def grid_embedding(
    src_affine: np.ndarray,
    src_shape: Sequence[int],
    ref_affine: np.ndarray,
    *,
    tol_mm: float = 1e-2,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """How a 3D voxel grid lies on a reference grid voxel for voxel, or ``None`` when it does not.

    A label grid "overlays" the reference when each of its axes runs along one reference axis (either
    direction) with the same voxel size and its voxel centres sit on reference voxel centres: an axis
    permutation, flips and an integer offset, no interpolation. This covers a label written in another
    orientation (a NIfTI reoriented to RAS), a grid cropped to its content (3D Slicer's ``.seg.nrrd``)
    and a single DICOM SEG frame (a grid of one slice, whose third axis is free).

    Parameters
    ----------
    src_affine, ref_affine : 4x4 voxel -> RAS mm affines.
    src_shape : the source grid's spatial shape (3 axes); an axis of length 1 may point anywhere.
    tol_mm : largest misplacement allowed (mm), judged as :func:`affines_close` does (the linear part's
        error over :data:`TOLERANCE_GRID_VOXELS` voxels, the origin directly).

    Returns
    -------
    ``(axes, signs, offset)``: source axis ``j`` runs along reference axis ``axes[j]`` in direction
    ``signs[j]`` (+1 / -1); source voxel ``0`` of every axis is reference voxel ``offset``, so source voxel
    ``s`` is ``offset[axes[j]] + signs[j] * s[j]`` along reference axis ``axes[j]``.
    """
    src = np.asarray(src_affine, float)
    ref = np.asarray(ref_affine, float)
    ref_lin = ref[:3, :3]
    m = np.linalg.solve(ref_lin, src[:3, :3])  # source voxel steps in reference voxels
    t = np.linalg.solve(ref_lin, src[:3, 3] - ref[:3, 3])
    axes: list[int | None] = [None, None, None]
    signs = [1, 1, 1]
    for j in range(3):
        if int(src_shape[j]) <= 1:
            continue
        i = int(np.argmax(np.abs(m[:, j])))
        unit = np.zeros(3)
        unit[i] = np.sign(m[i, j])
        if np.abs(ref_lin @ (m[:, j] - unit)).max() * TOLERANCE_GRID_VOXELS > tol_mm or i in axes:
            return None
        axes[j], signs[j] = i, int(unit[i])
    free = [i for i in range(3) if i not in axes]
    for j in range(3):
        if axes[j] is None:
            axes[j] = free.pop(0)
    offset = np.round(t)
    if np.abs(ref_lin @ (t - offset)).max() > tol_mm:
        return None
    return tuple(int(a) for a in axes), tuple(signs), tuple(int(o) for o in offset)  # type: ignore[arg-type]
