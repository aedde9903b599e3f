"""Lesions of volumes as classification samples (``task: classification`` with ``volume:``).

A datalist entry is one lesion: ``{"image": "ct.nii.gz", "mask": "ct_label.nii.gz", "mask_value": 2,
"label": "malignant"}`` (``mask_value`` default: every non-zero voxel; ``center_mm`` [R, A, S] may
replace or override the mask's centroid). Each lesion becomes a uint8 crop ``(C, G, G, G)``
(:func:`medseg.transforms.lesion_crop.lesion_crop`): the same tensors the 2D task trains on, so the
training loop, calibration, operating points and bootstrap CIs are the 2D task's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai import transforms as mt

from medseg.config import LesionVolumeSection, read_datalist_json
from medseg.errors import ConfigError, InputError, MedsegError
from medseg.io import load
from medseg.tasks.classification.data import Split, label_index, stratified_holdout
from medseg.transforms.lesion_crop import lesion_crop

__all__ = [
    "LesionRow",
    "read_lesion_datalist",
    "holdout_lesions",
    "crop_for",
    "lesion_crops",
    "volume_augmentation",
]

log = logging.getLogger("medseg.tasks.classification")


@dataclass(frozen=True)
class LesionRow:
    """One lesion of a datalist: its volume, mask, mask value, class index, optional centre (RAS mm)."""

    image: Path
    label: int
    mask: Path | None = None
    mask_value: int | None = None
    center_mm: tuple[float, float, float] | None = None

    @property
    def name(self) -> str:
        """``<volume file>#<mask value>`` (``#c`` when located by its centre only)."""
        tag = self.mask_value if self.mask_value is not None else ("mask" if self.mask is not None else "c")
        return f"{self.image.name}#{tag}"


def read_lesion_datalist(path: Path, root: Path | None, class_names: Sequence[str]) -> dict[str, list[LesionRow]]:
    """The ``training`` / ``validation`` / ``test`` lesions of a datalist (see the module doc).

    Raises ConfigError for an entry without ``image`` and ``label`` or without ``mask`` and ``center_mm``.
    """
    content = read_datalist_json(path)
    base = Path(root) if root else path.parent
    out: dict[str, list[LesionRow]] = {}
    for key in ("training", "validation", "test"):
        rows = []
        for i, it in enumerate(content.get(key) or []):
            where = f"{path.name} {key}[{i}]"
            if not isinstance(it, dict) or "image" not in it or "label" not in it:
                raise ConfigError(f"datalist entry {key}[{i}] needs 'image' and 'label'", path)
            if "mask" not in it and "center_mm" not in it:
                raise ConfigError(f"{where}: a lesion entry needs 'mask' (and 'mask_value') or 'center_mm'", path)
            c = it.get("center_mm")
            if c is not None and (not isinstance(c, list) or len(c) != 3):
                raise ConfigError(f"{where}: center_mm must be [R, A, S] in mm, got {c!r}", path)

            def p(v: str) -> Path:
                q = Path(v)
                return q if q.is_absolute() else base / q

            rows.append(
                LesionRow(
                    image=p(it["image"]),
                    label=label_index(it["label"], class_names, where),
                    mask=p(it["mask"]) if it.get("mask") else None,
                    mask_value=int(it["mask_value"]) if it.get("mask_value") is not None else None,
                    center_mm=(float(c[0]), float(c[1]), float(c[2])) if c is not None else None,
                )
            )
        out[key] = rows
    if not out["training"]:
        raise ConfigError("datalist has no 'training' lesions", path)
    return out


def holdout_lesions(rows: list[LesionRow], fraction: float, seed: int) -> tuple[list[LesionRow], list[LesionRow]]:
    """Stratified (training, validation) split of lesions (the 2D task's rule, :func:`stratified_holdout`)."""
    tr, va = stratified_holdout([(Path(str(i)), r.label) for i, r in enumerate(rows)], fraction, seed)
    return [rows[int(p.name)] for p, _ in tr], [rows[int(p.name)] for p, _ in va]


def crop_for(
    image: np.ndarray,
    affine: np.ndarray,
    lesion_mask: np.ndarray | None,
    vol: LesionVolumeSection,
    center_mm: Sequence[float] | None = None,
) -> np.ndarray:
    """The ``(C, G, G, G)`` uint8 crop of one lesion as ``vol`` says (centre: ``center_mm`` or the
    mask's centroid). The one crop rule of training, the lesion pipeline and Grad-CAM."""
    if center_mm is None:
        if lesion_mask is None or not lesion_mask.any():
            raise InputError("the lesion mask is empty (wrong mask_value?)")
        cen = np.argwhere(lesion_mask).mean(axis=0)
        center_mm = np.asarray(affine, float)[:3, :3] @ cen + np.asarray(affine, float)[:3, 3]
    return lesion_crop(
        image,
        affine,
        center_mm,
        size_mm=vol.size_mm,
        grid=vol.grid,
        mask=lesion_mask if vol.mask_channel else None,
        window=vol.window,
    )


def _volume(path: Path, cache: dict[Path, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if path not in cache:
        img = load(path)
        arr = np.asarray(img.array if hasattr(img, "array") else img)
        if arr.ndim != 4 or arr.shape[0] != 1:
            raise InputError(f"a lesion volume must be one 3D image, got shape {tuple(arr.shape)}", path)
        cache.clear()  # entries of one volume are consecutive in a datalist: keep one volume in memory
        cache[path] = (arr[0], np.asarray(img.affine, dtype=float))
    return cache[path]


def lesion_crops(
    rows: Sequence[LesionRow], vol: LesionVolumeSection, skipped: list[dict[str, str]]
) -> tuple[torch.Tensor, Split]:
    """Crops of datalist lesions: a uint8 batch ``(N, C, G, G, G)`` and the split's names/labels.

    Unreadable volumes or masks, and empty lesion masks, are appended to ``skipped`` (image, error).
    """
    crops: list[np.ndarray] = []
    kept: list[LesionRow] = []
    images: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    masks: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    for r in rows:
        try:
            image, affine = _volume(r.image, images)
            m = None
            if r.mask is not None:
                marr, maff = _volume(r.mask, masks)
                if marr.shape != image.shape:
                    raise InputError(f"mask shape {marr.shape} differs from the image's {image.shape}", r.mask)
                m = np.rint(marr) == r.mask_value if r.mask_value is not None else marr > 0
            crops.append(crop_for(image, affine, m, vol, r.center_mm))
        except MedsegError as e:
            log.warning("skipping lesion %s: %s", r.name, e)
            skipped.append({"image": f"{r.image}#{r.mask_value}", "error": str(e)})
            continue
        kept.append(r)
    g, c = int(vol.grid), 2 if vol.mask_channel else 1
    x = torch.from_numpy(np.stack(crops)) if crops else torch.zeros((0, c, g, g, g), dtype=torch.uint8)
    split = Split([r.name for r in kept], [r.image for r in kept], np.array([r.label for r in kept], dtype=np.int64))
    return x, split


def volume_augmentation(vol: LesionVolumeSection) -> list[Any]:
    """MONAI random transforms of lesion crops ``{"image": (C, G, G, G)}``: flips of each axis,
    90-degree rotations in the axial plane (nodules have no preferred orientation)."""
    if not vol.augment:
        return []
    return [
        mt.RandFlipd(keys="image", prob=0.5, spatial_axis=0),
        mt.RandFlipd(keys="image", prob=0.5, spatial_axis=1),
        mt.RandFlipd(keys="image", prob=0.5, spatial_axis=2),
        mt.RandRotate90d(keys="image", prob=0.5, max_k=3, spatial_axes=(0, 1)),
    ]
