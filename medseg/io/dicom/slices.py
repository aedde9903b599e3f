"""The 2D frames of a DICOM file with their geometry: classic slices, enhanced and classic multi-frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.io.dicom.header import Header

__all__ = ["Slice", "slices_of", "as_floats", "as_number", "is_palette", "samples_out", "has_modality_lut"]


def as_floats(v: Any, n: int | None = None) -> np.ndarray | None:
    """A header value as a float array (of length ``n``), or None when missing, malformed or not finite."""
    if v is None:
        return None
    try:
        a = np.array([float(x) for x in v], float)
    except (TypeError, ValueError):
        return None
    if n is not None and a.size != n:
        return None
    if not np.all(np.isfinite(a)):
        return None
    return a


def as_number(v: Any, default: float) -> float:
    """A header value as a finite float, else ``default``."""
    try:
        f = float(v)
        return f if np.isfinite(f) else default
    except (TypeError, ValueError):
        return default


def is_palette(ds: Any) -> bool:
    """True for a PALETTE COLOR image (stored values are indices into colour lookup tables)."""
    return str(ds.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR"


def has_modality_lut(ds: Any) -> bool:
    """True when stored values map to modality values through a Modality LUT Sequence (not slope / intercept)."""
    return bool(ds.get("ModalityLUTSequence"))


def samples_out(ds: Any) -> int:
    """Channels one frame of ``ds`` gives when loaded: 3 for palette colour (expanded to RGB), else SamplesPerPixel."""
    if is_palette(ds):
        return 3
    return max(1, int(as_number(ds.get("SamplesPerPixel", 1), 1)))


@dataclass
class Slice:
    """One 2D frame of a volume: a classic slice file or one frame of a multi-frame file.

    ``ipp`` (LPS mm, 3) and ``iop`` (6 direction cosines) are None when the header lacks them;
    ``pixel_spacing`` is DICOM's ``(row spacing, column spacing)`` = ``(dy, dx)`` in mm.
    """

    hdr: Header
    frame: int | None
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float
    keys: dict[str, Any]  # values that may tell 4D volumes apart (temporal position, echo, b-value ...)
    image_type: tuple[str, ...] = ()
    instance: int = 0
    s: float = 0.0  # position along the slice normal (mm), set by the planner


def _first(seq_owner: Any, name: str) -> Any:
    seq = seq_owner.get(name) if seq_owner is not None else None
    if seq:
        return seq[0]
    return None


def _frame_group(ds: Any, frame: int, seq_name: str) -> Any:
    """An item of a functional group for ``frame`` (per-frame first, then shared)."""
    pf = ds.get("PerFrameFunctionalGroupsSequence")
    if pf is not None and frame < len(pf):
        item = _first(pf[frame], seq_name)
        if item is not None:
            return item
    return _first(_first(ds, "SharedFunctionalGroupsSequence"), seq_name)


def _pixel_spacing(v: Any) -> tuple[float, float]:
    ps = as_floats(v, 2)
    return (float(ps[0]), float(ps[1])) if ps is not None else (1.0, 1.0)


def _common_keys(ds: Any) -> dict[str, Any]:
    return {
        "AcquisitionNumber": ds.get("AcquisitionNumber"),
        "TemporalPositionIdentifier": ds.get("TemporalPositionIdentifier"),
        "EchoNumbers": ds.get("EchoNumbers"),
        "TriggerTime": ds.get("TriggerTime"),
        "DiffusionBValue": ds.get("DiffusionBValue"),
    }


def slices_of(h: Header) -> list[Slice]:
    """The frames of one file, each with its own position, orientation, pixel spacing and rescale."""
    ds = h.values
    frames = h.frames
    image_type = tuple(str(x).upper() for x in (ds.get("ImageType") or []))
    if "PerFrameFunctionalGroupsSequence" in ds:
        return [_enhanced_frame(h, f, image_type) for f in range(frames)]
    ps = ds.get("PixelSpacing") if as_floats(ds.get("PixelSpacing"), 2) is not None else ds.get("ImagerPixelSpacing")
    pixel_spacing = _pixel_spacing(ps)
    ipp = as_floats(ds.get("ImagePositionPatient"), 3)
    iop = as_floats(ds.get("ImageOrientationPatient"), 6)
    lut = has_modality_lut(ds)  # the LUT is applied with the pixels (medseg.io.dicom.pixels)

    def frame_slice(frame: int | None, position: np.ndarray | None) -> Slice:
        return Slice(
            hdr=h,
            frame=frame,
            ipp=position,
            iop=iop,
            pixel_spacing=pixel_spacing,
            slope=1.0 if lut else as_number(ds.get("RescaleSlope", 1), 1.0),
            intercept=0.0 if lut else as_number(ds.get("RescaleIntercept", 0), 0.0),
            keys=_common_keys(ds),
            image_type=image_type,
            instance=int(as_number(ds.get("InstanceNumber", 0), 0)),
        )

    if frames > 1:
        # classic multi-frame (RT dose, NM, US cine): GridFrameOffsetVector gives positions along the normal
        gfov = as_floats(ds.get("GridFrameOffsetVector"))
        out = []
        for f in range(frames):
            fipp = None
            if ipp is not None and iop is not None and gfov is not None and gfov.size == frames:
                fipp = ipp + np.cross(iop[:3], iop[3:]) * gfov[f]
            out.append(frame_slice(f, fipp))
        return out
    return [frame_slice(None, ipp)]


def _enhanced_frame(h: Header, f: int, image_type: tuple[str, ...]) -> Slice:
    """Frame ``f`` of an enhanced multi-frame file (per-frame functional groups, shared as fall-back)."""
    ds = h.values
    pos = _frame_group(ds, f, "PlanePositionSequence")
    ori = _frame_group(ds, f, "PlaneOrientationSequence")
    pm = _frame_group(ds, f, "PixelMeasuresSequence")
    pv = _frame_group(ds, f, "PixelValueTransformationSequence")
    fc = _frame_group(ds, f, "FrameContentSequence")
    keys = _common_keys(ds)
    if fc is not None:
        keys["TemporalPositionIndex"] = fc.get("TemporalPositionIndex")
        keys["StackID"] = fc.get("StackID")
    owner = pv if pv is not None else ds  # rescale per frame, else the file's
    return Slice(
        hdr=h,
        frame=f,
        ipp=as_floats(pos.get("ImagePositionPatient") if pos is not None else None, 3),
        iop=as_floats(ori.get("ImageOrientationPatient") if ori is not None else None, 6),
        pixel_spacing=_pixel_spacing(pm.get("PixelSpacing") if pm is not None else None),
        slope=as_number(owner.get("RescaleSlope", 1), 1.0),
        intercept=as_number(owner.get("RescaleIntercept", 0), 0.0),
        keys=keys,
        image_type=image_type,
        instance=f,
    )
