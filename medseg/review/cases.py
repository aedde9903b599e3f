"""The record every task hands to the review report: one :class:`ReviewCase` per case.

Tasks build these (segmentation, detection, classification, Grad-CAM) and
:func:`medseg.review.report.write_report` turns a list of them into ``report.html``. Paths are
relative to the run folder (the report is self-contained inside it). Texts here must never hold a
patient's name or ID: ``case_id`` is medseg's own (file stem or an index), not a DICOM value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ReviewCase"]


@dataclass
class ReviewCase:
    """One row of the review report.

    Attributes
    ----------
    case_id : medseg's identifier of the case (never a patient name / ID).
    task : "segmentation", "detection", "classification" or "explain".
    status : "ok" or "skipped" (then ``error`` says why).
    thumbnail : PNG path (relative to the run folder) shown in the row.
    overlays : full-size overlay PNG paths (linked from the row).
    cam : Grad-CAM heat-map PNG path, for classifiers.
    volumes_ml : per-class volume in millilitres (segmentation).
    counts : per-class object counts (detection), e.g. {"nucleus": 132, "mitosis": 3}.
    density_per_mm2 : per-class counts per mm² (detection).
    prediction, probability : predicted class and its probability (classification).
    metrics : metrics against a reference when one exists (Dice, F1, ...).
    uncertainty : a per-case uncertainty score (higher = less certain).
    needs_review : flag raised when uncertainty passes the run's calibrated threshold.
    outputs : other output files (NIfTI, DICOM SEG, CSV, GeoJSON) by kind.
    split : the datalist list the case came from (``training``, ``validation``, ``test``), or None.
    ood : why the case looks unlike the model's training data (empty: it does not); such cases
        are listed first.
    planes : three orthogonal views (axial, coronal, sagittal PNG paths) through the structure.
    stack : JSON file of pre-rendered slices (:func:`medseg.review.stack.write_stack`) for the
        report's slice viewer.
    """

    case_id: str
    task: str
    status: str = "ok"
    error: str | None = None
    thumbnail: str | None = None
    overlays: list[str] = field(default_factory=list)
    cam: str | None = None
    volumes_ml: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    density_per_mm2: dict[str, float] = field(default_factory=dict)
    prediction: str | None = None
    probability: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    uncertainty: float | None = None
    needs_review: bool = False
    outputs: dict[str, str] = field(default_factory=dict)
    split: str | None = None
    ood: list[str] = field(default_factory=list)
    planes: list[str] = field(default_factory=list)
    stack: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
