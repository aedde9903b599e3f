"""DICOM Segmentation (SEG) objects that open aligned on their source series in DICOM viewers.

:func:`write_dicom_seg` writes a label map predicted on a DICOM series as a DICOM SEG
(``highdicom.seg.Segmentation``) that references every source SOP instance, carries one segment
per class with its label, coded concepts (SNOMED CT where known, a configurable mapping) and the
algorithm's identification (name, version), and omits empty frames.

Geometry: the label map is in medseg's convention, an ``(X, Y, Z)`` array of the series as medseg
loads it: ``labels[:, :, k].T`` (rows = y, columns = x) is the label image of the ``k``-th slice
when the slices are sorted by their position along the slice normal
(``ImagePositionPatient · (row direction × column direction)``, ascending), exactly as
:func:`medseg.data.synthetic.write_phantom_dicom` writes a phantom. Series that cannot be
represented as such a regular grid (gantry tilt, non-uniform slice spacing, mixed orientations or
sizes, duplicate positions) are refused with :class:`~medseg.errors.GeometryError` rather than
written misaligned.

Note: a DICOM SEG carries the patient and study modules of its source series (PatientName,
PatientID, ...) by design: that is how PACS and viewers attach it to the right patient. It is a
clinical object, not a report; medseg never logs those values or builds a file name from them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

import medseg
from medseg.errors import FileFormatError, GeometryError, InputError, LabelMismatchError, MissingFileError
from medseg.io.dicom import FORMAT as DICOM
from medseg.io.dicom.source import uid_for_message
from medseg.io.geometry import dicom_affine
from medseg.io.safety import INVALID_TEXT, PASS_THROUGH, clean_text, contained, third_party_quiet
from medseg.palette import class_color
from medseg.utils import atomic_write

if TYPE_CHECKING:  # annotations only: highdicom and pydicom are imported when a SEG is written
    from highdicom.sr import CodedConcept
    from pydicom.sr.coding import Code

__all__ = ["write_dicom_seg", "DEFAULT_SEGMENT_CODES", "series_geometry", "enhanced_geometry", "segment_type_code"]

log = logging.getLogger("medseg.io.seg")

CodeLike = Union["Code", "CodedConcept", tuple]

# (category, type) per segment name, SNOMED CT (scheme SCT) codes from pydicom's code dictionary
# (categories: DICOM CID 7150 "Segmentation Property Categories"). Keys are normalised names
# (lower case, "_" and "-" as spaces).
_DEFAULT_CODE_KEYWORDS: dict[str, tuple[str, str]] = {
    "liver": ("AnatomicalStructure", "Liver"),
    "spleen": ("AnatomicalStructure", "Spleen"),
    "kidney": ("AnatomicalStructure", "Kidney"),
    "lung": ("AnatomicalStructure", "Lung"),
    "lesion": ("MorphologicallyAbnormalStructure", "Lesion"),
    "liver lesion": ("MorphologicallyAbnormalStructure", "Lesion"),
    "neoplasm": ("MorphologicallyAbnormalStructure", "Neoplasm"),
    "tumor": ("MorphologicallyAbnormalStructure", "Neoplasm"),
    "tumour": ("MorphologicallyAbnormalStructure", "Neoplasm"),
    "mass": ("MorphologicallyAbnormalStructure", "Mass"),
    "nucleus": ("AnatomicalStructure", "Nucleus"),
    "nuclei": ("AnatomicalStructure", "Nucleus"),
}


def _default_codes() -> dict[str, tuple[Any, Any]]:
    from pydicom.sr.codedict import codes  # lazy: keeps `import medseg.io` light

    return {
        name: (getattr(codes.cid7150, cat), getattr(codes.SCT, typ))
        for name, (cat, typ) in _DEFAULT_CODE_KEYWORDS.items()
    }


#: lazily filled {normalised name: (category Code, type Code)}; see :func:`write_dicom_seg`'s ``codes``
DEFAULT_SEGMENT_CODES: dict[str, tuple[Any, Any]] = {}


def _norm_name(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def _coded(c: Any, what: str):
    from highdicom.sr import CodedConcept  # lazy: keeps `import medseg.io` light
    from pydicom.sr.coding import Code

    if isinstance(c, (CodedConcept, Code)):
        return c
    if isinstance(c, (tuple, list)) and len(c) == 3:
        return CodedConcept(value=str(c[0]), scheme_designator=str(c[1]), meaning=str(c[2]))
    raise InputError(
        f"segment code for {what} must be a pydicom Code, a highdicom CodedConcept or a "
        f"(value, scheme designator, meaning) tuple, got {c!r}"
    )


def _segment_codes(name: str, value: int, codes: Mapping[str, Any] | None, warn: bool = True):
    """(category, type) coded concepts of segment ``name`` (a local ``99MEDSEG`` type code if none is known)."""
    from highdicom.sr import CodedConcept  # lazy: keeps `import medseg.io` light
    from pydicom.sr.codedict import codes as dcodes

    if not DEFAULT_SEGMENT_CODES:
        DEFAULT_SEGMENT_CODES.update(_default_codes())
    table = dict(DEFAULT_SEGMENT_CODES)
    for k, v in (codes or {}).items():
        if not (isinstance(v, (tuple, list)) and len(v) == 2):
            raise InputError(f"codes[{k!r}] must be a (category, type) pair of codes, got {v!r}")
        table[_norm_name(k)] = (_coded(v[0], f"{k} (category)"), _coded(v[1], f"{k} (type)"))
    key = _norm_name(name)
    if key in table:
        return table[key]
    if warn:
        log.warning(
            "DICOM SEG: no standard code for segment %r; using a local code (pass codes={name: "
            "(category, type)} to write SNOMED CT codes)",
            name,
        )
    return (
        dcodes.cid7150.AnatomicalStructure,
        CodedConcept(value=f"MEDSEG{int(value)}", scheme_designator="99MEDSEG", meaning=str(name)[:64]),
    )


def segment_type_code(name: str, value: int, codes: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """``(code value, coding scheme designator)`` of the segmented property type medseg writes for class ``name``.

    The code :func:`write_dicom_seg` gives a segment named ``name`` with label value ``value`` (``codes``
    merged over :data:`DEFAULT_SEGMENT_CODES`); readers match a corrected SEG's segments to classes by it.
    """
    typ = _segment_codes(name, value, codes, warn=False)[1]
    return str(typ.value), str(typ.scheme_designator)


# --------------------------------------------------------------------------------------- source series
def _read_source(source_series: Any) -> tuple[list, str]:
    """Datasets of the source series (+ a label naming it for messages: the folder, never DICOM values)."""
    import pydicom  # lazy: keeps `import medseg.io` light
    from pydicom.dataset import Dataset
    from pydicom.errors import InvalidDicomError

    if isinstance(source_series, (str, os.PathLike)):
        folder = Path(source_series)
        if not folder.exists():
            raise MissingFileError(f"source DICOM series folder {folder} does not exist", folder)
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else [folder]
        where = str(folder)
    elif (
        isinstance(source_series, Sequence)
        and source_series
        and all(isinstance(x, (str, os.PathLike)) for x in source_series)
    ):
        files = [Path(x) for x in source_series]
        where = f"{len(files)} source files in {files[0].parent}"
    elif isinstance(source_series, Sequence) and all(isinstance(x, Dataset) for x in source_series):
        return list(source_series), f"{len(source_series)} source datasets"
    else:
        raise InputError(
            "source_series must be a folder of DICOM files, a list of file paths or a list of "
            f"pydicom Datasets, got {type(source_series).__name__}"
        )
    dss = []
    with third_party_quiet(where):
        for p in files:
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
                has_geometry = "ImagePositionPatient" in ds or int(ds.get("NumberOfFrames", 1) or 1) > 1
            except PASS_THROUGH:
                raise
            except (InvalidDicomError, OSError, ValueError, EOFError):
                log.debug("DICOM SEG source: skipping non-DICOM file %s", p.name)
                continue
            except BaseException as e:  # a damaged header (pydicom raises many types)
                log.debug("DICOM SEG source: skipping damaged file %s (%s)", p.name, type(e).__name__)
                continue
            if not has_geometry:
                log.debug("DICOM SEG source: skipping %s (no image position: not an image slice)", p.name)
                continue
            dss.append(ds)
    return dss, where


def series_geometry(datasets: Sequence[Any], where: str = "source series") -> tuple[list, np.ndarray]:
    """Sort a single-frame series along its slice normal and check it is a regular grid.

    Parameters
    ----------
    datasets : pydicom Datasets of one series (header only is enough).
    where : how to name the series in error messages (a folder; never a DICOM value).

    Returns
    -------
    (datasets sorted by position along the normal, ascending; 4x4 voxel->RAS affine of the
    ``(X, Y, Z)`` = (column, row, slice) grid).

    Raises
    ------
    GeometryError
        Several series, mixed orientation / size / pixel spacing, duplicate positions, gantry tilt
        (slice positions not along the normal) or non-uniform slice spacing.
    """
    if not datasets:
        raise GeometryError(
            f"{where}: no DICOM image slices found; point source_series at the folder of the "
            "series the labels were predicted on"
        )
    if len(datasets) == 1 and int(getattr(datasets[0], "NumberOfFrames", 1) or 1) > 1:
        affine, _ = enhanced_geometry(datasets[0], where)
        return list(datasets), affine
    uids = {str(getattr(d, "SeriesInstanceUID", "")) for d in datasets}
    if len(uids) > 1:
        raise GeometryError(
            f"{where}: holds {len(uids)} different series; pass the folder (or files) of the one "
            "series the labels were predicted on"
        )
    for tag in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
        if any(tag not in d for d in datasets):
            raise GeometryError(f"{where}: a slice lacks {tag}; cannot place a segmentation on it")
    iop = np.array([[float(v) for v in d.ImageOrientationPatient] for d in datasets])
    if np.abs(iop - iop[0]).max() > 1e-4:
        raise GeometryError(
            f"{where}: slices have different orientations (ImageOrientationPatient); a SEG needs one regular grid"
        )
    sizes = {(int(d.Rows), int(d.Columns)) for d in datasets}
    psp = np.array([[float(v) for v in d.PixelSpacing] for d in datasets])
    if len(sizes) > 1 or np.abs(psp - psp[0]).max() > 1e-4:
        raise GeometryError(f"{where}: slices differ in size or pixel spacing; a SEG needs one regular grid")
    normal = np.cross(iop[0, :3], iop[0, 3:])
    pos = np.array([[float(v) for v in d.ImagePositionPatient] for d in datasets])
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    pos, proj = pos[order], proj[order]
    datasets = [datasets[i] for i in order]
    if len(datasets) > 1:
        dz = _regular_slice_step(pos, proj, normal, where)
    else:
        dz = float(getattr(datasets[0], "SliceThickness", 1.0) or 1.0)
    # PixelSpacing = (row spacing: between rows, column spacing: between columns)
    return datasets, dicom_affine(iop[0], pos[0], (float(psp[0, 0]), float(psp[0, 1])), normal * dz)


def enhanced_geometry(ds: Any, where: str = "source image") -> tuple[np.ndarray, np.ndarray]:
    """Geometry of one enhanced multi-frame image from its functional groups.

    Returns
    -------
    (4x4 voxel -> RAS affine of the ``(X, Y, Z)`` grid with frames sorted along the normal, ``order``:
    ``order[k]`` is the frame index (0-based, stored order) of the ``k``-th slice of that grid).

    Raises
    ------
    GeometryError
        A frame lacks its position / orientation / pixel spacing, or the frames are not one regular
        grid (see :func:`series_geometry`).
    """
    n = int(ds.NumberOfFrames)
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []

    def group(f: int, name: str) -> Any:
        for owner in ((per_frame[f] if f < len(per_frame) else None), shared):
            if owner is not None and owner.get(name):
                return owner.get(name)[0]
        raise GeometryError(
            f"no DICOM SEG can be placed on a frame without {name} (use medseg segment --no-dicom-seg to keep the "
            f"NIfTI labels): {where}, frame {f + 1}"
        )

    try:
        iop = np.array(
            [[float(v) for v in group(f, "PlaneOrientationSequence").ImageOrientationPatient] for f in range(n)]
        )
        pos = np.array([[float(v) for v in group(f, "PlanePositionSequence").ImagePositionPatient] for f in range(n)])
        psp = np.array([[float(v) for v in group(f, "PixelMeasuresSequence").PixelSpacing] for f in range(n)])
    except GeometryError:
        raise
    except (AttributeError, TypeError, ValueError):
        raise GeometryError(f"{where}: frame geometry in the functional groups is incomplete or damaged") from None
    if np.abs(iop - iop[0]).max() > 1e-4 or np.abs(psp - psp[0]).max() > 1e-4:
        raise GeometryError(f"{where}: frames differ in orientation or pixel spacing; a SEG needs one regular grid")
    normal = np.cross(iop[0, :3], iop[0, 3:])
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    dz = _regular_slice_step(pos[order], proj[order], normal, where) if n > 1 else 1.0
    return dicom_affine(iop[0], pos[order[0]], (float(psp[0, 0]), float(psp[0, 1])), normal * dz), order


def _regular_slice_step(pos: np.ndarray, proj: np.ndarray, normal: np.ndarray, where: str) -> float:
    """The slice spacing (mm) of sorted positions ``pos`` (N, 3) LPS; GeometryError unless a regular stack.

    ``proj`` (N,) are the positions along the slice ``normal``. A SEG needs every slice on one regular
    grid: no duplicate position, no step off the normal (gantry tilt), equal gaps (within 1 %).
    """
    gaps = np.diff(proj)
    if np.any(gaps < 1e-3):
        raise GeometryError(
            f"{where}: two slices share the same position (duplicate or mixed acquisitions); remove the duplicates"
        )
    steps = np.diff(pos, axis=0)
    off_normal = np.linalg.norm(steps - np.outer(steps @ normal, normal), axis=1)
    if np.any(off_normal > 1e-2 + 1e-3 * np.linalg.norm(steps, axis=1)):
        tilt = float(np.degrees(np.arctan2(off_normal.max(), gaps[np.argmax(off_normal)])))
        raise GeometryError(
            f"{where}: gantry-tilted or sheared series (slice positions deviate {tilt:.1f} deg "
            "from the slice normal); a SEG would be misaligned. Resample the series to a "
            "regular grid first (e.g. SimpleITK) or save the segmentation as NIfTI"
        )
    if gaps.max() - gaps.min() > max(1e-2, 0.01 * float(np.median(gaps))):
        raise GeometryError(
            f"{where}: non-uniform slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm: "
            "missing or irregular slices); a SEG would be misaligned. Check the series is "
            "complete, or resample it to a regular grid first"
        )
    return float(np.median(gaps))


# --------------------------------------------------------------------------------------- writer
def _label_array(labels: Any) -> tuple[np.ndarray, np.ndarray | None]:
    aff = getattr(labels, "affine", None)
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if aff is not None:
        aff = np.asarray(aff.detach().cpu().numpy() if hasattr(aff, "detach") else aff, float)
    return arr, aff


def _segment_table(segment_names: Mapping[int, str] | Sequence[str]) -> dict[int, str]:
    if isinstance(segment_names, Mapping):
        table = {int(k): str(v) for k, v in segment_names.items()}
    else:
        table = {i: str(v) for i, v in enumerate(segment_names)}
    table.pop(0, None)  # background
    return {k: v for k, v in sorted(table.items()) if k > 0}


def write_dicom_seg(
    labels: Any,
    source_series: str | os.PathLike | Sequence[Any],
    path: str | os.PathLike,
    segment_names: Mapping[int, str] | Sequence[str],
    *,
    codes: Mapping[str, tuple[CodeLike, CodeLike]] | None = None,
    algorithm_name: str = "medseg",
    algorithm_version: str = medseg.__version__,
    model_name: str | None = None,
    series_description: str = "medseg segmentation",
    series_number: int = 300,
    content_label: str = "MEDSEG",
    manufacturer: str = "medseg",
    colors: bool = True,
    segment_descriptions: Mapping[int, str] | None = None,
) -> Path:
    """Write a label map predicted on a DICOM series as a DICOM SEG referencing that series.

    Parameters
    ----------
    labels : (X, Y, Z) int label map (or a MetaTensor (1, X, Y, Z)) in medseg's convention for the
        series: ``labels[:, :, k].T`` (rows = y, columns = x) belongs to the ``k``-th slice sorted by
        position along the slice normal (how medseg / MONAI load a series). A MetaTensor's affine is
        checked against the series geometry.
    source_series : folder of the source DICOM series, a list of its files, or a list of pydicom
        Datasets.
    path : output ``.dcm`` file (written atomically).
    segment_names : ``{label value: name}`` (or a list indexed by value; 0 = background is skipped).
        One segment per entry, numbered 1..N in increasing label value; label values present in
        ``labels`` but not named here are an error.
    codes : ``{name: (category, type)}`` coded concepts (pydicom ``Code``, highdicom ``CodedConcept``
        or ``(value, scheme, meaning)``), merged over :data:`DEFAULT_SEGMENT_CODES` (SNOMED CT codes for
        liver, spleen, kidney, lung, lesion, neoplasm/tumour, mass, nucleus). Unknown names get a
        local ``99MEDSEG`` code and a warning.
    algorithm_name, algorithm_version : AlgorithmIdentificationSequence name and version
        (family: Artificial Intelligence). ``model_name`` (e.g. the run's model) is recorded as the
        algorithm's source and as the ManufacturerModelName.
    series_description, series_number, content_label, manufacturer : header values of the SEG.
    colors : record each segment's display colour (the overlay palette, as CIELab).
    segment_descriptions : ``{label value: text}`` written as each segment's SegmentDescription
        (e.g. a lesion's predicted class and probability); at most 64 characters.

    Returns
    -------
    Path of the written SEG. Empty frames are omitted (frames are only written where a segment has
    pixels); a segment with no pixels at all is still described.

    Raises
    ------
    GeometryError
        Gantry-tilted, non-uniform or otherwise irregular source series (see :func:`series_geometry`).
    LabelMismatchError
        The label map does not match the series (shape, affine) or holds unnamed label values.
    """
    import highdicom as hd  # lazy: keeps `import medseg.io` light
    from pydicom.sr.codedict import codes as dcodes
    from pydicom.uid import generate_uid

    # every header value is converted inside the capture: pydicom's validation warnings quote values
    with third_party_quiet(str(source_series) if isinstance(source_series, (str, os.PathLike)) else "DICOM SEG"):
        path = Path(path)
        arr, lab_aff = _label_array(labels)
        datasets, where = _read_source(source_series)
        datasets, series_aff = series_geometry(datasets, where)
        arr = _checked_labels(arr, lab_aff, datasets, series_aff, where)
        names = _segment_table(segment_names)
        present = _check_named(arr, names, where)
        seg_num = {v: i + 1 for i, v in enumerate(names)}
        algo = hd.AlgorithmIdentificationSequence(
            name=str(algorithm_name)[:64],
            family=dcodes.cid7162.ArtificialIntelligence,
            version=str(algorithm_version)[:64],
            source=(str(model_name)[:64] if model_name else None),
        )
        pixel = _segment_pixels(arr, seg_num)
        if len(datasets) == 1 and int(getattr(datasets[0], "NumberOfFrames", 1) or 1) > 1:
            _, order = enhanced_geometry(datasets[0], where)
            framed = np.empty_like(pixel)
            framed[order] = pixel  # highdicom pairs SEG frame i with source frame i (stored order)
            pixel = framed
        else:
            datasets, pixel = _complete_first(datasets, pixel, where)
        descriptions = _segment_descriptions(names, seg_num, codes, algo, colors)
        if segment_descriptions:
            value_of = {n: v for v, n in seg_num.items()}
            for d in descriptions:
                text = segment_descriptions.get(value_of[int(d.SegmentNumber)])
                if text:
                    d.SegmentDescription = str(text)[:64]
        if not present:
            log.info("DICOM SEG: the label map is empty; writing a SEG with no segment pixels")
        # highdicom's warnings and errors can quote source header values: captured, reduced to a safe reason
        with third_party_quiet(where), contained(where, "highdicom cannot build the DICOM SEG from these source files"):
            seg = hd.seg.Segmentation(
                source_images=datasets,
                pixel_array=pixel,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=generate_uid(),
                series_number=int(series_number),
                sop_instance_uid=generate_uid(),
                instance_number=1,
                manufacturer=str(manufacturer),
                manufacturer_model_name=str(model_name or algorithm_name)[:64],
                software_versions=f"medseg {medseg.__version__}",
                device_serial_number="none",
                content_label=str(content_label).upper().replace(" ", "_")[:16],
                content_description=str(series_description)[:64],
                omit_empty_frames=True,
            )
        seg.SeriesDescription = str(series_description)[:64]
        with atomic_write(path, suffix=DICOM.suffixes[0]) as tmp:  # a .dcm temporary, whatever the name
            seg.save_as(tmp, enforce_file_format=True)
        log.info(
            "DICOM SEG: %d segments, %d frames over %d source slices -> %s",
            len(names),
            int(getattr(seg, "NumberOfFrames", 0)),
            len(datasets),
            path.name,
        )
        return path


_UID_KEYWORDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "SOPClassUID")


def _complete_first(datasets: list[Any], pixel: np.ndarray, where: str) -> tuple[list[Any], np.ndarray]:
    """Source datasets (and their SEG frames) with a complete one first: highdicom copies the patient and
    study modules from the first source; a damaged file (an element that swallowed the patient module)
    cannot be that template. Every source must have valid UIDs: the SEG references them."""
    for d in datasets:
        if any(uid_for_message(d.get(k)) in ("unknown", "<not a valid UID>") for k in _UID_KEYWORDS):
            raise FileFormatError(
                "no DICOM SEG can reference a source file with a missing or damaged UID (use medseg segment "
                f"--no-dicom-seg to keep the NIfTI labels): {where}"
            )

    def complete(d: Any) -> bool:
        return (
            "PatientID" in d and "StudyInstanceUID" in d and clean_text(d.get("Modality"), 16) not in ("", INVALID_TEXT)
        )

    m = next((i for i, d in enumerate(datasets) if complete(d)), 0)
    if m == 0:
        return datasets, pixel
    order = [m] + [i for i in range(len(datasets)) if i != m]  # single-frame sources: frame i <-> source i
    return [datasets[i] for i in order], pixel[order]


def _checked_labels(
    arr: np.ndarray, lab_aff: np.ndarray | None, datasets: list[Any], series_aff: np.ndarray, where: str
) -> np.ndarray:
    """The label map as int64 after checking its shape (and affine, if it has one) against the series grid."""
    frames = int(getattr(datasets[0], "NumberOfFrames", 1) or 1) if len(datasets) == 1 else 1
    X, Y, Z = int(datasets[0].Columns), int(datasets[0].Rows), max(len(datasets), frames)
    if arr.ndim != 3 or arr.shape != (X, Y, Z):
        raise LabelMismatchError(
            f"{where}: label map shape {arr.shape} does not match the series grid "
            f"(X, Y, Z) = {(X, Y, Z)} (columns, rows, slices)"
        )
    if lab_aff is not None:
        a = lab_aff[0] if lab_aff.ndim == 3 else lab_aff
        tol = 1e-2 + 1e-3 * np.abs(series_aff[:3, :3]).max()
        if a.shape != (4, 4) or np.abs(a[:3] - series_aff[:3]).max() > tol * 10:
            raise LabelMismatchError(
                f"{where}: the label map's affine does not match the series geometry "
                "(flipped or resampled?); resample the labels back to the source grid first"
            )
    if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise LabelMismatchError(f"{where}: labels must be integers, got {arr.dtype} with fractional values")
    return arr.astype(np.int64)


def _check_named(arr: np.ndarray, names: dict[int, str], where: str) -> set[int]:
    """The label values present (background 0 left out); each must have a name."""
    if not names:
        raise InputError("segment_names is empty: name at least one label value, e.g. {1: 'liver'}")
    present = {int(v) for v in np.unique(arr) if v != 0}
    unnamed = sorted(present - set(names))
    if unnamed:
        raise LabelMismatchError(f"{where}: label values {unnamed} have no name in segment_names {names}")
    return present


def _segment_pixels(arr: np.ndarray, seg_num: dict[int, int]) -> np.ndarray:
    """(Z, Y, X) = (frames, rows, columns) of ``arr`` (X, Y, Z) with label values remapped to segment numbers."""
    lut = np.zeros(max(max(seg_num), int(arr.max(initial=0))) + 1, np.uint16)
    for v, s in seg_num.items():
        lut[v] = s
    pixel = lut[np.clip(arr, 0, None)].transpose(2, 1, 0)
    return np.ascontiguousarray(pixel.astype(np.uint8 if len(seg_num) < 256 else np.uint16))


def _segment_descriptions(
    names: dict[int, str],
    seg_num: dict[int, int],
    codes: Mapping[str, tuple[CodeLike, CodeLike]] | None,
    algo: Any,
    colors: bool,
) -> list[Any]:
    """One highdicom ``SegmentDescription`` per named label value (codes, colour, tracking id)."""
    import highdicom as hd  # lazy: keeps `import medseg.io` light
    from pydicom.uid import generate_uid

    descriptions = []
    for v, name in names.items():
        category, typ = _segment_codes(name, v, codes)
        kw: dict[str, Any] = {}
        if colors:
            kw["display_color"] = hd.color.CIELabColor.from_rgb(*class_color(v))
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=seg_num[v],
                segment_label=str(name)[:64],
                segmented_property_category=category,
                segmented_property_type=typ,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algo,
                tracking_uid=generate_uid(),
                tracking_id=f"{name} {v}"[:64],
                **kw,
            )
        )
    return descriptions
