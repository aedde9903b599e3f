"""Cell (nucleus) and mitosis detection in 2D microscopy / histology images.

Two methods, chosen by ``method`` in :class:`medseg.config.DetectionConfig`:

``proximity`` (Xie et al., MICCAI 2015, structured regression)
    A U-Net regresses a proximity map that peaks at cell centres,
    ``M = (exp(alpha (1 - d / r)) - 1) / (exp(alpha) - 1)`` for ``d < r`` (``d``: distance to the
    nearest annotated centre), 0 elsewhere; trained from point annotations only with a weighted
    squared error. Detections: local maxima above a threshold at least ``min_distance`` apart
    (:func:`skimage.feature.peak_local_max`).
``mitosis`` (Ciresan et al., MICCAI 2013)
    A CNN classifies patches centred on a pixel (mitosis vs not), trained on class-balanced
    patches: positives around mitoses, hard negatives centred on other (non-mitotic) nuclei, and
    random background. Applied densely to whole images (one pass, exact equivalent of sliding the
    patch classifier), the probability map is smoothed and non-maximum suppressed.

Both: HED stain jitter (scikit-image ``rgb2hed``/``hed2rgb``), flips and 90° rotations; tiled
inference with bounded memory (:func:`medseg.engine.tiling.detect_tiled`); outputs per image:
detections CSV (x, y, score, class), QuPath GeoJSON, overlay PNG, counts per image and per mm².

Conventions: images ``(H, W, 3)`` uint8 RGB (read by :func:`medseg.io.read_image_uint8`, gray
replicated to RGB); points ``(N, 2)`` as ``(x, y)`` pixels, x = column, y = row, pixel centres at
integer coordinates. Distances in the config are micrometres.

Modules: :mod:`~.annotations` (points CSV, instance masks, cases), :mod:`~.data` (images,
datalists, synthetic tiles), :mod:`~.params` (config in pixels), :mod:`~.targets` (proximity maps,
augmentation), :mod:`~.sampling` (training batches), :mod:`~.scoring` (score maps), :mod:`~.train`,
:mod:`~.predict` (``detect``), :mod:`~.outputs` (CSV, GeoJSON, overlays), :mod:`~.evaluate`.
The demo stage lives in :mod:`medseg.demo.detection`.
"""

from __future__ import annotations

from medseg.engine.tiling import detect_tiled, find_peaks
from medseg.tasks.detection.annotations import (
    Case,
    centroids_from_mask,
    check_annotation_names,
    load_cases,
    read_points_csv,
    read_points_table,
)
from medseg.tasks.detection.data import datalist_splits, load_detection_data, open_image
from medseg.tasks.detection.evaluate import evaluate
from medseg.tasks.detection.outputs import class_values, overlay_markers, to_geojson, write_detections_csv
from medseg.tasks.detection.params import DetectionParams
from medseg.tasks.detection.predict import detect
from medseg.tasks.detection.scoring import score_map_fn
from medseg.tasks.detection.targets import proximity_target, stain_jitter
from medseg.tasks.detection.train import train

__all__ = [
    "Case",
    "DetectionParams",
    "open_image",
    "read_points_csv",
    "read_points_table",
    "centroids_from_mask",
    "load_cases",
    "check_annotation_names",
    "datalist_splits",
    "load_detection_data",
    "proximity_target",
    "stain_jitter",
    "find_peaks",
    "detect_tiled",
    "score_map_fn",
    "train",
    "detect",
    "evaluate",
    "to_geojson",
    "class_values",
    "overlay_markers",
    "write_detections_csv",
]
