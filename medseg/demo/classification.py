"""Demo stage ``classification``: see :func:`run_demo`."""

from __future__ import annotations

from medseg.tasks.classification import run_demo

__all__ = ["run_demo"]
