"""Image preprocessing and augmentation of 2D image classifiers (EfficientNet-Lite0 and siblings).

What a classifier needs between the pixels (``(H, W)`` gray or ``(H, W, 3)`` RGB uint8, from
:func:`medseg.io.read_image_uint8`) and the network, used alike by training, ``classify``, Grad-CAM
(``explain``) and weak supervision:

- :func:`prepare_images`: channel mode (gray <-> RGB) and size -> a uint8 batch ``(N, C, S, S)``;
- :func:`normalize_lite`: intensities -> the Lite0 ImageNet normalisation ``(x - 127) / 128``;
- :func:`preprocess`: both, as a trained classifier's ``info`` (``classifier.json``) says;
- :func:`augmentation_transforms`: MONAI random dict transforms of an augmentation preset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from skimage.color import rgb2gray
from skimage.transform import resize

from medseg.errors import ConfigError, InputError

__all__ = ["prepare_images", "normalize_lite", "preprocess", "augmentation_transforms", "AUGMENTATION_PRESETS"]

#: augmentation presets of :func:`augmentation_transforms`
AUGMENTATION_PRESETS: tuple[str, ...] = ("none", "dermoscopy", "histology", "xray")


def prepare_images(
    images: Sequence[np.ndarray],
    names: Sequence[str],
    image_size: int | None,
    channels: str = "auto",
) -> tuple[torch.Tensor, str]:
    """Stack images into a uint8 tensor ``(N, C, S, S)``, converting channels and sizes.

    Parameters
    ----------
    images : sequence of ``(H, W)`` or ``(H, W, 3)`` uint8 arrays
    names : file names (for error messages)
    image_size : int or None
        Resize every image to ``(image_size, image_size)`` pixels (anti-aliased); None: all images
        must have one size (an InputError names two that differ).
    channels : "auto" | "rgb" | "gray"
        auto: all images must be gray or all RGB (a mixture is an InputError); rgb: gray images are
        replicated to 3 channels; gray: RGB images are converted (luminance).

    Returns
    -------
    (tensor ``(N, C, H, W)`` uint8, channel mode "rgb" or "gray")
    """
    if not images:
        raise InputError("no images to prepare")
    is_rgb = [im.ndim == 3 for im in images]
    if channels == "auto":
        if any(is_rgb) and not all(is_rgb):
            g = names[is_rgb.index(False)]
            c = names[is_rgb.index(True)]
            raise InputError(
                f"mixture of grayscale and RGB images (e.g. {g} is gray, {c} is RGB); set channels: rgb "
                "(replicate gray) or channels: gray (convert RGB) in the config"
            )
        mode = "rgb" if is_rgb[0] else "gray"
    elif channels in ("rgb", "gray"):
        mode = channels
    else:
        raise ConfigError(f"channels must be auto, rgb or gray, got {channels!r}")
    if image_size is None:
        shapes = {im.shape[:2] for im in images}
        if len(shapes) > 1:
            first = images[0].shape[:2]
            other = next(i for i, im in enumerate(images) if im.shape[:2] != first)
            raise InputError(
                f"images have different sizes ({names[0]} is {first[0]}x{first[1]}, {names[other]} is "
                f"{images[other].shape[0]}x{images[other].shape[1]}); set image_size to resize them all"
            )
    out = []
    for im in images:
        if mode == "rgb" and im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=-1)
        elif mode == "gray" and im.ndim == 3:
            im = np.round(rgb2gray(im) * 255).astype(np.uint8)
        if image_size is not None and im.shape[:2] != (image_size, image_size):
            im = np.round(resize(im, (image_size, image_size), anti_aliasing=True, preserve_range=True))
            im = np.clip(im, 0, 255).astype(np.uint8)
        out.append(im.transpose(2, 0, 1) if im.ndim == 3 else im[None])
    return torch.from_numpy(np.stack(out)), mode


def normalize_lite(x: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
    """Normalise intensities for the Lite0 weights: ``(x * 255 / scale - 127) / 128``.

    The TensorFlow Lite0 checkpoints were trained on RGB in [0, 255] normalised this way (not with
    the torchvision ImageNet mean/std); every medseg classifier input goes through it.

    Parameters
    ----------
    x : Tensor ``(B, C, H, W)`` or ``(C, H, W)``
        Intensities in ``[0, scale]`` (``scale=255`` for uint8 data, ``1`` for [0, 1] data). Integer
        tensors become float32; floating ones keep their dtype.
    """
    xf = x if x.is_floating_point() else x.float()
    return (xf * (255.0 / scale) - 127.0) / 128.0


def preprocess(
    images: Sequence[np.ndarray], info: Mapping[str, Any], names: Sequence[str] | None = None
) -> torch.Tensor:
    """Images -> a trained classifier's input: its channel mode and size, Lite0 normalisation.

    Parameters
    ----------
    images : ``(H, W)`` or ``(H, W, 3)`` uint8 arrays (e.g. from :func:`medseg.io.read_image_uint8`)
    info : a trained classifier's ``info`` (``classifier.json``; at least ``image_size`` and
        ``channels``), e.g. from :func:`medseg.tasks.classification.load_classifier`
    names : one name per image for error messages (default ``image 0``, ``image 1``, ...)

    Returns
    -------
    Tensor ``(N, C, S, S)`` float32, ``(x - 127) / 128``.
    """
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    x, _ = prepare_images(list(images), names, int(info["image_size"]), str(info["channels"]))
    return normalize_lite(x)


def augmentation_transforms(preset: str, image_size: int) -> list[Any]:
    """MONAI dict transforms (key ``image``: ``(C, H, W)`` float 0..255) of an augmentation preset.

    dermoscopy: any orientation (flips, 90 deg rotations, free rotation), mild scale, per-channel
    colour gain; histology: flips/rotations, strong per-channel gain (stain variation), blur and
    noise; xray: small rotations/shifts (5 % of ``image_size`` pixels)/zoom (anatomy keeps its
    orientation, no flips), gamma; none: no transform.
    """
    k = ["image"]
    if preset == "none":
        return []
    if preset == "dermoscopy":
        return [
            mt.RandFlipd(k, prob=0.5, spatial_axis=0),
            mt.RandFlipd(k, prob=0.5, spatial_axis=1),
            mt.RandRotate90d(k, prob=0.5),
            mt.RandAffined(k, prob=0.5, rotate_range=math.pi, scale_range=0.1, padding_mode="reflection"),
            mt.RandScaleIntensityd(k, factors=0.1, prob=0.5, channel_wise=True),
        ]
    if preset == "histology":
        return [
            mt.RandFlipd(k, prob=0.5, spatial_axis=0),
            mt.RandFlipd(k, prob=0.5, spatial_axis=1),
            mt.RandRotate90d(k, prob=0.5),
            mt.RandScaleIntensityd(k, factors=0.15, prob=0.8, channel_wise=True),
            mt.RandGaussianSmoothd(k, prob=0.2, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
            mt.RandGaussianNoised(k, prob=0.2, std=4.0),
        ]
    if preset == "xray":
        return [
            mt.RandAffined(
                k,
                prob=0.7,
                rotate_range=math.radians(10),
                scale_range=0.1,
                translate_range=(0.05 * image_size, 0.05 * image_size),
                padding_mode="border",
            ),
            mt.RandAdjustContrastd(k, prob=0.5, gamma=(0.8, 1.25)),
        ]
    raise ConfigError(f"unknown augmentation preset {preset!r}; use {', '.join(AUGMENTATION_PRESETS)}")
