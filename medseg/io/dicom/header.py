"""Reading DICOM headers (pixel data skipped) and locating the pixel bytes of uncompressed files."""

from __future__ import annotations

import io
import logging
import os
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from medseg.errors import FileFormatError, MissingFileError
from medseg.io.dicom.source import Source, looks_like_dicom, parallel_map

__all__ = [
    "Header",
    "read_dicom_header",
    "read_headers",
    "read_headers_strict",
    "expected_pixel_bytes",
    "is_dicomdir_record",
    "DICOMDIR_SOP",
]

log = logging.getLogger("medseg.io.dicom")

#: Media Storage Directory Storage: the SOP class of a DICOMDIR (an index, not an image)
DICOMDIR_SOP = "1.2.840.10008.1.3.10"

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


@lru_cache(maxsize=1)
def _used_tags() -> tuple[Any, ...]:
    """The tags of the elements medseg reads (pydicom ``BaseTag``), computed once."""
    from pydicom.datadict import tag_for_keyword  # lazy: keeps `import medseg.io` light
    from pydicom.tag import Tag

    return tuple(Tag(t) for t in (tag_for_keyword(k) for k in _USED_KEYWORDS) if t is not None)


@dataclass
class Header:
    """One DICOM file's header (no pixel data) and where its pixel bytes start."""

    src: Source
    ds: Any  # pydicom Dataset (stop_before_pixels)
    pixel_offset: int | None  # byte offset of the pixel data value (native transfer syntaxes only)
    native: bool  # uncompressed transfer syntax
    little_endian: bool
    file_size: int


@dataclass(frozen=True)
class _Syntax:
    """What the transfer syntax says about reading the pixel bytes directly."""

    uid: str
    native: bool  # uncompressed
    little_endian: bool
    implicit_vr: bool
    deflated: bool  # Deflated Explicit VR Little Endian: the bytes on disk are compressed


def read_dicom_header(src: str | Path | Source, *, check_truncation: bool = True) -> Header:
    """Read one DICOM file's header (pixel data skipped) and locate its pixel bytes.

    Parameters
    ----------
    src : file path, or a :class:`Source` (a member of a zip archive).
    check_truncation : refuse uncompressed files whose pixel data are shorter than the header says.

    Raises
    ------
    MissingFileError : the file does not exist.
    FileFormatError : empty, not DICOM, corrupt header, or (uncompressed) pixel data shorter than
        Rows x Columns x frames x samples x bytes: the message names the file, never the patient.
    """
    if not isinstance(src, Source):
        src = Source(str(src))
    name = str(src)
    fp, size = _open(src)
    with fp:
        if size == 0:
            raise FileFormatError("empty file (0 bytes); re-export or re-copy it", path=name)
        ds, pos, next_tag, forced = _parse(fp, name)
    if forced and not ("SOPClassUID" in ds or "Rows" in ds):
        raise FileFormatError("not a DICOM file (no 'DICM' marker and no DICOM image elements)", path=name)
    syntax = _transfer_syntax(ds)
    native = syntax.native
    offset = None
    has_pixels = "Rows" in ds and pos < size
    pixel_tag = b"\xe0\x7f\x10\x00" if syntax.little_endian else b"\x7f\xe0\x00\x10"
    if native and has_pixels and next_tag != pixel_tag:
        native = False  # float / double pixel data or something unusual: let pydicom decode it
    if native and has_pixels and not syntax.deflated:
        offset = pos + (8 if syntax.implicit_vr else 12)  # tag (4) + [VR (2) + reserved (2)] + length (4)
        if check_truncation:
            _check_pixel_length(ds, size - offset, name)
    elif native and "Rows" in ds and pos >= size and check_truncation:
        raise FileFormatError("truncated file: no pixel data after the header", path=name)
    return Header(
        src=src, ds=ds, pixel_offset=offset, native=native, little_endian=syntax.little_endian, file_size=size
    )


def _open(src: Source) -> tuple[IO[bytes], int]:
    """An open binary file (or the bytes of a zip member) and its size."""
    name = str(src)
    try:
        if src.member is None:
            size = os.path.getsize(src.path)
            return open(src.path, "rb"), size
        data = src.read_bytes()
        return io.BytesIO(data), len(data)
    except FileNotFoundError:
        raise MissingFileError("file not found", path=name) from None
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise FileFormatError(f"cannot read file ({type(e).__name__})", path=name) from None


def _parse(fp: IO[bytes], name: str) -> tuple[Any, int, bytes, bool]:
    """(dataset, position after the header, the 4 bytes there, parsed without the 'DICM' marker)."""
    import pydicom  # lazy: keeps `import medseg.io` light
    from pydicom.errors import InvalidDicomError

    head = fp.read(132)
    fp.seek(0)
    forced = not looks_like_dicom(head)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=forced)
        # pydicom converts values lazily: convert the elements medseg uses now, so that a corrupt
        # header fails here (naming the file) and not later in the middle of a volume
        for tag in _used_tags():
            if tag in ds:
                ds[tag]  # noqa: B018  (converts the raw element)
        pos = fp.tell()
        next_tag = fp.read(4)  # the element pydicom stopped at: must be (7FE0,0010) Pixel Data for the fast path
    except InvalidDicomError:
        raise FileFormatError("not a DICOM file (no 'DICM' marker and no valid DICOM elements)", path=name) from None
    except Exception as e:  # pydicom raises many types on corrupt headers
        raise FileFormatError(f"corrupt DICOM header ({type(e).__name__}); the file is damaged", path=name) from None
    return ds, pos, next_tag, forced


def _transfer_syntax(ds: Any) -> _Syntax:
    """The file's transfer syntax (implicit/explicit little endian when the file meta lacks one)."""
    import pydicom  # lazy: keeps `import medseg.io` light

    fm = getattr(ds, "file_meta", None)
    ts = getattr(fm, "TransferSyntaxUID", None) if fm is not None else None
    if ts is None:
        ts = (
            pydicom.uid.ImplicitVRLittleEndian
            if getattr(ds, "is_implicit_VR", True)
            else pydicom.uid.ExplicitVRLittleEndian
        )
    deflated = str(ts) == pydicom.uid.DeflatedExplicitVRLittleEndian
    try:
        uid = pydicom.uid.UID(ts)
        native = not uid.is_compressed
        return _Syntax(str(ts), native, uid.is_little_endian if native else True, uid.is_implicit_VR, deflated)
    except Exception:
        return _Syntax(str(ts), False, True, False, deflated)


def _check_pixel_length(ds: Any, available: int, name: str) -> None:
    need = expected_pixel_bytes(ds)
    if need is not None and available < need:
        raise FileFormatError(
            f"truncated file: pixel data has {max(available, 0)} of {need} bytes; re-export or re-copy it",
            path=name,
        )


def expected_pixel_bytes(ds: Any) -> int | None:
    """Rows x Columns x frames x samples x bits / 8 (rounded up), or None when the header lacks them."""
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


def is_dicomdir_record(ds: Any) -> bool:
    """True for a DICOMDIR (its SOP class, in the dataset or the file meta): an index, not an image."""
    if str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP:
        return True
    fm = ds.get("file_meta")
    return fm is not None and str(fm.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP


def read_headers(srcs: Sequence[Source]) -> tuple[list[Header], list[tuple[Source, Exception]]]:
    """Headers of many files (progress bar on a terminal for 500+): (read, [(file, error), ...])."""

    def one(s: Source) -> tuple[Header | None, Exception | None]:
        try:
            return read_dicom_header(s), None
        except (FileFormatError, MissingFileError) as e:
            return None, e

    if len(srcs) > 4:
        from tqdm import tqdm  # lazy: keeps `import medseg.io` light

        quiet = len(srcs) < 500 or not sys.stderr.isatty()
        with tqdm(total=len(srcs), desc="reading DICOM headers", unit="file", disable=quiet, leave=False) as bar:

            def one_tick(s: Source) -> tuple[Header | None, Exception | None]:
                r = one(s)
                bar.update(1)
                return r

            results = parallel_map(one_tick, srcs)
    else:
        results = [one(s) for s in srcs]
    ok: list[Header] = []
    bad: list[tuple[Source, Exception]] = []
    for s, (h, e) in zip(srcs, results):
        if h is not None:
            ok.append(h)
        elif e is not None:
            bad.append((s, e))
    return ok, bad


def read_headers_strict(srcs: Sequence[Source]) -> list[Header]:
    """Headers of all ``srcs``; the first file that cannot be read raises its error."""
    ok, bad = read_headers(srcs)
    if bad:
        raise bad[0][1]
    return ok
