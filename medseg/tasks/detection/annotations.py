"""Point annotations of the detection task: points CSVs, instance-mask centroids, annotated cases.

Conventions: points ``(N, 2)`` float64 as ``(x, y)`` pixels (x = column, y = row, pixel centres
at integer coordinates); class ids index ``class_names``.

Input rules (bad input)
-----------------------
* an image without rows in the points CSV is valid: it has no objects (all negatives);
* CSV rows naming an image that is not in the data set are an InputError (typo / mismatched names);
  names match by file name, or by stem when the CSV omits the extension;
* points outside the image (beyond half a pixel) are an InputError naming the CSV and the image;
* a class not in ``class_names`` or non-numeric / non-finite ``x, y, score`` are errors naming the
  CSV line.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from skimage.measure import regionprops

from medseg.errors import FileFormatError, InputError, LabelMismatchError, MissingFileError
from medseg.io import read_image_array
from medseg.transforms.microscopy import read_microscopy

__all__ = [
    "Case",
    "PointSet",
    "read_points_csv",
    "read_points_table",
    "centroids_from_mask",
    "read_instance_mask",
    "load_cases",
    "check_annotation_names",
    "split_block",
]

log = logging.getLogger("medseg.detection")

#: one image's points as read from a CSV: (points (N, 2) (x, y), classes (N,), scores (N,))
PointSet = tuple[np.ndarray, Any, np.ndarray]


def _read_rows(path: Path) -> list[tuple[str, float, float, str, float]]:
    """The rows ``(image, x, y, class, score)`` of a points CSV (``image`` and ``class`` may be empty; score 1)."""
    if not path.is_file():
        raise MissingFileError("points CSV not found", path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise FileFormatError("not a text CSV file", path) from None
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    if not {"x", "y"} <= set(cols):
        raise FileFormatError(
            f"points CSV needs columns image,x,y[,class,score]; found {', '.join(cols) or 'none'}", path
        )
    reader.fieldnames = cols
    rows = []
    for i, row in enumerate(reader, start=2):
        try:
            x, y = float(row["x"]), float(row["y"])
            s = float(row["score"]) if row.get("score") not in (None, "") else 1.0
        except (TypeError, ValueError):
            raise FileFormatError(
                f"line {i}: x/y/score are not numbers ({row.get('x')!r}, {row.get('y')!r}, {row.get('score')!r})",
                path,
            ) from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise FileFormatError(f"line {i}: x/y are not finite", path)
        rows.append(((row.get("image") or "").strip(), x, y, (row.get("class") or "").strip(), s))
    return rows


def read_points_csv(path: str | Path, class_names: Sequence[str] = ("nucleus", "mitosis")) -> dict[str, PointSet]:
    """Read point annotations ``image,x,y[,class]`` with classes checked against ``class_names``.

    Returns
    -------
    ``{image_name: (points (N, 2) float (x, y), class_ids (N,) int64, scores (N,) float)}``; a
    ``score`` column (detections CSV) is read when present, else scores are 1. A row without a
    class gets ``class_names[0]``; a class may also be given by its index. Other classes are an
    InputError naming the line.
    """
    path = Path(path)
    names = list(class_names)
    acc: dict[str, list[tuple[float, float, int, float]]] = {}
    for i, (img, x, y, c, s) in enumerate(_read_rows(path), start=2):
        if not c:
            cid = 0
        elif c in names:
            cid = names.index(c)
        elif c.isdigit() and int(c) < len(names):
            cid = int(c)
        else:
            raise InputError(f"line {i}: unknown class {c!r}; allowed: {', '.join(names)} (config class_names)", path)
        acc.setdefault(img, []).append((x, y, cid, s))
    out: dict[str, PointSet] = {}
    for img, rows in acc.items():
        a = np.asarray(rows, np.float64)
        out[img] = (a[:, :2].copy(), a[:, 2].astype(np.int64), a[:, 3].copy())
    return out


def read_points_table(path: str | Path) -> dict[str, PointSet]:
    """Read a points or detections CSV ``[image,]x,y[,score,class]`` keeping any class names as strings.

    Returns
    -------
    ``{image_name: (points (N, 2) float (x, y), class names list[str], scores (N,) float)}``; rows
    without an ``image`` column are under ``""`` (a per-image detections CSV of ``medseg detect``).
    """
    acc: dict[str, list[tuple[float, float, str, float]]] = {}
    for img, x, y, c, s in _read_rows(Path(path)):
        acc.setdefault(img, []).append((x, y, c, s))
    return {
        k: (
            np.asarray([r[:2] for r in rows], float).reshape(-1, 2),
            [r[2] for r in rows],
            np.asarray([r[3] for r in rows], float),
        )
        for k, rows in acc.items()
    }


def centroids_from_mask(mask: np.ndarray) -> np.ndarray:
    """Object centres (N, 2) as (x, y) of an instance mask (H, W) int (0 = background), by label order."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] in (3, 4):
        raise InputError("an instance mask must be a single-channel integer image, got RGB")
    pts = [(rp.centroid[1], rp.centroid[0]) for rp in regionprops(m.astype(np.int64))]
    return np.asarray(pts, np.float64).reshape(-1, 2)


def read_instance_mask(path: str | Path) -> np.ndarray:
    """An instance mask file (PNG/TIFF, integer ids, 0 = background) as stored: (H, W), values kept."""
    return read_image_array(path)


@dataclass
class Case:
    """One annotated (or not) image.

    ``image`` (H, W, 3) uint8 RGB; ``points`` (N, 2) (x, y) pixels; ``classes`` (N,) class ids.
    """

    name: str
    path: Path
    image: np.ndarray
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def points_of(self, class_ids: Sequence[int]) -> np.ndarray:
        """The points (M, 2) whose class id is in ``class_ids``."""
        return self.points[np.isin(self.classes, class_ids)] if len(self.points) else self.points


def _keys(path: Path) -> tuple[str, str, str]:
    """The names a CSV may use for an image: file name, stem, full path."""
    return (path.name, path.stem, str(path))


def _lookup(ann: Mapping[str, PointSet], path: Path) -> PointSet | None:
    for key in _keys(path):
        if key in ann:
            return ann[key]
    return None


def _check_points_inside(points: np.ndarray, shape: tuple[int, ...], image: Path, source: Path | str) -> None:
    if len(points) == 0:
        return
    H, W = shape[:2]
    bad = (points[:, 0] < -0.5) | (points[:, 0] > W - 0.5) | (points[:, 1] < -0.5) | (points[:, 1] > H - 0.5)
    if bad.any():
        x, y = points[np.argmax(bad)]
        raise InputError(
            f"{int(bad.sum())} point(s) of image {image.name} lie outside the image "
            f"({W}x{H} px), e.g. x={x:.1f}, y={y:.1f}; fix the annotations (x = column, y = row)",
            source,
        )


def load_cases(
    entries: Sequence[Mapping[str, Any]],
    annotations: Path | None,
    class_names: Sequence[str],
    source: Path | str = "<datalist>",
    modality: str = "he",
) -> list[Case]:
    """Read images (:func:`medseg.transforms.microscopy.read_microscopy` under ``modality``, as RGB) and their points.

    Points come from the CSV ``annotations``, else from the entries' ``label`` instance masks
    (centroids). ``entries`` are datalist dicts with absolute ``image`` (and optionally ``label``)
    paths. Raises InputError on CSV names matching no image, and on points outside their image.
    """
    ann = read_points_csv(annotations, class_names) if annotations is not None else None
    used: set[str] = set()
    cases = []
    for e in entries:
        p = Path(e["image"])
        img = read_microscopy(p, modality)
        pts, cls = np.zeros((0, 2)), np.zeros(0, np.int64)
        if ann is not None and annotations is not None:
            hit = _lookup(ann, p)
            if hit is not None:
                pts, cls = hit[0], hit[1]
                used.update(k for k in _keys(p) if k in ann)
            else:
                log.info("%s: no rows in the points CSV: treated as an image without objects", p.name)
            _check_points_inside(pts, img.shape, p, annotations)
        elif e.get("label"):
            lp = Path(e["label"])
            mask = read_instance_mask(lp)
            if mask.shape[:2] != img.shape[:2]:
                raise LabelMismatchError(f"instance mask {mask.shape[:2]} does not match image {img.shape[:2]}", lp)
            pts = centroids_from_mask(mask)
            cls = np.zeros(len(pts), np.int64)
        cases.append(Case(p.stem, p, img, pts, cls))
    if ann is not None and entries:
        unknown = sorted(k for k in ann if k not in used)
        # names of other splits in the same CSV are fine; only complain when none matched at all
        # (names matching nothing anywhere: check_annotation_names, with all splits)
        if unknown and not used:
            raise InputError(
                f"no image of the data set has rows in the points CSV; CSV names e.g. "
                f"{unknown[:3]} vs images e.g. {[Path(e['image']).name for e in entries[:3]]}: "
                "mismatched image/annotation names",
                annotations,
            )
    return cases


def check_annotation_names(annotations: Path, all_images: Sequence[str | Path], class_names: Sequence[str]) -> None:
    """InputError if the CSV names images that are not in the data set (all splits together)."""
    ann = read_points_csv(annotations, class_names)
    known = {k for p in all_images for k in _keys(Path(p))}
    unknown = sorted(k for k in ann if k not in known)
    if unknown:
        raise InputError(
            f"{len(unknown)} image name(s) in the points CSV match no image of the data set, "
            f"e.g. {unknown[:3]}: mismatched image/annotation names (names match by file name "
            "or stem)",
            annotations,
        )


def split_block(case: Case, fraction: float = 0.2) -> tuple[Case, Case]:
    """(training, validation) parts of one image: the last ``fraction`` of its longer axis validates.

    Points are kept with the part they lie in (validation points shifted to its own pixel grid), so
    a single annotated image gives a validation region the training never sees.
    """
    H, W = case.image.shape[:2]
    along_x = W >= H
    n = W if along_x else H
    cut = min(max(int(round(n * (1.0 - fraction))), 1), n - 1)
    coord = case.points[:, 0 if along_x else 1] if len(case.points) else np.zeros(0)
    first = coord < cut - 0.5
    img_a = case.image[:, :cut] if along_x else case.image[:cut]
    img_b = case.image[:, cut:] if along_x else case.image[cut:]
    pts_b = case.points[~first].copy() if len(case.points) else case.points
    if len(pts_b):
        pts_b[:, 0 if along_x else 1] -= cut
    a = Case(case.name, case.path, img_a, case.points[first] if len(case.points) else case.points, case.classes[first])
    b = Case(f"{case.name}_val_block", case.path, img_b, pts_b, case.classes[~first])
    return a, b
