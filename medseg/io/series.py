"""What :func:`medseg.io.discover` finds: the :class:`SeriesInfo` record and the series table.

Every format describes what it found with the same record (a DICOM series, a NIfTI file, a 2D
image, or an unreadable file), so ``discover``, ``load`` and ``medseg info`` treat them alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from medseg.errors import FileFormatError
from medseg.io.safety import visible

__all__ = ["SeriesInfo", "format_series_table", "unreadable"]


@dataclass
class SeriesInfo:
    """What :func:`medseg.io.discover` found: one DICOM series, NIfTI file, 2D image, or unreadable file.

    Attributes
    ----------
    kind : ``"dicom"``, ``"nifti"``, ``"image2d"`` (a format name of :mod:`medseg.io.registry`) or
        ``"unreadable"``.
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
    localizer : every image of the series is a localizer / scout (ImageType): it loads, but the
        tasks never pick it on their own (``medseg.tasks.inputs.resolve_series``).
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
    localizer: bool = False
    # the DICOM headers already read by discover (medseg.io.dicom's Header records): load reuses them
    _headers: list[Any] = field(default_factory=list, repr=False, compare=False)
    # the plan describe made from those headers, as (where, resample, Plan): load reuses it for the same arguments
    _plan: tuple[str, bool, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when :func:`medseg.io.load` can build the image without an error."""
        return self.kind != "unreadable" and not any(p.startswith("error:") for p in self.problems)

    def to_dict(self, with_files: bool = False) -> dict[str, Any]:
        """JSON-friendly dict (files listed only with ``with_files=True``: a series can have thousands)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        d["problems"], d["excluded"], d["files"] = list(self.problems), list(self.excluded), list(self.files)
        if not with_files:
            d.pop("files")
            d["n_files"] = self.n_files
        d["ok"] = self.ok
        return d

    def raise_if_unreadable(self) -> None:
        """Raise the ``FileFormatError`` an ``"unreadable"`` entry stands for (its problems, its path)."""
        if self.kind == "unreadable":
            raise FileFormatError("; ".join(p.removeprefix("error: ") for p in self.problems), path=self.path)


def unreadable(path: str, problem: str) -> SeriesInfo:
    """The ``"unreadable"`` entry of one file: ``problem`` (without the ``"error: "`` prefix) names what is wrong."""
    return SeriesInfo(kind="unreadable", path=path, problems=[f"error: {problem}"], files=[path], n_files=1)


def format_series_table(series: Sequence[SeriesInfo]) -> str:
    """A plain-text table of :func:`medseg.io.discover`'s result (what ``medseg info`` prints). No patient data.

    One line per entry whatever the values hold: header text was cleaned when read
    (:func:`medseg.io.safety.clean_text`), and every cell has its control characters replaced (file
    names can hold newlines or terminal escapes too).
    """
    head = ["#", "kind", "modality", "slices", "shape", "spacing (mm)", "orient", "description / path", "problems"]
    rows = [[visible(cell) for cell in _table_row(i, s)] for i, s in enumerate(series)]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head) - 1)]
    lines = []
    for r in [head] + rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1])
    if not rows:
        lines.append("(no images found)")
    return "\n".join(lines)


def _table_row(i: int, s: SeriesInfo) -> list[str]:
    shape = "x".join(str(v) for v in s.shape) if s.shape else "-"
    if s.n_channels > 1:
        shape = f"{s.n_channels}x" + shape
    spacing = "x".join(f"{v:.4g}" for v in s.spacing) if s.spacing else "-"
    return [
        str(i),
        s.kind,
        s.modality or "-",
        str(s.n_slices or s.n_files or "-"),
        shape,
        spacing,
        s.orientation or "-",
        s.description or s.path,
        "; ".join(s.problems) if s.problems else "ok",
    ]
