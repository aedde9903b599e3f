"""Images and data sets of the detection task: opening (large) images, datalist splits, synthetic tiles.

Pixels are read only through :func:`medseg.io.read_image_uint8` (+ :func:`medseg.io.as_rgb`), the
one 2D reader of every task: gray images become RGB by replication, RGBA drops alpha, 16-bit and
float images are mapped to 8 bit by :func:`medseg.io.to_uint8`. The one exception is the lazy path
of :func:`open_image` for very large uncompressed 8-bit RGB TIFFs, a read-only memory map whose
pixels are those ``read_image_uint8`` would return (8-bit RGB needs no conversion).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from medseg.config import DetectionConfig, load_datalist
from medseg.data.histology import write_histology_dataset
from medseg.errors import ConfigError, InputError
from medseg.io import as_rgb, read_image_uint8
from medseg.io.registry import suffixes
from medseg.tasks.detection.annotations import Case, check_annotation_names, load_cases

__all__ = ["open_image", "datalist_splits", "synthetic_datalist", "DetectionData", "load_detection_data"]

log = logging.getLogger("medseg.detection")

_TIFF = tuple(s for s in suffixes("image2d") if s.startswith(".tif"))


def _memmappable_rgb8(path: Path, lazy_min_pixels: int) -> bool:
    """True for a single-image, uncompressed, 8-bit RGB (H, W, 3) TIFF of at least ``lazy_min_pixels``."""
    try:
        with tifffile.TiffFile(path) as tf:
            page, series = tf.pages[0], tf.series[0]
            return bool(
                page.dtype == np.uint8
                and len(page.shape) == 3
                and page.shape[-1] == 3
                and tuple(series.shape) == tuple(page.shape)
                and int(np.prod(page.shape[:2])) >= lazy_min_pixels
                and page.is_memmappable
            )
    except Exception:  # unreadable here: read_image_uint8 raises the proper error
        return False


def open_image(path: str | Path, lazy_min_pixels: int = 16_000_000) -> np.ndarray:
    """Open an image for detection as (H, W, 3) uint8 RGB.

    A large uncompressed 8-bit RGB TIFF (at least ``lazy_min_pixels`` pixels) is returned as a
    read-only memory map (:func:`medseg.engine.tiling.detect_tiled` reads it tile by tile, so memory
    stays bounded); its pixels equal ``read_image_uint8``'s. Anything else is read into memory by
    ``as_rgb(read_image_uint8(path))``.

    Raises
    ------
    MissingFileError; FileFormatError (unreadable, or not a 2D gray/RGB(A) image).
    """
    path = Path(path)
    if path.suffix.lower() in _TIFF and path.is_file() and _memmappable_rgb8(path, lazy_min_pixels):
        return tifffile.memmap(path, mode="r")
    return as_rgb(read_image_uint8(path))


def synthetic_datalist(cfg: DetectionConfig, folder: Path) -> Path:
    """Write the synthetic H&E data set of ``cfg.data`` into ``folder``; returns its ``dataset.json``."""
    return write_histology_dataset(
        folder,
        n_train=cfg.data.num_cases,
        n_val=cfg.data.synthetic_val,
        n_test=cfg.data.synthetic_test,
        seed=cfg.seed,
        shape=cfg.data.synthetic_shape,
        pixel_size_um=cfg.data.pixel_size_um,
    )


def datalist_splits(cfg: DetectionConfig, datalist: Path) -> tuple[dict[str, list[dict[str, Any]]], Path | None]:
    """Training / validation / test entries (absolute paths) and the points CSV of a datalist.

    Without a ``validation`` list, the last ``data.val_fraction`` of the training entries (at least
    one) are held out. The points CSV is ``data.annotations``, else the datalist's ``"points"``.
    """
    content = json.loads(Path(datalist).read_text())
    root = Path(cfg.data.root) if cfg.data.root else Path(datalist).parent
    splits: dict[str, list[dict[str, Any]]] = {}
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
    ann = cfg.data.annotations
    if ann is None and content.get("points"):
        ann = (root / content["points"]).resolve()
    return splits, ann


@dataclass
class DetectionData:
    """The annotated cases of a run: training, validation (for the threshold) and test."""

    datalist: Path
    training: list[Case]
    validation: list[Case]
    test: list[Case]


def load_detection_data(cfg: DetectionConfig, run_dir: Path) -> DetectionData:
    """Read the data of a training run: ``data.datalist``, or synthetic tiles written into ``run_dir/data``.

    Without validation entries, the last training image validates. Raises ConfigError without a data
    source, InputError without training images or with mismatched annotation names.
    """
    if cfg.data.datalist is not None:
        datalist = Path(cfg.data.datalist)
    elif cfg.data.synthetic:
        datalist = synthetic_datalist(cfg, run_dir / "data")
    else:
        raise ConfigError("detection needs data.datalist (MSD-style JSON) or data.synthetic: true")
    splits, ann = datalist_splits(cfg, datalist)
    if not splits["training"]:
        raise InputError("the datalist has no training images", datalist)
    names = cfg.class_names
    if ann is not None:
        check_annotation_names(ann, [Path(e["image"]) for s in splits.values() for e in s], names)
    return DetectionData(
        datalist=datalist,
        training=load_cases(splits["training"], ann, names, datalist),
        validation=load_cases(splits["validation"] or splits["training"][-1:], ann, names, datalist),
        test=load_cases(splits["test"], ann, names, datalist) if splits["test"] else [],
    )
