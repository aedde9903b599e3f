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
from medseg.io import as_rgb, read_image_array, read_image_uint8
from medseg.io.registry import suffixes
from medseg.io.resolution import read_pixel_size_um
from medseg.tasks.detection.annotations import Case, check_annotation_names, load_cases, split_block
from medseg.transforms.microscopy import choose_modality, read_microscopy

__all__ = [
    "open_image",
    "datalist_splits",
    "synthetic_datalist",
    "DetectionData",
    "load_detection_data",
    "resolve_microscopy",
    "DEFAULT_PIXEL_SIZE_UM",
]

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


def open_image(path: str | Path, lazy_min_pixels: int = 16_000_000, modality: str = "he") -> np.ndarray:
    """Open an image for detection as (H, W, 3) uint8 RGB.

    A large uncompressed 8-bit RGB TIFF (at least ``lazy_min_pixels`` pixels) is returned as a
    read-only memory map (:func:`medseg.engine.tiling.detect_tiled` reads it tile by tile, so memory
    stays bounded); its pixels equal ``read_image_uint8``'s. Anything else is read into memory by
    ``as_rgb(read_image_uint8(path))``; a ``fluorescence`` / ``brightfield`` image is percentile-normalised
    (:func:`medseg.transforms.microscopy.read_microscopy`; pass the run's ``modality`` from ``detection.json``).

    Raises
    ------
    MissingFileError; FileFormatError (unreadable, or not a 2D gray/RGB(A) image).
    """
    path = Path(path)
    if modality != "he":
        return read_microscopy(path, modality)
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
        pixel_size_um=cfg.data.pixel_size_um or DEFAULT_PIXEL_SIZE_UM,
    )


def datalist_splits(cfg: DetectionConfig, datalist: Path) -> tuple[dict[str, list[dict[str, Any]]], Path | None]:
    """Training / validation / test entries (absolute paths) and the points CSV of a datalist.

    Without a ``validation`` list, the last ``data.val_fraction`` of the training entries (at least
    one) are held out when at least one image is left to train on; with a single training image
    nothing is held out here (:func:`load_detection_data` holds out a spatial block of it). The
    points CSV is ``data.annotations``, else the datalist's ``"points"``.
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
    """The annotated cases of a run: training, validation (for the threshold) and test.

    ``cfg`` is the run's config with the pixel size, modality and augmentation strengths resolved
    from the data (:func:`resolve_microscopy`); ``validation_note`` says what validates and why.
    """

    datalist: Path
    training: list[Case]
    validation: list[Case]
    test: list[Case]
    cfg: DetectionConfig
    validation_note: dict[str, Any]


#: the pixel size assumed when neither the config nor the files give one (µm)
DEFAULT_PIXEL_SIZE_UM = 0.5
#: share of a single training image held out as a validation block
BLOCK_FRACTION = 0.2


def resolve_microscopy(cfg: DetectionConfig, image: Path) -> tuple[DetectionConfig, dict[str, Any]]:
    """The config with ``data.pixel_size_um``, ``data.modality`` and the augmentation strengths made concrete.

    - pixel size: the config's value; else the image's OME-TIFF / ImageJ / TIFF resolution
      (:func:`medseg.io.resolution.read_pixel_size_um`); else :data:`DEFAULT_PIXEL_SIZE_UM` with a
      warning. A config value that differs from the file's by more than 5 % warns (the config wins).
    - modality ``auto``: :func:`medseg.transforms.microscopy.choose_modality` on the first training
      image (logged); stain jitter 0.05 for he, 0 otherwise; intensity jitter 0.1 unless he.

    Returns (resolved config, ``{"pixel_size_source", "modality_reason"}``).
    """
    notes: dict[str, Any] = {}
    from_file = read_pixel_size_um(image)
    ps = cfg.data.pixel_size_um
    if ps is None:
        if from_file is not None:
            ps = from_file.um
            notes["pixel_size_source"] = f"{from_file.source} metadata of {image.name}"
            log.info("pixel size %.4g µm from the %s metadata of %s", ps, from_file.source, image.name)
        else:
            ps = DEFAULT_PIXEL_SIZE_UM
            notes["pixel_size_source"] = "default (no resolution metadata in the images)"
            log.warning(
                "no pixel size in %s (OME-TIFF / ImageJ / TIFF resolution): assuming %.3g µm; set "
                "data.pixel_size_um, else distances in µm and densities per mm² are wrong",
                image.name,
                ps,
            )
    else:
        notes["pixel_size_source"] = "config"
        if from_file is not None and abs(from_file.um - ps) > 0.05 * ps:
            log.warning(
                "data.pixel_size_um is %.4g µm but %s says %.4g µm (%s metadata); using the config's value",
                ps,
                image.name,
                from_file.um,
                from_file.source,
            )
    modality: str = cfg.data.modality
    if modality == "auto":
        modality, why = choose_modality(read_image_array(image))
        notes["modality_reason"] = f"chosen from {image.name}: {why}"
        log.info("detection: modality %s (%s; set data.modality to override)", modality, notes["modality_reason"])
    else:
        notes["modality_reason"] = "config"
    stain = cfg.augment.stain_jitter
    if stain is None:
        stain = 0.05 if modality == "he" else 0.0
    elif stain > 0 and modality != "he":
        log.warning("augment.stain_jitter is H&E stain augmentation; the images are %s: not applied", modality)
        stain = 0.0
    inten = cfg.augment.intensity_jitter
    if inten is None:
        inten = 0.0 if modality == "he" else 0.1
    data = cfg.data.model_copy(update={"pixel_size_um": float(ps), "modality": modality})
    augment = cfg.augment.model_copy(update={"stain_jitter": float(stain), "intensity_jitter": float(inten)})
    return cfg.model_copy(update={"data": data, "augment": augment}), notes


def load_detection_data(cfg: DetectionConfig, run_dir: Path) -> DetectionData:
    """Read the data of a training run: ``data.datalist``, or synthetic tiles written into ``run_dir/data``.

    Without validation entries (a single training image), the last :data:`BLOCK_FRACTION` of each
    training image along its longer axis validates and is cut out of training (never the training
    pixels themselves). Raises ConfigError without a data source, InputError without training
    images or with mismatched annotation names.
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
    cfg, notes = resolve_microscopy(cfg, Path(splits["training"][0]["image"]))
    mod = cfg.data.modality
    training = load_cases(splits["training"], ann, names, datalist, modality=mod)
    if splits["validation"]:
        validation = load_cases(splits["validation"], ann, names, datalist, modality=mod)
        note = {"mode": "images", "images": len(validation), "reason": f"{len(validation)} held-out image(s)"}
    else:
        pairs = [split_block(c, BLOCK_FRACTION) for c in training]
        training, validation = [a for a, _ in pairs], [b for _, b in pairs]
        note = {
            "mode": "spatial_block",
            "images": 0,
            "reason": f"{len(training)} training image(s): too few for a held-out image (data.val_fraction "
            f"{cfg.data.val_fraction:g}); the last {BLOCK_FRACTION:.0%} of each along its longer axis validates "
            "(threshold and best checkpoint) and is left out of training",
        }
        log.warning("validation: %s", note["reason"])
    note.update(notes)
    return DetectionData(
        datalist=datalist,
        training=training,
        validation=validation,
        test=load_cases(splits["test"], ann, names, datalist, modality=mod) if splits["test"] else [],
        cfg=cfg,
        validation_note=note,
    )
