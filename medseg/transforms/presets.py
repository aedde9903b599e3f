"""Modality presets: intensity normalisation as MONAI dictionary transforms.

- **CT**: clip to a HU window (the plan's foreground 0.5/99.5 percentiles, or a named window),
  then z-score with the foreground mean/std (nnU-Net's CT scheme). Images in HU.
- **MR**, **other**: per-image z-score, inside the non-zero mask when the plan says so
  (``NormalizeIntensityd(nonzero=True)``: zero background stays exactly 0; nnU-Net's rule: when
  cropping to the non-zero region shrinks the images by more than 25 %), else over all voxels.
  Without a plan (``nonzero=None``) MR uses the mask, other does not.
- **RGB**, **he** (photos, H&E histology): scale 0..255 to 0..1 per channel.
- **fluorescence**, **brightfield**: percentile normalisation per image and channel, (x - p1) /
  (p99.8 - p1), as CSBDeep / StarDist's ``normalize(x, 1, 99.8)`` (robust to hot pixels, any bit depth).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    Compose,
    MapTransform,
    NormalizeIntensityd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    ThresholdIntensityd,
)

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
    nonzero: bool | None = None,
) -> MapTransform | Compose:
    """Intensity normalisation preset for ``modality`` ("CT", "MR", "RGB", "other").

    Parameters
    ----------
    modality : image modality.
    keys : dictionary keys of the images (``(C, *S)`` arrays).
    clip : CT: (low, high) HU clip; default: the soft-tissue window.
    mean, std : CT: statistics used for the z-score after clipping; default: the clip window's
        centre and half width (maps the window to [-1, 1]).
    nonzero : MR / other: z-score inside the non-zero mask (the plan's ``norm.nonzero_mask``);
        None: MR yes, other no.

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
    if modality in ("RGB", "he"):
        return ScaleIntensityRanged(keys, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True)
    if modality in ("fluorescence", "brightfield"):
        return ScaleIntensityRangePercentilesd(
            keys, lower=1.0, upper=99.8, b_min=0.0, b_max=1.0, clip=False, relative=False, channel_wise=True
        )
    use_mask = (modality == "MR") if nonzero is None else bool(nonzero)
    return NormalizeIntensityd(keys, nonzero=use_mask, channel_wise=True)
