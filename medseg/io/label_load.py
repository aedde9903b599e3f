"""Reading label maps back onto their source image: DICOM SEG, 3D Slicer ``.seg.nrrd``, NRRD and NIfTI.

:func:`load_label` is how corrections come back from a radiologist (OHIF / 3D Slicer write DICOM SEG or
``.seg.nrrd``; ITK-SNAP and scripts write NIfTI): one ``(1, X, Y, Z)`` uint8 label map on the
**reference image's voxel grid** whose values are the model's classes.

- Geometry: every label grid (a SEG frame, a cropped ``.seg.nrrd``, a NIfTI in another orientation) is
  placed on the reference grid voxel for voxel (:func:`medseg.io.geometry.grid_embedding`: an axis
  permutation, flips, an integer offset; never interpolated). One that does not lie on the grid (other
  spacing, a shift of a fraction of a voxel, another frame of reference / series, or labelled voxels
  outside the image) is refused with :class:`~medseg.errors.LabelMismatchError`.
- DICOM SEG (read with highdicom): BINARY, FRACTIONAL (a pixel belongs to the segment when its
  fraction is >= ``threshold``) and LABELMAP segmentations; frames are placed by their own plane
  position / orientation, so SEGs that omit empty frames, or store frames in any order, read back.
- Classes: with ``classes`` (the model's class names, background first) each segment is mapped to a
  class by its label (case, ``_`` / ``-`` and spaces ignored), else by its coded segmented property type
  (the code :func:`medseg.io.write_dicom_seg` writes for that class name: SNOMED CT for known
  structures); a segment that maps to no class is an error naming it and the classes. Where segments
  overlap, the higher class value wins (a lesion drawn inside an organ stays a lesion); the overlap is
  logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import FileFormatError, InputError, LabelMismatchError, MissingFileError
from medseg.io.base import LoadOptions, reference_grid
from medseg.io.geometry import dicom_affine, grid_embedding
from medseg.io.nrrd import is_seg_nrrd, load_nrrd
from medseg.io.registry import format_of, reader_for
from medseg.io.safety import clean_text, contained, third_party_quiet
from medseg.io.seg import _norm_name, segment_type_code

if TYPE_CHECKING:  # annotations only: monai (torch) is imported when a label is read
    from monai.data import MetaTensor

__all__ = ["read_label", "seg_referenced_series", "SEG_SOP_CLASSES"]

log = logging.getLogger(__name__)

#: Segmentation Storage and Label Map Segmentation Storage
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")


@dataclass
class _Segment:
    """One segment of a label file: its number there, label, coded type and the voxels it covers."""

    number: int
    label: str
    code: tuple[str, str] | None
    pieces: list[tuple[np.ndarray, np.ndarray]]  # (bool (X, Y, Z) grid, its 4x4 RAS affine)


def read_label(
    path: str | os.PathLike,
    reference: MetaTensor,
    *,
    classes: Sequence[str] | Mapping[int, str] | None = None,
    codes: Mapping[str, Any] | None = None,
    threshold: float = 0.5,
    tol_mm: float = 1e-2,
) -> MetaTensor:
    """Read a label map (DICOM SEG, ``.seg.nrrd``, ``.nrrd``, NIfTI) onto its source image's grid.

    Parameters
    ----------
    path : a DICOM SEG file (or a folder holding exactly one), a 3D Slicer ``.seg.nrrd``, a label
        ``.nrrd`` or a NIfTI label map.
    reference : the image the labels belong to: a MetaTensor ``(C, X, Y, Z)`` from
        :func:`medseg.io.load` (for a SEG: its referenced series). :func:`medseg.io.load_label` also
        takes a path here.
    classes : the model's class names, background first (``["background", "liver", "lesion"]``) or
        ``{value: name}``. Segments of a SEG / ``.seg.nrrd`` are mapped to these values by label, else by
        coded concept; values of a NIfTI / NRRD label volume must be 0..K-1. ``None``: a SEG segment
        keeps its segment number, a ``.seg.nrrd`` segment its label value, a volume its values.
    codes : ``{class name: (category, type)}`` codes, as given to :func:`medseg.io.write_dicom_seg`.
    threshold : FRACTIONAL SEGs: the fraction (0..1) from which a pixel belongs to the segment.
    tol_mm : largest misplacement (mm) of the label grid on the reference grid.

    Returns
    -------
    MetaTensor ``(1, X, Y, Z)`` uint8 on the reference grid (its affine); ``meta``: ``format``
    (``dicom-seg``, ``seg.nrrd``, ``nrrd``, ``nifti``), ``filename_or_obj``, ``segments``
    (``[{"number", "label", "class"}]`` for SEG / ``.seg.nrrd``).

    Raises
    ------
    MissingFileError, FileFormatError : no such file, or not a label format medseg reads.
    LabelMismatchError : the labels do not overlay the reference (grid, frame of reference, series), a
        segment maps to no class, or volume values outside the classes.
    """
    import torch  # lazy: keeps `import medseg.io` light (torch, MONAI)
    from monai.data import MetaTensor

    path = Path(path)
    if not path.exists():
        raise MissingFileError("label file not found", path=str(path))
    ref_shape, ref_aff, ref_meta = reference_grid(reference)
    if len(ref_shape) != 3:
        raise InputError(f"the reference image must be a volume (C, X, Y, Z), got spatial shape {ref_shape}")
    table = _class_table(classes)
    fmt = format_of(path) if path.is_file() else None
    if is_seg_nrrd(path):
        kind, segments = "seg.nrrd", _seg_nrrd_segments(path)
    elif fmt in ("nifti", "nrrd", "metaimage"):
        kind, segments = fmt, _volume_segments(path, table)
    else:
        kind, segments = "dicom-seg", _dicom_seg_segments(_seg_file(path), ref_meta, threshold)
    out = np.zeros(ref_shape, np.uint8)
    described = []
    for seg in sorted(segments, key=lambda s: _class_value(s, table, codes, path, kind)):
        value = _class_value(seg, table, codes, path, kind)
        described.append({"number": seg.number, "label": seg.label, "class": value})
        mask = np.zeros(ref_shape, bool)
        for arr, aff in seg.pieces:
            _place(arr, aff, mask, ref_aff, path, tol_mm)
        overlap = int(np.count_nonzero(mask & (out > 0) & (out != value)))
        if overlap:
            log.info(
                "%s: segment %s overlaps another class on %d voxels; class %d kept there",
                path.name,
                seg.label,
                overlap,
                value,
            )
        out[mask] = value
    meta = {
        "format": kind,
        "filename_or_obj": str(path),
        "segments": described if kind in ("dicom-seg", "seg.nrrd") else [],
        "series_uid": ref_meta.get("series_uid"),
    }
    return MetaTensor(torch.from_numpy(out[None]), affine=torch.as_tensor(ref_aff, dtype=torch.float64), meta=meta)


# --------------------------------------------------------------------------------------- classes
def _class_table(classes: Sequence[str] | Mapping[int, str] | None) -> dict[int, str] | None:
    if classes is None:
        return None
    table = {int(k): str(v) for k, v in classes.items()} if isinstance(classes, Mapping) else dict(enumerate(classes))
    if not table or max(table) > 255 or min(table) < 0:
        raise InputError(f"classes must name label values 0..255 (background first), got {table}")
    return table


def _class_value(
    seg: _Segment, table: dict[int, str] | None, codes: Mapping[str, Any] | None, path: Path, kind: str
) -> int:
    """The class value of ``seg``: by label, else by coded type; the segment's own number without classes."""
    if table is None:
        if not 0 < seg.number <= 255:
            raise LabelMismatchError(f"{kind} segment {seg.number} cannot be a uint8 label value", path=str(path))
        return seg.number
    if kind in ("nifti", "nrrd", "metaimage"):
        return seg.number  # a volume's values, checked against the classes when read
    by_name = [v for v, n in table.items() if v > 0 and _norm_name(n) == _norm_name(seg.label)]
    if by_name:
        return by_name[0]
    if seg.code is not None:
        by_code = [v for v, n in table.items() if v > 0 and segment_type_code(n, v, codes) == seg.code]
        if by_code:
            return by_code[0]
    classes = ", ".join(f"{v}={n}" for v, n in sorted(table.items()) if v > 0)
    code = f" (type code {seg.code[0]}, {seg.code[1]})" if seg.code else ""
    raise LabelMismatchError(
        f"{kind} segment {seg.number} {seg.label!r}{code} matches none of the model's classes ({classes}) by "
        "label or coded concept; rename the segment to a class name or pass codes={class: (category, type)}",
        path=str(path),
    )


# --------------------------------------------------------------------------------------- placement
def _place(arr: np.ndarray, aff: np.ndarray, out: np.ndarray, ref_aff: np.ndarray, path: Path, tol_mm: float) -> None:
    """OR the bool grid ``arr`` (X, Y, Z) with affine ``aff`` into ``out`` (the reference grid)."""
    emb = grid_embedding(aff, arr.shape, ref_aff, tol_mm=tol_mm)
    if emb is None:
        raise LabelMismatchError(
            "the labels do not overlay the reference image: their voxel grid is not the image's (other spacing, "
            f"orientation or a shift of part of a voxel; tolerance {tol_mm} mm). Resample them onto the image first",
            path=str(path),
        )
    axes, signs, offset = emb
    order = [axes.index(i) for i in range(3)]  # source axis along each reference axis
    view = np.transpose(arr, order)
    src_sl, dst_sl = [], []
    for i, j in enumerate(order):
        n = view.shape[i]
        if signs[j] < 0:
            view = np.flip(view, axis=i)
        start = offset[i] - (n - 1) if signs[j] < 0 else offset[i]
        lo, hi = max(start, 0), min(start + n, out.shape[i])
        if hi <= lo:
            lo = hi = 0
        src_sl.append(slice(lo - start, max(hi - start, lo - start)))
        dst_sl.append(slice(lo, hi))
    inside = view[tuple(src_sl)]
    if int(np.count_nonzero(inside)) != int(np.count_nonzero(view)):
        raise LabelMismatchError(
            "the labels do not overlay the reference image: labelled voxels lie outside its extent", path=str(path)
        )
    out[tuple(dst_sl)] |= inside.astype(bool)


# --------------------------------------------------------------------------------------- volumes
def _volume_segments(path: Path, table: dict[int, str] | None) -> list[_Segment]:
    """A NIfTI / NRRD / MetaImage label volume: one 'segment' per value present."""
    img = reader_for(path).reader()(path, LoadOptions())
    data = np.asarray(img.detach().cpu().numpy() if hasattr(img, "detach") else img)
    if data.ndim != 4 or data.shape[0] != 1:
        raise FileFormatError(f"a label volume must have one channel, got shape {data.shape}", path=str(path))
    vol = data[0]
    if not np.all(np.isfinite(vol)) or not np.all(np.equal(np.mod(vol, 1), 0)):
        raise LabelMismatchError("label values must be integers (a probability map is not a label map)", path=str(path))
    values = [int(v) for v in np.unique(vol) if v != 0]
    allowed = set(table) if table is not None else set(range(256))
    bad = [v for v in values if v not in allowed or v < 0]
    if bad:
        what = f"classes {sorted(allowed)}" if table is not None else "0..255"
        raise LabelMismatchError(f"label values {bad[:5]} are not {what}", path=str(path))
    aff = np.asarray(img.affine.detach().cpu().numpy() if hasattr(img.affine, "detach") else img.affine, float)
    return [_Segment(v, str(v), None, [(vol == v, aff)]) for v in values]


def _seg_nrrd_segments(path: Path) -> list[_Segment]:
    """A 3D Slicer ``.seg.nrrd``: one segment per ``Segment<i>_*`` entry (its layer and label value)."""
    img = load_nrrd(path)
    data = np.asarray(img.detach().cpu().numpy())
    aff = np.asarray(img.affine.detach().cpu().numpy(), float)
    found = img.meta.get("segments") or []
    if not found:
        raise FileFormatError("a .seg.nrrd without Slicer segment entries (Segment0_Name ...)", path=str(path))
    out = []
    for i, s in enumerate(found):
        layer = int(s.get("layer", 0))
        if not 0 <= layer < data.shape[0]:
            raise FileFormatError(
                f"segment {s.get('name')!r} is in layer {layer}, the file has {data.shape[0]}", path=str(path)
            )
        value = int(s.get("label_value", i + 1))
        out.append(_Segment(value, str(s.get("name") or f"Segment_{i + 1}"), None, [(data[layer] == value, aff)]))
    return out


# --------------------------------------------------------------------------------------- DICOM SEG
def _seg_file(path: Path) -> Path:
    if path.is_file():
        return path
    files = sorted(p for p in path.rglob("*") if p.is_file() and _is_seg(p))
    if len(files) != 1:
        raise InputError(f"{len(files)} DICOM SEG files in the folder; pass the one to read", path=str(path))
    return files[0]


def seg_referenced_series(path: str | os.PathLike) -> set[str]:
    """The SeriesInstanceUIDs a DICOM SEG file (or a folder holding one) was drawn on; empty when ``path``
    is not a DICOM SEG (or a folder with none or several)."""
    import pydicom  # lazy: keeps `import medseg.io` light

    p = Path(path)
    try:
        f = _seg_file(p) if p.is_dir() else p
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPClassUID", "ReferencedSeriesSequence"])
    except Exception:  # not DICOM, unreadable, or no single SEG in the folder: nothing referenced
        return set()
    if str(ds.get("SOPClassUID", "")) not in SEG_SOP_CLASSES:
        return set()
    return {str(r.SeriesInstanceUID) for r in ds.get("ReferencedSeriesSequence") or [] if "SeriesInstanceUID" in r}


def _is_seg(p: Path) -> bool:
    import pydicom  # lazy: keeps `import medseg.io` light

    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # not DICOM (any reader failure): not a SEG
        return False
    return str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES


def _dicom_seg_segments(path: Path, ref_meta: Mapping[str, Any], threshold: float) -> list[_Segment]:
    """A DICOM SEG's segments, each with its frames as one-slice grids in patient space."""
    import highdicom as hd  # lazy: keeps `import medseg.io` light

    with third_party_quiet(str(path)), contained(str(path), "highdicom cannot read this file as a DICOM SEG"):
        try:
            seg = hd.seg.segread(path)
        except (AttributeError, ValueError, TypeError, KeyError):
            raise FileFormatError("not a DICOM SEG (Segmentation Storage) file", path=str(path)) from None
        _check_references(seg, ref_meta, path)
        pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    stype = str(seg.SegmentationType).upper()
    scale = float(getattr(seg, "MaximumFractionalValue", 1) or 1) if stype == "FRACTIONAL" else 1.0
    segments: dict[int, _Segment] = {}
    for d in seg.SegmentSequence:
        n = int(d.SegmentNumber)
        typ = d.SegmentedPropertyTypeCodeSequence[0] if "SegmentedPropertyTypeCodeSequence" in d else None
        code = (str(typ.CodeValue), str(typ.CodingSchemeDesignator)) if typ is not None and "CodeValue" in typ else None
        segments[n] = _Segment(n, clean_text(d.get("SegmentLabel"), 64) or f"Segment {n}", code, [])
    shared = (seg.get("SharedFunctionalGroupsSequence") or [None])[0]
    per_frame = seg.get("PerFrameFunctionalGroupsSequence") or []
    for f in range(pixels.shape[0]):
        groups = per_frame[f] if f < len(per_frame) else None
        aff = _frame_affine(groups, shared, f, path)
        frame = pixels[f].T[:, :, None]  # (rows, columns) -> (X, Y, 1)
        if stype == "LABELMAP":
            for n in (int(v) for v in np.unique(frame) if v != 0):
                if n not in segments:
                    raise FileFormatError(f"frame {f + 1} holds segment {n}, which is not described", path=str(path))
                segments[n].pieces.append((frame == n, aff))
            continue
        n = int(_group(groups, shared, "SegmentIdentificationSequence", f, path).ReferencedSegmentNumber)
        if n not in segments:
            raise FileFormatError(f"frame {f + 1} refers to segment {n}, which is not described", path=str(path))
        mask = frame >= threshold * scale if stype == "FRACTIONAL" else frame > 0
        segments[n].pieces.append((mask, aff))
    return [segments[n] for n in sorted(segments)]


def _group(groups: Any, shared: Any, name: str, f: int, path: Path) -> Any:
    for owner in (groups, shared):
        if owner is not None and owner.get(name):
            return owner.get(name)[0]
    raise FileFormatError(f"frame {f + 1} of the DICOM SEG has no {name}; it cannot be placed", path=str(path))


def _frame_affine(groups: Any, shared: Any, f: int, path: Path) -> np.ndarray:
    """The 4x4 RAS affine of frame ``f`` as a one-slice ``(X, Y, 1)`` grid, from its functional groups."""
    try:
        iop = [float(v) for v in _group(groups, shared, "PlaneOrientationSequence", f, path).ImageOrientationPatient]
        ipp = [float(v) for v in _group(groups, shared, "PlanePositionSequence", f, path).ImagePositionPatient]
        psp = [float(v) for v in _group(groups, shared, "PixelMeasuresSequence", f, path).PixelSpacing]
    except (AttributeError, TypeError, ValueError):
        raise FileFormatError(f"frame {f + 1} of the DICOM SEG has damaged plane geometry", path=str(path)) from None
    return dicom_affine(iop, ipp, psp, None)


def _check_references(seg: Any, ref_meta: Mapping[str, Any], path: Path) -> None:
    """Refuse a SEG made on another frame of reference or another series than the reference image."""
    ref_for = ref_meta.get("frame_of_reference_uid")
    seg_for = str(seg.get("FrameOfReferenceUID", "") or "")
    if ref_for and seg_for and str(ref_for) != seg_for:
        raise LabelMismatchError(
            "the DICOM SEG is in another frame of reference than the reference image (another scan); "
            "it cannot overlay it",
            path=str(path),
        )
    ref_series = ref_meta.get("series_uid")
    seg_series = {
        str(r.SeriesInstanceUID) for r in seg.get("ReferencedSeriesSequence") or [] if "SeriesInstanceUID" in r
    }
    if ref_series and seg_series and str(ref_series) not in seg_series:
        raise LabelMismatchError(
            "the DICOM SEG references another series than the reference image; pass the series it was drawn on",
            path=str(path),
        )
