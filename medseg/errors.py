"""Exception hierarchy for medseg.

Every error medseg raises on bad input is a :class:`MedsegError` *and* the matching
built-in exception, so callers can catch either ``medseg.errors.MedsegError`` or, for
example, ``ValueError``. Messages name the file (never the patient) and what to do.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "MedsegError",
    "ConfigError",
    "InputError",
    "FileFormatError",
    "MissingFileError",
    "GeometryError",
    "LabelMismatchError",
    "MissingDependencyError",
    "RunFolderExistsError",
    "CheckpointError",
    "PacsError",
]


class MedsegError(Exception):
    """Base class of every medseg error."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        if self.path is not None and self.path not in message:
            message = f"{self.path}: {message}"
        super().__init__(message)


class ConfigError(MedsegError, ValueError):
    """A pipeline config is invalid: unknown key, wrong type, bad value, missing file."""


class InputError(MedsegError, ValueError):
    """An input image, annotation or datalist entry cannot be used as it is."""


class FileFormatError(InputError):
    """A file is truncated, empty, corrupt or not of the expected format."""


class MissingFileError(MedsegError, FileNotFoundError):
    """A file named by the user (or by a datalist) does not exist."""


class GeometryError(InputError):
    """Image geometry is inconsistent (missing slices, mixed orientation, tilt, ...)."""


class LabelMismatchError(InputError):
    """An image and its label map do not overlay (shape or affine differ), or labels are invalid."""


class MissingDependencyError(MedsegError, ImportError):
    """An optional package needed for this operation is not installed."""


class RunFolderExistsError(MedsegError, FileExistsError):
    """The run folder already exists; medseg never overwrites a run silently."""


class CheckpointError(MedsegError, ValueError):
    """A checkpoint cannot be loaded (missing, corrupt, or incompatible with the model)."""


class PacsError(MedsegError):
    """A PACS node refused or failed a request; the message names the node and the DICOM / HTTP status."""
