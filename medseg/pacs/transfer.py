"""Pulling studies from a PACS into folders and pushing results (DICOM SEG) back, by DIMSE or DICOMweb.

:func:`pull` writes ``OUT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, one folder per
series (what ``medseg segment`` takes), each complete or absent (written under a temporary name, then
renamed), and ``OUT/pull.json`` listing the series (UIDs, modality, instance count; no patient data).
:func:`push` sends files back; a SEG written by medseg carries its source's StudyInstanceUID, so it lands
in the same study.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from medseg.errors import InputError, MissingFileError, PacsError
from medseg.io.dicom.source import uid_for_message
from medseg.pacs import dimse, web
from medseg.pacs.config import PacsNode
from medseg.utils import atomic_write_text

__all__ = ["pull", "push", "PulledSeries"]

log = logging.getLogger(__name__)

Via = Literal["dimse", "dicomweb"]


@dataclass
class PulledSeries:
    """One series written by :func:`pull` (UIDs, modality, instances, folder); no patient data."""

    study_uid: str
    series_uid: str
    modality: str
    n_instances: int
    folder: str


def _uid(value: Any, node: PacsNode, what: str) -> str:
    uid = uid_for_message(value)
    if uid in ("unknown", "<not a valid UID>"):
        raise PacsError(f"PACS node {node.name!r} answered a {what} without a valid UID")
    return uid


def _matches(node: PacsNode, via: Via, level: str, query: Mapping[str, Any], study_uid: str | None = None) -> list:
    if via == "dicomweb":
        return web.search(node, level, query, study_uid=study_uid)
    keys = ("StudyInstanceUID",) if level == "STUDY" else ("SeriesInstanceUID", "Modality", "SeriesNumber")
    q = dict(query) if level == "STUDY" else {"StudyInstanceUID": study_uid, **query}
    return dimse.find(node, level, q, returned=[k for k in keys if k not in q])


def pull(
    node: PacsNode,
    out: str | Path,
    *,
    study_uid: str | None = None,
    accession: str | None = None,
    query: Mapping[str, str] | None = None,
    modality: str | None = None,
    via: Via = "dimse",
) -> list[PulledSeries]:
    """Retrieve the studies that match into ``out``, one folder per series.

    Parameters
    ----------
    node : the PACS node (:func:`medseg.pacs.get_node`).
    out : destination folder (created); existing series folders are kept and not fetched again.
    study_uid, accession, query : which studies: a StudyInstanceUID, an AccessionNumber, or other
        study-level matching keys (``{"PatientID": ..., "StudyDate": "20240101-"}``); at least one.
    modality : only series of this modality (``CT``); default: every series.
    via : ``dimse`` (C-FIND + C-GET / C-MOVE, as the node's ``retrieve`` says) or ``dicomweb`` (QIDO + WADO).

    Returns
    -------
    The series written (also listed in ``out/pull.json``).

    Raises
    ------
    InputError : no study selector. PacsError : the node refused or failed a request, or nothing matched.
    """
    study_query: dict[str, Any] = dict(query or {})
    if study_uid:
        study_query["StudyInstanceUID"] = study_uid
    if accession:
        study_query["AccessionNumber"] = accession
    if not study_query:
        raise InputError("say which study to pull: a StudyInstanceUID, an accession number or a query")
    out = Path(out)
    studies = [_uid(s.get("StudyInstanceUID"), node, "study") for s in _matches(node, via, "STUDY", study_query)]
    if not studies:
        raise PacsError(f"PACS node {node.name!r}: no study matches the query (by {', '.join(sorted(study_query))})")
    pulled: list[PulledSeries] = []
    for study in dict.fromkeys(studies):
        series_query = {"Modality": modality} if modality else {}
        for s in _matches(node, via, "SERIES", series_query, study_uid=study):
            series = _uid(s.get("SeriesInstanceUID"), node, "series")
            mod = str(s.get("Modality", "") or "")
            if modality and mod.upper() != modality.upper():
                continue  # a node that ignores the Modality key
            pulled.append(_pull_series(node, via, study, series, mod, out))
    atomic_write_text(out / "pull.json", json.dumps([asdict(p) for p in pulled], indent=2))
    log.info("PACS node %r: %d series pulled into %s", node.name, len(pulled), out)
    return pulled


def _pull_series(node: PacsNode, via: Via, study: str, series: str, modality: str, out: Path) -> PulledSeries:
    folder = out / study / series
    if folder.is_dir() and any(folder.iterdir()):
        n = sum(1 for _ in folder.glob("*.dcm"))
        log.info("series folder %s exists (%d instances): kept", folder, n)
        return PulledSeries(study, series, modality, n, str(folder))
    partial = folder.with_name(f".{series}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)

    def write(ds: Any) -> None:
        ds.save_as(partial / f"{_uid(ds.get('SOPInstanceUID'), node, 'instance')}.dcm", enforce_file_format=True)

    try:
        if via == "dicomweb":
            n = web.retrieve_series(node, study, series, write)
        else:
            n = dimse.retrieve(node, study, series, write)
        if n == 0:
            raise PacsError(f"PACS node {node.name!r}: the retrieve of a series returned no instance")
        partial.rename(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return PulledSeries(study, series, modality, n, str(folder))


def _datasets(paths: Sequence[str | Path]) -> list[Any]:
    import pydicom  # lazy: keeps `import medseg.pacs` light
    from pydicom.errors import InvalidDicomError

    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise MissingFileError("file or folder to push not found", path=str(p))
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    out = []
    for f in files:
        try:
            out.append(pydicom.dcmread(f))
        except (InvalidDicomError, OSError, ValueError, EOFError):
            if len(files) == 1:
                raise InputError("not a DICOM file", path=str(f)) from None
            log.info("push: skipping %s (not DICOM)", f.name)
    if not out:
        raise InputError(f"no DICOM file to push in {', '.join(map(str, paths))}")
    return out


def push(node: PacsNode, paths: Sequence[str | Path], *, via: Via = "dimse", check_study: bool = True) -> list[str]:
    """Send DICOM files (a SEG, or folders of them) to ``node`` by C-STORE or STOW-RS.

    With ``check_study``, each file's study is looked up first, and a study the node does not hold
    is logged as a warning (the object would open a new study there).

    Returns
    -------
    The SOP Instance UIDs stored.
    """
    datasets = _datasets(paths)
    if check_study:
        for study in sorted({str(d.get("StudyInstanceUID", "")) for d in datasets}):
            if study and not _matches(node, via, "STUDY", {"StudyInstanceUID": study}):
                log.warning(
                    "PACS node %r does not hold the study of the pushed object; it opens a new study", node.name
                )
    stored = web.stow(node, datasets) if via == "dicomweb" else dimse.store(node, datasets)
    log.info("PACS node %r: %d instance(s) stored", node.name, len(stored))
    return stored
