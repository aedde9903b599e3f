"""Grad-CAM maps of a 2D image classifier at each image's own size: the one map helper of the tasks.

``medseg explain`` (heat maps per image) and weak supervision (pseudo-masks, localisation figures)
both need the same thing: preprocess images as the classifier was trained
(:func:`medseg.transforms.classification.preprocess`), compute Grad-CAM / Grad-CAM++ maps in
batches (:class:`medseg.explain.cam.CAMExplainer`), and bring each map back to its image's size
(:func:`resize_map`). :func:`classifier_cams` does it once for both.

Interpolation: bilinear, half-pixel centres (``align_corners=False``), edges clamped, then clipped to
[0, 1]: the convention MONAI's Grad-CAM upsampler already used to bring the map from the target
layer to the network input, so the whole chain layer -> input -> image uses one rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medseg.errors import InputError
from medseg.explain.cam import CAMExplainer, Method, Target
from medseg.transforms.classification import preprocess

__all__ = ["ClassifierCAMs", "resize_map", "classifier_cams"]


def resize_map(cam: np.ndarray | torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """Resize one 2D map to ``shape`` = ``(H, W)`` (bilinear, ``align_corners=False``), clipped to [0, 1].

    Parameters
    ----------
    cam : ``(h, w)`` or ``(1, h, w)`` map (e.g. Grad-CAM at the network's input size)
    shape : the image's ``(H, W)`` in pixels

    Returns
    -------
    ``(H, W)`` float32 array in [0, 1]; the map itself (as float32, clipped) when the sizes agree.
    """
    m = torch.as_tensor(np.asarray(cam) if not torch.is_tensor(cam) else cam).detach().float().cpu()
    m = m.squeeze(0) if m.ndim == 3 and m.shape[0] == 1 else m
    if m.ndim != 2:
        raise InputError(f"expected a 2D map (h, w) or (1, h, w), got shape {tuple(np.shape(cam))}")
    size = (int(shape[0]), int(shape[1]))
    if tuple(m.shape) != size:
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return np.asarray(m.clamp(0.0, 1.0).numpy(), dtype=np.float32)


@dataclass
class ClassifierCAMs:
    """Result of :func:`classifier_cams` for ``N`` images.

    Attributes
    ----------
    maps : one ``(H_i, W_i)`` float32 map in [0, 1] per image, at that image's size
    logits : ``(N, K)`` classifier logits (float, CPU)
    targets : ``(N,)`` class index each map explains
    layer : the Grad-CAM target layer used
    """

    maps: list[np.ndarray]
    logits: torch.Tensor
    targets: torch.Tensor
    layer: str

    def stacked(self) -> np.ndarray:
        """The maps as one ``(N, 1, H, W)`` array (all images must have one size)."""
        return np.stack(self.maps)[:, None]


def classifier_cams(
    model: nn.Module,
    info: Mapping[str, Any],
    images: Sequence[np.ndarray],
    *,
    method: Method = "gradcam",
    layer: str | None = None,
    target: Target = None,
    batch_size: int = 8,
    names: Sequence[str] | None = None,
) -> ClassifierCAMs:
    """Grad-CAM / Grad-CAM++ maps of a trained 2D classifier, one per image, at the image's size.

    Parameters
    ----------
    model, info : a trained classifier and its ``info`` (``classifier.json``;
        :func:`medseg.tasks.classification.load_classifier`). The maps are computed on the model's
        device.
    images : ``(H, W)`` or ``(H, W, 3)`` uint8 arrays (:func:`medseg.io.read_image_uint8`); sizes may
        differ (each is preprocessed to the model's size, each map resized back).
    method : "gradcam" or "gradcampp"
    layer : target layer (default: :func:`medseg.explain.cam.default_target_layer`)
    target : class index for every image, one index per image (sequence / tensor of ``N``), or None
        (each image's predicted class)
    batch_size : images per Grad-CAM batch
    names : one name per image, for error messages

    Returns
    -------
    :class:`ClassifierCAMs`
    """
    if not images:
        raise InputError("no images to explain")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    per_image = None  # one target per image, sliced per batch below; an int or None applies to every image
    if isinstance(target, (list, tuple, np.ndarray, torch.Tensor)):
        tt = torch.as_tensor(target).reshape(-1)
        if tt.numel() == 1:
            target = int(tt[0])
        elif tt.numel() != len(images):
            raise InputError(f"{tt.numel()} targets for {len(images)} images: give one per image, or one for all")
        else:
            per_image = tt
    maps: list[np.ndarray] = []
    logits, targets = [], []
    with CAMExplainer(model, method=method, layer=layer, task="classification") as cam:
        for s in range(0, len(images), batch_size):
            chunk = list(images[s : s + batch_size])
            x = preprocess(chunk, info, names[s : s + batch_size])
            t = per_image[s : s + batch_size] if per_image is not None else target
            out = cam(x, target=t)
            maps += [resize_map(out[i, 0].as_tensor(), img.shape[:2]) for i, img in enumerate(chunk)]
            assert cam.last_logits is not None and cam.last_target is not None
            logits.append(cam.last_logits)
            targets.append(cam.last_target)
        used = str(cam.layer)
    return ClassifierCAMs(maps, torch.cat(logits), torch.cat(targets), used)
