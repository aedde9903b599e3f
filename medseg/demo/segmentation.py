"""Demo stage ``segmentation``: see :func:`run_demo`."""

from __future__ import annotations

from medseg.tasks.segmentation import run_demo

__all__ = ["run_demo"]
