"""The contract every image format of :mod:`medseg.io` fulfils (nnU-Net's ``base_reader_writer.py``).

A format module (``dicom/``, ``nifti.py``, ``image2d.py``) declares one :class:`ImageFormat`
named ``FORMAT``: its name, its file suffixes (declared there and nowhere else), whether a file is
a volume or a 2D image, the reader that builds a ``MetaTensor`` and, for formats with one image per
file, the function that describes a file from its header. :mod:`medseg.io.registry` collects the
``FORMAT`` of every module; ``discover``, ``load``, the CLI and the tasks ask the registry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from medseg.errors import LabelMismatchError
from medseg.io.geometry import orientation_code, spacing_from_affine
from medseg.io.series import SeriesInfo

if TYPE_CHECKING:  # annotations only: the readers import monai (torch) when they run
    from monai.data import MetaTensor

__all__ = [
    "ImageFormat",
    "LoadOptions",
    "Reader",
    "Describer",
    "LabelWriter",
    "source_path",
    "nonfinite_voxels",
    "label_array",
    "reference_grid",
]

log = logging.getLogger("medseg.io")


@dataclass(frozen=True)
class LoadOptions:
    """What :func:`medseg.io.load` passes to every reader; a reader uses the options that apply to it.

    Attributes
    ----------
    resample : DICOM: interpolate irregular series onto a uniform grid (reported) instead of raising.
    nan_value : NIfTI, NRRD, MetaImage: replace NaN and infinite voxels with this value (``None`` keeps
        them and warns).
    dtype : dtype of the returned voxel values (after rescale / scl_slope).
    max_pixels : 2D images: the pixel limit (``None``: :data:`medseg.io.raster.MAX_PIXELS` or
        ``$MEDSEG_MAX_PIXELS``; 0: none).
    """

    resample: bool = False
    nan_value: float | None = None
    dtype: DTypeLike = np.float32
    max_pixels: int | None = None


#: ``read(source, options) -> MetaTensor``: ``source`` is a file, or the :class:`SeriesInfo` that
#: :func:`medseg.io.discover` found (for DICOM: a whole series, headers already read).
Reader = Callable[[Path | SeriesInfo, LoadOptions], "MetaTensor"]
#: ``describe(path) -> SeriesInfo`` from the file's header; never raises (an unreadable file is a
#: ``kind="unreadable"`` entry naming the problem).
Describer = Callable[[Path], SeriesInfo]
#: ``write_label(labels, reference, path, segments) -> path``: a label map on the reference's grid
#: (``segments``: ``{label value: name}`` for formats that store names, e.g. Slicer's ``.seg.nrrd``).
LabelWriter = Callable[[Any, Any, Path, "Mapping[int, str] | None"], Path]


@dataclass(frozen=True)
class ImageFormat:
    """One readable format: its name, file suffixes and whether a file is a volume or a 2D image.

    Attributes
    ----------
    name : registry key, also :attr:`SeriesInfo.kind` of what it reads (``"dicom"``, ``"nifti"``, ...).
    suffixes : lower-case file suffixes with the leading dot (``".nii.gz"`` counts as one).
    kind : ``"volume"`` or ``"image2d"``.
    description : one line for humans (docs, ``--help``).
    read : the format's reader (see :data:`Reader`).
    describe : header-only description of one file (see :data:`Describer`); ``None`` for formats
        whose images span several files (DICOM: :func:`medseg.io.discover` groups them into series).
    write_label : the format's label-map writer (see :data:`LabelWriter`); ``None`` when medseg does
        not write label maps in this format.
    write_suffixes : the suffixes ``write_label`` writes (a subset of ``suffixes``).
    """

    name: str
    suffixes: tuple[str, ...]
    kind: str  # "volume" | "image2d"
    description: str
    read: Reader | None = field(default=None, compare=False, repr=False)
    describe: Describer | None = field(default=None, compare=False, repr=False)
    write_label: LabelWriter | None = field(default=None, compare=False, repr=False)
    write_suffixes: tuple[str, ...] = ()

    def reader(self) -> Reader:
        """The format's reader (an ``ImageFormat`` declared without one cannot load files)."""
        if self.read is None:  # pragma: no cover - every registered format has a reader
            raise NotImplementedError(f"format {self.name!r} declares no reader")
        return self.read


def source_path(source: str | Path | SeriesInfo) -> Path:
    """The file a one-file-per-image reader reads: ``source`` itself, or the ``path`` of a :class:`SeriesInfo`."""
    return Path(source.path) if isinstance(source, SeriesInfo) else Path(source)


def nonfinite_voxels(
    data: np.ndarray, nan_value: float | None, path: Path | str, problems: list[str]
) -> tuple[int, int]:
    """Count NaN and infinite voxels of float ``data``; replace both in place by ``nan_value``, or keep them (warned).

    Returns ``(NaN count, infinite count)``; the finding is appended to ``problems``.
    """
    if data.dtype.kind != "f":
        return 0, 0
    bad = ~np.isfinite(data)
    if not bad.any():
        return 0, 0
    nan = int(np.isnan(data).sum())
    inf = int(bad.sum()) - nan
    what = " and ".join(x for x in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if x)
    if nan_value is None:
        msg = f"{what} voxel(s) kept (pass nan_value= to replace them)"
        log.warning("%s: %s", path, msg)
    else:
        data[bad] = nan_value
        msg = f"{what} voxel(s) replaced by {nan_value}"
    problems.append(msg)
    return nan, inf


def volume_meta(
    path: Path | str,
    fmt: str,
    affine: np.ndarray,
    shape: tuple[int, ...],
    problems: list[str],
    nonfinite: tuple[int, int],
    **extra: Any,
) -> dict[str, Any]:
    """The meta of a volume read from one file (NIfTI, NRRD, MetaImage): the keys every reader sets.

    Parameters
    ----------
    path : the file; fmt : its format name (``meta["format"]``); affine : 4x4 voxel -> RAS mm;
    shape : the data's ``(C, X, Y, Z)`` shape; problems : the reader's findings;
    nonfinite : ``(NaN count, infinite count)`` (:func:`nonfinite_voxels`); extra : format-specific keys.
    """
    return {
        "filename_or_obj": str(path),
        "format": fmt,
        "source_paths": [str(path)],
        "spacing": np.array(spacing_from_affine(affine), float),
        "original_affine": np.asarray(affine, float).copy(),
        "orientation": orientation_code(affine),
        "modality": None,
        "series_uid": None,
        "problems": problems,
        "nan_voxels": nonfinite[0],
        "inf_voxels": nonfinite[1],
        "space": "RAS",
        "original_channel_dim": 0,
        "spatial_shape": np.array(shape[1:]),
        **extra,
    }


def reference_grid(reference: Any) -> tuple[tuple[int, ...], np.ndarray, Mapping[str, Any]]:
    """``(spatial shape, 4x4 RAS affine, meta)`` of a MetaTensor ``(C, X, Y[, Z])`` (or an object with ``affine``)."""
    shape = tuple(int(s) for s in reference.shape[1:])
    aff = reference.affine
    aff = np.asarray(aff.detach().cpu().numpy() if hasattr(aff, "detach") else aff, float)
    if aff.shape == (3, 3):  # a 2D affine: padded to 4x4
        b = np.eye(4)
        b[:2, :2] = aff[:2, :2]
        b[:2, 3] = aff[:2, 2]
        aff = b
    return shape, aff, getattr(reference, "meta", {}) or {}


def label_array(labels: Any, ref_shape: tuple[int, ...], path: str | Path, ref_name: str = "") -> np.ndarray:
    """``labels`` ((X, Y[, Z]) or (1, X, Y[, Z])) as uint8 ``(X, Y, Z)``, checked against the reference grid.

    Raises
    ------
    LabelMismatchError : naming the output ``path``: the spatial shape differs from ``ref_shape``, or
        values are not integers in 0..255.
    """
    arr = labels.detach().cpu().numpy() if hasattr(labels, "detach") else np.asarray(labels)
    if arr.ndim == len(ref_shape) + 1 and arr.shape[0] == 1:
        arr = arr[0]
    if tuple(arr.shape) != tuple(ref_shape):
        raise LabelMismatchError(
            f"label shape {tuple(arr.shape)} does not match the reference image {ref_name} shape {tuple(ref_shape)}",
            path=str(path),
        )
    if arr.dtype.kind == "f" and (not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr))):
        raise LabelMismatchError("labels must be integers (got non-integer floats)", path=str(path))
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise LabelMismatchError(f"label values must be in 0..255 (got {arr.min()}..{arr.max()})", path=str(path))
    data = arr.astype(np.uint8)
    return data[:, :, None] if data.ndim == 2 else data
