"""Files of the segmentation task: read images, write label maps, probabilities, DICOM SEG and tables.

Reading goes through :func:`medseg.io.load`; writing through :func:`medseg.io.save_label` (uint8
label maps, qform = sform = the input affine), :func:`medseg.io.save_nifti` (probabilities) and
:func:`medseg.io.write_dicom_seg` (DICOM inputs). Every file is written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medseg.io import load, save_label, save_nifti, write_dicom_seg
from medseg.utils import atomic_write_records, atomic_write_text

__all__ = ["read_image", "write_nifti", "write_probabilities", "write_case_outputs", "write_table"]


def read_image(path: str | Path) -> MetaTensor:
    """Read an image or label map as a channel-first MetaTensor ``(C, *S)`` with its RAS affine.

    NIfTI, a DICOM series folder or PNG/TIFF (:func:`medseg.io.load`). Raises MissingFileError
    and the other :mod:`medseg.io` errors.
    """
    return load(path)


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


def write_case_outputs(
    res: Mapping[str, Any], case_id: str, out: Path, save_probs: bool, model_name: str | None = None
) -> dict[str, str]:
    """Write the outputs of one segmented case; returns ``{kind: absolute path}``.

    Parameters
    ----------
    res : the result of :func:`medseg.tasks.segmentation.predict.predict_case` (``labels`` ``(*S)``
        uint8, ``probs`` ``(K, *S)``, ``affine``, ``dicom_sources``, ``class_names``).
    case_id : medseg's case id (file names are built from it, never from DICOM values).
    out : the output folder: ``labels/<case>.nii.gz`` (``labels/<case>.seg.nrrd``, a 3D Slicer
        segmentation named by class, when ``res["source_format"] == "nrrd"``),
        ``probabilities/<case>.nii.gz``, ``dicom_seg/<case>.seg.dcm``.
    save_probs : also write the probabilities.
    model_name : the algorithm source named in the DICOM SEG.

    For a DICOM series input a DICOM SEG referencing the slices that were used (localizers and
    other excluded files stay out) is written too.
    """
    # label maps in the input's family: a Slicer segmentation (named segments) for NRRD inputs, else NIfTI
    if res.get("source_format") == "nrrd":
        ref = MetaTensor(torch.zeros((1, *np.shape(res["labels"]))), affine=torch.as_tensor(res["affine"]))
        segments = dict(enumerate(res.get("class_names") or []))
        labels_path = save_label(res["labels"], ref, out / "labels" / f"{case_id}.seg.nrrd", segments=segments)
    else:
        labels_path = write_nifti(res["labels"], res["affine"], out / "labels" / f"{case_id}.nii.gz")
    outputs = {"labels": str(labels_path.resolve())}
    if save_probs:
        p = write_probabilities(res["probs"], res["affine"], out / "probabilities" / f"{case_id}.nii.gz")
        outputs["probabilities"] = str(p.resolve())
    if res.get("dicom_sources") and np.asarray(res["labels"]).ndim == 3:
        labels = MetaTensor(torch.as_tensor(res["labels"])[None], affine=torch.as_tensor(res["affine"]))
        seg = write_dicom_seg(
            labels,
            res["dicom_sources"],
            out / "dicom_seg" / f"{case_id}.seg.dcm",
            dict(enumerate(res["class_names"])),
            model_name=model_name,
        )
        outputs["dicom_seg"] = str(Path(seg).resolve())
    return outputs


def write_table(rows: Sequence[Mapping[str, Any]], out: Path, name: str = "segmentation") -> tuple[Path, Path]:
    """Write ``rows`` as ``out/<name>.csv`` (columns: union of keys, first-seen order) and ``.json``."""
    c = atomic_write_records(out / f"{name}.csv", rows)
    j = atomic_write_text(out / f"{name}.json", json.dumps(list(rows), indent=2, default=str) + "\n")
    return c, j
