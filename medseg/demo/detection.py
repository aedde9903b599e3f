"""Demo stage ``detection``: see :func:`run_demo`."""

from __future__ import annotations

from medseg.tasks.detection import run_demo

__all__ = ["run_demo"]
