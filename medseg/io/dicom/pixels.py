"""DICOM pixel data: uncompressed frames read straight from their file offsets, others decoded by pydicom.

The volume is filled slice by slice with the rescale slope/intercept of each slice (frame), then
gantry tilt and uneven spacing are corrected when the plan asks for it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from medseg.errors import FileFormatError, InputError, MedsegError, MissingDependencyError
from medseg.io.dicom.header import Header
from medseg.io.dicom.plan import Plan
from medseg.io.dicom.slices import Slice, as_number, has_modality_lut, is_palette
from medseg.io.dicom.source import parallel_map, uid_for_message
from medseg.io.safety import PASS_THROUGH, reading_file, safe_reason

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
        if not arr.flags.writeable or not arr.flags.owndata:
            arr = arr.copy()  # in place below: never into a caller's (or the decoder cache's) array
        if arr.dtype.kind == "u":
            np.bitwise_and(arr, np.array((1 << stored) - 1, arr.dtype), out=arr)
        else:
            shift = bits - stored
            np.left_shift(arr, shift, out=arr)
            np.right_shift(arr, shift, out=arr)
    return arr


def _decode_error(h: Header, e: BaseException) -> MedsegError:
    """MissingDependencyError when no decoder is installed for the transfer syntax, else FileFormatError.

    Decoder messages are shown through :func:`medseg.io.safety.safe_reason` (quoted values removed).
    """
    ts = str(getattr(getattr(h.ds, "file_meta", None), "TransferSyntaxUID", ""))
    name = str(h.src)
    if isinstance(e, MemoryError):
        return InputError(
            "not enough memory to decode the pixel data (Rows x Columns x frames too large for this machine, "
            "or a damaged header)",
            path=name,
        )
    msg = str(e) if isinstance(e, Exception) else ""
    low = msg.lower()
    if "exceptions were raised by all available plugins" in low:
        detail = " | ".join(safe_reason(ValueError(line.strip()), 140)[12:] for line in msg.splitlines()[1:3])
        return FileFormatError(
            f"the installed decoders could not decode the pixel data (transfer syntax {uid_for_message(ts)}): {detail}",
            path=name,
        )
    if isinstance(e, ImportError) or (
        isinstance(e, (RuntimeError, NotImplementedError)) and ("plugin" in low or "install" in low)
    ):
        pkg = DECODER_HINT.get(ts, "pylibjpeg with the matching plugin")
        return MissingDependencyError(
            f"no decoder for transfer syntax {uid_for_message(ts)} is installed; install it with: pip install {pkg}",
            path=name,
        )
    return FileFormatError(f"cannot decode pixel data ({safe_reason(e)}); the file may be damaged", path=name)


def _expand_palette(ds: Any, arr: np.ndarray, name: str) -> np.ndarray:
    """PALETTE COLOR indices -> RGB through the file's lookup tables (pydicom's ``apply_color_lut``)."""
    from pydicom.pixels import apply_color_lut  # lazy: keeps `import medseg.io` light

    try:
        return apply_color_lut(arr, ds)
    except Exception as e:
        raise FileFormatError(
            f"PALETTE COLOR image whose colour lookup tables cannot be applied ({safe_reason(e)})", path=name
        ) from None


def _modality_lut(ds: Any, arr: np.ndarray, name: str) -> np.ndarray:
    """Stored values -> modality values through the Modality LUT Sequence (pydicom's ``apply_modality_lut``)."""
    from pydicom.pixels import apply_modality_lut  # lazy: keeps `import medseg.io` light

    try:
        return apply_modality_lut(arr, ds)
    except Exception as e:
        raise FileFormatError(f"Modality LUT Sequence cannot be applied ({safe_reason(e)})", path=name) from None


class PixelCache:
    """Decoded pixel arrays of non-native (compressed / unusual) files, one decode per file.

    PALETTE COLOR images come back as RGB ``(..., 3)`` (their lookup tables applied), images with a
    Modality LUT Sequence as modality values (the LUT applied; their slope / intercept are then 1 / 0).
    """

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    def get(self, h: Header) -> np.ndarray:
        """All frames of ``h``'s file as pydicom decodes them (``ds.pixel_array``, palettes expanded).

        Any failure of a decoder, ``BaseException`` subclasses such as pyo3's ``PanicException``
        included, is a :class:`FileFormatError` naming the file.
        """
        key = str(h.src)
        if key not in self._cache:
            import pydicom  # lazy: keeps `import medseg.io` light

            try:
                with reading_file(key):
                    ds = pydicom.dcmread(io.BytesIO(h.src.read_bytes()), force=True)
                    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                        raise FileFormatError(
                            "no Pixel Data element: the file ends before its pixel data (truncated?)", path=key
                        )
                    if "TransferSyntaxUID" not in ds.file_meta and h.transfer_syntax:
                        ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(h.transfer_syntax)  # a file without file meta
                    pixels = ds.pixel_array
                    if is_palette(ds):
                        pixels = _expand_palette(ds, pixels, key)
                    elif has_modality_lut(ds):
                        pixels = _modality_lut(ds, pixels, key)
            except MedsegError:
                raise
            except PASS_THROUGH:
                raise
            except BaseException as e:
                raise _decode_error(h, e) from None
            self._cache[key] = pixels
        return self._cache[key]


def read_frame(sl: Slice, cache: PixelCache, spp: int) -> np.ndarray:
    """``(rows, cols[, spp])`` raw stored values of one slice / frame (RGB for palette colour)."""
    h = sl.hdr
    ds = h.values
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = h.frames
    dt = _native_dtype(ds, h.little_endian) if h.native else None
    planar = int(as_number(ds.get("PlanarConfiguration", 0), 0))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    # the fast path: uncompressed gray / RGB read straight from the file. Big-endian 8-bit data go
    # through pydicom (OW words are byte-swapped there), palette colour needs its lookup tables.
    fast = (
        h.pixel_offset is not None
        and dt is not None
        and h.src.member is None
        and ((spp == 1 and not is_palette(ds) and not has_modality_lut(ds)) or photometric == "RGB")
        and (h.little_endian or dt.itemsize > 1)
    )
    if fast:
        assert dt is not None and h.pixel_offset is not None
        per = rows * cols * spp
        off = h.pixel_offset + (sl.frame or 0) * per * dt.itemsize
        arr = np.fromfile(h.src.path, dtype=dt, count=per, offset=off)
        if arr.size != per:
            raise FileFormatError(f"truncated file: pixel data ends early (frame {sl.frame or 0})", path=str(h.src))
        arr = _fix_bits(arr.astype(dt.newbyteorder("="), copy=False), ds)  # element-wise: before the reshape
        if spp == 1:
            return arr.reshape(rows, cols)
        if planar == 1:
            return np.moveaxis(arr.reshape(spp, rows, cols), 0, -1)
        return arr.reshape(rows, cols, spp)
    arr = cache.get(h)
    if frames > 1:
        if arr.ndim < 3 or arr.shape[0] < frames:
            raise FileFormatError(f"decoded {arr.shape[0]} frames, the header says {frames}", path=str(h.src))
        arr = arr[sl.frame or 0]
    elif arr.ndim == (3 if spp == 1 else 4) and arr.shape[1:3] == (rows, cols):
        arr = arr[0]  # more frames in the data than NumberOfFrames = 1 says (pydicom returns them all)
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
        if raw.shape[:2] != (ny, nx) or (raw.shape[2] if raw.ndim == 3 else 1) != spp:
            raise FileFormatError(
                f"decoded pixel data are {raw.shape}, the header says {(ny, nx, spp)}", path=str(sl.hdr.src)
            )
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
        if sl.slope == 1 and sl.intercept != 0 and dst.dtype.kind == "f":
            # one pass instead of a copy and an add, with the same operations: the stored values cast to
            # the output type, then the intercept (rounded to that type) added in that type
            np.add(raw, dst.dtype.type(sl.intercept), out=dst, dtype=dst.dtype, casting="unsafe")
            return
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
