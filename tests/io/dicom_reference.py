"""Independent references for the DICOM conformance test: pixels from pydicom, geometry from SimpleITK.

Nothing here uses medseg's DICOM code: the pixel reference is pydicom's decoded ``pixel_array``
(palette colour through ``apply_color_lut``, a Modality LUT through ``apply_modality_lut``, else
the rescale slope / intercept of each frame, from the functional groups of enhanced multi-frame
files); frame positions come from the headers (per-frame PlanePositionSequence, or
ImagePositionPatient + GridFrameOffsetVector); geometry is SimpleITK's (GDCM) where it reads the file.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _item(ds: Any, frame: int, name: str) -> Any:
    """Functional group ``name`` of ``frame`` (per-frame first, then shared), or None."""
    for seq, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(seq)
        if groups is not None and idx < len(groups) and groups[idx].get(name):
            return groups[idx].get(name)[0]
    return None


def _floats(v: Any) -> np.ndarray | None:
    try:
        return None if v is None else np.array([float(x) for x in v])
    except (TypeError, ValueError):
        return None


def reference(path: str | Path) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """``(frames (F, rows, cols, C) float64, [LPS position of each frame or None])`` as pydicom decodes them."""
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(str(path), force=True)
        try:
            int(ds.get("NumberOfFrames", 1) or 1)
        except ValueError:  # e.g. '1A' (badVR.dcm): pydicom's own warning says "assuming 1 frame"
            ds.NumberOfFrames = 1
        if "TransferSyntaxUID" not in ds.file_meta:
            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = (
                pydicom.uid.ImplicitVRLittleEndian
                if implicit
                else pydicom.uid.ExplicitVRLittleEndian
                if little
                else pydicom.uid.ExplicitVRBigEndian
            )
        arr = ds.pixel_array
        nframes = int(ds.get("NumberOfFrames", 1) or 1)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        if nframes == 1 and arr.ndim == (3 if spp == 1 else 4):  # more frames in the data than declared
            nframes = arr.shape[0]
        if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
            rescale = False
        elif ds.get("ModalityLUTSequence"):
            arr = apply_modality_lut(arr, ds)
            rescale = False
        else:
            rescale = True
    frames = np.asarray(arr, dtype=np.float64)
    if nframes == 1:
        frames = frames[None]
    if frames.ndim == 3:
        frames = frames[..., None]
    positions: list[np.ndarray | None] = []
    iop = _floats(ds.get("ImageOrientationPatient"))
    ipp = _floats(ds.get("ImagePositionPatient"))
    gfov = _floats(ds.get("GridFrameOffsetVector"))
    enhanced = "PerFrameFunctionalGroupsSequence" in ds
    for f in range(frames.shape[0]):
        slope, inter = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        if enhanced:
            pv = _item(ds, f, "PixelValueTransformationSequence")
            if pv is not None:
                slope, inter = float(pv.get("RescaleSlope", 1)), float(pv.get("RescaleIntercept", 0))
            pos = _item(ds, f, "PlanePositionSequence")
            positions.append(_floats(pos.get("ImagePositionPatient")) if pos is not None else None)
        elif ipp is not None and nframes > 1 and gfov is not None and iop is not None and gfov.size == nframes:
            positions.append(ipp + np.cross(iop[:3], iop[3:]) * gfov[f])
        else:
            positions.append(ipp if nframes == 1 else None)
        if rescale:
            frames[f] = frames[f] * slope + inter
    return frames, positions


def our_frames(img: Any, positions: list[np.ndarray | None]) -> np.ndarray:
    """medseg's ``(C, X, Y, Z)`` volume as ``(F, rows, cols, C)`` frames in the file's frame order.

    Frames are matched by position (medseg sorts slices along the normal) when every frame has
    one, else taken in stored order.
    """
    vol = img.numpy() if hasattr(img, "numpy") else np.asarray(img)
    frames = np.transpose(vol, (3, 2, 1, 0)).astype(np.float64)  # (Z, Y, X, C)
    if len(positions) > 1 and all(p is not None for p in positions):
        aff = np.asarray(img.affine, float)
        order = []
        for p in positions:
            ijk = np.linalg.solve(aff[:3, :3], (LPS_TO_RAS @ np.append(p, 1.0))[:3] - aff[:3, 3])
            order.append(int(round(ijk[2])))
        return frames[order]
    return frames


def grid_corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates (LPS mm) of the 2^3 corner voxel centres of a RAS ``affine`` grid of ``shape`` (X, Y, Z)."""
    idx = np.array(list(itertools.product(*[(0, n - 1) for n in shape[:3]])), float)
    ras = idx @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine, float)[:3, 3]
    return ras * np.array([-1.0, -1.0, 1.0])


def sitk_corners(path: str | Path) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """Corner voxel centres (LPS mm) and size (X, Y, Z) of SimpleITK's image of the file, None if it cannot read it."""
    import SimpleITK as sitk

    try:
        im = sitk.ReadImage(str(path))
    except RuntimeError:
        return None
    size = tuple(int(v) for v in im.GetSize()) + (1,) * (3 - im.GetDimension())
    idx = list(itertools.product(*[(0, n - 1) for n in size[:3]]))
    pts = np.array(
        [im.TransformContinuousIndexToPhysicalPoint([float(v) for v in i[: im.GetDimension()]]) for i in idx]
    )
    if pts.shape[1] == 2:
        pts = np.hstack([pts, np.zeros((len(pts), 1))])
    return pts, size


def same_corners(a: np.ndarray, b: np.ndarray, tol: float = 1e-4) -> bool:
    """True when every point of ``a`` has a point of ``b`` within ``tol`` mm and vice versa (order ignored)."""
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    return bool(d.min(axis=1).max() <= tol and d.min(axis=0).max() <= tol)
