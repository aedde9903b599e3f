"""Finding images: walking a folder tree, a DICOMDIR or a zip archive, and describing what is there.

Which file is what comes from :mod:`medseg.io.registry` (each format's suffixes, declared once);
DICOM files are grouped into series by SeriesInstanceUID (headers only), files of one-image-per-file
formats (NIfTI, 2D images) are described by their format's ``describe``. Files without a suffix
(DICOMDIR trees) are DICOM when they parse as DICOM.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import FileFormatError, MissingFileError
from medseg.io.dicom import (
    Header,
    Source,
    collector_paused,
    describe_series,
    has_dicm_marker,
    is_dicomdir_record,
    looks_like_dicom,
    read_headers,
)
from medseg.io.registry import FORMATS, NON_IMAGE_SUFFIXES, format_of, suffix_of
from medseg.io.safety import PASS_THROUGH, reason_of, safe_reason, third_party_quiet
from medseg.io.series import SeriesInfo, unreadable

__all__ = ["discover", "is_container"]

log = logging.getLogger(__name__)


def is_container(path: Path) -> bool:
    """True for a file that holds other files (a zip archive or a DICOMDIR): ``load`` discovers in it."""
    return _is_zip(path) or _is_dicomdir(path.name)


def _is_zip(path: Path) -> bool:
    return path.suffix.lower() == ".zip"


def _is_dicomdir(name: str) -> bool:
    return name.rsplit("/", 1)[-1].upper() == "DICOMDIR"


def _one_image_per_file(fmt: str | None) -> bool:
    """True for a registered format whose files are images of their own (NIfTI, 2D image; not DICOM)."""
    return fmt is not None and FORMATS[fmt].describe is not None


@dataclass
class _Found:
    """What a walk found, before any header is read."""

    dicom: list[Source] = field(default_factory=list)  # DICOM-named files
    maybe: list[Source] = field(default_factory=list)  # no suffix: reported only if they look like DICOM
    per_file: dict[str, list[Path]] = field(default_factory=lambda: {n: [] for n in FORMATS})
    bad: list[SeriesInfo] = field(default_factory=list)  # unreadable containers

    def consider(self, p: Path) -> None:
        """Sort one file of a folder walk by its suffix (sniffing the DICOM marker when unknown)."""
        suf = suffix_of(p.name)
        fmt = format_of(p.name)
        if fmt is not None and _one_image_per_file(fmt):
            self.per_file[fmt].append(p)
        elif _is_dicomdir(p.name):
            return  # the referenced files are found by the walk itself
        elif fmt == "dicom":
            self.dicom.append(Source(str(p)))
        elif suf == "" or suf.lstrip(".").isdigit():
            # no extension (typical of DICOMDIR trees): DICOM if it has the 'DICM' marker or parses as DICOM
            self.maybe.append(Source(str(p)))
        elif suf not in NON_IMAGE_SUFFIXES:
            try:
                with open(p, "rb") as f:
                    if looks_like_dicom(f.read(132)):
                        self.dicom.append(Source(str(p)))
            except OSError:
                pass


def _walk_zip(path: Path, found: _Found) -> None:
    """DICOM files inside a zip archive (other images inside a zip are not read: warned about)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as e:
        found.bad.append(unreadable(str(path), f"not a valid zip archive ({type(e).__name__})"))
        return
    for name in sorted(names):
        suf = suffix_of(name)
        if _one_image_per_file(format_of(name)):
            log.warning("%s: %s inside a zip is not read; extract the archive to load it", path, name)
            continue
        if _is_dicomdir(name) or suf in NON_IMAGE_SUFFIXES:
            continue
        (found.dicom if format_of(name) == "dicom" else found.maybe).append(Source(str(path), name))


def _dicomdir_sources(path: Path) -> list[Source]:
    """Files referenced by a DICOMDIR (pydicom's FileSet)."""
    from pydicom.fileset import FileSet  # lazy: keeps `import medseg.io` light

    try:
        with third_party_quiet(str(path)):
            fs = FileSet(str(path))
            return [Source(str(Path(inst.path))) for inst in fs]
    except PASS_THROUGH:
        raise
    except BaseException as e:
        raise FileFormatError(
            f"cannot read DICOMDIR ({type(e).__name__}: {reason_of(str(e))})", path=str(path)
        ) from None


def _walk(path: Path) -> _Found:
    """Sort the files under ``path`` (folder, zip, DICOMDIR or one file) by format."""
    found = _Found()
    if path.is_file():
        if _is_zip(path):
            _walk_zip(path, found)
        elif _is_dicomdir(path.name):
            try:
                found.dicom.extend(_dicomdir_sources(path))
            except FileFormatError as e:
                found.bad.append(unreadable(str(path), str(e)))
        else:
            found.consider(path)
            found.dicom.extend(found.maybe)  # a single file named by the user: always report why it fails
            found.maybe.clear()
        return found
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fn in sorted(files):
            if not fn.startswith("."):
                found.consider(Path(root) / fn)
    return found


def _dicom_series(found: _Found, path: Path) -> tuple[list[SeriesInfo], list[SeriesInfo]]:
    """(DICOM series sorted by SeriesNumber then UID, unreadable DICOM files)."""
    with collector_paused():  # headers read, grouped and planned without full collections (see there)
        return _group_and_describe(found, path)


def _group_and_describe(found: _Found, path: Path) -> tuple[list[SeriesInfo], list[SeriesInfo]]:
    headers, bad = read_headers(found.dicom + found.maybe)
    maybe = set(found.maybe)
    # files without a suffix that are not DICOM (README files in DICOMDIR trees) are skipped quietly
    quiet = {s for s, _ in bad if s in maybe and not has_dicm_marker(s)}
    if quiet:
        log.debug("%s: %d file(s) without extension are not DICOM; skipped", path, len(quiet))
    groups: dict[str, list[Header]] = {}
    damaged: list[SeriesInfo] = []
    for h in headers:
        try:
            if is_dicomdir_record(h.values):
                continue
            uid = str(h.values.get("SeriesInstanceUID", "")) or f"no-series-uid:{h.src}"
        except PASS_THROUGH:
            raise
        except BaseException as e:  # a header value that cannot be converted
            damaged.append(unreadable(str(h.src), f"corrupt DICOM header ({type(e).__name__}: {reason_of(str(e))})"))
            continue
        groups.setdefault(uid, []).append(h)
    series = [describe_series(g) for g in groups.values()]
    series.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.series_uid or ""))
    return series, damaged + [unreadable(str(s), _problem(e, s)) for s, e in bad if s not in quiet]


def _problem(e: Exception, src: Source) -> str:
    """The problem of an unreadable file: its error's message (which names it)."""
    return str(e) if str(src) in str(e) else f"{src}: {e}"


def _describe(name: str, p: Path) -> SeriesInfo:
    """``FORMATS[name].describe(p)``; a describer that raises makes an ``"unreadable"`` entry (never an exception)."""
    describe = FORMATS[name].describe
    assert describe is not None
    try:
        return describe(p)
    except PASS_THROUGH:
        raise
    except BaseException as e:
        return unreadable(str(p), f"{p}: cannot read the header ({safe_reason(e)})")


def discover(path: str | Path) -> list[SeriesInfo]:
    """Find the images under ``path``: DICOM series (grouped by SeriesInstanceUID), NIfTI and 2D files.

    Reads DICOM headers only (``stop_before_pixels``); with ``MEDSEG_IO_THREADS=N``, in N threads.
    Accepts a folder tree, a DICOMDIR, a zip archive of DICOM files, or a single file. A bad file
    never stops the walk and never raises: it is listed as an ``"unreadable"`` entry naming the file
    and the problem, and the other series are described as usual. What pydicom warns while reading
    is logged once per reason, without header values (:mod:`medseg.io.safety`).

    Parameters
    ----------
    path : folder, ``DICOMDIR``, ``.zip``, or a DICOM / NIfTI / PNG / TIFF file.

    Returns
    -------
    list of :class:`SeriesInfo`: DICOM series first (by SeriesNumber, then UID), then the files of
    the other formats in registry order (NIfTI, 2D images), then unreadable files.

    Raises
    ------
    MissingFileError : ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError("path not found", path=str(path))
    found = _walk(path)
    series, bad = _dicom_series(found, path)
    n_dicom = len(series)
    for name, files in found.per_file.items():
        series.extend(_describe(name, p) for p in files)
    series.extend(bad)
    series.extend(found.bad)
    log.info(
        "%s: %d DICOM series, %d NIfTI, %d 2D images, %d unreadable file(s)",
        path,
        n_dicom,
        len(found.per_file.get("nifti", [])),
        len(found.per_file.get("image2d", [])),
        sum(1 for s in series if s.kind == "unreadable"),
    )
    return series
