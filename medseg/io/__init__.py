"""medseg.io: load and write clinical images with geometry you can trust.

- :func:`discover`: find DICOM series (headers only, in parallel), NIfTI and 2D images under a folder,
  DICOMDIR or zip; describe each with its problems.
- :func:`load`: one image as a MONAI ``MetaTensor`` (C, X, Y[, Z]), ``affine`` voxel -> RAS mm,
  ``meta`` with spacing, orientation, modality, series UID, source paths, problems.
- :func:`save_nifti`, :func:`save_label`: write images / label maps (NIfTI, NRRD, ``.seg.nrrd``) in the
  source geometry (atomic).
- :func:`check_image_label`: an image and its label map must overlay (else ``LabelMismatchError``).

Layout: one module per format (:mod:`.dicom` package, :mod:`.nifti`, :mod:`.nrrd`, :mod:`.metaimage`,
:mod:`.image2d` over :mod:`.raster`; DICOM SEG writing in :mod:`.seg`; label maps in any writable
format through :mod:`.labels`), each declaring its :class:`~medseg.io.base.ImageFormat` once;
:mod:`.registry` collects them (suffixes, readers); :mod:`.series` holds :class:`SeriesInfo` and
the series table; :mod:`.discover` walks folders, DICOMDIRs and zip archives; :mod:`.geometry`
holds the affine rules; :mod:`.safety` keeps third-party messages and header text PHI-safe.
Third-party readers (pydicom, nibabel, pynrrd, SimpleITK, tifffile, torch/MONAI) are imported
when a file is read, so ``import medseg.io`` needs numpy only.

See ``docs/io.md`` for the geometry rules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from medseg.io.label_load import read_label
from medseg.io.labels import save_label
from medseg.io.metaimage import load_metaimage
from medseg.io.nifti import load_nifti, save_nifti
from medseg.io.nrrd import load_nrrd
from medseg.io.registry import FORMATS, reader_for
from medseg.io.safety import clean_text
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
    "load_nrrd",
    "load_metaimage",
    "load_image2d",
    "read_image_array",
    "read_image_uint8",
    "to_uint8",
    "as_rgb",
    "save_nifti",
    "save_label",
    "load_label",
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
    """The one image of ``series`` that ``load`` returns: by index or UID, or the only loadable one.

    Without ``which``: the only entry that is not a damaged file (an unreadable file, or a single
    DICOM file with errors); its own error, if any, is raised. Damaged files beside it do not block
    it: they are logged and listed in the loaded image's ``meta["problems"]``.
    """
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
            f"no series with SeriesInstanceUID {clean_text(which)}; run 'medseg info {where}' to list them",
            path=where,
        )
    images = [s for s in series if s.kind != "unreadable"]
    # a single DICOM file with errors beside a series is a damaged file, not a series to choose
    stray = [s for s in images if s.kind == "dicom" and not s.ok and s.n_files <= 1]
    candidates = [s for s in images if not any(s is t for t in stray)] or images
    if len(candidates) == 1:
        return candidates[0]
    if not images:
        bad = [s for s in series if s.kind == "unreadable"]
        detail = "; ".join(p for s in bad[:3] for p in s.problems)
        raise FileFormatError(f"no loadable image found{': ' + detail if detail else ''}", path=where)
    listing = "; ".join(
        f"[{i}] {s.kind} {s.modality or ''} {s.description or s.path} ({s.n_slices} slices"
        f"{'' if s.ok else ', has errors'})"
        for i, s in enumerate(series)
        if s.kind != "unreadable"
    )
    raise InputError(
        f"{len(images)} images found; pick one with series=<index or SeriesInstanceUID>: {listing}", path=where
    )


def _skipped(series: list[SeriesInfo], chosen: SeriesInfo) -> list[str]:
    """What ``load(folder)`` left out beside the image it loaded: unreadable files and other entries."""
    out = []
    for s in series:
        if s is chosen:
            continue
        if s.kind == "unreadable":
            out.append(f"skipped unreadable file: {'; '.join(p.removeprefix('error: ') for p in s.problems)}")
        elif not s.ok:
            out.append(f"skipped damaged file: {'; '.join(p.removeprefix('error: ') for p in s.problems)[:300]}")
    return out


def load(
    path_or_series: str | Path | SeriesInfo | Sequence[str | Path],
    *,
    series: str | int | None = None,
    resample: bool = False,
    nan_value: float | None = None,
    dtype: DTypeLike = np.float32,
    max_pixels: int | None = None,
) -> MetaTensor:
    """Load one image as a MetaTensor with a RAS affine.

    The reader comes from :mod:`medseg.io.registry`: by the file's suffix (files no format claims
    are read as DICOM), by ``SeriesInfo.kind``, or, for a folder / DICOMDIR / zip, from what
    :func:`discover` finds there.

    Parameters
    ----------
    path_or_series : a DICOM series folder (or a folder / DICOMDIR / zip holding several: pick with
        ``series``), a single (possibly multi-frame) DICOM file, a list of a series' DICOM files, a
        NIfTI, NRRD (``.nrrd``, ``.nhdr``, ``.seg.nrrd``) or MetaImage (``.mha``, ``.mhd``) file, a
        PNG/JPEG/TIFF image, or a :class:`SeriesInfo` from :func:`discover`.
    series : SeriesInstanceUID or index (in :func:`discover`'s order) when the path holds several images.
    resample : DICOM only: when slices are missing / unevenly spaced / tilted, interpolate onto a
        uniform grid (reported in ``meta["problems"]`` and the log) instead of raising ``GeometryError``.
    nan_value : NIfTI / NRRD / MetaImage: replace NaN and infinite voxels with this value (default: keep
        them, warn).
    dtype : output dtype (values after DICOM rescale / NIfTI scl_slope).
    max_pixels : 2D images: the largest ``H x W x pages`` decoded (default
        :data:`medseg.io.raster.MAX_PIXELS`, or the ``MEDSEG_MAX_PIXELS`` environment variable; 0: no
        limit); checked before decoding (``InputError``).

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
    options = LoadOptions(resample=resample, nan_value=nan_value, dtype=dtype, max_pixels=max_pixels)
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
    found = discover(path)
    info = _pick(found, series, str(path))
    img = load(info, resample=resample, nan_value=nan_value, dtype=dtype, max_pixels=max_pixels)
    skipped = _skipped(found, info) if series is None else []
    for note in skipped:
        _log.warning("%s: %s", path, note)
    if skipped:
        img.meta["problems"] = list(img.meta.get("problems", [])) + skipped
    return img


def load_label(
    path: str | os.PathLike,
    reference: MetaTensor | str | os.PathLike,
    *,
    classes: Sequence[str] | Mapping[int, str] | None = None,
    codes: Mapping[str, Any] | None = None,
    threshold: float = 0.5,
    tol_mm: float = 1e-2,
) -> MetaTensor:
    """Read a label map (DICOM SEG, ``.seg.nrrd``, ``.nrrd``, NIfTI) onto its source image's voxel grid.

    ``reference`` is the image the labels were drawn on: a MetaTensor from :func:`load` or anything
    :func:`load` reads (for a DICOM SEG: the folder of its referenced series). Everything else is
    :func:`medseg.io.label_load.read_label`'s (segments mapped to ``classes`` by label / coded concept;
    labels that do not overlay the image refused with ``LabelMismatchError``).

    Returns
    -------
    MetaTensor ``(1, X, Y, Z)`` uint8 on the reference grid, values = class values.
    """
    ref = load(Path(reference)) if isinstance(reference, (str, os.PathLike)) else reference
    return read_label(path, ref, classes=classes, codes=codes, threshold=threshold, tol_mm=tol_mm)
