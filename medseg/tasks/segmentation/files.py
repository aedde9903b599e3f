"""Files of the segmentation task: read cases, write label maps, probabilities, DICOM SEG, review pictures.

Reading goes through :func:`medseg.io.load` (one channel per file of a multi-channel case:
:func:`load_channels`; a folder of several series:
:func:`medseg.tasks.inputs.resolve_series`); writing through :func:`medseg.io.save_label` (uint8
label maps, qform = sform = the input affine), :func:`medseg.io.save_nifti` (probabilities) and
:func:`medseg.io.write_dicom_seg` (DICOM inputs). Every file is written atomically and, in a cohort,
registered with the case's :class:`~medseg.tasks.cohort.CaseOutputs` first (removed if the case fails).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medseg.errors import ConfigError, InputError, LabelMismatchError
from medseg.io import load, save_label, save_nifti, write_dicom_seg
from medseg.review.overlay import overlay_2d, overlay_volume, save_png
from medseg.review.stack import slice_stack, write_stack
from medseg.tasks.cohort import CaseOutputs
from medseg.tasks.inputs import resolve_series
from medseg.utils import atomic_write_records, atomic_write_text

__all__ = [
    "read_image",
    "load_channels",
    "read_case_image",
    "check_model_input",
    "write_nifti",
    "write_probabilities",
    "write_case_outputs",
    "write_review_images",
    "write_table",
]


def read_image(path: str | Path) -> MetaTensor:
    """Read an image or label map as a channel-first MetaTensor ``(C, *S)`` with its RAS affine.

    NIfTI, a DICOM series folder or PNG/TIFF (:func:`medseg.io.load`). Raises MissingFileError
    and the other :mod:`medseg.io` errors.
    """
    return load(path)


def load_channels(paths: Sequence[str | Path]) -> MetaTensor:
    """One multi-channel image from one file per channel (MONAI's ``"image": [t1, t2]`` datalist entry).

    Each file is read with :func:`medseg.io.load`; the channels are stacked in the given order after
    checking that they share one voxel grid (same spatial shape, affines within 1e-3 mm). The result
    keeps the first file's affine and meta; ``meta["channel_files"]`` lists the files.

    Raises
    ------
    LabelMismatchError naming both files and shapes when two channels are not on the same grid; the
    :mod:`medseg.io` errors of each file.
    """
    imgs = [load(p) for p in paths]
    first = imgs[0]
    for p, im in zip(paths[1:], imgs[1:]):
        if tuple(im.shape[1:]) != tuple(first.shape[1:]) or not np.allclose(
            np.asarray(im.affine), np.asarray(first.affine), atol=1e-3
        ):
            raise LabelMismatchError(
                f"channel {p} (shape {tuple(im.shape[1:])}) is not on the voxel grid of channel {paths[0]} "
                f"(shape {tuple(first.shape[1:])}); resample the channels onto one grid",
                p,
            )
    out = MetaTensor(torch.cat([im.as_tensor() for im in imgs], 0), affine=first.affine, meta=dict(first.meta))
    out.meta["channel_files"] = [str(p) for p in paths]
    return out


def read_case_image(
    paths: Sequence[str | Path], *, spatial_dims: int = 3, series: str | int | None = None
) -> MetaTensor:
    """The image of one case as the model reads it, in its source geometry.

    Parameters
    ----------
    paths : one file / series folder, or one file per channel (stacked in order after checking
        they share a grid).
    spatial_dims : the model's; a 2D model takes NIfTI 2D images stored as ``(X, Y, 1)`` as ``(C, X, Y)``.
    series : which series of a folder holding several (:func:`medseg.tasks.inputs.resolve_series`).

    Returns
    -------
    MetaTensor ``(C, *S)``, affine voxel -> RAS mm; ``meta["source_affine"]`` is the file's affine
    (outputs are written back onto it).
    """
    if len(paths) > 1:
        img = load_channels(list(paths))
    else:
        img = load(resolve_series(paths[0], series))
    if spatial_dims == 2 and img.ndim == 4 and img.shape[-1] == 1:  # 2D stored as (X, Y, 1)
        img = MetaTensor(img.as_tensor()[..., 0], affine=img.affine, meta=dict(img.meta))
    img.meta["source_affine"] = np.asarray(img.affine, dtype=np.float64).copy()
    img.meta.setdefault("filename_or_obj", str(paths[0]))
    return img


def check_model_input(img: MetaTensor, source: str, *, spatial_dims: int, channels: int) -> None:
    """One clear line when an image cannot go into the model: wrong dimensionality or channel count.

    Raises
    ------
    InputError naming the file, what the model expects and what the image is.
    """
    shape = tuple(int(s) for s in img.shape[1:])
    got = len(shape) - (1 if len(shape) == 3 and shape[-1] == 1 else 0)
    kind = {2: "a 2D image", 3: "a 3D volume"}.get(got, f"a {got}D array")
    if got != spatial_dims:
        want = "3D volumes (NIfTI, DICOM series)" if spatial_dims == 3 else "2D images"
        raise InputError(
            f"{kind} ({'x'.join(map(str, shape))} voxels) given to a {spatial_dims}D model: it expects {want}",
            source,
        )
    if int(img.shape[0]) != int(channels):
        raise InputError(
            f"the image has {img.shape[0]} channel(s); the model expects {channels} "
            '(give one file per channel as a datalist entry "image": [a, b, ...], or convert the image)',
            source,
        )


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write ``array`` ``(*S)`` as NIfTI with ``affine`` (4x4 voxel -> RAS mm), atomically.

    uint8 label maps go through :func:`medseg.io.save_label` (qform = sform = affine), other
    arrays through :func:`medseg.io.save_nifti`.
    """
    arr = np.asarray(array)
    aff = np.asarray(affine, dtype=np.float64)
    if arr.dtype == np.uint8:
        ref = MetaTensor(torch.zeros((1, *arr.shape), dtype=torch.uint8), affine=torch.as_tensor(aff))
        return save_label(arr, ref, path)
    return save_nifti(arr[None], path, affine=aff)


def write_probabilities(probs: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write class probabilities ``(K, *S)`` float32 as a NIfTI ``(*S, K)`` with ``affine`` (RAS mm)."""
    return save_nifti(
        np.asarray(probs, dtype=np.float32), path, affine=np.asarray(affine, np.float64), dtype=np.float32
    )


#: ``--labels-format`` values (see :func:`write_case_outputs`)
LABEL_FORMATS = ("auto", "nifti", "nrrd", "seg.nrrd")


def check_labels_format(labels_format: str) -> str:
    """``labels_format`` if it is one of :data:`LABEL_FORMATS`, else a ConfigError listing them."""
    if labels_format not in LABEL_FORMATS:
        raise ConfigError(f"labels format must be one of {', '.join(LABEL_FORMATS)}, got {labels_format!r}")
    return labels_format


def write_case_outputs(
    res: Mapping[str, Any],
    case_id: str,
    out: Path,
    save_probs: bool,
    model_name: str | None = None,
    files: CaseOutputs | None = None,
    labels_format: str = "auto",
    dicom_seg: bool = True,
) -> dict[str, str]:
    """Write the outputs of one segmented case; returns ``{kind: absolute path}``.

    Parameters
    ----------
    res : the result of :func:`medseg.tasks.segmentation.predict.predict_case` (``labels`` ``(*S)``
        uint8, ``probs`` ``(K, *S)``, ``affine``, ``dicom_sources``, ``class_names``).
    case_id : medseg's case id (file names are built from it, never from DICOM values).
    out : the output folder: ``labels/<case>.<suffix>``, ``probabilities/<case>.nii.gz``,
        ``dicom_seg/<case>.seg.dcm``.
    save_probs : also write the probabilities.
    model_name : the algorithm source named in the DICOM SEG.
    files : the case's output register (every path is registered before it is written).
    labels_format : ``auto`` (a 3D Slicer segmentation ``.seg.nrrd`` named by class for an NRRD input,
        ``res["source_format"]``, else NIfTI), ``nifti``, ``nrrd`` (a label volume) or ``seg.nrrd``.
    dicom_seg : write the DICOM SEG of a DICOM series input (False: the label map only).

    For a DICOM series input a DICOM SEG referencing the slices that were used (localizers and
    other excluded files stay out) is written too.
    """
    reg = files or CaseOutputs(out, case_id)
    check_labels_format(labels_format)
    # auto: label maps in the input's family: a Slicer segmentation (named segments) for NRRD inputs, else NIfTI
    fmt = labels_format if labels_format != "auto" else ("seg.nrrd" if res.get("source_format") == "nrrd" else "nifti")
    if fmt in ("nrrd", "seg.nrrd"):
        ref = MetaTensor(torch.zeros((1, *np.shape(res["labels"]))), affine=torch.as_tensor(res["affine"]))
        segments = dict(enumerate(res.get("class_names") or [])) if fmt == "seg.nrrd" else None
        path = reg.path("labels", f"{case_id}.{fmt}")
        labels_path = save_label(res["labels"], ref, path, segments=segments)
    else:
        labels_path = write_nifti(res["labels"], res["affine"], reg.path("labels", f"{case_id}.nii.gz"))
    reg.add("labels", labels_path)
    if save_probs:
        p = write_probabilities(res["probs"], res["affine"], reg.path("probabilities", f"{case_id}.nii.gz"))
        reg.add("probabilities", p)
    if dicom_seg and res.get("dicom_sources") and np.asarray(res["labels"]).ndim == 3:
        labels = MetaTensor(torch.as_tensor(res["labels"])[None], affine=torch.as_tensor(res["affine"]))
        seg = write_dicom_seg(
            labels,
            res["dicom_sources"],
            reg.path("dicom_seg", f"{case_id}.seg.dcm"),
            dict(enumerate(res["class_names"])),
            model_name=model_name,
        )
        reg.add("dicom_seg", seg)
    return {k: v for k, v in reg.outputs.items() if k in ("labels", "probabilities", "dicom_seg")}


def write_review_images(
    image: MetaTensor,
    labels: np.ndarray,
    files: CaseOutputs,
    *,
    class_names: Sequence[str],
    modality: str,
    viewer: bool = True,
) -> dict[str, Any]:
    """The review pictures of one case: thumbnail, three orthogonal planes and the slice-viewer stack.

    Parameters
    ----------
    image : the case's image ``(C, *S)`` in its source geometry (the first channel is shown).
    labels : the predicted label map ``(*S)`` on the same grid.
    files : the case's output register; pictures go to ``overlays/`` and ``viewer/``.
    class_names : names of the label values.
    modality : CT uses the soft-tissue window; other modalities the 1-99 % percentiles.
    viewer : also write the planes and the slice stack of a 3D case.

    Returns
    -------
    ``{"thumbnail": path, "planes": [axial, coronal, sagittal paths], "stack": path or None}``.
    Views follow the radiological convention whatever the stored order (:mod:`medseg.review.orientation`).
    """
    cid = files.case_id
    window = "soft_tissue" if modality == "CT" else "percentile"
    names = dict(enumerate(class_names))
    img = np.asarray(image.detach().cpu())[0]
    lab = np.asarray(labels)
    aff = np.asarray(image.meta.get("source_affine", image.affine), float)
    out: dict[str, Any] = {"thumbnail": None, "planes": [], "stack": None}
    if modality == "RGB" or image.meta.get("format") == "image2d":  # a photo / slide: display order (H, W[, 3])
        shown = np.moveaxis(np.asarray(image.detach().cpu()), 0, -1).swapaxes(0, 1)
        shown = shown[..., 0] if shown.shape[-1] == 1 else shown
        rgb = overlay_2d(shown, lab.T, window=None if shown.ndim == 3 else window, class_names=names)
        out["thumbnail"] = files.add("overlay", save_png(rgb, files.path("overlays", f"{cid}.png")))
        return out
    if img.ndim == 2:  # a 2D NIfTI / DICOM slice: a one-slice volume, shown like the others
        img, lab = img[..., None], lab[..., None]
    views = {}
    for view in ("axial", "coronal", "sagittal") if (viewer and img.shape[2] > 1) else ("axial",):
        views[view] = save_png(
            overlay_volume(img, lab, affine=aff, view=view, window=window, class_names=names),
            files.path("overlays", f"{cid}.png" if view == "axial" else f"{cid}_{view}.png"),
        )
    out["thumbnail"] = files.add("overlay", views["axial"])
    if len(views) == 3:
        out["planes"] = [str(p.resolve()) for p in views.values()]
        stack = slice_stack(img, lab, aff, window=window, class_names=names)
        out["stack"] = str(write_stack(stack, files.path("viewer", f"{cid}.json")).resolve())
    return out


def write_table(rows: Sequence[Mapping[str, Any]], out: Path, name: str = "segment") -> tuple[Path, Path]:
    """Write ``rows`` as ``out/<name>.csv`` (columns: union of keys, first-seen order) and ``.json``."""
    c = atomic_write_records(out / f"{name}.csv", rows)
    j = atomic_write_text(out / f"{name}.json", json.dumps(list(rows), indent=2, default=str) + "\n")
    return c, j
