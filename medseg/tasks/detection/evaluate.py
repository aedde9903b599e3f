"""``evaluate``: score detections against reference points (P/R/F1 per image and pooled, AP).

Images are scored through the cohort engine (:mod:`medseg.tasks.cohort`) into a new run folder
that is never overwritten.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError, MissingFileError
from medseg.io.registry import format_of
from medseg.metrics.detection import average_precision, detection_scores, pooled_scores, radius_in_pixels
from medseg.runs import Run
from medseg.tasks.cohort import CaseOutputs, CaseResult, finish_cohort, run_cohort
from medseg.tasks.detection.annotations import PointSet, centroids_from_mask, read_instance_mask, read_points_table
from medseg.tasks.inputs import CaseInput
from medseg.utils import atomic_write_csv, atomic_write_text

__all__ = ["evaluate", "read_predictions", "read_reference"]

log = logging.getLogger("medseg.detection")

#: default matching radius in pixels (3 µm at 0.5 µm/px, about half a nucleus diameter)
DEFAULT_RADIUS_PX = 6.0

_DETECTIONS_SUFFIX = "_detections.csv"


def _empty() -> PointSet:
    return (np.zeros((0, 2)), [], np.zeros(0))


def read_predictions(pred: Path) -> dict[str, PointSet]:
    """``{image stem: (points, class names, scores)}`` from a ``detect`` output folder or one CSV."""
    if pred.is_dir():
        files = sorted(pred.glob(f"*{_DETECTIONS_SUFFIX}"))
        if not files:
            raise MissingFileError(
                "no *_detections.csv files in the prediction folder (output of 'medseg detect')", pred
            )
        out: dict[str, PointSet] = {}
        for f in files:
            d = read_points_table(f)
            out[f.name[: -len(_DETECTIONS_SUFFIX)]] = d.get("", next(iter(d.values()), _empty()))
        return out
    return {Path(k).stem: v for k, v in read_points_table(pred).items()}


def read_reference(ref: Path) -> dict[str, PointSet]:
    """``{image stem: (points, class names, scores)}`` from a points CSV or a folder of instance masks.

    A mask's objects are its labels' centroids, of class ``"object"``.
    """
    if not ref.is_dir():
        return {Path(k).stem: v for k, v in read_points_table(ref).items()}
    refs: dict[str, PointSet] = {}
    for f in sorted(ref.iterdir()):
        if f.is_file() and format_of(f) == "image2d":
            c = centroids_from_mask(read_instance_mask(f))
            refs[f.stem] = (c, ["object"] * len(c), np.ones(len(c)))
    return refs


def evaluate(
    pred: str | Path,
    ref: str | Path,
    out: str | Path | None = None,
    radius: float | None = None,
    pixel_size: float | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Score detections against reference points: P/R/F1 per image and pooled, AP.

    Parameters
    ----------
    pred : output folder of :func:`~medseg.tasks.detection.detect` (``*_detections.csv``) or one CSV
        ``image,x,y[,score,class]``.
    ref : points CSV ``image,x,y[,class]``, or a folder of instance masks (``<stem>.tif/.png``; centroids).
    out : a new run folder for ``evaluation.csv`` (per image and class), ``evaluation.json`` (pooled)
        and ``evaluate.csv``/``.json`` (one row per image, the cohort table); default
        ``<pred>_evaluation`` beside ``pred``. Never overwritten (``force`` moves it aside).
    radius : matching radius in pixels, or in µm when ``pixel_size`` (µm/px) is given; default 6 px
        (3 µm at 0.5 µm/px, about half a nucleus diameter).
    force : move an existing output folder aside.

    Scores are class-agnostic ("all": every prediction vs every reference point) and, for each
    predicted class that also occurs in the reference, per class. Images with predictions but
    no reference rows count as images without objects; when no image name matches at all, an
    InputError reports the mismatch. With a detect output folder, the images scored are those
    in the folder; with one predictions CSV, every image of either file (an image without rows
    in the predictions CSV has no detections).
    """
    pred, ref = Path(pred), Path(ref)
    r_px = DEFAULT_RADIUS_PX if radius is None else (radius_in_pixels(radius, pixel_size) if pixel_size else radius)
    r_px = float(r_px)
    preds = read_predictions(pred)
    refs = read_reference(ref)
    if pred.is_dir():
        # a detect output folder lists every processed image (a CSV even without detections):
        # score those; reference images that were not processed are left out
        names = sorted(preds)
        left = len(set(refs) - set(preds))
        if left:
            log.info("%d reference image(s) have no prediction file in %s: not scored", left, pred)
    else:
        names = sorted(set(preds) | set(refs))
    if preds and refs and not (set(preds) & set(refs)):
        raise InputError(
            f"no predicted image matches a reference image (e.g. {sorted(preds)[:3]} vs "
            f"{sorted(refs)[:3]}): mismatched image names",
            pred,
        )
    classes = sorted({c for v in preds.values() for c in v[1]} & {c for v in refs.values() for c in v[1]})
    out_dir = (
        Path(out) if out is not None else pred.with_name(f"{pred.stem if pred.is_file() else pred.name}_evaluation")
    )
    identity = json.dumps([str(pred.resolve()), str(ref.resolve()), r_px])
    run = Run.create(out_dir, None, force=force, command="evaluate", identity=identity)
    scored: dict[str, dict[str, tuple[dict[str, Any], tuple[np.ndarray, np.ndarray], np.ndarray]]] = {}

    def score(case: CaseInput, _files: CaseOutputs) -> CaseResult:
        n = case.case_id
        pp0, pc, ps0 = preds.get(n, _empty())
        rp0, rc, _ = refs.get(n, _empty())
        groups: dict[str, tuple[dict[str, Any], tuple[np.ndarray, np.ndarray], np.ndarray]] = {}
        for group in ["all"] + classes:
            pp, ps, rp = pp0, ps0, rp0
            if group != "all":
                pp, ps = pp[np.asarray(pc) == group], ps[np.asarray(pc) == group]
                rp = rp[np.asarray(rc) == group]
            groups[group] = (detection_scores(pp, rp, r_px), (pp, ps), rp)
        scored[n] = groups
        s = groups["all"][0]
        values = {
            k: (round(s[k], 4) if isinstance(s[k], float) else s[k])
            for k in ("tp", "fp", "fn", "precision", "recall", "f1")
        }
        return CaseResult(n, str(pred), values={"reference": n in refs, **values})

    with run:
        results = run_cohort([CaseInput(n, pred) for n in names], score, out=out_dir, command="evaluate")
        done = [n for n in names if n in scored]
        res_groups: dict[str, Any] = {}
        table = []
        for group in ["all"] + classes:
            per = [scored[n][group][0] for n in done]
            dets = [scored[n][group][1] for n in done]
            rf = [scored[n][group][2] for n in done]
            for n, s in zip(done, per):
                table.append(
                    [
                        n,
                        group,
                        s["tp"],
                        s["fp"],
                        s["fn"],
                        f"{s['precision']:.4f}",
                        f"{s['recall']:.4f}",
                        f"{s['f1']:.4f}",
                    ]
                )
            res_groups[group] = {**pooled_scores(per), "average_precision": average_precision(dets, rf, r_px)}
        atomic_write_csv(
            out_dir / "evaluation.csv", ["image", "class", "tp", "fp", "fn", "precision", "recall", "f1"], table
        )
        report = {"radius_px": r_px, "pixel_size_um": pixel_size, "images": len(done), "pooled": res_groups}
        atomic_write_text(out_dir / "evaluation.json", json.dumps(report, indent=2) + "\n")
        details: dict[str, Any] = {
            f"{g}_{k}": round(v[k], 4)
            for g, v in res_groups.items()
            for k in ("f1", "precision", "recall", "average_precision")
        }
        details.update(radius_px=r_px, output=str(out_dir / "evaluation.json"))
        summary = finish_cohort(run, results, command="evaluate", task="detection", details=details, report=False)
    return summary.to_dict()
