"""Microscopy presets of the 2D tasks: which modality an image is, and how it is normalised.

- **he** (H&E and other stained brightfield RGB): 8-bit RGB as stored (``medseg.io.read_image_uint8``);
  training uses HED stain jitter.
- **fluorescence**: per-channel percentile normalisation ``(x - p1) / (p99.8 - p1)`` clipped to
  [0, 1], as CSBDeep / StarDist's ``normalize(x, 1, 99.8)`` (MONAI ``ScaleIntensityRangePercentiles``),
  computed on the stored values (16-bit kept), so one hot pixel does not darken the image; no stain
  jitter (there is no stain), brightness / contrast jitter instead.
- **brightfield** (unstained, grayscale transmitted light): the same percentile normalisation.

Normalised images are handed to the detection code as ``(H, W, 3)`` uint8 (a gray image replicated
to 3 channels, as the detection networks take RGB input), so tiling and memory maps stay as they are.
:func:`choose_modality` picks the preset from the data (channels, dtype, background brightness).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from monai.transforms import ScaleIntensityRangePercentiles

from medseg.io import as_rgb, read_image_array, read_image_uint8, to_uint8
from medseg.io.image2d import to_gray_or_rgb

__all__ = ["MODALITIES", "choose_modality", "percentile_normalize", "read_microscopy", "microscopy_rgb"]

MODALITIES = ("he", "fluorescence", "brightfield")


def choose_modality(pixels: np.ndarray) -> tuple[str, str]:
    """(modality, reason) for an image as stored, ``(H, W)`` or ``(H, W, C)`` of any dtype.

    Rule: gray (one channel, or RGB with equal channels) with more than 8 bits -> fluorescence;
    gray 8-bit with a dark background (median below 25 % of the 99.8th percentile) -> fluorescence,
    else brightfield; colour RGB with a dark background -> fluorescence (a composite), else he;
    2 or more than 3 channels -> fluorescence.
    """
    a = np.asarray(pixels)
    chans = 1 if a.ndim == 2 else int(a.shape[-1])
    if chans == 4:  # RGBA: alpha is not a channel
        a, chans = a[..., :3], 3
    gray = chans == 1 or (chans == 3 and np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]))
    sub = a[:: max(1, a.shape[0] // 256), :: max(1, a.shape[1] // 256)].astype(np.float64)
    hi = float(np.percentile(sub, 99.8)) or 1.0
    dark = float(np.median(sub)) < 0.25 * hi
    desc = f"{chans} channel{'s' if chans > 1 else ''}, {a.dtype}, {'dark' if dark else 'bright'} background"
    if chans not in (1, 3):
        return "fluorescence", desc
    if gray:
        if a.dtype != np.uint8:
            return "fluorescence", desc
        return ("fluorescence" if dark else "brightfield"), desc
    return ("fluorescence" if dark else "he"), desc


def percentile_normalize(pixels: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """``(H, W[, C])`` -> float32 of the same shape, ``(x - p_low) / (p_high - p_low)`` per channel (not clipped)."""
    a = np.asarray(pixels, np.float32)
    cf = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    out = ScaleIntensityRangePercentiles(lower=low, upper=high, b_min=0.0, b_max=1.0, clip=False, channel_wise=True)(cf)
    out = np.asarray(out, np.float32)
    return out[0] if a.ndim == 2 else np.moveaxis(out, 0, -1)


def read_microscopy(path: str | Path, modality: str = "he") -> np.ndarray:
    """An image for the 2D detection code as ``(H, W, 3)`` uint8 under ``modality``'s normalisation.

    ``he``: ``as_rgb(read_image_uint8(path))`` (unchanged). ``fluorescence`` / ``brightfield``:
    :func:`microscopy_rgb` of the stored values (:func:`medseg.io.read_image_array`).
    Raises the :mod:`medseg.io` errors (MissingFileError, FileFormatError) naming the file.
    """
    if modality == "he":
        return as_rgb(read_image_uint8(path))
    return microscopy_rgb(np.asarray(read_image_array(path)), modality, Path(path).name)


def microscopy_rgb(pixels: np.ndarray, modality: str = "he", name: str = "<array>") -> np.ndarray:
    """Pixels as stored ``(H, W)`` / ``(H, W, C)`` -> ``(H, W, 3)`` uint8 under ``modality``'s normalisation.

    ``he``: the tasks' one layout and value rule (:func:`medseg.io.image2d.to_gray_or_rgb`,
    :func:`medseg.io.to_uint8`), gray replicated. ``fluorescence`` / ``brightfield``: percentile-normalised
    (:func:`percentile_normalize`), clipped to [0, 1], to 8 bit, gray replicated to RGB (a 2-channel
    image gets a zero third channel; more than 3 keep the first 3).
    """
    a = np.asarray(pixels)
    if modality == "he":
        return as_rgb(to_uint8(to_gray_or_rgb(a, name), name))
    if a.ndim == 3 and a.shape[-1] == 4 and a.dtype == np.uint8:  # RGBA: drop alpha
        a = a[..., :3]
    x = np.clip(percentile_normalize(a), 0.0, 1.0)
    u8 = (x * 255.0 + 0.5).astype(np.uint8)
    if u8.ndim == 2:
        return np.repeat(u8[..., None], 3, axis=-1)
    if u8.shape[-1] == 2:
        return np.concatenate([u8, np.zeros_like(u8[..., :1])], axis=-1)
    return np.ascontiguousarray(u8[..., :3])
