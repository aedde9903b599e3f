"""The contract every image format of :mod:`medseg.io` fulfils (nnU-Net's ``base_reader_writer.py``).

A format module (``dicom/``, ``nifti.py``, ``image2d.py``) declares one :class:`ImageFormat`
named ``FORMAT``: its name, its file suffixes (declared there and nowhere else), whether a file is
a volume or a 2D image, the reader that builds a ``MetaTensor`` and, for formats with one image per
file, the function that describes a file from its header. :mod:`medseg.io.registry` collects the
``FORMAT`` of every module; ``discover``, ``load``, the CLI and the tasks ask the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import DTypeLike

from medseg.io.series import SeriesInfo

if TYPE_CHECKING:  # annotations only: the readers import monai (torch) when they run
    from monai.data import MetaTensor

__all__ = ["ImageFormat", "LoadOptions", "Reader", "Describer", "source_path"]


@dataclass(frozen=True)
class LoadOptions:
    """What :func:`medseg.io.load` passes to every reader; a reader uses the options that apply to it.

    Attributes
    ----------
    resample : DICOM: interpolate irregular series onto a uniform grid (reported) instead of raising.
    nan_value : NIfTI: replace NaN voxels with this value (``None`` keeps them and warns).
    dtype : dtype of the returned voxel values (after rescale / scl_slope).
    """

    resample: bool = False
    nan_value: float | None = None
    dtype: DTypeLike = np.float32


#: ``read(source, options) -> MetaTensor``: ``source`` is a file, or the :class:`SeriesInfo` that
#: :func:`medseg.io.discover` found (for DICOM: a whole series, headers already read).
Reader = Callable[[Path | SeriesInfo, LoadOptions], "MetaTensor"]
#: ``describe(path) -> SeriesInfo`` from the file's header; never raises (an unreadable file is a
#: ``kind="unreadable"`` entry naming the problem).
Describer = Callable[[Path], SeriesInfo]


@dataclass(frozen=True)
class ImageFormat:
    """One readable format: its name, file suffixes and whether a file is a volume or a 2D image.

    Attributes
    ----------
    name : registry key, also :attr:`SeriesInfo.kind` of what it reads (``"dicom"``, ``"nifti"``, ...).
    suffixes : lower-case file suffixes with the leading dot (``".nii.gz"`` counts as one).
    kind : ``"volume"`` or ``"image2d"``.
    description : one line for humans (docs, ``--help``).
    read : the format's reader (see :data:`Reader`).
    describe : header-only description of one file (see :data:`Describer`); ``None`` for formats
        whose images span several files (DICOM: :func:`medseg.io.discover` groups them into series).
    """

    name: str
    suffixes: tuple[str, ...]
    kind: str  # "volume" | "image2d"
    description: str
    read: Reader | None = field(default=None, compare=False, repr=False)
    describe: Describer | None = field(default=None, compare=False, repr=False)

    def reader(self) -> Reader:
        """The format's reader (an ``ImageFormat`` declared without one cannot load files)."""
        if self.read is None:  # pragma: no cover - every registered format has a reader
            raise NotImplementedError(f"format {self.name!r} declares no reader")
        return self.read


def source_path(source: str | Path | SeriesInfo) -> Path:
    """The file a one-file-per-image reader reads: ``source`` itself, or the ``path`` of a :class:`SeriesInfo`."""
    return Path(source.path) if isinstance(source, SeriesInfo) else Path(source)
