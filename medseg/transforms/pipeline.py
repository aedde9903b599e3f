"""Loading pipelines for segmentation: MONAI dictionary transforms from file paths to patches.

Order (deterministic part first, so ``CacheDataset``/``PersistentDataset`` keep its result and
epochs after the first never decode files again)::

    load (NIfTI / DICOM series / PNG)  ->  check case (NaNs, label values, image/label geometry)
    -> orientation RAS  ->  resample to the target spacing  ->  crop to the body / non-zero region
    -> intensity preset                                       | cached up to here
    -> [spatial block of a single case]  ->  pad by half a patch (background windows)
    -> RandCropByPosNegLabeld (pos/neg balanced patches)  ->  [slice of a 2D configuration]
    -> augmentation

Cropping rule per modality (:func:`crop_rule`): CT to the body (> -500 HU), RGB photos not at all,
every other modality (MR, fluorescence, other) to the non-zero region (nnU-Net's crop-to-nonzero).

Reading files happens in :func:`loader` only (``medseg.io.load``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    BorderPadd,
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    Spacingd,
    SpatialPadd,
    SqueezeDimd,
)

from medseg.errors import InputError, LabelMismatchError
from medseg.io import load
from medseg.transforms.augment import augmentation
from medseg.transforms.presets import intensity_transform

__all__ = [
    "loader",
    "CheckCased",
    "BodyMask",
    "SpatialBlockd",
    "crop_rule",
    "foreground_mask",
    "preprocess",
    "train_transforms",
    "case_name",
    "is_photo",
]

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


def crop_rule(modality: str) -> dict[str, Any]:
    """How images of ``modality`` are cropped before training and inference.

    Returns ``{"mode": "body" | "nonzero" | "none", "threshold": float | None, "reason": str}``:
    CT is cropped to the body (voxels above -500 HU: air is -1000, never exactly 0), RGB photos and
    H&E images are not cropped (their background is bright), every other modality to the bounding
    box of its non-zero voxels (nnU-Net's crop-to-nonzero: skull-stripped MR, masked images).
    """
    if modality == "CT":
        return {"mode": "body", "threshold": -500.0, "reason": "CT: the body is above -500 HU"}
    if modality in ("RGB", "he", "brightfield"):
        return {"mode": "none", "threshold": None, "reason": f"{modality}: bright background, nothing to crop"}
    return {"mode": "nonzero", "threshold": 0.0, "reason": f"{modality}: crop to the non-zero region (nnU-Net)"}


def foreground_mask(image: np.ndarray, rule: Mapping[str, Any]) -> np.ndarray:
    """The ``(*S)`` bool mask cropped to by ``rule`` (:func:`crop_rule`) for an image ``(C, *S)``."""
    if rule["mode"] == "body":
        return np.asarray((np.asarray(image) > float(rule["threshold"])).any(0))
    if rule["mode"] == "nonzero":
        return np.asarray((np.asarray(image) != 0).any(0))
    return np.ones(np.asarray(image).shape[1:], bool)


class BodyMask:
    """``select_fn`` for ``CropForegroundd``: voxels above ``threshold`` in any channel (picklable).

    ``threshold=None`` selects the non-zero voxels. An image with nothing selected keeps its whole
    extent (an empty crop would leave nothing to predict on).
    """

    def __init__(self, threshold: float | None):
        self.threshold = threshold

    def __call__(self, x):
        m = (x != 0).any(0, keepdim=True) if self.threshold is None else (x > self.threshold).any(0, keepdim=True)
        return m if bool(m.any()) else torch.ones_like(m)


class SpatialBlockd(MapTransform):
    """Hold out a spatial block of a case: the ``"block"`` entry of the dict says which part to keep.

    ``"block": "train:0.2"`` keeps the first 80 % of the case along its longest physical axis,
    ``"val:0.2"`` the last 20 % (so one training volume or image gives disjoint training and
    validation regions). Dicts without ``"block"`` pass unchanged.
    """

    def __init__(self, keys: Sequence[str]):
        super().__init__(list(keys), allow_missing_keys=True)

    def __call__(self, data):
        d = dict(data)
        spec = d.get("block")
        if not spec:
            return d
        part, frac = str(spec).split(":")
        img = d[self.keys[0]]
        aff = np.asarray(getattr(img, "affine", np.eye(4)), float)
        nd = img.ndim - 1
        extent = np.array(img.shape[1:], float) * np.linalg.norm(aff[:nd, :nd], axis=0)
        ax = int(np.argmax(extent))
        n = int(img.shape[1 + ax])
        cut = int(round(n * (1.0 - float(frac))))
        cut = min(max(cut, 1), n - 1)
        sl = slice(0, cut) if part == "train" else slice(cut, n)
        for k in self.key_iterator(d):
            idx = [slice(None)] * d[k].ndim
            idx[1 + ax] = sl
            d[k] = d[k][tuple(idx)]
        return d


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
    """Deterministic part: load -> check -> RAS -> spacing -> crop (body / non-zero) -> intensity.

    Parameters
    ----------
    keys : ("image",) or ("image", "label").
    spatial_dims : 2 or 3.
    modality : "CT" | "MR" | "RGB" | "he" | "fluorescence" | "brightfield" | "other"; RGB and H&E
        images are neither reoriented nor resampled.
    target_spacing : mm per axis (0 or less on an axis: keep the source spacing there), or None.
    norm : ``{"clip": [lo, hi], "mean": m, "std": s}`` (CT statistics of the plan) or
        ``{"nonzero_mask": bool}`` (z-score inside the non-zero mask, other modalities).
    crop_foreground : crop by the modality's rule (:func:`crop_rule`: CT body, non-zero region ...).
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
    if not is_photo(modality):
        t.append(Orientationd(keys, axcodes=_axcodes(spatial_dims), labels=RAS_LABELS))
        if target_spacing is not None:
            mode = ["bilinear", "nearest"] if has_label else ["bilinear"]
            t.append(Spacingd(keys, pixdim=list(target_spacing), mode=mode, padding_mode="border"))
    rule = crop_rule(modality)
    if crop_foreground and rule["mode"] != "none":
        thr = None if rule["mode"] == "nonzero" else float(rule["threshold"])
        t.append(CropForegroundd(keys, source_key="image", select_fn=BodyMask(thr), margin=2, allow_smaller=True))
    norm = dict(norm or {})
    t.append(
        intensity_transform(
            modality,
            ["image"],
            clip=norm.get("clip"),
            mean=norm.get("mean"),
            std=norm.get("std"),
            nonzero=norm.get("nonzero_mask"),
        )
    )
    return Compose(t)


def is_photo(modality: str) -> bool:
    """RGB photos and H&E images: display-ordered pixels, neither reoriented nor resampled."""
    return modality in ("RGB", "he")


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
    slice_axis: int | None = None,
) -> tuple[Compose, Compose]:
    """(training transform, validation transform) for an image + label datalist.

    Training: :func:`preprocess` + :class:`SpatialBlockd` + padding by half a patch (so that patch
    centres reach every voxel and windows of pure background are drawn, as nnU-Net's sampler does;
    images smaller than the patch are padded to it) + ``RandCropByPosNegLabeld`` (``pos_fraction`` of
    the patches centred on foreground, the others on background voxels) + the augmentation set.
    With ``slice_axis`` (the 2D configuration of a volume) ``patch_size`` has 2 values, patches are
    single slices across that axis, squeezed to ``(C, px, py)``, and ``flip_axes`` name volume axes.
    Validation: :func:`preprocess` + :class:`SpatialBlockd` only (whole volumes for sliding-window
    validation). Background padding is 0 when the plan normalises inside the non-zero mask (the
    background is exactly 0 there), else the edge value.
    """
    keys = ["image", "label"]
    check = CheckCased(n_classes, label_map)
    pre = preprocess(
        keys, spatial_dims=spatial_dims, modality=modality, target_spacing=target_spacing, norm=norm, check=check
    )
    pos = max(pos_fraction, 1e-3)
    neg = max(1.0 - pos_fraction, 0.0)
    patch = [int(p) for p in patch_size]
    if slice_axis is not None:
        patch.insert(int(slice_axis), 1)
    zero_bg = bool(dict(norm or {}).get("nonzero_mask"))
    half = [p // 2 for p in patch]
    pad_mode = "constant" if zero_bg else "edge"
    block = SpatialBlockd(keys)
    t: list = [
        *pre.transforms,
        block,
        BorderPadd(["image"], spatial_border=half, mode=pad_mode),
        BorderPadd(["label"], spatial_border=half, mode="constant"),
        SpatialPadd(["image"], spatial_size=patch, mode=pad_mode),
        SpatialPadd(["label"], spatial_size=patch, mode="constant"),
        RandCropByPosNegLabeld(
            keys,
            label_key="label",
            spatial_size=patch,
            pos=pos,
            neg=neg,
            num_samples=samples_per_image,
            image_key=None,  # negatives centred on any label-0 voxel, zero background included
            allow_smaller=False,
        ),
    ]
    aug_dims, aug_flips = spatial_dims, flip_axes
    if slice_axis is not None:
        t.append(SqueezeDimd(keys, dim=1 + int(slice_axis)))
        inplane = [a for a in range(spatial_dims) if a != int(slice_axis)]
        aug_dims = 2
        aug_flips = [inplane.index(a) for a in (flip_axes or []) if a in inplane]
    t += [augmentation(augment, aug_dims, keys, flip_axes=aug_flips), EnsureTyped(keys, track_meta=False)]
    val = Compose([*pre.transforms, block])
    return Compose(t), val
