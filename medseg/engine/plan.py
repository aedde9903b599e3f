"""Self-configuration, as nnU-Net does it: a dataset fingerprint and the plan derived from it.

- :func:`fingerprint` reads the training cases once (RAS orientation) and records spacings,
  shapes, the size of each case after cropping to the body / non-zero region, whether labels
  lie on zero voxels, and foreground intensity statistics (percentiles 0.5 / 99.5, mean, std).
- :func:`make_plan` turns it into one or two *configurations* of a network (nnU-Net's ``3d_fullres``
  and ``2d``): a target spacing (median spacing; the 2D configuration keeps the source spacing
  along its slice axis), a patch size that fits the voxel budget (memory), U-Net strides (no
  down-sampling along an axis whose spacing is still more than twice the finest one:
  anisotropic thick-slice CT), and chooses which configuration trains, with the reason. It also
  records the cropping rule, the intensity normalisation (CT statistics; z-score inside the
  non-zero mask when cropping to it shrinks the images by more than 25 %, nnU-Net's rule) and the
  normalisation layer of the network.

Both are saved in the run folder as ``plan.json``; every value can be overridden in the
config's ``plan:`` section (``None`` = planned). A target spacing of ``0`` on an axis means "keep
the source spacing" (the slice axis of a 2D configuration; MONAI ``Spacingd`` semantics).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import Compose, MapTransform, Orientationd

from medseg.errors import ConfigError
from medseg.transforms.pipeline import RAS_LABELS, crop_rule, foreground_mask, is_photo, loader

__all__ = ["fingerprint", "make_plan", "choose_configuration", "NONZERO_NORM_SHRINK"]

log = logging.getLogger("medseg.engine")

#: nnU-Net's rule: z-score inside the non-zero mask when cropping to it keeps < 75 % of the voxels
NONZERO_NORM_SHRINK = 0.75
#: the 3D configuration trains by default when its patch sees at least this share of the median image
MIN_3D_COVERAGE = 1 / 8
#: ... or this share when the time budget is short (< SHORT_BUDGET_MIN minutes)
MIN_3D_COVERAGE_SHORT_BUDGET = 1 / 4
SHORT_BUDGET_MIN = 10.0
#: spacing ratio (coarsest / finest) above which a volume is treated as a stack of slices (2D)
ANISOTROPY_2D = 3.0


def fingerprint(
    items: Sequence[Mapping[str, Any]], *, spatial_dims: int, modality: str, max_cases: int = 16, seed: int = 0
) -> dict[str, Any]:
    """Dataset fingerprint of ``items`` (``{"image": path, "label": path}`` dicts).

    Returns
    -------
    dict with ``n_cases``, ``spacings`` (list of per-axis mm), ``shapes`` (voxels), ``cropped_shapes``
    (voxels of the body / non-zero bounding box, see :func:`medseg.transforms.pipeline.crop_rule`),
    ``median_spacing``, ``median_shape``, ``median_cropped_shape``, ``crop_fraction`` (median share of
    the voxels kept by the crop), ``zero_fraction`` (median share of voxels exactly 0 in every
    channel), ``labels_on_zero`` (share of foreground label voxels whose image is exactly 0),
    ``foreground`` intensity stats ``{p00_5, p99_5, mean, std}`` (HU for CT) and ``channels``.
    """
    rng = np.random.default_rng(seed)
    chosen = list(items)[:max_cases]
    keys = ["image", "label"]
    t: list[MapTransform] = [loader(keys, modality, spatial_dims)]
    if not is_photo(modality):
        t.append(Orientationd(keys, axcodes="RAS"[:spatial_dims], labels=RAS_LABELS))
    load = Compose(t)
    rule = crop_rule(modality)
    spacings, shapes, cropped, fg = [], [], [], []
    crop_fracs, zero_fracs = [], []
    fg_total, fg_on_zero = 0, 0
    channels = 1
    for it in chosen:
        d = load({k: str(v) for k, v in it.items() if k in keys})
        img, lab = d["image"], d["label"]
        channels = int(img.shape[0])
        aff = np.asarray(img.affine, dtype=float)
        sp = np.linalg.norm(aff[:spatial_dims, :spatial_dims], axis=0)
        spacings.append([float(x) for x in sp])
        shape = [int(x) for x in img.shape[1:]]
        shapes.append(shape)
        full = np.asarray(img)
        box = _bbox_shape(foreground_mask(full, rule)) if rule["mode"] != "none" else shape
        cropped.append(box)
        crop_fracs.append(float(np.prod(box)) / max(float(np.prod(shape)), 1.0))
        zero = (full == 0).all(0)
        zero_fracs.append(float(zero.mean()))
        arr = full[0]
        m = np.asarray(lab)[0] > 0
        fg_total += int(m.sum())
        fg_on_zero += int((m & zero).sum())
        vals = arr[m] if m.any() else arr.ravel()
        if vals.size > 20000:
            vals = rng.choice(vals, 20000, replace=False)
        fg.append(vals.astype(np.float64))
    allfg = np.concatenate(fg) if fg else np.zeros(1)
    return {
        "n_cases": len(chosen),
        "spacings": spacings,
        "shapes": shapes,
        "cropped_shapes": cropped,
        "channels": channels,
        "median_spacing": [float(x) for x in np.median(np.array(spacings), axis=0)],
        "median_shape": [float(x) for x in np.median(np.array(shapes), axis=0)],
        "median_cropped_shape": [float(x) for x in np.median(np.array(cropped), axis=0)],
        "crop_fraction": float(np.median(crop_fracs)) if crop_fracs else 1.0,
        "zero_fraction": float(np.median(zero_fracs)) if zero_fracs else 0.0,
        "labels_on_zero": fg_on_zero / fg_total if fg_total else 0.0,
        "foreground": {
            "p00_5": float(np.percentile(allfg, 0.5)),
            "p99_5": float(np.percentile(allfg, 99.5)),
            "mean": float(allfg.mean()),
            "std": float(allfg.std()),
        },
    }


def _bbox_shape(mask: np.ndarray) -> list[int]:
    """Shape of the bounding box of ``mask`` ``(*S)`` (the whole shape when it is empty)."""
    if not mask.any():
        return [int(x) for x in mask.shape]
    out = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        out.append(int(hit[-1] - hit[0] + 1))
    return out


def _round_up(x: int, m: int) -> int:
    return int(math.ceil(x / m) * m)


def _plan_strides(target: np.ndarray, patch: np.ndarray, levels: int) -> list[list[int]]:
    """Per-level strides: halve an axis while its spacing is within 2x of the finest and it stays >= 8 voxels."""
    dims = len(patch)
    sp = target.copy()
    size = patch.astype(float).copy()
    strides = [[1] * dims]
    for _ in range(levels - 1):
        s = [2 if (sp[a] <= 2 * sp.min() and size[a] / 2 >= 4) else 1 for a in range(dims)]
        strides.append(s)
        sp = sp * np.array(s)
        size = size / np.array(s)
    return strides


def _fit_patch(shape: np.ndarray, target: np.ndarray, budget: int, levels: int) -> tuple[np.ndarray, list[list[int]]]:
    """Patch (voxels) covering ``shape`` within ``budget`` voxels, rounded to the network divisor; and strides."""
    patch = np.maximum(np.round(shape), 8)
    # shrink the axis with the largest physical extent until the patch fits the budget
    while np.prod(patch) > budget:
        a = int(np.argmax(patch * target))
        patch[a] = max(8, int(patch[a] * 0.9))
    patch = patch.astype(int)
    strides = _plan_strides(target, patch, levels)
    div = np.prod(np.array(strides), axis=0)
    patch = np.array([_round_up(int(p), int(d)) for p, d in zip(patch, div)])
    return patch, _plan_strides(target, patch, levels)


def _configuration(
    target: np.ndarray, shape: np.ndarray, budget: int, levels: int, patch_override: Sequence[int] | None
) -> dict[str, Any]:
    """One network configuration: spacing, patch, strides and divisor for ``shape`` (voxels at ``target``)."""
    if patch_override is not None:
        patch = np.array(patch_override, int)
        strides = _plan_strides(target, patch, levels)
    else:
        patch, strides = _fit_patch(shape, target, budget, levels)
    div = np.prod(np.array(strides), axis=0)
    return {
        "patch_size": [int(x) for x in patch],
        "strides": [[int(v) for v in s] for s in strides],
        "divisor": [int(x) for x in div],
        "coverage": float(min(1.0, np.prod(patch) / max(float(np.prod(np.maximum(shape, 1))), 1.0))),
    }


def choose_configuration(
    configs: Mapping[str, Mapping[str, Any]],
    spacing: Sequence[float],
    *,
    requested: str = "auto",
    budget_minutes: float | None = None,
) -> tuple[str, str]:
    """Which configuration trains (``"3d"`` or ``"2d"``) and why.

    Rule (written in docs/segmentation.md): a requested configuration wins. Otherwise the 2D one
    when the spacing is anisotropic (coarsest / finest > 3: a stack of slices), or when the 3D patch
    sees less than 1/8 of the median (cropped) image (1/4 with a time budget under 10 minutes): a 3D
    network would then need far more steps than a CPU budget gives to see the image, while the 2D
    one sees whole slices (nnU-Net's 2d beat its 3d_fullres 0.97 vs 0.78 on a real 1 mm brain MR in a
    13-minute CPU budget). Else the 3D configuration.
    """
    if requested != "auto":
        if requested not in configs:
            raise ConfigError(f"plan.configuration {requested!r} is not available here; planned: {sorted(configs)}")
        return requested, f"requested in the config (plan.configuration: {requested})"
    if "3d" not in configs:
        return "2d", "2D data"
    sp = np.asarray(spacing, float)
    ratio = float(sp.max() / max(sp.min(), 1e-6))
    if ratio > ANISOTROPY_2D:
        return "2d", f"anisotropic spacing (coarsest / finest = {ratio:.1f} > {ANISOTROPY_2D:g}): slice-wise 2D"
    cov = float(configs["3d"]["coverage"])
    short = budget_minutes is not None and budget_minutes < SHORT_BUDGET_MIN
    need = MIN_3D_COVERAGE_SHORT_BUDGET if short else MIN_3D_COVERAGE
    budget = f" with a {budget_minutes:g}-minute budget" if short else ""
    if cov < need:
        return "2d", f"the 3D patch sees {cov:.0%} of the median image (< {need:.0%}{budget}): 2D sees whole slices"
    return "3d", f"the 3D patch sees {cov:.0%} of the median image (>= {need:.0%}{budget})"


def make_plan(
    fp: Mapping[str, Any],
    *,
    spatial_dims: int,
    modality: str,
    levels: int = 4,
    overrides: Mapping[str, Any] | None = None,
    budget_minutes: float | None = None,
) -> dict[str, Any]:
    """The training / inference plan from a fingerprint (nnU-Net's rules, simplified).

    Parameters
    ----------
    fp : output of :func:`fingerprint` (``median_cropped_shape``, ``crop_fraction``, ... optional).
    spatial_dims, modality : of the task (the data's dimensions: a 3D data set gets 2D and 3D
        configurations, a 2D one the 2D configuration).
    levels : U-Net depth (number of resolution levels).
    overrides : config ``plan:`` values; a non-None value wins over the planned one
        (``configuration``: ``auto`` | ``2d`` | ``3d``; ``norm_layer``: ``auto`` | ``batch`` | ``instance``).
    budget_minutes : the training time budget (``train.max_minutes``), used to choose the configuration.

    Returns
    -------
    dict with the chosen configuration's ``target_spacing`` (mm; 0 = keep the source spacing),
    ``patch_size`` (voxels), ``strides`` (per level, per axis), ``divisor``, ``network_dims`` (2 or 3),
    ``slice_axis`` (2D configuration of a volume: the RAS axis sliced along, else None),
    ``configuration`` + ``configuration_reason``, ``configurations`` (both), ``crop`` (rule),
    ``norm`` (``clip``/``mean``/``std`` for CT; ``nonzero_mask`` otherwise), ``norm_layer`` (+ reason),
    ``zero_is_background`` (+ reason), ``resampled_median_shape`` and ``max_patch_voxels``.
    """
    ov = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    med_sp = np.array(fp["median_spacing"], float)
    med_shape = np.array(fp.get("median_cropped_shape", fp["median_shape"]), float)
    target = np.array(ov.get("target_spacing", med_sp), float)
    if target.size != spatial_dims:
        raise ConfigError(f"plan.target_spacing needs {spatial_dims} values, got {target.tolist()}")
    shape = med_shape * med_sp / np.where(target > 0, target, med_sp)  # median shape after resampling (voxels)
    budget = int(ov.get("max_patch_voxels", 64 * 64 * 48))
    requested = str(ov.get("configuration", "auto"))
    patch_ov = ov.get("patch_size")

    configs: dict[str, dict[str, Any]] = {}
    if spatial_dims == 3:
        p3 = patch_ov if patch_ov is not None and len(patch_ov) == 3 else None
        configs["3d"] = {"target_spacing": [float(x) for x in target], "slice_axis": None, "network_dims": 3}
        configs["3d"].update(_configuration(target, shape, budget, levels, p3))
        # 2D: slices across the coarsest axis (the plane of highest resolution), source spacing kept along it
        axis = int(np.argmax(target)) if float(target.max()) > float(target.min()) * 1.001 else 2
        inplane = [a for a in range(3) if a != axis]
        p2 = patch_ov if patch_ov is not None and len(patch_ov) == 2 else None
        t2 = target.copy()
        t2[axis] = 0.0
        configs["2d"] = {"target_spacing": [float(x) for x in t2], "slice_axis": axis, "network_dims": 2}
        configs["2d"].update(_configuration(target[inplane], shape[inplane], budget, levels, p2))
        # slices per volume per step: about as many voxels per step as the 3D configuration
        ratio = np.prod(configs["3d"]["patch_size"]) / max(np.prod(configs["2d"]["patch_size"]), 1)
        configs["2d"]["batch_factor"] = int(np.clip(round(float(ratio)), 1, 8))
    else:
        configs["2d"] = {"target_spacing": [float(x) for x in target], "slice_axis": None, "network_dims": 2}
        configs["2d"].update(_configuration(target, shape, budget, levels, patch_ov))
    name, reason = choose_configuration(
        configs, [float(x) for x in target], requested=requested, budget_minutes=budget_minutes
    )
    chosen = configs[name]

    crop = dict(crop_rule(modality))
    shrink = float(fp.get("crop_fraction", 1.0))
    norm: dict[str, Any] = {}
    if modality == "CT":
        f = fp["foreground"]
        norm = {
            "clip": list(ov.get("clip", [f["p00_5"], f["p99_5"]])),
            "mean": float(ov.get("norm_mean", f["mean"])),
            "std": float(ov.get("norm_std", max(f["std"], 1e-3))),
        }
    elif crop["mode"] == "nonzero":
        use = shrink < NONZERO_NORM_SHRINK
        norm = {
            "nonzero_mask": use,
            "reason": f"cropping to the non-zero region keeps {shrink:.0%} of the voxels "
            + (
                "(< 75 %): z-score inside the non-zero mask, background kept at 0"
                if use
                else "(>= 75 %): z-score over the image"
            ),
        }
    # a label never lies on an exactly-zero voxel of a zero-background data set (skull-stripped MR):
    # predictions there are background (nnU-Net sets what lies outside its non-zero crop to background)
    zero_bg = bool(norm.get("nonzero_mask")) and float(fp.get("labels_on_zero", 1.0)) < 1e-3
    norm_layer = str(ov.get("norm_layer", "auto"))
    if norm_layer == "auto":
        norm_layer = "batch"
        layer_reason = (
            "batch norm: its statistics are the training set's, so a window of constant intensity (zero "
            "background) gets the prediction learnt for such regions; instance norm maps any constant "
            "window to the same arbitrary output"
        )
    else:
        layer_reason = f"requested in the config (plan.norm_layer: {norm_layer})"
    plan = {
        "configuration": name,
        "configuration_reason": reason,
        "target_spacing": chosen["target_spacing"],
        "patch_size": chosen["patch_size"],
        "strides": chosen["strides"],
        "divisor": chosen["divisor"],
        "network_dims": chosen["network_dims"],
        "slice_axis": chosen["slice_axis"],
        "batch_factor": int(chosen.get("batch_factor", 1)),
        "configurations": configs,
        "crop": crop,
        "norm": norm,
        "norm_layer": norm_layer,
        "norm_layer_reason": layer_reason,
        "zero_is_background": zero_bg,
        "resampled_median_shape": [float(round(x, 1)) for x in shape],
        "max_patch_voxels": budget,
    }
    log.info(
        "plan: %s configuration (%s); spacing %s mm, patch %s, strides %s; crop %s; norm layer %s",
        name,
        reason,
        plan["target_spacing"],
        plan["patch_size"],
        plan["strides"],
        crop["mode"],
        norm_layer,
    )
    return plan
