"""Review outputs for radiologists: overlays (PNG), the HTML review report.

- :mod:`medseg.review.overlay`: ``overlay_2d``, ``overlay_volume``, ``montage``, ``lesion_view``,
  ``heatmap_2d``, ``markers_2d``, ``save_png``, ``save_case_overlays``.
- :mod:`medseg.review.report`: ``write_report(run_dir, cases, title=, summary=, show_phi=)``.
- :mod:`medseg.review.cases`: :class:`ReviewCase`, the record each task hands to the report.

(The DICOM SEG writer lives in :mod:`medseg.io.seg`.)
"""

from __future__ import annotations

from medseg.review.cases import ReviewCase

__all__ = ["ReviewCase", "write_report", "overlay", "report"]


def __getattr__(name: str):
    import importlib

    if name in ("overlay", "report", "cases"):
        return importlib.import_module(f"medseg.review.{name}")
    if name == "write_report":
        from medseg.review.report import write_report

        return write_report
    raise AttributeError(f"module 'medseg.review' has no attribute {name!r}")
