"""Segment -> lesions -> classify each: ``medseg classify --lesions`` (and ``pipelines/lesion_pipeline.py``).

:func:`classify_lesions` takes scans with their label maps (a ``medseg segment`` output folder, or a
datalist whose entries have ``image`` and ``label``), splits the chosen classes into lesions
(:func:`medseg.metrics.lesions.find_lesions`), crops each lesion as the classifier was trained
(:func:`medseg.tasks.classification.volumes.crop_for`), and writes per lesion:

- a row of ``lesions/<case>_lesions.csv`` and of the cohort's ``lesions.csv``: the lesion's
  measurements, the calibrated probability of the positive class, the call at every operating point
  chosen at training and the predicted class at the chosen one;
- ``lesion_views/<case>_L<id>.png``: the crop's three central planes (axial, coronal, sagittal,
  radiological orientation) and ``..._cam.png``: its 3D Grad-CAM on those planes, with the pointing
  game and CAM Dice against the lesion mask (columns ``cam_pointing_hit``, ``cam_dice``);
- optionally a DICOM SEG per DICOM case, one segment per lesion, its class and probability in the
  segment description;
- ``report.html`` with a row per lesion.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.config import LesionVolumeSection
from medseg.engine.device import describe_device, select_device
from medseg.errors import ConfigError, InputError, LabelMismatchError
from medseg.explain.cam import Method, grad_cam
from medseg.explain.maps import resize_map
from medseg.io import load, save_nifti, write_dicom_seg
from medseg.metrics.lesions import LESION_COLUMNS, Lesion, find_lesions
from medseg.metrics.localisation import map_dice, pointing_game
from medseg.models.classifier import CubeViews
from medseg.review.cases import ReviewCase
from medseg.review.draw2d import heatmap_2d
from medseg.review.png import save_png
from medseg.review.report import write_report
from medseg.runs import Run
from medseg.tasks.classification.predict import load_classifier, predict_logits, softmax
from medseg.tasks.classification.volumes import crop_for
from medseg.tasks.cohort import CaseOutputs, CaseResult, finish_cohort, run_cohort
from medseg.tasks.inputs import CaseInput, expand_inputs, resolve_series
from medseg.tasks.lesions.instances import resolve_lesion_classes, write_cohort_lesions
from medseg.tasks.ood import check_ood_image, check_ood_mode, read_reference
from medseg.transforms.classification import normalize_lite
from medseg.transforms.lesion_crop import crop_grid_affine, lesion_crop
from medseg.utils import atomic_write_records

__all__ = ["classify_lesions", "lesion_cases", "crop_planes", "lesion_cam"]

log = logging.getLogger("medseg.lesions")

#: SNOMED CT (category, type) of a lesion segment: morphologically altered structure / lesion
_LESION_CODE = (("49755003", "SCT", "Morphologically Altered Structure"), ("52988006", "SCT", "Lesion"))


def lesion_cases(inputs: Sequence[str | Path], split: str = "test") -> list[CaseInput]:
    """Scan + label-map cases: the ok rows of ``medseg segment`` folders (``segment.json``; the series that
    ``segment --series`` chose, recorded in its ``run.json``, in ``entry["series"]``), and datalist entries
    with ``image`` and ``label``.

    Raises InputError for an input that is neither (or a datalist entry without a label map).
    """
    cases: list[CaseInput] = []
    for raw in inputs:
        p = Path(raw)
        table = p / "segment.json"
        if p.is_dir() and table.is_file():
            info = json.loads((p / "run.json").read_text()) if (p / "run.json").is_file() else {}
            series = info.get("series")  # the series `segment --series` read in a multi-series folder
            for row in json.loads(table.read_text()):
                labels = (row.get("outputs") or {}).get("labels")
                if row.get("status") == "ok" and labels:
                    entry = {"series": series} if series is not None else {}
                    cases.append(CaseInput(row["case_id"], Path(row["source"]), label=Path(labels), entry=entry))
            continue
        found = expand_inputs([p], kind="volume", split=split)
        missing = [c.case_id for c in found if c.label is None]
        if missing:
            raise InputError(
                "classify --lesions needs each scan's label map: give a 'medseg segment' output folder or a "
                f"datalist whose entries have 'label' (none for {', '.join(missing[:3])})",
                p,
            )
        cases += found
    return cases


def crop_planes(crop: np.ndarray) -> list[np.ndarray]:
    """The three central planes (axial, coronal, sagittal) of a RAS-aligned ``(G, G, G)`` crop, each
    ``(G, G)`` in radiological display orientation (superior / anterior up, patient's right on the left)."""
    return [_display(p) for p in _native_planes(crop)]


def _montage(tiles: Sequence[np.ndarray], scale: int = 4) -> np.ndarray:
    rgb = [np.repeat(t, 3, axis=-1).reshape(*t.shape, 3) if t.ndim == 2 else t for t in tiles]
    gap = np.full((rgb[0].shape[0], 2, 3), 255, np.uint8)
    row = np.concatenate([x for t in rgb for x in (t, gap)][:-1], axis=1)
    return np.kron(row, np.ones((scale, scale, 1), np.uint8)).astype(np.uint8)


def _native_planes(a: np.ndarray) -> list[np.ndarray]:
    g = [s // 2 for s in a.shape]
    return [a[:, :, g[2]], a[:, g[1], :], a[g[0], :, :]]


def _display(p: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(p[::-1, ::-1].T)


def _cam_views(cam_planes: Sequence[np.ndarray], crop: np.ndarray) -> np.ndarray:
    """The crop's three planes with a map on each (maps in the planes' native index order)."""
    planes = _native_planes(crop)
    return _montage(
        [heatmap_2d(_display(img), _display(c), alpha=0.5) for img, c in zip(planes, cam_planes, strict=True)]
    )


def lesion_cam(
    model: torch.nn.Module, crop: np.ndarray, lesion_mask: np.ndarray, target: int, method: Method = "gradcam"
) -> tuple[list[np.ndarray], np.ndarray | None, bool, float]:
    """Grad-CAM of one lesion crop, its pointing game hit and CAM Dice against the lesion mask.

    A 3D network gets a 3D Grad-CAM on the ``(G, G, G)`` crop (scored in 3D). The 2.5D model
    (:class:`~medseg.models.classifier.CubeViews`) sees one 2D image whose pixel (u, v) holds the
    three planes' voxels: its 2D Grad-CAM is that pixel's weight in every plane, scored against
    the union of the mask's three central planes.

    Returns
    -------
    (the map on the three central planes, native index order; the 3D map ``(G, G, G)`` of a 3D
    network, else None; pointing-game hit; CAM Dice).
    """
    x = normalize_lite(torch.from_numpy(crop))[None]
    if isinstance(model, CubeViews):
        x2 = model.views_of(x)[0]
        c2 = np.asarray(grad_cam(model.net, x2, target=target, method=method).detach().cpu())[0]
        c2 = resize_map(c2, lesion_mask.shape[:2])  # views resized for the network: back to the crop's grid
        m2 = (
            np.logical_or.reduce(_native_planes(lesion_mask))
            if model.views == "planes"
            else lesion_mask[..., lesion_mask.shape[-1] // 2]
        )
        hit = bool(pointing_game(c2[None, None], m2[None, None], spatial_dims=2)[0])
        dice = float(map_dice(c2[None, None], m2[None, None], spatial_dims=2)[0])
        return [c2, c2, c2], None, hit, dice
    c3 = np.asarray(grad_cam(model, x, target=target, method=method).detach().cpu())[0, 0]
    hit = bool(pointing_game(c3[None, None], lesion_mask[None, None], spatial_dims=3)[0])
    dice = float(map_dice(c3[None, None], lesion_mask[None, None], spatial_dims=3)[0])
    return _native_planes(c3), c3, hit, dice


def _dicom_seg(
    case: CaseInput, img: Any, instances: np.ndarray, rows: list[dict[str, Any]], files: CaseOutputs, model: str
) -> None:
    """One segment per lesion (``lesion <id>``), its call and probability in the segment description."""
    if not case.image.is_dir() and img.meta.get("format") != "dicom":
        return
    names = {int(r["lesion_id"]): f"lesion {r['lesion_id']}" for r in rows}
    codes = {n: _LESION_CODE for n in names.values()}
    path = files.path("dicom_seg", f"{case.case_id}_lesions.seg.dcm")
    descriptions = {int(r["lesion_id"]): f"{r['prediction']} (p={r['probability']:.2f})" for r in rows}
    write_dicom_seg(
        instances.astype(np.uint8),
        case.image,
        path,
        names,
        codes=codes,
        model_name=model,
        series_description="medseg lesions",
        segment_descriptions=descriptions,
    )
    files.add("dicom_seg", path)


def classify_lesions(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    classes: Sequence[str | int] | None = None,
    min_ml: float = 0.0,
    operating_point: str | None = None,
    device: str = "auto",
    split: str = "test",
    force: bool = False,
    cam: bool = True,
    dicom_seg: bool = False,
    method: Method = "gradcam",
    command: str = "classify",
    target: str | int | None = None,
    series: str | int | None = None,
    ood: str = "warn",
) -> dict[str, Any]:
    """Classify every lesion of segmented scans with a lesion classifier (a ``volume:`` run).

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` with ``task: classification`` and ``volume:``.
    inputs : ``medseg segment`` output folders, or datalists with ``image`` + ``label`` entries.
    out : output folder (a run folder; see the module doc for its files).
    classes : lesion classes of the label maps (values; names when the maps have none); default: every
        non-zero value.
    min_ml : drop lesions smaller than this (mL).
    operating_point : the point of the predicted class (default: the run's ``operating_points.use``).
    device, split, force : as in every predict command.
    cam : compute the 3D Grad-CAM of each lesion (pictures, ``lesion_cams/<case>_L<id>_cam.nii.gz``
        for 3D networks, pointing game, CAM Dice).
    dicom_seg : write a per-lesion DICOM SEG for DICOM cases.
    method : ``gradcam`` or ``gradcampp``.
    command : the name of the per-case table (``classify`` or ``explain``: ``medseg explain --lesions``).
    target : the class whose Grad-CAM is computed (a name or index; default the positive class).
    series : a folder holding several DICOM series: which one (as ``medseg segment --series``; default the
        series the segment run read, else medseg's automatic choice).
    ood : ``warn`` | ``refuse`` | ``off``: scans unlike the classifier's training scans (modality, spacing,
        field of view, intensity; its ``ood_reference.json``) are flagged, skipped, or not checked.

    Returns
    -------
    The cohort summary plus ``lesions`` (the cohort's lesions.csv), ``n_lesions``, the operating point
    and its threshold, and with ``cam`` the pointing-game hit rate and mean CAM Dice over the lesions.
    """
    model_dir = Path(model_dir)
    model, info = load_classifier(model_dir)
    if "volume" not in info:
        raise ConfigError(f"{model_dir.name} classifies 2D images: --lesions needs a run trained with volume:")
    vol = LesionVolumeSection(**info["volume"])
    names = list(info["class_names"])
    pos = int(info.get("positive_index", 1))
    point = operating_point or info.get("use", "default")
    points = {k: float(v) for k, v in info["operating_points"].items()}
    if point not in points:
        raise ConfigError(f"operating point {point!r} not available; available: {sorted(points)}")
    temperature = float(info.get("temperature", 1.0))
    cam_class = _class_of(target, names, pos)
    check_ood_mode(ood)
    reference = read_reference(model_dir)
    table = resolve_lesion_classes(classes) if classes else None
    dev = select_device(device)
    model.to(dev)
    cases = lesion_cases(inputs, split)
    identity = json.dumps(
        [str(model_dir.resolve()), [str(i) for i in inputs], classes, min_ml, point, split, cam_class, series, ood],
        default=str,
    )
    run = Run.create(out, force=force, command=f"{command} --lesions", identity=identity)
    review: list[ReviewCase] = []
    hits: list[float] = []
    dices: list[float] = []

    def one(case: CaseInput, files: CaseOutputs) -> CaseResult:
        img = load(resolve_series(case.image, series if series is not None else case.entry.get("series")))
        reasons = check_ood_image(img, reference, ood, case.source, modality=vol.scan_modality, spatial_dims=3)
        image = np.asarray(img.array)[0]
        affine = np.asarray(img.affine, float)
        assert case.label is not None
        lab = load(case.label)
        labels = np.asarray(lab.array)[0]
        if labels.shape != image.shape:
            raise LabelMismatchError(f"label map {labels.shape} and scan {image.shape} differ", case.label)
        instances, lesions = find_lesions(labels, affine, table, min_ml=min_ml)
        crops = [crop_for(image, affine, instances == les.lesion_id, vol) for les in lesions]
        x = torch.from_numpy(np.stack(crops)) if crops else torch.zeros((0, 1, vol.grid, vol.grid, vol.grid))
        p = softmax(predict_logits(model, x, dev), temperature) if crops else np.zeros((0, len(names)))
        rows = [_row(les, p[i], names, pos, points, point) for i, les in enumerate(lesions)]
        case_review = []
        for i, les in enumerate(lesions):
            case_review.append(
                _lesion_views(
                    case, les, crops[i], rows[i], files, model, cam, affine, instances, vol, cam_class, method
                )
            )
        path = files.path("lesions", f"{case.case_id}_lesions.csv")
        atomic_write_records(path, rows, list(rows[0]) if rows else list(LESION_COLUMNS))
        files.add("lesions", path)
        if dicom_seg and rows:
            _dicom_seg(case, img, instances, rows, files, f"{model_dir.name}")
        review.extend(case_review)
        calls = [r["prediction"] for r in rows]
        hits.extend(float(r["cam_pointing_hit"]) for r in rows if "cam_pointing_hit" in r)
        dices.extend(float(r["cam_dice"]) for r in rows if "cam_dice" in r)
        values = {"n_lesions": len(rows), **{f"n_{n}": calls.count(n) for n in names}}
        return CaseResult.of(case, flags=["ood"] if reasons else [], ood_reasons=reasons, values=values)

    with run:
        run.set(
            model=str(model_dir.resolve()),
            device=describe_device(dev),
            operating_point=point,
            crop=vol.model_dump(),
            cam_class=names[cam_class] if cam else None,
            series=series,
            ood_mode=ood if reference is not None else f"{ood} (the model has no training reference: no check)",
        )
        t0 = time.perf_counter()
        with run.stage("classify_lesions"):
            results = run_cohort(cases, one, out=run.path, command="classify --lesions")
        cohort = write_cohort_lesions(run.path / "lesions.csv", results)
        ok_ids = {r.case_id for r in results if r.ok}
        rows_review = [rc for rc in review if rc.case_id.rsplit("_L", 1)[0] in ok_ids]
        rows_review += [r.review_case("classification") for r in results if not r.ok]
        summary = finish_cohort(
            run,
            results,
            command=command,
            task="classification",
            details={
                "lesions": str(cohort),
                "n_lesions": sum(int(r.values.get("n_lesions", 0)) for r in results if r.ok),
                "operating_point": point,
                "threshold": points[point],
                **(
                    {
                        "cam_pointing_game": round(float(np.mean(hits)), 3),
                        "cam_dice_mean": round(float(np.mean(dices)), 3),
                    }
                    if hits
                    else {}
                ),
            },
            seconds=time.perf_counter() - t0,
            report=False,
        )
        summary.report = str(write_report(run.path, rows_review, title="medseg lesions review", summary={}))
        run.set(summary={**summary.to_dict()})
    return summary.to_dict()


def _class_of(target: str | int | None, names: Sequence[str], default: int) -> int:
    """The class index of ``target`` (a class name, or an index given as int or digits); ``default`` for None."""
    if target is None:
        return default
    if str(target) in names:
        return list(names).index(str(target))
    try:
        k = int(target)
    except ValueError:
        raise ConfigError(f"--target {target!r}: not a class of the model ({', '.join(names)})") from None
    if not 0 <= k < len(names):
        raise ConfigError(f"--target {k}: the model has {len(names)} classes ({', '.join(names)})")
    return k


def _row(
    les: Lesion, p: np.ndarray, names: list[str], pos: int, points: dict[str, float], point: str
) -> dict[str, Any]:
    """A lesion's table row: measurements, probability, calls at every operating point."""
    prob = float(p[pos])
    other = next(i for i in range(len(names)) if i != pos) if len(names) == 2 else None
    row: dict[str, Any] = {**les.row(), "probability": round(prob, 4)}
    for k, thr in points.items():
        row[f"call_{k}"] = names[pos] if prob >= thr else (names[other] if other is not None else "")
    row["prediction"] = row[f"call_{point}"] if len(names) == 2 else names[int(np.argmax(p))]
    return row


def _lesion_views(
    case: CaseInput,
    les: Lesion,
    crop: np.ndarray,
    row: dict[str, Any],
    files: CaseOutputs,
    model: torch.nn.Module,
    cam: bool,
    affine: np.ndarray,
    instances: np.ndarray,
    vol: LesionVolumeSection,
    pos: int,
    method: Method,
) -> ReviewCase:
    """The lesion's review row: its crop in three planes and (``cam``) its 3D Grad-CAM on them."""
    lid = f"{case.case_id}_L{les.lesion_id}"
    planes = files.path("lesion_views", f"{lid}.png")
    save_png(_montage(crop_planes(crop[0])), planes)
    rc = ReviewCase(
        case_id=lid,
        task="classification",
        prediction=str(row["prediction"]),
        probability=row["probability"],
        thumbnail=str(planes.relative_to(files.root)),
        volumes_ml={les.class_name: round(les.volume_ml, 3)},
        metrics={"diameter_3d_mm": round(les.diameter_3d_mm, 1)},
    )
    if cam:
        centre = (
            np.asarray(affine)[:3, :3] @ np.argwhere(instances == les.lesion_id).mean(0) + np.asarray(affine)[:3, 3]
        )
        mask = (
            lesion_crop(
                (instances == les.lesion_id).astype(np.float32),
                affine,
                centre,
                size_mm=vol.size_mm,
                grid=vol.grid,
                window=(0, 1),
            )[0]
            > 127
        )
        maps, c3, hit, dice = lesion_cam(model, crop, mask, pos, method)
        if c3 is not None:  # the 3D map in the scan's world coordinates: opens over the scan in a viewer
            nii = files.path("lesion_cams", f"{lid}_cam.nii.gz")
            save_nifti(c3[None].astype(np.float32), nii, affine=crop_grid_affine(centre, vol.size_mm, vol.grid))
        row.update(cam_pointing_hit=hit, cam_dice=round(dice, 3))
        path = files.path("lesion_views", f"{lid}_cam.png")
        save_png(_cam_views(maps, crop[0]), path)
        rc.cam = str(path.relative_to(files.root))
        rc.metrics.update(cam_pointing_hit=float(hit), cam_dice=round(dice, 3))
    return rc
