"""Modality presets: intensity normalisation as MONAI dictionary transforms.

- **CT**: clip to a HU window (the plan's foreground 0.5/99.5 percentiles, or a named window),
  then z-score with the foreground mean/std (nnU-Net's CT scheme). Images in HU.
- **MR**: per-image z-score over the non-zero (foreground) voxels (``NormalizeIntensityd(nonzero=True)``).
- **RGB** (histology, photos): scale 0..255 to 0..1 per channel.
- **other**: per-image z-score over all voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import Compose, MapTransform, NormalizeIntensityd, ScaleIntensityRanged, ThresholdIntensityd

from medseg.palette import CT_WINDOWS as PALETTE_CT_WINDOWS
from medseg.palette import window_range

__all__ = ["CT_WINDOWS", "intensity_transform"]

#: CT windows as (low, high) HU, from the one window table (``medseg.palette.CT_WINDOWS``, center/width)
CT_WINDOWS: dict[str, tuple[float, float]] = {name: window_range(name) for name in PALETTE_CT_WINDOWS}


def intensity_transform(
    modality: str,
    keys: Sequence[str] = ("image",),
    clip: Sequence[float] | None = None,
    mean: float | None = None,
    std: float | None = None,
) -> MapTransform | Compose:
    """Intensity normalisation preset for ``modality`` ("CT", "MR", "RGB", "other").

    Parameters
    ----------
    modality : image modality.
    keys : dictionary keys of the images (``(C, *S)`` arrays).
    clip : CT: (low, high) HU clip; default: the soft-tissue window.
    mean, std : CT: statistics used for the z-score after clipping; default: the clip window's
        centre and half width (maps the window to [-1, 1]).

    Returns
    -------
    A MONAI dict transform (deterministic, so it is cached by ``CacheDataset``).
    """
    keys = list(keys)
    if modality == "CT":
        lo, hi = clip if clip is not None else CT_WINDOWS["soft_tissue"]
        m = mean if mean is not None else (lo + hi) / 2
        s = std if std is not None else max((hi - lo) / 2, 1e-3)
        return Compose(
            [
                ThresholdIntensityd(keys, threshold=hi, above=False, cval=hi),
                ThresholdIntensityd(keys, threshold=lo, above=True, cval=lo),
                ScaleIntensityRanged(keys, a_min=m - s, a_max=m + s, b_min=-1.0, b_max=1.0, clip=False),
            ]
        )
    if modality == "MR":
        return NormalizeIntensityd(keys, nonzero=True, channel_wise=True)
    if modality == "RGB":
        return ScaleIntensityRanged(keys, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True)
    return NormalizeIntensityd(keys, channel_wise=True)
