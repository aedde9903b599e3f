"""``medseg demo``: the embedded default run, one module per stage.

:func:`run_demo` (in :mod:`medseg.demo.run`) runs the stages in order (:data:`STAGES`): ``data``
(synthetic CT phantoms and a DICOM series), ``segmentation``, ``detection``, ``classification`` and
``explain``, then writes one review report.
"""

from __future__ import annotations

from medseg.demo.run import STAGES, run_demo

__all__ = ["STAGES", "run_demo"]
