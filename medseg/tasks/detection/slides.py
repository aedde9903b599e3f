"""Detection on whole slides: tissue mask, tiles over tissue only, stitched detections in level-0 pixels.

:func:`detect_slide` runs :func:`medseg.engine.tiling.detect_tiled` on level 0 of a slide
(:class:`medseg.io.wsi.SlideImage`, read region by region), leaving out the tiles without tissue
(:func:`medseg.io.wsi.tissue_mask`: Otsu on a low level). Every level-0 pixel belongs to one tile
core, and a detection is kept only in the core that holds it, so nothing on a tile border is counted
twice; memory holds one tile with its margin and its score map whatever the slide's size. Progress
is logged per tile (every 5 %) and shown on a bar when stderr is a terminal.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from medseg.engine.tiling import ScoreFn, detect_tiled
from medseg.io.wsi import SlideImage, tissue_mask

__all__ = ["SlideDetections", "detect_slide"]

log = logging.getLogger("medseg.detection")


@dataclass
class SlideDetections:
    """Detections of one slide.

    Attributes
    ----------
    points : (N, 2) (x, y) level-0 pixels; scores : (N,), by decreasing score.
    tissue_mm2 : area of the tissue mask in mm² (None without a pixel size).
    tissue_megapixels : level-0 megapixels under the mask.
    tiles, tiles_run : tile cores in the slide and those with tissue (run through the network).
    seconds : wall time of the detection.
    """

    points: np.ndarray
    scores: np.ndarray
    tissue_mm2: float | None
    tissue_megapixels: float
    tiles: int
    tiles_run: int
    seconds: float


def detect_slide(
    score_fn: ScoreFn,
    slide: SlideImage,
    *,
    tile: int = 512,
    margin: int = 32,
    min_distance_px: float = 6.0,
    threshold: float = 0.5,
    sigma_px: float = 0.0,
    pixel_size_um: float | None = None,
    progress: bool | None = None,
) -> SlideDetections:
    """Detect on the tissue of ``slide`` tile by tile (see the module docstring).

    ``pixel_size_um`` (default: the slide's ``mpp``) gives the tissue area in mm².
    """
    t0 = time.perf_counter()
    mask, scale = tissue_mask(slide)
    run = [0]

    def skip(y0: int, x0: int, y1: int, x1: int) -> bool:
        m = mask[int(y0 / scale) : math.ceil(y1 / scale), int(x0 / scale) : math.ceil(x1 / scale)]
        empty = not bool(m.any())
        run[0] += 0 if empty else 1
        return empty

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(desc=f"{slide.path.name} tiles", unit="tile", disable=not show, leave=False)
    step = [0]

    def on_tile(done: int, total: int) -> None:
        if bar.total is None:
            bar.total = total
        bar.update(1)
        if done * 20 // total > step[0] or done == total:  # a log line every 5 % of the tiles
            step[0] = done * 20 // total
            log.info("%s: tile %d of %d (%d with tissue so far)", slide.path.name, done, total, run[0])

    try:
        pts, sc = detect_tiled(
            score_fn,
            slide,  # type: ignore[arg-type]  # an array view read region by region
            tile=tile,
            margin=margin,
            min_distance_px=min_distance_px,
            threshold=threshold,
            sigma_px=sigma_px,
            skip=skip,
            on_tile=on_tile,
        )
    finally:
        bar.close()
    if len(pts):  # a peak in a margin can fall on glass next to tissue: keep those under the mask
        i = np.clip((pts[:, 1] / scale).astype(int), 0, mask.shape[0] - 1)
        j = np.clip((pts[:, 0] / scale).astype(int), 0, mask.shape[1] - 1)
        keep = _near_mask(mask, i, j)
        pts, sc = pts[keep], sc[keep]
    tissue_px = float(mask.sum()) * scale * scale * slide.downsample**2
    um = pixel_size_um or slide.mpp
    n_tiles = len(range(0, slide.shape[0], tile)) * len(range(0, slide.shape[1], tile))
    return SlideDetections(
        points=pts,
        scores=sc,
        tissue_mm2=tissue_px * (um * 1e-3) ** 2 if um else None,
        tissue_megapixels=tissue_px / 1e6,
        tiles=n_tiles,
        tiles_run=run[0],
        seconds=time.perf_counter() - t0,
    )


def _near_mask(mask: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """True where a mask pixel's 8-neighbourhood holds tissue (the mask is coarse at its edges)."""
    from scipy import ndimage as ndi  # light; only for slides

    grown = ndi.binary_dilation(mask, iterations=1)
    return np.asarray(grown[i, j], bool)
