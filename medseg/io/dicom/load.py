"""Loading a DICOM series (or one, possibly multi-frame, file) as a MetaTensor, and describing a series.

Also declares the DICOM entry of the format registry (:data:`FORMAT`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import DTypeLike

from medseg.errors import FileFormatError, InputError, MedsegError
from medseg.io.base import ImageFormat, LoadOptions
from medseg.io.dicom.header import DICOMDIR_SOP, Header, read_dicom_header, read_headers_strict
from medseg.io.dicom.pixels import build_volume
from medseg.io.dicom.plan import Plan, plan_volume
from medseg.io.dicom.slices import as_number
from medseg.io.dicom.source import Source, common_folder, source_from_str, uid_for_message
from medseg.io.geometry import orientation_code
from medseg.io.series import SeriesInfo

if TYPE_CHECKING:  # annotations only: monai (torch) is imported when a volume is built
    from monai.data import MetaTensor

__all__ = ["load_dicom", "describe_series", "FORMAT"]

log = logging.getLogger("medseg.io.dicom")


def load_dicom(
    series: SeriesInfo | str | Path | Sequence[str | Path],
    *,
    resample: bool = False,
    dtype: DTypeLike = np.float32,
) -> MetaTensor:
    """Load one DICOM series (or one, possibly multi-frame, DICOM file) as a MetaTensor.

    Parameters
    ----------
    series : a :class:`SeriesInfo` from :func:`medseg.io.discover`, a single DICOM file, or a list of
        the series' files.
    resample : when the slices are irregular (missing slices, non-uniform spacing, gantry tilt),
        interpolate onto a uniform grid and report it in ``meta["problems"]`` instead of raising.
    dtype : output dtype (values after RescaleSlope/Intercept, e.g. HU for CT).

    Returns
    -------
    MetaTensor (C, X, Y, Z): C = 1 (3 for RGB, T for 4D series); X along the row direction
    cosine, Y along the column cosine, Z along the sorted slice normal; ``affine`` voxel -> RAS mm.

    Raises
    ------
    GeometryError, FileFormatError, MissingDependencyError : with the file/folder named.
    """
    headers = _headers_of(series)
    if not headers:
        raise InputError("no DICOM files to load", path=str(series))
    where = common_folder([h.src for h in headers]) if len(headers) > 1 else str(headers[0].src)
    ds0 = headers[0].ds
    if "Rows" not in ds0:
        raise FileFormatError(
            f"not an image (SOP class {uid_for_message(ds0.get('SOPClassUID'))}; no pixel data)", path=where
        )
    try:
        plan = plan_volume(headers, where, resample=resample)
    except Exception as e:  # corrupt nested header values (lazy pydicom conversion)
        raise FileFormatError(f"corrupt DICOM header values ({type(e).__name__}: {str(e)[:200]})", path=where) from None
    if plan.errors:
        cls, msg = plan.errors[0]
        raise cls(msg, path=where)
    for p in plan.problems:
        log.warning("%s: %s", where, p)
    try:
        arr = build_volume(plan, where, dtype=dtype)
        return _to_metatensor(arr, plan, headers, where)
    except MedsegError:
        raise
    except MemoryError:
        raise
    except Exception as e:
        raise FileFormatError(
            f"cannot build the volume ({type(e).__name__}: {str(e)[:200]}); a file may be damaged", path=where
        ) from None


def _headers_of(series: SeriesInfo | str | Path | Sequence[str | Path]) -> list[Header]:
    """The headers to build from: those ``discover`` already read, or read now."""
    if isinstance(series, SeriesInfo):
        series.raise_if_unreadable()
        return series._headers or read_headers_strict([source_from_str(f) for f in series.files])
    if isinstance(series, (str, Path)):
        return [read_dicom_header(series)]
    return read_headers_strict([Source(str(p)) for p in series])


def _to_metatensor(arr: np.ndarray, plan: Plan, headers: list[Header], where: str) -> MetaTensor:
    import torch  # lazy: keeps `import medseg.io` light (torch, MONAI)
    from monai.data import MetaTensor

    ds = headers[0].ds
    affine = plan.affine
    used = sorted({str(s.hdr.src) for vol in plan.volumes for s in vol})
    meta = {
        "filename_or_obj": where,
        "format": "dicom",
        "source_paths": used,
        "spacing": np.array(plan.spacing, float),
        "original_affine": affine.copy(),
        "orientation": orientation_code(affine),
        "modality": str(ds.get("Modality", "")) or None,
        "series_uid": str(ds.get("SeriesInstanceUID", "")) or None,
        "study_uid": str(ds.get("StudyInstanceUID", "")) or None,
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")) or None,
        "series_description": str(ds.get("SeriesDescription", "")),
        "problems": list(plan.problems),
        "excluded": list(plan.excluded),
        "rescale_applied": True,
        "channel_key": plan.channel_key,
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "space": "RAS",
        "original_channel_dim": 0,
        "spatial_shape": np.array(arr.shape[1:]),
    }
    t = torch.from_numpy(arr)  # keeps the (C, X, Y, Z) transposed view: no copy
    return MetaTensor(t, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def describe_series(headers: list[Header], resample: bool = False) -> SeriesInfo:
    """The :class:`SeriesInfo` of one series' headers: what ``load`` would build, and every problem."""
    ds = headers[0].ds
    where = common_folder([h.src for h in headers])
    info = SeriesInfo(
        kind="dicom",
        path=where,
        series_uid=str(ds.get("SeriesInstanceUID", "")) or None,
        modality=str(ds.get("Modality", "")) or None,
        description=str(ds.get("SeriesDescription", "")),
        series_number=int(as_number(ds.get("SeriesNumber"), 0)) if ds.get("SeriesNumber") is not None else None,
        n_files=len(headers),
        files=[str(h.src) for h in headers],
        _headers=headers,
    )
    if ds.get("SOPClassUID") == DICOMDIR_SOP or "Rows" not in ds:
        info.problems.append(
            "error: no image data (no Rows/Columns/pixel data in the files; "
            f"SOP class {ds.get('SOPClassUID', 'unknown')})"
        )
        return info
    try:
        plan = plan_volume(headers, where, resample=resample)
    except Exception as e:  # corrupt nested header values (lazy pydicom conversion)
        info.problems.append(f"error: {where}: corrupt DICOM header values ({type(e).__name__}: {str(e)[:120]})")
        return info
    info.problems.extend(plan.problems)
    info.excluded.extend(plan.excluded)
    if plan.volumes:
        info.n_slices = len(plan.volumes[0])
        info.shape = plan.shape
        info.n_channels = plan.channels
        info.spacing = tuple(round(v, 6) for v in plan.spacing)
        info.orientation = orientation_code(plan.affine)
    return info


def _reader(source: Path | SeriesInfo, options: LoadOptions) -> MetaTensor:
    return load_dicom(source, resample=options.resample, dtype=options.dtype)


#: the DICOM entry of :mod:`medseg.io.registry`. Files with other or no suffixes are DICOM too when
#: they parse as DICOM (DICOMDIR trees name files without a suffix); discover groups files into series.
FORMAT = ImageFormat(
    name="dicom",
    suffixes=(".dcm", ".dicom", ".ima", ".dic"),
    kind="volume",
    description="DICOM (a series is a folder of files)",
    read=_reader,
)
