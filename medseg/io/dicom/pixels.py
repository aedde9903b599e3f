"""DICOM pixel data: uncompressed frames read straight from their file offsets, others decoded by pydicom.

The volume is filled slice by slice with the rescale slope/intercept of each slice (frame), then
gantry tilt and uneven spacing are corrected when the plan asks for it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from medseg.errors import FileFormatError, MissingDependencyError
from medseg.io.dicom.header import Header
from medseg.io.dicom.plan import Plan
from medseg.io.dicom.slices import Slice, as_number
from medseg.io.dicom.source import parallel_map, uid_for_message

__all__ = ["build_volume", "read_frame", "PixelCache", "DECODER_HINT"]

#: which package decodes which transfer syntax (for the error message when a decoder is missing)
DECODER_HINT = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg (JPEG-LS)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg (JPEG-LS)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle (RLE)",
}


def _native_dtype(ds: Any, little: bool) -> np.dtype | None:
    """The dtype of uncompressed integer pixel data (None for float pixel data or unusual bit depths)."""
    bits = int(as_number(ds.get("BitsAllocated"), 0))
    if bits not in (8, 16, 32) or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return None
    signed = int(as_number(ds.get("PixelRepresentation", 0), 0)) == 1
    return np.dtype(("<" if little else ">") + ("i" if signed else "u") + str(bits // 8))


def _fix_bits(arr: np.ndarray, ds: Any) -> np.ndarray:
    """Mask (unsigned) or sign-extend (signed) values stored in fewer bits than allocated."""
    bits = arr.dtype.itemsize * 8
    stored = int(as_number(ds.get("BitsStored", bits), bits))
    if 0 < stored < bits:
        if arr.dtype.kind == "u":
            arr = arr & np.array((1 << stored) - 1, arr.dtype)
        else:
            shift = bits - stored
            arr = (arr << shift) >> shift
    return arr


def _decode_error(h: Header, e: Exception) -> Exception:
    """A MissingDependencyError when no decoder is installed for the transfer syntax, else FileFormatError."""
    ts = str(getattr(getattr(h.ds, "file_meta", None), "TransferSyntaxUID", ""))
    msg = str(e)
    low = msg.lower()
    if "exceptions were raised by all available plugins" in low:
        detail = " | ".join(line.strip() for line in msg.splitlines()[1:3])
        return FileFormatError(
            f"the installed decoders could not decode the pixel data (transfer syntax {uid_for_message(ts)}): "
            f"{detail[:300]}",
            path=str(h.src),
        )
    if isinstance(e, ImportError) or ("plugin" in low or "decoder" in low or "install" in low):
        pkg = DECODER_HINT.get(ts, "pylibjpeg with the matching plugin")
        return MissingDependencyError(
            f"no decoder for transfer syntax {uid_for_message(ts)} is installed; install it with: pip install {pkg}",
            path=str(h.src),
        )
    return FileFormatError(
        f"cannot decode pixel data ({type(e).__name__}: {msg[:200]}); the file may be damaged", path=str(h.src)
    )


class PixelCache:
    """Decoded pixel arrays of non-native (compressed / unusual) files, one decode per file."""

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    def get(self, h: Header) -> np.ndarray:
        """All frames of ``h``'s file as pydicom decodes them (``ds.pixel_array``)."""
        key = str(h.src)
        if key not in self._cache:
            import pydicom  # lazy: keeps `import medseg.io` light

            try:
                ds = pydicom.dcmread(io.BytesIO(h.src.read_bytes()), force=True)
                arr = ds.pixel_array
            except Exception as e:
                raise _decode_error(h, e) from None
            self._cache[key] = arr
        return self._cache[key]


def read_frame(sl: Slice, cache: PixelCache, spp: int) -> np.ndarray:
    """``(rows, cols[, spp])`` raw stored values of one slice / frame."""
    h = sl.hdr
    ds = h.ds
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(as_number(ds.get("NumberOfFrames", 1), 1) or 1)
    dt = _native_dtype(ds, h.little_endian) if h.native else None
    planar = int(as_number(ds.get("PlanarConfiguration", 0), 0))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if h.pixel_offset is not None and dt is not None and h.src.member is None and (spp == 1 or (photometric == "RGB")):
        per = rows * cols * spp
        off = h.pixel_offset + (sl.frame or 0) * per * dt.itemsize
        arr = np.fromfile(h.src.path, dtype=dt, count=per, offset=off)
        if arr.size != per:
            raise FileFormatError(f"truncated file: pixel data ends early (frame {sl.frame or 0})", path=str(h.src))
        if spp == 1:
            arr = arr.reshape(rows, cols)
        elif planar == 1:
            arr = np.moveaxis(arr.reshape(spp, rows, cols), 0, -1)
        else:
            arr = arr.reshape(rows, cols, spp)
        return _fix_bits(arr.astype(dt.newbyteorder("="), copy=False), ds)
    arr = cache.get(h)
    if frames > 1:
        arr = arr[sl.frame or 0]
    return arr


def build_volume(plan: Plan, where: str, dtype: DTypeLike = np.float32) -> np.ndarray:
    """``(C, X, Y, Z)`` array of the plan with rescale applied per slice (a transposed view, no copy).

    ``where`` names the series in messages. Gantry tilt (``plan.deshear``) and uneven spacing
    (``plan.resample_z``) are corrected when the plan carries them.
    """
    cache = PixelCache()
    nx, ny, _ = plan.shape
    nvol = len(plan.volumes)
    nz = len(plan.volumes[0])
    spp = plan.channels // nvol
    out = np.empty((nvol * spp, nz, ny, nx), dtype=dtype)  # filled as (C, Z, Y, X), returned transposed

    def work(args: tuple[int, int, Slice]) -> None:
        v, k, sl = args
        raw = read_frame(sl, cache, spp)
        if raw.shape[:2] != (ny, nx):
            raise FileFormatError(f"pixel data is {raw.shape[:2]}, header says {(ny, nx)}", path=str(sl.hdr.src))
        _rescale_into(out, v, k, raw, sl, spp)
        if plan.deshear is not None:
            _deshear(out, v, k, plan.deshear[k], spp)

    jobs = [(v, k, sl) for v, vol in enumerate(plan.volumes) for k, sl in enumerate(vol)]
    parallel_map(work, jobs)
    vol = out.transpose(0, 3, 2, 1)  # (C, X, Y, Z) view
    if plan.resample_z is not None:
        vol = _resample_along_normal(vol, plan, dtype)
    return vol


def _rescale_into(out: np.ndarray, v: int, k: int, raw: np.ndarray, sl: Slice, spp: int) -> None:
    """``out[channels of volume v, k] = raw * slope + intercept`` (without temporaries for one channel)."""
    if spp == 1:
        dst = out[v, k]
        if sl.slope != 1:
            np.multiply(raw, sl.slope, out=dst, casting="unsafe")
        else:
            np.copyto(dst, raw, casting="unsafe")
        if sl.intercept != 0:
            dst += sl.intercept
    else:
        for ch in range(spp):
            out[v * spp + ch, k] = raw[..., ch] * sl.slope + sl.intercept


def _deshear(out: np.ndarray, v: int, k: int, shift: tuple[float, float], spp: int) -> None:
    """Shift slice ``k`` in plane by ``shift = (di, dj)`` pixels (gantry tilt), filling with its minimum."""
    from scipy import ndimage  # lazy: keeps `import medseg.io` light

    si, sj = shift
    for ch in range(spp):
        idx = v * spp + ch
        fill = float(out[idx, k].min())
        out[idx, k] = ndimage.shift(out[idx, k], (sj, si), order=1, mode="constant", cval=fill)


def _resample_along_normal(vol: np.ndarray, plan: Plan, dtype: DTypeLike) -> np.ndarray:
    """Linear interpolation of ``(C, X, Y, Z)`` from the slice positions onto ``plan.resample_z``."""
    assert plan.resample_z is not None
    nz = vol.shape[-1]
    s_arr = np.array([s.s for s in plan.volumes[0]])
    k1 = np.clip(np.searchsorted(s_arr, plan.resample_z, side="right"), 1, nz - 1)
    k0 = k1 - 1
    w = ((plan.resample_z - s_arr[k0]) / np.maximum(s_arr[k1] - s_arr[k0], 1e-9)).clip(0, 1).astype(dtype)
    return vol[..., k0] * (1 - w) + vol[..., k1] * w
