"""2D images (microscopy, photos): PNG/JPEG/BMP via scikit-image, TIFF via tifffile.

Array convention (same as MONAI's ``LoadImage``): channel-first ``(C, X, Y)`` where X runs along a row
(image width, columns) and Y down the image (height, rows): ``image[c, x, y] == pixels[y, x, c]``.
RGB gives 3 channels (an alpha channel is dropped and reported), 16-bit data keep their values
(``meta["bit_depth"]`` = 16). A multi-page grayscale TIFF stack gives ``(1, X, Y, Z)``.
Pixel size: TIFF X/YResolution (with ResolutionUnit cm or inch) when present, else 1.0 (reported).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from medseg.errors import FileFormatError, MissingFileError
from medseg.io.base import ImageFormat, LoadOptions, source_path
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
    "FORMAT",
]

log = logging.getLogger(__name__)

_TIFF = (".tif", ".tiff")  # read with tifffile (pixel size tags, stacks); the others with scikit-image / Pillow


def _tiff_spacing(tf: Any) -> tuple[float, float] | None:
    """(x, y) pixel size in mm from the first page's resolution tags, or None."""
    try:
        page = tf.pages[0]
        tags = page.tags
        if "XResolution" not in tags or "YResolution" not in tags:
            return None
        unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
        unit = int(getattr(unit, "value", unit))
        per_mm = {2: 25.4, 3: 10.0}.get(unit)  # inch, centimetre
        if per_mm is None:
            return None
        xr = tags["XResolution"].value
        yr = tags["YResolution"].value
        xr = xr[0] / xr[1] if isinstance(xr, tuple) else float(xr)
        yr = yr[0] / yr[1] if isinstance(yr, tuple) else float(yr)
        if xr <= 0 or yr <= 0 or (xr == 1 and yr == 1):
            return None
        return (per_mm / xr, per_mm / yr)
    except Exception:
        return None


def read_image_array(path: str | Path) -> np.ndarray:
    """The pixels of a PNG/JPEG/TIFF file as stored: ``(H, W)`` or ``(H, W, C)``, native dtype.

    For code that works on plain display-ordered arrays (detection, 2D classification); use
    :func:`load_image2d` for a MetaTensor with geometry. Raises MissingFileError / FileFormatError
    (empty, truncated or unreadable file) naming the path.
    """
    return _read(Path(path))[0]


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


def read_image_uint8(path: str | Path) -> np.ndarray:
    """The one 2D reader of the tasks: ``(H, W)`` gray or ``(H, W, 3)`` RGB, uint8.

    Detection, classification and explain all read pixels through this function, so one file gives
    the same pixels in every command: layout by :func:`to_gray_or_rgb`, values by :func:`to_uint8`.
    Raises MissingFileError / FileFormatError naming the file.
    """
    path = Path(path)
    return to_uint8(to_gray_or_rgb(read_image_array(path), str(path)), path.name)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` gray -> ``(H, W, 3)`` by replication; ``(H, W, 3)`` unchanged."""
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def _read(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    if not path.exists():
        raise MissingFileError("file not found", path=str(path))
    if path.stat().st_size == 0:
        raise FileFormatError("empty file (0 bytes)", path=str(path))
    try:
        if path.suffix.lower() in _TIFF:
            import tifffile  # lazy: keeps `import medseg.io` light

            with tifffile.TiffFile(str(path)) as tf:
                arr = tf.asarray()
                spacing = _tiff_spacing(tf)
            return arr, spacing
        import skimage.io  # lazy: keeps `import medseg.io` light

        return skimage.io.imread(str(path)), None
    except (FileFormatError, MissingFileError):
        raise
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:160]
        raise FileFormatError(
            f"not a readable image ({type(e).__name__}: {first}); is the file corrupt or truncated?", path=str(path)
        ) from None


def image2d_info(path: str | Path) -> SeriesInfo:
    """A :class:`~medseg.io.series.SeriesInfo` for a 2D image file (reads the header only)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise FileFormatError("empty file (0 bytes)", path=str(path))
        if path.suffix.lower() in _TIFF:
            import tifffile  # lazy: keeps `import medseg.io` light

            with tifffile.TiffFile(str(path)) as tf:
                s = tf.series[0]
                shape = tuple(int(v) for v in s.shape)
                axes = s.axes
        else:
            from PIL import Image  # lazy: keeps `import medseg.io` light

            with Image.open(str(path)) as im:
                w, h = im.size
                bands = len(im.getbands())
                shape = (h, w, bands) if bands > 1 else (h, w)
                axes = "YXS" if bands > 1 else "YX"
    except Exception as e:
        return unreadable(str(path), f"{path}: not a readable image ({type(e).__name__})")
    chans = shape[-1] if axes.endswith("S") else 1
    spatial = shape[:-1] if axes.endswith("S") else shape
    xy = (spatial[-1], spatial[-2])
    return SeriesInfo(
        kind="image2d",
        path=str(path),
        description=path.name,
        n_files=1,
        n_slices=int(np.prod(spatial[:-2])) if len(spatial) > 2 else 1,
        shape=xy + ((int(np.prod(spatial[:-2])),) if len(spatial) > 2 else ()),
        n_channels=min(chans, 3) if chans == 4 else chans,
        files=[str(path)],
    )


def load_image2d(path: str | Path, *, dtype: DTypeLike = np.float32) -> MetaTensor:
    """Load a PNG/JPEG/BMP/TIFF image as a MetaTensor.

    Parameters
    ----------
    path : image file.
    dtype : output dtype (float32 keeps 8- and 16-bit values exactly).

    Returns
    -------
    MetaTensor (C, X, Y) (or (1, X, Y, Z) for a grayscale TIFF stack); C = 1 gray, 3 RGB.
    ``affine``: diag(sx, sy[, 1], 1) (4x4); ``meta["spacing"]`` in mm (1.0 when unknown),
    ``meta["bit_depth"]``, ``meta["rgb"]``.
    """
    import torch  # lazy: keeps `import medseg.io` light (torch, MONAI)
    from monai.data import MetaTensor

    path = Path(path)
    arr, spacing = _read(path)
    problems: list[str] = []
    bit_depth = int(arr.dtype.itemsize * 8)
    orig_dtype = str(arr.dtype)
    rgb = False
    if arr.ndim == 2:
        chw = arr[None]  # (1, H, W)
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        if arr.shape[-1] == 4:
            problems.append("alpha channel dropped")
            arr = arr[..., :3]
        rgb = True
        chw = np.moveaxis(arr, -1, 0)  # (3, H, W)
    elif arr.ndim == 3:  # (Z, H, W) stack
        chw = arr[None]
    else:
        raise FileFormatError(f"unsupported image layout {arr.shape}", path=str(path))
    if chw.ndim == 3:
        data = np.swapaxes(chw, 1, 2)  # (C, W, H) = (C, X, Y)
    else:
        data = np.transpose(chw, (0, 3, 2, 1))  # (1, Z, H, W) -> (1, X, Y, Z)
    data = np.ascontiguousarray(data.astype(dtype, copy=False))
    if spacing is None:
        spacing = (1.0, 1.0)
        problems.append("no pixel size in the file: spacing 1.0 (pixels)")
    affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
    sp = list(spacing) + ([1.0] if data.ndim == 4 else [])
    meta = {
        "filename_or_obj": str(path),
        "format": "tiff" if path.suffix.lower() in _TIFF else path.suffix.lower().lstrip("."),
        "source_paths": [str(path)],
        "spacing": np.array(sp, float),
        "original_affine": affine.copy(),
        "orientation": None,
        "modality": None,
        "series_uid": None,
        "problems": problems,
        "bit_depth": bit_depth,
        "original_dtype": orig_dtype,
        "rgb": rgb,
        "space": "RAS",
        "original_channel_dim": 0,
        "spatial_shape": np.array(data.shape[1:]),
    }
    return MetaTensor(torch.from_numpy(data), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _reader(source: Path | SeriesInfo, options: LoadOptions) -> MetaTensor:
    return load_image2d(source_path(source), dtype=options.dtype)


#: the 2D-image entry of :mod:`medseg.io.registry`
FORMAT = ImageFormat(
    name="image2d",
    suffixes=(".png", *_TIFF, ".jpg", ".jpeg", ".bmp"),
    kind="image2d",
    description="2D images (microscopy, photos)",
    read=_reader,
    describe=image2d_info,
)
