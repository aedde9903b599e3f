"""Demo stage ``detection``: synthetic H&E tiles -> nucleus and mitosis detectors -> review cases.

:func:`run_demo` trains a small proximity U-Net (nuclei) and a small mitosis patch CNN briefly on
CPU budgets (:func:`demo_configs`), detects on the held-out tiles, and returns one
:class:`~medseg.review.cases.ReviewCase` per tile plus the validation / test F1 of both detectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np

from medseg.config import DetectionConfig, parse_config
from medseg.data.histology import CLASS_NAMES, write_histology_dataset
from medseg.io import as_rgb, read_image_uint8
from medseg.metrics.detection import detection_scores
from medseg.review.cases import ReviewCase
from medseg.review.overlay import save_png
from medseg.runs import Run
from medseg.tasks.detection import detect, overlay_markers, read_points_csv, read_points_table, train

__all__ = ["demo_configs", "run_demo"]

#: matching radius of the per-tile F1 in pixels (3 µm at 0.5 µm/px)
MATCH_RADIUS_PX = 6.0


def _detection_config(raw: dict[str, Any]) -> DetectionConfig:
    return cast(DetectionConfig, parse_config({"task": "detection", **raw}, cls=DetectionConfig))


def demo_configs(datalist: Path, quick: bool) -> dict[str, DetectionConfig]:
    """The nucleus and mitosis configs of the demo stage (small nets, minute-scale CPU budgets)."""
    # short epochs so the wall-time budget (checked after each epoch) is kept closely; one torch
    # thread: the demo runs on a small shared CPU, where OpenMP threads can stall (see torch_threads)
    nuc = _detection_config(
        {
            "name": "nuclei",
            "method": "proximity",
            "seed": 0,
            "device": "auto",
            "data": {"datalist": str(datalist)},
            "model": {"name": "proximity_unet", "features": [8, 8, 16, 32, 64, 8]},
            "sampling": {"crop_size": 96},
            "cpu_threads": 1,
            "train": {
                "epochs": 30,
                "steps_per_epoch": 6,
                "batch_size": 6,
                "lr": 4e-3,
                "scheduler": "none",
                "max_minutes": 0.12 if quick else 0.55,
            },
        }
    )
    mit = _detection_config(
        {
            "name": "mitosis",
            "method": "mitosis",
            "seed": 0,
            "device": "auto",
            "data": {"datalist": str(datalist)},
            "model": {"name": "mitosis_cnn", "width": 16},
            "sampling": {"mine_every": 3},
            "cpu_threads": 1,
            "train": {
                "epochs": 30,
                "steps_per_epoch": 8,
                "batch_size": 32,
                "lr": 3e-3,
                "scheduler": "none",
                "max_minutes": 0.06 if quick else 0.25,
            },
        }
    )
    return {"nuclei": nuc, "mitosis": mit}


def run_demo(out: Path, quick: bool = False) -> dict[str, Any]:
    """Demo stage ``detection``: synthetic H&E tiles -> train nucleus + mitosis detectors briefly ->
    detect on held-out tiles -> evaluate -> review cases (counts, density, F1, overlay).

    Returns
    -------
    ``{"summary": {nuclei_val_f1, nuclei_test_f1, mitosis_val_f1, mitosis_test_f1}, "cases": [ReviewCase]}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    datalist = write_histology_dataset(
        out / "data",
        n_train=4 if quick else 8,
        n_val=1 if quick else 2,
        n_test=2 if quick else 3,
        seed=0,
        mitosis_rate=0.08,
    )
    ds = json.loads(datalist.read_text())
    test_images = [(datalist.parent / e["image"]).resolve() for e in ds["test"]]
    ref = read_points_csv(datalist.parent / ds["points"], CLASS_NAMES)
    summary: dict[str, Any] = {}
    results = {}
    for key, cfg in demo_configs(datalist, quick).items():
        run = Run.create(out / f"{key}_run", cfg, force=True, command="demo")
        with run:
            s = train(cfg, run)
        det = detect(run.path, test_images, out / f"{key}_detections", device=cfg.device, force=True)
        results[key] = det
        summary[f"{key}_val_f1"] = s.get("val_f1")
        summary[f"{key}_test_f1"] = s.get("test_f1")
    cases = []
    for f in test_images:
        stem = f.stem
        img = as_rgb(read_image_uint8(f))
        pts_ref, cls_ref, _ = ref.get(f.name, (np.zeros((0, 2)), np.zeros(0, int), None))
        metrics, counts, density, outputs = {}, {}, {}, {}
        all_pts, all_cls = [], []
        for key, target_ids in (("nuclei", [0, 1]), ("mitosis", [1])):
            d = results[key]["per_image"].get(stem)
            if d is None:
                continue
            pr = read_points_table(Path(d["detections"]))[""]
            r = pts_ref[np.isin(cls_ref, target_ids)] if len(pts_ref) else pts_ref
            cname = "nucleus" if key == "nuclei" else "mitosis"
            metrics[f"f1_{cname}"] = round(detection_scores(pr[0], r, MATCH_RADIUS_PX)["f1"], 4)
            counts[cname] = int(d["count"])
            density[cname] = round(float(d["density_per_mm2"]), 1)
            outputs[f"{cname}_csv"] = d["detections"]
            outputs[f"{cname}_geojson"] = d["geojson"]
            all_pts.append(pr[0])
            all_cls += [cname] * len(pr[0])
        ov = overlay_markers(img, np.concatenate(all_pts) if all_pts else np.zeros((0, 2)), all_cls)
        thumb = str(save_png(ov, out / f"{stem}_overlay.png"))
        cases.append(
            ReviewCase(
                case_id=f"histology-{stem}",
                task="detection",
                thumbnail=thumb,
                overlays=[thumb],
                counts=counts,
                density_per_mm2=density,
                metrics=metrics,
                outputs=outputs,
            )
        )
    return {"summary": summary, "cases": cases}
