"""Inference of the segmentation task (``medseg segment``): outputs in the source geometry.

- :func:`predict_case`: one image -> label map, probabilities, uncertainty and volumes on the
  image's own voxel grid (preprocess as in training, Gaussian sliding window, optional flip TTA,
  MONAI ``Invertd`` back to the source grid, post-processing).
- :func:`load_segmenter`: a trained run as what inference needs (network, plan, calibrated
  needs-review threshold, the training data's OOD reference).
- :func:`segment_cases`: a cohort through :func:`medseg.tasks.cohort.run_cohort` (one bad case is
  skipped, its partial outputs removed; the others finish).
- :func:`segment`: the command: a run folder with the label maps, ``segment.csv``/``.json`` and
  ``report.html``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd
from torch import nn

from medseg.config import SegInferSection, SegmentationConfig, SegPostSection
from medseg.engine.checkpoint import load_run_model
from medseg.engine.compiled import compile_status
from medseg.engine.device import describe_device, select_device
from medseg.engine.ensemble import mutual_information
from medseg.engine.inference import (
    component_volumes_ml,
    entropy_uncertainty,
    postprocess_labels,
    predict_probs,
)
from medseg.errors import ConfigError, InputError, MedsegError, MissingFileError
from medseg.review.cases import ReviewCase
from medseg.runs import Run
from medseg.tasks.cohort import CaseOutputs, CaseResult, Pending, finish_cohort, run_cohort
from medseg.tasks.inputs import CaseInput, expand_inputs
from medseg.tasks.lesions.instances import case_lesions, resolve_lesion_classes, write_cohort_lesions
from medseg.tasks.ood import check_ood_image, check_ood_mode
from medseg.tasks.segmentation.data import unwrap_error
from medseg.tasks.segmentation.evaluate import dice_per_class
from medseg.tasks.segmentation.files import (
    check_labels_format,
    check_model_input,
    read_case_image,
    read_image,
    write_case_outputs,
    write_review_images,
)
from medseg.transforms.pipeline import CheckCased, preprocess

__all__ = [
    "predict_case",
    "preprocess_case",
    "to_source",
    "load_segmenter",
    "Segmenter",
    "segment_cases",
    "segment",
    "DEFAULT_REVIEW_THRESHOLD",
]

log = logging.getLogger("medseg.segmentation")

#: needs-review threshold of a run without a calibrated one (trained before calibration, or no validation cases)
DEFAULT_REVIEW_THRESHOLD = 0.2


def _voxel_ml(affine: np.ndarray, spatial_dims: int) -> float:
    """Volume of one voxel in mL (3D), or the pixel area in mm^2 / 1000 (2D)."""
    if spatial_dims == 3:
        return abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    return float(np.prod(np.linalg.norm(affine[:2, :2], axis=0))) / 1000.0


def preprocess_case(path: str | Path | MetaTensor, meta: Mapping[str, Any]) -> tuple[dict[str, Any], Any, str]:
    """Read (unless given) and preprocess one image as the run's plan says (spacing, crop, normalisation).

    Returns
    -------
    (``{"image": MetaTensor (C, *S') on the plan's grid, ...}``, the MONAI transform (for
    :func:`to_source`), where: the image's name for messages).

    Raises
    ------
    MissingFileError, InputError (unreadable, NaN/inf voxels) and the :mod:`medseg.io` errors.
    """
    plan = meta["plan"]
    sd = int(meta["spatial_dims"])
    if isinstance(path, MetaTensor):
        img_in, where = path, str(path.meta.get("filename_or_obj", "<in memory>"))
    else:
        if not Path(path).exists():
            raise MissingFileError("input not found", path)
        img_in, where = read_case_image([path], spatial_dims=sd), str(path)
    pre = preprocess(
        ["image"],
        spatial_dims=sd,
        modality=meta["modality"],
        target_spacing=plan["target_spacing"],
        norm=plan["norm"],
        crop_foreground=True,
        check=CheckCased(len(list(meta["class_names"]))),
        load=False,
    )
    try:
        d = pre({"image": img_in})
    except Exception as e:
        inner = unwrap_error(e)
        if isinstance(inner, MedsegError):
            raise inner from None
        raise InputError(
            f"cannot read or preprocess the image ({type(inner).__name__}: {str(inner)[:200]})", where
        ) from None
    if not torch.isfinite(d["image"].as_tensor()).all():
        raise InputError("image contains NaN or infinite values", where)
    return d, pre, where


def to_source(d: dict[str, Any], pre: Any, values: torch.Tensor, where: str = "") -> torch.Tensor:
    """``values`` ``(N, *S')`` on the plan's grid of ``d["image"]`` -> ``(N, *S)`` on the source grid.

    Inverts the preprocessing (MONAI ``Invertd``: crop, resampling, orientation; linear interpolation).
    """
    img = d["image"]
    src_affine = np.asarray(img.meta["source_affine"], dtype=np.float64)
    pred = MetaTensor(torch.as_tensor(values).detach().cpu(), affine=img.affine, meta=dict(img.meta))
    inv: Mapping[Any, Any] = {**d, "pred": pred}
    out = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True)(inv)["pred"]
    out_affine = np.asarray(out.affine, dtype=np.float64) if hasattr(out, "affine") else src_affine
    if not np.allclose(out_affine, src_affine, atol=1e-4):
        log.warning("%s: inverted affine differs from the source's; writing with the source affine", Path(where).name)
    return torch.as_tensor(out).float()


def predict_case(
    model: nn.Module,
    path: str | Path | MetaTensor,
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
    path : NIfTI file, DICOM series folder or 2D image, or an image already read by
        :func:`medseg.tasks.segmentation.files.read_case_image` (``(C, *S)`` MetaTensor).
    meta : checkpoint meta (``plan``, ``class_names``, ``modality``, ``spatial_dims``).
    infer : the inference settings.
    device : where the network runs.
    post : post-processing settings, or None.

    Returns
    -------
    dict: ``labels`` ``(*S)`` uint8 and ``probs`` ``(K, *S)`` float32 in the source voxel grid,
    ``affine`` (4x4 voxel -> RAS mm, equal to the input's), ``uncertainty`` (float, 0..1),
    ``volumes_ml`` per class, ``dicom_sources`` (files of a DICOM input), ``class_names``,
    ``source_format``, ``disagreement`` (a fold ensemble: the members' mean mutual information, 0..1, over the
    predicted foreground; None for one model).

    Raises
    ------
    MissingFileError, InputError (unreadable image, NaN/inf voxels) and the :mod:`medseg.io` errors.
    """
    plan = meta["plan"]
    names = list(meta["class_names"])
    sd = int(meta["spatial_dims"])
    d, pre, where = preprocess_case(path, meta)
    img = d["image"]
    src_affine = np.asarray(img.meta["source_affine"], dtype=np.float64)
    tta_axes = (infer.tta_axes if infer.tta_axes is not None else list(range(sd))) if infer.tta else None
    want_dis = infer.tta and infer.uncertainty == "tta"
    window: dict[str, Any] = dict(
        sw_batch_size=infer.batch_size,
        overlap=infer.overlap,
        sigma_scale=infer.sigma_scale,
        device=device,
        amp=device.type == "cuda",
        compile=infer.compile,
        tta_axes=tta_axes,
        return_disagreement=want_dis,
    )
    members = getattr(model, "members", None)  # a fold ensemble (medseg.engine.ensemble.FoldEnsemble)
    agreement: float | None = None
    if members is not None and not want_dis:
        # member by member: the mean of their probabilities (the ensemble's; the sliding window blends each
        # member's logits before its softmax, so this differs from the ensemble's own forward by < 0.05 near
        # window seams), and their disagreement (mutual information), which flags errors and shifted cases
        # better than one model's entropy (benchmarks/ensemble.py)
        member_probs = torch.stack([predict_probs(m, img.as_tensor()[None], plan, **window)[0] for m in members])
        probs, dis = member_probs.mean(0), None
        fg_plan = probs.argmax(1)[0] > 0
        mi = mutual_information(member_probs)[0]
        agreement = float(mi[fg_plan].mean()) if bool(fg_plan.any()) else 0.0
    else:
        probs, dis = predict_probs(model, img.as_tensor()[None], plan, **window)
    probs_src = to_source(d, pre, probs[0], where)
    outside = probs_src.sum(0) == 0  # cropped away before the network (outside the body): background
    probs_src[0][outside] = 1.0
    labels = np.argmax(probs_src.numpy(), 0).astype(np.uint8)  # numpy's: the same labels, ~6x faster on CPU
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
        "source_format": src_meta.get("format"),
        "disagreement": agreement,
    }


def reference_dice(
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


@dataclass
class Segmenter:
    """A trained segmentation run, ready for inference (:func:`load_segmenter`).

    ``review_threshold``: needs review above this uncertainty (the run's calibrated value unless
    the infer settings give one); ``reference``: the training data's OOD reference (None for runs
    trained before it was recorded: no OOD check).
    """

    model: nn.Module
    cfg: SegmentationConfig
    meta: dict[str, Any]
    infer: SegInferSection
    device: torch.device
    model_dir: Path
    review_threshold: float
    threshold_source: str
    reference: dict[str, Any] | None

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def channels(self) -> int:
        return int(self.meta.get("model_params", {}).get("in_channels", 1))


def _run_info(model_dir: Path) -> dict[str, Any]:
    try:
        info: dict[str, Any] = json.loads((model_dir / "run.json").read_text())
        return info
    except (OSError, ValueError):
        return {}


def load_segmenter(
    model_dir: str | Path, device: str = "auto", infer_overrides: Mapping[str, Any] | None = None
) -> Segmenter:
    """Load a trained segmentation run for inference.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` (``config.yaml``, ``checkpoints/best.pt``, ``run.json``).
    device : ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
    infer_overrides : values patching the run's ``infer`` section (e.g. ``{"tta": True}``).

    Raises
    ------
    MissingFileError (not a run folder), ConfigError (not a segmentation run), CheckpointError.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.yaml").is_file():
        raise MissingFileError("not a trained medseg run folder (no config.yaml)", model_dir)
    dev = select_device(device)
    model, cfg, ckpt = load_run_model(model_dir, "best", map_location=dev)
    if not isinstance(cfg, SegmentationConfig):
        raise ConfigError(f"not a segmentation run (task: {cfg.task})", model_dir / "config.yaml")
    model.to(dev)
    meta = dict(ckpt.get("meta", {}))
    if "plan" not in meta:
        raise MissingFileError("checkpoint has no segmentation plan (not a medseg segmentation run)", model_dir)
    infer = cfg.infer.model_copy(update=dict(infer_overrides or {}))
    if infer.uncertainty == "tta" and not infer.tta:
        log.info("TTA is off for this call: the uncertainty is the entropy, not the TTA disagreement")
    info = _run_info(model_dir)
    if info.get("status") == "failed":
        log.warning("%s: the training run failed; its checkpoint may be from before the failure", model_dir)
    calibrated = (info.get("review") or {}).get("threshold")
    if infer.review_threshold is not None:
        thr, source = float(infer.review_threshold), "infer.review_threshold"
    elif calibrated is not None:
        pct = (info.get("review") or {}).get("percentile", 95)
        thr, source = float(calibrated), f"calibrated: {pct:g}th percentile of the validation cases' uncertainty"
    else:
        thr, source = DEFAULT_REVIEW_THRESHOLD, "default (the run has no calibrated threshold)"
    ref_path = model_dir / "ood_reference.json"
    reference = json.loads(ref_path.read_text()) if ref_path.is_file() else None
    return Segmenter(model, cfg, meta, infer, dev, model_dir, thr, source, reference)


@dataclass(frozen=True)
class CaseOptions:
    """What ``segment`` does with each case besides running the model (checked when made).

    ``series``: the series of a folder holding several; ``ood``: warn | refuse | off; ``thumbnails``: the
    review pictures; ``labels_format`` / ``dicom_seg``: the label files (:func:`write_case_outputs`);
    ``lesions`` ({label value: class}) and ``min_lesion_ml``: the lesion table of each case.
    """

    series: str | int | None = None
    ood: str = "warn"
    thumbnails: bool = True
    labels_format: str = "auto"
    dicom_seg: bool = True
    lesions: Mapping[int, str] | None = None
    min_lesion_ml: float = 0.0

    def __post_init__(self) -> None:
        check_ood_mode(self.ood)
        check_labels_format(self.labels_format)


def _segment_one(
    sm: Segmenter,
    case: CaseInput,
    files: CaseOutputs,
    opts: CaseOptions,
) -> Pending:
    """One case: read, check against the model and its training data, segment; the writing (label files,
    pictures, the reference Dice and, with ``lesions``, the case's lesion table) is returned as
    :class:`~medseg.tasks.cohort.Pending`, which the cohort engine runs while the next case computes."""
    sd = int(sm.meta["spatial_dims"])
    img = files.loaded(lambda: read_case_image(case.paths, spatial_dims=sd, series=opts.series))  # prefetched
    check_model_input(img, case.source, spatial_dims=sd, channels=sm.channels)
    reasons = check_ood_image(img, sm.reference, opts.ood, case.source, modality=sm.cfg.modality, spatial_dims=sd)
    t0 = time.perf_counter()
    res = predict_case(sm.model, img, meta=sm.meta, infer=sm.infer, device=sm.device, post=sm.cfg.postprocess)
    unc = float(res["uncertainty"])
    needs = unc > sm.review_threshold or bool(reasons)
    log.info(
        "%s: segmented in %.1f s (uncertainty %.3f%s%s)",
        case.case_id,
        time.perf_counter() - t0,
        unc,
        ", needs review" if needs else "",
        ", out of distribution" if reasons else "",
    )
    return Pending(functools.partial(_write_one, sm, case, files, opts, img, res, reasons, needs))


def _write_one(
    sm: Segmenter,
    case: CaseInput,
    files: CaseOutputs,
    opts: CaseOptions,
    img: MetaTensor,
    res: Mapping[str, Any],
    reasons: list[str],
    needs: bool,
) -> CaseResult:
    """The outputs of one segmented case (``res`` of :func:`predict_case`) and its table row."""
    write_case_outputs(
        res,
        case.case_id,
        files.root,
        sm.infer.save_probabilities,
        model_name=f"{sm.cfg.model.name} ({sm.model_dir.name})",
        files=files,
        labels_format=opts.labels_format,
        dicom_seg=opts.dicom_seg,
    )
    names = sm.class_names
    lp = case.label
    metrics = reference_dice(lp, res["labels"], sm.cfg.label_map, names) if lp is not None and lp.exists() else {}
    unc = float(res["uncertainty"])
    # one score for "needs review": uncertainty in units of the calibrated threshold, + 1 when out of
    # distribution (needs_review: above the threshold, or out of distribution)
    score = unc / max(sm.review_threshold, 1e-9) + (1.0 if reasons else 0.0)
    pics: dict[str, Any] = {"thumbnail": None, "planes": [], "stack": None}
    if opts.thumbnails:
        pics = write_review_images(img, res["labels"], files, class_names=names, modality=sm.cfg.modality)
    flags = (["ood"] if reasons else []) + (["needs_review"] if needs else [])
    review = ReviewCase(
        case_id=case.case_id,
        task="segmentation",
        volumes_ml=res["volumes_ml"],
        uncertainty=round(unc, 4),
        needs_review=needs,
        metrics=metrics,
        thumbnail=pics["thumbnail"],
        overlays=list(pics["planes"] or ([pics["thumbnail"]] if pics["thumbnail"] else [])),
        planes=list(pics["planes"]),
        stack=pics["stack"],
    )
    values = {
        "uncertainty": round(unc, 4),
        "review_threshold": round(sm.review_threshold, 4),
        "review_score": round(score, 4),
        "needs_review": needs,
        **{f"volume_ml_{k}": v for k, v in res["volumes_ml"].items()},
        **({"disagreement": round(res["disagreement"], 4)} if res.get("disagreement") is not None else {}),
        **metrics,
    }
    if opts.lesions:
        _, _, lesion_values = case_lesions(
            res["labels"], res["affine"], case.case_id, files, classes=opts.lesions, min_ml=opts.min_lesion_ml
        )
        values.update(lesion_values)
    return CaseResult.of(case, flags=flags, ood_reasons=reasons, values=values, review=review)


def _cohort(
    sm: Segmenter, inputs: Sequence[str | Path], out: Path, *, split: str, opts: CaseOptions
) -> list[CaseResult]:
    cases = expand_inputs(inputs, kind="volume", split=split)
    sd = int(sm.meta["spatial_dims"])
    return run_cohort(
        cases,
        lambda c, f: _segment_one(sm, c, f, opts),
        out=out,
        command="segment",
        # the next case is read (decoded, stacked, checked) while the network runs on this one
        prefetch=lambda c: read_case_image(c.paths, spatial_dims=sd, series=opts.series),
    )


def segment_cases(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    device: str = "auto",
    split: str = "test",
    infer_overrides: Mapping[str, Any] | None = None,
    thumbnails: bool = True,
    series: str | int | None = None,
    ood: str = "warn",
) -> tuple[list[ReviewCase], list[dict[str, Any]]]:
    """Segment a cohort with a trained run; bad cases are skipped and reported.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` (``config.yaml`` + ``checkpoints/best.pt``).
    inputs : NIfTI files, DICOM series folders, folders of NIfTI files, datalist JSONs
        (see :func:`medseg.tasks.inputs.expand_inputs`; a datalist entry's ``label`` is scored).
    out : existing output folder.
    device : ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"``.
    split : datalist list to segment: ``test`` (default), ``validation``, ``training`` or ``all``.
    infer_overrides : values patching the run's ``infer`` section (e.g. ``{"tta": True}``).
    thumbnails : write the review pictures per case (``out/overlays``, ``out/viewer``).
    series : which series of a folder holding several (index, UID or description).
    ood : ``warn`` (flag), ``refuse`` (skip) or ``off``: what to do with a case unlike the training data.

    Returns
    -------
    (one :class:`ReviewCase` per case, one table row per case), in input order.
    """
    sm = load_segmenter(model_dir, device, infer_overrides)
    opts = CaseOptions(series=series, ood=ood, thumbnails=thumbnails)
    results = _cohort(sm, inputs, Path(out), split=split, opts=opts)
    return [r.review_case("segmentation") for r in results], [r.row() for r in results]


def segment(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    device: str = "auto",
    force: bool = False,
    tta: bool | None = None,
    save_probabilities: bool | None = None,
    split: str = "test",
    series: str | int | None = None,
    ood: str | None = None,
    labels_format: str = "auto",
    dicom_seg: bool = True,
    lesions: Sequence[str | int] | None = None,
    min_lesion_ml: float = 0.0,
    compile: bool | None = None,
) -> dict[str, Any]:
    """Segment images with a trained run; outputs in the source geometry.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` (``config.yaml`` + ``checkpoints/best.pt``).
    inputs : NIfTI files, DICOM series folders, folders of NIfTI files, or MSD datalist JSONs.
    out : output folder, a medseg run folder: ``run.json``, ``labels/``, ``probabilities/``,
        ``dicom_seg/``, ``overlays/``, ``viewer/``, ``segment.csv``/``.json`` and ``report.html``.
    device : ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"``.
    force : move an existing output folder aside instead of failing.
    tta, save_probabilities : override the run's ``infer`` settings.
    split : datalist list to segment: ``test`` (default), ``validation``, ``training`` or ``all``.
    series : which series of a folder holding several (its ``medseg info`` index, UID or description).
    ood : ``warn`` | ``refuse`` | ``off`` (default: the run's ``infer.ood``).
    labels_format : ``auto`` (``.seg.nrrd`` for NRRD inputs, else NIfTI), ``nifti``, ``nrrd``, ``seg.nrrd``.
    dicom_seg : write a DICOM SEG per DICOM series input (False: label maps only, e.g. for series whose
        UIDs are damaged, on which the SEG writer fails the case).
    lesions : lesion classes (names or label values): split them into lesions, one
        ``lesions/<case>_lesions.csv`` per case, ``lesions.csv`` for the cohort, and the columns
        ``n_lesions``, ``lesions_total_ml`` ... in ``segment.csv`` (see :mod:`medseg.tasks.lesions`).
    min_lesion_ml : with ``lesions``: drop lesions smaller than this (mL).
    compile : ``torch.compile`` the network (default: ``infer.compile``; eager if it fails; see run.json).

    Returns
    -------
    The cohort summary (:class:`medseg.tasks.cohort.CohortSummary`): ``cases``, ``ok``, ``skipped``,
    ``needs_review`` and ``ood`` (case ids), ``skipped_cases`` ({case id: why}), ``table``,
    ``report``, ``exit_code`` ..., plus ``review_threshold``.
    """
    model_dir = Path(model_dir)
    overrides: dict[str, Any] = {}
    if tta is not None:
        overrides["tta"] = tta
    if save_probabilities is not None:
        overrides["save_probabilities"] = save_probabilities
    if compile is not None:
        overrides["compile"] = compile
    sm = load_segmenter(model_dir, device, overrides)
    lesion_classes = resolve_lesion_classes(lesions, sm.class_names) if lesions else None
    mode = ood or sm.infer.ood
    identity = json.dumps(
        [str(model_dir.resolve()), [str(i) for i in inputs], split, series, mode, overrides, labels_format, dicom_seg]
        + ([list(map(str, lesions)), min_lesion_ml] if lesions else []),
        default=str,
    )
    opts = CaseOptions(  # checked here: a bad option creates no run folder
        series=series,
        ood=mode,
        labels_format=labels_format,
        dicom_seg=dicom_seg,
        lesions=lesion_classes,
        min_lesion_ml=min_lesion_ml,
    )
    run = Run.create(out, None, force=force, command="segment", identity=identity)
    with run:
        run.set(
            model=str(model_dir.resolve()),
            series=series,  # read back by classify --lesions / finetune on this folder
            ensemble=sm.meta.get("ensemble"),  # a cross-validation parent run: the mean of its K folds
            device=describe_device(sm.device),
            review_threshold=sm.review_threshold,
            review_threshold_source=sm.threshold_source,
            ood_mode=mode if sm.reference is not None else f"{mode} (the model has no training reference: no check)",
        )
        t0 = time.perf_counter()
        with run.stage("segment"):
            results = _cohort(sm, inputs, run.path, split=split, opts=opts)
        run.set(compile=compile_status(sm.model, sm.infer.compile))  # asked for, and used or fell back
        details: dict[str, Any] = {"review_threshold": round(sm.review_threshold, 4)}
        if lesion_classes:
            details["lesions"] = str(write_cohort_lesions(run.path / "lesions.csv", results))
        summary = finish_cohort(
            run,
            results,
            command="segment",
            task="segmentation",
            title="medseg segmentation review",
            details=details,
            seconds=time.perf_counter() - t0,
        )
    return summary.to_dict()
