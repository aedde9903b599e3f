"""2D images (microscopy, photos): PNG/JPEG/BMP and TIFF, decoded by :mod:`medseg.io.raster`.

Array convention (same as MONAI's ``LoadImage``): channel-first ``(C, X, Y)`` where X runs along a row
(image width, columns) and Y down the image (height, rows): ``image[c, x, y] == pixels[y, x, c]``.
The layout comes from the file's description (TIFF axes / photometric, Pillow mode), see the table in
``docs/io.md``: gray gives 1 channel, RGB 3 (palette and CMYK converted), an alpha channel is dropped
and reported, other channel counts are kept (a 2-channel fluorescence TIFF gives C = 2), 16-bit and
float data keep their values (``meta["bit_depth"]``). A multi-page TIFF gives ``(C, X, Y, Z)``.
Pixel size: TIFF X/YResolution (with ResolutionUnit cm or inch) when present, else 1.0 (reported).
Every read checks the pixel limit (:data:`~medseg.io.raster.MAX_PIXELS`) before decoding.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import DTypeLike

from medseg.errors import FileFormatError, InputError
from medseg.io.base import ImageFormat, LoadOptions, source_path
from medseg.io.raster import MAX_PIXELS, TIFF_SUFFIXES, Raster, max_pixels_limit, raster_shape, read_raster
from medseg.io.safety import PASS_THROUGH, safe_reason
from medseg.io.series import SeriesInfo, unreadable

if TYPE_CHECKING:  # annotations only: monai (torch) is imported when an image is loaded
    from monai.data import MetaTensor

__all__ = [
    "load_image2d",
    "image2d_info",
    "read_image_array",
    "read_image_uint8",
    "to_uint8",
    "to_gray_or_rgb",
    "as_rgb",
    "MAX_PIXELS",
    "FORMAT",
]

log = logging.getLogger(__name__)


def read_image_array(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """The pixels of a PNG/JPEG/BMP/TIFF file: ``(H, W)`` or ``(H, W, C)`` (``(Z, H, W[, C])`` for stacks).

    Native dtype and values; channels last whatever the file's planar configuration; palette and
    CMYK images as RGB; an alpha channel is kept (last). For code that works on plain display-ordered
    arrays (detection, 2D classification, instance masks); use :func:`load_image2d` for a MetaTensor
    with geometry.

    Parameters
    ----------
    path : image file.
    max_pixels : largest ``H x W x pages`` read (default :data:`MAX_PIXELS` or ``$MEDSEG_MAX_PIXELS``;
        0: no limit). Checked from the header, before decoding.

    Raises
    ------
    MissingFileError, FileFormatError (empty, truncated or unreadable file), InputError (over the
    pixel limit), naming the path.
    """
    return _squeeze(read_raster(path, max_pixels).pixels)


def _squeeze(pixels: np.ndarray) -> np.ndarray:
    """``(Z, H, W, C)`` -> ``(H, W)``, ``(H, W, C)``, ``(Z, H, W)`` or ``(Z, H, W, C)`` (Z and C only when > 1)."""
    a = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    return a[0] if a.shape[0] == 1 else a


def to_uint8(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Map pixel values to uint8 by the one rule every 2D task uses (any layout, values only).

    - ``uint8``: unchanged; ``bool``: 0 / 255;
    - floats within ``[0, 1]``: times 255 (intensities stored as fractions);
    - anything else (16-bit, float, signed): linear from ``[min(0, lowest value), highest value]`` to
      ``[0, 255]``, so zero stays black and relative intensities are kept (logged). NaN becomes 0.
    """
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if f.size == 0:
        return f.astype(np.uint8)
    lo, hi = min(0.0, float(f.min())), float(f.max())
    if a.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return np.round(f * 255.0).astype(np.uint8)
    if hi <= lo:
        return np.zeros(f.shape, np.uint8)
    log.info("%s: %s pixels mapped linearly from [%g, %g] to 8 bit", name, a.dtype, lo, hi)
    return np.clip(np.round((f - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def to_gray_or_rgb(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Bring a 2D image array to ``(H, W)`` gray or ``(H, W, 3)`` RGB (layout only, dtype kept).

    ``(H, W, 1)`` and gray + alpha ``(H, W, 2)`` become gray; RGBA drops alpha; a channel-first
    ``(3 | 4, H, W)`` array (some TIFF writers) is moved to channel-last. Anything else (a stack,
    other channel counts) is a FileFormatError naming ``name``.
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] in (1, 2):
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3) or min(a.shape[:2]) < 2:
        raise FileFormatError(
            f"expected a 2D gray or RGB(A) image, got an array of shape {tuple(np.shape(arr))}", path=name
        )
    return a


def read_image_uint8(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """The one 2D reader of the tasks: ``(H, W)`` gray or ``(H, W, 3)`` RGB, uint8.

    Detection, classification and explain all read pixels through this function, so one file gives
    the same pixels in every command: layout by :func:`to_gray_or_rgb` (after the file's own layout:
    planar RGB, palette, CMYK converted; alpha dropped), values by :func:`to_uint8`. A multi-page
    file is refused (the tasks read one image). ``max_pixels`` as in :func:`read_image_array`.
    Raises MissingFileError / FileFormatError / InputError naming the file.
    """
    path = Path(path)
    raster = read_raster(path, max_pixels)
    if raster.pixels.shape[0] > 1:
        raise FileFormatError(
            f"a stack of {raster.pixels.shape[0]} images (multi-page TIFF); the 2D tasks read one image: "
            "save the page you want, or load the stack with medseg.io.load",
            path=str(path),
        )
    pixels = raster.pixels[0]
    if raster.alpha:
        pixels = pixels[..., :-1]
    return to_uint8(to_gray_or_rgb(_squeeze(pixels[None]), str(path)), path.name)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` gray -> ``(H, W, 3)`` by replication; ``(H, W, 3)`` unchanged."""
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def image2d_info(path: str | Path) -> SeriesInfo:
    """A :class:`~medseg.io.series.SeriesInfo` for a 2D image file (reads the header only; never raises).

    An image over the pixel limit is listed with an ``"error: ..."`` problem (``load`` refuses it).
    """
    path = Path(path)
    limit = max_pixels_limit()
    try:
        pages, h, w, chans, alpha = raster_shape(path, limit)
    except PASS_THROUGH:
        raise
    except InputError as e:  # Pillow refuses to even open it (decompression bomb)
        return SeriesInfo(
            kind="image2d",
            path=str(path),
            description=path.name,
            n_files=1,
            problems=[f"error: {e}"],
            files=[str(path)],
        )
    except BaseException as e:
        return unreadable(str(path), f"{path}: not a readable image ({safe_reason(e)})")
    problems = []
    if limit and h * w * pages > limit:
        problems.append(f"error: {h * w * pages:,} pixels, over the pixel limit of {limit:,} (max_pixels)")
    return SeriesInfo(
        kind="image2d",
        path=str(path),
        description=path.name,
        n_files=1,
        n_slices=pages,
        shape=(w, h) + ((pages,) if pages > 1 else ()),
        n_channels=chans - 1 if alpha else chans,
        problems=problems,
        files=[str(path)],
    )


def load_image2d(path: str | Path, *, dtype: DTypeLike = np.float32, max_pixels: int | None = None) -> MetaTensor:
    """Load a PNG/JPEG/BMP/TIFF image as a MetaTensor.

    Parameters
    ----------
    path : image file.
    dtype : output dtype (float32 keeps 8- and 16-bit values exactly).
    max_pixels : largest ``H x W x pages`` read (see :func:`read_image_array`).

    Returns
    -------
    MetaTensor (C, X, Y) (or (C, X, Y, Z) for a multi-page TIFF); C = 1 gray, 3 RGB, else the
    file's channel count (alpha dropped and reported). ``affine``: diag(sx, sy, 1, 1);
    ``meta["spacing"]`` in mm (1.0 when unknown), ``meta["bit_depth"]``, ``meta["rgb"]``.
    """
    import torch  # lazy: keeps `import medseg.io` light (torch, MONAI)
    from monai.data import MetaTensor

    path = Path(path)
    raster = read_raster(path, max_pixels)
    data, problems = _channels_first(raster)
    bit_depth = int(raster.pixels.dtype.itemsize * 8)
    orig_dtype = str(raster.pixels.dtype)
    data = np.ascontiguousarray(data.astype(dtype, copy=False))
    spacing = raster.spacing
    if spacing is None:
        spacing = (1.0, 1.0)
        problems.append("no pixel size in the file: spacing 1.0 (pixels)")
    affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
    sp = list(spacing) + ([1.0] if data.ndim == 4 else [])
    meta = {
        "filename_or_obj": str(path),
        "format": "tiff" if path.suffix.lower() in TIFF_SUFFIXES else path.suffix.lower().lstrip("."),
        "source_paths": [str(path)],
        "spacing": np.array(sp, float),
        "original_affine": affine.copy(),
        "orientation": None,
        "modality": None,
        "series_uid": None,
        "problems": problems,
        "bit_depth": bit_depth,
        "original_dtype": orig_dtype,
        "rgb": bool(raster.rgb and data.shape[0] == 3),
        "space": "RAS",
        "original_channel_dim": 0,
        "spatial_shape": np.array(data.shape[1:]),
    }
    return MetaTensor(torch.from_numpy(data), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _channels_first(raster: Raster) -> tuple[np.ndarray, list[str]]:
    """``(Z, H, W, C)`` -> ``(C, X, Y)`` (one page) or ``(C, X, Y, Z)``, alpha dropped; and the notes."""
    problems = list(raster.notes)
    pixels = raster.pixels
    if raster.alpha:
        pixels = pixels[..., :-1]
        problems.append("alpha channel dropped")
    if pixels.shape[0] == 1:
        return np.transpose(pixels[0], (2, 1, 0)), problems  # (H, W, C) -> (C, W, H) = (C, X, Y)
    problems.append(f"{pixels.shape[0]} pages stacked along Z (1.0 apart)")
    return np.transpose(pixels, (3, 2, 1, 0)), problems  # (Z, H, W, C) -> (C, X, Y, Z)


def _reader(source: Path | SeriesInfo, options: LoadOptions) -> MetaTensor:
    return load_image2d(source_path(source), dtype=options.dtype, max_pixels=options.max_pixels)


#: the 2D-image entry of :mod:`medseg.io.registry`
FORMAT = ImageFormat(
    name="image2d",
    suffixes=(".png", *TIFF_SUFFIXES, ".jpg", ".jpeg", ".bmp"),
    kind="image2d",
    description="2D images (microscopy, photos)",
    read=_reader,
    describe=image2d_info,
)
