"""Demo stage ``explain``: Grad-CAM maps of the classification stage's lesion classifier.

Uses what the ``classification`` stage left beside this stage's folder (no retraining):

- the trained run ``<out>/../classification/run`` (loaded with
  :func:`medseg.tasks.classification.load_classifier`),
- its synthetic lesion data ``<out>/../classification/data/dataset.json`` (held-out ``test``
  images with their lesion masks).

For a handful of test images it writes heat-map PNGs (``<out>/cams``) and scores the maps against
the lesion masks: pointing game (map maximum inside the lesion) and the Dice of the Otsu-thresholded
map. Budget: ~30 s on 2 CPU cores (``quick``: ~10 s).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

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
    from medseg.metrics.localisation import map_dice, pointing_game
    from medseg.review.cases import ReviewCase
    from medseg.tasks.classification import load_classifier, read_image
    from medseg.tasks.explain import explain_images

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
    entries = json.loads(datalist.read_text()).get("test") or []
    entries = [e for e in entries if isinstance(e, dict) and e.get("mask")][: 4 if quick else 8]
    if not entries:
        return {"summary": {"skipped": f"no test images with masks in {datalist}"}, "cases": []}
    root = datalist.parent
    images = [read_image(root / e["image"]) for e in entries]
    masks = [read_image(root / e["mask"]) > 0 for e in entries]
    names = [Path(e["image"]).stem for e in entries]
    method = "gradcam"
    res = explain_images(model, info, images, names, out / "cams", method=method, device="cpu")
    maps = np.stack([r["map"] for r in res])[:, None]
    ref = np.stack(masks)[:, None]
    hits = pointing_game(maps, ref)
    dice = map_dice(maps, ref)
    from medseg.review.overlay import overlay_2d, save_png

    cases = []
    for r, e, hit, d, img, mask in zip(res, entries, hits, dice, images, masks):
        thumb = save_png(
            overlay_2d(img, mask.astype(np.uint8), class_names=["background", "lesion"]),
            out / "thumbnails" / f"{r['case_id']}.png",
        )
        p = r["probabilities"]
        ref_label = e.get("label")
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
