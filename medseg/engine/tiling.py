"""Tiled inference on large 2D images and peak finding on score maps (local maxima, NMS).

The companion of :mod:`medseg.engine.inference` (sliding-window segmentation) for point
detection: a score function is applied tile by tile with a context margin, so memory holds one
tile's score map, never a full-size one, and detections are the local maxima of each map.

Conventions: images ``(H, W[, C])`` (row = y, column = x); points ``(N, 2)`` as ``(x, y)`` pixels,
pixel centres at integer coordinates; distances in pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.feature import peak_local_max

__all__ = ["find_peaks", "suppress_close", "detect_tiled", "ScoreFn"]

#: (h, w[, C]) image window -> (h, w) float score map
ScoreFn = Callable[[np.ndarray], np.ndarray]


def find_peaks(
    score: np.ndarray, min_distance_px: float, threshold: float, sigma_px: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Detections on a score map: local maxima ``>= threshold`` at least ``min_distance_px`` apart.

    Parameters
    ----------
    score : (H, W) float score map.
    min_distance_px : NMS distance in pixels (rounded, at least 1; :func:`skimage.feature.peak_local_max`).
    threshold : lowest score of a detection.
    sigma_px : Gaussian smoothing (pixels) of the map before peak finding (0 = none).

    Returns
    -------
    points (N, 2) float64 (x, y) and scores (N,) float64 (of the smoothed map), by decreasing score.
    """
    s = ndi.gaussian_filter(score.astype(np.float32), sigma_px) if sigma_px > 0 else score
    md = max(1, int(round(min_distance_px)))
    ij = peak_local_max(s, min_distance=md, threshold_abs=threshold, exclude_border=False)
    if len(ij) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    sc = s[ij[:, 0], ij[:, 1]].astype(np.float64)
    order = np.argsort(-sc, kind="stable")
    return ij[order][:, ::-1].astype(np.float64), sc[order]


def suppress_close(points: np.ndarray, scores: np.ndarray, min_distance_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS: of any two points closer than ``min_distance_px`` keep the earlier one.

    ``points`` (N, 2) and ``scores`` (N,) must be sorted by decreasing score, so the earlier point of
    a pair has the higher (or equal) score. Returns the kept points and scores, order preserved.
    """
    if len(points) < 2:
        return points, scores
    keep = np.ones(len(points), bool)
    for i, j in sorted(cKDTree(points).query_pairs(r=max(1.0, float(min_distance_px)) - 1e-6)):
        if keep[i] and keep[j]:
            keep[j] = False  # j > i has the lower (or equal) score
    return points[keep], scores[keep]


def detect_tiled(
    score_fn: ScoreFn,
    image: np.ndarray,
    *,
    tile: int = 512,
    margin: int = 32,
    min_distance_px: float = 6.0,
    threshold: float = 0.5,
    sigma_px: float = 0.0,
    skip: Callable[[int, int, int, int], bool] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Detect on a large image tile by tile, with bounded memory.

    The image is split into non-overlapping cores of ``tile`` x ``tile`` px. Each core is scored with
    ``margin`` px of real image context on every side (the overlap), peaks are found on that
    extended window (:func:`find_peaks`), and only the peaks inside the core are kept. Every pixel
    belongs to exactly one core, so an object on a tile border is neither lost nor doubled, provided
    ``margin`` covers the NMS distance plus the network's context. Memory holds one extended tile
    and its score map, never a full-size map (``image`` may be a read-only memory map).

    Parameters
    ----------
    score_fn : (h, w, C) window -> (h, w) float score map.
    image : (H, W, C) array (e.g. uint8 RGB), or a memory map of one.
    tile, margin : core size and context margin in pixels.
    min_distance_px, threshold, sigma_px : peak finding (see :func:`find_peaks`).
    skip : ``skip(y0, x0, y1, x1) -> True`` leaves that core out (e.g. no tissue under it).
    on_tile : ``on_tile(done, total)`` after each core (progress).

    Returns
    -------
    points (N, 2) (x, y) and scores (N,), sorted by decreasing score.
    """
    H, W = image.shape[:2]
    pts, scs = [], []
    total = len(range(0, H, tile)) * len(range(0, W, tile))
    done = 0
    for y0 in range(0, H, tile):
        for x0 in range(0, W, tile):
            y1, x1 = min(y0 + tile, H), min(x0 + tile, W)
            done += 1
            if skip is not None and skip(y0, x0, y1, x1):
                if on_tile is not None:
                    on_tile(done, total)
                continue
            ey0, ex0 = max(0, y0 - margin), max(0, x0 - margin)
            ey1, ex1 = min(H, y1 + margin), min(W, x1 + margin)
            smap = score_fn(image[ey0:ey1, ex0:ex1])
            p, s = find_peaks(smap, min_distance_px, threshold, sigma_px)
            if len(p):
                p = p + [ex0, ey0]
                inside = (p[:, 0] >= x0) & (p[:, 0] < x1) & (p[:, 1] >= y0) & (p[:, 1] < y1)
                pts.append(p[inside])
                scs.append(s[inside])
            if on_tile is not None:
                on_tile(done, total)
    if not pts:
        return np.zeros((0, 2)), np.zeros(0)
    p, s = np.concatenate(pts), np.concatenate(scs)
    order = np.argsort(-s, kind="stable")
    p, s = p[order], s[order]
    if len(pts) > 1:
        # Neighbouring tiles see slightly different context (network padding), so one object on a
        # border could peak once in each core a pixel apart: keep the higher score of any pair
        # closer than min_distance (greedy NMS across tiles; within a tile peak_local_max did it).
        p, s = suppress_close(p, s, min_distance_px)
    return p, s
