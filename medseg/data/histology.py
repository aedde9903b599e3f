"""Synthetic H&E-like histology tiles with nuclei and mitotic figures (deterministic).

The images are painted in Haematoxylin-Eosin-DAB optical-density space and converted to RGB with
scikit-image's :func:`skimage.color.hed2rgb`, so colours behave like a real stain (and the HED
stain augmentation of :mod:`medseg.tasks.detection.targets` acts on them as on real slides).

What an image holds:

* an eosin-pink background with smooth and fine texture (stroma) and a few pale gaps;
* nuclei: haematoxylin blue/purple, elliptical with irregular outlines, sizes varying (about
  9-15 px diameter at the default 0.5 µm/px, i.e. 4.5-7.5 µm), granular chromatin texture, pale
  to hyperchromatic; 20 % vesicular (pale, dark membrane, nucleoli), 20 % spindle-shaped
  (fibroblast-like, 15-19 px long); ~50 % are placed touching a neighbour (clusters);
* mitosis look-alikes, annotated as ``nucleus``: lymphocytes (~12 %, small, dark, round) and
  apoptotic bodies (~3 %, dark homogeneous round, bright eosinophilic rim);
* mitotic figures (rarer, ``mitosis_rate``, default 5 % of objects): very dark, irregular clumps or
  metaphase plates with a pale halo;
* per-image stain variation (haematoxylin x0.8-1.2, eosin x0.7-1.3) and noise.

Annotations are point annotations (centre of each object, class ``nucleus`` = 0 or ``mitosis`` = 1)
plus an instance mask (one integer id per object; centroids via ``regionprops`` match the points).

Array conventions: images are ``(H, W, 3)`` uint8 RGB, row = y, column = x; points are ``(N, 2)``
float arrays of ``(x, y)`` in pixels (the CSV convention ``image,x,y,class``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.color import hed2rgb
from skimage.io import imsave
from skimage.measure import regionprops

from medseg.utils import atomic_write, atomic_write_csv, atomic_write_text

__all__ = ["HistologySample", "CLASS_NAMES", "histology_image", "write_histology_dataset", "write_points_csv"]

log = logging.getLogger("medseg.data")

#: class names of the point annotations (index = class id in the CSV)
CLASS_NAMES = ("nucleus", "mitosis")


@dataclass
class HistologySample:
    """One synthetic tile.

    Attributes
    ----------
    image : (H, W, 3) uint8 RGB.
    points : (N, 2) float64 object centres as (x, y) pixels.
    classes : (N,) int64 class ids (0 nucleus, 1 mitosis).
    instances : (H, W) int32 instance mask; object ``k`` (0-based in ``points``) has id ``k + 1``.
    pixel_size_um : micrometres per pixel.
    """

    image: np.ndarray
    points: np.ndarray
    classes: np.ndarray
    instances: np.ndarray
    pixel_size_um: float = 0.5


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    n = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return n / (n.std() + 1e-8)


def _blob_mask(rng: np.random.Generator, size: int, a: float, b: float, theta: float, wobble: float) -> np.ndarray:
    """Boolean (size, size) ellipse with a randomly wobbled outline, centred in the patch."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - c, yy - c
    ct, st = np.cos(theta), np.sin(theta)
    u = (dx * ct + dy * st) / a
    v = (-dx * st + dy * ct) / b
    r = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    k = rng.integers(2, 5)
    amp = rng.uniform(0, wobble, size=k)
    ph = rng.uniform(0, 2 * np.pi, size=k)
    edge = 1.0 + sum(amp[i] * np.cos((i + 2) * phi + ph[i]) for i in range(k))
    return r <= edge


def _mitosis_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """Irregular (size, size) mask of a mitotic figure: a clump of chromosome blobs or a plate."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    m = np.zeros((size, size), bool)
    if rng.random() < 0.5:  # metaphase plate: thin bar with hairy edges
        theta = rng.uniform(0, np.pi)
        ct, st = np.cos(theta), np.sin(theta)
        a, b = rng.uniform(5.0, 7.0), rng.uniform(1.6, 2.4)
        for _ in range(12):
            t = rng.uniform(-a, a)
            off = rng.normal(0, b * 0.6)
            px, py = c + t * ct - off * st, c + t * st + off * ct
            rr = rng.uniform(1.0, 2.0)
            m |= (xx - px) ** 2 + (yy - py) ** 2 <= rr * rr
    else:  # prophase / anaphase clump: several dark chromosome blobs
        for _ in range(rng.integers(5, 9)):
            px, py = c + rng.normal(0, 2.6), c + rng.normal(0, 2.6)
            rr = rng.uniform(1.3, 2.4)
            m |= (xx - px) ** 2 + (yy - py) ** 2 <= rr * rr
    return m


def histology_image(
    seed: int,
    shape: tuple[int, int] = (256, 256),
    *,
    n_nuclei: int | None = None,
    mitosis_rate: float = 0.05,
    pixel_size_um: float = 0.5,
) -> HistologySample:
    """Generate one deterministic synthetic H&E tile.

    Parameters
    ----------
    seed : random seed (the same seed always gives the same tile).
    shape : (H, W) in pixels.
    n_nuclei : number of objects (nuclei + mitoses); default scales with the area (~110 per 256²).
    mitosis_rate : expected fraction of objects that are mitotic figures (at least one per tile
        when ``mitosis_rate > 0`` and the tile holds 20 or more objects).
    pixel_size_um : micrometres per pixel recorded in the sample (object sizes are in pixels, made
        for 0.5 µm/px).

    Returns
    -------
    HistologySample with image (H, W, 3) uint8, points (N, 2) (x, y), classes (N,), instances (H, W).
    """

    rng = np.random.default_rng(seed)
    H, W = int(shape[0]), int(shape[1])
    if n_nuclei is None:
        n_nuclei = int(rng.poisson(110 * H * W / 256**2))
    # background: eosin stroma with smooth + fine texture and pale gaps
    eos = 0.030 + 0.008 * _smooth_noise(rng, (H, W), 6) + 0.003 * _smooth_noise(rng, (H, W), 1.0)
    gaps = _smooth_noise(rng, (H, W), 10) > 1.6
    eos = np.where(gaps, eos * 0.35, eos)
    hem = 0.006 + 0.002 * _smooth_noise(rng, (H, W), 3)
    chromatin = _smooth_noise(rng, (H, W), 0.8)
    instances = np.zeros((H, W), np.int32)

    # object centres: rejection sampling with a minimum distance that still lets nuclei touch;
    # a share of the objects is placed next to an existing one (clusters of touching nuclei)
    centres: list[tuple[float, float, float]] = []  # (x, y, radius)
    tries = 0
    while len(centres) < n_nuclei and tries < n_nuclei * 60:
        tries += 1
        r = rng.uniform(4.5, 7.5)
        if centres and rng.random() < 0.6:
            cx, cy, cr = centres[int(rng.integers(len(centres)))]
            ang, dist = rng.uniform(0, 2 * np.pi), (cr + r) * rng.uniform(0.7, 0.9)
            x, y = cx + dist * np.cos(ang), cy + dist * np.sin(ang)
            if not (2 <= x <= W - 3 and 2 <= y <= H - 3):
                continue
        else:
            x, y = rng.uniform(2, W - 3), rng.uniform(2, H - 3)
        if all((x - cx) ** 2 + (y - cy) ** 2 >= (0.7 * (r + cr)) ** 2 for cx, cy, cr in centres):
            centres.append((x, y, r))
    n = len(centres)
    # kinds: 0 nucleus, 1 mitosis, 2 lymphocyte (small dark round), 3 apoptotic body (dark, pink rim)
    u = rng.random(n)
    kinds = np.where(u < mitosis_rate, 1, np.where(u < mitosis_rate + 0.12, 2, np.where(u < mitosis_rate + 0.15, 3, 0)))
    if mitosis_rate > 0 and n >= 20 and not (kinds == 1).any():
        kinds[rng.integers(n)] = 1
    classes = (kinds == 1).astype(np.int64)
    stain_h, stain_e = rng.uniform(0.8, 1.2), rng.uniform(0.7, 1.3)  # per-slide stain variation

    points = np.zeros((n, 2), np.float64)
    size = 21
    half = size // 2
    for k, ((x, y, r), kind) in enumerate(zip(centres, kinds)):
        ix, iy = int(round(x)), int(round(y))
        sub = 0.0
        if kind == 1:
            m = _mitosis_mask(rng, size)
            m = ndi.binary_closing(m, iterations=1) | m
        elif kind == 2:
            rl = rng.uniform(3.0, 3.9)
            m = _blob_mask(rng, size, rl, rl * rng.uniform(0.85, 1.0), rng.uniform(0, np.pi), wobble=0.04)
        elif kind == 3:
            rl = rng.uniform(2.5, 4.0)
            m = _blob_mask(rng, size, rl, rl * rng.uniform(0.8, 1.0), rng.uniform(0, np.pi), wobble=0.05)
        else:
            sub = rng.random()  # nucleus look: 0.6 normal / hyperchromatic, 0.2 vesicular, 0.2 spindle
            if sub >= 0.8:  # spindle (fibroblast-like) nucleus: long and thin
                a = rng.uniform(7.0, 9.5)
                m = _blob_mask(rng, size, a, rng.uniform(2.2, 3.0), rng.uniform(0, np.pi), wobble=0.05)
            else:
                ratio = rng.uniform(0.65, 1.0)
                m = _blob_mask(rng, size, r, r * ratio, rng.uniform(0, np.pi), wobble=0.12)
        # paste into the image (clipped at borders)
        y0, x0 = iy - half, ix - half
        ys, xs = slice(max(y0, 0), min(y0 + size, H)), slice(max(x0, 0), min(x0 + size, W))
        ms = m[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        if not ms.any():
            continue
        ring = ndi.binary_dilation(m, iterations=3)[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] & ~ms
        if kind == 1:  # pale halo of clear cytoplasm, very dark clumped chromatin
            eos[ys, xs] = np.where(ring, eos[ys, xs] * 0.5, eos[ys, xs])
            val = rng.uniform(0.15, 0.26) * (1 + 0.15 * chromatin[ys, xs])
        elif kind == 2:
            val = rng.uniform(0.12, 0.18) * (1 + 0.08 * chromatin[ys, xs])
        elif kind == 3:  # pyknotic, homogeneous, in bright eosinophilic cytoplasm
            eos[ys, xs] = np.where(ring, eos[ys, xs] * 1.8, eos[ys, xs])
            val = rng.uniform(0.18, 0.26) * np.ones(ms.shape)
        elif 0.6 <= sub < 0.8:  # vesicular: pale open chromatin, dark membrane, one or two nucleoli
            dens = rng.uniform(0.025, 0.045)
            rim = ms & ~ndi.binary_erosion(ms, iterations=1)
            val = dens * (1 + 0.3 * chromatin[ys, xs]) * np.where(rim, 2.6, 1.0)
            for _ in range(int(rng.integers(1, 3))):
                oy, ox = iy + rng.normal(0, 1.5) - ys.start, ix + rng.normal(0, 1.5) - xs.start
                yy, xx = np.ogrid[0 : ms.shape[0], 0 : ms.shape[1]]
                val = np.where((yy - oy) ** 2 + (xx - ox) ** 2 <= 1.6, rng.uniform(0.12, 0.17), val)
        else:
            dens = rng.uniform(0.10, 0.14) if sub < 0.08 else rng.uniform(0.04, 0.085)
            rim = ms & ~ndi.binary_erosion(ms, iterations=1)
            val = dens * (1 + 0.3 * chromatin[ys, xs]) * np.where(rim, 1.25, 1.0)
        hem[ys, xs] = np.where(ms, np.maximum(hem[ys, xs], val), hem[ys, xs])
        eos[ys, xs] = np.where(ms, eos[ys, xs] * 0.5, eos[ys, xs])
        instances[ys, xs] = np.where(ms, k + 1, instances[ys, xs])
        points[k] = (x, y)
    # objects fully overwritten by later neighbours keep their point; recompute centres from masks
    keep = np.zeros(n, bool)
    for rp in regionprops(instances):
        k = rp.label - 1
        if rp.area >= 10:
            cy, cx = rp.centroid
            points[k] = (cx, cy)
            keep[k] = True
    # drop objects that ended up (almost) hidden; renumber instances densely
    order = np.flatnonzero(keep)
    remap = np.zeros(n + 1, np.int32)
    remap[order + 1] = np.arange(1, len(order) + 1, dtype=np.int32)
    instances = remap[instances]
    points, classes = points[order], classes[order]

    hed = np.stack([np.clip(hem * stain_h, 0, None), np.clip(eos * stain_e, 0, None), np.zeros_like(hem)], axis=-1)
    rgb = hed2rgb(hed)
    rgb = ndi.gaussian_filter(rgb, sigma=(0.6, 0.6, 0))
    rgb = rgb + rng.normal(0, 0.02, rgb.shape)
    image = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    return HistologySample(
        image=image, points=points, classes=classes, instances=instances, pixel_size_um=float(pixel_size_um)
    )


def write_points_csv(path: str | Path, rows: list[tuple[str, float, float, str]]) -> Path:
    """Write point annotations ``image,x,y,class`` (atomically). ``rows`` are (image, x, y, class_name)."""
    return atomic_write_csv(path, ["image", "x", "y", "class"], ([n, f"{x:.2f}", f"{y:.2f}", c] for n, x, y, c in rows))


def write_histology_dataset(
    out_dir: str | Path,
    n_train: int = 8,
    n_test: int = 4,
    *,
    seed: int = 0,
    shape: tuple[int, int] = (256, 256),
    n_val: int = 2,
    fmt: str = "png",
    mitosis_rate: float = 0.05,
    pixel_size_um: float = 0.5,
) -> Path:
    """Write a synthetic histology data set and return its ``dataset.json``.

    Layout::

        out_dir/images/h000.png      RGB tiles (``fmt`` "png" or "tif")
        out_dir/masks/h000.tif       instance masks (uint16, 0 = background)
        out_dir/points.csv           image,x,y,class (image = file name, class = nucleus|mitosis)
        out_dir/dataset.json         {"training": [...], "validation": [...], "test": [...],
                                      "points": "points.csv", "class_names": [...], "pixel_size_um": ...}

    Each datalist entry is ``{"image": "images/h000.png", "label": "masks/h000.tif"}``. Image ``i``
    uses seed ``seed * 1000 + i`` so the set is deterministic. Files are written atomically.
    """
    if fmt not in ("png", "tif"):
        raise ValueError("fmt must be 'png' or 'tif'")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    total = n_train + n_val + n_test
    entries, rows = [], []
    for i in range(total):
        s = histology_image(seed * 1000 + i, shape, mitosis_rate=mitosis_rate, pixel_size_um=pixel_size_um)
        name = f"h{i:03d}.{fmt}"
        with atomic_write(out / "images" / name) as tmp:
            if fmt == "png":
                imsave(tmp, s.image, check_contrast=False)
            else:
                # the pixel size in the TIFF resolution tags (pixels per cm), as microscopes and QuPath write it
                res = 1e4 / float(pixel_size_um)
                tifffile.imwrite(tmp, s.image, photometric="rgb", resolution=(res, res), resolutionunit="CENTIMETER")
        with atomic_write(out / "masks" / f"h{i:03d}.tif") as tmp:
            tifffile.imwrite(tmp, s.instances.astype(np.uint16))
        entries.append({"image": f"images/{name}", "label": f"masks/h{i:03d}.tif"})
        rows += [(name, float(x), float(y), CLASS_NAMES[int(c)]) for (x, y), c in zip(s.points, s.classes)]
    write_points_csv(out / "points.csv", rows)
    ds = {
        "name": "synthetic_histology",
        "description": "medseg synthetic H&E-like tiles with nuclei and mitotic figures",
        "class_names": list(CLASS_NAMES),
        "pixel_size_um": pixel_size_um,
        "points": "points.csv",
        "training": entries[:n_train],
        "validation": entries[n_train : n_train + n_val],
        "test": entries[n_train + n_val :],
    }
    path = out / "dataset.json"
    atomic_write_text(path, json.dumps(ds, indent=2) + "\n")
    log.info("wrote %d synthetic histology tiles to %s", total, out)
    return path
