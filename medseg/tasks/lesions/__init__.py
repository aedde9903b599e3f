"""Lesions: instances of a label map as a per-lesion table (``medseg lesions``, ``medseg segment --lesions``).

:mod:`.instances`: read a label map (medseg's own or the user's, any format :func:`medseg.io.load`
reads), split the chosen classes into lesions (:func:`medseg.metrics.lesions.find_lesions`), write
``lesions/<case>_lesions.csv`` per case and ``lesions.csv`` for the cohort.
:mod:`.classify`: classify every lesion of segmented scans with a lesion classifier (a ``volume:``
run): probabilities, operating-point calls, views, 3D Grad-CAM, per-lesion DICOM SEG, report.
"""

from medseg.tasks.lesions.classify import classify_lesions, lesion_cases
from medseg.tasks.lesions.instances import (
    case_lesions,
    find_lesions_in_labels,
    resolve_lesion_classes,
    write_cohort_lesions,
)

__all__ = [
    "classify_lesions",
    "lesion_cases",
    "case_lesions",
    "find_lesions_in_labels",
    "resolve_lesion_classes",
    "write_cohort_lesions",
]
