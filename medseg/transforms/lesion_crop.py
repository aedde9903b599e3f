"""Lesion crops: a cube of fixed physical size around a lesion, resampled to a fixed grid.

What a per-lesion 3D classifier sees, used alike by training (:mod:`medseg.tasks.classification`),
the lesion pipeline and Grad-CAM:

- :func:`lesion_crop`: ``size_mm`` wide, ``grid`` voxels a side, axes aligned with RAS (axis 0 = R,
  1 = A, 2 = S, so ``crop[..., k]`` is an axial plane whatever the scan's orientation), the image
  windowed to 0..255 uint8 and optionally the lesion mask as a second channel (0 / 255);
- :func:`crop_grid_affine`: the crop's voxel -> RAS affine (to put a crop-space map back in the scan).

The crop samples the scan at world points through its affine with trilinear interpolation
(:func:`scipy.ndimage.map_coordinates`): one resampling step for any spacing, orientation or
obliquity, which MONAI's ``Spacing`` + ``SpatialCrop`` would do in two (resample the whole volume,
then crop). Points outside the scan take the nearest edge value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from medseg.errors import InputError

__all__ = ["lesion_crop", "crop_grid_affine", "window_uint8", "DEFAULT_CT_WINDOW"]

#: the default intensity window of a CT lesion crop (HU): lung to soft tissue and calcium
DEFAULT_CT_WINDOW: tuple[float, float] = (-1000.0, 400.0)


def crop_grid_affine(center_ras: Sequence[float], size_mm: float, grid: int) -> np.ndarray:
    """4x4 voxel -> RAS mm affine of a ``grid``^3 crop ``size_mm`` wide centred on ``center_ras``."""
    step = float(size_mm) / int(grid)
    a = np.diag([step, step, step, 1.0])
    a[:3, 3] = np.asarray(center_ras, float) - step * (int(grid) - 1) / 2.0
    return a


def window_uint8(values: np.ndarray, window: Sequence[float] | None) -> np.ndarray:
    """Intensities -> uint8: linear from ``window = (low, high)`` to 0..255 (clipped); None: the
    0.5 / 99.5 percentiles of ``values`` (MR and other non-quantitative scans)."""
    v = np.asarray(values, dtype=np.float32)
    if window is None:
        lo, hi = np.percentile(v, [0.5, 99.5]) if v.size else (0.0, 1.0)
    else:
        lo, hi = float(window[0]), float(window[1])
    scale = 255.0 / max(float(hi) - float(lo), 1e-6)
    return np.clip(np.round((v - lo) * scale), 0, 255).astype(np.uint8)


def lesion_crop(
    image: np.ndarray,
    affine: np.ndarray,
    center_ras: Sequence[float],
    *,
    size_mm: float = 40.0,
    grid: int = 32,
    mask: np.ndarray | None = None,
    window: Sequence[float] | None = DEFAULT_CT_WINDOW,
) -> np.ndarray:
    """A ``(C, grid, grid, grid)`` uint8 crop around a lesion (C = 1, or 2 with ``mask``).

    Parameters
    ----------
    image : ``(X, Y, Z)`` scan intensities (HU for CT); affine : its 4x4 voxel -> RAS mm.
    center_ras : the crop's centre (RAS mm), e.g. a lesion centroid.
    size_mm : side of the cube (mm); grid : voxels per side (the crop's spacing is ``size_mm / grid``).
    mask : ``(X, Y, Z)`` boolean lesion mask on the scan's grid, sampled as the second channel
        (linear interpolation, then >= 0.5).
    window : intensity window (low, high) mapped to 0..255, or None (per-crop percentiles).

    Returns
    -------
    uint8 array ``(C, grid, grid, grid)``, axes R, A, S (increasing).

    Raises
    ------
    InputError : not a 3D image, a mask of another shape, or a non-positive size.
    """
    img = np.asarray(image)
    if img.ndim != 3:
        raise InputError(f"a lesion crop needs a 3D image, got shape {img.shape}")
    if size_mm <= 0 or grid < 4:
        raise InputError(f"crop size must be > 0 mm and grid >= 4 voxels, got {size_mm} mm, {grid}")
    crop_aff = crop_grid_affine(center_ras, size_mm, grid)
    # crop voxel -> scan voxel: inv(scan affine) @ crop affine, applied to every crop index
    to_scan = np.linalg.solve(np.asarray(affine, float), crop_aff)
    idx = np.indices((grid, grid, grid), dtype=np.float64).reshape(3, -1)
    coords = to_scan[:3, :3] @ idx + to_scan[:3, 3:4]
    vals = ndi.map_coordinates(img.astype(np.float32), coords, order=1, mode="nearest")
    chans = [window_uint8(vals, window).reshape(grid, grid, grid)]
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != img.shape:
            raise InputError(f"lesion mask shape {m.shape} differs from the image's {img.shape}")
        mv = ndi.map_coordinates(m.astype(np.float32), coords, order=1, mode="constant", cval=0.0)
        chans.append(np.where(mv.reshape(grid, grid, grid) >= 0.5, 255, 0).astype(np.uint8))
    return np.stack(chans)
