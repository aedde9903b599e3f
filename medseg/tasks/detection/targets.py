"""Training targets and augmentation of the detection task: proximity maps, HED stain jitter, flips/rot90.

Conventions: images ``(H, W, 3)`` uint8 RGB (or float in [0, 1]); points ``(N, 2)`` as ``(x, y)``
pixels; distances in pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.color import hed2rgb, rgb2hed

__all__ = ["proximity_target", "stain_jitter", "intensity_jitter", "flip_rot90"]


def proximity_target(points: np.ndarray, shape: tuple[int, int], radius_px: float, alpha: float = 3.0) -> np.ndarray:
    """Xie et al. (2015) proximity map (H, W) float32 in [0, 1].

    ``M = (exp(alpha (1 - d / r)) - 1) / (exp(alpha) - 1)`` for ``d < r``, else 0, where ``d`` is
    the distance (px) to the nearest point (x, y) in ``points`` (N, 2) and ``r = radius_px``.
    """
    H, W = int(shape[0]), int(shape[1])
    if len(points) == 0:
        return np.zeros((H, W), np.float32)
    seeds = np.ones((H, W), bool)
    ij = np.clip(np.round(np.asarray(points)[:, ::-1]).astype(int), 0, [H - 1, W - 1])
    seeds[ij[:, 0], ij[:, 1]] = False
    d = ndi.distance_transform_edt(seeds)
    m = np.where(d < radius_px, (np.exp(alpha * (1 - d / radius_px)) - 1) / (np.exp(alpha) - 1), 0.0)
    return m.astype(np.float32)


def stain_jitter(rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """H&E stain augmentation in HED space (scikit-image ``rgb2hed``/``hed2rgb``).

    Each stain channel is scaled by ``1 + U(-s, s)`` and shifted by ``U(-s, s) * 0.05`` (OD units).
    ``rgb`` (H, W, 3) uint8 or float in [0, 1]; returns float32 (H, W, 3) in [0, 1].
    """
    x = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    if strength <= 0:
        return x
    hed = rgb2hed(x)
    a = 1 + rng.uniform(-strength, strength, 3)
    b = rng.uniform(-strength, strength, 3) * 0.05
    hed = hed * a + b
    return np.clip(hed2rgb(hed), 0, 1).astype(np.float32)


def intensity_jitter(img: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness / contrast / gamma augmentation of a normalised image (fluorescence, brightfield).

    ``img`` (H, W, 3) uint8 or float in [0, 1]; contrast ``x (1 + U(-s, s))``, brightness ``+ U(-s, s) / 2``,
    gamma ``2 ** U(-s, s)``, clipped to [0, 1]; returns float32 (H, W, 3). ``strength`` 0 returns the input as float.
    """
    x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if strength <= 0:
        return x
    x = np.clip(x * (1 + rng.uniform(-strength, strength)) + rng.uniform(-strength, strength) / 2, 0, 1)
    return (x ** (2.0 ** rng.uniform(-strength, strength))).astype(np.float32)


def flip_rot90(arrs: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random 90° rotation (k in 0..3) and optional left-right flip applied to each array (H, W[, C])."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrs:
        a = np.rot90(a, k, axes=(0, 1))
        if flip:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return out
