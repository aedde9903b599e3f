"""Review outputs for radiologists: overlays (PNG), the HTML review report.

- :mod:`medseg.review.overlay`: ``overlay_2d``, ``overlay_volume``, ``montage``, ``lesion_view``,
  ``heatmap_2d``, ``markers_2d``, ``save_png``, ``save_case_overlays`` (built from
  :mod:`~medseg.review.windowing`, :mod:`~medseg.review.annotate`, :mod:`~medseg.review.orientation`,
  :mod:`~medseg.review.draw2d`, :mod:`~medseg.review.views` and :mod:`~medseg.review.png`).
- :mod:`medseg.review.report`: ``write_report(run_dir, cases, title=, summary=, show_phi=)``.
- :mod:`medseg.review.cases`: :class:`ReviewCase`, the record each task hands to the report.

(The DICOM SEG writer lives in :mod:`medseg.io.seg`.)
"""

from __future__ import annotations

from medseg.review import cases, overlay, report
from medseg.review.cases import ReviewCase
from medseg.review.report import write_report

__all__ = ["ReviewCase", "write_report", "cases", "overlay", "report"]
