"""``detect``: cells / mitoses in images with a trained run folder; per image CSV, GeoJSON, overlay, counts.

Inputs are expanded by :func:`medseg.tasks.inputs.expand_inputs` (the rules of every predict
command: files, folders searched recursively, a datalist's ``test`` list or ``split``); the cases
run through the cohort engine (:mod:`medseg.tasks.cohort`): one bad image is skipped with its
reason and its partial outputs removed, the others finish; ``detect.csv``/``.json`` and
``report.html`` are written as by every predict command.
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
from medseg.engine.device import describe_device, select_device, thread_budget, torch_threads
from medseg.engine.tiling import detect_tiled
from medseg.errors import ConfigError
from medseg.io.resolution import read_pixel_size_um
from medseg.io.wsi import is_slide, open_slide
from medseg.review.cases import ReviewCase
from medseg.review.overlay import save_png, shrink
from medseg.runs import Run
from medseg.tasks.cohort import CaseOutputs, CaseResult, Pending, finish_cohort, run_cohort
from medseg.tasks.detection.data import DEFAULT_PIXEL_SIZE_UM, open_image
from medseg.tasks.detection.outputs import overlay_markers, to_geojson, write_detections_csv
from medseg.tasks.detection.params import DetectionParams
from medseg.tasks.detection.scoring import score_map_fn
from medseg.tasks.detection.slides import detect_slide
from medseg.tasks.inputs import CaseInput, expand_inputs, refuse_series_for_2d
from medseg.tasks.ood import check_ood_2d, check_ood_mode, read_reference
from medseg.utils import atomic_write_csv, atomic_write_text

__all__ = ["detect", "image_pixel_size", "MAX_OVERLAY_PIXELS"]

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
    ood: str = "warn",
    series: str | int | None = None,
) -> dict[str, Any]:
    """Detect cells / mitoses in images with a trained run folder.

    Parameters
    ----------
    model_dir : run folder written by :func:`~medseg.tasks.detection.train` (config.yaml,
        checkpoints/, detection.json).
    inputs : image files, folders of images (searched recursively), or a datalist JSON.
    out : output folder (a run folder: run.json, config.yaml); per image ``<case>_detections.csv``
        (x, y, score, class), ``<case>.geojson`` (QuPath), ``<case>_overlay.png``; plus
        ``counts.csv`` (count and density per mm² per image), ``detect.csv``/``.json`` (one row
        per case: status, reason, split, flags, outputs), ``report.html`` and ``detect_summary.json``.
    device : ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
    force : move an existing ``out`` aside instead of failing.
    threshold : score threshold (default: the one chosen on validation, in detection.json).
    cpu_threads : torch CPU threads (default: the run config's ``cpu_threads``).
    split : the datalist list to take: ``test`` (default), ``validation``, ``training`` or ``all``.
    series : refused (a ConfigError): 2D image files have no series.
    ood : ``warn`` | ``refuse`` | ``off``: images unlike the training images (channels, size,
        intensities) are flagged, skipped, or not checked.

    Returns
    -------
    The cohort summary (``cases``, ``ok``, ``skipped``, ``skipped_cases``, ``ood``, ``table``,
    ``report``, ``exit_code`` ...) plus ``class``, ``total_count``, ``threshold``,
    ``megapixels_per_s`` and ``per_image`` ({case id: count, density, files}).
    """
    refuse_series_for_2d(series, "detect")
    model_dir = Path(model_dir)
    check_ood_mode(ood)
    cases = expand_inputs(inputs, kind="image2d", split=split)
    dev = select_device(device)
    model, cfg, ckpt = load_run_model(model_dir, map_location=dev)
    if not isinstance(cfg, DetectionConfig):
        raise ConfigError(f"not a detection run (task {cfg.task!r})", model_dir / "config.yaml")
    model.to(dev)
    p = DetectionParams.from_config(cfg)
    info_path = model_dir / "detection.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    default = cfg.postprocess.threshold if cfg.postprocess.threshold != "auto" else 0.5
    thr = float(threshold if threshold is not None else info.get("threshold", default))
    identity = json.dumps([str(model_dir.resolve()), [str(i) for i in inputs], split, thr, ood])
    run = Run.create(Path(out), cfg, force=force, command="detect", identity=identity)
    run.set(device=describe_device(dev), model_dir=str(model_dir.resolve()), threshold=thr, ood_mode=ood)
    run.set(ensemble=(ckpt.get("meta") or {}).get("ensemble"))  # a cross-validation parent run: its K folds
    with torch_threads(cpu_threads or cfg.cpu_threads or thread_budget()), run:
        return _detect_cases_to(run, model, cfg, p, dev, thr, cases, read_reference(model_dir), ood)


def image_pixel_size(path: Path, trained_um: float | None) -> tuple[float, str]:
    """(µm per pixel, where it came from) of one image: its own OME / ImageJ / TIFF tags, else the run's."""
    own = read_pixel_size_um(path)
    if own is not None:
        if trained_um and abs(own.um - trained_um) > 0.1 * trained_um:
            log.warning(
                "%s: pixel size %.4g µm (%s tags) differs from the training images' %.4g µm: the network sees "
                "objects at another scale; detections may be missed or split",
                path.name,
                own.um,
                own.source,
                trained_um,
            )
        return own.um, own.source
    return (trained_um, "run") if trained_um else (DEFAULT_PIXEL_SIZE_UM, "default")


def _detect_cases_to(
    run: Run,
    model: nn.Module,
    cfg: DetectionConfig,
    p: DetectionParams,
    dev: Any,
    thr: float,
    cases: list[CaseInput],
    reference: dict[str, Any] | None,
    ood: str,
) -> dict[str, Any]:
    fn = score_map_fn(model, p.method, dev)
    t0 = time.perf_counter()
    n_pixels = [0]

    # tiles, context margin and peak finding: the same for images and slides
    tiling: dict[str, Any] = {
        "tile": cfg.infer.tile_size,
        "margin": cfg.infer.tile_margin,
        "min_distance_px": p.min_distance_px,
        "threshold": thr,
        "sigma_px": p.sigma_px,
    }

    def finish(
        case: CaseInput,
        files: CaseOutputs,
        pts: Any,
        sc: Any,
        *,
        area_mm2: float,
        reasons: list[str],
        thumb: str | None,
        overlay: str | None = None,
        um: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> CaseResult:
        """Write the detections (CSV, GeoJSON) and build the case's table and report rows."""
        cid = case.case_id
        cls = [p.output_class] * len(pts)
        files.add("detections", write_detections_csv(files.path(f"{cid}_detections.csv"), pts, sc, cls, um))
        files.add(
            "geojson", atomic_write_text(files.path(f"{cid}.geojson"), json.dumps(to_geojson(pts, cls, sc)) + "\n")
        )
        density = round(len(pts) / area_mm2, 2) if area_mm2 else 0.0
        values: dict[str, Any] = {
            "class": p.output_class,
            "count": len(pts),
            "area_mm2": round(area_mm2, 6),
            "density_per_mm2": density,
            **(extra or {}),
        }
        review = ReviewCase(
            case_id=cid,
            task="detection",
            thumbnail=thumb,
            overlays=[overlay] if overlay else [],
            counts={p.output_class: len(pts)},
            density_per_mm2={p.output_class: density},
            needs_review=bool(reasons),
        )
        flags = ["ood", "needs_review"] if reasons else []
        return CaseResult.of(case, flags=flags, ood_reasons=reasons, values=values, review=review)

    def one(case: CaseInput, files: CaseOutputs) -> CaseResult | Pending:
        if is_slide(case.image, min_pixels=0):  # vendor slides and every tiled pyramidal TIFF
            return slide(case, files)
        cid = case.case_id
        img = open_image(case.image, modality=cfg.data.modality)  # the run's microscopy preset, as in training
        reasons = check_ood_2d(img, reference, ood, case.source)
        pts, sc = detect_tiled(fn, img, **tiling)
        n_pixels[0] += img.shape[0] * img.shape[1]

        def write() -> CaseResult:  # the overlay, thumbnail and tables: written while the next image runs
            thumb = overlay = None
            if img.shape[0] * img.shape[1] <= MAX_OVERLAY_PIXELS:
                rgb = overlay_markers(img, pts, [p.output_class] * len(pts), sc)
                overlay = files.add("overlay", save_png(rgb, files.path(f"{cid}_overlay.png")))
                thumb = str(save_png(shrink(rgb), files.path("thumbnails", f"{cid}.png")).resolve())
            um, um_source = image_pixel_size(case.image, cfg.data.pixel_size_um)  # the image's tags, else the run's
            area_mm2 = img.shape[0] * img.shape[1] * (um * 1e-3) ** 2
            extra = {"pixel_size_um": round(um, 6), "pixel_size_source": um_source}
            return finish(
                case, files, pts, sc, area_mm2=area_mm2, reasons=reasons, thumb=thumb, overlay=overlay, extra=extra
            )

        return Pending(write)

    def slide(case: CaseInput, files: CaseOutputs) -> CaseResult:
        """A whole slide: tiles over tissue, level-0 pixel and µm coordinates, a thumbnail for review."""
        img = open_slide(case.image)
        model_um = cfg.data.pixel_size_um or DEFAULT_PIXEL_SIZE_UM
        try:
            thumb_rgb = img.thumbnail(1024)
            reasons = check_ood_2d(thumb_rgb, reference, ood, case.source)
            if img.mpp and abs(img.mpp / model_um - 1) > 0.25:
                reasons = [*reasons, f"slide pixel size {img.mpp:.3g} µm, the model's {model_um:.3g} µm"]
            um = img.mpp or model_um
            res = detect_slide(fn, img, pixel_size_um=um, **tiling)
        finally:
            img.close()
        f = thumb_rgb.shape[1] / img.shape[1]
        rgb = overlay_markers(thumb_rgb, res.points * f, [p.output_class] * len(res.points), res.scores)
        thumb = str(save_png(rgb, files.path("thumbnails", f"{case.case_id}.png")).resolve())
        n_pixels[0] += int(res.tissue_megapixels * 1e6)
        source = "slide" if img.mpp else ("run" if cfg.data.pixel_size_um else "default")
        extra = {
            "tiles": res.tiles,
            "tiles_with_tissue": res.tiles_run,
            "pixel_size_um": um,
            "pixel_size_source": source,
        }
        return finish(
            case, files, res.points, res.scores, area_mm2=res.tissue_mm2 or 0.0, reasons=reasons, thumb=thumb, um=um,
            extra=extra,
        )  # fmt: skip

    results = run_cohort(cases, one, out=run.path, command="detect")
    seconds = time.perf_counter() - t0
    ok = [r for r in results if r.ok]
    atomic_write_csv(
        run.path / "counts.csv",
        ["image", "class", "count", "area_mm2", "density_per_mm2"],
        [
            [
                r.case_id,
                r.values["class"],
                r.values["count"],
                f"{r.values['area_mm2']:.6f}",
                f"{r.values['density_per_mm2']:.2f}",
            ]
            for r in ok
        ],
    )
    per_image = {
        r.case_id: {
            "image": r.source,
            "count": r.values["count"],
            "area_mm2": r.values["area_mm2"],
            "density_per_mm2": r.values["density_per_mm2"],
            "pixel_size_um": r.values.get("pixel_size_um"),
            "pixel_size_source": r.values.get("pixel_size_source"),
            "detections": r.outputs.get("detections"),
            "geojson": r.outputs.get("geojson"),
            "overlay": r.outputs.get("overlay"),
        }
        for r in ok
    }
    details = {
        "class": p.output_class,
        "total_count": int(sum(r.values["count"] for r in ok)),
        "threshold": round(thr, 4),
        "megapixels_per_s": round(n_pixels[0] / 1e6 / max(seconds, 1e-9), 3),
        "per_image": per_image,
    }
    summary = finish_cohort(
        run,
        results,
        command="detect",
        task="detection",
        title="medseg detection review",
        details=details,
        seconds=seconds,
    )
    out = summary.to_dict()
    run.write_json("detect_summary.json", out)
    return out
