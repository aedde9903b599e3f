"""Inference of the segmentation task (``medseg segment``): outputs in the source geometry.

- :func:`predict_case`: one image -> label map, probabilities, uncertainty and volumes on the
  image's own voxel grid (preprocess as in training, Gaussian sliding window, optional flip TTA,
  MONAI ``Invertd`` back to the source grid, post-processing).
- :func:`segment_cases`: a cohort with a trained run (inputs expanded by
  :func:`medseg.tasks.inputs.expand_inputs`); a bad case is reported and skipped.
- :func:`segment`: the command: a run folder with the label maps, the table and ``report.html``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd
from torch import nn

from medseg.config import SegInferSection, SegmentationConfig, SegPostSection
from medseg.engine.checkpoint import load_run_model
from medseg.engine.device import select_device
from medseg.engine.inference import (
    component_volumes_ml,
    entropy_uncertainty,
    postprocess_labels,
    predict_probs,
)
from medseg.errors import ConfigError, InputError, MedsegError, MissingFileError
from medseg.review.cases import ReviewCase
from medseg.review.overlay import overlay_2d, overlay_volume, save_png
from medseg.review.report import write_report
from medseg.runs import Run
from medseg.tasks.inputs import expand_inputs
from medseg.tasks.segmentation.data import unwrap_error
from medseg.tasks.segmentation.evaluate import dice_per_class
from medseg.tasks.segmentation.files import read_image, write_case_outputs, write_table
from medseg.transforms.pipeline import CheckCased, preprocess

__all__ = ["predict_case", "segment_cases", "segment"]

log = logging.getLogger("medseg.segmentation")


def _voxel_ml(affine: np.ndarray, spatial_dims: int) -> float:
    """Volume of one voxel in mL (3D), or the pixel area in mm^2 / 1000 (2D)."""
    if spatial_dims == 3:
        return abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    return float(np.prod(np.linalg.norm(affine[:2, :2], axis=0))) / 1000.0


def predict_case(
    model: nn.Module,
    path: str | Path,
    *,
    meta: Mapping[str, Any],
    infer: SegInferSection,
    device: torch.device,
    post: SegPostSection | None = None,
) -> dict[str, Any]:
    """Segment one image and return the result in its source geometry.

    Parameters
    ----------
    model : trained network (eval mode), logits ``(B, K, *roi)``.
    path : NIfTI file, DICOM series folder or 2D image.
    meta : checkpoint meta (``plan``, ``class_names``, ``modality``, ``spatial_dims``).
    infer : the inference settings.
    device : where the network runs.
    post : post-processing settings, or None.

    Returns
    -------
    dict: ``labels`` ``(*S)`` uint8 and ``probs`` ``(K, *S)`` float32 in the source voxel grid,
    ``affine`` (4x4 voxel -> RAS mm, equal to the input's), ``uncertainty`` (float, 0..1),
    ``volumes_ml`` per class, ``dicom_sources`` (files of a DICOM input), ``class_names``.

    Raises
    ------
    MissingFileError, InputError (unreadable image, NaN/inf voxels) and the :mod:`medseg.io` errors.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError("input not found", path)
    plan = meta["plan"]
    names = list(meta["class_names"])
    sd = int(meta["spatial_dims"])
    pre = preprocess(
        ["image"],
        spatial_dims=sd,
        modality=meta["modality"],
        target_spacing=plan["target_spacing"],
        norm=plan["norm"],
        crop_foreground=True,
        check=CheckCased(len(names)),
    )
    try:
        d = pre({"image": str(path)})
    except Exception as e:
        inner = unwrap_error(e)
        if isinstance(inner, MedsegError):
            raise inner from None
        raise InputError(
            f"cannot read or preprocess the image ({type(inner).__name__}: {str(inner)[:200]})", path
        ) from None
    img = d["image"]
    if not torch.isfinite(img.as_tensor()).all():
        raise InputError("image contains NaN or infinite values", path)
    src_affine = np.asarray(img.meta["source_affine"], dtype=np.float64)
    tta_axes = (infer.tta_axes if infer.tta_axes is not None else list(range(sd))) if infer.tta else None
    want_dis = infer.tta and infer.uncertainty == "tta"
    probs, dis = predict_probs(
        model,
        img.as_tensor()[None],
        plan,
        sw_batch_size=infer.batch_size,
        overlap=infer.overlap,
        sigma_scale=infer.sigma_scale,
        device=device,
        amp=device.type == "cuda",
        tta_axes=tta_axes,
        return_disagreement=want_dis,
    )
    d["pred"] = MetaTensor(probs[0].cpu(), affine=img.affine, meta=dict(img.meta))
    inv = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True)
    d = inv(d)
    probs_src = torch.as_tensor(d["pred"]).float()
    out_affine = np.asarray(d["pred"].affine, dtype=np.float64) if hasattr(d["pred"], "affine") else src_affine
    if not np.allclose(out_affine, src_affine, atol=1e-4):
        log.warning("%s: inverted affine differs from the source's; writing with the source affine", path.name)
    labels = probs_src.argmax(0).numpy().astype(np.uint8)
    if post is not None:
        largest = [names.index(c) for c in post.largest_component if c in names]
        min_vox = int(math.ceil(post.min_component_ml / _voxel_ml(src_affine, sd))) if post.min_component_ml else 0
        labels = postprocess_labels(
            labels, largest_component=largest, min_size_voxels=min_vox, fill_holes=post.fill_holes
        )
    if dis is not None:
        fg = torch.as_tensor(probs.argmax(1)[0] > 0)
        unc = float(dis[0][fg].mean()) if bool(fg.any()) else 0.0
    else:
        unc = entropy_uncertainty(probs_src, torch.as_tensor(labels))
    src_meta = img.meta
    dicom_sources = list(src_meta.get("source_paths") or []) if src_meta.get("format") == "dicom" else []
    return {
        "labels": labels,
        "probs": probs_src.numpy().astype(np.float32),
        "affine": src_affine,
        "uncertainty": unc,
        "volumes_ml": component_volumes_ml(labels, src_affine, names),
        "dicom_sources": dicom_sources,
        "class_names": names,
    }


def _thumbnail(image_path: Path, res: Mapping[str, Any], out: Path, cid: str, names: Sequence[str]) -> str | None:
    """Overlay PNG ``out/overlays/<case>.png`` of the predicted labels (the slice with most foreground).

    A thumbnail never fails a case: a rendering error is logged and None returned.
    """
    try:
        img = np.asarray(read_image(image_path))[0]
        lab = res["labels"]
        if lab.ndim == 3:
            k = int(np.argmax((lab > 0).sum(axis=(0, 1)))) if lab.any() else lab.shape[2] // 2
            rgb = overlay_volume(
                img, lab, affine=res["affine"], view="axial", index=k, class_names=dict(enumerate(names))
            )
        else:
            rgb = overlay_2d(img, lab, window="soft_tissue", class_names=dict(enumerate(names)))
        return str(save_png(rgb, out / "overlays" / f"{cid}.png").resolve())
    except (MedsegError, OSError, ValueError, RuntimeError) as e:
        log.warning("%s: no thumbnail (%s)", cid, e)
        return None


def _reference_dice(
    label_path: Path, labels: np.ndarray, label_map: Mapping[int, int], names: Sequence[str]
) -> dict[str, float]:
    """Dice per class (and their mean) of predicted ``labels`` against a reference label file, or {}."""
    ref = np.asarray(read_image(label_path))[0].astype(np.int64)
    if ref.size == labels.size:  # 2D label maps are stored as (X, Y, 1)
        ref = ref.reshape(labels.shape)
    for src, dst in label_map.items():
        ref[ref == src] = dst
    if ref.shape != labels.shape:
        return {}
    dsc = dice_per_class(torch.as_tensor(labels), torch.as_tensor(ref), len(names))
    metrics = {f"dice_{n}": round(float(v), 4) for n, v in zip(names[1:], dsc)}
    metrics["dice_mean"] = round(float(np.nanmean(dsc)), 4)
    return metrics


def segment_cases(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    device: str = "auto",
    split: str = "test",
    infer_overrides: Mapping[str, Any] | None = None,
    thumbnails: bool = True,
) -> tuple[list[ReviewCase], list[dict[str, Any]]]:
    """Segment a cohort with a trained run; bad cases are skipped and reported.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` (``config.yaml`` + ``checkpoints/best.pt``).
    inputs : NIfTI files, DICOM series folders, folders of NIfTI files, datalist JSONs
        (see :func:`medseg.tasks.inputs.expand_inputs`; a datalist entry's ``label`` is scored).
    out : existing output folder.
    device : ``"auto"`` | ``"cpu"`` | ``"cuda"``.
    split : datalist list to segment: ``test`` (default), ``validation``, ``training`` or ``all``.
    infer_overrides : values patching the run's ``infer`` section (e.g. ``{"tta": True}``).
    thumbnails : write an overlay PNG per case (``out/overlays``).

    Returns
    -------
    (one :class:`ReviewCase` per case, one table row per case), in input order.
    """
    out = Path(out)
    dev = select_device(device)
    model, cfg, ckpt = load_run_model(model_dir, "best", map_location=dev)
    if not isinstance(cfg, SegmentationConfig):
        raise ConfigError(f"not a segmentation run (task: {cfg.task})", Path(model_dir) / "config.yaml")
    model.to(dev)
    meta = ckpt.get("meta", {})
    if "plan" not in meta:
        raise MissingFileError("checkpoint has no segmentation plan (not a medseg segmentation run)", model_dir)
    infer = cfg.infer.model_copy(update=dict(infer_overrides or {}))
    if infer.uncertainty == "tta" and not infer.tta:
        log.info("TTA is off for this call: the uncertainty is the entropy, not the TTA disagreement")
    names = list(meta["class_names"])
    model_name = f"{cfg.model.name} ({Path(model_dir).name})"
    cases: list[ReviewCase] = []
    rows: list[dict[str, Any]] = []
    for item in expand_inputs(inputs, kind="volume", split=split):
        cid, ip, lp = item.case_id, item.image, item.label
        t0 = time.perf_counter()
        try:
            res = predict_case(model, ip, meta=meta, infer=infer, device=dev, post=cfg.postprocess)
            outputs = write_case_outputs(res, cid, out, infer.save_probabilities, model_name=model_name)
            metrics = _reference_dice(lp, res["labels"], cfg.label_map, names) if lp is not None and lp.exists() else {}
            needs = bool(res["uncertainty"] > infer.review_threshold)
            thumb = _thumbnail(ip, res, out, cid, names) if thumbnails else None
            case = ReviewCase(
                case_id=cid,
                task="segmentation",
                volumes_ml=res["volumes_ml"],
                uncertainty=round(res["uncertainty"], 4),
                needs_review=needs,
                metrics=metrics,
                outputs=outputs,
                thumbnail=thumb,
                overlays=[thumb] if thumb else [],
            )
            log.info(
                "%s: segmented in %.1f s (uncertainty %.3f%s)",
                cid,
                time.perf_counter() - t0,
                res["uncertainty"],
                ", needs review" if needs else "",
            )
        except (MedsegError, RuntimeError, ValueError, OSError) as e:
            inner = unwrap_error(e)
            log.error("%s: skipped: %s", cid, inner)
            case = ReviewCase(
                case_id=cid, task="segmentation", status="skipped", error=f"{type(inner).__name__}: {inner}"
            )
        cases.append(case)
        rows.append(
            {
                "case_id": cid,
                "input": str(ip),
                "status": case.status,
                "error": case.error or "",
                "uncertainty": case.uncertainty,
                "needs_review": case.needs_review,
                **{f"volume_ml_{k}": v for k, v in case.volumes_ml.items()},
                **case.metrics,
                **{f"output_{k}": v for k, v in case.outputs.items()},
            }
        )
    return cases, rows


def segment(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    device: str = "auto",
    force: bool = False,
    tta: bool | None = None,
    save_probabilities: bool | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Segment images with a trained run; outputs in the source geometry.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` (``config.yaml`` + ``checkpoints/best.pt``).
    inputs : NIfTI files, DICOM series folders, folders of NIfTI files, or MSD datalist JSONs.
    out : output folder, a medseg run folder: ``run.json``, ``labels/``, ``probabilities/``,
        ``dicom_seg/``, ``overlays/``, ``segmentation.csv``/``.json`` and ``report.html``.
    device : ``"auto"`` | ``"cpu"`` | ``"cuda"``.
    force : move an existing output folder aside instead of failing.
    tta, save_probabilities : override the run's ``infer`` settings.
    split : datalist list to segment: ``test`` (default), ``validation``, ``training`` or ``all``.

    Returns
    -------
    summary: ``cases``, ``ok``, ``skipped``, ``needs_review`` (case ids), ``table``, ``report``
    and, when cases were skipped, ``skipped_cases`` ({case id: why}).
    """
    out = Path(out)
    model_dir = Path(model_dir)
    if not (model_dir / "config.yaml").is_file():
        raise MissingFileError("not a trained medseg run folder (no config.yaml)", model_dir)
    run = Run.create(out, None, force=force, command="segment")
    overrides: dict[str, Any] = {}
    if tta is not None:
        overrides["tta"] = tta
    if save_probabilities is not None:
        overrides["save_probabilities"] = save_probabilities
    with run:
        with run.stage("segment"):
            cases, rows = segment_cases(model_dir, inputs, out, device=device, split=split, infer_overrides=overrides)
        csv_path, _ = write_table(rows, out)
        skipped = {c.case_id: c.error for c in cases if c.status != "ok"}
        summary: dict[str, Any] = {
            "cases": len(cases),
            "ok": len(cases) - len(skipped),
            "skipped": len(skipped),
            "needs_review": [c.case_id for c in cases if c.needs_review],
            "table": str(csv_path),
        }
        report = write_report(
            out,
            cases,
            title="medseg segmentation review",
            summary={"segmentation": {k: v for k, v in summary.items() if k != "table"}},
        )
        summary["report"] = str(report)
        if skipped:
            summary["skipped_cases"] = skipped
        run.set(model=str(model_dir.resolve()), summary=summary)
    return summary
