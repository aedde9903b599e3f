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
  naming the lists the file has; the split of each case is kept (``CaseInput.split``).

Case ids are file names without their image suffix (``a.nii.gz`` -> ``a``), made unique with
``_1``, ``_2`` ... in input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medseg.config import read_datalist_json
from medseg.errors import ConfigError, InputError
from medseg.io.registry import case_id, format_of

__all__ = ["CaseInput", "SPLITS", "expand_inputs"]

#: datalist lists a predict command can take, in the order ``all`` takes them
SPLITS: tuple[str, ...] = ("training", "validation", "test")

InputKind = Literal["image2d", "volume"]


@dataclass(frozen=True)
class CaseInput:
    """One case to predict.

    ``image``: the file or folder to read. ``label``: a reference label map given by the datalist
    entry (a path), else None. ``split``: the datalist list the case came from (None for files and
    folders). ``entry``: the datalist entry as written (other keys a task may use, e.g. a class label).
    """

    case_id: str
    image: Path
    label: Path | None = None
    split: str | None = None
    entry: Mapping[str, Any] = field(default_factory=dict)


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def _datalist_cases(path: Path, split: str) -> list[tuple[Path, Path | None, str, dict[str, Any]]]:
    content = read_datalist_json(path, error=InputError)
    keys = list(SPLITS) if split == "all" else [split]
    present = [k for k in SPLITS if content.get(k)]
    if not any(content.get(k) for k in keys):
        raise InputError(
            f"datalist has no {split!r} entries (lists present: {', '.join(present) or 'none'}); "
            f"choose one with --split {'|'.join(present + ['all']) if present else 'training|validation|test|all'}",
            path,
        )
    out = []
    for key in keys:
        for i, item in enumerate(content.get(key) or []):
            entry: dict[str, Any] = dict(item) if isinstance(item, dict) else {"image": item}
            image = entry.get("image")
            if not isinstance(image, str):
                raise InputError(f"datalist entry {key}[{i}] has no 'image' path", path)
            label = entry.get("label")
            label_path = _resolve(path.parent, label) if isinstance(label, str) else None
            out.append((_resolve(path.parent, image), label_path, key, entry))
    return out


def _folder_cases(folder: Path, kind: InputKind) -> list[Path]:
    if kind == "image2d":
        found = sorted(p for p in folder.rglob("*") if p.is_file() and format_of(p) == "image2d")
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
    found: list[tuple[Path, Path | None, str | None, dict[str, Any]]] = []
    given = [Path(i) for i in inputs]
    for p in given:
        if p.suffix.lower() == ".json":
            found += _datalist_cases(p, split)
        elif p.is_dir():
            found += [(f, None, None, {}) for f in _folder_cases(p, kind)]
        else:
            found.append((p, None, None, {}))
    if not found:
        raise InputError(
            "no inputs: give image files, folders of them, or a datalist JSON", ", ".join(map(str, given)) or None
        )
    seen: dict[str, int] = {}
    cases = []
    for image, label, sp, entry in found:
        cid = case_id(image)
        if cid in seen:
            seen[cid] += 1
            cid = f"{cid}_{seen[cid]}"
        else:
            seen[cid] = 0
        cases.append(CaseInput(cid, image, label, sp, entry))
    return cases
