"""Self-configuration, as nnU-Net does it: a dataset fingerprint and the plan derived from it.

- :func:`fingerprint` reads the training cases once (RAS orientation) and records spacings,
  shapes, and foreground intensity statistics (percentiles 0.5 / 99.5, mean, std).
- :func:`make_plan` turns it into a target spacing (median spacing), a patch size that fits the
  voxel budget (memory), U-Net strides (no down-sampling along an axis whose spacing is still
  more than twice the finest one: anisotropic thick-slice CT) and the CT normalisation.

Both are saved in the run folder as ``plan.json``; every value can be overridden in the
config's ``plan:`` section (``None`` = planned).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import Compose, MapTransform, Orientationd

from medseg.errors import ConfigError
from medseg.transforms.pipeline import RAS_LABELS, loader

__all__ = ["fingerprint", "make_plan"]

log = logging.getLogger("medseg.engine")


def fingerprint(
    items: Sequence[Mapping[str, Any]], *, spatial_dims: int, modality: str, max_cases: int = 16, seed: int = 0
) -> dict[str, Any]:
    """Dataset fingerprint of ``items`` (``{"image": path, "label": path}`` dicts).

    Returns
    -------
    dict with ``n_cases``, ``spacings`` (list of per-axis mm), ``shapes`` (voxels), ``median_spacing``,
    ``median_shape``, ``foreground`` intensity stats ``{p00_5, p99_5, mean, std}`` (HU for CT) and
    ``channels``.
    """
    rng = np.random.default_rng(seed)
    chosen = list(items)[:max_cases]
    keys = ["image", "label"]
    t: list[MapTransform] = [loader(keys, modality, spatial_dims)]
    if modality != "RGB":
        t.append(Orientationd(keys, axcodes="RAS"[:spatial_dims], labels=RAS_LABELS))
    load = Compose(t)
    spacings, shapes, fg = [], [], []
    channels = 1
    for it in chosen:
        d = load({k: str(v) for k, v in it.items() if k in keys})
        img, lab = d["image"], d["label"]
        channels = int(img.shape[0])
        aff = np.asarray(img.affine, dtype=float)
        sp = np.linalg.norm(aff[:spatial_dims, :spatial_dims], axis=0)
        spacings.append([float(x) for x in sp])
        shapes.append([int(x) for x in img.shape[1:]])
        arr = np.asarray(img)[0]
        m = np.asarray(lab)[0] > 0
        vals = arr[m] if m.any() else arr.ravel()
        if vals.size > 20000:
            vals = rng.choice(vals, 20000, replace=False)
        fg.append(vals.astype(np.float64))
    allfg = np.concatenate(fg) if fg else np.zeros(1)
    return {
        "n_cases": len(chosen),
        "spacings": spacings,
        "shapes": shapes,
        "channels": channels,
        "median_spacing": [float(x) for x in np.median(np.array(spacings), axis=0)],
        "median_shape": [float(x) for x in np.median(np.array(shapes), axis=0)],
        "foreground": {
            "p00_5": float(np.percentile(allfg, 0.5)),
            "p99_5": float(np.percentile(allfg, 99.5)),
            "mean": float(allfg.mean()),
            "std": float(allfg.std()),
        },
    }


def _round_up(x: int, m: int) -> int:
    return int(math.ceil(x / m) * m)


def make_plan(
    fp: Mapping[str, Any],
    *,
    spatial_dims: int,
    modality: str,
    levels: int = 4,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The training / inference plan from a fingerprint (nnU-Net's rules, simplified).

    Parameters
    ----------
    fp : output of :func:`fingerprint`.
    spatial_dims, modality : of the task.
    levels : U-Net depth (number of resolution levels).
    overrides : config ``plan:`` values; a non-None value wins over the planned one.

    Returns
    -------
    dict with ``target_spacing`` (mm), ``patch_size`` (voxels), ``strides`` (per level, per axis),
    ``norm`` (``clip``/``mean``/``std`` for CT, else empty) and ``resampled_median_shape``.
    """
    ov = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    med_sp = np.array(fp["median_spacing"], float)
    med_shape = np.array(fp["median_shape"], float)
    target = np.array(ov.get("target_spacing", med_sp), float)
    if target.size != spatial_dims:
        raise ConfigError(f"plan.target_spacing needs {spatial_dims} values, got {target.tolist()}")
    shape = med_shape * med_sp / target  # median shape after resampling (voxels)
    budget = int(ov.get("max_patch_voxels", 64 * 64 * 48))

    # strides: halve an axis only while its (current) spacing is within 2x of the finest one and
    # the patch along it stays >= 8 voxels (nnU-Net's anisotropy rule)
    def plan_strides(patch: np.ndarray) -> list[list[int]]:
        sp = target.copy()
        size = patch.astype(float).copy()
        strides = [[1] * spatial_dims]
        for _ in range(levels - 1):
            s = [2 if (sp[a] <= 2 * sp.min() and size[a] / 2 >= 4) else 1 for a in range(spatial_dims)]
            strides.append(s)
            sp = sp * np.array(s)
            size = size / np.array(s)
        return strides

    if "patch_size" in ov:
        patch = np.array(ov["patch_size"], int)
    else:
        patch = np.maximum(np.round(shape), 8)
        # shrink the axis with the largest physical extent until the patch fits the budget
        while np.prod(patch) > budget:
            a = int(np.argmax(patch * target))
            patch[a] = max(8, int(patch[a] * 0.9))
        patch = patch.astype(int)
    strides = plan_strides(patch)
    div = np.prod(np.array(strides), axis=0)
    if "patch_size" not in ov:
        patch = np.array([_round_up(int(p), int(d)) for p, d in zip(patch, div)])
        strides = plan_strides(patch)
        div = np.prod(np.array(strides), axis=0)
    norm: dict[str, Any] = {}
    if modality == "CT":
        f = fp["foreground"]
        norm = {
            "clip": list(ov.get("clip", [f["p00_5"], f["p99_5"]])),
            "mean": float(ov.get("norm_mean", f["mean"])),
            "std": float(ov.get("norm_std", max(f["std"], 1e-3))),
        }
    plan = {
        "target_spacing": [float(x) for x in target],
        "patch_size": [int(x) for x in patch],
        "strides": [[int(v) for v in s] for s in strides],
        "divisor": [int(x) for x in div],
        "norm": norm,
        "resampled_median_shape": [float(round(x, 1)) for x in shape],
        "max_patch_voxels": budget,
    }
    log.info("plan: spacing %s mm, patch %s, strides %s", plan["target_spacing"], plan["patch_size"], plan["strides"])
    return plan
