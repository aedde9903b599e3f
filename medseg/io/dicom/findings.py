"""What the slice planner found: problems (reported), excluded files and errors (raised by ``load``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from medseg.errors import MedsegError

__all__ = ["Findings"]


@dataclass
class Findings:
    """Collected while planning a volume; planning never raises, ``load_dicom`` raises ``errors[0]``.

    Attributes
    ----------
    problems : every finding, in order; errors appear here too, prefixed ``"error: "``.
    excluded : ``"<file>: <reason>"`` for each file left out of the volume.
    errors : ``(exception class, message)`` for each finding that stops loading.
    """

    problems: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    errors: list[tuple[type[MedsegError], str]] = field(default_factory=list)

    def fail(self, cls: type[MedsegError], msg: str) -> None:
        """Record an error (raised by ``load_dicom``; an ``"error: "`` problem in ``discover``)."""
        self.errors.append((cls, msg))
        self.problems.append("error: " + msg)
