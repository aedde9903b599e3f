"""``detect``: cells / mitoses in images with a trained run folder; per image CSV, GeoJSON, overlay, counts.

Inputs are expanded by :func:`medseg.tasks.inputs.expand_inputs` (the rules of every predict
command: files, folders searched recursively, a datalist's ``test`` list or ``split``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from medseg.config import DetectionConfig
from medseg.engine.checkpoint import load_run_model
from medseg.engine.device import select_device
from medseg.engine.tiling import detect_tiled
from medseg.errors import ConfigError, InputError, MissingFileError
from medseg.review.overlay import save_png
from medseg.runs import Run
from medseg.tasks.detection.data import DEFAULT_PIXEL_SIZE_UM, open_image
from medseg.tasks.detection.outputs import overlay_markers, to_geojson, write_detections_csv
from medseg.tasks.detection.params import DetectionParams
from medseg.tasks.detection.scoring import score_map_fn, torch_threads
from medseg.tasks.inputs import expand_inputs
from medseg.utils import atomic_write_csv, atomic_write_text

__all__ = ["detect", "MAX_OVERLAY_PIXELS"]

log = logging.getLogger("medseg.detection")

#: images larger than this (pixels) get no overlay PNG (it would hold the whole image in memory)
MAX_OVERLAY_PIXELS = 25_000_000


def detect(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    device: str = "auto",
    force: bool = False,
    threshold: float | None = None,
    cpu_threads: int | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Detect cells / mitoses in images with a trained run folder.

    Parameters
    ----------
    model_dir : run folder written by :func:`~medseg.tasks.detection.train` (config.yaml,
        checkpoints/, detection.json).
    inputs : image files, folders of images (searched recursively), or a datalist JSON.
    out : output folder (a run folder: run.json, config.yaml); per image ``<case>_detections.csv``
        (x, y, score, class), ``<case>.geojson`` (QuPath), ``<case>_overlay.png``; plus
        ``counts.csv`` (count and density per mm² per image) and ``detect_summary.json``.
    threshold : score threshold (default: the one chosen on validation, in detection.json).
    cpu_threads : torch CPU threads (default: the run config's ``cpu_threads``).
    split : the datalist list to take: ``test`` (default), ``validation``, ``training`` or ``all``.

    Returns
    -------
    Summary dict (images, skipped, total count, threshold, throughput) with ``per_image`` and
    ``skipped_files``. A bad image is reported (``skipped``) and the others finish.
    """
    model_dir = Path(model_dir)
    cases = expand_inputs(inputs, kind="image2d", split=split)
    dev = select_device(device)
    model, cfg, _ = load_run_model(model_dir, map_location=dev)
    if not isinstance(cfg, DetectionConfig):
        raise ConfigError(f"not a detection run (task {cfg.task!r})", model_dir / "config.yaml")
    model.to(dev)
    p = DetectionParams.from_config(cfg)
    info_path = model_dir / "detection.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    default = cfg.postprocess.threshold if cfg.postprocess.threshold != "auto" else 0.5
    thr = float(threshold if threshold is not None else info.get("threshold", default))
    run = Run.create(Path(out), cfg, force=force, command="detect")
    run.set(device=str(dev), model_dir=str(model_dir), threshold=thr)
    with torch_threads(cpu_threads or cfg.cpu_threads), run:
        return _detect_cases_to(run, model, cfg, p, dev, thr, [(c.case_id, c.image) for c in cases])


def _detect_cases_to(
    run: Run,
    model: nn.Module,
    cfg: DetectionConfig,
    p: DetectionParams,
    dev: Any,
    thr: float,
    files: list[tuple[str, Path]],
) -> dict[str, Any]:
    fn = score_map_fn(model, p.method, dev)
    rows: list[list[Any]] = []
    per_image: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    t0 = time.perf_counter()
    n_pixels = 0
    for case_id, f in files:
        try:
            img = open_image(f)
        except (InputError, MissingFileError) as e:
            log.error("skipped %s: %s", f.name, e)
            skipped[f.name] = str(e)
            continue
        n_pixels += img.shape[0] * img.shape[1]
        pts, sc = detect_tiled(
            fn,
            img,
            tile=cfg.infer.tile_size,
            margin=cfg.infer.tile_margin,
            min_distance_px=p.min_distance_px,
            threshold=thr,
            sigma_px=p.sigma_px,
        )
        cls = [p.output_class] * len(pts)
        csv_path = write_detections_csv(run.path / f"{case_id}_detections.csv", pts, sc, cls)
        geojson = atomic_write_text(run.path / f"{case_id}.geojson", json.dumps(to_geojson(pts, cls, sc)) + "\n")
        overlay = None
        if img.shape[0] * img.shape[1] <= MAX_OVERLAY_PIXELS:
            overlay = save_png(overlay_markers(img, pts, cls, sc), run.path / f"{case_id}_overlay.png")
        area_mm2 = img.shape[0] * img.shape[1] * ((cfg.data.pixel_size_um or DEFAULT_PIXEL_SIZE_UM) * 1e-3) ** 2
        per_image[case_id] = {
            "image": str(f),
            "count": len(pts),
            "area_mm2": area_mm2,
            "density_per_mm2": len(pts) / area_mm2,
            "detections": str(csv_path),
            "geojson": str(geojson),
            "overlay": str(overlay) if overlay else None,
        }
        rows.append([case_id, p.output_class, len(pts), f"{area_mm2:.6f}", f"{len(pts) / area_mm2:.2f}"])
    atomic_write_csv(run.path / "counts.csv", ["image", "class", "count", "area_mm2", "density_per_mm2"], rows)
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "images": len(per_image),
        "skipped": len(skipped),
        "class": p.output_class,
        "total_count": int(sum(v["count"] for v in per_image.values())),
        "threshold": round(thr, 4),
        "seconds": round(seconds, 2),
        "megapixels_per_s": round(n_pixels / 1e6 / max(seconds, 1e-9), 3),
    }
    run.write_json("detect_summary.json", {**summary, "per_image": per_image, "skipped_files": skipped})
    summary["per_image"] = per_image
    summary["skipped_files"] = skipped
    return summary
