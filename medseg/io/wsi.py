"""Whole-slide images (SVS, NDPI, MRXS, SCN, BIF, generic tiled pyramidal TIFF) through OpenSlide.

OpenSlide (``openslide-python`` with the ``openslide-bin`` wheel, which ships the C library: ``pip
install 'medseg[wsi]'``) reads every vendor format pathologists meet, level by level and tile by
tile; medseg does not decode slides itself. ``tiffslide`` was the alternative: pure Python, but it
reads TIFF-based formats only (no MRXS, no NDPI in its own files), so OpenSlide it is.

- :class:`SlideImage` is one level of a slide as a read-only ``(H, W, 3)`` uint8 array view: slicing it
  (``img[y0:y1, x0:x1]``) reads only that region (``OpenSlide.read_region``), so
  :func:`medseg.engine.tiling.detect_tiled` walks a 100k x 100k slide with bounded memory. Transparent
  pixels (outside the scanned area) read as white.
- :func:`tissue_mask` is Otsu on the saturation of a low-resolution level (TIAToolbox's and
  QuPath's usual first step): background glass is bright and grey, tissue is coloured.
- :func:`is_slide` says whether a file should be read this way (a vendor suffix, or a tiled
  pyramidal TIFF of at least ``min_pixels``).

Coordinates: level-0 pixels (x, y), as QuPath and OpenSlide use; ``SlideImage.mpp`` is the level-0
pixel size in µm (``openslide.mpp-x``; None when the file does not say).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import FileFormatError, MissingDependencyError, MissingFileError
from medseg.io.base import ImageFormat, LoadOptions, source_path
from medseg.io.raster import TIFF_SUFFIXES
from medseg.io.series import SeriesInfo

__all__ = ["FORMAT", "SLIDE_SUFFIXES", "SlideImage", "block_thumbnail", "open_slide", "tissue_mask", "is_slide"]

#: vendor whole-slide suffixes (a generic tiled TIFF keeps its TIFF suffix: see :func:`is_slide`)
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide")


def _openslide() -> Any:
    try:
        import openslide  # optional (the 'wsi' extra): only when a slide is opened
    except ImportError as e:  # pragma: no cover - the extra is installed where slides are read
        raise MissingDependencyError(
            "reading whole-slide images needs OpenSlide: pip install 'medseg[wsi]' "
            "(openslide-python and openslide-bin, which ships the OpenSlide library)"
        ) from e
    return openslide


@dataclass
class SlideImage:
    """One level of a whole slide as a lazy ``(H, W, 3)`` uint8 RGB array (see the module docstring).

    Attributes
    ----------
    path : the slide file.
    level : the OpenSlide level (0 = full resolution).
    shape : (H, W, 3) of the level.
    downsample : level-0 pixels per pixel of this level.
    mpp : level-0 pixel size in µm (x), or None.
    """

    path: Path
    level: int
    shape: tuple[int, int, int]
    downsample: float
    mpp: float | None
    _slide: Any = None

    ndim = 3
    dtype = np.dtype(np.uint8)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key)):
            raise TypeError("a slide level is read by regions: img[y0:y1, x0:x1]")
        H, W = self.shape[:2]
        y0, y1, _ = key[0].indices(H)
        x0, x1, _ = key[1].indices(W)
        return self.read(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels ``[y, y + h) x [x, x + w)`` of this level as (h, w, 3) uint8 (transparent -> white)."""
        if w == 0 or h == 0:
            return np.zeros((h, w, 3), np.uint8)
        d = self.downsample
        rgba = np.asarray(self._slide.read_region((int(round(x * d)), int(round(y * d))), self.level, (w, h)))
        if rgba[..., 3].min() == 255:  # all scanned (the usual tile): the same pixels without float copies
            return np.ascontiguousarray(rgba[..., :3])
        rgb = rgba[..., :3].astype(np.float32)
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        return (rgb * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise FileFormatError("a whole slide is not read into memory at once; it is read tile by tile", self.path)

    def thumbnail(self, max_side: int = 1024, *, block_pixels: int = 1 << 18) -> np.ndarray:
        """The whole slide at most ``max_side`` pixels on its longer side, (h, w, 3) uint8 RGB.

        Read from the coarsest level fine enough (OpenSlide's choice) by :func:`block_thumbnail`, in
        blocks of about ``block_pixels`` pixels. Not ``OpenSlide.get_thumbnail``: that reads the whole
        chosen level into memory at once (all of level 0 for a slide without a pyramid: 1.6 GB for a
        20k x 20k TIFF), so memory would grow with the slide; here it is bounded by ``block_pixels``.
        """
        h0, w0 = self.shape[:2]
        need = max(h0, w0) / max_side  # pixels of this level per thumbnail pixel
        if need <= 1:
            return self.read(0, 0, w0, h0)
        s = self._slide
        lvl = max(self.level, int(s.get_best_level_for_downsample(need * self.downsample)))
        w, h = (int(v) for v in s.level_dimensions[lvl])
        src = SlideImage(self.path, lvl, (h, w, 3), float(s.level_downsamples[lvl]), self.mpp, s)
        return block_thumbnail(src.read, (h, w), max_side, block_pixels=block_pixels)

    def close(self) -> None:
        self._slide.close()


def block_thumbnail(
    read: Callable[[int, int, int, int], np.ndarray],
    shape: tuple[int, int],
    max_side: int,
    *,
    block_pixels: int = 1 << 18,
) -> np.ndarray:
    """A ``(h, w, 3)`` uint8 thumbnail (longer side at most ``max_side``) of an image read block by block.

    ``read(x, y, w, h)`` returns the ``(h, w, 3)`` uint8 pixels ``[y, y + h) x [x, x + w)`` of an image
    of ``shape`` (H, W). Blocks of about ``block_pixels`` pixels, aligned to the box factor ``k`` (the
    largest whole factor that still leaves at least ``max_side`` pixels), are box-averaged by Pillow's
    ``reduce(k)``: the same pixels as reducing the whole image at once, without holding it. The result
    is then fitted to ``max_side`` (Lanczos, as ``OpenSlide.get_thumbnail``).
    """
    from PIL import Image  # only where a thumbnail is made

    h, w = shape
    k = max(1, int(max(h, w) / max_side))
    side = max(k, int(block_pixels**0.5) // k * k)  # blocks aligned to k: no seams between them
    out = np.zeros((-(-h // k), -(-w // k), 3), np.uint8)
    for y in range(0, h, side):
        for x in range(0, w, side):
            block = Image.fromarray(np.ascontiguousarray(read(x, y, min(side, w - x), min(side, h - y))))
            r = np.asarray(block.reduce(k) if k > 1 else block)
            out[y // k : y // k + r.shape[0], x // k : x // k + r.shape[1]] = r
    im = Image.fromarray(out)
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(im)


#: OpenSlide's tile cache per slide (its own default is 32 MiB): enough for the neighbouring tiles a margin
#: re-reads; a larger one buys little for a walk that reads each region once, and memory is what it costs
SLIDE_CACHE_BYTES = 8 << 20


def open_slide(path: str | Path, level: int = 0, *, cache_bytes: int = SLIDE_CACHE_BYTES) -> SlideImage:
    """Open ``path`` with OpenSlide; level ``level`` as a :class:`SlideImage`.

    ``cache_bytes``: capacity of the slide's decoded-tile cache (``OpenSlideCache``).

    Raises MissingFileError, FileFormatError (not a slide OpenSlide reads, or no such level),
    MissingDependencyError (OpenSlide not installed).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError("slide not found", path)
    openslide = _openslide()
    try:
        slide = openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError) as e:
        raise FileFormatError(f"not a whole-slide image OpenSlide can read ({e})", path) from None
    slide.set_cache(openslide.OpenSlideCache(int(cache_bytes)))
    if not 0 <= level < slide.level_count:
        raise FileFormatError(f"level {level} asked for; the slide has levels 0..{slide.level_count - 1}", path)
    w, h = slide.level_dimensions[level]
    mpp = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    return SlideImage(
        path=path,
        level=level,
        shape=(int(h), int(w), 3),
        downsample=float(slide.level_downsamples[level]),
        mpp=float(mpp) if mpp else None,
        _slide=slide,
    )


def tissue_mask(slide: SlideImage, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """Tissue mask of a slide by Otsu's threshold on the saturation of a low-resolution image.

    Returns
    -------
    mask : (h, w) bool at low resolution (True = tissue), opened/closed to drop specks and fill gaps.
    scale : level-``slide.level`` pixels per mask pixel (the mask's (i, j) covers
        ``[i * scale, (i + 1) * scale)`` rows of the level).
    """
    from scipy import ndimage as ndi  # scipy / scikit-image submodules: only for slides
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    thumb = slide.thumbnail(max_side)
    sat = np.empty(thumb.shape[:2])
    for i in range(0, len(sat), 64):  # by rows: the same values, without six full-size float64 temporaries
        sat[i : i + 64] = rgb2hsv(thumb[i : i + 64])[..., 1]
    if float(sat.max() - sat.min()) < 1e-3:  # a uniform image: all tissue or all glass; keep everything
        mask = np.ones(sat.shape, bool)
    else:
        mask = sat > threshold_otsu(sat)
        mask = ndi.binary_closing(ndi.binary_opening(mask, iterations=1), iterations=2)
    scale = slide.shape[0] / len(sat)  # mask rows = thumbnail rows
    return mask, float(scale)


def is_slide(path: str | Path, min_pixels: int = 16_000_000) -> bool:
    """True for a vendor slide suffix, or a tiled multi-level TIFF of at least ``min_pixels`` (level 0)
    that OpenSlide opens; False otherwise (and when OpenSlide is not installed, for TIFF files)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in TIFF_SUFFIXES or not path.is_file():
        return False
    try:
        openslide = _openslide()
    except MissingDependencyError:
        return False
    try:
        if openslide.OpenSlide.detect_format(str(path)) != "generic-tiff":
            return False
        with openslide.OpenSlide(str(path)) as s:
            w, h = s.dimensions
            return s.level_count > 1 and w * h >= min_pixels
    except Exception:  # noqa: BLE001  any unreadable TIFF is simply not a slide here
        return False


def _describe(path: Path) -> SeriesInfo:
    try:
        s = open_slide(path)
    except Exception as e:  # noqa: BLE001  describers never raise (an unreadable entry instead)
        return SeriesInfo(kind="unreadable", path=str(path), problems=[f"error: {e}"])
    info = SeriesInfo(kind="wsi", path=str(path), n_files=1, n_slices=1, shape=(s.shape[1], s.shape[0]))
    info.n_channels = 3
    if s.mpp:
        info.spacing = (s.mpp * 1e-3, s.mpp * 1e-3)
    s.close()
    return info


def _reader(source: Path | SeriesInfo, options: LoadOptions) -> Any:
    path = source_path(source)
    raise FileFormatError("a whole-slide image is not loaded as one array; 'medseg detect' reads it tile by tile", path)


#: the whole-slide entry of :mod:`medseg.io.registry`
FORMAT = ImageFormat(
    name="wsi",
    suffixes=SLIDE_SUFFIXES,
    kind="image2d",
    description="whole-slide images (OpenSlide: SVS, NDPI, MRXS, SCN, BIF, VMS)",
    read=_reader,
    describe=_describe,
)
