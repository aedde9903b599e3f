"""``medseg explain --model SEG_OR_DET_RUN``: Grad-CAM maps of segmentation and detection runs, per case.

Each case goes through the library API (:func:`medseg.load_model`, :func:`medseg.explain.gradcam`),
so the maps lie on the images as given, and through the cohort engine (a case that cannot be read
or explained is skipped with its reason). Outputs:

    segmentation  <out>/cams/<case>_cam.nii.gz      the map of ``target`` (default: the first foreground
                                                     class) inside its predicted region, on the image's
                                                     grid and affine (2D images: <case>_cam.npy)
                  <out>/cams/<case>_cam_z<k>.png    heat maps of the slices with the most map mass
    detection     <out>/cams/<case>_cam.png, .npy   the map of the score inside a disk around detection
                                                     ``target`` (an index), or of all detections
    both          <out>/explain.csv, .json, report.html, run.json (the cohort table and report)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import ConfigError, InputError
from medseg.explain.cam import Method
from medseg.explain.model_maps import gradcam
from medseg.explain.writers import save_cam_nifti, save_cam_png, save_cam_slices_png
from medseg.review.cases import ReviewCase
from medseg.runs import Run
from medseg.tasks.cohort import CaseOutputs, CaseResult, finish_cohort, run_cohort
from medseg.tasks.inputs import CaseInput, expand_inputs, refuse_series_for_2d
from medseg.tasks.segmentation.files import read_case_image
from medseg.tasks.trained import DetectionModel, SegmentationModel, load_model
from medseg.utils import atomic_write

__all__ = ["explain_run"]

log = logging.getLogger("medseg.explain")


def _save_npy(arr: np.ndarray, path: Path) -> Path:
    with atomic_write(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(arr, np.float32))
    return path


def explain_run(
    model_dir: str | Path,
    inputs: list[str | Path],
    out: str | Path,
    *,
    method: Method = "gradcam",
    target: Any = None,
    layer: str | None = None,
    device: str = "auto",
    force: bool = False,
    split: str = "test",
    series: str | int | None = None,
) -> dict[str, Any]:
    """Grad-CAM maps of a segmentation or detection run for each input (see the module docstring).

    Parameters
    ----------
    model_dir : a segmentation or detection run folder (or a cross-validation parent run).
    inputs, split, series : as for ``medseg segment`` / ``medseg detect``.
    target : segmentation: a class name or index; detection: the index of a detection (by score,
        0 = the highest) or None for all detections.
    method, layer, device, force : as for the classification ``explain``.

    Returns
    -------
    The cohort summary plus ``method``, ``target`` and ``cams`` (folder).
    """
    model = load_model(model_dir, device)
    if isinstance(model, DetectionModel):
        refuse_series_for_2d(series, "explain")
        if target is not None and not str(target).isdigit():
            raise ConfigError(f"--target of a detection run is the index of a detection (0, 1, ...), not {target!r}")
        tgt: Any = None if target is None else int(target)
        cases = expand_inputs(inputs, kind="image2d", split=split)
    elif isinstance(model, SegmentationModel):
        tgt = target if target is None or not str(target).isdigit() else int(target)
        if isinstance(tgt, str) and tgt not in model.class_names:
            raise ConfigError(f"--target {tgt!r} is not a class of this model: {', '.join(model.class_names)}")
        cases = expand_inputs(inputs, kind="volume", split=split)
    else:
        raise ConfigError("explain_run explains segmentation and detection runs (classification: medseg explain)")
    identity = json.dumps([str(Path(model_dir).resolve()), [str(i) for i in inputs], split, method, target, layer])
    run = Run.create(out, None, force=force, command="explain", identity=identity)

    def one_seg(case: CaseInput, files: CaseOutputs) -> CaseResult:
        assert isinstance(model, SegmentationModel)
        # read once (the chosen series of a folder holding several; one file per channel), then explained
        image = model.image(read_case_image(case.paths, spatial_dims=model.spatial_dims, series=series))
        cam = gradcam(model, image, tgt, method=method, layer=layer)
        cid = case.case_id
        if model.spatial_dims == 3:
            nii = files.add("cam_map", save_cam_nifti(cam, files.path("cams", f"{cid}_cam.nii.gz")))
            pngs = save_cam_slices_png(image[0], cam, run.path / "cams", f"{cid}_cam")
            for k, p in enumerate(pngs):
                files.add(f"cam_png_{k}", p)
            shown = str(pngs[0].resolve()) if pngs else nii
        else:
            arr = np.asarray(torch.as_tensor(cam)[0])
            files.add("cam_map", _save_npy(arr, files.path("cams", f"{cid}_cam.npy")))
            shown = files.add("cam_png", save_cam_png(image[0], arr, files.path("cams", f"{cid}_cam.png")))
        name = tgt if isinstance(tgt, str) else model.class_names[tgt if tgt is not None else 1]
        values = {
            "method": method,
            "target_class": name,
            "cam_voxels_over_half": int((torch.as_tensor(cam) > 0.5).sum()),
        }
        review = ReviewCase(case_id=cid, task="explain", cam=shown, prediction=name)
        return CaseResult.of(case, values=values, review=review)

    def one_det(case: CaseInput, files: CaseOutputs) -> CaseResult:
        assert isinstance(model, DetectionModel)
        found = model.predict(case.image)
        if not len(found):
            raise InputError("no detection in this image: nothing to explain", case.source)
        cam = gradcam(model, case.image, tgt, method=method, layer=layer)
        cid = case.case_id
        files.add("cam_map", _save_npy(cam, files.path("cams", f"{cid}_cam.npy")))
        png = files.add("cam_png", save_cam_png(model.image(case.image), cam, files.path("cams", f"{cid}_cam.png")))
        values: dict[str, Any] = {"method": method, "detections": len(found)}
        if tgt is not None:
            x, y = found.points[tgt] if tgt < len(found) else (None, None)
            values.update(target_detection=tgt, target_x=x, target_y=y)
        review = ReviewCase(case_id=cid, task="explain", cam=png, counts={found.class_name: len(found)})
        return CaseResult.of(case, values=values, review=review)

    with run:
        run.set(model_dir=str(Path(model_dir).resolve()), method=method, target=target, task=model.task)
        with run.stage("gradcam"):
            fn = one_det if isinstance(model, DetectionModel) else one_seg
            results = run_cohort(cases, fn, out=run.path, command="explain")
        summary = finish_cohort(
            run,
            results,
            command="explain",
            task="explain",
            title=f"medseg Grad-CAM review ({model.task})",
            details={"method": method, "target": target, "cams": str(run.path / "cams")},
        )
    return summary.to_dict()
