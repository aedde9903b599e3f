"""Decoding 2D image files (PNG, JPEG, BMP, TIFF) into one explicit layout, with a pixel limit checked first.

Every 2D read of medseg (:func:`medseg.io.read_image_array`, :func:`~medseg.io.read_image_uint8`,
:func:`~medseg.io.load_image2d`) goes through :func:`read_raster`, which returns the pixels as
``(Z, H, W, C)`` (pages, rows, columns, samples) plus what the file says about them: which channel
is alpha, the pixel size, and what was converted. The layout comes from the file's own
description (TIFF axes and photometric tags via tifffile, the image mode via Pillow), never from
guessing by array shape, so a planar RGB TIFF is RGB and a 3-page gray stack is 3 pages.

- TIFF (tifffile): samples (``S``) and channels (``C``) become C, in either planar configuration;
  pages, depth and time (``I``, ``Z``, ``T``, ``Q``) become Z; CMYK (``SEPARATED``) is converted to
  RGB, palette images are expanded through their colour map; ExtraSamples = associated or
  unassociated alpha flags the alpha channel.
- PNG / JPEG / BMP (Pillow): ``1`` -> bool, ``L`` -> gray, ``LA`` -> gray + alpha, ``P`` / ``PA`` ->
  RGB(A) through the palette, ``RGBA`` -> RGB + alpha, ``CMYK`` / ``YCbCr`` / ``LAB`` / ``HSV`` ->
  RGB (Pillow's conversion), ``I;16*`` -> uint16, ``I`` -> int32, ``F`` -> float32. Only the first frame
  of an animated file is read (reported).
- The pixel limit (``H x W x pages``; :data:`MAX_PIXELS`, ``MEDSEG_MAX_PIXELS`` or ``max_pixels=``)
  is checked from the header, before any pixel is decoded: a 20000 x 20000 image of a few hundred
  bytes on disk raises an :class:`~medseg.errors.InputError` instead of allocating gigabytes.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import FileFormatError, InputError, MedsegError, MissingFileError
from medseg.io.safety import PASS_THROUGH, safe_reason, third_party_quiet

__all__ = ["Raster", "read_raster", "raster_shape", "MAX_PIXELS", "max_pixels_limit", "TIFF_SUFFIXES"]

#: default pixel limit of one 2D read (H x W x pages): Pillow's own decompression-bomb threshold
#: (``PIL.Image.MAX_IMAGE_PIXELS``, ~89.5 megapixels, 0.25 GB of 24-bit RGB), applied to TIFF too.
#: Override with the ``MEDSEG_MAX_PIXELS`` environment variable or ``max_pixels=`` (0: no limit).
MAX_PIXELS = 89_478_485

TIFF_SUFFIXES = (".tif", ".tiff")

_PAGE_AXES = "IZTQRVHEAL"  # tifffile axes that are not rows, columns or samples: stacked as pages


@dataclass
class Raster:
    """A decoded 2D image file.

    Attributes
    ----------
    pixels : ``(Z, H, W, C)`` array in the file's dtype (Z pages, C samples; C = 1 for gray).
    alpha : the last channel is alpha (transparency), not image content.
    rgb : the first three channels are red, green, blue.
    spacing : ``(x, y)`` pixel size in mm from the file (TIFF resolution tags), else None.
    notes : what was converted or left out (CMYK to RGB, palette expanded, frames not read, ...).
    """

    pixels: np.ndarray
    alpha: bool = False
    rgb: bool = False
    spacing: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels``, else ``$MEDSEG_MAX_PIXELS``, else :data:`MAX_PIXELS` (0: none)."""
    if max_pixels is not None:
        return max(0, int(max_pixels))
    env = os.environ.get("MEDSEG_MAX_PIXELS", "").strip()
    if env:
        try:
            return max(0, int(float(env)))
        except ValueError:
            raise InputError(f"MEDSEG_MAX_PIXELS={env!r} is not a number of pixels") from None
    return MAX_PIXELS


def _check_size(n_pixels: int, dims: str, limit: int, path: Path) -> None:
    if limit and n_pixels > limit:
        raise InputError(
            f"image of {dims} = {n_pixels:,} pixels is over the limit of {limit:,} pixels (checked before "
            "decoding: a small file can hold a huge image). If the image is genuine, raise the limit with "
            "`medseg --max-pixels N`, max_pixels= or the MEDSEG_MAX_PIXELS environment variable (0: no limit)",
            path=str(path),
        )


def read_raster(path: str | Path, max_pixels: int | None = None) -> Raster:
    """Decode a PNG / JPEG / BMP / TIFF file into a :class:`Raster` (``(Z, H, W, C)`` pixels).

    Raises
    ------
    MissingFileError : the file does not exist.
    InputError : the image is larger than the pixel limit (see :func:`max_pixels_limit`), before decoding.
    FileFormatError : empty, truncated or unreadable file; any decoder failure, naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError("file not found", path=str(path))
    if path.stat().st_size == 0:
        raise FileFormatError("empty file (0 bytes)", path=str(path))
    limit = max_pixels_limit(max_pixels)
    try:
        with third_party_quiet(str(path)):  # tifffile logs tag values of damaged files
            if path.suffix.lower() in TIFF_SUFFIXES:
                return _read_tiff(path, limit)
            return _read_pillow(path, limit)
    except MedsegError:
        raise
    except PASS_THROUGH:
        raise
    except MemoryError:
        raise InputError("not enough memory to decode the image", path=str(path)) from None
    except BaseException as e:
        raise FileFormatError(
            f"not a readable image ({safe_reason(e)}); is the file corrupt or truncated?", path=str(path)
        ) from None


# ----------------------------------------------------------------------------------------- TIFF
def _read_tiff(path: Path, limit: int) -> Raster:
    import tifffile  # lazy: keeps `import medseg.io` light

    with tifffile.TiffFile(str(path)) as tf:
        series = tf.series[0]
        axes, shape = series.axes, tuple(int(v) for v in series.shape)
        if "Y" not in axes or "X" not in axes:
            raise FileFormatError(f"TIFF without rows and columns (axes {axes!r})", path=str(path))
        n_pages = int(np.prod([n for a, n in zip(axes, shape) if a not in "YXSC"], dtype=np.int64))
        h, w = shape[axes.index("Y")], shape[axes.index("X")]
        _check_size(h * w * n_pages, f"{w} x {h}" + (f" x {n_pages} pages" if n_pages > 1 else ""), limit, path)
        page = tf.pages[0]
        _check_tiff_data(tf, path)
        photometric = int(getattr(page, "photometric", 1))
        extras = tuple(int(v) for v in (getattr(page, "extrasamples", ()) or ()))
        colormap = getattr(page, "colormap", None)
        arr = series.asarray()
        spacing = _tiff_spacing(tf)
    raster = Raster(_tiff_layout(np.asarray(arr), axes), spacing=spacing)
    _tiff_colour(raster, photometric, extras, colormap)
    return raster


def _check_tiff_data(tf: Any, path: Path) -> None:
    """Every page has pixel data inside the file, and uncompressed pages hold all their rows.

    tifffile fills missing strips with zeros: a header of a hundred bytes declaring millions of
    pixels would otherwise decode to a large black image (slowly) instead of an error.
    """
    size = path.stat().st_size
    for page in tf.pages:
        offsets, counts = tuple(page.dataoffsets or ()), tuple(page.databytecounts or ())
        if not offsets or not counts or len(offsets) != len(counts):
            raise FileFormatError("a TIFF page has no pixel data (no strip / tile offsets)", path=str(path))
        if any(o + c > size for o, c in zip(offsets, counts)):
            raise FileFormatError("truncated TIFF: pixel data end past the end of the file", path=str(path))
        if int(page.compression) == 1:  # uncompressed: the strips hold every row
            bits = int(page.bitspersample) * (int(page.samplesperpixel) if int(page.planarconfig) == 1 else 1)
            planes = int(page.samplesperpixel) if int(page.planarconfig) == 2 else 1
            need = planes * int(page.imagedepth) * int(page.imagelength) * ((int(page.imagewidth) * bits + 7) // 8)
            if sum(counts) < need and not page.is_tiled:
                raise FileFormatError(
                    f"truncated TIFF: {sum(counts)} bytes of uncompressed pixel data, the page needs {need}",
                    path=str(path),
                )


def _tiff_layout(arr: np.ndarray, axes: str) -> np.ndarray:
    """tifffile's array with its ``axes`` -> ``(Z, H, W, C)``."""
    chan = [i for i, a in enumerate(axes) if a in "SC"]
    pages = [i for i, a in enumerate(axes) if a not in "YXSC"]
    order = pages + [axes.index("Y"), axes.index("X")] + chan
    a = np.transpose(arr, order)
    n_pages = int(np.prod(a.shape[: len(pages)], dtype=np.int64)) if pages else 1
    n_chan = int(np.prod(a.shape[len(pages) + 2 :], dtype=np.int64)) if chan else 1
    return a.reshape(n_pages, a.shape[len(pages)], a.shape[len(pages) + 1], n_chan)


def _tiff_colour(r: Raster, photometric: int, extras: tuple[int, ...], colormap: Any) -> None:
    """Apply what the TIFF photometric tags say: palette, CMYK, RGB, alpha (TIFF 6.0 tags 262 and 338)."""
    c = r.pixels.shape[-1]
    if photometric == 3 and colormap is not None and c == 1:  # PALETTE
        cmap = np.asarray(colormap)
        idx = np.clip(r.pixels[..., 0].astype(np.int64), 0, cmap.shape[1] - 1)
        rgb = np.moveaxis(cmap[:, idx], 0, -1)
        if rgb.dtype == np.uint16 and np.all(rgb % 257 == 0):
            rgb = (rgb // 257).astype(np.uint8)  # an 8-bit palette stored as 16-bit (the TIFF convention)
        r.pixels, r.rgb = rgb, True
        r.notes.append("palette colour expanded to RGB")
        return
    if photometric == 5 and c >= 4:  # SEPARATED: CMYK (InkSet 1), plus extra samples
        r.pixels = _cmyk_to_rgb(r.pixels[..., :4])
        r.rgb = True
        r.notes.append("CMYK converted to RGB (R = (1 - C)(1 - K), ...)")
        return
    if photometric == 0:
        r.notes.append("MINISWHITE: stored values kept (higher values display darker)")
    r.rgb = photometric in (2, 6) and c >= 3  # RGB, YCbCr (decoded to RGB by tifffile)
    base = 3 if r.rgb else 1
    if c == base + 1 and extras[-1:] in ((1,), (2,)):  # associated / unassociated alpha
        r.alpha = True
    elif c == 2 and not extras:
        r.alpha = False  # two channels without ExtraSamples: two image channels (fluorescence)


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """``(..., 4)`` CMYK -> ``(..., 3)`` RGB by the naive (ICC-free) formula Pillow uses: R = max * (1 - C)(1 - K)."""
    top = float(np.iinfo(cmyk.dtype).max) if cmyk.dtype.kind in "ui" else 1.0
    f = cmyk.astype(np.float64) / top
    rgb = top * (1.0 - f[..., :3]) * (1.0 - f[..., 3:4])
    return np.round(rgb).astype(cmyk.dtype) if cmyk.dtype.kind in "ui" else rgb.astype(cmyk.dtype)


def _tiff_spacing(tf: Any) -> tuple[float, float] | None:
    """(x, y) pixel size in mm from the first page's resolution tags, or None."""
    try:
        tags = tf.pages[0].tags
        if "XResolution" not in tags or "YResolution" not in tags:
            return None
        unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
        per_mm = {2: 25.4, 3: 10.0}.get(int(getattr(unit, "value", unit)))  # inch, centimetre
        xr, yr = tags["XResolution"].value, tags["YResolution"].value
        xr = xr[0] / xr[1] if isinstance(xr, tuple) else float(xr)
        yr = yr[0] / yr[1] if isinstance(yr, tuple) else float(yr)
        if per_mm is None or not (xr > 0 and yr > 0) or (xr == 1 and yr == 1):
            return None
        return (per_mm / xr, per_mm / yr)
    except Exception:
        return None


# ----------------------------------------------------------------------------------------- Pillow
_PILLOW_TO_RGB = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}


def _open_pillow(path: Path, limit: int) -> Any:
    """``PIL.Image.open(path)`` with medseg's limit in charge of Pillow's decompression-bomb check."""
    from PIL import Image  # lazy: keeps `import medseg.io` light

    try:
        with warnings.catch_warnings():  # medseg's limit decides; Pillow's warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(str(path))
    except Image.DecompressionBombError as e:  # over twice PIL.Image.MAX_IMAGE_PIXELS: Pillow refuses to open it
        m = re.search(r"\((\d+) pixels\)", str(e))
        n = int(m.group(1)) if m else 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
        _check_size(n, "the size in its header", limit, path)
        raise InputError(
            f"image of {n:,} pixels: over Pillow's own limit (PIL.Image.MAX_IMAGE_PIXELS); raise that too to read it",
            path=str(path),
        ) from None


def raster_shape(path: str | Path, limit: int = 0) -> tuple[int, int, int, int, bool]:
    """``(pages, H, W, channels, alpha)`` from the file's header only (no pixel decoded).

    ``limit`` is only used for the message when Pillow refuses to open the file as a decompression
    bomb (an InputError); otherwise the caller compares the size with its limit. Raises FileFormatError.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise FileFormatError("empty file (0 bytes)", path=str(path))
    with third_party_quiet(str(path)):
        return _raster_shape(path, limit)


def _raster_shape(path: Path, limit: int) -> tuple[int, int, int, int, bool]:
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile  # lazy: keeps `import medseg.io` light

        with tifffile.TiffFile(str(path)) as tf:
            series = tf.series[0]
            axes, shape = series.axes, tuple(int(v) for v in series.shape)
            extras = tuple(int(v) for v in (tf.pages[0].extrasamples or ()))
            photometric = int(getattr(tf.pages[0], "photometric", 1))
        if "Y" not in axes or "X" not in axes:
            raise FileFormatError(f"TIFF without rows and columns (axes {axes!r})", path=str(path))
        chans = int(np.prod([n for a, n in zip(axes, shape) if a in "SC"], dtype=np.int64))
        pages = int(np.prod([n for a, n in zip(axes, shape) if a not in "YXSC"], dtype=np.int64))
        alpha = extras[-1:] in ((1,), (2,)) and chans > 1
        if photometric == 3 or (photometric == 5 and chans >= 4):  # palette, CMYK: read as RGB
            chans, alpha = 3, False
        return pages, shape[axes.index("Y")], shape[axes.index("X")], chans, alpha
    with _open_pillow(path, limit) as im:
        w, h = im.size
        alpha = im.mode in ("LA", "La", "RGBA", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info)
        chans = 3 if im.mode in ("P", "PA", *_PILLOW_TO_RGB) else len(im.getbands())
        return 1, h, w, chans + (1 if im.mode in ("P", "PA") and alpha else 0), alpha


def _read_pillow(path: Path, limit: int) -> Raster:
    notes = []
    with _open_pillow(path, limit) as im:
        w, h = im.size
        _check_size(w * h, f"{w} x {h}", limit, path)
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"first of {im.n_frames} frames read")
        mode = im.mode
        alpha = False
        if mode in ("P", "PA"):
            has_alpha = mode == "PA" or "transparency" in im.info
            im = im.convert("RGBA" if has_alpha else "RGB")
            notes.append("palette colour expanded to RGB")
            mode, alpha = im.mode, has_alpha
        elif mode in _PILLOW_TO_RGB:
            im = im.convert("RGB")
            notes.append(f"{mode} converted to RGB (Pillow)")
        elif mode in ("LA", "La", "RGBA", "RGBa"):
            alpha = True
        rgb = im.mode in ("RGB", "RGBA", "RGBa")
        arr = np.asarray(im)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    pixels = arr[None, ..., None] if arr.ndim == 2 else arr[None]
    return Raster(pixels, alpha=alpha, rgb=rgb, notes=notes)
