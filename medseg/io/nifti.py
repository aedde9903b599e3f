"""NIfTI through nibabel: load with explicit channels, write images and label maps in the source geometry.

- The affine is the one nibabel chooses (``img.affine``: sform when its code > 0, else qform, else the
  fall-back); where both sform and qform are set and disagree by more than 1e-3 mm, a warning is logged
  and recorded in ``meta["problems"]``.
- ``scl_slope`` / ``scl_inter`` are applied (nibabel's ``dataobj`` scaling).
- NaN and infinite voxels: kept by default (counted in ``meta["nan_voxels"]`` / ``meta["inf_voxels"]``
  and warned about); pass ``nan_value=`` to replace both (e.g. ``nan_value=-1024`` for CT).
- 4D (X, Y, Z, T) becomes T channels, 5D (X, Y, Z, 1, C) C channels: never 3 spatial dimensions by accident.
- Refused (``FileFormatError``): a non-finite or singular affine, a zero-size dimension, complex voxels
  (medseg never drops an imaginary part silently). RGB24 / RGBA32 voxels become 3 channels (alpha
  dropped, reported).
- Outputs are written with scl_slope 1 / scl_inter 0, qform = sform = the affine (code 1, scanner).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from medseg.errors import FileFormatError, InputError, MissingFileError
from medseg.io.base import (
    ImageFormat,
    LoadOptions,
    label_array,
    nonfinite_voxels,
    reference_grid,
    source_path,
    volume_meta,
)
from medseg.io.geometry import affines_close, orientation_code
from medseg.io.safety import safe_reason
from medseg.io.series import SeriesInfo, unreadable
from medseg.utils import atomic_write

if TYPE_CHECKING:  # annotations only: nibabel and monai (torch) are imported when a file is read
    from monai.data import MetaTensor
    from nibabel.spatialimages import SpatialImage

__all__ = ["load_nifti", "save_nifti", "save_label", "nifti_info", "check_writable_affine", "FORMAT"]

log = logging.getLogger(__name__)

#: what save_nifti / save_label write (Analyze .hdr/.img pairs are read, never written)
_WRITE_SUFFIXES = (".nii", ".nii.gz")


def _open(path: Path) -> SpatialImage:
    import nibabel as nib  # lazy: keeps `import medseg.io` light

    if not path.exists():
        raise MissingFileError("file not found", path=str(path))
    if path.stat().st_size == 0:
        raise FileFormatError("empty file (0 bytes)", path=str(path))
    try:
        img = nib.load(str(path))
    except Exception as e:
        raise FileFormatError(f"not a readable NIfTI file ({safe_reason(e, 200)})", path=str(path)) from None
    if not isinstance(img, nib.spatialimages.SpatialImage):  # e.g. a CIFTI file named .nii
        raise FileFormatError(f"not a volume image ({type(img).__name__})", path=str(path))
    try:
        _check_header(img, path)
    except FileFormatError:
        raise
    except Exception as e:  # a header nibabel loads but cannot turn into a shape / affine / dtype
        raise FileFormatError(f"not a readable NIfTI header ({safe_reason(e)})", path=str(path)) from None
    return img


def _check_header(img: SpatialImage, path: Path) -> None:
    """Refuse what cannot be an image on a grid: zero-size dimensions, non-finite / singular affine, complex voxels."""
    shape = tuple(int(v) for v in img.shape)
    if not shape or any(v <= 0 for v in shape):
        raise FileFormatError(
            f"zero-size dimension in the image shape {shape}; the file holds no voxels", path=str(path)
        )
    affine = np.asarray(img.affine, float)
    if not np.all(np.isfinite(affine)):
        raise FileFormatError(
            "the voxel-to-world affine (sform/qform/pixdim) holds NaN or infinite values; fix the header",
            path=str(path),
        )
    lin = affine[:3, :3]
    if abs(float(np.linalg.det(lin))) <= 1e-12 * max(float(np.abs(lin).max()), 1e-300) ** 3:
        raise FileFormatError(
            "the voxel-to-world affine is singular (a zero voxel size or collinear axes): voxels have no "
            "position in space; fix pixdim / the sform",
            path=str(path),
        )
    dt = np.dtype(img.get_data_dtype())
    if dt.kind == "c":
        raise FileFormatError(
            f"complex-valued voxels ({dt}); medseg does not drop the imaginary part: save the magnitude "
            "(np.abs) or the real and imaginary parts as separate images",
            path=str(path),
        )


def _form_problem(img: Any) -> str | None:
    hdr = img.header
    try:
        s_aff, s_code = hdr.get_sform(coded=True)
        q_aff, q_code = hdr.get_qform(coded=True)
    except Exception:
        return None
    if s_code and q_code and s_aff is not None and q_aff is not None and not affines_close(s_aff, q_aff, 1e-3):
        return (
            f"sform (code {int(s_code)}) and qform (code {int(q_code)}) disagree by up to "
            f"{np.abs(s_aff - q_aff).max():.4g} mm; using the sform as nibabel does"
        )
    if not s_code and not q_code:
        return "neither sform nor qform is set: using pixdim only (no patient position)"
    return None


def nifti_info(path: str | Path) -> SeriesInfo:
    """A :class:`~medseg.io.series.SeriesInfo` for a NIfTI file (header only; unreadable: ``kind="unreadable"``)."""
    path = Path(path)
    try:
        img = _open(path)
    except (FileFormatError, MissingFileError) as e:
        return unreadable(str(path), str(e))
    shape = tuple(int(s) for s in img.shape)
    problems = []
    p = _form_problem(img)
    if p:
        problems.append(p)
    chans = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    return SeriesInfo(
        kind="nifti",
        path=str(path),
        description=path.name,
        n_files=1,
        n_slices=shape[2] if len(shape) > 2 else 1,
        shape=shape[:3],
        n_channels=chans,
        spacing=tuple(round(float(v), 6) for v in img.header.get_zooms()[:3]),
        orientation=orientation_code(img.affine),
        problems=problems,
        files=[str(path)],
    )


def load_nifti(path: str | Path, *, nan_value: float | None = None, dtype: DTypeLike = np.float32) -> MetaTensor:
    """Load a NIfTI file as a MetaTensor.

    Parameters
    ----------
    path : ``.nii`` / ``.nii.gz`` / ``.hdr``.
    nan_value : replace NaN and infinite voxels by this value; ``None`` keeps them (and warns).
    dtype : output dtype (scl_slope/scl_inter applied first).

    Returns
    -------
    MetaTensor (C, X, Y, Z): C = 1 for 3D, T for 4D (X, Y, Z, T), C for 5D (X, Y, Z, 1, C), 3 for
    RGB24; ``affine`` = nibabel's ``img.affine`` (voxel -> RAS mm). ``meta["nan_voxels"]``,
    ``meta["inf_voxels"]``: counts before any replacement.

    Raises
    ------
    MissingFileError, FileFormatError : naming the file (also: zero-size dimension, non-finite or
        singular affine, complex voxels).
    """
    import torch  # lazy: keeps `import medseg.io` light (torch, MONAI)
    from monai.data import MetaTensor

    path = Path(path)
    img = _open(path)
    problems = []
    p = _form_problem(img)
    if p:
        log.warning("%s: %s", path, p)
        problems.append(p)
    try:
        data = np.asanyarray(img.dataobj)  # applies scl_slope / scl_inter
    except MemoryError:
        raise FileFormatError("not enough memory to read the voxel data", path=str(path)) from None
    except Exception as e:
        raise FileFormatError(
            f"cannot read the voxel data ({safe_reason(e)}); truncated file?", path=str(path)
        ) from None
    if data.dtype.names:  # RGB24 / RGBA32: one (R, G, B[, A]) record per voxel
        data = _rgb_channels(data, path, problems)
    else:
        data = _channels_first(data, path, problems)
    data = np.asarray(data, dtype=dtype) if np.dtype(dtype).kind == "f" or data.dtype.kind != "f" else data
    nan, inf = nonfinite_voxels(data, nan_value, path, problems)
    affine = np.asarray(img.affine, float)
    meta = volume_meta(
        path,
        "nifti",
        affine,
        data.shape,
        problems,
        (nan, inf),
        sform_code=_form_code(img, "sform_code"),
        qform_code=_form_code(img, "qform_code"),
    )
    return MetaTensor(
        torch.from_numpy(np.ascontiguousarray(data)), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta
    )


def _channels_first(data: np.ndarray, path: Path, problems: list[str]) -> np.ndarray:
    """(X, Y[, Z[, T | 1, C]]) -> (C, X, Y, Z): 2D gets Z = 1, 4D T channels, 5D C channels (reported)."""
    if data.ndim < 2:
        raise FileFormatError(f"{data.ndim}-D data is not an image", path=str(path))
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 3:
        return data[None]
    if data.ndim == 4:
        data = np.moveaxis(data, 3, 0)
        problems.append(f"4D image: {data.shape[0]} volumes as channels")
        return data
    ndim = data.ndim
    data = np.moveaxis(data.reshape(*data.shape[:3], -1), 3, 0)
    problems.append(f"{ndim}D image: {data.shape[0]} channels")
    return data


def _rgb_channels(data: np.ndarray, path: Path, problems: list[str]) -> np.ndarray:
    """RGB24 / RGBA32 records ``(X, Y[, Z])`` -> ``(3, X, Y, Z)`` uint8 (alpha dropped, reported)."""
    names = [n for n in ("R", "G", "B") if n in (data.dtype.names or ())]
    if len(names) != 3 or data.ndim > 3:
        raise FileFormatError(
            f"unsupported record voxels {data.dtype} of shape {data.shape} (RGB24 / RGBA32 volumes are read)",
            path=str(path),
        )
    out = np.stack([data[n] for n in names], axis=0)
    if out.ndim == 3:
        out = out[..., None]
    problems.append("RGB voxels: 3 channels (R, G, B)" + (", alpha dropped" if "A" in (data.dtype.names or ()) else ""))
    return out


def _form_code(img: SpatialImage, key: str) -> int:
    """``sform_code`` / ``qform_code`` of a NIfTI header (0 for Analyze headers, which have none)."""
    header: Any = img.header  # a Nifti1Header for NIfTI files: a mapping of its fields
    return int(header[key]) if key in header else 0


def _as_array_affine(image: Any, affine: Any = None) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(image, "affine") and affine is None:
        affine = image.affine
    if hasattr(affine, "detach"):
        affine = affine.detach().cpu().numpy()
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if affine is None:
        raise InputError("save_nifti needs an affine: pass a MetaTensor or affine=")
    return arr, np.asarray(affine, float)


def _spatial_data(arr: np.ndarray) -> np.ndarray:
    """(C, X, Y, Z) -> (X, Y, Z) for C == 1, else (X, Y, Z, C)."""
    if arr.ndim == 4:
        return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    if arr.ndim == 3:  # 2D image (C, X, Y)
        return arr[0][..., None] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)[:, :, None, :]
    return arr


def _pick_dtype(arr: np.ndarray) -> np.dtype:
    """uint8 / int16 kept; integer-valued data in int16 range (HU) -> int16, larger ints -> int32, else float32."""
    if arr.dtype == np.uint8 or arr.dtype == np.int16:
        return arr.dtype
    if arr.dtype.kind in "iub" or (
        arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.array_equal(arr, np.round(arr))
    ):
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if -32768 <= lo and hi <= 32767:
            return np.dtype(np.int16)
        if arr.dtype.kind in "iu" and -(2**31) <= lo and hi < 2**31:
            return np.dtype(np.int32)
    return np.dtype(np.float32)


def check_writable_affine(affine: np.ndarray, path: str | Path) -> None:
    """An output affine must be finite and invertible (else ``InputError`` naming the output); checked first."""
    a = np.asarray(affine, float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)) or abs(float(np.linalg.det(a[:3, :3]))) <= 1e-12:
        sizes = [round(float(v), 6) for v in np.linalg.norm(a[:3, :3], axis=0)] if a.shape == (4, 4) else "?"
        raise InputError(
            f"cannot write an image whose voxel-to-world affine is not finite and invertible (voxel sizes {sizes})",
            path=str(path),
        )


def _write(data: np.ndarray, affine: np.ndarray, path: Path, header: Any = None) -> Path:
    import nibabel as nib  # lazy: keeps `import medseg.io` light

    if not path.name.lower().endswith(_WRITE_SUFFIXES):
        raise InputError("output must end in .nii or .nii.gz", path=str(path))
    check_writable_affine(affine, path)
    if header is not None:
        hdr = header.copy()
        hdr.set_data_dtype(data.dtype)
        # affine=None: nibabel keeps the copied header's qform/sform (and their codes) bit for bit
        img = nib.Nifti1Image(data, None, header=hdr)
    else:
        img = nib.Nifti1Image(data, affine)
        img.header.set_xyzt_units("mm")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    img.header.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_write(path) as tmp:
        nib.save(img, str(tmp))
    return path


def save_nifti(
    image: Any, path: str | Path, *, affine: np.ndarray | None = None, dtype: DTypeLike | None = None
) -> Path:
    """Write an image as NIfTI (atomic: temporary file, then rename).

    Parameters
    ----------
    image : MetaTensor (C, X, Y, Z) from :func:`medseg.io.load` (or an array with ``affine=``).
        C == 1 is written as a 3D volume, C > 1 as 4D (X, Y, Z, C).
    path : ``.nii`` or ``.nii.gz``; parent folders are created.
    affine : voxel -> RAS mm affine when ``image`` has none.
    dtype : stored dtype; default int16 for integer-valued data in range (e.g. HU), else float32.
        Values are stored unscaled: scl_slope 1, scl_inter 0.

    Returns
    -------
    The written path. qform = sform = affine (code 1, scanner).
    """
    arr, aff = _as_array_affine(image, affine)
    data = _spatial_data(arr)
    dt = np.dtype(dtype) if dtype is not None else _pick_dtype(data)
    if dt.kind in "iu" and data.dtype.kind == "f":
        data = np.round(data)
    return _write(
        np.asarray(data).astype(dt, copy=False), aff[:4, :4] if aff.shape == (4, 4) else _pad(aff), Path(path)
    )


def _pad(aff: np.ndarray) -> np.ndarray:
    b = np.eye(4)
    b[:2, :2] = aff[:2, :2]
    b[:2, 3] = aff[:2, 2]
    return b


def save_label(labels: Any, reference: Any, path: str | Path, segments: Mapping[int, str] | None = None) -> Path:
    """Write a label map (uint8) as NIfTI on the reference image's grid, keeping its geometry exactly.

    Parameters
    ----------
    labels : (X, Y, Z) or (1, X, Y, Z) integer array / tensor, values 0..255.
    reference : the image the labels belong to: a MetaTensor from :func:`medseg.io.load`, or a NIfTI
        path. When the reference came from a NIfTI file, its qform/sform (and codes) are copied from that
        file's header verbatim; otherwise qform = sform = the reference affine.
    path : ``.nii`` / ``.nii.gz`` output (atomic write).
    segments : ignored (NIfTI stores no segment names); accepted so that every label writer is called alike.

    Raises
    ------
    LabelMismatchError : the spatial shape differs from the reference, or values are not integers in 0..255.
    """
    header = None
    ref_path = None
    if isinstance(reference, (str, Path)):
        ref_path = Path(reference)
        ref_img = _open(ref_path)
        ref_shape = tuple(int(v) for v in ref_img.shape[:3])
        ref_aff = np.asarray(ref_img.affine, float)
        header = ref_img.header
    else:
        ref_shape, ref_aff, meta = reference_grid(reference)
        if meta.get("format") == "nifti" and meta.get("filename_or_obj"):
            src = Path(str(meta["filename_or_obj"]))
            if src.exists():
                src_img = _open(src)
                if affines_close(src_img.affine, ref_aff, 1e-6) and tuple(src_img.shape[:3]) == ref_shape[:3]:
                    header = src_img.header
            ref_path = src
    data = label_array(labels, ref_shape, path, str(ref_path or ""))
    return _write(data, ref_aff, Path(path), header=header)


def _reader(source: Path | SeriesInfo, options: LoadOptions) -> MetaTensor:
    return load_nifti(source_path(source), nan_value=options.nan_value, dtype=options.dtype)


#: the NIfTI entry of :mod:`medseg.io.registry`
FORMAT = ImageFormat(
    name="nifti",
    suffixes=(".nii.gz", ".nii", ".hdr"),
    kind="volume",
    description="NIfTI-1/2 (and Analyze .hdr/.img pairs)",
    read=_reader,
    describe=nifti_info,
    write_label=save_label,
    write_suffixes=_WRITE_SUFFIXES,
)
