"""Trained runs as Python objects: ``model = medseg.load_model(run_dir)``, ``model.predict(image)``.

Each object knows its run's preprocessing (plan, modality preset, image size, calibrated
threshold), so a script gets what the CLI command writes, for one image, in memory:

- :class:`SegmentationModel`: ``predict`` -> :class:`SegmentationPrediction` (label map and
  probabilities as MetaTensors on the image's own voxel grid and affine), as ``medseg segment``;
- :class:`DetectionModel`: ``predict`` -> :class:`DetectionPrediction` (points table), as ``medseg detect``;
- :class:`ClassificationModel`: ``predict`` -> :class:`ClassificationPrediction`, as ``medseg classify``.

``image`` is a path (file or DICOM series folder), a ``MetaTensor`` ``(C, *S)`` with its affine, or an
array: a volume ``(X, Y, Z)`` / ``(C, X, Y, Z)`` with ``affine=`` (4x4 voxel -> RAS mm), a 2D image
``(H, W)`` / ``(H, W, C)`` as stored. A cross-validation parent run loads as its fold ensemble.
Every model also prepares its Grad-CAM input (:meth:`cam_inputs`, used by
:func:`medseg.explain.gradcam`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medseg.config import ClassificationConfig, DetectionConfig, SegmentationConfig, load_config
from medseg.engine.checkpoint import load_run_model
from medseg.engine.device import select_device
from medseg.engine.inference import predict_probs
from medseg.engine.tiling import detect_tiled
from medseg.errors import ConfigError, InputError, MissingFileError
from medseg.explain.maps import resize_map
from medseg.explain.model_maps import CamInputs
from medseg.io import read_image_uint8, to_uint8
from medseg.io.image2d import to_gray_or_rgb
from medseg.tasks.classification.predict import load_classifier, predict_logits, softmax
from medseg.tasks.detection.data import DEFAULT_PIXEL_SIZE_UM, open_image
from medseg.tasks.detection.params import DetectionParams
from medseg.tasks.detection.predict import image_pixel_size
from medseg.tasks.detection.scoring import score_map_fn, to_network_input
from medseg.tasks.segmentation.files import check_model_input, read_case_image
from medseg.tasks.segmentation.predict import load_segmenter, predict_case, preprocess_case, to_source
from medseg.transforms.classification import prepare_images
from medseg.transforms.classification import preprocess as classifier_input
from medseg.transforms.microscopy import microscopy_rgb

__all__ = [
    "load_model",
    "SegmentationModel",
    "DetectionModel",
    "ClassificationModel",
    "SegmentationPrediction",
    "DetectionPrediction",
    "ClassificationPrediction",
]

log = logging.getLogger("medseg.tasks")


def load_model(run_dir: str | Path, device: str = "auto") -> SegmentationModel | DetectionModel | ClassificationModel:
    """The trained model of a ``medseg train`` run folder (or a cross-validation parent run: its ensemble).

    Parameters
    ----------
    run_dir : the run folder (``config.yaml``, ``checkpoints/``).
    device : ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.

    Raises
    ------
    MissingFileError (not a run folder), ConfigError (a task without a model: weak supervision),
    CheckpointError.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise MissingFileError("not a trained medseg run folder (no config.yaml)", run_dir)
    cfg = load_config(run_dir / "config.yaml")
    if isinstance(cfg, SegmentationConfig):
        return SegmentationModel(run_dir, device)
    if isinstance(cfg, DetectionConfig):
        return DetectionModel(run_dir, device)
    if isinstance(cfg, ClassificationConfig):
        return ClassificationModel(run_dir, device)
    raise ConfigError(f"load_model reads segmentation, detection and classification runs, not {cfg.task!r}")


def _class_index(target: Any, names: list[str], default: int) -> int:
    if target is None:
        return default
    if isinstance(target, str):
        if target not in names:
            raise InputError(f"unknown class {target!r}; the model's classes: {', '.join(names)}")
        return names.index(target)
    k = int(target)
    if not 0 <= k < len(names):
        raise InputError(f"class index {k} out of range: the model has {len(names)} classes ({', '.join(names)})")
    return k


def _pixels_2d(image: Any) -> tuple[np.ndarray | None, Path | None, str]:
    """(array as stored or None, path or None, name) of a 2D image given as a path or an array."""
    if isinstance(image, (str, Path)):
        return None, Path(image), Path(image).name
    a = np.asarray(image.as_tensor() if isinstance(image, MetaTensor) else image)
    if a.ndim not in (2, 3):
        raise InputError(f"a 2D image is (H, W) or (H, W, C); got an array of shape {a.shape}")
    return a, None, "<array>"


# ----------------------------------------------------------------------------------------- segmentation


@dataclass
class SegmentationPrediction:
    """One image segmented, on the image's own voxel grid.

    Attributes
    ----------
    labels : ``MetaTensor`` ``(1, *S)`` uint8 label map (0 = background), the image's affine.
    probabilities : ``MetaTensor`` ``(K, *S)`` float32 class probabilities.
    class_names : K names, ``labels`` values index them.
    uncertainty : 0..1 (the run's ``infer.uncertainty``); ``needs_review`` above the run's threshold.
    volumes_ml : volume of each foreground class in mL (pixels for 2D images without spacing).
    """

    labels: MetaTensor
    probabilities: MetaTensor
    class_names: list[str]
    uncertainty: float
    needs_review: bool
    volumes_ml: dict[str, float] = field(default_factory=dict)


class SegmentationModel:
    """A trained segmentation run (see the module docstring)."""

    task = "segmentation"

    def __init__(self, run_dir: str | Path, device: str = "auto"):
        self.segmenter = load_segmenter(run_dir, device)
        self.run_dir = Path(run_dir)
        self.class_names = list(self.segmenter.class_names)
        self.spatial_dims = int(self.segmenter.meta["spatial_dims"])
        self.network = self.segmenter.model

    def __repr__(self) -> str:
        return f"SegmentationModel({str(self.run_dir)!r}, classes={self.class_names}, {self.spatial_dims}D)"

    def image(self, image: Any, affine: Any = None) -> MetaTensor:
        """The image as the model reads it: ``MetaTensor`` ``(C, *S)`` with ``meta["source_affine"]``."""
        sd = self.spatial_dims
        if isinstance(image, (str, Path)):
            img = read_case_image([image], spatial_dims=sd)
            where = str(image)
        else:
            if isinstance(image, MetaTensor):
                img = MetaTensor(image.as_tensor().float(), affine=image.affine, meta=dict(image.meta))
            else:
                if affine is None:
                    raise InputError(
                        "an array needs its geometry: pass affine= (4x4 voxel -> RAS mm; e.g. nibabel's img.affine)"
                    )
                a = torch.as_tensor(np.asarray(image, dtype=np.float32))
                if a.ndim not in (sd, sd + 1):
                    axes = "(X, Y, Z) or (C, X, Y, Z)" if sd == 3 else "(X, Y) or (C, X, Y)"
                    raise InputError(f"an array of shape {tuple(a.shape)} given to a {sd}D model: it takes {axes}")
                img = MetaTensor(a[None] if a.ndim == sd else a, affine=torch.as_tensor(np.asarray(affine, float)))
            img.meta["source_affine"] = np.asarray(img.affine, dtype=np.float64).copy()
            img.meta.setdefault("filename_or_obj", "<array>")
            where = "<array>"
        check_model_input(img, where, spatial_dims=sd, channels=self.segmenter.channels)
        return img

    def predict(self, image: Any, *, affine: Any = None) -> SegmentationPrediction:
        """Segment one image (sliding window, the run's TTA and post-processing settings)."""
        sm = self.segmenter
        img = self.image(image, affine)
        res = predict_case(sm.model, img, meta=sm.meta, infer=sm.infer, device=sm.device, post=sm.cfg.postprocess)
        aff = torch.as_tensor(res["affine"])
        unc = float(res["uncertainty"])
        return SegmentationPrediction(
            labels=MetaTensor(torch.as_tensor(res["labels"])[None], affine=aff),
            probabilities=MetaTensor(torch.as_tensor(res["probs"]), affine=aff),
            class_names=list(res["class_names"]),
            uncertainty=unc,
            needs_review=unc > sm.review_threshold,
            volumes_ml=dict(res["volumes_ml"]),
        )

    def cam_inputs(self, image: Any, *, target: Any = None, region: Any = None, affine: Any = None) -> CamInputs:
        """Grad-CAM input: the preprocessed image cropped around the region of class ``target``."""
        sm = self.segmenter
        c = _class_index(target, self.class_names, 1 if len(self.class_names) > 1 else 0)
        d, pre, where = preprocess_case(self.image(image, affine), sm.meta)
        x = d["image"].as_tensor().float()  # (C, *S') on the plan's grid
        plan = sm.meta["plan"]
        if region is None:
            probs, _ = predict_probs(sm.model, x[None], plan, device=sm.device)
            mask = probs[0].argmax(0).cpu() == c
            if not bool(mask.any()):
                raise InputError(
                    f"no voxel is predicted as {self.class_names[c]!r} in this image: pass region= (a mask on "
                    "the image's grid) to explain the class there",
                    where,
                )
        else:
            mask = _region_on_plan_grid(region, d["image"])
        axis = plan.get("slice_axis")
        if axis is not None and x.ndim == 4:  # a 2D configuration: the slices holding the region, as a batch
            a = int(axis)
            keep = torch.nonzero(torch.movedim(mask, a, 0).flatten(1).any(1)).flatten()
            xs = torch.movedim(x, 1 + a, 0)[keep]  # (n, C, *in-plane)
            roi = torch.movedim(mask, a, 0)[keep][:, None].float()
            xs, roi, crop = _divisible(xs, roi, plan["patch_size"])

            def restore_slices(m: torch.Tensor) -> MetaTensor:
                full = torch.zeros(torch.movedim(mask, a, 0).shape)
                full[keep] = m[:, 0][(slice(None),) + crop]
                return self._restore(torch.movedim(full, 0, a), d, pre, where)

            return CamInputs(sm.model, xs, "segmentation", c, roi, restore_slices)
        lo, hi = _box(mask, plan["patch_size"])
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        xc, roi, crop = _divisible(x[(slice(None),) + box][None], mask[box][None, None].float(), plan["patch_size"])

        def restore(m: torch.Tensor) -> MetaTensor:
            full = torch.zeros(mask.shape)
            full[box] = m[0, 0][crop]
            return self._restore(full, d, pre, where)

        return CamInputs(sm.model, xc, "segmentation", c, roi, restore)

    def _restore(self, full: torch.Tensor, d: dict[str, Any], pre: Any, where: str) -> MetaTensor:
        src = to_source(d, pre, full[None], where).clamp(0, 1)
        return MetaTensor(src, affine=torch.as_tensor(d["image"].meta["source_affine"]))


def _region_on_plan_grid(region: Any, img: MetaTensor) -> torch.Tensor:
    """A mask on the source grid -> the plan's grid of ``img`` (nearest voxel through world coordinates)."""
    r = np.asarray(region.as_tensor() if isinstance(region, MetaTensor) else region).astype(bool)
    shape = tuple(int(s) for s in img.shape[1:])
    if r.ndim == len(shape) + 1 and r.shape[0] == 1:
        r = r[0]
    if r.ndim != len(shape):
        raise InputError(f"region must be a mask on the image's grid, got shape {r.shape}")
    src = np.asarray(img.meta["source_affine"], dtype=np.float64)
    plan_aff = np.asarray(img.affine, dtype=np.float64)
    n = len(shape)
    a_src, a_plan = _spatial(src, n), _spatial(plan_aff, n)
    ijk = np.indices(shape).reshape(n, -1)
    world = a_plan[:n, :n] @ ijk + a_plan[:n, n : n + 1]
    idx = np.rint(np.linalg.solve(a_src[:n, :n], world - a_src[:n, n : n + 1])).astype(int)
    inside = np.all((idx >= 0) & (idx < np.asarray(r.shape)[:, None]), axis=0)
    out = np.zeros(idx.shape[1], bool)
    out[inside] = r[tuple(idx[:, inside])]
    mask = torch.as_tensor(out.reshape(shape))
    if not bool(mask.any()):
        raise InputError("the region is empty (or outside the part of the image the model reads)")
    return mask


def _spatial(affine: np.ndarray, n: int) -> np.ndarray:
    """The ``(n+1, n+1)`` affine of ``n`` spatial axes (a 2D image's 4x4 affine keeps its x, y rows)."""
    if affine.shape[0] == n + 1:
        return affine
    keep = [*range(n), affine.shape[0] - 1]
    return affine[np.ix_(keep, keep)]


def _box(mask: torch.Tensor, patch: list[int]) -> tuple[list[int], list[int]]:
    """Bounding box of ``mask`` grown by half a patch per side (at least one patch), inside the image."""
    idx = torch.nonzero(mask)
    lo, hi = [], []
    for ax, size in enumerate(mask.shape):
        a, b = int(idx[:, ax].min()), int(idx[:, ax].max()) + 1
        half = int(patch[ax]) // 2 if ax < len(patch) else 0
        a, b = max(0, a - half), min(int(size), b + half)
        need = min(int(patch[ax]) if ax < len(patch) else 1, int(size)) - (b - a)
        if need > 0:
            a = max(0, a - need // 2 - need % 2)
            b = min(int(size), a + max(b - a + need, 1))
        lo.append(a)
        hi.append(b)
    return lo, hi


def _divisible(
    x: torch.Tensor, roi: torch.Tensor, patch: list[int]
) -> tuple[torch.Tensor, torch.Tensor, tuple[slice, ...]]:
    """Pad ``(B, C, *S)`` (and its roi) at the end to a multiple of the network's down-sampling factor.

    The factor is the largest power of two dividing every patch size (the plan chooses patches the
    network can take). Returns (x, roi, the slices of the unpadded part).
    """
    g = math.gcd(*[int(p) for p in patch])
    k = g & -g  # largest power of two dividing g
    shape = x.shape[2:]
    pad = [(-int(s)) % k for s in shape]
    flat = [v for p in reversed(pad) for v in (0, p)]
    xp = torch.nn.functional.pad(x, flat, mode="replicate") if any(pad) else x
    rp = torch.nn.functional.pad(roi, flat) if any(pad) else roi
    return xp, rp, tuple(slice(0, int(s)) for s in shape)


# ----------------------------------------------------------------------------------------- detection


@dataclass
class DetectionPrediction:
    """Detections in one 2D image: ``points`` ``(N, 2)`` (x, y) pixels, ``scores`` ``(N,)``, the class name,
    the pixel size used (µm) and :meth:`table` (one dict per detection, with µm coordinates)."""

    points: np.ndarray
    scores: np.ndarray
    class_name: str
    pixel_size_um: float

    def table(self) -> list[dict[str, Any]]:
        um = self.pixel_size_um
        return [
            {"x": float(x), "y": float(y), "x_um": float(x) * um, "y_um": float(y) * um, "score": float(s),
             "class": self.class_name}
            for (x, y), s in zip(self.points, self.scores)
        ]  # fmt: skip

    def __len__(self) -> int:
        return len(self.points)


class DetectionModel:
    """A trained detection run (see the module docstring)."""

    task = "detection"

    def __init__(self, run_dir: str | Path, device: str = "auto"):
        self.run_dir = Path(run_dir)
        self.device = select_device(device)
        model, cfg, _ = load_run_model(self.run_dir, map_location=self.device)
        if not isinstance(cfg, DetectionConfig):
            raise ConfigError(f"not a detection run (task {cfg.task!r})", self.run_dir / "config.yaml")
        self.network, self.cfg = model.to(self.device), cfg
        self.params = DetectionParams.from_config(cfg)
        info_path = self.run_dir / "detection.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        default = cfg.postprocess.threshold if cfg.postprocess.threshold != "auto" else 0.5
        self.threshold = float(info.get("threshold", default))
        self.class_names = [self.params.output_class]

    def __repr__(self) -> str:
        return f"DetectionModel({str(self.run_dir)!r}, class={self.params.output_class!r})"

    def image(self, image: Any) -> np.ndarray:
        """``(H, W, 3)`` uint8 as the network reads it (the run's modality preset)."""
        arr, path, name = _pixels_2d(image)
        if path is not None:
            return np.asarray(open_image(path, modality=self.cfg.data.modality))
        assert arr is not None
        return microscopy_rgb(arr, self.cfg.data.modality, name)

    def predict(self, image: Any) -> DetectionPrediction:
        """Detect in one 2D image (tiled, the run's threshold and peak finding)."""
        img = self.image(image)
        p, inf = self.params, self.cfg.infer
        pts, sc = detect_tiled(
            score_map_fn(self.network, p.method, self.device),
            img,
            tile=inf.tile_size,
            margin=inf.tile_margin,
            min_distance_px=p.min_distance_px,
            threshold=self.threshold,
            sigma_px=p.sigma_px,
        )
        _, path, _ = _pixels_2d(image)  # a file's own resolution tags, else the run's pixel size (as detect)
        trained = self.cfg.data.pixel_size_um
        um = image_pixel_size(path, trained)[0] if path is not None else float(trained or DEFAULT_PIXEL_SIZE_UM)
        return DetectionPrediction(np.asarray(pts), np.asarray(sc), p.output_class, um)

    def cam_inputs(self, image: Any, *, target: Any = None, region: Any = None, affine: Any = None) -> CamInputs:
        """Grad-CAM input: the score map inside a disk around one detection (or all detections)."""
        if self.params.method != "proximity":
            raise InputError("Grad-CAM of detections needs a proximity-map model (method 'proximity')")
        img = self.image(image)
        h, w = img.shape[:2]
        x = torch.from_numpy(to_network_input(img))[None]
        roi = None
        if target is not None:
            if isinstance(target, (int, np.integer)):
                found = self.predict(image)
                if not 0 <= int(target) < len(found):
                    raise InputError(f"detection {int(target)} does not exist: {len(found)} detection(s) in the image")
                cx, cy = found.points[int(target)]
            else:
                cx, cy = (float(v) for v in target)
            r = max(2.0 * self.params.radius_px, 4.0)
            yy, xx = np.mgrid[0:h, 0:w]
            roi = torch.as_tensor(((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r)[None, None].float()
        xp, rp, crop = _divisible(x, roi if roi is not None else torch.ones(1, 1, h, w), [16, 16])

        def restore(m: torch.Tensor) -> np.ndarray:
            return resize_map(m[0, 0][crop], (h, w))

        return CamInputs(self.network, xp, "segmentation", 0, rp if roi is not None else None, restore)


# ----------------------------------------------------------------------------------------- classification


@dataclass
class ClassificationPrediction:
    """One 2D image classified: ``probabilities`` per class (calibrated), ``predicted_class`` at the
    ``operating_point`` (its ``threshold`` on the positive class for two classes)."""

    probabilities: dict[str, float]
    predicted_class: str
    operating_point: str
    threshold: float


class ClassificationModel:
    """A trained classification run (see the module docstring)."""

    task = "classification"

    def __init__(self, run_dir: str | Path, device: str = "auto"):
        self.run_dir = Path(run_dir)
        self.device = select_device(device)
        self.network, self.info = load_classifier(self.run_dir, map_location=self.device)
        self.network.to(self.device)
        self.class_names = list(self.info["class_names"])

    def __repr__(self) -> str:
        return f"ClassificationModel({str(self.run_dir)!r}, classes={self.class_names})"

    def image(self, image: Any) -> np.ndarray:
        """``(H, W)`` / ``(H, W, 3)`` uint8 as the classifier reads it (:func:`medseg.io.read_image_uint8`)."""
        arr, path, name = _pixels_2d(image)
        if path is not None:
            return read_image_uint8(path)
        assert arr is not None
        return to_uint8(to_gray_or_rgb(arr, name), name)

    def predict(self, image: Any, operating_point: str | None = None) -> ClassificationPrediction:
        """Classify one 2D image at ``operating_point`` (default: the run's)."""
        info = self.info
        point = operating_point or info.get("use", "default")
        if point not in info["operating_points"]:
            raise ConfigError(f"operating point {point!r} not available; available: {sorted(info['operating_points'])}")
        x, _ = prepare_images([self.image(image)], ["image"], int(info["image_size"]), str(info["channels"]))
        p = softmax(predict_logits(self.network, x, self.device, 1), float(info.get("temperature", 1.0)))[0]
        thr = float(info["operating_points"][point])
        pos = int(info.get("positive_index", 1))
        k = (pos if p[pos] >= thr else 1 - pos) if len(self.class_names) == 2 else int(p.argmax())
        probs = {c: float(v) for c, v in zip(self.class_names, p)}
        return ClassificationPrediction(probs, self.class_names[k], point, thr)

    def cam_inputs(self, image: Any, *, target: Any = None, region: Any = None, affine: Any = None) -> CamInputs:
        """Grad-CAM input: the image at the classifier's size; the map comes back at the image's size."""
        img = self.image(image)
        x = classifier_input([img], self.info, ["image"]).to(self.device)
        if target is None:
            with torch.no_grad():
                c = int(self.network.eval()(x).argmax(1)[0])
        else:
            c = _class_index(target, self.class_names, 0)

        def restore(m: torch.Tensor) -> np.ndarray:
            return resize_map(m[0, 0], img.shape[:2])

        return CamInputs(self.network, x, "classification", c, None, restore)
