"""The one input expander of the predict commands (``segment``, ``detect``, ``classify``, ``explain``).

What a user may pass as inputs, and what each becomes (the same rules in every command):

- **a file**: one case. A path that does not exist is still a case: reading it fails, the case is
  reported as skipped, and the other cases finish.
- **a folder**: for 2D tasks, every 2D image under it (recursively, sorted; suffixes from
  :mod:`medseg.io.registry`); for volume tasks, every NIfTI file directly inside it, or, when it
  holds none, the folder itself as one DICOM series / study.
- **a datalist JSON** (MSD / MONAI convention): the entries of one list, ``test`` by default;
  ``split`` chooses ``training``, ``validation``, ``test`` or ``all`` (the three in that order).
  Relative paths are relative to the datalist's folder. A missing list is an :class:`InputError`
  naming the lists the file has; the split of each case is kept (``CaseInput.split``) and written
  in the ``split`` column of every command's table. An entry whose ``image`` is a list
  (``"image": ["t1.nii.gz", "t2.nii.gz"]``, MONAI's multi-channel convention) is one case whose
  channels are those files, in that order (``CaseInput.channels``).

Case ids are file names without their image suffix (``a.nii.gz`` -> ``a``), made unique with
``_1``, ``_2`` ... in input order.

A folder holding several DICOM series (a PACS export) is resolved by :func:`resolve_series`:
series that cannot be loaded (localizers / scouts, broken files) are never candidates, so a study
with a localizer and one image series gives that series; with several image series the
``--series`` option of every predict command chooses one (its index in ``medseg info``, its
SeriesInstanceUID or its SeriesDescription).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medseg.config import read_datalist_json
from medseg.errors import ConfigError, InputError
from medseg.io import SeriesInfo, discover
from medseg.io.registry import case_id, format_of

__all__ = ["CaseInput", "SPLITS", "expand_inputs", "resolve_series", "refuse_series_for_2d"]

#: datalist lists a predict command can take, in the order ``all`` takes them
SPLITS: tuple[str, ...] = ("training", "validation", "test")

InputKind = Literal["image2d", "volume"]


@dataclass(frozen=True)
class CaseInput:
    """One case to predict.

    ``image``: the file or folder to read (the first channel of a multi-channel entry). ``label``: a
    reference label map given by the datalist entry (a path), else None. ``split``: the datalist
    list the case came from (None for files and folders). ``entry``: the datalist entry as written
    (other keys a task may use, e.g. a class label). ``channels``: every channel file of a
    multi-channel entry, in order (empty for a one-file case).
    """

    case_id: str
    image: Path
    label: Path | None = None
    split: str | None = None
    entry: Mapping[str, Any] = field(default_factory=dict)
    channels: tuple[Path, ...] = ()

    @property
    def source(self) -> str:
        """The input as text: the path, or the channel paths joined by ``" + "``."""
        return " + ".join(str(p) for p in self.channels) if self.channels else str(self.image)

    @property
    def paths(self) -> list[Path]:
        """The files to read: the channels, or the one image."""
        return list(self.channels) if self.channels else [self.image]


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


_Found = tuple[Path, Path | None, str | None, dict[str, Any], tuple[Path, ...]]


def _datalist_cases(path: Path, split: str) -> list[_Found]:
    content = read_datalist_json(path, error=InputError)
    keys = list(SPLITS) if split == "all" else [split]
    present = [k for k in SPLITS if content.get(k)]
    if not any(content.get(k) for k in keys):
        raise InputError(
            f"datalist has no {split!r} entries (lists present: {', '.join(present) or 'none'}); "
            f"choose one with --split {'|'.join(present + ['all']) if present else 'training|validation|test|all'}",
            path,
        )
    out: list[_Found] = []
    for key in keys:
        for i, item in enumerate(content.get(key) or []):
            entry: dict[str, Any] = dict(item) if isinstance(item, dict) else {"image": item}
            image = entry.get("image")
            channels: tuple[Path, ...] = ()
            if isinstance(image, list) and image and all(isinstance(x, str) for x in image):
                channels = tuple(_resolve(path.parent, x) for x in image)
                image = image[0]
            if not isinstance(image, str):
                raise InputError(
                    f"datalist entry {key}[{i}] has no 'image' path (a path, or a list of paths: one per channel)", path
                )
            label = entry.get("label")
            label_path = _resolve(path.parent, label) if isinstance(label, str) else None
            out.append((_resolve(path.parent, image), label_path, key, entry, channels))
    return out


def _folder_cases(folder: Path, kind: InputKind) -> list[Path]:
    if kind == "image2d":
        found = sorted(p for p in folder.rglob("*") if p.is_file() and format_of(p) in ("image2d", "wsi"))
        if not found:
            raise InputError("no 2D images (PNG/TIFF/JPEG/BMP) in this folder", folder)
        return found
    nifti = sorted(p for p in folder.iterdir() if p.is_file() and format_of(p) == "nifti")
    return nifti or [folder]  # no NIfTI files: the folder is a DICOM series or study


def expand_inputs(inputs: Iterable[str | Path], *, kind: InputKind, split: str = "test") -> list[CaseInput]:
    """Turn the command-line inputs into cases (see the module docstring for the rules).

    Parameters
    ----------
    inputs : files, folders and datalist JSON files, in the order given.
    kind : ``"image2d"`` (detect, classify, explain) or ``"volume"`` (segment).
    split : datalist list to take: ``test`` (default), ``validation``, ``training`` or ``all``.

    Returns
    -------
    list of :class:`CaseInput` with unique case ids, in input order.

    Raises
    ------
    ConfigError for an unknown ``split``; MissingFileError for a missing datalist; InputError for a
    datalist without the chosen list, a folder without images, or no inputs at all.
    """
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"split must be one of {', '.join((*SPLITS, 'all'))}, got {split!r}")
    found: list[_Found] = []
    given = [Path(i) for i in inputs]
    for p in given:
        if p.suffix.lower() == ".json":
            found += _datalist_cases(p, split)
        elif p.is_dir():
            found += [(f, None, None, {}, ()) for f in _folder_cases(p, kind)]
        else:
            found.append((p, None, None, {}, ()))
    if not found:
        raise InputError(
            "no inputs: give image files, folders of them, or a datalist JSON", ", ".join(map(str, given)) or None
        )
    seen: dict[str, int] = {}
    cases = []
    for image, label, sp, entry, channels in found:
        cid = case_id(image)
        if cid in seen:
            seen[cid] += 1
            cid = f"{cid}_{seen[cid]}"
        else:
            seen[cid] = 0
        cases.append(CaseInput(cid, image, label, sp, entry, channels))
    return cases


def _describe(i: int, s: SeriesInfo) -> str:
    what = f"{s.modality or ''} {s.description or Path(s.path).name}".strip()
    return f"[{i}] {what} ({s.n_slices or s.n_files} slices{'' if s.ok else ', not loadable'})"


def resolve_series(path: str | Path, series: str | int | None = None) -> SeriesInfo | Path:
    """The image of ``path`` a predict command reads: the file itself, or one series of a folder.

    Parameters
    ----------
    path : a file (returned as it is) or a folder / DICOMDIR / zip (searched with :func:`medseg.io.discover`).
    series : which series of a folder holding several: its index in ``medseg info PATH`` (``0``,
        ``1`` ...), its SeriesInstanceUID, or its SeriesDescription (exact, case-insensitive, else a
        unique part of it). None: the one loadable series.

    Returns
    -------
    the :class:`~medseg.io.SeriesInfo` to pass to :func:`medseg.io.load`, or ``path`` for a plain file.

    Raises
    ------
    InputError : no loadable series; several and ``series`` not given (the message lists them with
        their index, modality and description); ``series`` matching none or several.
    """
    path = Path(path)
    if not path.is_dir() and format_of(path) is not None:
        return path
    if not path.exists():
        return path  # reading it raises MissingFileError naming it
    found = discover(path)
    if not found:
        raise InputError("no images found in this folder", path)
    listing = "; ".join(_describe(i, s) for i, s in enumerate(found))
    if series is not None:
        key = str(series).strip()
        if key.isdigit() and len(key) < 6:
            i = int(key)
            if not 0 <= i < len(found):
                raise InputError(f"--series {i} is out of range: {listing}", path)
            return found[i]
        by_uid = [s for s in found if s.series_uid == key]
        by_desc = [s for s in found if (s.description or "").strip().lower() == key.lower()]
        by_part = [s for s in found if key.lower() in (s.description or "").lower()]
        for match in (by_uid, by_desc, by_part):
            if len(match) == 1:
                return match[0]
            if len(match) > 1:
                raise InputError(f"--series {key!r} matches {len(match)} series; use the index: {listing}", path)
        raise InputError(
            f"--series {key!r} matches no series (index, SeriesInstanceUID or description): {listing}", path
        )
    loadable = [s for s in found if s.ok]
    images = [s for s in loadable if not s.localizer]  # a scout is picked only when named or alone
    loadable = images or loadable
    if len(loadable) == 1:
        return loadable[0]
    if not loadable:
        problems = "; ".join(p for s in found for p in s.problems if p.startswith("error:"))[:300]
        raise InputError(f"no loadable image here ({problems or listing})", path)
    return _ambiguous(path, loadable, found)


def _ambiguous(path: Path, loadable: list[SeriesInfo], found: list[SeriesInfo]) -> SeriesInfo:
    listing = "; ".join(_describe(found.index(s), s) for s in loadable)
    raise InputError(
        f"{len(loadable)} image series here; choose one with --series <index, SeriesInstanceUID or "
        f"description>: {listing}",
        path,
    )


def refuse_series_for_2d(series: str | int | None, command: str) -> None:
    """ConfigError when ``--series`` is given to a command that reads 2D image files (they have no series)."""
    if series is not None:
        raise ConfigError(
            f"--series picks one DICOM series of a folder (segment); `medseg {command}` reads 2D image files "
            "(PNG/TIFF/JPEG/BMP), which have no series: remove --series"
        )
