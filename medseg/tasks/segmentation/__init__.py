"""Segmentation task: train a U-Net / FCN, segment new studies in their source geometry, evaluate.

Entry points (used by the CLI and the pipelines; the demo stage is :mod:`medseg.demo.segmentation`):

- :func:`train` (``medseg train CONFIG``): fingerprint + plan, cached MONAI datasets, DiceCE,
  sliding-window validation on whole volumes, best/last checkpoints, exact resume, extension
  past the planned epochs (``--resume --set train.epochs=N``).
- :func:`segment` (``medseg segment --model RUN INPUT... --out DIR [--split ...]``): NIfTI files,
  DICOM series folders or a datalist (its ``test`` list by default); writes uint8 label maps (and
  optional probabilities) whose affine equals the input's, DICOM SEG for DICOM inputs, a table with
  volumes, uncertainty and a ``needs_review`` flag, and ``report.html``. A bad case is reported and
  skipped; the others finish.
- :func:`evaluate` (``medseg evaluate --pred DIR --ref DIR``): Dice, HD95 and surface Dice per
  class and case (MONAI metrics), CSV + JSON.

Modules, one job each: :mod:`~medseg.tasks.segmentation.files` (read / write),
:mod:`~medseg.tasks.segmentation.data` (datalists, datasets), :mod:`~medseg.tasks.segmentation.train`,
:mod:`~medseg.tasks.segmentation.predict`, :mod:`~medseg.tasks.segmentation.evaluate`.
"""

from __future__ import annotations

from medseg.tasks.segmentation.evaluate import dice_per_class, evaluate
from medseg.tasks.segmentation.files import read_image, write_nifti, write_probabilities
from medseg.tasks.segmentation.predict import predict_case, segment, segment_cases
from medseg.tasks.segmentation.train import train

__all__ = [
    "train",
    "segment",
    "segment_cases",
    "predict_case",
    "evaluate",
    "dice_per_class",
    "read_image",
    "write_nifti",
    "write_probabilities",
]
