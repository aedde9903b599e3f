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

import numpy as np

from medseg.errors import FileFormatError, MissingFileError

__all__ = ["load_image2d", "image2d_info"]

log = logging.getLogger(__name__)

_TIFF = (".tif", ".tiff")


def _tiff_spacing(tf) -> tuple[float, float] | None:
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


def _read(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    if not path.exists():
        raise MissingFileError("file not found", path=str(path))
    if path.stat().st_size == 0:
        raise FileFormatError("empty file (0 bytes)", path=str(path))
    try:
        if path.suffix.lower() in _TIFF:
            import tifffile

            with tifffile.TiffFile(str(path)) as tf:
                arr = tf.asarray()
                spacing = _tiff_spacing(tf)
            return arr, spacing
        import skimage.io

        return skimage.io.imread(str(path)), None
    except (FileFormatError, MissingFileError):
        raise
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:160]
        raise FileFormatError(
            f"not a readable image ({type(e).__name__}: {first}); is the file corrupt or truncated?", path=str(path)
        ) from None


def image2d_info(path: str | Path):
    """A :class:`~medseg.io.dicom.SeriesInfo` for a 2D image file (reads the header only)."""
    from medseg.io.dicom import SeriesInfo

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise FileFormatError("empty file (0 bytes)", path=str(path))
        if path.suffix.lower() in _TIFF:
            import tifffile

            with tifffile.TiffFile(str(path)) as tf:
                s = tf.series[0]
                shape = tuple(int(v) for v in s.shape)
                axes = s.axes
        else:
            from PIL import Image

            with Image.open(str(path)) as im:
                w, h = im.size
                bands = len(im.getbands())
                shape = (h, w, bands) if bands > 1 else (h, w)
                axes = "YXS" if bands > 1 else "YX"
    except Exception as e:
        return SeriesInfo(
            kind="unreadable",
            path=str(path),
            problems=[f"error: {path}: not a readable image ({type(e).__name__})"],
            files=[str(path)],
            n_files=1,
        )
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


def load_image2d(path: str | Path, *, dtype=np.float32):
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
    import torch
    from monai.data import MetaTensor

    path = Path(path)
    arr, spacing = _read(path)
    problems = []
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
