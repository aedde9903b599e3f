"""Augmentation sets for training patches (MONAI random dictionary transforms).

Levels: ``none``; ``light`` (flips); ``default`` (flips, small rotation + scaling with
``RandAffined``, intensity scale/shift); ``heavy`` (default + Gaussian noise, contrast, and elastic
deformation in 3D / 2D). Label maps are resampled with nearest interpolation.

Left/right flips change anatomy (liver on the right); for CT/MR the default is to flip no axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.transforms import (
    Compose,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

__all__ = ["augmentation"]


def augmentation(
    level: str,
    spatial_dims: int,
    keys: Sequence[str] = ("image", "label"),
    flip_axes: Sequence[int] | None = None,
    rotate_deg: float = 15.0,
    scale: float = 0.1,
    prob: float = 0.3,
) -> Compose:
    """The augmentation transform for ``level`` ("none", "light", "default", "heavy").

    Parameters
    ----------
    level : how much augmentation.
    spatial_dims : 2 or 3.
    keys : (image key, label key); the label is interpolated with "nearest".
    flip_axes : spatial axes (0-based) flipped with probability 0.5 each; None: no flips.
    rotate_deg : maximum rotation (degrees), about the last axis (axial plane) in 3D.
    scale : maximum relative isotropic zoom.
    prob : probability of each random transform.

    Returns
    -------
    A MONAI ``Compose`` of random dict transforms (identity for "none").
    """
    img, lab = keys[0], keys[1]
    t: list = []
    if level == "none":
        return Compose(t)
    for ax in flip_axes or []:
        t.append(RandFlipd([img, lab], prob=0.5, spatial_axis=int(ax)))
    if level in ("default", "heavy"):
        r = math.radians(rotate_deg)
        rot = (r,) if spatial_dims == 2 else (0.0, 0.0, r)
        t.append(
            RandAffined(
                [img, lab],
                prob=prob,
                rotate_range=rot,
                scale_range=(scale,) * spatial_dims,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            )
        )
        t.append(RandScaleIntensityd(img, factors=0.1, prob=prob))
        t.append(RandShiftIntensityd(img, offsets=0.1, prob=prob))
    if level == "heavy":
        t.append(RandGaussianNoised(img, prob=prob, std=0.05))
        t.append(RandAdjustContrastd(img, prob=prob, gamma=(0.8, 1.25)))
        if spatial_dims == 3:
            t.append(
                Rand3DElasticd(
                    [img, lab],
                    sigma_range=(5, 7),
                    magnitude_range=(50, 100),
                    prob=0.1,
                    mode=("bilinear", "nearest"),
                    padding_mode="border",
                )
            )
        else:
            t.append(
                Rand2DElasticd(
                    [img, lab],
                    spacing=(20, 20),
                    magnitude_range=(1, 2),
                    prob=0.1,
                    mode=("bilinear", "nearest"),
                    padding_mode="border",
                )
            )
    return Compose(t)
