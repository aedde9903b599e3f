"""Point-detection metrics: one-to-one matching within a radius, P/R/F1, AP, threshold choice.

MONAI's detection metrics score boxes (IoU); cell and mitosis detection is scored on points
within a distance, as in the MICCAI/ICPR mitosis challenges. Matching here is a maximum-cardinality
one-to-one assignment between predicted and reference points whose distance is at most
``radius``, with the smallest total distance among those (Hungarian algorithm:
:func:`scipy.optimize.linear_sum_assignment`): one assignment for an image's points, and beyond
``DENSE_MAX_PAIRS`` point pairs one per connected group of points within reach of each other (a
KD-tree finds them), so a whole slide's hundreds of thousands of nuclei match in seconds and little
memory. A prediction matches at most one reference, so duplicates count as false positives.

Conventions
-----------
* Points are ``(N, 2)`` arrays of ``(x, y)`` in pixels (or any unit, as long as ``radius`` uses it).
  Use :func:`radius_in_pixels` to turn a radius in µm into pixels.
* A distance equal to the radius is a match (``d <= radius``).
* Empty sets: no predictions and no references is a perfect result (precision = recall = F1 = 1);
  predictions without references give precision 0 (recall 1 by convention, F1 0); references
  without predictions give recall 0 (precision 1 by convention, F1 0).
* Pooled scores sum TP/FP/FN over images before computing P/R/F1 (micro average).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

__all__ = [
    "MatchResult",
    "match_points",
    "detection_scores",
    "pooled_scores",
    "precision_recall_curve",
    "average_precision",
    "select_threshold",
    "radius_in_pixels",
]


def _as_points(p, name: str) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 2), np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must be an (N, 2) array of (x, y) points, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite coordinates")
    return a


def radius_in_pixels(radius_um: float, pixel_size_um: float) -> float:
    """A distance in micrometres as pixels (``radius_um / pixel_size_um``)."""
    if pixel_size_um <= 0:
        raise ValueError("pixel_size_um must be > 0")
    return float(radius_um) / float(pixel_size_um)


@dataclass
class MatchResult:
    """The matching of one image.

    Attributes
    ----------
    pairs : (M, 2) int indices ``(pred_index, ref_index)`` of matched pairs.
    distances : (M,) distances of the matched pairs.
    unmatched_pred : indices of false-positive predictions.
    unmatched_ref : indices of missed references (false negatives).
    """

    pairs: np.ndarray
    distances: np.ndarray
    unmatched_pred: np.ndarray
    unmatched_ref: np.ndarray
    n_pred: int = 0
    n_ref: int = 0
    scores: dict = field(default_factory=dict)

    @property
    def tp(self) -> int:
        return int(len(self.pairs))

    @property
    def fp(self) -> int:
        return int(self.n_pred - len(self.pairs))

    @property
    def fn(self) -> int:
        return int(self.n_ref - len(self.pairs))


def match_points(pred, ref, radius: float) -> MatchResult:
    """One-to-one matching of predicted to reference points within ``radius`` (Hungarian).

    Parameters
    ----------
    pred : (P, 2) predicted (x, y).
    ref : (R, 2) reference (x, y).
    radius : maximum matching distance (same unit as the points), > 0.

    Returns
    -------
    MatchResult: the maximum number of pairs with ``distance <= radius``, and among such
    matchings the one with the smallest total distance.
    """
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    p, r = _as_points(pred, "pred"), _as_points(ref, "ref")
    if len(p) == 0 or len(r) == 0:
        return MatchResult(np.zeros((0, 2), int), np.zeros(0), np.arange(len(p)), np.arange(len(r)), len(p), len(r))
    rows, cols, dist = _admissible_matching(p, r, float(radius))
    pairs = np.stack([rows, cols], axis=1).astype(int) if len(rows) else np.zeros((0, 2), int)
    return MatchResult(
        pairs=pairs,
        distances=dist,
        unmatched_pred=np.setdiff1d(np.arange(len(p)), rows),
        unmatched_ref=np.setdiff1d(np.arange(len(r)), cols),
        n_pred=len(p),
        n_ref=len(r),
    )


#: up to this many point pairs (P x R) one dense assignment is solved (fast for an image's points);
#: beyond it, one per connected component (a slide's points: the dense matrix would not fit in memory)
DENSE_MAX_PAIRS = 4_000_000


def _admissible_matching(
    p: np.ndarray, r: np.ndarray, radius: float, dense_max_pairs: int = DENSE_MAX_PAIRS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred rows, ref cols, distances) of the matching :func:`match_points` describes.

    Points can only pair within ``radius``, so the problem splits into the connected components of the
    graph of admissible pairs and each can be solved on its own dense matrix with the same optimum. Up to
    ``dense_max_pairs`` pairs the whole problem is one dense matrix (a KD-tree and a loop over components
    cost more than they save there); beyond, the components (found with a KD-tree) are solved one by one,
    in memory that grows with the points, not with their product (a 20k slide's 134k x 193k points were a
    193 GB distance matrix). Both give the same number of pairs and total distance (tested).
    """
    if len(p) * len(r) <= dense_max_pairs:
        return _assign(p, r, np.arange(len(p)), np.arange(len(r)), radius)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    near = cKDTree(p).query_ball_tree(cKDTree(r), r=radius * (1 + 1e-9))  # a hair wide; exact test below
    ii = np.repeat(np.arange(len(p)), [len(n) for n in near])
    jj = np.fromiter((j for n in near for j in n), int, count=len(ii))
    keep = _pair_distances(p[ii], r[jj]) <= radius
    ii, jj = ii[keep], jj[keep]
    empty = np.zeros(0, int)
    if not len(ii):
        return empty, empty, np.zeros(0)
    n = len(p) + len(r)
    graph = coo_matrix((np.ones(len(ii)), (ii, len(p) + jj)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    order = np.argsort(comp, kind="stable")
    bounds = np.flatnonzero(np.diff(comp[order])) + 1
    parts = []
    for members in np.split(order, bounds):
        ip, ir = members[members < len(p)], members[members >= len(p)] - len(p)
        if len(ip) and len(ir):
            parts.append(_assign(p, r, ip, ir, radius))
    rows, cols = np.concatenate([a for a, _, _ in parts]), np.concatenate([b for _, b, _ in parts])
    o = np.argsort(rows, kind="stable")
    return rows[o], cols[o], np.concatenate([d for _, _, d in parts])[o]


def _assign(
    p: np.ndarray, r: np.ndarray, ip: np.ndarray, ir: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hungarian assignment of the points ``p[ip]`` to ``r[ir]``: (rows, cols, distances) within ``radius``."""
    d = cdist(p[ip], r[ir])
    ok = d <= radius
    # Pairs beyond the radius get a cost larger than any sum of admissible distances, so the
    # assignment first maximises the number of admissible pairs, then minimises their distance.
    big = radius * (min(len(ip), len(ir)) + 1) + 1.0
    rows, cols = linear_sum_assignment(np.where(ok, d, big))
    sel = ok[rows, cols]
    rows, cols = rows[sel], cols[sel]
    return ip[rows], ir[cols], d[rows, cols]


def _pair_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances of row-aligned point pairs ``a[k]``-``b[k]`` (the same values as ``cdist``)."""
    return np.sqrt(((a - b) ** 2).sum(axis=1))


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp > 0 else 1.0
    recall = tp / (tp + fn) if tp + fn > 0 else 1.0
    if tp + fp + fn == 0:
        f1 = 1.0
    else:
        f1 = 2 * tp / (2 * tp + fp + fn)
    return {
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def detection_scores(pred, ref, radius: float) -> dict[str, float]:
    """Precision, recall, F1 (and TP/FP/FN, mean matched distance) of one image.

    ``F1 = 2 TP / (2 TP + FP + FN)``; see the module docstring for empty sets.
    """
    m = match_points(pred, ref, radius)
    out = _prf(m.tp, m.fp, m.fn)
    out["mean_distance"] = float(m.distances.mean()) if m.tp else float("nan")
    return out


def pooled_scores(per_image: Sequence[dict[str, float]]) -> dict[str, float]:
    """Micro-averaged P/R/F1 from per-image results of :func:`detection_scores` (sums TP/FP/FN)."""
    tp = sum(int(s["tp"]) for s in per_image)
    fp = sum(int(s["fp"]) for s in per_image)
    fn = sum(int(s["fn"]) for s in per_image)
    out = _prf(tp, fp, fn)
    out["n_images"] = len(per_image)
    return out


def _thresholds(scores: np.ndarray, max_thresholds: int) -> np.ndarray:
    u = np.unique(scores)
    if len(u) > max_thresholds:
        u = np.unique(np.quantile(scores, np.linspace(0, 1, max_thresholds)))
    return u[::-1]  # high to low


def precision_recall_curve(
    preds: Sequence[tuple],
    refs: Sequence,
    radius: float,
    thresholds: Sequence[float] | None = None,
    max_thresholds: int = 200,
) -> dict:
    """Pooled precision / recall / F1 at each score threshold.

    Parameters
    ----------
    preds : per image ``(points (P, 2), scores (P,))``.
    refs : per image reference points ``(R, 2)``.
    radius : matching radius.
    thresholds : score thresholds (a detection is kept if ``score >= t``); default: the distinct
        scores (at most ``max_thresholds`` quantiles), high to low.

    Returns
    -------
    dict of arrays ``thresholds, precision, recall, f1, tp, fp, fn`` (one entry per threshold).
    """
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} prediction sets but {len(refs)} reference sets")
    pts = [_as_points(p, "pred") for p, _ in preds]
    scs = [np.asarray(s, np.float64).reshape(-1) for _, s in preds]
    for p, s in zip(pts, scs):
        if len(p) != len(s):
            raise ValueError("each prediction set needs one score per point")
    rfs = [_as_points(r, "ref") for r in refs]
    allsc = np.concatenate(scs) if scs else np.zeros(0)
    if thresholds is None:
        thr = _thresholds(allsc, max_thresholds) if len(allsc) else np.array([np.inf])
    else:
        thr = np.sort(np.asarray(thresholds, np.float64))[::-1]
    # precompute distance matrices once; each threshold only selects rows
    out: dict[str, list[float]] = {k: [] for k in ("precision", "recall", "f1", "tp", "fp", "fn")}
    for t in thr:
        tp = fp = fn = 0
        for p, s, r in zip(pts, scs, rfs):
            m = match_points(p[s >= t], r, radius)
            tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
        res = _prf(tp, fp, fn)
        for k in out:
            out[k].append(res[k])
    result = {k: np.asarray(v) for k, v in out.items()}
    result["thresholds"] = thr
    return result


def average_precision(preds: Sequence[tuple], refs: Sequence, radius: float, max_thresholds: int = 200) -> float:
    """Average precision over score thresholds (area under the interpolated P-R curve, VOC style).

    Precision is made monotone (the best precision at any higher recall) and integrated over
    recall from 0 to the highest recall reached. No references at all: 1.0 if there are no
    predictions either, else 0.0.
    """
    n_ref = sum(len(_as_points(r, "ref")) for r in refs)
    n_pred = sum(len(_as_points(p, "pred")) for p, _ in preds)
    if n_ref == 0:
        return 1.0 if n_pred == 0 else 0.0
    if n_pred == 0:
        return 0.0
    c = precision_recall_curve(preds, refs, radius, max_thresholds=max_thresholds)
    rec = np.concatenate([[0.0], c["recall"]])
    prec = np.concatenate([[c["precision"][0] if len(c["precision"]) else 1.0], c["precision"]])
    order = np.argsort(rec, kind="stable")
    rec, prec = rec[order], prec[order]
    prec = np.maximum.accumulate(prec[::-1])[::-1]  # interpolated precision
    return float(np.sum(np.diff(rec) * prec[1:]))


def select_threshold(
    preds: Sequence[tuple], refs: Sequence, radius: float, thresholds: Sequence[float] | None = None
) -> tuple[float, float]:
    """The score threshold with the best pooled F1 on a validation set.

    Returns
    -------
    (threshold, f1). Ties go to the higher threshold (fewer detections). With no predictions at
    all, returns ``(0.5, F1 of predicting nothing)``.
    """
    n_pred = sum(len(_as_points(p, "pred")) for p, _ in preds)
    if n_pred == 0 and thresholds is None:
        n_ref = sum(len(_as_points(r, "ref")) for r in refs)
        return 0.5, 1.0 if n_ref == 0 else 0.0
    c = precision_recall_curve(preds, refs, radius, thresholds=thresholds)
    i = int(np.argmax(c["f1"]))  # first maximum = highest threshold among ties
    return float(c["thresholds"][i]), float(c["f1"][i])
