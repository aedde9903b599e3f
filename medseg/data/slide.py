"""A synthetic whole slide: a pyramidal tiled TIFF of H&E-like tissue with known nuclei (tests, benchmarks).

:func:`write_synthetic_slide` lays blocks of :func:`medseg.data.histology.histology_image` tiles inside
an elliptical piece of tissue on white glass and writes the slide with ``tifffile`` as a generic
tiled pyramidal TIFF (level 0 plus 4x-downsampled levels, the pixel size in the resolution tags),
which OpenSlide reads as ``generic-tiff``. Tiles are written as they are composed (never the whole
level in memory), and a small pool of distinct tissue blocks is reused, so a 20k x 20k slide takes
seconds. The nuclei of every block are known: the returned points are the ground truth in level-0
pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data.histology import histology_image

__all__ = ["SyntheticSlide", "write_synthetic_slide"]

_GLASS = 243  # the grey level of empty glass (a scanner's background)


@dataclass
class SyntheticSlide:
    """What :func:`write_synthetic_slide` wrote.

    Attributes
    ----------
    path : the TIFF file.
    shape : (H, W) of level 0.
    points : (N, 2) (x, y) level-0 pixel centres of every object; classes : (N,) 0 nucleus, 1 mitosis.
    tissue_blocks : number of ``block`` x ``block`` tissue blocks.
    pixel_size_um : µm per level-0 pixel.
    """

    path: Path
    shape: tuple[int, int]
    points: np.ndarray
    classes: np.ndarray
    tissue_blocks: int
    pixel_size_um: float


def write_synthetic_slide(
    path: str | Path,
    shape: tuple[int, int] = (4096, 4096),
    *,
    block: int = 512,
    pool: int = 8,
    seed: int = 0,
    pixel_size_um: float = 0.5,
    tile: int = 256,
    mitosis_rate: float = 0.05,
) -> SyntheticSlide:
    """Write a synthetic pyramidal slide of ``shape`` (H, W) level-0 pixels to ``path`` (see the module doc).

    ``block`` must be a multiple of ``tile``; blocks whose centre lies in the tissue ellipse (60 % of
    the slide's width and height) hold tissue, the rest is glass.
    """
    import tifffile  # heavy-ish: only when a slide is written

    H, W = shape
    if block % tile:
        raise ValueError("block must be a multiple of tile")
    samples = [histology_image(seed + k, (block, block), mitosis_rate=mitosis_rate) for k in range(pool)]
    nby, nbx = -(-H // block), -(-W // block)
    grid = np.full((nby, nbx), -1, np.int64)  # pool index of each block, -1 = glass
    rng = np.random.default_rng(seed)
    pts, cls = [], []
    for by in range(nby):
        for bx in range(nbx):
            cy, cx = (by + 0.5) * block, (bx + 0.5) * block
            if ((cy - H / 2) / (0.3 * H)) ** 2 + ((cx - W / 2) / (0.3 * W)) ** 2 <= 1.0:
                k = int(rng.integers(pool))
                grid[by, bx] = k
                p = samples[k].points + [bx * block, by * block]
                inside = (p[:, 0] < W) & (p[:, 1] < H)
                pts.append(p[inside])
                cls.append(samples[k].classes[inside])

    def region(y0: int, x0: int, h: int, w: int) -> np.ndarray:
        out = np.full((h, w, 3), _GLASS, np.uint8)
        for by in range(y0 // block, min(nby, -(-(y0 + h) // block))):
            for bx in range(x0 // block, min(nbx, -(-(x0 + w) // block))):
                k = grid[by, bx]
                if k < 0:
                    continue
                ys, xs = max(y0, by * block), max(x0, bx * block)
                ye, xe = min(y0 + h, (by + 1) * block), min(x0 + w, (bx + 1) * block)
                out[ys - y0 : ye - y0, xs - x0 : xe - x0] = samples[k].image[
                    ys - by * block : ye - by * block, xs - bx * block : xe - bx * block
                ]
        return out

    def tiles(f: int, lh: int, lw: int) -> Iterator[np.ndarray]:
        for ty in range(0, lh, tile):
            for tx in range(0, lw, tile):
                r = region(ty * f, tx * f, min(tile * f, H - ty * f), min(tile * f, W - tx * f))
                if f > 1:  # block mean of f x f level-0 pixels
                    h, w = r.shape[0] // f, r.shape[1] // f
                    r = r[: h * f, : w * f].reshape(h, f, w, f, 3).mean(axis=(1, 3)).astype(np.uint8)
                t = np.full((tile, tile, 3), _GLASS, np.uint8)
                t[: r.shape[0], : r.shape[1]] = r
                yield t

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    res = (1e4 / pixel_size_um, 1e4 / pixel_size_um)  # pixels per cm
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        f = 1
        while True:
            lh, lw = H // f, W // f
            tif.write(
                tiles(f, lh, lw),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="zlib",
                resolution=(res[0] / f, res[1] / f),
                resolutionunit="CENTIMETER",
                subfiletype=0 if f == 1 else 1,
            )
            if max(lh, lw) <= 2 * tile:
                break
            f *= 4
    points = np.concatenate(pts) if pts else np.zeros((0, 2))
    classes = np.concatenate(cls) if cls else np.zeros(0, np.int64)
    return SyntheticSlide(
        path=path,
        shape=(H, W),
        points=points,
        classes=classes,
        tissue_blocks=int((grid >= 0).sum()),
        pixel_size_um=pixel_size_um,
    )
