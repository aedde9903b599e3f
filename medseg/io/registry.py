"""The one table of image formats medseg reads: each format declares its file suffixes once.

Discovery, ``load``, the CLI and the tasks ask this table (not their own suffix lists), so a
``.bmp`` file is an image everywhere or nowhere. The shape follows nnU-Net's
``imageio/reader_writer_registry.py``: one entry per format, one contract.

Suffixes are lower case with the leading dot; compound suffixes (``.nii.gz``) are matched first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ImageFormat",
    "FORMATS",
    "NON_IMAGE_SUFFIXES",
    "suffix_of",
    "format_of",
    "suffixes",
    "case_id",
]


@dataclass(frozen=True)
class ImageFormat:
    """One readable format: its name, file suffixes and whether a file is a volume or a 2D image."""

    name: str
    suffixes: tuple[str, ...]
    kind: str  # "volume" | "image2d"
    description: str


FORMATS: dict[str, ImageFormat] = {
    f.name: f
    for f in (
        ImageFormat("dicom", (".dcm", ".dicom", ".ima", ".dic"), "volume", "DICOM (a series is a folder of files)"),
        ImageFormat("nifti", (".nii.gz", ".nii", ".hdr"), "volume", "NIfTI-1/2 (and Analyze .hdr/.img pairs)"),
        ImageFormat(
            "image2d", (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"), "image2d", "2D images (microscopy, photos)"
        ),
    )
}

#: suffixes of files that are certainly not images (skipped by discovery without being opened)
NON_IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {
        ".txt", ".json", ".md", ".csv", ".py", ".yaml", ".yml", ".xml", ".html", ".pdf", ".log", ".gz",
        ".zip", ".npy", ".npz", ".pt", ".pth", ".img", ".mha", ".mhd", ".nrrd", ".dump", ".icc", ".sh",
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
