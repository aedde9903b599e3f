"""How well a saliency / class activation map localises the object it should explain.

MONAI has no localisation metrics for saliency maps, so they are written here (on top of MONAI's
Dice/IoU and scipy's Spearman correlation):

- :func:`pointing_game` (Zhang et al. 2016): is the map's maximum inside the object (within a
  tolerance)?
- :func:`map_dice` / :func:`map_iou`: overlap of the thresholded map (Otsu by default) with the mask.
- :func:`deletion_auc` (Petsiuk et al. 2018, "RISE"): delete the most salient pixels first and
  follow the target class probability; a faithful map makes it fall fast (low AUC).
- :func:`randomisation_check` (Adebayo et al. 2018, "Sanity checks for saliency maps"): the maps
  of a model with re-initialised weights must differ from the trained model's (low Spearman rank
  correlation); :func:`randomise_weights` makes that model.

Maps and masks are arrays/tensors ``(*S)``, ``(1, *S)`` or batches ``(B, 1, *S)``; one value per
image is returned as a NumPy array.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from monai.metrics import compute_iou
from monai.metrics.meandice import compute_dice
from scipy.integrate import trapezoid
from scipy.ndimage import distance_transform_edt, gaussian_filter
from scipy.stats import spearmanr
from skimage.filters import threshold_otsu
from torch import nn

from medseg.errors import InputError

__all__ = [
    "pointing_game",
    "map_dice",
    "map_iou",
    "threshold_map",
    "deletion_curve",
    "deletion_auc",
    "randomise_weights",
    "rank_correlation",
    "randomisation_check",
    "summarise",
]

log = logging.getLogger("medseg.metrics")


def _np(x) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _batch(maps, masks, spatial_dims: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Both as ``(B, *S)`` arrays."""
    a, b = _np(maps).astype(np.float64), _np(masks)
    if a.shape != b.shape:
        raise InputError(f"map shape {a.shape} and mask shape {b.shape} differ")
    if spatial_dims is None:
        # (H, W) one 2D map; (B, H, W) 2D batch; (B, 1, H, W) 2D batch; (B, X, Y, Z) 3D batch;
        # (B, 1, X, Y, Z) 3D batch. A single 3D volume needs spatial_dims=3.
        spatial_dims = {2: 2, 3: 2, 4: 2 if a.shape[1] == 1 else 3, 5: 3}.get(a.ndim, a.ndim - 2)
    lead = a.ndim - spatial_dims
    if lead == 0:
        a, b = a[None], b[None]
    elif lead == 1:
        pass
    elif lead == 2:
        if a.shape[1] != 1:
            raise InputError(f"expected one map per image (B, 1, *S), got shape {a.shape}")
        a, b = a[:, 0], b[:, 0]
    else:
        raise InputError(f"cannot read maps of shape {a.shape} with {spatial_dims} spatial dims")
    return a, b.astype(bool)


def pointing_game(maps, masks, tolerance: float = 0.0, spatial_dims: int | None = None) -> np.ndarray:
    """Pointing game hits: is the (first) maximum of each map inside its mask (within ``tolerance``)?

    Parameters
    ----------
    maps : ``(B, 1, *S)`` / ``(B, *S)`` / ``(*S)`` saliency maps (any scale).
    masks : same shape, binary object masks.
    tolerance : distance in voxels; a maximum within this distance of the mask counts as a hit
        (Zhang et al. use 15 px at 224 px). 0: the maximum must be in the mask.
    spatial_dims : 2 or 3; inferred for the usual shapes ((H, W), (B, H, W), (B, 1, H, W), (B, 1, X, Y, Z)).

    Returns
    -------
    np.ndarray of bool, one per image. A constant map (no maximum) is a miss; an image whose mask
    is empty is a miss too (nothing to point at): filter such images before averaging.
    """
    a, m = _batch(maps, masks, spatial_dims)
    hits = np.zeros(len(a), dtype=bool)
    for i in range(len(a)):
        if not m[i].any() or np.ptp(a[i]) == 0:
            continue
        peak = np.unravel_index(int(np.argmax(a[i])), a[i].shape)
        if tolerance <= 0:
            hits[i] = bool(m[i][peak])
        else:
            hits[i] = bool(distance_transform_edt(~m[i])[peak] <= tolerance)
    return hits


def threshold_map(maps, threshold: Literal["otsu"] | float = "otsu") -> np.ndarray:
    """Binary masks from maps: ``map >= t`` per image, ``t`` by Otsu (skimage) or a fixed value in [0, 1].

    Maps are min-max normalised per image first. ``maps``: ``(B, *S)`` (any leading layout: the
    first axis is the image). Returns bool array of the same shape.
    """
    a = _np(maps).astype(np.float64)
    out = np.zeros(a.shape, dtype=bool)
    for i in range(a.shape[0]):
        v = a[i]
        lo, hi = float(v.min()), float(v.max())
        if hi - lo <= 0:
            continue
        v = (v - lo) / (hi - lo)
        if threshold == "otsu":
            t = float(threshold_otsu(v))
        else:
            t = float(threshold)
            if not 0.0 <= t <= 1.0:
                raise InputError(f"map threshold must be 'otsu' or in [0, 1], got {threshold}")
        out[i] = v >= t if t > 0 else v > 0
    return out


def _overlap(maps, masks, threshold, spatial_dims, kind: str) -> np.ndarray:
    a, m = _batch(maps, masks, spatial_dims)
    pred = torch.as_tensor(threshold_map(a, threshold)[:, None].astype(np.float32))
    ref = torch.as_tensor(m[:, None].astype(np.float32))
    if kind == "dice":
        v = compute_dice(pred, ref, include_background=True, ignore_empty=True)
    else:
        v = compute_iou(pred, ref, include_background=True, ignore_empty=True)
    return v[:, 0].numpy().astype(np.float64)


def map_dice(maps, masks, threshold: Literal["otsu"] | float = "otsu", spatial_dims: int | None = None) -> np.ndarray:
    """Dice of each thresholded map (see :func:`threshold_map`) with its mask (MONAI ``compute_dice``).

    Returns one value per image; NaN where the mask is empty.
    """
    return _overlap(maps, masks, threshold, spatial_dims, "dice")


def map_iou(maps, masks, threshold: Literal["otsu"] | float = "otsu", spatial_dims: int | None = None) -> np.ndarray:
    """IoU (Jaccard) of each thresholded map with its mask (MONAI ``compute_iou``); NaN for empty masks."""
    return _overlap(maps, masks, threshold, spatial_dims, "iou")


# ----------------------------------------------------------------------------- faithfulness


@torch.no_grad()
def deletion_curve(
    model: nn.Module,
    image: torch.Tensor,
    saliency,
    target: int,
    steps: int = 20,
    baseline: Literal["mean", "zero", "blur"] | float = "blur",
    batch_size: int = 16,
    order: Literal["saliency", "random"] = "saliency",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Target-class probability as the most salient voxels are deleted (Petsiuk et al. 2018).

    Parameters
    ----------
    model : classifier ``(B, C, *S) -> (B, K)`` logits (softmax is applied; sigmoid when K == 1).
    image : ``(C, *S)`` one image.
    saliency : ``(*S)`` or ``(1, *S)`` map.
    target : class index whose probability is followed.
    steps : number of deletion steps (the curve has ``steps + 1`` points, fraction 0 .. 1).
    baseline : what deleted voxels become: the image mean, zero, a strongly blurred copy of the
        image (default; avoids out-of-distribution black holes), or a constant.
    order : "saliency" (most salient first) or "random" (the reference curve of a map with no
        information).

    Returns
    -------
    (fractions, probabilities) : arrays of length ``steps + 1``.
    """
    x = torch.as_tensor(image).detach().float()
    dev = next(model.parameters()).device
    s = (
        _np(saliency).astype(np.float64).reshape(x.shape[1:])
        if _np(saliency).size == int(np.prod(x.shape[1:]))
        else None
    )
    if s is None:
        raise InputError(f"saliency shape {tuple(_np(saliency).shape)} does not match image shape {tuple(x.shape)}")
    n = s.size
    if order == "random":
        rank = np.random.default_rng(seed).permutation(n)
    else:
        rank = np.argsort(-s.ravel(), kind="stable")
    if baseline == "mean":
        base = torch.full_like(x, float(x.mean()))
    elif baseline == "zero":
        base = torch.zeros_like(x)
    elif baseline == "blur":
        sigma = [0] + [max(d / 8.0, 1.0) for d in x.shape[1:]]
        base = torch.as_tensor(gaussian_filter(x.numpy(), sigma=sigma), dtype=x.dtype)
    else:
        base = torch.full_like(x, float(baseline))
    fracs = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fracs * n).astype(int)
    order_pos = np.empty(n, dtype=np.int64)
    order_pos[rank] = np.arange(n)
    order_pos_t = torch.as_tensor(order_pos.reshape(x.shape[1:]))
    was = model.training
    model.eval()
    probs: list[float] = []
    for start in range(0, len(counts), batch_size):
        chunk = counts[start : start + batch_size]
        keep = torch.stack([(order_pos_t >= c) for c in chunk]).unsqueeze(1)  # (b, 1, *S) True = kept
        xb = torch.where(keep, x.unsqueeze(0), base.unsqueeze(0)).to(dev)
        logits = model(xb).float()
        p = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, 1)[:, target]
        probs += p.cpu().tolist()
    model.train(was)
    return fracs, np.asarray(probs)


def deletion_auc(model: nn.Module, image: torch.Tensor, saliency, target: int, steps: int = 20, **kw) -> float:
    """Area under the deletion curve (trapezoid over fraction 0..1); lower = more faithful map.

    See :func:`deletion_curve` for the parameters. Compare with ``order="random"`` (a map with no
    information) measured on the same image.
    """
    f, p = deletion_curve(model, image, saliency, target, steps=steps, **kw)
    return float(trapezoid(p, f))


# ----------------------------------------------------------------------------- sanity check


def randomise_weights(
    model: nn.Module, seed: int = 0, layers: Sequence[str] | None = None, calibrate: torch.Tensor | None = None
) -> nn.Module:
    """A copy of ``model`` with re-initialised weights (Adebayo et al. 2018 model randomisation).

    Every submodule with ``reset_parameters`` (convolutions, linear layers, norms; norms also reset
    their running statistics) is re-initialised with its default initialiser, seeded. ``layers``
    restricts it to modules whose name starts with one of the given prefixes (a cascading
    randomisation step); default: all ("full randomisation").

    ``calibrate`` (a batch ``(B, C, *S)``, optional): re-estimate the normalisation layers' running
    statistics of the randomised network on these images. Without it a deep randomised network
    with reset BatchNorm statistics often saturates (e.g. ReLU6 clipping everywhere), so all its
    maps are constant and the check passes trivially; with it the randomised maps are real maps
    of a network that has learned nothing.
    """
    rnd = copy.deepcopy(model)
    g = torch.random.fork_rng(devices=[])
    with g:
        torch.manual_seed(seed)
        n = 0
        for name, m in rnd.named_modules():
            if layers is not None and not any(name.startswith(p) for p in layers):
                continue
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
                n += 1
            if hasattr(m, "reset_running_stats") and callable(m.reset_running_stats):
                m.reset_running_stats()
    if n == 0:
        raise InputError("no layer with reset_parameters() was found to randomise")
    if calibrate is not None:
        norms = [m for m in rnd.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
        rnd.train()
        dev = next(rnd.parameters()).device
        with torch.no_grad():
            rnd(torch.as_tensor(calibrate).float().to(dev))
        for m, mom in zip(norms, saved):
            m.momentum = mom
    rnd.eval()
    return rnd


def rank_correlation(map_a, map_b) -> float:
    """Spearman rank correlation (scipy) between two maps of the same shape (NaN if one is constant)."""
    a, b = _np(map_a).ravel(), _np(map_b).ravel()
    if a.shape != b.shape:
        raise InputError(f"maps have different sizes ({a.size} vs {b.size})")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def randomisation_check(maps_trained, maps_random, max_abs_correlation: float = 0.5) -> dict[str, float | bool]:
    """Adebayo et al. sanity check: trained-model maps vs randomised-model maps.

    Parameters
    ----------
    maps_trained, maps_random : ``(B, ...)`` maps of the same images (first axis = image).
    max_abs_correlation : the check passes when the mean absolute Spearman correlation is below it.

    Returns
    -------
    dict with ``spearman_mean`` (signed mean), ``spearman_abs_mean``, ``n`` (images with
    non-constant maps) and ``passed``.
    """
    a, b = _np(maps_trained), _np(maps_random)
    if a.shape != b.shape:
        raise InputError(f"trained maps {a.shape} and randomised maps {b.shape} differ in shape")
    rhos = np.array([rank_correlation(a[i], b[i]) for i in range(a.shape[0])])
    # a constant randomised map shares no ranking with the trained one: correlation 0
    rhos = np.where(np.isnan(rhos), 0.0, rhos)
    mean_abs = float(np.mean(np.abs(rhos))) if len(rhos) else float("nan")
    return {
        "spearman_mean": float(np.mean(rhos)) if len(rhos) else float("nan"),
        "spearman_abs_mean": mean_abs,
        "n": int(len(rhos)),
        "passed": bool(mean_abs < max_abs_correlation),
    }


def summarise(values: np.ndarray) -> float:
    """Mean ignoring NaN (NaN when all are NaN)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
