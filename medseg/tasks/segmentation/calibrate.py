"""The needs-review threshold of a segmentation run, calibrated on its validation cases at training time.

A fixed uncertainty threshold means nothing across models: a model trained on other data has
another uncertainty scale (the demo model flagged 39 of 40 in-distribution phantoms at 0.2). At the
end of training, :func:`calibrate_review` segments every validation case with the best checkpoint
exactly as ``medseg segment`` will (source geometry, the run's ``infer`` settings), and stores the
``infer.review_percentile`` (95th by default) of their uncertainties as the run's threshold in
``run.json`` (``review``), with the per-case uncertainties and Dice. ``medseg segment`` then flags a
case when its uncertainty is above it: about 5 % of cases like the validation cases are flagged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.config import SegmentationConfig
from medseg.errors import MedsegError
from medseg.runs import Run
from medseg.tasks.provenance import item_paths
from medseg.tasks.segmentation.files import read_case_image
from medseg.tasks.segmentation.predict import load_segmenter, predict_case, reference_dice

__all__ = ["calibrate_review"]

log = logging.getLogger("medseg.segmentation")


def calibrate_review(run: Run, cfg: SegmentationConfig, val_items: Sequence[Any]) -> dict[str, Any]:
    """Calibrate and record the run's needs-review threshold on its validation cases.

    Parameters
    ----------
    run : the finished training run (``checkpoints/best.pt``).
    cfg : its config (``infer`` settings, ``review_percentile``, ``label_map``).
    val_items : the validation datalist items (``image`` path(s), ``label``).

    Returns
    -------
    the ``review`` record of run.json: ``threshold`` (None without validation cases),
    ``percentile``, ``n_cases``, ``uncertainties``, ``dice_mean`` per case, ``uncertainty`` method.
    """
    pct = float(cfg.infer.review_percentile)
    record: dict[str, Any] = {"threshold": None, "percentile": pct, "n_cases": 0, "uncertainty": cfg.infer.uncertainty}
    if not val_items:
        record["reason"] = "no validation cases"
        run.set(review=record)
        return record
    sm = load_segmenter(run.path, cfg.device, {"review_threshold": None})
    sd = int(sm.meta["spatial_dims"])
    uncs, dices = [], []
    for it in val_items:
        try:
            img = read_case_image(item_paths(it), spatial_dims=sd)
            res = predict_case(sm.model, img, meta=sm.meta, infer=sm.infer, device=sm.device, post=cfg.postprocess)
        except (MedsegError, OSError, RuntimeError, ValueError) as e:
            log.warning("calibration: validation case %s left out (%s)", item_paths(it)[0].name, e)
            continue
        uncs.append(round(float(res["uncertainty"]), 5))
        label = it.get("label") if isinstance(it, dict) else None
        if label:
            d = reference_dice(item_paths({"image": label})[0], res["labels"], cfg.label_map, sm.class_names)
            dices.append(d.get("dice_mean"))
    if uncs:
        record.update(threshold=round(float(np.percentile(uncs, pct)), 5), n_cases=len(uncs))
    else:
        record["reason"] = "no validation case could be segmented"
    record.update(uncertainties=uncs, dice_mean=dices)
    run.set(review=record)
    log.info(
        "needs-review threshold: %s (%g th percentile of %d validation case(s))", record["threshold"], pct, len(uncs)
    )
    return record
