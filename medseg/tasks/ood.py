"""Is a new case like the cases a model was trained on? The out-of-distribution (OOD) check.

At training, :func:`build_reference` summarises the training cases (:func:`image_features` of
each, plus the plan's fingerprint where there is one) into a reference stored in the run folder
(``ood_reference.json``) and shown in the model card. At inference every case's features are
compared with it (:func:`ood_reasons`); each check that fails gives one reason, written in the
``ood_reasons`` column of the command's table and in the review report (those cases first).

The checks (tolerances are module constants, documented in ``docs/cohort.md``):

- **modality**: the DICOM Modality of the case is not one the model was trained on (or, for a
  model trained on files without a modality tag, not the config's ``modality``);
- **channels**: the number of channels differs (such a case cannot be run at all: an error);
- **spacing**, per patient axis (R/L, A/P, S/I): outside the training range by more than a factor
  :data:`SPACING_RATIO`;
- **acquisition plane** (orientation): the thick-slice axis (spacing ratio above
  :data:`ANISOTROPY`) lies along another patient axis than in every training case (e.g. a
  sagittal acquisition given to a model trained on axial ones);
- **field of view**, per patient axis: the extent (mm) is below :data:`EXTENT_RANGE` [0] times the
  smallest training extent or above [1] times the largest (a cropped scan, a whole-body scan);
- **intensity**: a percentile (:data:`PERCENTILES`) of the voxels inside the body (CT: above
  -500 HU; other modalities: above Otsu's threshold) lies outside the training range of that
  percentile widened by :data:`INTENSITY_MARGIN` times the training cases' typical p5-p95 spread
  (another contrast, another modality with the same tag);
- **noise**: the noise level (robust standard deviation, 1.4826 x MAD, of the image minus its
  Gaussian-smoothed copy, inside the body) is more than :data:`NOISE_RATIO` outside the training
  range (a low-dose or differently reconstructed scan).

2D images (detection, classification, explain) have no spacing or patient axes: their checks are
channels, size (the extent in pixels) and intensity percentiles of the whole image.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.orientations import io_orientation

from medseg.errors import ConfigError, InputError

__all__ = [
    "merge_references",
    "PERCENTILES",
    "SPACING_RATIO",
    "EXTENT_RANGE",
    "INTENSITY_MARGIN",
    "NOISE_RATIO",
    "ANISOTROPY",
    "OOD_MODES",
    "image_features",
    "features_2d",
    "build_reference",
    "ood_reasons",
    "read_reference",
    "check_ood_2d",
]

log = logging.getLogger("medseg.ood")

#: intensity percentiles compared (inside the body)
PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)
#: a spacing more than this factor outside the training range is flagged
SPACING_RATIO = 1.5
#: field of view (mm per patient axis) allowed: [low x smallest training extent, high x largest]
EXTENT_RANGE = (0.7, 1.5)
#: intensity margin around the training range, as a fraction of the training p5-p95 spread
INTENSITY_MARGIN = 0.1
#: a noise level more than this factor outside the training range is flagged
NOISE_RATIO = 1.5
#: a volume whose largest / smallest spacing is above this has a thick-slice (acquisition) axis
ANISOTROPY = 1.5
#: what a predict command does with an out-of-distribution case
OOD_MODES = ("warn", "refuse", "off")


def check_ood_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`OOD_MODES`, else a ConfigError listing them."""
    if mode not in OOD_MODES:
        raise ConfigError(f"ood must be one of {', '.join(OOD_MODES)}, got {mode!r}")
    return mode


_AXES = ("R/L", "A/P", "S/I")
_PLANES = {"R/L": "sagittal", "A/P": "coronal", "S/I": "axial"}
_MAX_VOXELS = 200_000


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return values if values.size <= _MAX_VOXELS else rng.choice(values, _MAX_VOXELS, replace=False)


def _body_mask(first: np.ndarray, modality: str, rng: np.random.Generator) -> np.ndarray:
    """Voxels of the body: CT above -500 HU (as the preprocessing crops); others above Otsu's threshold."""
    if modality == "CT":
        m = first > -500.0
    else:
        from skimage.filters import threshold_otsu  # scikit-image: the standard foreground threshold

        v = _sample(first.ravel(), rng)
        m = first > threshold_otsu(v) if np.ptp(v) > 0 else np.ones(first.shape, bool)
    return m if m.any() else np.ones(first.shape, bool)


def _percentiles(values: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in np.percentile(values, PERCENTILES)]


def _noise(channel: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> float:
    """Robust noise level: 1.4826 x MAD of the image minus its Gaussian-smoothed copy (sigma 1 voxel),
    inside the body shrunk by 2 voxels (organ and body edges excluded)."""
    from scipy import ndimage  # SciPy: the standard Gaussian filter and erosion

    inner = ndimage.binary_erosion(body, iterations=2) if body.sum() > 1000 else body
    resid = channel - ndimage.gaussian_filter(channel, 1.0)
    v = _sample(resid[inner] if inner.any() else resid.ravel(), rng)
    return round(float(1.4826 * np.median(np.abs(v - np.median(v)))), 4)


def image_features(image: Any, *, modality: str, spatial_dims: int, seed: int = 0) -> dict[str, Any]:
    """What the OOD check compares, for one image in its source geometry.

    Parameters
    ----------
    image : MetaTensor ``(C, X, Y[, Z])`` from :func:`medseg.io.load` (affine voxel -> RAS mm,
        ``meta["modality"]`` for DICOM).
    modality : the model's modality (``CT``, ``MR``, ``RGB``, ``other``): chooses the body mask.
    spatial_dims : 2 or 3.

    Returns
    -------
    dict: ``modality`` (the file's tag or None), ``channels``, ``spacing_mm`` and ``extent_mm`` per
    patient axis (R/L, A/P, S/I; per image axis for 2D), ``acquisition_axis`` (patient axis of the
    thick slices, or None), ``intensity`` (per channel, the :data:`PERCENTILES` inside the body).
    """
    rng = np.random.default_rng(seed)
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
    meta = getattr(image, "meta", {}) or {}
    shape = arr.shape[1:]
    aff = np.asarray(getattr(image, "affine", np.eye(4)), float)
    if aff.shape != (4, 4):
        aff = np.eye(4)
    vox_spacing = [float(np.linalg.norm(aff[:3, i])) for i in range(len(shape))][: len(shape)]
    spacing: list[float] = list(vox_spacing)
    extent = [n * s for n, s in zip(shape, vox_spacing)]
    acquisition = None
    if spatial_dims == 3 and len(shape) == 3:
        world = [int(w) for w in io_orientation(aff)[:, 0]]
        spacing, extent = [0.0] * 3, [0.0] * 3
        for v, w in enumerate(world):
            spacing[w], extent[w] = vox_spacing[v], shape[v] * vox_spacing[v]
        if max(vox_spacing) / max(min(vox_spacing), 1e-6) > ANISOTROPY:
            acquisition = _AXES[world[int(np.argmax(vox_spacing))]]
    body = _body_mask(arr[0], modality, rng)
    intensity = [_percentiles(_sample(arr[c][body], rng)) for c in range(arr.shape[0])]
    noise = [_noise(arr[c], body, rng) for c in range(arr.shape[0])]
    tag = meta.get("modality")
    return {
        "modality": str(tag) if tag else None,
        "channels": int(arr.shape[0]),
        "spacing_mm": [round(float(s), 4) for s in spacing],
        "extent_mm": [round(float(e), 2) for e in extent],
        "acquisition_axis": acquisition,
        "intensity": intensity,
        "noise": noise,
    }


def features_2d(pixels: np.ndarray) -> dict[str, Any]:
    """The OOD features of a 2D image as the 2D tasks read it: ``(H, W)`` gray or ``(H, W, 3)`` uint8.

    ``extent_mm`` holds the size in pixels (2D tasks have no spacing); no modality, no acquisition axis.
    """
    a = np.asarray(pixels)
    chans = (a[..., None] if a.ndim == 2 else a).astype(np.float32)
    rng = np.random.default_rng(0)
    whole = np.ones(chans.shape[:2], bool)
    return {
        "modality": None,
        "channels": int(chans.shape[-1]),
        "spacing_mm": [],
        "extent_mm": [float(a.shape[0]), float(a.shape[1])],
        "acquisition_axis": None,
        "intensity": [_percentiles(_sample(chans[..., c].ravel(), rng)) for c in range(chans.shape[-1])],
        "noise": [_noise(chans[..., c], whole, rng) for c in range(chans.shape[-1])],
    }


def _range(values: Sequence[Sequence[float]]) -> list[list[float]]:
    a = np.asarray(values, float)
    return [[round(float(lo), 4), round(float(hi), 4)] for lo, hi in zip(a.min(0), a.max(0))]


def build_reference(
    features: Sequence[Mapping[str, Any]],
    *,
    modality: str,
    spatial_dims: int,
    fingerprint: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The training reference of the OOD check, from the features of the training cases.

    Parameters
    ----------
    features : :func:`image_features` (or :func:`features_2d`) of the training (and validation) cases.
    modality : the model's modality.
    spatial_dims : 2 or 3.
    fingerprint : the plan's fingerprint (:func:`medseg.engine.plan.fingerprint`): its per-case
        spacings and shapes (RAS order) widen the spacing and field-of-view ranges.

    Returns
    -------
    dict: ``n_cases``, ``modality``, ``modalities`` (tags seen), ``channels``, ``spatial_dims``,
    ``spacing_mm`` / ``extent_mm`` ([min, max] per axis), ``acquisition_axes``, ``intensity``
    ([min, max] per channel and percentile), ``intensity_spread`` (median p95 - p5 per channel),
    ``percentiles`` and the tolerances used.
    """
    if not features:
        raise ValueError("build_reference needs the features of at least one training case")
    spacings = [f["spacing_mm"] for f in features if f["spacing_mm"]]
    extents = [f["extent_mm"] for f in features]
    if fingerprint and spatial_dims == 3:
        fs = [list(map(float, s)) for s in fingerprint.get("spacings", [])]
        fe = [[n * s for n, s in zip(sh, sp)] for sh, sp in zip(fingerprint.get("shapes", []), fs)]
        spacings += [s for s in fs if len(s) == 3]
        extents += [e for e in fe if len(e) == 3]
    n_ch = int(features[0]["channels"])
    inten = [np.asarray(f["intensity"], float) for f in features if len(f["intensity"]) == n_ch]
    stacked = np.stack(inten)  # (cases, channels, percentiles)
    spread = np.median(stacked[:, :, -1] - stacked[:, :, 0], axis=0)
    noise = [f["noise"] for f in features if len(f.get("noise") or []) == n_ch]
    return {
        "n_cases": len(features),
        "modality": modality,
        "modalities": sorted({f["modality"] for f in features if f.get("modality")}),
        "channels": n_ch,
        "spatial_dims": spatial_dims,
        "spacing_mm": _range(spacings) if spacings else [],
        "extent_mm": _range(extents),
        "acquisition_axes": sorted({f["acquisition_axis"] for f in features if f.get("acquisition_axis")}),
        "intensity": [
            [[round(float(lo), 4), round(float(hi), 4)] for lo, hi in zip(c.min(0), c.max(0))]
            for c in np.moveaxis(stacked, 1, 0)
        ],
        "intensity_spread": [round(float(s), 4) for s in spread],
        "noise": _range(noise) if noise else [],
        "percentiles": list(PERCENTILES),
        "tolerances": {
            "spacing_ratio": SPACING_RATIO,
            "extent_range": list(EXTENT_RANGE),
            "intensity_margin": INTENSITY_MARGIN,
            "noise_ratio": NOISE_RATIO,
            "anisotropy": ANISOTROPY,
        },
    }


def merge_references(references: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One reference covering several: the union of the ranges (a fold ensemble's training data).

    Each fold of a cross-validation run records the reference of its own training cases; together the
    folds have seen every training case, so the ensemble's reference spans all of them: ranges are
    widened to the smallest minimum and largest maximum, tags are united, ``intensity_spread`` is the
    median of the folds', ``n_cases`` the largest fold's count (cases overlap between folds).
    """
    if not references:
        raise ValueError("merge_references needs at least one reference")

    def union(key: str) -> Any:
        rs = [r[key] for r in references if r.get(key)]
        if not rs:
            return []
        a = np.asarray(rs, float)  # (refs, ..., 2)
        lo, hi = a[..., 0].min(0), a[..., 1].max(0)
        return np.round(np.stack([lo, hi], -1), 4).tolist()

    first = references[0]
    return {
        **first,
        "n_cases": max(int(r.get("n_cases", 0)) for r in references),
        "modalities": sorted({m for r in references for m in r.get("modalities") or []}),
        "acquisition_axes": sorted({a for r in references for a in r.get("acquisition_axes") or []}),
        "spacing_mm": union("spacing_mm"),
        "extent_mm": union("extent_mm"),
        "intensity": union("intensity"),
        "noise": union("noise"),
        "intensity_spread": np.round(
            np.median(np.asarray([r["intensity_spread"] for r in references], float), 0), 4
        ).tolist(),
        "merged_from": len(references),
    }


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def ood_reasons(features: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
    """Why a case differs from the training data: one line per failed check (empty: in distribution)."""
    out: list[str] = []
    ref_mod = reference.get("modalities") or (
        [reference["modality"]] if reference.get("modality") in ("CT", "MR") else []
    )
    tag = features.get("modality")
    if tag and ref_mod and tag not in ref_mod:
        out.append(f"modality {tag} (the model was trained on {', '.join(ref_mod)})")
    if int(features["channels"]) != int(reference["channels"]):
        out.append(f"{features['channels']} channel(s) (the model expects {reference['channels']})")
        return out  # nothing else is comparable
    d3 = reference.get("spatial_dims") == 3
    names = _AXES if d3 else ("axis 0", "axis 1")
    unit = "mm" if reference.get("spacing_mm") else "px"
    for ax, (s, (lo, hi)) in enumerate(zip(features.get("spacing_mm") or [], reference.get("spacing_mm") or [])):
        if s > hi * SPACING_RATIO or s < lo / SPACING_RATIO:
            out.append(f"spacing along {names[ax]} {_fmt(s)} mm (training {_fmt(lo)}-{_fmt(hi)} mm)")
    acq, axes = features.get("acquisition_axis"), reference.get("acquisition_axes") or []
    if d3 and acq and axes and acq not in axes:
        trained = ", ".join(_PLANES[a] for a in axes)
        out.append(f"{_PLANES[acq]} acquisition, thick slices along {acq} (the model was trained on {trained} ones)")
    for ax, (e, (lo, hi)) in enumerate(zip(features.get("extent_mm") or [], reference.get("extent_mm") or [])):
        if e < lo * EXTENT_RANGE[0] or e > hi * EXTENT_RANGE[1]:
            what = "field of view" if d3 else "image size"
            out.append(f"{what} along {names[ax]} {_fmt(e)} {unit} (training {_fmt(lo)}-{_fmt(hi)} {unit})")
    for c, (vals, rng_c, spread) in enumerate(
        zip(features["intensity"], reference["intensity"], reference["intensity_spread"])
    ):
        margin = INTENSITY_MARGIN * max(float(spread), 1e-6)
        worst = None
        for q, v, (lo, hi) in zip(reference["percentiles"], vals, rng_c):
            excess = max(lo - margin - v, v - hi - margin)
            if excess > 0 and (worst is None or excess > worst[0]):
                worst = (excess, q, v, lo, hi)
        if worst is not None:
            _, q, v, lo, hi = worst
            where = "inside the body" if d3 else "of the image"
            ch = f" (channel {c})" if len(features["intensity"]) > 1 else ""
            out.append(f"intensity p{q} {where}{ch} {_fmt(v)} (training {_fmt(lo)} to {_fmt(hi)})")
    for c, (n, (lo, hi)) in enumerate(zip(features.get("noise") or [], reference.get("noise") or [])):
        if n > hi * NOISE_RATIO or n < lo / NOISE_RATIO:
            ch = f" (channel {c})" if len(reference["noise"]) > 1 else ""
            out.append(f"noise level{ch} {_fmt(n)} (training {_fmt(lo)}-{_fmt(hi)})")
    return out


def read_reference(model_dir: str | Path) -> dict[str, Any] | None:
    """The training reference of a run (``ood_reference.json``), or None (a run trained without one: no check)."""
    p = Path(model_dir) / "ood_reference.json"
    if not p.is_file():
        log.info(
            "%s has no ood_reference.json (trained before it was recorded): no out-of-distribution check", model_dir
        )
        return None
    ref: dict[str, Any] = json.loads(p.read_text())
    return ref


def check_ood_image(
    image: Any, reference: Mapping[str, Any] | None, mode: str, source: str, *, modality: str, spatial_dims: int
) -> list[str]:
    """The OOD reasons of an image in its source geometry (a MetaTensor from :func:`medseg.io.load`),
    raising under ``refuse``; ``[]`` with ``mode == "off"`` or without a reference.

    Raises
    ------
    InputError naming the file and the reasons when ``mode == "refuse"`` and the image is out of distribution.
    """
    if mode == "off" or reference is None:
        return []
    reasons = ood_reasons(image_features(image, modality=modality, spatial_dims=spatial_dims), reference)
    if reasons and mode == "refuse":
        raise InputError("out of distribution (--ood refuse): " + "; ".join(reasons), source)
    return reasons


def check_ood_2d(pixels: np.ndarray, reference: Mapping[str, Any] | None, mode: str, source: str) -> list[str]:
    """The OOD reasons of a 2D image (``(H, W[, 3])`` uint8; very large ones subsampled), raising under ``refuse``.

    Raises
    ------
    InputError naming the file and the reasons when ``mode == "refuse"`` and the image is out of distribution.
    """
    if mode == "off" or reference is None:
        return []
    step = max(1, int(np.sqrt(pixels.shape[0] * pixels.shape[1] / 4_000_000)))
    feats = features_2d(np.asarray(pixels[::step, ::step]))
    feats["extent_mm"] = [float(pixels.shape[0]), float(pixels.shape[1])]
    reasons = ood_reasons(feats, reference)
    if reasons and mode == "refuse":
        raise InputError("out of distribution (--ood refuse): " + "; ".join(reasons), source)
    return reasons
