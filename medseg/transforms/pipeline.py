"""Loading pipelines for segmentation: MONAI dictionary transforms from file paths to patches.

Order (deterministic part first, so ``CacheDataset``/``PersistentDataset`` keep its result and
epochs after the first never decode files again)::

    load (NIfTI / DICOM series / PNG)  ->  check case (NaNs, label values, image/label geometry)
    -> orientation RAS  ->  resample to the target spacing  ->  crop to the body (foreground)
    -> intensity preset  ->  pad to the patch size            | cached up to here
    -> RandCropByPosNegLabeld (pos/neg balanced patches)  ->  augmentation

Reading files happens in :func:`loader` only (``medseg.io.load``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    Spacingd,
    SpatialPadd,
)

from medseg.errors import InputError, LabelMismatchError
from medseg.io import load
from medseg.transforms.augment import augmentation
from medseg.transforms.presets import intensity_transform

__all__ = ["loader", "CheckCased", "BodyMask", "preprocess", "train_transforms", "case_name"]

log = logging.getLogger("medseg.transforms")


def case_name(d: Mapping, key: str = "image") -> str:
    """The source file of ``d[key]`` (for error messages), or '<in memory>'."""
    v = d.get(key)
    meta = getattr(v, "meta", None) or {}
    src = meta.get("filename_or_obj") if isinstance(meta, dict) else None
    return str(src) if src else str(d.get(f"{key}_path", "<in memory>"))


class LoadCased(MapTransform):
    """Read the files of a case with :func:`medseg.io.load` (NIfTI, DICOM series folder, PNG/TIFF).

    Each key becomes a channel-first MetaTensor ``(C, *S)`` whose affine maps voxels to RAS mm;
    ``meta["source_affine"]`` keeps the file's affine (outputs are written back onto it).
    """

    def __init__(self, keys: Sequence[str], spatial_dims: int = 3):
        super().__init__(list(keys), allow_missing_keys=True)
        self.spatial_dims = spatial_dims

    def __call__(self, data):
        d = dict(data)
        for k in self.key_iterator(d):
            v = d[k]
            if isinstance(v, (str, Path)):
                img = load(v)
                if self.spatial_dims == 2 and img.ndim == 4 and img.shape[-1] == 1:  # 2D stored as (X, Y, 1)
                    img = MetaTensor(img.as_tensor()[..., 0], affine=img.affine, meta=dict(img.meta))
                img.meta["source_affine"] = np.asarray(img.affine, dtype=np.float64).copy()
                img.meta.setdefault("filename_or_obj", str(v))
                d[k] = img
        return d


def loader(keys: Sequence[str], modality: str = "CT", spatial_dims: int = 3) -> LoadCased:
    """The file reader of the segmentation pipelines (``medseg.io.load`` for every key)."""
    return LoadCased(keys, spatial_dims)


class CheckCased(MapTransform):
    """Validate one case and map label values to training classes.

    Raises (naming the file)
    ------------------------
    InputError : NaN/inf in the image; a label map with no foreground; non-integer labels.
    LabelMismatchError : image and label shapes or affines differ; label values that are neither a
        class index ``0..n_classes-1`` nor a key of ``label_map``.
    """

    def __init__(
        self,
        n_classes: int,
        label_map: Mapping[int, int] | None = None,
        image_key: str = "image",
        label_key: str = "label",
        require_foreground: bool = True,
        affine_tol_mm: float = 1e-3,
    ):
        super().__init__([image_key, label_key], allow_missing_keys=True)
        self.n_classes = int(n_classes)
        self.label_map = {int(k): int(v) for k, v in (label_map or {}).items()}
        self.image_key, self.label_key = image_key, label_key
        self.require_foreground = require_foreground
        self.tol = affine_tol_mm

    def __call__(self, data):
        d = dict(data)
        img = d[self.image_key]
        name = case_name(d, self.image_key)
        if not torch.isfinite(torch.as_tensor(img)).all():
            raise InputError("image contains NaN or infinite values; fix or exclude this case", name)
        lab = d.get(self.label_key)
        if lab is None:
            return d
        lname = case_name(d, self.label_key)
        if tuple(lab.shape[1:]) != tuple(img.shape[1:]):
            raise LabelMismatchError(
                f"label map {lname} has shape {tuple(lab.shape[1:])} but the image has {tuple(img.shape[1:])}; "
                "they must be on the same voxel grid",
                name,
            )
        if lab.shape[0] != 1:
            raise LabelMismatchError(
                f"label map {lname} has {lab.shape[0]} channels; expected one integer label map", name
            )
        ia, la = getattr(img, "affine", None), getattr(lab, "affine", None)
        if ia is not None and la is not None and not np.allclose(np.asarray(ia), np.asarray(la), atol=self.tol):
            raise LabelMismatchError(
                f"label map {lname} does not overlay the image: affines differ "
                f"(max difference {float(np.abs(np.asarray(ia) - np.asarray(la)).max()):.3g} mm); "
                "resample the label onto the image grid",
                name,
            )
        arr = torch.as_tensor(lab)
        if torch.is_floating_point(arr) and not torch.equal(arr, torch.round(arr)):
            raise InputError(f"label map {lname} has non-integer values; expected integer class labels", name)
        values = [int(v) for v in torch.unique(arr).tolist()]
        allowed = set(range(self.n_classes)) | set(self.label_map)
        bad = [v for v in values if v not in allowed]
        if bad:
            raise LabelMismatchError(
                f"label map {lname} has unexpected values {bad[:10]}; allowed: 0..{self.n_classes - 1}"
                + (f" and label_map keys {sorted(self.label_map)}" if self.label_map else "")
                + " (map them with label_map in the config)",
                name,
            )
        if self.label_map:
            out = arr.clone()
            for src, dst in self.label_map.items():
                out[arr == src] = dst
            arr = out
        if self.require_foreground and not bool((arr > 0).any()):
            raise InputError(f"label map {lname} is empty (no foreground voxels); remove the case or label it", name)
        if self.label_map:
            lab = lab.clone()  # keeps the MetaTensor's affine / meta / applied operations
            lab.copy_(arr.to(lab.dtype))
        d[self.label_key] = lab
        return d


class BodyMask:
    """``select_fn`` for ``CropForegroundd``: voxels above ``threshold`` in any channel (picklable)."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, x):
        return (x > self.threshold).any(0, keepdim=True)


#: anatomical axis labels (explicit: MONAI's default is changing)
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def _axcodes(spatial_dims: int) -> str:
    return "RAS"[:spatial_dims]


def preprocess(
    keys: Sequence[str],
    *,
    spatial_dims: int,
    modality: str,
    target_spacing: Sequence[float] | None,
    norm: Mapping | None = None,
    crop_foreground: bool = True,
    check: CheckCased | None = None,
    load: bool = True,
) -> Compose:
    """Deterministic part: load -> check -> RAS -> spacing -> crop body -> intensity.

    Parameters
    ----------
    keys : ("image",) or ("image", "label").
    spatial_dims : 2 or 3.
    modality : "CT" | "MR" | "RGB" | "other"; RGB images are neither reoriented nor resampled.
    target_spacing : mm per axis, or None to keep the source spacing.
    norm : ``{"clip": [lo, hi], "mean": m, "std": s}`` (CT statistics of the plan).
    crop_foreground : crop to the bounding box of the body (CT: > -500 HU; others: > min).
    check : the case validator (training / evaluation only).
    load : include the file loader (False when the dict already holds MetaTensors).

    Returns
    -------
    ``Compose`` mapping ``{"image": path[, "label": path]}`` to ``{"image": (C, *S) float,
    "label": (1, *S)}`` MetaTensors that remember every spatial operation (for ``Invertd``).
    """
    keys = list(keys)
    has_label = "label" in keys
    t: list = []
    if load:
        t.append(loader(keys, modality, spatial_dims))
    t.append(EnsureTyped(keys, dtype=torch.float32, track_meta=True))
    if check is not None:
        t.append(check)
    if modality != "RGB":
        t.append(Orientationd(keys, axcodes=_axcodes(spatial_dims), labels=RAS_LABELS))
        if target_spacing is not None:
            mode = ["bilinear", "nearest"] if has_label else ["bilinear"]
            t.append(Spacingd(keys, pixdim=list(target_spacing), mode=mode, padding_mode="border"))
    if crop_foreground:
        thr = -500.0 if modality == "CT" else None
        if thr is not None:
            t.append(CropForegroundd(keys, source_key="image", select_fn=BodyMask(thr), margin=2, allow_smaller=True))
    norm = dict(norm or {})
    t.append(
        intensity_transform(modality, ["image"], clip=norm.get("clip"), mean=norm.get("mean"), std=norm.get("std"))
    )
    return Compose(t)


def train_transforms(
    *,
    spatial_dims: int,
    modality: str,
    target_spacing: Sequence[float] | None,
    patch_size: Sequence[int],
    n_classes: int,
    label_map: Mapping[int, int] | None = None,
    norm: Mapping | None = None,
    augment: str = "default",
    flip_axes: Sequence[int] | None = None,
    samples_per_image: int = 2,
    pos_fraction: float = 0.67,
) -> tuple[Compose, Compose]:
    """(training transform, validation transform) for an image + label datalist.

    Training: :func:`preprocess` + pad to ``patch_size`` + ``RandCropByPosNegLabeld`` (``pos_fraction``
    of the patches centred on foreground) + the augmentation set. Validation: :func:`preprocess`
    only (whole volumes for sliding-window validation). Volumes smaller than the patch are padded.
    """
    keys = ["image", "label"]
    check = CheckCased(n_classes, label_map)
    pre = preprocess(
        keys, spatial_dims=spatial_dims, modality=modality, target_spacing=target_spacing, norm=norm, check=check
    )
    pos = max(pos_fraction, 1e-3)
    neg = max(1.0 - pos_fraction, 0.0)
    train = Compose(
        [
            *pre.transforms,
            SpatialPadd(["image"], spatial_size=list(patch_size), mode="edge"),
            SpatialPadd(["label"], spatial_size=list(patch_size), mode="constant"),
            RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=list(patch_size),
                pos=pos,
                neg=neg,
                num_samples=samples_per_image,
                image_key="image",
                allow_smaller=False,
            ),
            augmentation(augment, spatial_dims, keys, flip_axes=flip_axes),
            EnsureTyped(keys, track_meta=False),
        ]
    )
    val = Compose([*pre.transforms])
    return train, val
