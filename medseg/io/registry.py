"""The one table of image formats medseg reads: each format declares its file suffixes once.

The shape follows nnU-Net's ``imageio/reader_writer_registry.py``: each format module declares one
:class:`~medseg.io.base.ImageFormat` (``FORMAT``: name, suffixes, reader, describer; the contract is
in :mod:`medseg.io.base`) and this module collects them. Discovery, ``load``, the CLI and the tasks
ask this table (not their own suffix lists), so a ``.bmp`` file is an image everywhere or nowhere.

Suffixes are lower case with the leading dot; compound suffixes (``.nii.gz``) are matched first.
To add a format: write its module with a ``FORMAT`` and add it to :data:`FORMATS` below.
"""

from __future__ import annotations

from pathlib import Path

from medseg.io import dicom, image2d, metaimage, nifti, nrrd, wsi
from medseg.io.base import ImageFormat

__all__ = [
    "ImageFormat",
    "FORMATS",
    "format_for_output",
    "NON_IMAGE_SUFFIXES",
    "suffix_of",
    "format_of",
    "suffixes",
    "case_id",
    "reader_for",
]

#: every readable format by name, in the order discover lists them (DICOM, volumes, 2D images)
FORMATS: dict[str, ImageFormat] = {
    f.name: f for f in (dicom.FORMAT, nifti.FORMAT, nrrd.FORMAT, metaimage.FORMAT, image2d.FORMAT, wsi.FORMAT)
}

#: suffixes of files that are certainly not images (skipped by discovery without being opened)
NON_IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {
        ".txt", ".json", ".md", ".csv", ".py", ".yaml", ".yml", ".xml", ".html", ".pdf", ".log", ".gz",
        ".zip", ".npy", ".npz", ".pt", ".pth", ".img", ".raw", ".zraw", ".dump", ".icc", ".sh",
        ".ini", ".cfg", ".jsonl",
    }
)  # fmt: skip

_ALL = sorted(((s, f.name) for f in FORMATS.values() for s in f.suffixes), key=lambda x: -len(x[0]))


def suffix_of(path: str | Path) -> str:
    """The file's image suffix in lower case (``.nii.gz`` counts as one), else its last suffix."""
    name = Path(path).name.lower()
    for s, _ in _ALL:
        if name.endswith(s):
            return s
    return Path(name).suffix


def format_of(path: str | Path) -> str | None:
    """The registered format name a file's suffix declares (``"nifti"``, ...), or None."""
    name = Path(path).name.lower()
    for s, fmt in _ALL:
        if name.endswith(s):
            return fmt
    return None


def suffixes(*names: str) -> tuple[str, ...]:
    """The suffixes of the named formats (all formats when none is named)."""
    chosen = names or tuple(FORMATS)
    return tuple(s for n in chosen for s in FORMATS[n].suffixes)


def case_id(path: str | Path) -> str:
    """A case id from a file or folder name: the name without its image suffix (``a.nii.gz`` -> ``a``)."""
    p = Path(path)
    fmt = format_of(p)
    name = p.name
    return name[: -len(suffix_of(p))] if fmt is not None and p.suffix else name


def reader_for(path: str | Path) -> ImageFormat:
    """The format that reads the file ``path``: by its suffix, else DICOM.

    DICOM files often have no suffix (DICOMDIR trees) or a number as suffix (``1.2.840...``), so a
    file that no format claims is read as DICOM; the DICOM reader says so when it is not.
    """
    return FORMATS[format_of(path) or "dicom"]


def format_for_output(path: str | Path) -> ImageFormat | None:
    """The format a label map is written in for the output ``path`` (by suffix), if medseg writes that format."""
    name = Path(path).name.lower()
    for f in FORMATS.values():
        if f.write_label is not None and any(name.endswith(s) for s in f.write_suffixes):
            return f
    return None
