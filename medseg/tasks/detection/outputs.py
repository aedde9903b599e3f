"""Outputs of the detection task: detections CSV, QuPath GeoJSON, marker overlays.

Colours come from :mod:`medseg.palette` through one mapping of class names to class values
(:func:`class_values`): the GeoJSON colour of a class is the colour its rings are drawn in by
:func:`medseg.review.overlay.markers_2d` (``class_color(value)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.palette import class_color
from medseg.review.overlay import markers_2d
from medseg.utils import atomic_write_csv

__all__ = ["MARKER_CLASSES", "class_values", "to_geojson", "write_detections_csv", "overlay_markers"]

#: class names with a fixed marker class value (value = position + 1): mitosis 1 (red), nucleus 2 (green)
MARKER_CLASSES: tuple[str, ...] = ("mitosis", "nucleus")


def class_values(classes: Sequence[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Class names -> palette class values, and the legend ``{value: name}``.

    :data:`MARKER_CLASSES` keep their values (mitosis 1, nucleus 2); other names present get
    3, 4, ... in sorted order.
    """
    fixed = {c: i + 1 for i, c in enumerate(MARKER_CLASSES)}
    extra = sorted(set(classes) - set(fixed))
    values = {**fixed, **{c: len(fixed) + 1 + i for i, c in enumerate(extra)}}
    return np.asarray([values[c] for c in classes], int), {v: c for c, v in values.items()}


def to_geojson(points: np.ndarray, classes: Sequence[str], scores: np.ndarray | None = None) -> dict[str, Any]:
    """QuPath-importable GeoJSON FeatureCollection of Point annotations.

    ``points`` (N, 2) (x, y) pixels; ``classes`` N class names; ``scores`` (N,) or None.
    QuPath's pixel coordinates have the origin at the top-left corner of the top-left pixel, so
    pixel centres (medseg's integer coordinates) are written at ``(x + 0.5, y + 0.5)``. Each
    feature has ``properties.classification = {"name", "color": [r, g, b]}`` (the colour of the
    class's markers on the overlay) and the score as a measurement.
    """
    names = [str(c) for c in classes]
    values, _ = class_values(names)
    feats = []
    for k, ((x, y), c) in enumerate(zip(np.asarray(points).reshape(-1, 2), names)):
        props: dict[str, Any] = {
            "objectType": "annotation",
            "classification": {"name": c, "color": list(class_color(int(values[k])))},
        }
        if scores is not None:
            props["measurements"] = {"score": round(float(scores[k]), 5)}
        # no "id": QuPath parses feature ids as UUIDs and creates its own when absent
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [round(float(x) + 0.5, 2), round(float(y) + 0.5, 2)]},
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def write_detections_csv(
    path: str | Path,
    points: np.ndarray,
    scores: np.ndarray,
    classes: Sequence[str],
    pixel_size_um: float | None = None,
) -> Path:
    """Write one image's detections as CSV ``x,y,score,class`` (x, y in pixels, 2 decimals), atomically.

    With ``pixel_size_um`` (a whole slide's level-0 pixel size) two more columns ``x_um,y_um`` give
    the position in µm from the slide's top-left corner.
    """
    if pixel_size_um:
        um = float(pixel_size_um)
        rows_um = (
            [f"{x:.2f}", f"{y:.2f}", f"{s:.5f}", c, f"{x * um:.2f}", f"{y * um:.2f}"]
            for (x, y), s, c in zip(points, scores, classes)
        )
        return atomic_write_csv(path, ["x", "y", "score", "class", "x_um", "y_um"], rows_um)
    rows = ([f"{x:.2f}", f"{y:.2f}", f"{s:.5f}", c] for (x, y), s, c in zip(points, scores, classes))
    return atomic_write_csv(path, ["x", "y", "score", "class"], rows)


def overlay_markers(
    image: np.ndarray, points: np.ndarray, classes: Sequence[str], scores: np.ndarray | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 overlay: one ring per detection (``medseg.review.overlay.markers_2d``), with a legend.

    ``image`` (H, W[, 3]); ``points`` (N, 2) (x, y); ``classes`` N class names; ring colours by
    :func:`class_values`.
    """
    vals, names = class_values(list(classes))
    return markers_2d(
        image,
        np.asarray(points, float).reshape(-1, 2),
        classes=vals,
        scores=scores,
        radius=6,
        class_names=names,
        show_scores=False,
    )
