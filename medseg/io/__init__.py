"""medseg.io: load and write clinical images with geometry you can trust.

- :func:`discover`: find DICOM series (headers only, in parallel), NIfTI and 2D images under a folder,
  DICOMDIR or zip; describe each with its problems.
- :func:`load`: one image as a MONAI ``MetaTensor`` (C, X, Y[, Z]), ``affine`` voxel -> RAS mm,
  ``meta`` with spacing, orientation, modality, series UID, source paths, problems.
- :func:`save_nifti`, :func:`save_label`: write images / label maps in the source geometry (atomic).
- :func:`check_image_label`: an image and its label map must overlay (else ``LabelMismatchError``).

Layout: one module per format (:mod:`.dicom` package, :mod:`.nifti`, :mod:`.image2d`; DICOM SEG
writing in :mod:`.seg`), each declaring its :class:`~medseg.io.base.ImageFormat` once;
:mod:`.registry` collects them (suffixes, readers); :mod:`.series` holds :class:`SeriesInfo` and
the series table; :mod:`.discover` walks folders, DICOMDIRs and zip archives; :mod:`.geometry`
holds the affine rules. Third-party readers (pydicom, nibabel, tifffile, torch/MONAI) are imported
when a file is read, so ``import medseg.io`` needs numpy only.

See ``docs/io.md`` for the geometry rules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import DTypeLike

from medseg.errors import FileFormatError, InputError, MissingFileError
from medseg.io.base import LoadOptions
from medseg.io.dicom import load_dicom, read_dicom_header
from medseg.io.discover import discover, is_container
from medseg.io.geometry import (
    LPS_TO_RAS,
    affines_close,
    check_image_label,
    dicom_affine,
    orientation_code,
    voxel_to_world,
    world_to_voxel,
)
from medseg.io.image2d import as_rgb, load_image2d, read_image_array, read_image_uint8, to_uint8
from medseg.io.nifti import load_nifti, save_label, save_nifti
from medseg.io.registry import FORMATS, reader_for
from medseg.io.seg import write_dicom_seg
from medseg.io.series import SeriesInfo, format_series_table

if TYPE_CHECKING:  # annotations only: the readers import monai (torch) when they run
    from monai.data import MetaTensor

__all__ = [
    "SeriesInfo",
    "discover",
    "format_series_table",
    "load",
    "load_dicom",
    "load_nifti",
    "load_image2d",
    "read_image_array",
    "read_image_uint8",
    "to_uint8",
    "as_rgb",
    "save_nifti",
    "save_label",
    "write_dicom_seg",
    "check_image_label",
    "read_dicom_header",
    "dicom_affine",
    "orientation_code",
    "affines_close",
    "voxel_to_world",
    "world_to_voxel",
    "LPS_TO_RAS",
]


_log = logging.getLogger(__name__)


def _pick(series: list[SeriesInfo], which: str | int | None, where: str) -> SeriesInfo:
    """The one image of ``series`` that ``load`` returns: by index or UID, or the only loadable one."""
    if which is not None:
        if isinstance(which, int) or (isinstance(which, str) and which.isdigit() and len(which) < 6):
            i = int(which)
            if not 0 <= i < len(series):
                raise InputError(f"series index {i} out of range (0..{len(series) - 1})", path=where)
            return series[i]
        for s in series:
            if s.series_uid == which:
                return s
        raise InputError(
            f"no series with SeriesInstanceUID {which}; run 'medseg info {where}' to list them", path=where
        )
    images = [s for s in series if s.kind != "unreadable"]
    if len(images) == 1:
        for s in series:
            if s.kind == "unreadable":
                _log.warning("%s: skipped: %s", where, "; ".join(s.problems))
        return images[0]
    if not images:
        bad = [s for s in series if s.kind == "unreadable"]
        detail = "; ".join(p for s in bad[:3] for p in s.problems)
        raise FileFormatError(f"no loadable image found{': ' + detail if detail else ''}", path=where)
    listing = "; ".join(
        f"[{i}] {s.kind} {s.modality or ''} {s.description or s.path} ({s.n_slices} slices)"
        for i, s in enumerate(series)
        if s.kind != "unreadable"
    )
    raise InputError(
        f"{len(images)} images found; pick one with series=<index or SeriesInstanceUID>: {listing}", path=where
    )


def load(
    path_or_series: str | Path | SeriesInfo | Sequence[str | Path],
    *,
    series: str | int | None = None,
    resample: bool = False,
    nan_value: float | None = None,
    dtype: DTypeLike = np.float32,
) -> MetaTensor:
    """Load one image as a MetaTensor with a RAS affine.

    The reader comes from :mod:`medseg.io.registry`: by the file's suffix (files no format claims
    are read as DICOM), by ``SeriesInfo.kind``, or, for a folder / DICOMDIR / zip, from what
    :func:`discover` finds there.

    Parameters
    ----------
    path_or_series : a DICOM series folder (or a folder / DICOMDIR / zip holding several: pick with
        ``series``), a single (possibly multi-frame) DICOM file, a list of a series' DICOM files, a
        NIfTI file, a PNG/JPEG/TIFF image, or a :class:`SeriesInfo` from :func:`discover`.
    series : SeriesInstanceUID or index (in :func:`discover`'s order) when the path holds several images.
    resample : DICOM only: when slices are missing / unevenly spaced / tilted, interpolate onto a
        uniform grid (reported in ``meta["problems"]`` and the log) instead of raising ``GeometryError``.
    nan_value : NIfTI only: replace NaN voxels with this value (default: keep NaN, warn).
    dtype : output dtype (values after DICOM rescale / NIfTI scl_slope).

    Returns
    -------
    MetaTensor, channel-first ``(C, X, Y, Z)`` for volumes (``(C, X, Y)`` for 2D images).
    ``affine`` (4x4, float64) maps voxel indices to RAS mm. ``meta``: ``spacing`` (mm, per axis),
    ``orientation`` (axis code of the voxel axes, e.g. ``"LPS"`` for a DICOM axial stack),
    ``modality``, ``series_uid``, ``source_paths``, ``filename_or_obj``, ``format``, ``problems``.
    CT values are HU (air -1000).

    Raises
    ------
    MissingFileError, FileFormatError, GeometryError, MissingDependencyError, InputError
        (all ``medseg.errors``), naming the file or folder, never the patient.
    """
    options = LoadOptions(resample=resample, nan_value=nan_value, dtype=dtype)
    if isinstance(path_or_series, SeriesInfo):
        info = path_or_series
        info.raise_if_unreadable()
        return FORMATS[info.kind].reader()(info, options)
    if not isinstance(path_or_series, (str, os.PathLike)):  # the files of one DICOM series
        return load_dicom(list(path_or_series), resample=resample, dtype=dtype)
    path = Path(path_or_series)
    if not path.exists():
        raise MissingFileError("path not found", path=str(path))
    if path.is_file() and not is_container(path):
        return reader_for(path).reader()(path, options)
    info = _pick(discover(path), series, str(path))
    return load(info, resample=resample, nan_value=nan_value, dtype=dtype)
