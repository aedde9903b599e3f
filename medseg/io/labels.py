"""Writing label maps in the format the output name asks for: NIfTI (``.nii[.gz]``), NRRD (``.nrrd``),
3D Slicer segmentations (``.seg.nrrd``), always on the reference image's grid.

Each format module declares its label writer in its ``FORMAT`` (``write_label``); this module picks it
from :mod:`medseg.io.registry` by the output suffix, as ``load`` picks readers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io.base import LoadOptions
from medseg.io.registry import FORMATS, format_for_output, reader_for

__all__ = ["save_label", "label_suffixes"]


def label_suffixes() -> tuple[str, ...]:
    """The output suffixes medseg writes label maps in (``.nii.gz``, ``.nii``, ``.seg.nrrd``, ``.nrrd``)."""
    return tuple(s for f in FORMATS.values() for s in f.write_suffixes)


def save_label(labels: Any, reference: Any, path: str | Path, *, segments: Mapping[int, str] | None = None) -> Path:
    """Write a label map (uint8) on the reference image's grid, in the format of ``path``'s suffix (atomic).

    Parameters
    ----------
    labels : (X, Y, Z) or (1, X, Y, Z) integer array / tensor, values 0..255.
    reference : the image the labels belong to: a MetaTensor from :func:`medseg.io.load`, or an image
        path. A NIfTI output copies a NIfTI reference's qform/sform (and codes) verbatim; otherwise
        the reference's affine is written (qform = sform for NIfTI; LPS space directions for NRRD).
    path : ``.nii`` / ``.nii.gz`` (NIfTI), ``.nrrd`` (a label volume) or ``.seg.nrrd`` (a 3D Slicer
        segmentation, one named segment per label value).
    segments : ``{label value: name}`` for the segment names of a ``.seg.nrrd`` (default: the
        reference's own Slicer segments, else ``Segment_<value>``); ignored by NIfTI.

    Returns
    -------
    The written path.

    Raises
    ------
    LabelMismatchError : the spatial shape differs from the reference, or values are not integers in 0..255.
    InputError : an output suffix medseg does not write label maps in.
    """
    path = Path(path)
    fmt = format_for_output(path)
    if fmt is None or fmt.write_label is None:
        raise InputError(f"label maps are written as {', '.join(label_suffixes())}; got {path.name!r}", path=str(path))
    if isinstance(reference, (str, Path)) and reader_for(reference).name != fmt.name:
        reference = reader_for(reference).reader()(Path(reference), LoadOptions())  # its grid, from its own reader
    return fmt.write_label(labels, reference, path, segments)
