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
from medseg.io.dicom.plan import ALL_LOCALIZERS, Plan, plan_volume
from medseg.io.dicom.slices import as_number, is_palette
from medseg.io.dicom.source import Source, collector_paused, common_folder, source_from_str, uid_for_message
from medseg.io.geometry import orientation_code
from medseg.io.safety import PASS_THROUGH, clean_text, reason_of, safe_reason, third_party_quiet
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
    name = str(series.path) if isinstance(series, SeriesInfo) else str(series)
    with third_party_quiet(name), collector_paused():
        headers = _headers_of(series)
        if not headers:
            raise InputError("no DICOM files to load", path=name)
        where = common_folder([h.src for h in headers]) if len(headers) > 1 else str(headers[0].src)
        ds0 = headers[0].values
        if "Rows" not in ds0:
            raise FileFormatError(
                f"not an image (SOP class {uid_for_message(ds0.get('SOPClassUID'))}; no pixel data)", path=where
            )
        plan = _cached_plan(series, where, resample) or _plan(headers, where, resample)
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
        except PASS_THROUGH:
            raise
        except MemoryError:
            raise InputError(
                f"not enough memory for a volume of {plan.channels} x {plan.shape} voxels", path=where
            ) from None
        except BaseException as e:
            raise FileFormatError(
                f"cannot build the volume ({safe_reason(e)}); a file may be damaged", path=where
            ) from None


def _plan(headers: list[Header], where: str, resample: bool) -> Plan:
    """:func:`plan_volume`, with a corrupt nested header value (lazy pydicom conversion) as a FileFormatError."""
    try:
        return plan_volume(headers, where, resample=resample)
    except MedsegError:
        raise
    except PASS_THROUGH:
        raise
    except BaseException as e:
        raise FileFormatError(
            f"corrupt DICOM header values ({type(e).__name__}: {reason_of(str(e))})", path=where
        ) from None


def _cached_plan(series: object, where: str, resample: bool) -> Plan | None:
    """The plan :func:`describe_series` made for ``series`` (a SeriesInfo of discover) with the same arguments.

    Planning is deterministic and reads only the headers, which the SeriesInfo keeps: the same
    headers, ``where`` and ``resample`` give the same plan, so ``load(discover(...)[i])`` plans once.
    """
    if isinstance(series, SeriesInfo) and series._plan is not None and series._plan[:2] == (where, resample):
        plan = series._plan[2]
        assert isinstance(plan, Plan)
        return plan
    return None


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

    ds = headers[0].values
    affine = plan.affine
    used = sorted({str(s.hdr.src) for vol in plan.volumes for s in vol})
    problems = list(plan.problems)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "MONOCHROME1":
        problems.append("MONOCHROME1: stored values kept (higher values display darker); invert for display")
    if is_palette(ds):
        problems.append("PALETTE COLOR: expanded to RGB through the colour lookup tables")
    meta = {
        "filename_or_obj": where,
        "format": "dicom",
        "source_paths": used,
        "spacing": np.array(plan.spacing, float),
        "original_affine": affine.copy(),
        "orientation": orientation_code(affine),
        "modality": clean_text(ds.get("Modality", ""), 16) or None,
        "series_uid": _uid(ds.get("SeriesInstanceUID")),
        "study_uid": _uid(ds.get("StudyInstanceUID")),
        "frame_of_reference_uid": _uid(ds.get("FrameOfReferenceUID")),
        "series_description": clean_text(ds.get("SeriesDescription", "")),
        "problems": problems,
        "excluded": list(plan.excluded),
        "rescale_applied": True,
        "channel_key": plan.channel_key,
        "photometric": clean_text(ds.get("PhotometricInterpretation", ""), 16),
        "space": "RAS",
        "original_channel_dim": 0,
        "spatial_shape": np.array(arr.shape[1:]),
    }
    t = torch.from_numpy(arr)  # keeps the (C, X, Y, Z) transposed view: no copy
    # a copy: the plan (and its affine) may be reused by the next load of the same SeriesInfo
    return MetaTensor(t, affine=torch.tensor(affine, dtype=torch.float64), meta=meta)


def _uid(value: object) -> str | None:
    """A UID value for ``meta`` / :class:`SeriesInfo`: None when missing, ``"<not a valid UID>"`` when damaged."""
    text = uid_for_message(value)
    return None if text == "unknown" else text


def describe_series(headers: list[Header], resample: bool = False) -> SeriesInfo:
    """The :class:`SeriesInfo` of one series' headers: what ``load`` would build, and every problem.

    Never raises: a header value that cannot be read makes an ``"error: ..."`` problem.
    """
    ds = headers[0].values
    where = common_folder([h.src for h in headers])
    info = SeriesInfo(
        kind="dicom", path=where, n_files=len(headers), files=[str(h.src) for h in headers], _headers=headers
    )
    try:
        info.series_uid = _uid(ds.get("SeriesInstanceUID"))
        info.modality = clean_text(ds.get("Modality", ""), 16) or None
        info.description = clean_text(ds.get("SeriesDescription", ""))
        number = ds.get("SeriesNumber")
        info.series_number = int(as_number(number, 0)) if number is not None else None
        if ds.get("SOPClassUID") == DICOMDIR_SOP or "Rows" not in ds:
            info.problems.append(
                "error: no image data (no Rows/Columns/pixel data in the files; "
                f"SOP class {uid_for_message(ds.get('SOPClassUID'))})"
            )
            return info
        plan = _plan(headers, where, resample)
        info._plan = (where, resample, plan)
    except MedsegError as e:
        info.problems.append(f"error: {e}")
        return info
    except PASS_THROUGH:
        raise
    except BaseException as e:
        info.problems.append(f"error: {where}: corrupt DICOM header values ({type(e).__name__}: {reason_of(str(e))})")
        return info
    info.problems.extend(plan.problems)
    info.excluded.extend(plan.excluded)
    info.localizer = any(p.endswith(ALL_LOCALIZERS) for p in plan.problems)
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
