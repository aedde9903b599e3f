"""Demo stage ``explain``: Grad-CAM maps of the classification stage's lesion classifier.

Uses what the ``classification`` stage left beside this stage's folder (no retraining):

- the trained run ``<out>/../classification/run`` (loaded with
  :func:`medseg.tasks.classification.load_classifier`),
- its synthetic lesion data ``<out>/../classification/data/dataset.json`` (held-out ``test``
  images with their lesion masks, taken like every predict command takes a datalist:
  :func:`medseg.tasks.inputs.expand_inputs`).

For a handful of test images it writes heat-map PNGs (``<out>/cams``) and scores the maps against
the lesion masks: pointing game (map maximum inside the lesion) and the Dice of the Otsu-thresholded
map. Budget: ~30 s on 2 CPU cores (``quick``: ~10 s).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.explain.cam import Method
from medseg.io import read_image_uint8
from medseg.metrics.localisation import map_dice, pointing_game
from medseg.review.cases import ReviewCase
from medseg.review.overlay import overlay_2d, save_png
from medseg.tasks.classification import load_classifier
from medseg.tasks.explain import explain_images
from medseg.tasks.inputs import expand_inputs

__all__ = ["run_demo"]

log = logging.getLogger("medseg.explain")


def _find_datalist(cls_dir: Path) -> Path | None:
    p = cls_dir / "data" / "dataset.json"
    if p.is_file():
        return p
    found = sorted(cls_dir.glob("*/dataset.json"))
    return found[0] if found else None


def run_demo(out: Path, quick: bool = False) -> dict[str, Any]:
    """Grad-CAM on held-out lesion images of the classification stage.

    Parameters
    ----------
    out : this stage's folder (``<demo run>/explain``).
    quick : fewer images (tests).

    Returns
    -------
    ``{"summary": {...}, "cases": [ReviewCase, ...]}``; the summary holds ``pointing_game``,
    ``cam_dice`` (mean over the images), ``method``, ``layer``, ``n_images``. Without a
    classification run the summary says so and no cases are returned.
    """
    t0 = time.perf_counter()
    out = Path(out)
    cls_dir = out.parent / "classification"
    run_dir = cls_dir / "run"
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "checkpoints").is_dir():
        msg = f"no trained classifier at {run_dir} (run the classification stage first)"
        log.warning("explain demo: %s", msg)
        return {"summary": {"skipped": msg}, "cases": []}
    datalist = _find_datalist(cls_dir)
    if datalist is None:
        msg = f"no lesion dataset.json under {cls_dir}"
        log.warning("explain demo: %s", msg)
        return {"summary": {"skipped": msg}, "cases": []}
    out.mkdir(parents=True, exist_ok=True)
    model, info = load_classifier(run_dir)
    class_names = list(info["class_names"])
    try:
        cases_in = expand_inputs([datalist], kind="image2d", split="test")
    except InputError:
        cases_in = []
    cases_in = [c for c in cases_in if c.entry.get("mask")][: 4 if quick else 8]
    if not cases_in:
        return {"summary": {"skipped": f"no test images with masks in {datalist}"}, "cases": []}
    images = [read_image_uint8(c.image) for c in cases_in]
    masks = [read_image_uint8(datalist.parent / str(c.entry["mask"])) > 0 for c in cases_in]
    method: Method = "gradcam"
    res = explain_images(model, info, images, [c.case_id for c in cases_in], out / "cams", method=method)
    maps = np.stack([r["map"] for r in res])[:, None]
    ref = np.stack(masks)[:, None]
    hits = pointing_game(maps, ref)
    dice = map_dice(maps, ref)
    cases = []
    for r, c, hit, d, img, mask in zip(res, cases_in, hits, dice, images, masks):
        thumb = save_png(
            overlay_2d(img, mask.astype(np.uint8), class_names=["background", "lesion"]),
            out / "thumbnails" / f"{r['case_id']}.png",
        )
        p = r["probabilities"]
        ref_label = c.entry.get("label")
        metrics = {"pointing_game_hit": float(hit), "cam_dice": round(float(d), 4)}
        if ref_label is not None:
            metrics["reference_class"] = float(ref_label)
        cases.append(
            ReviewCase(
                case_id=r["case_id"],
                task="explain",
                thumbnail=str(Path(thumb).resolve()),
                cam=str(Path(r["png"]).resolve()),
                prediction=class_names[r["predicted"]],
                probability=round(float(max(p)), 4),
                metrics=metrics,
                outputs={"cam_map": str(Path(r["npy"]).resolve())},
            )
        )
    summary = {
        "method": method,
        "layer": res[0]["layer"],
        "n_images": len(res),
        "pointing_game": round(float(np.mean(hits)), 3),
        "cam_dice": round(float(np.nanmean(dice)), 3),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    log.info(
        "explain demo: pointing game %.2f, CAM Dice %.2f on %d images",
        summary["pointing_game"],
        summary["cam_dice"],
        len(res),
    )
    return {"summary": summary, "cases": cases}
