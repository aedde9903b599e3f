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

Both: HED stain jitter (scikit-image ``rgb2hed``/``hed2rgb``), flips and 90° rotations;
tiled inference with bounded memory (:func:`detect_tiled`: every tile is processed with a context
margin and keeps only the peaks inside its own core, so an object on a tile border is found once);
outputs per image: detections CSV (x, y, score, class), QuPath GeoJSON, overlay PNG, counts per
image and per mm².

Conventions: images ``(H, W, 3)`` uint8 RGB; points ``(N, 2)`` as ``(x, y)`` pixels, x = column,
y = row, pixel centres at integer coordinates. Distances in the config are micrometres.

Input rules (bad input)
-----------------------
* grayscale images are replicated to 3 channels; RGBA drops alpha; 2 or more than 4 channels is an
  :class:`~medseg.errors.InputError`;
* 16-bit (or float) images are rescaled linearly from [0, max] to 8 bit, with a log message;
* an image without rows in the points CSV is valid: it has no objects (all negatives);
* CSV rows naming an image that is not in the data set are an InputError (typo / mismatched names);
  names match by file name, or by stem when the CSV omits the extension;
* points outside the image (beyond half a pixel) are an InputError naming the CSV and the image.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import FileFormatError, InputError, MissingFileError
from medseg.metrics.detection import (
    average_precision,
    detection_scores,
    pooled_scores,
    radius_in_pixels,
    select_threshold,
)
from medseg.utils import atomic_write, atomic_write_text

__all__ = [
    "Case",
    "read_image",
    "open_image",
    "read_points_csv",
    "centroids_from_mask",
    "proximity_target",
    "stain_jitter",
    "find_peaks",
    "detect_tiled",
    "score_map_fn",
    "train",
    "detect",
    "evaluate",
    "run_demo",
    "to_geojson",
]

log = logging.getLogger("medseg.detection")

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
CLASS_COLORS = {"nucleus": (60, 180, 75), "mitosis": (230, 25, 75)}  # as the overlay markers


# ----------------------------------------------------------------------------- reading


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2D PNG/TIFF/JPEG microscopy image as (H, W, 3) uint8 RGB.

    The one place detection reads pixels (through ``medseg.io.read_image_array``).
    Grayscale -> replicated to RGB; RGBA -> alpha dropped; channel-first (3, H, W) TIFF ->
    transposed; 16-bit / float -> rescaled linearly from [0, max] to [0, 255].

    Raises
    ------
    MissingFileError, FileFormatError (unreadable), InputError (wrong channel count or not 2D).
    """
    from medseg.io import read_image_array

    path = Path(path)
    arr = read_image_array(path)
    return to_rgb8(np.asarray(arr), path)


def open_image(path: str | Path, lazy_min_pixels: int = 16_000_000):
    """Open an image for detection: a read-only memory map for large uncompressed 8-bit RGB TIFFs
    (pixels are read tile by tile by :func:`detect_tiled`, so memory stays bounded), else
    :func:`read_image` (whole image in memory, normalised to (H, W, 3) uint8).
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        import tifffile

        try:
            with tifffile.TiffFile(path) as tf:
                page = tf.pages[0]
                ok = (
                    page.dtype == np.uint8
                    and len(page.shape) == 3
                    and page.shape[-1] == 3
                    and int(np.prod(page.shape[:2])) >= lazy_min_pixels
                    and page.is_memmappable
                )
            if ok:
                return tifffile.memmap(path, mode="r")
        except Exception:  # unreadable here: let read_image raise the proper error
            pass
    return read_image(path)


def to_rgb8(arr: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Normalise an image array to (H, W, 3) uint8 (see :func:`read_image` for the rules)."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    elif a.ndim == 3 and a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim != 3 or a.shape[-1] != 3:
        raise InputError(
            f"expected a 2D grayscale or RGB(A) image, got array shape {tuple(np.shape(arr))} "
            "(wrong channel count); convert it to RGB first",
            path,
        )
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    a = a.astype(np.float64)
    mx = float(np.nanmax(a)) if a.size else 0.0
    if a.dtype.kind == "f" and mx <= 1.0:
        scale = 255.0
    else:
        scale = 255.0 / mx if mx > 0 else 1.0
        log.info("%s: %s image rescaled linearly from [0, %g] to 8 bit", Path(path).name, arr.dtype, mx)
    return np.clip(np.nan_to_num(a) * scale + 0.5, 0, 255).astype(np.uint8)


def read_points_csv(path: str | Path, class_names: Sequence[str] = ("nucleus", "mitosis")) -> dict[str, tuple]:
    """Read point annotations ``image,x,y[,class]``.

    Returns
    -------
    ``{image_name: (points (N, 2) float (x, y), class_ids (N,) int, scores (N,) float)}``; a
    ``score`` column (detections CSV) is read when present, else scores are 1. A row without a
    class gets ``class_names[0]``; classes not in ``class_names`` are an InputError.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError("points CSV not found", path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise FileFormatError("not a text CSV file", path) from None
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    need = {"x", "y"}
    if not need <= set(cols):
        raise FileFormatError(f"points CSV needs columns image,x,y[,class]; found {', '.join(cols) or 'none'}", path)
    reader.fieldnames = cols
    names = list(class_names)
    acc: dict[str, list] = {}
    for i, row in enumerate(reader, start=2):
        img = (row.get("image") or "").strip() if "image" in cols else ""
        try:
            x, y = float(row["x"]), float(row["y"])
        except (TypeError, ValueError):
            raise FileFormatError(f"line {i}: x/y are not numbers ({row.get('x')!r}, {row.get('y')!r})", path) from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise FileFormatError(f"line {i}: x/y are not finite", path)
        c = (row.get("class") or "").strip() if "class" in cols else ""
        if not c:
            cid = 0
        elif c in names:
            cid = names.index(c)
        elif c.isdigit() and int(c) < len(names):
            cid = int(c)
        else:
            raise InputError(f"line {i}: unknown class {c!r}; allowed: {', '.join(names)} (config class_names)", path)
        s = float(row["score"]) if "score" in cols and row.get("score") not in (None, "") else 1.0
        acc.setdefault(img, []).append((x, y, cid, s))
    out = {}
    for img, rows in acc.items():
        a = np.asarray(rows, np.float64)
        out[img] = (a[:, :2].copy(), a[:, 2].astype(np.int64), a[:, 3].copy())
    return out


def centroids_from_mask(mask: np.ndarray) -> np.ndarray:
    """Object centres (N, 2) as (x, y) of an instance mask (H, W) int (0 = background), by label order."""
    from skimage.measure import regionprops

    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] in (3, 4):
        raise InputError("an instance mask must be a single-channel integer image, got RGB")
    pts = [(rp.centroid[1], rp.centroid[0]) for rp in regionprops(m.astype(np.int64))]
    return np.asarray(pts, np.float64).reshape(-1, 2)


@dataclass
class Case:
    """One annotated (or not) image: ``points`` (N, 2) (x, y) and ``classes`` (N,) class ids."""

    name: str
    path: Path
    image: np.ndarray
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _lookup(ann: dict, path: Path) -> tuple | None:
    for key in (path.name, path.stem, str(path)):
        if key in ann:
            return ann[key]
    return None


def _check_points_inside(points: np.ndarray, shape: tuple, image: Path, source: Path | str) -> None:
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
    entries: Sequence[dict], annotations: Path | None, class_names: Sequence[str], source: Path | str = "<datalist>"
) -> list[Case]:
    """Read images and their points (from the CSV, else from ``label`` instance masks).

    ``entries`` are datalist dicts with absolute ``image`` (and optionally ``label``) paths.
    Raises InputError on CSV names matching no image, and on points outside their image.
    """
    ann = read_points_csv(annotations, class_names) if annotations is not None else None
    used: set[str] = set()
    cases = []
    for e in entries:
        p = Path(e["image"])
        img = read_image(p)
        pts, cls = np.zeros((0, 2)), np.zeros(0, np.int64)
        if ann is not None:
            hit = _lookup(ann, p)
            if hit is not None:
                pts, cls = hit[0], hit[1]
                used.update(k for k in (p.name, p.stem, str(p)) if k in ann)
            else:
                log.info("%s: no rows in the points CSV: treated as an image without objects", p.name)
            _check_points_inside(pts, img.shape, p, annotations)
        elif e.get("label"):
            from medseg.errors import LabelMismatchError

            lp = Path(e["label"])
            if lp.suffix.lower() in (".tif", ".tiff"):
                import tifffile

                mask = tifffile.imread(lp)
            else:
                from skimage.io import imread

                mask = imread(lp)
            if mask.shape[:2] != img.shape[:2]:
                raise LabelMismatchError(f"instance mask {mask.shape[:2]} does not match image {img.shape[:2]}", lp)
            pts = centroids_from_mask(mask)
            cls = np.zeros(len(pts), np.int64)
        cases.append(Case(p.stem, p, img, pts, cls))
    if ann is not None and entries:
        unknown = sorted(k for k in ann if k not in used)
        # names of other splits in the same CSV are fine; only complain when none matched at all
        # or when a name matches nothing anywhere (handled by the caller with all splits)
        if unknown and not used:
            raise InputError(
                f"no image of the data set has rows in the points CSV; CSV names e.g. "
                f"{unknown[:3]} vs images e.g. {[Path(e['image']).name for e in entries[:3]]}: "
                "mismatched image/annotation names",
                annotations,
            )
    return cases


def check_annotation_names(annotations: Path, all_images: Sequence[Path], class_names: Sequence[str]) -> None:
    """InputError if the CSV names images that are not in the data set (all splits together)."""
    ann = read_points_csv(annotations, class_names)
    known = {k for p in all_images for k in (Path(p).name, Path(p).stem, str(p))}
    unknown = sorted(k for k in ann if k not in known)
    if unknown:
        raise InputError(
            f"{len(unknown)} image name(s) in the points CSV match no image of the data set, "
            f"e.g. {unknown[:3]}: mismatched image/annotation names (names match by file name "
            "or stem)",
            annotations,
        )


# ----------------------------------------------------------------------------- targets, augmentation


def proximity_target(points: np.ndarray, shape: tuple[int, int], radius_px: float, alpha: float = 3.0) -> np.ndarray:
    """Xie et al. (2015) proximity map (H, W) float32 in [0, 1].

    ``M = (exp(alpha (1 - d / r)) - 1) / (exp(alpha) - 1)`` for ``d < r``, else 0, where ``d`` is
    the distance (px) to the nearest point (x, y) in ``points`` (N, 2) and ``r = radius_px``.
    """
    from scipy import ndimage as ndi

    H, W = int(shape[0]), int(shape[1])
    if len(points) == 0:
        return np.zeros((H, W), np.float32)
    seeds = np.ones((H, W), bool)
    ij = np.clip(np.round(np.asarray(points)[:, ::-1]).astype(int), 0, [H - 1, W - 1])
    seeds[ij[:, 0], ij[:, 1]] = False
    d = ndi.distance_transform_edt(seeds)
    m = np.where(d < radius_px, (np.exp(alpha * (1 - d / radius_px)) - 1) / (np.exp(alpha) - 1), 0.0)
    return m.astype(np.float32)


def stain_jitter(rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """H&E stain augmentation in HED space (scikit-image ``rgb2hed``/``hed2rgb``).

    Each stain channel is scaled by ``1 + U(-s, s)`` and shifted by ``U(-s, s) * 0.05`` (OD units).
    ``rgb`` (H, W, 3) uint8 or float in [0, 1]; returns float32 (H, W, 3) in [0, 1].
    """
    from skimage.color import hed2rgb, rgb2hed

    x = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    if strength <= 0:
        return x
    hed = rgb2hed(x)
    a = 1 + rng.uniform(-strength, strength, 3)
    b = rng.uniform(-strength, strength, 3) * 0.05
    hed = hed * a + b
    return np.clip(hed2rgb(hed), 0, 1).astype(np.float32)


def _to_tensor_input(x: np.ndarray):
    """(H, W, 3) uint8 or [0, 1] float -> normalised float32 (3, H, W) numpy array."""
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    return ((np.moveaxis(x, -1, 0) - 0.5) / 0.25).astype(np.float32)


def _flip_rot(arrs: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrs:
        a = np.rot90(a, k, axes=(0, 1))
        if flip:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return out


# ----------------------------------------------------------------------------- inference


def find_peaks(score: np.ndarray, min_distance_px: float, threshold: float, sigma_px: float = 0.0):
    """Detections on a score map (H, W): local maxima ``>= threshold`` at least ``min_distance`` apart.

    Returns (points (N, 2) (x, y), scores (N,)) sorted by decreasing score.
    """
    from skimage.feature import peak_local_max

    s = score
    if sigma_px > 0:
        from scipy import ndimage as ndi

        s = ndi.gaussian_filter(score.astype(np.float32), sigma_px)
    md = max(1, int(round(min_distance_px)))
    ij = peak_local_max(s, min_distance=md, threshold_abs=threshold, exclude_border=False)
    if len(ij) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    sc = s[ij[:, 0], ij[:, 1]].astype(np.float64)
    order = np.argsort(-sc, kind="stable")
    return ij[order][:, ::-1].astype(np.float64), sc[order]


def score_map_fn(model, method: str, device=None) -> Callable[[np.ndarray], np.ndarray]:
    """A function (h, w, 3) uint8 -> (h, w) float32 score map in [0, 1] for ``model``.

    Proximity: the input is reflect-padded to a multiple of 16 for the U-Net, the sigmoid map cropped
    back. Mitosis: :meth:`MitosisCNN.dense` (reflect padding), sigmoid.
    """
    import torch

    device = torch.device(device or "cpu")

    def fn(img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(_to_tensor_input(img))[None].to(device)
        h, w = x.shape[-2:]
        with torch.no_grad():
            if method == "mitosis":
                y = model.dense(x)
            else:
                ph, pw = (-h) % 16, (-w) % 16
                if ph or pw:
                    mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
                    x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
                y = model(x)[..., :h, :w]
            return torch.sigmoid(y)[0, 0].float().cpu().numpy()

    return fn


def detect_tiled(
    score_fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    tile: int = 512,
    margin: int = 32,
    min_distance_px: float = 6.0,
    threshold: float = 0.5,
    sigma_px: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Detect on a large image tile by tile, with bounded memory.

    The image is split into non-overlapping cores of ``tile`` x ``tile`` px. Each core is scored with
    ``margin`` px of real image context on every side (the overlap), peaks are found on that
    extended window, and only the peaks inside the core are kept. Every pixel belongs to exactly
    one core, so an object on a tile border is neither lost nor doubled, provided ``margin`` covers
    the NMS distance plus the network's context (the default 32 px does for the built-in models).
    Memory holds one extended tile and its score map, never a full-size map.

    Parameters
    ----------
    score_fn : (h, w, 3) uint8 -> (h, w) float score map (see :func:`score_map_fn`).
    image : (H, W, 3) uint8.

    Returns
    -------
    points (N, 2) (x, y) and scores (N,), sorted by decreasing score.
    """
    H, W = image.shape[:2]
    pts, scs = [], []
    for y0 in range(0, H, tile):
        for x0 in range(0, W, tile):
            y1, x1 = min(y0 + tile, H), min(x0 + tile, W)
            ey0, ex0 = max(0, y0 - margin), max(0, x0 - margin)
            ey1, ex1 = min(H, y1 + margin), min(W, x1 + margin)
            smap = score_fn(image[ey0:ey1, ex0:ex1])
            p, s = find_peaks(smap, min_distance_px, threshold, sigma_px)
            if len(p):
                p = p + [ex0, ey0]
                inside = (p[:, 0] >= x0) & (p[:, 0] < x1) & (p[:, 1] >= y0) & (p[:, 1] < y1)
                pts.append(p[inside])
                scs.append(s[inside])
    if not pts:
        return np.zeros((0, 2)), np.zeros(0)
    p, s = np.concatenate(pts), np.concatenate(scs)
    order = np.argsort(-s, kind="stable")
    p, s = p[order], s[order]
    if len(pts) > 1 and len(p) > 1:
        # Neighbouring tiles see slightly different context (network padding), so one object on a
        # border could peak once in each core a pixel apart: keep the higher score of any pair
        # closer than min_distance (greedy NMS across tiles; within a tile peak_local_max did it).
        from scipy.spatial import cKDTree

        keep = np.ones(len(p), bool)
        for i, j in sorted(cKDTree(p).query_pairs(r=max(1.0, float(min_distance_px)) - 1e-6)):
            if keep[i] and keep[j]:
                keep[j] = False  # j > i has the lower (or equal) score
        p, s = p[keep], s[keep]
    return p, s


# ----------------------------------------------------------------------------- training


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Temporarily set torch's CPU intra-op threads (None: leave as is).

    On a shared, oversubscribed CPU, OpenMP threads that wait on each other can make a step
    20x slower than one thread (measured here: 4.7 s vs 0.19 s per step on 2 busy cores).
    """
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class _Params:
    """Pixel-unit parameters derived from a DetectionConfig."""

    method: str
    target_ids: list[int]
    output_class: str
    radius_px: float
    min_distance_px: float
    sigma_px: float
    match_px: float

    @classmethod
    def from_config(cls, cfg) -> _Params:
        names = list(cfg.class_names)
        if cfg.target_classes is not None:
            targets = list(cfg.target_classes)
        else:
            targets = ["mitosis"] if cfg.method == "mitosis" and "mitosis" in names else names
        bad = [t for t in targets if t not in names]
        if bad:
            from medseg.errors import ConfigError

            raise ConfigError(f"target_classes {bad} not in class_names {names}")
        out = cfg.output_class or ("mitosis" if cfg.method == "mitosis" else "nucleus")
        ps = cfg.pixel_size_um
        return cls(
            cfg.method,
            [names.index(t) for t in targets],
            out,
            radius_in_pixels(cfg.proximity_radius_um, ps),
            radius_in_pixels(cfg.min_distance_um, ps),
            radius_in_pixels(cfg.smooth_sigma_um, ps),
            radius_in_pixels(cfg.match_radius_um, ps),
        )


def _targets(case: Case, ids: list[int]) -> np.ndarray:
    return case.points[np.isin(case.classes, ids)] if len(case.points) else case.points


class _ProximityBatches:
    """Random crops (flip/rot90, stain jitter) with their proximity targets; uses NumPy's global RNG."""

    def __init__(self, cases: list[Case], cfg, p: _Params, steps: int):
        self.cases, self.cfg, self.steps = cases, cfg, steps
        self.maps = [
            proximity_target(_targets(c, p.target_ids), c.image.shape[:2], p.radius_px, cfg.proximity_alpha)
            for c in cases
        ]

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        import torch

        cs = self.cfg.crop_size
        bs = self.cfg.train.batch_size
        for _ in range(self.steps):
            rng = np.random.default_rng(np.random.randint(2**31))
            xs, ys = [], []
            for _ in range(bs):
                i = int(rng.integers(len(self.cases)))
                img, m = self.cases[i].image, self.maps[i]
                H, W = m.shape
                if H < cs or W < cs:
                    ph, pw = max(0, cs - H), max(0, cs - W)
                    img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
                    m = np.pad(m, ((0, ph), (0, pw)))
                    H, W = m.shape
                y0, x0 = int(rng.integers(H - cs + 1)), int(rng.integers(W - cs + 1))
                im, tm = _flip_rot([img[y0 : y0 + cs, x0 : x0 + cs], m[y0 : y0 + cs, x0 : x0 + cs]], rng)
                xs.append(_to_tensor_input(stain_jitter(im, self.cfg.stain_jitter, rng)))
                ys.append(tm[None])
            yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


class _MitosisPatches:
    """Class-balanced patches for the mitosis CNN: positives, hard negatives, random background.

    Hard negatives are the annotated non-target nuclei and, with ``mine_every``, the current
    model's false positives on the training images (hard-negative mining, re-mined at the start of
    every ``mine_every``-th epoch from the weights of that moment; a resumed run re-mines at its
    first epoch, so it matches an uninterrupted one exactly only with ``mine_every: 1``).
    """

    def __init__(self, cases: list[Case], cfg, p: _Params, rf: int, steps: int):
        self.cfg, self.steps, self.rf, self.p = cfg, steps, rf, p
        half = rf // 2
        self.cases = cases
        self.padded = [np.pad(c.image, ((half, half), (half, half), (0, 0)), mode="reflect") for c in cases]
        self.shapes = [c.image.shape[:2] for c in cases]
        self.pos = [_targets(c, p.target_ids) for c in cases]
        self.nuclei = [c.points[~np.isin(c.classes, p.target_ids)] if len(c.points) else c.points for c in cases]
        self.hard = list(self.nuclei)
        self.excl = p.min_distance_px
        self.model = None  # set by train() for hard-negative mining
        self.device = None
        self.epoch_fn = None  # () -> epochs completed (the trainer's state)
        self._mined_once = False
        self.n_mined = 0
        self._index()
        if not self.pos_index:
            log.warning("mitosis training: no positive (target-class) points in the training images")

    def _index(self) -> None:
        self.pos_index = [(i, j) for i, a in enumerate(self.pos) for j in range(len(a))]
        self.hard_index = [(i, j) for i, a in enumerate(self.hard) for j in range(len(a))]

    def mine(self) -> int:
        """Add the model's confident false positives (score >= 0.5, farther than the matching radius
        from every target) on the training images to the hard negatives; returns how many."""
        from medseg.metrics.detection import match_points

        was_training = self.model.training
        self.model.eval()
        fn = score_map_fn(self.model, "mitosis", self.device)
        n = 0
        for i, c in enumerate(self.cases):
            pts, _ = detect_tiled(
                fn,
                c.image,
                tile=self.cfg.tile_size,
                margin=self.cfg.tile_margin,
                min_distance_px=self.p.min_distance_px,
                threshold=0.5,
                sigma_px=self.p.sigma_px,
            )
            fp = pts[match_points(pts, self.pos[i], self.p.match_px).unmatched_pred] if len(pts) else pts
            self.hard[i] = np.concatenate([self.nuclei[i], fp]) if len(fp) else self.nuclei[i]
            n += len(fp)
        if was_training:
            self.model.train()
        self._index()
        self.n_mined = n
        log.info("hard-negative mining: %d false positives added to the negatives", n)
        return n

    def __len__(self) -> int:
        return self.steps

    def _patch(self, i: int, x: float, y: float) -> np.ndarray:
        H, W = self.shapes[i]
        xi, yi = int(np.clip(round(x), 0, W - 1)), int(np.clip(round(y), 0, H - 1))
        return self.padded[i][yi : yi + self.rf, xi : xi + self.rf]

    def __iter__(self):
        import torch

        me = self.cfg.mine_every
        epoch = self.epoch_fn() if self.epoch_fn is not None else 0
        if self.model is not None and me and epoch > 0 and (epoch % me == 0 or not self._mined_once):
            with torch.no_grad():
                self.mine()
            self._mined_once = True
        bs = self.cfg.train.batch_size
        for _ in range(self.steps):
            rng = np.random.default_rng(np.random.randint(2**31))
            xs, ys = [], []
            for _ in range(bs):
                r = rng.random()
                if self.pos_index and r < self.cfg.positive_fraction:
                    i, j = self.pos_index[int(rng.integers(len(self.pos_index)))]
                    x, y = self.pos[i][j] + rng.uniform(-1.5, 1.5, 2)
                    label = 1.0
                elif self.hard_index and rng.random() < self.cfg.hard_negative_fraction:
                    i, j = self.hard_index[int(rng.integers(len(self.hard_index)))]
                    x, y = self.hard[i][j] + rng.uniform(-2.0, 2.0, 2)
                    label = 0.0
                else:
                    i = int(rng.integers(len(self.padded)))
                    H, W = self.shapes[i]
                    for _try in range(20):
                        x, y = rng.uniform(0, W - 1), rng.uniform(0, H - 1)
                        if len(self.pos[i]) == 0 or np.min(np.hypot(*(self.pos[i] - [x, y]).T)) > 2 * self.excl:
                            break
                    label = 0.0
                (pt,) = _flip_rot([self._patch(i, x, y)], rng)
                xs.append(_to_tensor_input(stain_jitter(pt, self.cfg.stain_jitter, rng)))
                ys.append(label)
            yield torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.float32)


def _detect_cases(model, cases: list[Case], p: _Params, cfg, device, threshold: float) -> list[tuple]:
    fn = score_map_fn(model, p.method, device)
    out = []
    for c in cases:
        out.append(
            detect_tiled(
                fn,
                c.image,
                tile=cfg.tile_size,
                margin=cfg.tile_margin,
                min_distance_px=p.min_distance_px,
                threshold=threshold,
                sigma_px=p.sigma_px,
            )
        )
    return out


def _synthetic_datalist(cfg, folder: Path) -> Path:
    from medseg.data.histology import write_histology_dataset

    return write_histology_dataset(
        folder,
        n_train=cfg.data.num_cases,
        n_val=cfg.synthetic_val,
        n_test=cfg.synthetic_test,
        seed=cfg.seed,
        shape=tuple(cfg.synthetic_shape),
        pixel_size_um=cfg.pixel_size_um,
    )


def _datalist_splits(cfg, datalist: Path) -> tuple[dict[str, list[dict]], Path | None]:
    """Training / validation / test entries (absolute paths) and the points CSV of a datalist."""
    from medseg.config import load_datalist

    content = json.loads(Path(datalist).read_text())
    root = Path(cfg.data.root) if cfg.data.root else Path(datalist).parent
    splits = {}
    for key in ("training", "validation", "test"):
        if key in content:
            items = load_datalist(datalist, root=cfg.data.root, key=key)
            # MONAI leaves string test entries as {"image": path}
            splits[key] = [it if isinstance(it, dict) else {"image": it} for it in items]
        else:
            splits[key] = []
    if not splits["validation"] and splits["training"]:
        n_val = max(1, int(round(len(splits["training"]) * cfg.data.val_fraction)))
        if len(splits["training"]) > n_val:
            splits["validation"] = splits["training"][-n_val:]
            splits["training"] = splits["training"][:-n_val]
    ann = cfg.annotations
    if ann is None and content.get("points"):
        ann = (root / content["points"]).resolve()
    return splits, ann


def train(cfg, run, resume: bool = False) -> dict[str, Any]:
    """Train a detector (``cfg.method``) into ``run``; see :func:`_train`. Uses ``cfg.cpu_threads``."""
    with torch_threads(cfg.cpu_threads):
        return _train(cfg, run, resume)


def _train(cfg, run, resume: bool = False) -> dict[str, Any]:
    """Train a detector (``cfg.method``) into ``run``; choose the threshold; score the test split.

    Writes into the run folder: checkpoints/, metrics.csv, training_curve.png, ``detection.json``
    (threshold and pixel parameters used by :func:`detect`) and, with a test split,
    ``test_metrics.json``. Returns a summary dict (val/test F1, AP, threshold, epochs, seconds).
    """
    import torch

    from medseg.engine.device import select_device
    from medseg.engine.trainer import Trainer, build_optimizer, build_scheduler
    from medseg.models import build_model

    device = select_device(cfg.device)
    run.set(device=str(device))
    p = _Params.from_config(cfg)
    with run.stage("data"):
        if cfg.data.datalist is not None:
            datalist = Path(cfg.data.datalist)
        elif cfg.data.synthetic:
            datalist = _synthetic_datalist(cfg, run.path / "data")
        else:
            from medseg.errors import ConfigError

            raise ConfigError("detection needs data.datalist (MSD-style JSON) or data.synthetic: true")
        splits, ann = _datalist_splits(cfg, datalist)
        if not splits["training"]:
            raise InputError("the datalist has no training images", datalist)
        if ann is not None:
            check_annotation_names(ann, [Path(e["image"]) for s in splits.values() for e in s], cfg.class_names)
        tr = load_cases(splits["training"], ann, cfg.class_names, datalist)
        va = load_cases(splits["validation"] or splits["training"][-1:], ann, cfg.class_names, datalist)
        te = load_cases(splits["test"], ann, cfg.class_names, datalist) if splits["test"] else []
    torch.manual_seed(cfg.seed)
    params = cfg.model.model_dump()
    model = build_model(**params)
    steps = cfg.train.steps_per_epoch or 20
    if p.method == "mitosis":
        if not hasattr(model, "dense"):
            from medseg.errors import ConfigError

            raise ConfigError(f"method 'mitosis' needs a patch CNN model such as 'mitosis_cnn', not {params['name']!r}")
        loader = _MitosisPatches(tr, cfg, p, model.receptive_field, steps)
        loader.model, loader.device = model, device
        bce = torch.nn.BCEWithLogitsLoss()

        def step(m, batch, dev):
            x, y = batch
            return bce(m(x.to(dev)), y.to(dev))
    else:
        loader = _ProximityBatches(tr, cfg, p, steps)
        w = cfg.proximity_weight

        def step(m, batch, dev):
            x, t = batch
            x, t = x.to(dev), t.to(dev)
            pr = torch.sigmoid(m(x))
            return ((1 + w * t) * (pr - t) ** 2).mean()

    val_refs = [_targets(c, p.target_ids) for c in va]

    def val_fn(m) -> dict[str, float]:
        dets = _detect_cases(m, va, p, cfg, device, threshold=0.05)
        thr, f1 = select_threshold(dets, val_refs, p.match_px)
        ap = average_precision(dets, val_refs, p.match_px)
        # F1 alone ties often on small validation sets; the mean with AP also rewards better ranking
        return {"val_f1": f1, "val_ap": ap, "val_score": 0.5 * (f1 + ap), "val_threshold": thr}

    opt = build_optimizer(model.parameters(), cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    sched = build_scheduler(opt, cfg.train.scheduler, cfg.train.epochs)
    trainer = Trainer(
        model,
        opt,
        loader,
        step,
        val_fn=val_fn,
        key_metric="val_score",
        mode="max",
        scheduler=sched,
        device=device,
        amp=cfg.train.amp,
        grad_clip=cfg.train.grad_clip,
        max_epochs=cfg.train.epochs,
        max_minutes=cfg.train.max_minutes,
        val_every=cfg.train.val_every,
        early_stop_patience=cfg.train.early_stop_patience,
        steps_per_epoch=steps,
        seed=cfg.seed,
        run_dir=run.path,
        model_meta={"model_params": params, "method": p.method},
    )
    if isinstance(loader, _MitosisPatches):
        loader.epoch_fn = lambda: trainer.state.epoch
    with run.stage("train"):
        state = trainer.fit(resume=resume)
    # best weights -> threshold on validation -> test
    from medseg.engine.checkpoint import load_checkpoint

    best = run.path / "checkpoints" / "best.pt"
    if best.is_file():
        model.load_state_dict(load_checkpoint(best, device)["model"])
    model.eval()
    with run.stage("threshold"):
        dets = _detect_cases(model, va, p, cfg, device, threshold=0.02)
        if cfg.threshold == "auto":
            thr, vf1 = select_threshold(dets, val_refs, p.match_px)
        else:
            thr = float(cfg.threshold)
            vf1 = pooled_scores([detection_scores(d[0][d[1] >= thr], r, p.match_px) for d, r in zip(dets, val_refs)])[
                "f1"
            ]
    info = {
        "method": p.method,
        "threshold": thr,
        "val_f1": vf1,
        "output_class": p.output_class,
        "pixel_size_um": cfg.pixel_size_um,
        "min_distance_px": p.min_distance_px,
        "sigma_px": p.sigma_px,
        "match_radius_px": p.match_px,
        "tile_size": cfg.tile_size,
        "tile_margin": cfg.tile_margin,
    }
    run.write_json("detection.json", info)
    summary: dict[str, Any] = {
        "method": p.method,
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "train_seconds": round(state.train_seconds, 1),
        "threshold": round(thr, 4),
        "val_f1": round(vf1, 4),
        "stop_reason": state.stop_reason,
    }
    if te:
        with run.stage("test"):
            refs = [_targets(c, p.target_ids) for c in te]
            dets = _detect_cases(model, te, p, cfg, device, threshold=0.02)
            per = [detection_scores(d[0][d[1] >= thr], r, p.match_px) for d, r in zip(dets, refs)]
            pooled = pooled_scores(per)
            ap = average_precision(dets, refs, p.match_px)
        run.write_json(
            "test_metrics.json",
            {
                "pooled": pooled,
                "average_precision": ap,
                "radius_px": p.match_px,
                "per_image": {c.name: s for c, s in zip(te, per)},
            },
        )
        summary.update(
            test_f1=round(pooled["f1"], 4),
            test_precision=round(pooled["precision"], 4),
            test_recall=round(pooled["recall"], 4),
            test_ap=round(ap, 4),
            test_images=len(te),
        )
    run.write_json("summary.json", summary)
    return summary


# ----------------------------------------------------------------------------- outputs


def to_geojson(points: np.ndarray, classes: Sequence[str], scores: np.ndarray | None = None) -> dict:
    """QuPath-importable GeoJSON FeatureCollection of Point annotations.

    QuPath's pixel coordinates have the origin at the top-left corner of the top-left pixel, so
    pixel centres (medseg's integer coordinates) are written at ``(x + 0.5, y + 0.5)``. Each
    feature has ``properties.classification = {"name", "color": [r, g, b]}`` and the score as a
    measurement.
    """
    feats = []
    for k, ((x, y), c) in enumerate(zip(np.asarray(points).reshape(-1, 2), classes)):
        props: dict[str, Any] = {
            "objectType": "annotation",
            "classification": {"name": str(c), "color": list(CLASS_COLORS.get(c, (255, 200, 0)))},
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


def _detections_csv(points, scores, classes) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["x", "y", "score", "class"])
    for (x, y), s, c in zip(points, scores, classes):
        w.writerow([f"{x:.2f}", f"{y:.2f}", f"{s:.5f}", c])
    return buf.getvalue()


def _class_values(classes: Sequence[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Class names -> marker class values of ``medseg.review.overlay`` (mitosis 1 = red, nucleus 2 = green)."""
    fixed = {"mitosis": 1, "nucleus": 2}
    extra = sorted(set(classes) - set(fixed))
    values = {**fixed, **{c: 3 + i for i, c in enumerate(extra)}}
    return np.asarray([values[c] for c in classes], int), {v: c for c, v in values.items()}


def overlay_markers(image: np.ndarray, points: np.ndarray, classes: Sequence[str], scores=None) -> np.ndarray | None:
    """(H, W, 3) uint8 overlay: one ring per detection (``medseg.review.overlay.markers_2d``); None if unavailable."""
    try:
        from medseg.review.overlay import markers_2d  # type: ignore[attr-defined]
    except ImportError:
        return None
    vals, names = _class_values(list(classes))
    return markers_2d(
        image,
        np.asarray(points, float).reshape(-1, 2),
        classes=vals,
        scores=scores,
        radius=6,
        class_names=names,
        show_scores=False,
    )


def _save_png(rgb: np.ndarray, path: Path) -> Path:
    try:
        from medseg.review.overlay import save_png  # type: ignore[attr-defined]

        return save_png(rgb, path)
    except ImportError:
        from skimage.io import imsave

        with atomic_write(path) as tmp:
            imsave(tmp, rgb, check_contrast=False)
        return path


def _expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix.lower() == ".json":
            if not p.is_file():
                raise MissingFileError("datalist not found", p)
            content = json.loads(p.read_text())
            key = "test" if content.get("test") else "training"
            for e in content.get(key, []):
                rel = e["image"] if isinstance(e, dict) else e
                files.append((p.parent / rel).resolve())
        else:
            files.append(p)
    if not files:
        raise InputError(
            "no input images found (PNG/TIFF/JPEG files, folders of them, or a datalist JSON)",
            ", ".join(str(i) for i in inputs),
        )
    return files


def detect(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    device: str = "auto",
    force: bool = False,
    threshold: float | None = None,
    cpu_threads: int | None = None,
) -> dict[str, Any]:
    """Detect cells / mitoses in images with a trained run folder.

    Parameters
    ----------
    model_dir : run folder written by :func:`train` (config.yaml, checkpoints/, detection.json).
    inputs : image files, folders of images, or a datalist JSON (its ``test`` list).
    out : output folder (a run folder: run.json, config.yaml); per image ``<stem>_detections.csv``
        (x, y, score, class), ``<stem>.geojson`` (QuPath), ``<stem>_overlay.png``; plus
        ``counts.csv`` (count and density per mm² per image) and ``detect_summary.json``.
    threshold : score threshold (default: the one chosen on validation, in detection.json).
    cpu_threads : torch CPU threads (default: the run config's ``cpu_threads``).

    A bad image is reported (``skipped`` in the summary) and the others finish.
    """
    from medseg.engine.checkpoint import load_run_model
    from medseg.engine.device import select_device

    model_dir = Path(model_dir)
    dev = select_device(device)
    model, cfg, _ = load_run_model(model_dir, map_location=dev)
    model.to(dev)
    p = _Params.from_config(cfg)
    info_path = model_dir / "detection.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    thr = float(
        threshold if threshold is not None else info.get("threshold", cfg.threshold if cfg.threshold != "auto" else 0.5)
    )
    with torch_threads(cpu_threads or cfg.cpu_threads):
        return _detect_files(model, cfg, p, dev, thr, inputs, Path(out), force, model_dir)


def _detect_files(model, cfg, p: _Params, dev, thr: float, inputs, out: Path, force: bool, model_dir: Path) -> dict:
    from medseg.runs import Run

    files = _expand_inputs(inputs)
    run = Run.create(out, cfg, force=force, command="detect")
    run.set(device=str(dev), model_dir=str(model_dir), threshold=thr)
    fn = score_map_fn(model, p.method, dev)
    rows, per_image, skipped = [], {}, {}
    t0 = time.perf_counter()
    n_pixels = 0
    with run:
        for f in files:
            try:
                img = open_image(f)
            except (InputError, MissingFileError) as e:
                log.error("skipped %s: %s", f.name, e)
                skipped[f.name] = str(e)
                continue
            n_pixels += img.shape[0] * img.shape[1]
            pts, sc = detect_tiled(
                fn,
                img,
                tile=cfg.tile_size,
                margin=cfg.tile_margin,
                min_distance_px=p.min_distance_px,
                threshold=thr,
                sigma_px=p.sigma_px,
            )
            cls = [p.output_class] * len(pts)
            stem = f.stem
            atomic_write_text(run.path / f"{stem}_detections.csv", _detections_csv(pts, sc, cls))
            atomic_write_text(run.path / f"{stem}.geojson", json.dumps(to_geojson(pts, cls, sc)) + "\n")
            ov = overlay_markers(img, pts, cls, sc) if img.shape[0] * img.shape[1] <= 25_000_000 else None
            overlay_path = _save_png(ov, run.path / f"{stem}_overlay.png") if ov is not None else None
            area_mm2 = img.shape[0] * img.shape[1] * (cfg.pixel_size_um * 1e-3) ** 2
            per_image[stem] = {
                "image": str(f),
                "count": len(pts),
                "area_mm2": area_mm2,
                "density_per_mm2": len(pts) / area_mm2,
                "detections": str(run.path / f"{stem}_detections.csv"),
                "geojson": str(run.path / f"{stem}.geojson"),
                "overlay": str(overlay_path) if overlay_path else None,
            }
            rows.append([stem, p.output_class, len(pts), f"{area_mm2:.6f}", f"{len(pts) / area_mm2:.2f}"])
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", "class", "count", "area_mm2", "density_per_mm2"])
        w.writerows(rows)
        atomic_write_text(run.path / "counts.csv", buf.getvalue())
        seconds = time.perf_counter() - t0
        summary = {
            "images": len(per_image),
            "skipped": len(skipped),
            "class": p.output_class,
            "total_count": int(sum(v["count"] for v in per_image.values())),
            "threshold": round(thr, 4),
            "seconds": round(seconds, 2),
            "megapixels_per_s": round(n_pixels / 1e6 / max(seconds, 1e-9), 3),
        }
        run.write_json("detect_summary.json", {**summary, "per_image": per_image, "skipped_files": skipped})
    summary["per_image"] = per_image
    summary["skipped_files"] = skipped
    return summary


# ----------------------------------------------------------------------------- evaluation


def _read_predictions(pred: Path, class_names: list[str]) -> dict[str, tuple]:
    """{image stem: (points, class names, scores)} from a detect output folder or one CSV."""
    out: dict[str, tuple] = {}
    if pred.is_dir():
        files = sorted(pred.glob("*_detections.csv"))
        if not files:
            raise MissingFileError(
                "no *_detections.csv files in the prediction folder (output of 'medseg detect')", pred
            )
        for f in files:
            d = _read_points_generic(f)
            out[f.name[: -len("_detections.csv")]] = d.get("", next(iter(d.values()), _empty()))
        return out
    d = _read_points_generic(pred)
    return {Path(k).stem: v for k, v in d.items()}


def _empty():
    return (np.zeros((0, 2)), [], np.zeros(0))


def _read_points_generic(path: Path) -> dict[str, tuple]:
    """Like read_points_csv but keeps class names as strings (any names)."""
    if not path.is_file():
        raise MissingFileError("points CSV not found", path)
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    if not {"x", "y"} <= set(cols):
        raise FileFormatError(f"points CSV needs columns x,y (and image, class, score); found {', '.join(cols)}", path)
    reader.fieldnames = cols
    acc: dict[str, list] = {}
    for i, row in enumerate(reader, start=2):
        try:
            x, y = float(row["x"]), float(row["y"])
            s = float(row["score"]) if row.get("score") not in (None, "") else 1.0
        except (TypeError, ValueError):
            raise FileFormatError(f"line {i}: x/y/score are not numbers", path) from None
        acc.setdefault((row.get("image") or "").strip(), []).append((x, y, (row.get("class") or "").strip(), s))
    res = {}
    for k, rows in acc.items():
        res[k] = (
            np.asarray([r[:2] for r in rows], float).reshape(-1, 2),
            [r[2] for r in rows],
            np.asarray([r[3] for r in rows], float),
        )
    return res


def evaluate(
    pred: str | Path,
    ref: str | Path,
    out: str | Path | None = None,
    radius: float | None = None,
    pixel_size: float | None = None,
) -> dict[str, Any]:
    """Score detections against reference points: P/R/F1 per image and pooled, AP.

    Parameters
    ----------
    pred : output folder of :func:`detect` (``*_detections.csv``) or one CSV ``image,x,y[,score,class]``.
    ref : points CSV ``image,x,y[,class]``, or a folder of instance masks (``<stem>.tif/.png``; centroids).
    out : folder for ``evaluation.csv`` (per image) and ``evaluation.json`` (default: ``pred``'s folder).
    radius : matching radius in pixels, or in µm when ``pixel_size`` (µm/px) is given; default 6 px
        (3 µm at 0.5 µm/px, about half a nucleus diameter).

    Scores are class-agnostic ("all": every prediction vs every reference point) and, for each
    predicted class that also occurs in the reference, per class. Images with predictions but
    no reference rows count as images without objects; when no image name matches at all, an
    InputError reports the mismatch. With a detect output folder, the images scored are those
    in the folder; with one predictions CSV, every image of either file (an image without rows
    in the predictions CSV has no detections).
    """
    pred, ref = Path(pred), Path(ref)
    r_px = 6.0 if radius is None else (radius_in_pixels(radius, pixel_size) if pixel_size else float(radius))
    preds = _read_predictions(pred, [])
    if ref.is_dir():
        refs = {}
        for f in sorted(ref.iterdir()):
            if f.suffix.lower() in (".tif", ".tiff", ".png"):
                if f.suffix.lower() in (".tif", ".tiff"):
                    import tifffile

                    m = tifffile.imread(f)
                else:
                    from skimage.io import imread

                    m = imread(f)
                c = centroids_from_mask(m)
                refs[f.stem] = (c, ["object"] * len(c), np.ones(len(c)))
    else:
        refs = {Path(k).stem: v for k, v in _read_points_generic(ref).items()}
    if pred.is_dir():
        # a detect output folder lists every processed image (a CSV even without detections):
        # score those; reference images that were not processed are left out
        names = sorted(preds)
        left = len(set(refs) - set(preds))
        if left:
            log.info("%d reference image(s) have no prediction file in %s: not scored", left, pred)
    else:
        names = sorted(set(preds) | set(refs))
    if preds and refs and not (set(preds) & set(refs)):
        raise InputError(
            f"no predicted image matches a reference image (e.g. {sorted(preds)[:3]} vs "
            f"{sorted(refs)[:3]}): mismatched image names",
            pred,
        )
    classes = sorted({c for v in preds.values() for c in v[1]} & {c for v in refs.values() for c in v[1]})
    results: dict[str, Any] = {}
    table = []
    for group in ["all"] + classes:
        per, dets, rf = [], [], []
        for n in names:
            pp, pc, ps = preds.get(n, _empty())
            rp, rc, _ = refs.get(n, _empty())
            if group != "all":
                pp, ps = pp[np.asarray(pc) == group], ps[np.asarray(pc) == group]
                rp = rp[np.asarray(rc) == group]
            s = detection_scores(pp, rp, r_px)
            per.append(s)
            dets.append((pp, ps))
            rf.append(rp)
            table.append(
                [n, group, s["tp"], s["fp"], s["fn"], f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}"]
            )
        results[group] = {**pooled_scores(per), "average_precision": average_precision(dets, rf, r_px)}
    out_dir = Path(out) if out is not None else (pred if pred.is_dir() else pred.parent)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "class", "tp", "fp", "fn", "precision", "recall", "f1"])
    w.writerows(table)
    atomic_write_text(out_dir / "evaluation.csv", buf.getvalue())
    report = {"radius_px": r_px, "pixel_size_um": pixel_size, "images": len(names), "pooled": results}
    atomic_write_text(out_dir / "evaluation.json", json.dumps(report, indent=2) + "\n")
    summary = {
        f"{g}_{k}": round(v[k], 4)
        for g, v in results.items()
        for k in ("f1", "precision", "recall", "average_precision")
    }
    summary.update(images=len(names), radius_px=r_px, output=str(out_dir / "evaluation.json"))
    return summary


# ----------------------------------------------------------------------------- demo


def demo_configs(datalist: Path, quick: bool) -> dict[str, Any]:
    """The nucleus and mitosis configs of the demo stage (small nets, minute-scale CPU budgets)."""
    from medseg.config import parse_config

    # short epochs so the wall-time budget (checked after each epoch) is kept closely; one torch
    # thread: the demo runs on a small shared CPU, where OpenMP threads can stall (see torch_threads)
    nuc = parse_config(
        {
            "task": "detection",
            "name": "nuclei",
            "method": "proximity",
            "seed": 0,
            "device": "auto",
            "data": {"datalist": str(datalist)},
            "model": {"name": "proximity_unet", "features": [8, 8, 16, 32, 64, 8]},
            "crop_size": 96,
            "cpu_threads": 1,
            "train": {
                "epochs": 30,
                "steps_per_epoch": 6,
                "batch_size": 6,
                "lr": 4e-3,
                "scheduler": "none",
                "max_minutes": 0.12 if quick else 0.55,
            },
        }
    )
    mit = parse_config(
        {
            "task": "detection",
            "name": "mitosis",
            "method": "mitosis",
            "seed": 0,
            "device": "auto",
            "data": {"datalist": str(datalist)},
            "model": {"name": "mitosis_cnn", "width": 16},
            "mine_every": 3,
            "cpu_threads": 1,
            "train": {
                "epochs": 30,
                "steps_per_epoch": 8,
                "batch_size": 32,
                "lr": 3e-3,
                "scheduler": "none",
                "max_minutes": 0.06 if quick else 0.25,
            },
        }
    )
    return {"nuclei": nuc, "mitosis": mit}


def run_demo(out: Path, quick: bool = False) -> dict[str, Any]:
    """Demo stage ``detection``: synthetic H&E tiles -> train nucleus + mitosis detectors briefly ->
    detect on held-out tiles -> evaluate -> review cases (counts, density, F1, overlay)."""
    from medseg.data.histology import CLASS_NAMES, write_histology_dataset
    from medseg.review.cases import ReviewCase
    from medseg.runs import Run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    datalist = write_histology_dataset(
        out / "data",
        n_train=4 if quick else 8,
        n_val=1 if quick else 2,
        n_test=2 if quick else 3,
        seed=0,
        mitosis_rate=0.08,
    )
    ds = json.loads(datalist.read_text())
    test_images = [(datalist.parent / e["image"]).resolve() for e in ds["test"]]
    ref = read_points_csv(datalist.parent / ds["points"], CLASS_NAMES)
    summary: dict[str, Any] = {}
    results = {}
    for key, cfg in demo_configs(datalist, quick).items():
        run = Run.create(out / f"{key}_run", cfg, force=True, command="demo")
        with run:
            s = train(cfg, run)
        det = detect(run.path, test_images, out / f"{key}_detections", device=cfg.device, force=True)
        results[key] = det
        summary[f"{key}_val_f1"] = s.get("val_f1")
        summary[f"{key}_test_f1"] = s.get("test_f1")
    cases = []
    for f in test_images:
        stem = f.stem
        img = read_image(f)
        pts_ref, cls_ref, _ = ref.get(f.name, (np.zeros((0, 2)), np.zeros(0, int), None))
        metrics, counts, density, outputs = {}, {}, {}, {}
        all_pts, all_cls = [], []
        for key, target_ids in (("nuclei", [0, 1]), ("mitosis", [1])):
            d = results[key]["per_image"].get(stem)
            if d is None:
                continue
            pr = _read_points_generic(Path(d["detections"]))[""]
            r = pts_ref[np.isin(cls_ref, target_ids)] if len(pts_ref) else pts_ref
            cname = "nucleus" if key == "nuclei" else "mitosis"
            metrics[f"f1_{cname}"] = round(detection_scores(pr[0], r, 6.0)["f1"], 4)
            counts[cname] = int(d["count"])
            density[cname] = round(float(d["density_per_mm2"]), 1)
            outputs[f"{cname}_csv"] = d["detections"]
            outputs[f"{cname}_geojson"] = d["geojson"]
            all_pts.append(pr[0])
            all_cls += [cname] * len(pr[0])
        ov = overlay_markers(img, np.concatenate(all_pts) if all_pts else np.zeros((0, 2)), all_cls)
        thumb = str(_save_png(ov, out / f"{stem}_overlay.png")) if ov is not None else None
        cases.append(
            ReviewCase(
                case_id=f"histology-{stem}",
                task="detection",
                thumbnail=thumb,
                overlays=[thumb] if thumb else [],
                counts=counts,
                density_per_mm2=density,
                metrics=metrics,
                outputs=outputs,
            )
        )
    return {"summary": summary, "cases": cases}
