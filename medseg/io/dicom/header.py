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
from typing import IO, Any, Literal

from medseg.errors import FileFormatError, MedsegError, MissingFileError
from medseg.io.dicom.source import Source, collector_paused, common_folder, looks_like_dicom, parallel_map
from medseg.io.safety import PASS_THROUGH, reading_file, reason_of, third_party_quiet

__all__ = [
    "Header",
    "HeaderValues",
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
    "ModalityLUTSequence",
    "AcquisitionNumber",
    "TemporalPositionIdentifier",
    "EchoNumbers",
    "TriggerTime",
    "GridFrameOffsetVector",
)


@lru_cache(maxsize=1)
def _used_tags() -> tuple[tuple[str, Any], ...]:
    """``(keyword, tag)`` of the elements medseg reads (pydicom ``BaseTag``), computed once."""
    from pydicom.datadict import tag_for_keyword  # lazy: keeps `import medseg.io` light
    from pydicom.tag import Tag

    tags = ((k, tag_for_keyword(k)) for k in _USED_KEYWORDS)
    return tuple((k, Tag(t)) for k, t in tags if t is not None)


_UNSEEN = object()  # HeaderValues: not looked up yet
_ABSENT = object()  # HeaderValues: the dataset has no such element / attribute


class HeaderValues:
    """A read-only view of a pydicom Dataset by keyword that looks each answer up once.

    ``view.get("Rows")``, ``"Rows" in view`` and ``view.Rows`` answer exactly what the Dataset
    answers (pydicom converts every value; the view only remembers the answer), so the view stands in
    for the Dataset wherever medseg reads header values. Why: a keyword lookup on a pydicom Dataset
    costs 5-15 µs (keyword -> tag, element access), and planning and building a volume ask each
    file's header for the same ~30 values several times: on a 300-file series that was ~0.2 s of a
    ~1 s load (``benchmarks/io_load.py``). Keys that are not strings (tags) go to the Dataset as they
    are. The Dataset must not be changed after the view is made (medseg never changes it).
    """

    __slots__ = ("ds", "_values", "_has")

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self._values: dict[str, Any] = {}  # keyword -> value, or _ABSENT
        self._has: dict[str, bool] = {}  # keyword -> `keyword in ds`

    def _remember(self, keyword: str, present: bool, value: Any) -> None:
        """Record what the Dataset holds for ``keyword`` (read by the caller through pydicom)."""
        self._values[keyword] = value if present else _ABSENT
        self._has[keyword] = present

    def __reduce__(self) -> tuple[type[HeaderValues], tuple[Any]]:
        return HeaderValues, (self.ds,)  # copies and pickles look the values up again

    def _value(self, key: str) -> Any:
        value = self._values.get(key, _UNSEEN)
        if value is _UNSEEN:
            try:
                value = getattr(self.ds, key)  # what Dataset.get(key) returns (pydicom converts the value)
            except AttributeError:
                value = _ABSENT
            self._values[key] = value
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        """``Dataset.get(key, default)``: the value of the element named ``key`` (a keyword), else ``default``."""
        if not isinstance(key, str):
            return self.ds.get(key, default)
        value = self._value(key)
        return default if value is _ABSENT else value

    def __contains__(self, key: Any) -> bool:
        if not isinstance(key, str):
            return key in self.ds
        has = self._has.get(key)
        if has is None:
            has = self._has[key] = key in self.ds
        return has

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not a DICOM keyword (and not set yet while unpickling)
            raise AttributeError(name)
        value = self._value(name)
        if value is _ABSENT:
            raise AttributeError(name)
        return value


@dataclass
class Header:
    """One DICOM file's header (no pixel data) and where its pixel bytes start.

    ``ds`` is the pydicom Dataset; ``values`` reads it by keyword, each value looked up once
    (:class:`HeaderValues`): medseg reads header values through ``values``.
    """

    src: Source
    ds: Any  # pydicom Dataset (stop_before_pixels)
    values: HeaderValues
    pixel_offset: int | None  # byte offset of the pixel data value (native transfer syntaxes only)
    native: bool  # uncompressed transfer syntax
    little_endian: bool
    file_size: int
    transfer_syntax: str = ""  # the file meta's, or the encoding pydicom found when the file has none
    frames: int = 1  # NumberOfFrames (1 when absent); inferred from the pixel data when the value is damaged
    note: str | None = None  # what was inferred (reported in the series' problems)


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
    check_truncation : refuse uncompressed files whose Pixel Data element (or the file) is shorter
        than Rows x Columns x frames x samples x bits / 8 (4:2:2 subsampled YBR counted as 2 samples).

    Raises
    ------
    MissingFileError : the file does not exist.
    FileFormatError : empty, not DICOM, corrupt header, or (uncompressed) pixel data shorter than the
        header says: the message names the file, never the patient. pydicom's warnings and log records
        are captured (:mod:`medseg.io.safety`), never shown as they are.
    """
    if not isinstance(src, Source):
        src = Source(str(src))
    name = str(src)
    with third_party_quiet(name), reading_file(name):
        fp, size = _open(src)
        with fp:
            if size == 0:
                raise FileFormatError("empty file (0 bytes); re-export or re-copy it", path=name)
            ds, values, syntax, pos, element = _parse(fp, name)
        if element.forced and not ("SOPClassUID" in values or "Rows" in values):
            raise FileFormatError("not a DICOM file (no 'DICM' marker and no DICOM image elements)", path=name)
        native = syntax.native and not syntax.deflated  # deflated: the bytes on disk are compressed
        offset = None
        has_pixels = "Rows" in values and pos < size
        frames, note = _frame_count(values, element.length if native else None, name)
        if native and has_pixels and element.offset is not None:
            offset = pos + element.offset
            if check_truncation:
                _check_pixel_length(values, frames, element.length, size - offset, name)
        elif native and has_pixels:
            native = False  # float / double pixel data, encapsulated or unusual: let pydicom decode it
        elif "Rows" in values and pos >= size and check_truncation and not syntax.deflated:
            raise FileFormatError("truncated file: no pixel data after the header", path=name)
    return Header(
        src=src,
        ds=ds,
        values=values,
        pixel_offset=offset,
        native=native,
        little_endian=syntax.little_endian,
        file_size=size,
        transfer_syntax=syntax.uid,
        frames=frames,
        note=note,
    )


def _frame_count(ds: Any, length: int | None, name: str) -> tuple[int, str | None]:
    """(frames, note): NumberOfFrames, or, when its value is damaged (``'1A'``), the whole number of frames
    the uncompressed Pixel Data element of ``length`` bytes holds (as pydicom infers it); else an error."""
    raw = ds.get("NumberOfFrames")
    if raw is None or str(raw).strip() == "":
        return 1, None
    try:
        frames = int(raw)
        if frames >= 1:
            return frames, None
    except (TypeError, ValueError):
        pass
    one = expected_pixel_bytes(ds, frames=1)
    if length is not None and one and length >= one and (length - length % 2) % one in (0, length % one):
        inferred = length // one
        return inferred, f"NumberOfFrames is not a valid number: {inferred} frame(s) read from the pixel data length"
    raise FileFormatError(
        "NumberOfFrames is not a valid number and the frame count cannot be told from the pixel data", path=name
    )


@dataclass(frozen=True)
class _PixelElement:
    """The element header pydicom stopped at: where its value starts (relative) and its length."""

    forced: bool  # the file was parsed without the 'DICM' marker
    offset: int | None = None  # bytes from the element start to its value (None: not plain Pixel Data)
    length: int | None = None  # the element's value length (None: undefined / not plain Pixel Data)


def _pixel_element(head: bytes, syntax: _Syntax, forced: bool) -> _PixelElement:
    """Decode the (7FE0,0010) element header at the stop position (tag, [VR, reserved,] length)."""
    little = syntax.little_endian
    tag = b"\xe0\x7f\x10\x00" if little else b"\x7f\xe0\x00\x10"
    if len(head) < 8 or head[:4] != tag:
        return _PixelElement(forced)
    order: Literal["little", "big"] = "little" if little else "big"
    if syntax.implicit_vr:
        length, offset = int.from_bytes(head[4:8], order), 8
    else:
        if len(head) < 12 or head[4:6] not in (b"OB", b"OW", b"UN"):
            return _PixelElement(forced)
        length, offset = int.from_bytes(head[8:12], order), 12
    if length == 0xFFFFFFFF:  # undefined length: encapsulated (compressed) frames
        return _PixelElement(forced)
    return _PixelElement(forced, offset, length)


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


def _parse(fp: IO[bytes], name: str) -> tuple[Any, HeaderValues, _Syntax, int, _PixelElement]:
    """(dataset, its values by keyword, transfer syntax, position after the header, the element there)."""
    import pydicom  # lazy: keeps `import medseg.io` light
    from pydicom.errors import InvalidDicomError

    head = fp.read(132)
    fp.seek(0)
    forced = not looks_like_dicom(head)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=forced)
        # pydicom converts values lazily: convert the file meta and the elements medseg uses now, so
        # that a corrupt header fails here (naming the file) and not later in the middle of a volume
        fm = getattr(ds, "file_meta", None)
        if fm is not None:
            for elem in fm:
                elem.value  # noqa: B018  (converts the raw element)
        values = HeaderValues(ds)
        for keyword, tag in _used_tags():
            present = tag in ds
            values._remember(keyword, present, ds[tag].value if present else None)  # converts the raw element
        syntax = _transfer_syntax(ds)
        pos = fp.tell()
        element = _pixel_element(fp.read(12), syntax, forced)  # must be (7FE0,0010) Pixel Data for the fast path
    except InvalidDicomError:
        raise FileFormatError("not a DICOM file (no 'DICM' marker and no valid DICOM elements)", path=name) from None
    except MedsegError:
        raise
    except PASS_THROUGH:
        raise
    except BaseException as e:  # pydicom raises many types on corrupt headers; the text may quote values
        raise FileFormatError(
            f"corrupt DICOM header ({type(e).__name__}: {reason_of(str(e))}); the file is damaged", path=name
        ) from None
    return ds, values, syntax, pos, element


def _transfer_syntax(ds: Any) -> _Syntax:
    """The file's transfer syntax (implicit/explicit little endian when the file meta lacks one)."""
    import pydicom  # lazy: keeps `import medseg.io` light

    fm = getattr(ds, "file_meta", None)
    ts = getattr(fm, "TransferSyntaxUID", None) if fm is not None else None
    if ts is None:  # no file meta: the encoding pydicom found while reading (implicit, little endian)
        implicit, little = getattr(ds, "original_encoding", (True, True))
        if implicit is None or implicit:
            ts = pydicom.uid.ImplicitVRLittleEndian
        else:
            ts = pydicom.uid.ExplicitVRLittleEndian if little or little is None else pydicom.uid.ExplicitVRBigEndian
    if isinstance(ts, str):
        return _syntax_of_uid(str(ts))  # a UID (str) or a plain string: the same answer for the same text
    return _syntax_of(ts)


@lru_cache(maxsize=64)
def _syntax_of_uid(ts: str) -> _Syntax:
    """:func:`_syntax_of` once per UID text (the files of a series share one)."""
    return _syntax_of(ts)


def _syntax_of(ts: Any) -> _Syntax:
    """What the transfer syntax value ``ts`` says."""
    import pydicom  # lazy: keeps `import medseg.io` light

    deflated = str(ts) == pydicom.uid.DeflatedExplicitVRLittleEndian
    try:
        uid = pydicom.uid.UID(ts)
        native = not uid.is_compressed
        return _Syntax(str(ts), native, uid.is_little_endian if native else True, uid.is_implicit_VR, deflated)
    except Exception:
        return _Syntax(str(ts), False, True, False, deflated)


def _check_pixel_length(ds: Any, frames: int, length: int | None, available: int, name: str) -> None:
    """The Pixel Data element (``length`` bytes) and the file (``available`` bytes after it) hold a full image."""
    need = expected_pixel_bytes(ds, frames=frames)
    if need is None:
        return
    if length is not None and length < need:
        raise FileFormatError(
            f"the Pixel Data element holds {length} bytes, but Rows x Columns x frames x samples needs "
            f"{need}; the header and the pixel data do not match (damaged or wrongly converted file)",
            path=name,
        )
    if available < need:
        raise FileFormatError(
            f"truncated file: pixel data has {max(available, 0)} of {need} bytes; re-export or re-copy it",
            path=name,
        )


def expected_pixel_bytes(ds: Any, frames: int | None = None) -> int | None:
    """Rows x Columns x frames x samples x bits / 8 (rounded up), or None when the header lacks them.

    ``frames``: the frame count to use (default: NumberOfFrames).

    Uncompressed YBR_FULL_422 / YBR_PARTIAL_422 store two chroma samples per pair of pixels (4:2:2
    subsampling): 2 samples per pixel, not 3 (DICOM PS3.3 C.7.6.3.1.2).
    """
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1) if frames is None else frames
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    except Exception:
        return None
    if rows <= 0 or cols <= 0 or bits <= 0 or frames <= 0:
        return None
    if spp == 3 and photometric in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        spp = 2
    return (rows * cols * frames * spp * bits + 7) // 8


def is_dicomdir_record(ds: Any) -> bool:
    """True for a DICOMDIR (its SOP class, in the dataset or the file meta): an index, not an image."""
    if str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP:
        return True
    fm = ds.get("file_meta")
    return fm is not None and str(fm.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP


def read_headers(srcs: Sequence[Source]) -> tuple[list[Header], list[tuple[Source, Exception]]]:
    """Headers of many files (progress bar on a terminal for 500+): (read, [(file, error), ...]).

    Never raises for one file: whatever reading a file raises (a MedsegError, or anything else as a
    FileFormatError naming it) is returned with the file.
    """
    with third_party_quiet(common_folder(list(srcs)) if srcs else "DICOM files"), collector_paused():
        return _read_headers(srcs)


def _read_headers(srcs: Sequence[Source]) -> tuple[list[Header], list[tuple[Source, Exception]]]:
    def one(s: Source) -> tuple[Header | None, Exception | None]:
        try:
            return read_dicom_header(s), None
        except MedsegError as e:
            return None, e
        except PASS_THROUGH:
            raise
        except BaseException as e:
            return None, FileFormatError(f"cannot read the header ({type(e).__name__})", path=str(s))

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
