"""How well a classifier's Grad-CAM maps localise lesions: pointing game, map Dice, faithfulness, sanity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from medseg.explain.cam import Method
from medseg.explain.maps import classifier_cams
from medseg.metrics.localisation import (
    deletion_auc,
    map_dice,
    map_iou,
    pointing_game,
    randomisation_check,
    randomise_weights,
)
from medseg.transforms.classification import preprocess

__all__ = ["localisation_report"]


def localisation_report(
    model: nn.Module,
    info: dict[str, Any],
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    method: Method = "gradcam",
    layer: str | None = None,
    n_deletion: int = 12,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Localisation figures of a classifier's maps on images with lesion masks.

    Parameters
    ----------
    model, info : a trained classifier (:func:`medseg.tasks.classification.load_classifier`)
    images : ``(H, W[, 3])`` uint8 images of one size; masks : their ``(H, W)`` bool lesion masks
    method, layer : Grad-CAM variant and target layer
    n_deletion : images (the first ones) whose deletion AUC is computed
    seed : seed of the weight randomisation and the random deletion orders

    Returns
    -------
    dict: pointing game (fraction of hits), Dice / IoU of the Otsu-thresholded map, the deletion AUC
    of the maps and of random deletion orders, the randomisation sanity check (Spearman correlation
    with the maps of a weight-randomised copy, BatchNorm statistics re-estimated on the same
    images), a centre-point baseline pointing game, and the per-image ``maps`` ``(N, 1, H, W)``,
    ``hits`` and ``dice``.
    """
    cams = classifier_cams(model, info, images, method=method, layer=layer, batch_size=batch_size)
    maps = cams.stacked()
    x = preprocess(list(images), info)
    ref = np.stack(masks)[:, None]
    hits = pointing_game(maps, ref)
    dice = map_dice(maps, ref)
    iou = map_iou(maps, ref)
    # centre prior: a map peaking at the image centre (what a map with no information would score)
    h, w = ref.shape[2:]
    yy, xx = np.mgrid[0:h, 0:w]
    centre = -((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2).astype(np.float64)
    centre_hits = pointing_game(np.broadcast_to(centre, ref.shape[:1] + centre.shape).copy(), ref[:, 0])
    # randomisation sanity check (Adebayo et al. 2018): same images, same target classes
    rnd = randomise_weights(model, seed=seed, calibrate=x)
    rnd_cams = classifier_cams(
        rnd, info, images, method=method, layer=cams.layer, target=cams.targets, batch_size=batch_size
    )
    sanity = randomisation_check(maps, rnd_cams.stacked())
    aucs, rand_aucs = [], []
    for i in range(min(n_deletion, len(images))):
        tgt = int(cams.targets[i])
        aucs.append(deletion_auc(model, x[i], maps[i, 0], tgt, steps=16))
        rand_aucs.append(deletion_auc(model, x[i], maps[i, 0], tgt, steps=16, order="random", seed=seed + i))
    return {
        "layer": cams.layer,
        "method": method,
        "n_images": len(images),
        "pointing_game": float(np.mean(hits)),
        "pointing_game_centre_baseline": float(np.mean(centre_hits)),
        "cam_dice": float(np.nanmean(dice)),
        "cam_iou": float(np.nanmean(iou)),
        "deletion_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "deletion_auc_random": float(np.mean(rand_aucs)) if rand_aucs else float("nan"),
        "randomisation": sanity,
        "maps": maps,
        "hits": hits,
        "dice": dice,
    }
