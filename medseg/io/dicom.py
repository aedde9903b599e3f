"""DICOM: find series (headers only), check their geometry, load them as one volume.

Why medseg builds the volume itself from pydicom (and not with SimpleITK's ``ImageSeriesReader`` or
MONAI's ``LoadImage``): those readers sort and stack whatever files they are given. They do not
exclude localizers, do not detect missing slices, gantry tilt or duplicate positions, and apply one
rescale slope/intercept to the whole series. medseg parses the headers with pydicom (GDCM-grade
parsing, every transfer syntax through pydicom's pixel plugins), checks the geometry, and then
reads uncompressed pixel data straight from the file offsets that pydicom found: faster than
SimpleITK's C++ reader on the benchmark (see ``benchmarks/io_load.py``). Files are read serially by
default (measured fastest on local disks); ``MEDSEG_IO_THREADS=N`` reads them with N threads, which
helps only on network storage. Compressed pixel data decode through ``pydicom``'s plugins (pylibjpeg).

Geometry rules (``docs/io.md``): slices are sorted by their position projected on the slice normal,
the slice spacing comes from the positions (never SliceThickness), rescale slope/intercept are
applied per slice (per frame for enhanced multi-frame), and every irregularity is either an error
or an explicit, reported resample.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import (
    FileFormatError,
    GeometryError,
    InputError,
    MedsegError,
    MissingDependencyError,
    MissingFileError,
)
from medseg.io.geometry import dicom_affine, orientation_code

__all__ = ["SeriesInfo", "discover", "format_series_table", "load_dicom", "read_dicom_header"]

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr")
IMAGE2D_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: files that are never DICOM: skipped silently while walking a folder
_SKIP_SUFFIXES = {
    ".txt",
    ".json",
    ".md",
    ".csv",
    ".py",
    ".yaml",
    ".yml",
    ".xml",
    ".html",
    ".pdf",
    ".log",
    ".gz",
    ".zip",
    ".npy",
    ".npz",
    ".pt",
    ".pth",
    ".img",
    ".mha",
    ".mhd",
    ".nrrd",
    ".dump",
    ".icc",
    ".sh",
    ".ini",
    ".cfg",
    ".jsonl",
}
_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ".dic"}
_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_USED_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "ImageType",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "NumberOfFrames",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "RescaleSlope",
    "RescaleIntercept",
    "AcquisitionNumber",
    "TemporalPositionIdentifier",
    "EchoNumbers",
    "TriggerTime",
    "GridFrameOffsetVector",
)


def _used_tags() -> list:
    global _USED_TAGS
    if _USED_TAGS is None:
        from pydicom.datadict import tag_for_keyword
        from pydicom.tag import Tag

        _USED_TAGS = [Tag(tag_for_keyword(k)) for k in _USED_KEYWORDS]
    return _USED_TAGS


_USED_TAGS = None
# Threads for reading files (headers and pixels). Measured on a local disk (benchmarks/io_load.py,
# 300 x 512^2 slices, 2 cores): serial 0.32 s warm / 4.2 s cold page cache, 8 threads 0.74 s / 4.5 s.
# pydicom's header parsing is pure Python (GIL-bound), so threads only add contention there; they
# pay off only where each read waits on the network (NAS / PACS exports). Opt in with
# MEDSEG_IO_THREADS=8 for such storage.
_MAX_WORKERS = max(1, int(os.environ.get("MEDSEG_IO_THREADS", "1") or 1))


def _uid_for_message(value) -> str:
    """A UID for an error message, only if it is one: in a corrupt header the element can swallow
    the bytes that follow it (PatientName, PatientID), which must never reach a message."""
    text = str(value) if value is not None else ""
    if 0 < len(text) <= 64 and all(c.isdigit() or c == "." for c in text):
        return text
    return "unknown" if not text else "<not a valid UID>"


def _map(fn, items):
    """``map`` over files: serial by default, a thread pool with MEDSEG_IO_THREADS > 1."""
    items = list(items)
    if _MAX_WORKERS <= 1 or len(items) <= 4:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=_MAX_WORKERS) as ex:
        return list(ex.map(fn, items))


# which package decodes which transfer syntax (for the error message when a decoder is missing)
_DECODER_HINT = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg (JPEG-LS)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg (JPEG-LS)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle (RLE)",
}


# --------------------------------------------------------------------------------------------------
# sources: a file on disk, or a member of a zip archive
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Src:
    path: str
    member: str | None = None

    def __str__(self) -> str:
        return self.path if self.member is None else f"{self.path}!{self.member}"

    def read_bytes(self) -> bytes:
        if self.member is None:
            return Path(self.path).read_bytes()
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(self.member)

    def size(self) -> int:
        if self.member is None:
            return os.path.getsize(self.path)
        with zipfile.ZipFile(self.path) as zf:
            return zf.getinfo(self.member).file_size


@dataclass
class _Hdr:
    """One DICOM file's header (no pixel data) and where its pixel bytes start."""

    src: _Src
    ds: Any  # pydicom Dataset (stop_before_pixels)
    pixel_offset: int | None  # byte offset of the pixel data value (native transfer syntaxes only)
    native: bool  # uncompressed transfer syntax
    little_endian: bool
    file_size: int


@dataclass
class _Slice:
    """One 2D frame of a volume: a classic slice file or one frame of a multi-frame file."""

    hdr: _Hdr
    frame: int | None
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float
    keys: dict  # values that may tell 4D volumes apart (temporal position, echo, b-value ...)
    image_type: tuple = ()
    instance: int = 0
    s: float = 0.0  # position along the slice normal


# --------------------------------------------------------------------------------------------------
# SeriesInfo
# --------------------------------------------------------------------------------------------------
@dataclass
class SeriesInfo:
    """What :func:`discover` found: one DICOM series, NIfTI file, 2D image, or unreadable file.

    Attributes
    ----------
    kind : ``"dicom"``, ``"nifti"``, ``"image2d"`` or ``"unreadable"``.
    path : folder / file / archive the entry was found in (for DICOM: the common folder of its files).
    series_uid : SeriesInstanceUID (DICOM only).
    modality, description, series_number : DICOM Modality, SeriesDescription, SeriesNumber.
    n_files : number of files of the series (all of them, localizers included).
    n_slices : slices in the volume that :func:`medseg.io.load` would build (after exclusions).
    shape : spatial shape (X, Y, Z) (or (X, Y) for 2D images), ``None`` when it cannot be built.
    n_channels : channels of the loaded image (3 for RGB, T for 4D series).
    spacing : voxel size (mm), slice spacing from positions.
    orientation : axis code of the voxel axes in RAS terms (``"LPS"`` for a DICOM axial stack).
    problems : every problem found; those starting with ``"error:"`` stop :func:`medseg.io.load`.
    excluded : files left out of the volume (localizers, ...), with the reason.
    files : the files (``archive.zip!member`` inside a zip).
    """

    kind: str
    path: str
    series_uid: str | None = None
    modality: str | None = None
    description: str = ""
    series_number: int | None = None
    n_files: int = 0
    n_slices: int = 0
    shape: tuple[int, ...] | None = None
    n_channels: int = 1
    spacing: tuple[float, ...] | None = None
    orientation: str | None = None
    problems: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    _headers: list = field(default_factory=list, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when :func:`medseg.io.load` can build the image without an error."""
        return self.kind != "unreadable" and not any(p.startswith("error:") for p in self.problems)

    def to_dict(self, with_files: bool = False) -> dict:
        """JSON-friendly dict (files listed only with ``with_files=True``: a series can have thousands)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_headers"}
        d["problems"], d["excluded"], d["files"] = list(self.problems), list(self.excluded), list(self.files)
        if not with_files:
            d.pop("files")
            d["n_files"] = self.n_files
        d["ok"] = self.ok
        return d


# --------------------------------------------------------------------------------------------------
# header reading
# --------------------------------------------------------------------------------------------------
def _looks_like_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def read_dicom_header(src: str | Path | _Src, *, check_truncation: bool = True) -> _Hdr:
    """Read one DICOM file's header (pixel data skipped) and locate its pixel bytes.

    Raises
    ------
    MissingFileError : the file does not exist.
    FileFormatError : empty, not DICOM, corrupt header, or (uncompressed) pixel data shorter than
        Rows x Columns x frames x samples x bytes: the message names the file, never the patient.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not isinstance(src, _Src):
        src = _Src(str(src))
    name = str(src)
    try:
        if src.member is None:
            size = os.path.getsize(src.path)
            fp = open(src.path, "rb")
        else:
            data = src.read_bytes()
            size = len(data)
            fp = io.BytesIO(data)
    except FileNotFoundError:
        raise MissingFileError("file not found", path=name) from None
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise FileFormatError(f"cannot read file ({type(e).__name__})", path=name) from None
    with fp:
        if size == 0:
            raise FileFormatError("empty file (0 bytes); re-export or re-copy it", path=name)
        head = fp.read(132)
        fp.seek(0)
        force = not _looks_like_dicom(head)
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=force)
            # pydicom converts values lazily: convert the elements medseg uses now, so that a corrupt
            # header fails here (naming the file) and not later in the middle of a volume
            for tag in _used_tags():
                if tag in ds:
                    ds[tag]  # noqa: B018  (converts the raw element)
            pos = fp.tell()
            next_tag = fp.read(4)  # the element pydicom stopped at: must be (7FE0,0010) Pixel Data for the fast path
        except InvalidDicomError:
            raise FileFormatError(
                "not a DICOM file (no 'DICM' marker and no valid DICOM elements)", path=name
            ) from None
        except Exception as e:  # pydicom raises many types on corrupt headers
            raise FileFormatError(
                f"corrupt DICOM header ({type(e).__name__}); the file is damaged", path=name
            ) from None
    if force and not ("SOPClassUID" in ds or "Rows" in ds):
        raise FileFormatError("not a DICOM file (no 'DICM' marker and no DICOM image elements)", path=name)
    fm = getattr(ds, "file_meta", None)
    ts = getattr(fm, "TransferSyntaxUID", None) if fm is not None else None
    if ts is None:
        ts = (
            pydicom.uid.ImplicitVRLittleEndian
            if getattr(ds, "is_implicit_VR", True)
            else pydicom.uid.ExplicitVRLittleEndian
        )
    try:
        native = not pydicom.uid.UID(ts).is_compressed
        little = pydicom.uid.UID(ts).is_little_endian if native else True
        implicit = pydicom.uid.UID(ts).is_implicit_VR
    except Exception:
        native, little, implicit = False, True, False
    offset = None
    has_pixels = "Rows" in ds and pos < size
    pixel_tag = b"\xe0\x7f\x10\x00" if little else b"\x7f\xe0\x00\x10"
    if native and has_pixels and next_tag != pixel_tag:
        native = False  # float / double pixel data or something unusual: let pydicom decode it
    if native and has_pixels and str(ts) != pydicom.uid.DeflatedExplicitVRLittleEndian:
        offset = pos + (8 if implicit else 12)  # tag (4) + [VR (2) + reserved (2)] + length (4)
        if check_truncation:
            need = _expected_pixel_bytes(ds)
            if need is not None and size - offset < need:
                raise FileFormatError(
                    f"truncated file: pixel data has {max(size - offset, 0)} of {need} bytes; re-export or re-copy it",
                    path=name,
                )
    elif native and "Rows" in ds and pos >= size and check_truncation:
        raise FileFormatError("truncated file: no pixel data after the header", path=name)
    return _Hdr(src=src, ds=ds, pixel_offset=offset, native=native, little_endian=little, file_size=size)


def _expected_pixel_bytes(ds) -> int | None:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:
        return None
    if rows <= 0 or cols <= 0 or bits <= 0:
        return None
    return (rows * cols * frames * spp * bits + 7) // 8


# --------------------------------------------------------------------------------------------------
# geometry planning (shared by discover and load)
# --------------------------------------------------------------------------------------------------
def _floats(v, n: int | None = None) -> np.ndarray | None:
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


def _num(v, default: float) -> float:
    try:
        f = float(v)
        return f if np.isfinite(f) else default
    except (TypeError, ValueError):
        return default


def _first(seq_owner, name: str):
    seq = seq_owner.get(name) if seq_owner is not None else None
    if seq:
        return seq[0]
    return None


def _frame_group(ds, frame: int, seq_name: str):
    """An item of a functional group for ``frame`` (per-frame first, then shared)."""
    pf = ds.get("PerFrameFunctionalGroupsSequence")
    if pf is not None and frame < len(pf):
        item = _first(pf[frame], seq_name)
        if item is not None:
            return item
    return _first(_first(ds, "SharedFunctionalGroupsSequence"), seq_name)


def _slices_of(h: _Hdr) -> list[_Slice]:
    ds = h.ds
    frames = int(_num(ds.get("NumberOfFrames", 1), 1) or 1)
    image_type = tuple(str(x).upper() for x in (ds.get("ImageType") or []))
    keys_common = {
        "AcquisitionNumber": ds.get("AcquisitionNumber"),
        "TemporalPositionIdentifier": ds.get("TemporalPositionIdentifier"),
        "EchoNumbers": ds.get("EchoNumbers"),
        "TriggerTime": ds.get("TriggerTime"),
        "DiffusionBValue": ds.get((0x0018, 0x9087)).value if (0x0018, 0x9087) in ds else None,
    }
    inst = int(_num(ds.get("InstanceNumber", 0), 0))
    if "PerFrameFunctionalGroupsSequence" in ds:
        out = []
        for f in range(frames):
            pos = _frame_group(ds, f, "PlanePositionSequence")
            ori = _frame_group(ds, f, "PlaneOrientationSequence")
            pm = _frame_group(ds, f, "PixelMeasuresSequence")
            pv = _frame_group(ds, f, "PixelValueTransformationSequence")
            fc = _frame_group(ds, f, "FrameContentSequence")
            ps = _floats(pm.get("PixelSpacing") if pm is not None else None, 2)
            keys = dict(keys_common)
            if fc is not None:
                keys["TemporalPositionIndex"] = fc.get("TemporalPositionIndex")
                keys["StackID"] = fc.get("StackID")
            out.append(
                _Slice(
                    hdr=h,
                    frame=f,
                    ipp=_floats(pos.get("ImagePositionPatient") if pos is not None else None, 3),
                    iop=_floats(ori.get("ImageOrientationPatient") if ori is not None else None, 6),
                    pixel_spacing=tuple(ps) if ps is not None else (1.0, 1.0),
                    slope=_num(pv.get("RescaleSlope", 1) if pv is not None else ds.get("RescaleSlope", 1), 1.0),
                    intercept=_num(
                        pv.get("RescaleIntercept", 0) if pv is not None else ds.get("RescaleIntercept", 0), 0.0
                    ),
                    keys=keys,
                    image_type=image_type,
                    instance=f,
                )
            )
        return out
    ps = _floats(ds.get("PixelSpacing"), 2)
    if ps is None:
        ps = _floats(ds.get("ImagerPixelSpacing"), 2)
    ipp = _floats(ds.get("ImagePositionPatient"), 3)
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    base = dict(
        hdr=h,
        pixel_spacing=tuple(ps) if ps is not None else (1.0, 1.0),
        slope=_num(ds.get("RescaleSlope", 1), 1.0),
        intercept=_num(ds.get("RescaleIntercept", 0), 0.0),
        keys=keys_common,
        image_type=image_type,
        instance=inst,
        iop=iop,
    )
    if frames > 1:
        # classic multi-frame (RT dose, NM, US cine): GridFrameOffsetVector gives positions along the normal
        gfov = _floats(ds.get("GridFrameOffsetVector"))
        out = []
        for f in range(frames):
            fipp = None
            if ipp is not None and iop is not None and gfov is not None and gfov.size == frames:
                n = np.cross(iop[:3], iop[3:])
                fipp = ipp + n * gfov[f]
            out.append(_Slice(frame=f, ipp=fipp, **base))
        return out
    return [_Slice(frame=None, ipp=ipp, **base)]


@dataclass
class _Plan:
    volumes: list[list[_Slice]]  # channels -> slices in order
    affine: np.ndarray
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    channels: int  # volumes x samples per pixel
    problems: list[str]
    excluded: list[str]
    errors: list[tuple[type, str]]  # (exception class, message)
    resample_z: np.ndarray | None = None  # target positions along the normal (non-uniform spacing)
    deshear: list | None = None  # per-slice in-plane shifts (gantry tilt)
    channel_key: str | None = None


def _plan(headers: list[_Hdr], where: str, resample: bool = False) -> _Plan:
    """Sort, group and check slices; never raises (errors are collected)."""
    problems: list[str] = []
    excluded: list[str] = []
    errors: list[tuple[type, str]] = []
    slices = [s for h in headers for s in _slices_of(h)]

    def fail(cls, msg):
        errors.append((cls, msg))
        problems.append("error: " + msg)

    # 1. localizers by ImageType
    keep = []
    for s in slices:
        if "LOCALIZER" in s.image_type or "SCOUT" in s.image_type:
            excluded.append(f"{s.hdr.src}: localizer (ImageType {'/'.join(s.image_type)})")
        else:
            keep.append(s)
    if len(keep) < len(slices):
        problems.append(f"{len(slices) - len(keep)} localizer image(s) excluded")
    slices = keep
    if not slices:
        fail(GeometryError, f"{where}: no image slices (only localizers)")
        return _Plan([], np.eye(4), (1.0, 1.0, 1.0), (0, 0, 0), 1, problems, excluded, errors)

    # 2. slices without geometry
    with_geo = [s for s in slices if s.ipp is not None and s.iop is not None]
    if not with_geo:
        if len(slices) > 1:
            problems.append(
                "no ImagePositionPatient/ImageOrientationPatient: frames stacked along k with 1 mm "
                "spacing, origin 0 (not patient coordinates)"
            )
        else:
            problems.append(
                "no patient geometry (ImagePositionPatient/ImageOrientationPatient): identity orientation, origin 0"
            )
        ps = slices[0].pixel_spacing
        aff = dicom_affine([1, 0, 0, 0, 1, 0], [0, 0, 0], ps, None)
        h0 = slices[0].hdr.ds
        sizes = {(s.hdr.ds.get("Rows"), s.hdr.ds.get("Columns")) for s in slices}
        if len(sizes) > 1:
            fail(
                GeometryError,
                f"{where}: {len(slices)} images of different sizes {sorted(sizes)} and no patient "
                "geometry: they are not one volume; load the files one by one",
            )
            return _Plan([], np.eye(4), (1.0, 1.0, 1.0), (0, 0, 0), 1, problems, excluded, errors)
        shape = (int(h0.Columns), int(h0.Rows), len(slices))
        spp = int(_num(h0.get("SamplesPerPixel", 1), 1))
        return _Plan([slices], aff, (float(ps[1]), float(ps[0]), 1.0), shape, spp, problems, excluded, errors)
    if len(with_geo) < len(slices):
        for s in slices:
            if s.ipp is None or s.iop is None:
                excluded.append(f"{s.hdr.src}: no ImagePositionPatient/ImageOrientationPatient")
        problems.append(f"{len(slices) - len(with_geo)} image(s) without position/orientation excluded")
    slices = with_geo

    # 3. orientation groups: a small group of a different orientation is a localizer; big ones are an error
    # cluster by tolerance (not by rounding, which could split jittered values at a rounding boundary)
    groups: dict[int, list[_Slice]] = {}
    for s in slices:
        for g in groups.values():
            if np.abs(g[0].iop - s.iop).max() < 1e-3:
                g.append(s)
                break
        else:
            groups[len(groups)] = [s]
    if len(groups) > 1:
        order = sorted(groups.values(), key=len, reverse=True)
        main = order[0]
        others = order[1:]
        if all(len(g) <= 3 for g in others) and len(main) >= 2 * max(len(g) for g in others):
            for g in others:
                for s in g:
                    excluded.append(f"{s.hdr.src}: localizer (orientation differs from the series)")
            problems.append(f"{sum(len(g) for g in others)} image(s) of a different orientation excluded as localizers")
            slices = main
        else:
            desc = ", ".join(
                f"{len(g)} slice(s) with orientation {[round(float(v), 3) for v in g[0].iop]}" for g in order[:3]
            ) + (f" and {len(order) - 3} more orientations" if len(order) > 3 else "")
            fail(
                GeometryError,
                f"{where}: mixed slice orientations in one series ({desc}); split the series or load one orientation",
            )
            slices = main

    # 4. same matrix and pixel spacing
    h0 = slices[0].hdr.ds
    try:
        rows, cols = int(h0.Rows), int(h0.Columns)
    except Exception:
        fail(FileFormatError, f"{slices[0].hdr.src}: no Rows/Columns")
        return _Plan([], np.eye(4), (1.0, 1.0, 1.0), (0, 0, 0), 1, problems, excluded, errors)
    spp = int(_num(h0.get("SamplesPerPixel", 1), 1))
    for s in slices:
        d = s.hdr.ds
        if (int(_num(d.get("Rows"), -1)), int(_num(d.get("Columns"), -1))) != (rows, cols):
            fail(
                GeometryError,
                f"{where}: image size differs between {slices[0].hdr.src} ({rows}x{cols}) and "
                f"{s.hdr.src} ({d.get('Rows')}x{d.get('Columns')})",
            )
            break
        if not np.allclose(s.pixel_spacing, slices[0].pixel_spacing, rtol=1e-4, atol=1e-4):
            fail(GeometryError, f"{where}: pixel spacing differs between {slices[0].hdr.src} and {s.hdr.src}")
            break

    iop = slices[0].iop
    r, c = iop[:3], iop[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(r @ c) > 1e-3:
        fail(
            GeometryError,
            f"{slices[0].hdr.src}: ImageOrientationPatient {[round(float(v), 4) for v in iop]} is not two orthonormal "
            "direction cosines (corrupt header?)",
        )
    r = r / max(np.linalg.norm(r), 1e-9)
    c = c / max(np.linalg.norm(c), 1e-9)
    n = np.cross(r, c)
    for s in slices:
        s.s = float(s.ipp @ n)
    slices.sort(key=lambda s: (s.s, s.instance))
    dy, dx = slices[0].pixel_spacing
    if not (dx > 0 and dy > 0):
        fail(GeometryError, f"{slices[0].hdr.src}: PixelSpacing {[dy, dx]} is not positive (corrupt header?)")
        dx, dy = abs(dx) or 1.0, abs(dy) or 1.0

    # 5. duplicate positions: 4D (channels) or error
    svals = np.array([s.s for s in slices])
    gaps = np.diff(svals)
    pos_tol = 1e-3 + 1e-3 * (float(np.median(gaps[gaps > 0.01])) if np.any(gaps > 0.01) else 1.0)
    clusters: list[list[_Slice]] = [[slices[0]]]
    for s in slices[1:]:
        if s.s - clusters[-1][0].s <= max(pos_tol, 0.01):
            clusters[-1].append(s)
        else:
            clusters.append([s])
    volumes = [[cl[0] for cl in clusters]]
    channel_key = None
    if any(len(cl) > 1 for cl in clusters):
        # exact copies of the same instance: drop them, reported
        dedup = []
        ncopies = 0
        for cl in clusters:
            seen, out = set(), []
            for s in cl:
                key = (str(s.hdr.ds.get("SOPInstanceUID", "")), s.frame)
                if key in seen and key[0]:
                    ncopies += 1
                    excluded.append(f"{s.hdr.src}: duplicate of another file (same SOPInstanceUID)")
                    continue
                seen.add(key)
                out.append(s)
            dedup.append(out)
        clusters = dedup
        if ncopies:
            problems.append(f"{ncopies} duplicate file(s) (same SOPInstanceUID) ignored")
        sizes = {len(cl) for cl in clusters}
        if sizes != {1}:
            m = max(sizes)
            found = None
            if len(sizes) == 1:
                for key in (
                    "TemporalPositionIndex",
                    "TemporalPositionIdentifier",
                    "EchoNumbers",
                    "DiffusionBValue",
                    "TriggerTime",
                    "AcquisitionNumber",
                    "StackID",
                ):
                    vals0 = [cl_s.keys.get(key) for cl_s in clusters[0]]
                    if any(v is None for v in vals0) or len({str(v) for v in vals0}) != m:
                        continue
                    ref = sorted(str(v) for v in vals0)
                    if all(sorted(str(x.keys.get(key)) for x in cl) == ref for cl in clusters):
                        found = key
                        break
            if found is None:
                bad = next(cl for cl in clusters if len(cl) > 1)
                fail(
                    GeometryError,
                    f"{where}: {len(bad)} slices at the same position ({bad[0].s:.3f} mm along the "
                    f"normal): {bad[0].hdr.src} and {bad[1].hdr.src}; the series mixes acquisitions. "
                    "Remove the duplicates or split the series",
                )
                volumes = [[cl[0] for cl in clusters]]
            else:

                def sort_key(x, key=found):
                    v = x.keys.get(key)
                    try:
                        return (0, float(v), "")
                    except (TypeError, ValueError):
                        return (1, 0.0, str(v))

                volumes = [[sorted(cl, key=sort_key)[t] for cl in clusters] for t in range(m)]
                channel_key = found
                problems.append(f"4D series: {m} volumes at each position, stacked as channels by {found}")
        else:
            volumes = [[cl[0] for cl in clusters]]

    vol0 = volumes[0]
    nz = len(vol0)
    s_arr = np.array([s.s for s in vol0])
    ipps = np.array([s.ipp for s in vol0])
    resample_z = None
    deshear = None
    if nz == 1:
        thick = _num(vol0[0].hdr.ds.get("SpacingBetweenSlices") or vol0[0].hdr.ds.get("SliceThickness"), 1.0)
        dz = thick if thick > 0 else 1.0
        step = n * dz
    else:
        diffs = np.diff(s_arr)
        med = float(np.median(diffs))
        span = float(s_arr[-1] - s_arr[0])
        dz = span / (nz - 1)
        # Float jitter (positions rounded in the header, e.g. to 0.1 mm) is not irregular spacing: a slice
        # may sit up to 20% of the spacing off the uniform grid. A missing slice or a real change of
        # spacing moves slices much further (and any gap > 1.5x / < 0.5x the median is irregular).
        resid = s_arr - (s_arr[0] + np.arange(nz) * dz)
        irregular = (
            (np.abs(resid).max() > 0.2 * abs(dz) + 0.005)
            or bool(np.any(diffs > 1.5 * med))
            or bool(np.any(diffs < 0.5 * med))
        )
        if irregular:
            k = int(np.argmax(np.abs(diffs - med)))
            a, b = vol0[k].hdr.src, vol0[k + 1].hdr.src
            ratio = diffs[k] / med if med > 0 else 0
            if abs(ratio - round(ratio)) < 0.05 and round(ratio) >= 2:
                what = (
                    f"missing slice(s): gap of {diffs[k]:.3f} mm between {a} and {b} where the series "
                    f"spacing is {med:.3f} mm (~{int(round(ratio)) - 1} slice(s) missing)"
                )
            else:
                what = (
                    f"non-uniform slice spacing: {diffs.min():.3f} to {diffs.max():.3f} mm "
                    f"(largest deviation between {a} and {b})"
                )
            if resample:
                dz = float(np.min(diffs[diffs > 0.01])) if np.any(diffs > 0.01) else med
                dz = med if not np.isfinite(dz) else min(dz, med)
                nt = int(round(span / dz)) + 1
                resample_z = s_arr[0] + np.arange(nt) * (span / (nt - 1))
                dz = span / (nt - 1)
                problems.append(f"resampled: {what}; linearly interpolated onto {nt} slices {dz:.3f} mm apart")
            else:
                fail(
                    GeometryError,
                    f"{where}: {what}. Re-export the complete series, or load with "
                    "resample=True to interpolate onto a uniform grid (reported)",
                )
        # gantry tilt / non-collinear positions: in-plane offset of the positions along the stack
        lateral = ipps - np.outer(s_arr - s_arr[0], n) - ipps[0]
        lat = np.stack([lateral @ r, lateral @ c], axis=1)  # (nz, 2) mm
        max_lat = float(np.abs(lat).max())
        if max_lat > max(0.01, 0.02 * min(dx, dy)):
            coef = np.polyfit(s_arr - s_arr[0], lat, 1)  # (2, 2): slope, offset per in-plane axis
            resid = lat - (np.outer(s_arr - s_arr[0], coef[0]) + coef[1])
            angle = float(np.degrees(np.arctan(np.linalg.norm(coef[0]))))
            if np.abs(resid).max() > 0.1 * min(dx, dy) + 0.01:
                fail(
                    GeometryError,
                    f"{where}: slice positions do not lie on a line (in-plane offsets up to "
                    f"{max_lat:.2f} mm); corrupt positions or mixed series",
                )
            elif resample:
                deshear = [(float(lat[k, 0] / dx), float(lat[k, 1] / dy)) for k in range(nz)]
                problems.append(f"resampled: gantry tilt of {angle:.2f} deg corrected by shifting each slice in plane")
            else:
                fail(
                    GeometryError,
                    f"{where}: gantry tilt of {angle:.2f} deg (slices sheared by up to {max_lat:.2f} mm); "
                    "load with resample=True to correct it by in-plane shifts (reported)",
                )
        step = n * dz
    aff = dicom_affine(np.concatenate([r, c]), ipps[0], (dy, dx), step)
    nzo = nz if resample_z is None else len(resample_z)
    return _Plan(
        volumes,
        aff,
        (float(dx), float(dy), float(abs(dz))),
        (cols, rows, nzo),
        len(volumes) * spp,
        problems,
        excluded,
        errors,
        resample_z=resample_z,
        deshear=deshear,
        channel_key=channel_key,
    )


# --------------------------------------------------------------------------------------------------
# pixel reading
# --------------------------------------------------------------------------------------------------
def _native_dtype(ds, little: bool) -> np.dtype | None:
    bits = int(_num(ds.get("BitsAllocated"), 0))
    if bits not in (8, 16, 32) or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return None
    signed = int(_num(ds.get("PixelRepresentation", 0), 0)) == 1
    return np.dtype(("<" if little else ">") + ("i" if signed else "u") + str(bits // 8))


def _fix_bits(arr: np.ndarray, ds) -> np.ndarray:
    """Mask (unsigned) or sign-extend (signed) values stored in fewer bits than allocated."""
    bits = arr.dtype.itemsize * 8
    stored = int(_num(ds.get("BitsStored", bits), bits))
    if 0 < stored < bits:
        if arr.dtype.kind == "u":
            arr = arr & np.array((1 << stored) - 1, arr.dtype)
        else:
            shift = bits - stored
            arr = (arr << shift) >> shift
    return arr


def _decode_error(h: _Hdr, e: Exception) -> Exception:
    """A MissingDependencyError when no decoder is installed for the transfer syntax, else FileFormatError."""
    ts = str(getattr(getattr(h.ds, "file_meta", None), "TransferSyntaxUID", ""))
    msg = str(e)
    low = msg.lower()
    if "exceptions were raised by all available plugins" in low:
        detail = " | ".join(line.strip() for line in msg.splitlines()[1:3])
        return FileFormatError(
            f"the installed decoders could not decode the pixel data (transfer syntax {_uid_for_message(ts)}): "
            f"{detail[:300]}",
            path=str(h.src),
        )
    if isinstance(e, ImportError) or ("plugin" in low or "decoder" in low or "install" in low):
        pkg = _DECODER_HINT.get(ts, "pylibjpeg with the matching plugin")
        return MissingDependencyError(
            f"no decoder for transfer syntax {_uid_for_message(ts)} is installed; install it with: pip install {pkg}",
            path=str(h.src),
        )
    return FileFormatError(
        f"cannot decode pixel data ({type(e).__name__}: {msg[:200]}); the file may be damaged", path=str(h.src)
    )


class _PixelCache:
    """Decoded pixel arrays of non-native (compressed / unusual) files, one decode per file."""

    def __init__(self):
        self._cache: dict[str, np.ndarray] = {}

    def get(self, h: _Hdr) -> np.ndarray:
        key = str(h.src)
        if key not in self._cache:
            import pydicom

            try:
                ds = pydicom.dcmread(io.BytesIO(h.src.read_bytes()), force=True)
                arr = ds.pixel_array
            except Exception as e:
                raise _decode_error(h, e) from None
            self._cache[key] = arr
        return self._cache[key]


def _read_frame(sl: _Slice, cache: _PixelCache, spp: int) -> np.ndarray:
    """(rows, cols[, spp]) raw stored values of one slice / frame."""
    h = sl.hdr
    ds = h.ds
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(_num(ds.get("NumberOfFrames", 1), 1) or 1)
    dt = _native_dtype(ds, h.little_endian) if h.native else None
    planar = int(_num(ds.get("PlanarConfiguration", 0), 0))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if h.pixel_offset is not None and dt is not None and h.src.member is None and (spp == 1 or (photometric == "RGB")):
        per = rows * cols * spp
        off = h.pixel_offset + (sl.frame or 0) * per * dt.itemsize
        arr = np.fromfile(h.src.path, dtype=dt, count=per, offset=off)
        if arr.size != per:
            raise FileFormatError(f"truncated file: pixel data ends early (frame {sl.frame or 0})", path=str(h.src))
        if spp == 1:
            arr = arr.reshape(rows, cols)
        elif planar == 1:
            arr = np.moveaxis(arr.reshape(spp, rows, cols), 0, -1)
        else:
            arr = arr.reshape(rows, cols, spp)
        return _fix_bits(arr.astype(dt.newbyteorder("="), copy=False), ds)
    arr = cache.get(h)
    if frames > 1:
        arr = arr[sl.frame or 0]
    return arr


def _build(plan: _Plan, where: str, dtype=np.float32) -> np.ndarray:
    """(C, X, Y, Z) array with rescale applied per slice."""
    cache = _PixelCache()
    nx, ny, _ = plan.shape
    nvol = len(plan.volumes)
    nz = len(plan.volumes[0])
    spp = plan.channels // nvol
    out = np.empty((nvol * spp, nz, ny, nx), dtype=dtype)  # filled as (C, Z, Y, X), returned transposed

    def work(args):
        v, k, sl = args
        raw = _read_frame(sl, cache, spp)
        if raw.shape[:2] != (ny, nx):
            raise FileFormatError(f"pixel data is {raw.shape[:2]}, header says {(ny, nx)}", path=str(sl.hdr.src))
        if spp == 1:
            dst = out[v, k]
            np.multiply(raw, sl.slope, out=dst, casting="unsafe") if sl.slope != 1 else np.copyto(
                dst, raw, casting="unsafe"
            )
            if sl.intercept != 0:
                dst += sl.intercept
        else:
            for ch in range(spp):
                out[v * spp + ch, k] = raw[..., ch] * sl.slope + sl.intercept
        if plan.deshear is not None:
            from scipy import ndimage

            si, sj = plan.deshear[k]
            for ch in range(spp):
                idx = v * spp + ch
                fill = float(out[idx, k].min())
                out[idx, k] = ndimage.shift(out[idx, k], (sj, si), order=1, mode="constant", cval=fill)

    jobs = [(v, k, sl) for v, vol in enumerate(plan.volumes) for k, sl in enumerate(vol)]
    _map(work, jobs)
    vol = out.transpose(0, 3, 2, 1)  # (C, X, Y, Z) view
    if plan.resample_z is not None:
        s_arr = np.array([s.s for s in plan.volumes[0]])
        k1 = np.clip(np.searchsorted(s_arr, plan.resample_z, side="right"), 1, nz - 1)
        k0 = k1 - 1
        w = ((plan.resample_z - s_arr[k0]) / np.maximum(s_arr[k1] - s_arr[k0], 1e-9)).clip(0, 1).astype(dtype)
        vol = vol[..., k0] * (1 - w) + vol[..., k1] * w
    return vol


# --------------------------------------------------------------------------------------------------
# discover
# --------------------------------------------------------------------------------------------------
def _suffix(name: str) -> str:
    low = name.lower()
    if low.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(low)[1]


def _is_dicomdir_file(p: Path) -> bool:
    return p.name.upper() == "DICOMDIR"


def _dicomdir_sources(path: Path) -> list[_Src]:
    """Files referenced by a DICOMDIR (pydicom's FileSet)."""
    from pydicom.fileset import FileSet

    try:
        fs = FileSet(str(path))
    except Exception as e:
        raise FileFormatError(f"cannot read DICOMDIR ({type(e).__name__}: {str(e)[:200]})", path=str(path)) from None
    out = []
    for inst in fs:
        p = Path(inst.path)
        out.append(_Src(str(p)))
    return out


def _walk(path: Path) -> tuple[list[_Src], list[_Src], list[Path], list[Path], list[SeriesInfo]]:
    """DICOM-named sources, extension-less candidates, NIfTI files, 2D image files, unreadable containers."""
    dicom: list[_Src] = []
    maybe: list[_Src] = []  # files without extension: reported only if they look like DICOM
    nifti: list[Path] = []
    img2d: list[Path] = []
    bad: list[SeriesInfo] = []

    def consider(p: Path):
        suf = _suffix(p.name)
        if suf in NIFTI_SUFFIXES:
            nifti.append(p)
        elif suf in IMAGE2D_SUFFIXES:
            img2d.append(p)
        elif _is_dicomdir_file(p):
            return  # the referenced files are found by the walk itself
        elif suf in _DICOM_SUFFIXES:
            dicom.append(_Src(str(p)))
        elif suf == "" or suf.lstrip(".").isdigit():
            # no extension (typical of DICOMDIR trees): DICOM if it has the 'DICM' marker or parses as DICOM
            maybe.append(_Src(str(p)))
        elif suf not in _SKIP_SUFFIXES:
            try:
                with open(p, "rb") as f:
                    if _looks_like_dicom(f.read(132)):
                        dicom.append(_Src(str(p)))
            except OSError:
                pass

    if path.is_file():
        if path.suffix.lower() == ".zip":
            try:
                with zipfile.ZipFile(path) as zf:
                    names = [i.filename for i in zf.infolist() if not i.is_dir()]
            except zipfile.BadZipFile:
                bad.append(SeriesInfo(kind="unreadable", path=str(path), problems=["error: not a valid zip archive"]))
                return dicom, maybe, nifti, img2d, bad
            for name in sorted(names):
                suf = _suffix(name)
                base = name.rsplit("/", 1)[-1]
                if (
                    base.upper() == "DICOMDIR"
                    or suf in _SKIP_SUFFIXES
                    or suf in NIFTI_SUFFIXES
                    or suf in IMAGE2D_SUFFIXES
                ):
                    if suf in NIFTI_SUFFIXES or suf in IMAGE2D_SUFFIXES:
                        log.warning("%s: %s inside a zip is not read; extract the archive to load it", path, name)
                    continue
                (dicom if suf in _DICOM_SUFFIXES else maybe).append(_Src(str(path), name))
        elif _is_dicomdir_file(path):
            dicom.extend(_dicomdir_sources(path))
        else:
            consider(path)
            dicom.extend(maybe)  # a single file named by the user: always report why it fails
            maybe.clear()
        return dicom, maybe, nifti, img2d, bad
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fn in sorted(files):
            if fn.startswith("."):
                continue
            consider(Path(root) / fn)
    return dicom, maybe, nifti, img2d, bad


def _has_dicm(src: _Src) -> bool:
    try:
        if src.member is None:
            with open(src.path, "rb") as f:
                return _looks_like_dicom(f.read(132))
        return _looks_like_dicom(src.read_bytes()[:132])
    except Exception:
        return False


def _read_headers(srcs: Sequence[_Src]) -> tuple[list[_Hdr], list[tuple[_Src, Exception]]]:
    def one(s):
        try:
            return read_dicom_header(s), None
        except (FileFormatError, MissingFileError) as e:
            return None, e

    ok, bad = [], []
    if len(srcs) > 4:
        import sys

        from tqdm import tqdm

        quiet = len(srcs) < 500 or not sys.stderr.isatty()
        with tqdm(total=len(srcs), desc="reading DICOM headers", unit="file", disable=quiet, leave=False) as bar:

            def one_tick(s):
                r = one(s)
                bar.update(1)
                return r

            results = _map(one_tick, srcs)
    else:
        results = [one(s) for s in srcs]
    for s, (h, e) in zip(srcs, results):
        if h is not None:
            ok.append(h)
        else:
            bad.append((s, e))
    return ok, bad


def _common_folder(srcs: Sequence[_Src]) -> str:
    if srcs and srcs[0].member is not None:
        return srcs[0].path
    try:
        return os.path.commonpath([os.path.dirname(s.path) for s in srcs]) if srcs else ""
    except ValueError:
        return os.path.dirname(srcs[0].path)


def _series_info(headers: list[_Hdr], resample: bool = False) -> SeriesInfo:
    ds = headers[0].ds
    where = _common_folder([h.src for h in headers])
    info = SeriesInfo(
        kind="dicom",
        path=where,
        series_uid=str(ds.get("SeriesInstanceUID", "")) or None,
        modality=str(ds.get("Modality", "")) or None,
        description=str(ds.get("SeriesDescription", "")),
        series_number=int(_num(ds.get("SeriesNumber"), 0)) if ds.get("SeriesNumber") is not None else None,
        n_files=len(headers),
        files=[str(h.src) for h in headers],
        _headers=headers,
    )
    if ds.get("SOPClassUID") == _DICOMDIR_SOP or "Rows" not in ds:
        info.problems.append(
            "error: no image data (no Rows/Columns/pixel data in the files; "
            f"SOP class {ds.get('SOPClassUID', 'unknown')})"
        )
        return info
    try:
        plan = _plan(headers, where, resample=resample)
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


def discover(path: str | Path) -> list[SeriesInfo]:
    """Find the images under ``path``: DICOM series (grouped by SeriesInstanceUID), NIfTI and 2D files.

    Reads DICOM headers only (``stop_before_pixels``); with ``MEDSEG_IO_THREADS=N``, in N threads.
    Accepts a folder tree, a DICOMDIR,
    a zip archive of DICOM files, or a single file. A bad file never stops the walk: it is listed as an
    ``"unreadable"`` entry naming the file and the problem, and the other series are described as usual.

    Parameters
    ----------
    path : folder, ``DICOMDIR``, ``.zip``, or a DICOM / NIfTI / PNG / TIFF file.

    Returns
    -------
    list of :class:`SeriesInfo`: DICOM series first (by SeriesNumber, then UID), then NIfTI, 2D images,
    and unreadable files.

    Raises
    ------
    MissingFileError : ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError("path not found", path=str(path))
    srcs, maybe, nifti, img2d, out_bad = _walk(path)
    headers, bad = _read_headers(srcs + maybe)
    maybe_set = set(maybe)
    skipped = [s for s, e in bad if s in maybe_set and not _has_dicm(s)]
    if skipped:
        log.debug("%s: %d file(s) without extension are not DICOM; skipped", path, len(skipped))
    bad = [(s, e) for s, e in bad if not (s in maybe_set and not _has_dicm(s))]
    groups: dict[str, list[_Hdr]] = {}
    for h in headers:
        ds = h.ds
        if str(ds.get("SOPClassUID", "")) == _DICOMDIR_SOP or (
            ds.get("file_meta") is not None and str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_SOP
        ):
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or f"no-series-uid:{h.src}"
        groups.setdefault(uid, []).append(h)
    series = [_series_info(g) for g in groups.values()]
    series.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.series_uid or ""))
    from medseg.io import image2d as _i2d
    from medseg.io import nifti as _nii

    for p in nifti:
        series.append(_nii.nifti_info(p))
    for p in img2d:
        series.append(_i2d.image2d_info(p))
    for s, e in bad:
        series.append(SeriesInfo(kind="unreadable", path=str(s), problems=[f"error: {e}"], files=[str(s)], n_files=1))
    series.extend(out_bad)
    nbad = sum(1 for s in series if s.kind == "unreadable")
    log.info(
        "%s: %d DICOM series, %d NIfTI, %d 2D images, %d unreadable file(s)",
        path,
        len(groups),
        len(nifti),
        len(img2d),
        nbad,
    )
    return series


def format_series_table(series: Sequence[SeriesInfo]) -> str:
    """A plain-text table of :func:`discover`'s result (what ``medseg info`` prints). No patient data."""
    head = ["#", "kind", "modality", "slices", "shape", "spacing (mm)", "orient", "description / path", "problems"]
    rows = []
    for i, s in enumerate(series):
        shape = "x".join(str(v) for v in s.shape) if s.shape else "-"
        if s.n_channels > 1:
            shape = f"{s.n_channels}x" + shape
        spacing = "x".join(f"{v:.4g}" for v in s.spacing) if s.spacing else "-"
        desc = s.description or s.path
        probs = "; ".join(s.problems) if s.problems else "ok"
        rows.append(
            [
                str(i),
                s.kind,
                s.modality or "-",
                str(s.n_slices or s.n_files or "-"),
                shape,
                spacing,
                s.orientation or "-",
                desc,
                probs,
            ]
        )
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head) - 1)]
    lines = []
    for r in [head] + rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1])
    if not rows:
        lines.append("(no images found)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------------
def load_dicom(
    series: SeriesInfo | str | Path | Sequence[str | Path],
    *,
    resample: bool = False,
    dtype=np.float32,
):
    """Load one DICOM series (or one, possibly multi-frame, DICOM file) as a MetaTensor.

    Parameters
    ----------
    series : a :class:`SeriesInfo` from :func:`discover`, a single DICOM file, or a list of the
        series' files.
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
    if isinstance(series, SeriesInfo):
        info = series
        if info.kind == "unreadable":
            raise FileFormatError("; ".join(p.removeprefix("error: ") for p in info.problems), path=info.path)
        headers = info._headers or _read_headers_strict([_src_from_str(f) for f in info.files])
    elif isinstance(series, (str, Path)):
        headers = [read_dicom_header(series)]
    else:
        headers = _read_headers_strict([_Src(str(p)) for p in series])
    if not headers:
        raise InputError("no DICOM files to load", path=str(series))
    where = _common_folder([h.src for h in headers]) if len(headers) > 1 else str(headers[0].src)
    ds0 = headers[0].ds
    if "Rows" not in ds0:
        raise FileFormatError(
            f"not an image (SOP class {_uid_for_message(ds0.get('SOPClassUID'))}; no pixel data)", path=where
        )
    try:
        plan = _plan(headers, where, resample=resample)
    except Exception as e:  # corrupt nested header values (lazy pydicom conversion)
        raise FileFormatError(f"corrupt DICOM header values ({type(e).__name__}: {str(e)[:200]})", path=where) from None
    if plan.errors:
        cls, msg = plan.errors[0]
        raise cls(msg, path=where)
    for p in plan.problems:
        log.warning("%s: %s", where, p)
    try:
        arr = _build(plan, where, dtype=dtype)
        return _to_metatensor(arr, plan, headers, where)
    except MedsegError:
        raise
    except MemoryError:
        raise
    except Exception as e:
        raise FileFormatError(
            f"cannot build the volume ({type(e).__name__}: {str(e)[:200]}); a file may be damaged", path=where
        ) from None


def _src_from_str(s: str) -> _Src:
    if "!" in s and not os.path.exists(s):
        p, m = s.split("!", 1)
        return _Src(p, m)
    return _Src(s)


def _read_headers_strict(srcs: Sequence[_Src]) -> list[_Hdr]:
    ok, bad = _read_headers(srcs)
    if bad:
        raise bad[0][1]
    return ok


def _to_metatensor(arr: np.ndarray, plan: _Plan, headers: list[_Hdr], where: str):
    import torch
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
