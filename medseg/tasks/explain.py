"""``medseg explain``: Grad-CAM / Grad-CAM++ maps of a trained classifier run, per input image.

Segmentation and detection runs are explained by :func:`medseg.tasks.explain_runs.explain_run`
(``explain`` hands them over).

``explain(model_dir, inputs, out, ...)`` loads a classification run
(:func:`medseg.tasks.classification.load_classifier`), takes its inputs like every predict command
(:func:`medseg.tasks.inputs.expand_inputs`: files, folders, the ``test`` list of a datalist by
default), reads the pixels like every 2D task (:func:`medseg.io.read_image_uint8`), computes the
maps at each image's own size (:func:`medseg.explain.maps.classifier_cams`: preprocessing exactly
as in training) and writes

    <out>/cams/<case>_cam.png    heat-map overlay on the image (medseg.review.overlay.heatmap_2d)
    <out>/cams/<case>_cam.npy    the map itself, float32 (H, W) in [0, 1], aligned with the image
    <out>/explain.csv, .json     one row per case (the cohort table: source, split, status, reason,
                                 flags, outputs, then target / predicted class and probability)
    <out>/report.html            the review report (images, Grad-CAM maps, predictions)
    <out>/run.json               provenance (medseg run folder)

Cases run through the cohort engine (:mod:`medseg.tasks.cohort`): an image that cannot be read is
skipped with its reason, the others are processed.

From Python: :func:`medseg.explain.gradcam` on a model of :func:`medseg.load_model` (any task).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.config import load_config
from medseg.engine.device import describe_device, select_device
from medseg.errors import ConfigError, InputError, MissingFileError
from medseg.explain.cam import Method
from medseg.explain.maps import classifier_cams
from medseg.explain.writers import save_cam_png
from medseg.io import as_rgb, read_image_uint8
from medseg.review.cases import ReviewCase
from medseg.review.overlay import save_png, shrink
from medseg.runs import Run
from medseg.tasks.classification import load_classifier
from medseg.tasks.cohort import CaseOutputs, CaseResult, finish_cohort, run_cohort
from medseg.tasks.explain_runs import explain_run
from medseg.tasks.inputs import CaseInput, expand_inputs, refuse_series_for_2d
from medseg.tasks.ood import check_ood_2d, check_ood_mode, read_reference
from medseg.utils import atomic_write

__all__ = ["explain", "explain_images", "resolve_target"]

log = logging.getLogger("medseg.explain")


def resolve_target(target: Any, class_names: Sequence[str]) -> int | None:
    """A class given by index or name -> its index (None stays None: the predicted class).

    Raises ConfigError naming the allowed classes.
    """
    if target is None or (isinstance(target, str) and target.strip().lower() in ("", "pred", "predicted")):
        return None
    names = list(class_names)
    if isinstance(target, str) and target in names:
        return names.index(target)
    try:
        idx = int(target)
    except (TypeError, ValueError):
        raise ConfigError(
            f"unknown target class {target!r}; use an index 0..{len(names) - 1} or one of {', '.join(names)}"
        ) from None
    if not 0 <= idx < len(names):
        raise ConfigError(
            f"target class index {idx} is out of range; the model has {len(names)} classes ({', '.join(names)})"
        )
    return idx


def explain_images(
    model: nn.Module,
    info: dict[str, Any],
    images: Sequence[np.ndarray],
    names: Sequence[str],
    out_dir: str | Path,
    *,
    method: Method = "gradcam",
    target: int | None = None,
    layer: str | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Grad-CAM maps of a classifier for 2D images; writes ``<case>_cam.png`` and ``<case>_cam.npy``.

    Parameters
    ----------
    model, info : from :func:`medseg.tasks.classification.load_classifier`.
    images : ``(H, W)`` or ``(H, W, 3)`` uint8 arrays (:func:`medseg.io.read_image_uint8`).
    names : one case id per image (used in file names; never a DICOM value).
    out_dir : folder receiving the files.
    method : "gradcam" or "gradcampp".
    target : class index, or None for each image's predicted class.
    layer : target layer (default: :func:`medseg.explain.cam.default_target_layer`).
    device : where the maps are computed.
    batch_size : images per Grad-CAM batch.

    Returns
    -------
    one dict per image: ``case_id``, ``map`` (``(H, W)`` float32 array in [0, 1] at the image's size),
    ``png``, ``npy`` (paths), ``target`` / ``predicted`` (class index), ``probabilities`` (list),
    ``layer``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.to(torch.device(device)).eval()
    temperature = float(info.get("temperature", 1.0))
    cams = classifier_cams(
        model, info, images, method=method, layer=layer, target=target, batch_size=batch_size, names=names
    )
    probs = torch.softmax(cams.logits.float() / temperature, 1).numpy()
    results: list[dict[str, Any]] = []
    for i, (img, cid, m) in enumerate(zip(images, names, cams.maps)):
        png = save_cam_png(img, m, out_dir / f"{cid}_cam.png")
        npy = out_dir / f"{cid}_cam.npy"
        with atomic_write(npy, suffix=".npy") as tmp:
            np.save(tmp, m)
        results.append(
            {
                "case_id": cid,
                "map": m,
                "png": png,
                "npy": npy,
                "target": int(cams.targets[i]),
                "predicted": int(probs[i].argmax()),
                "probabilities": probs[i].tolist(),
                "layer": cams.layer,
            }
        )
    return results


def explain(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    method: str = "gradcam",
    target: Any = None,
    layer: str | None = None,
    device: str = "auto",
    force: bool = False,
    split: str = "test",
    ood: str = "warn",
    series: str | int | None = None,
) -> dict[str, Any]:
    """Grad-CAM / Grad-CAM++ maps of a trained classifier for each input image.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` with ``task: classification``.
    inputs : image files (PNG/JPEG/TIFF/BMP), folders of images (recursively), or a datalist JSON.
    out : output folder (a medseg run folder; see the module docstring for its content).
    method : "gradcam" (default) or "gradcampp".
    target : class index or name to explain; default: each image's predicted class.
    layer : target layer name; default: the model's (see :func:`medseg.explain.cam.default_target_layer`).
    device : "auto" | "cpu" | "cuda" | "cuda:N".
    force : move an existing ``out`` aside instead of failing.
    split : list of a datalist input: "test" (default), "validation", "training" or "all".
    series : refused (a ConfigError): 2D image files have no series.
    ood : "warn" | "refuse" | "off": images unlike the training images are flagged, skipped, or not checked.

    Returns
    -------
    The cohort summary (``cases``, ``ok``, ``skipped``, ``skipped_cases``, ``table`` (explain.csv),
    ``report``, ``exit_code`` ...) plus ``method``, ``layer`` and ``cams`` (folder).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.yaml").is_file():
        raise MissingFileError("not a trained medseg run folder (no config.yaml)", model_dir)
    task = getattr(load_config(model_dir / "config.yaml"), "task", None)
    if method not in ("gradcam", "gradcampp"):
        raise ConfigError(f"unknown method {method!r}; use gradcam or gradcampp")
    if task in ("segmentation", "detection"):  # maps of a class region / around detections, per case
        m: Method = "gradcampp" if method == "gradcampp" else "gradcam"
        return explain_run(
            model_dir, list(inputs), out, method=m, target=target, layer=layer, device=device, force=force,
            split=split, series=series,
        )  # fmt: skip
    refuse_series_for_2d(series, "explain")
    if task != "classification":
        raise InputError(f"`medseg explain` explains classification, segmentation and detection runs, not {task!r}")
    if method not in ("gradcam", "gradcampp"):
        raise ConfigError(f"unknown method {method!r}; use gradcam or gradcampp")
    check_ood_mode(ood)
    cam_method: Method = "gradcampp" if method == "gradcampp" else "gradcam"
    dev = select_device(device)
    model, info = load_classifier(model_dir, map_location=dev)
    class_names = list(info["class_names"])
    tgt = resolve_target(target, class_names)
    cases = expand_inputs(inputs, kind="image2d", split=split)
    reference = read_reference(model_dir)
    identity = json.dumps([str(model_dir.resolve()), [str(i) for i in inputs], split, method, target, layer, ood])
    run = Run.create(out, None, force=force, command="explain", identity=identity)

    def one(case: CaseInput, files: CaseOutputs) -> CaseResult:
        cid = case.case_id
        img = read_image_uint8(case.image)
        reasons = check_ood_2d(img, reference, ood, case.source)
        files.path("cams", f"{cid}_cam.png")
        files.path("cams", f"{cid}_cam.npy")
        r = explain_images(
            model, info, [img], [cid], run.path / "cams", method=cam_method, target=tgt, layer=layer, device=dev
        )[0]
        files.add("cam_png", r["png"])
        files.add("cam_map", r["npy"])
        thumb = save_png(shrink(as_rgb(img)), files.path("thumbnails", f"{cid}.png"))
        files.add("thumbnail", thumb)
        probs = r["probabilities"]
        values = {
            "method": method,
            "layer": r["layer"],
            "target_class": class_names[r["target"]],
            "target_probability": round(float(probs[r["target"]]), 6),
            "predicted_class": class_names[r["predicted"]],
            "predicted_probability": round(float(max(probs)), 6),
        }
        review = ReviewCase(
            case_id=cid,
            task="explain",
            thumbnail=str(thumb.resolve()),
            cam=str(Path(r["png"]).resolve()),
            prediction=class_names[r["predicted"]],
            probability=round(float(max(probs)), 4),
            needs_review=bool(reasons),
        )
        flags = ["ood", "needs_review"] if reasons else []
        return CaseResult.of(case, flags=flags, ood_reasons=reasons, values=values, review=review)

    with run:
        run.set(
            device=describe_device(dev),
            model_dir=str(model_dir.resolve()),
            method=method,
            target=None if tgt is None else class_names[tgt],
        )
        with run.stage("gradcam"):
            results = run_cohort(cases, one, out=run.path, command="explain")
        ok = [r for r in results if r.ok]
        details = {"method": method, "layer": ok[0].values["layer"] if ok else layer, "cams": str(run.path / "cams")}
        summary = finish_cohort(
            run, results, command="explain", task="explain", title="medseg Grad-CAM review", details=details
        )
    return summary.to_dict()
