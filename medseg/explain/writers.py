"""Writers of class activation maps: NIfTI for 3D maps, heat-map PNG overlays for 2D images and 3D slices.

Maps come from :mod:`medseg.explain.cam` (``(1, *S)`` MetaTensors aligned with their image); files
are written atomically (temporary name, then rename).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from medseg.errors import InputError
from medseg.review.overlay import heatmap_2d, save_png
from medseg.utils import atomic_write

__all__ = ["save_cam_nifti", "save_cam_png", "save_cam_slices_png", "select_slices"]


def save_cam_nifti(cam: torch.Tensor, path: str | Path) -> Path:
    """Write a 3D map ``(1, X, Y, Z)`` (MetaTensor: its affine is used) as NIfTI (float32), atomically."""
    path = Path(path)
    arr = np.asarray(torch.as_tensor(cam).detach().cpu().float().numpy())
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    affine = np.asarray(cam.affine, dtype=np.float64) if isinstance(cam, MetaTensor) else np.eye(4)
    if affine.ndim == 3:
        affine = affine[0]
    img = nib.Nifti1Image(arr.astype(np.float32), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix or ".nii.gz"
    with atomic_write(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
    return path


def _to_display(image2d: np.ndarray) -> np.ndarray:
    img = np.asarray(image2d, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    return img


def save_cam_png(
    image: np.ndarray | torch.Tensor, cam: np.ndarray | torch.Tensor, path: str | Path, alpha: float = 0.5
) -> Path:
    """Heat-map overlay PNG of a 2D map over its image.

    Parameters
    ----------
    image : ``(H, W)`` gray, ``(C, H, W)`` with C in {1, 3}, or ``(H, W, 3)``; any intensity range.
    cam : ``(H, W)`` or ``(1, H, W)`` map (normalised inside).
    path : output PNG (written atomically).
    """
    img = _to_display(torch.as_tensor(image).detach().cpu().numpy() if torch.is_tensor(image) else image)
    c = np.asarray(torch.as_tensor(cam).detach().cpu().numpy() if torch.is_tensor(cam) else cam, dtype=np.float32)
    c = np.squeeze(c)
    if c.shape != img.shape[:2]:
        raise InputError(f"map shape {c.shape} does not match image shape {img.shape[:2]}", path)
    return Path(save_png(heatmap_2d(img, c, alpha=alpha), Path(path)))


def select_slices(cam: torch.Tensor | np.ndarray, n: int = 3, axis: int = -1) -> list[int]:
    """Indices of the ``n`` slices (along ``axis`` of a ``([1,] X, Y, Z)`` map) with the largest map mass."""
    c = np.squeeze(np.asarray(torch.as_tensor(cam).detach().cpu().numpy()))
    if c.ndim != 3:
        raise InputError(f"expected a 3D map, got shape {c.shape}")
    ax = axis % 3
    mass = c.sum(axis=tuple(i for i in range(3) if i != ax))
    order = np.argsort(-mass, kind="stable")[: max(1, n)]
    return sorted(int(i) for i in order)


def save_cam_slices_png(
    image: torch.Tensor | np.ndarray,
    cam: torch.Tensor | np.ndarray,
    out_dir: str | Path,
    stem: str,
    n: int = 3,
    indices: Sequence[int] | None = None,
) -> list[Path]:
    """Heat-map PNGs of selected axial slices of a 3D map.

    ``image`` ``([C,] X, Y, Z)`` and ``cam`` ``([1,] X, Y, Z)`` in medseg's array convention ([i, j, k]
    = LPS x, y, z); each slice ``k`` is shown as rows = j (anterior at the top), columns = i
    (patient's right on the left: radiological view). Slices: ``indices`` or the ``n`` with the
    largest map mass. Files: ``<out_dir>/<stem>_z<k>.png``.
    """
    img = np.asarray(torch.as_tensor(image).detach().cpu().float().numpy())
    c = np.squeeze(np.asarray(torch.as_tensor(cam).detach().cpu().float().numpy()))
    if img.ndim == 4:
        img = img[0]
    if img.shape != c.shape:
        raise InputError(f"map shape {c.shape} does not match image shape {img.shape}")
    idx = list(indices) if indices is not None else select_slices(c, n)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in idx:
        paths.append(save_cam_png(img[:, :, k].T, c[:, :, k].T, out_dir / f"{stem}_z{k:03d}.png"))
    return paths
