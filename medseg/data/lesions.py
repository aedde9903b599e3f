"""Synthetic 2D skin-lesion images for benign-vs-malignant classification (the embedded default data).

Each image is a dermoscopy-like RGB picture (or a gray one) of one pigmented lesion on textured
skin, with its lesion mask, so classifiers *and* localisation maps (Grad-CAM) can be scored.

The two classes differ only in what a dermatologist looks at (the "ABCD" cues), never in a
trivial global statistic:

=================  ======================================  ==========================================
cue                benign (label 0)                        malignant (label 1)
=================  ======================================  ==========================================
border             round / oval, smooth                    irregular (high-frequency harmonics)
                                                           with spicules (thin radial streaks)
texture            homogeneous pigment                     heterogeneous: blotches, dark dots
=================  ======================================  ==========================================

Matched between classes (same sampling distributions): lesion **area** (the radial profile is
rescaled so the area is exactly the sampled one), mean lesion **darkness** (the texture modulation
is normalised to mean 1 inside the mask), skin colour, illumination, position. A classifier that
only looks at mean intensity or lesion size scores AUC ~ 0.5 (tested).

The generator is deterministic: ``lesion_image(seed, label, size)`` always returns the same image.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import io as skio

from medseg.errors import ConfigError
from medseg.utils import atomic_write, atomic_write_csv, atomic_write_text

__all__ = ["CLASS_NAMES", "lesion_image", "make_lesion_dataset", "write_png"]

log = logging.getLogger("medseg.data")

CLASS_NAMES: tuple[str, str] = ("benign", "malignant")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise of correlation length ``sigma`` pixels."""
    n = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-8)


def _radial_profile(rng: np.random.Generator, label: int, atypical: bool = False, n_theta: int = 720) -> np.ndarray:
    """Relative radius r(theta) (mean-square 1) of a benign (smooth) or malignant (irregular) border.

    ``atypical`` moves a case towards the other class: a benign lesion with a mildly irregular
    border (dysplastic naevus), a malignant one with a milder border and few spicules.
    """
    theta = np.linspace(0, 2 * np.pi, n_theta, endpoint=False)
    # low-order shape (ellipticity, slight asymmetry): same for both classes
    r = 1.0 + rng.uniform(0.0, 0.15) * np.cos(2 * (theta - rng.uniform(0, np.pi)))
    r += rng.uniform(0.0, 0.05) * np.cos(3 * (theta - rng.uniform(0, np.pi)))
    irregular = label == 1 or atypical
    if irregular:
        # irregular border: energy in harmonics 5..16
        amp = rng.uniform(0.04, 0.09) if atypical else rng.uniform(0.10, 0.22)
        for k in range(5, 17):
            r += amp * rng.standard_normal() / np.sqrt(k - 3) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        # spicules: narrow radial spikes
        n_spic = rng.integers(0, 3) if atypical else rng.integers(4, 10)
        for _ in range(n_spic):
            c = rng.uniform(0, 2 * np.pi)
            d = np.angle(np.exp(1j * (theta - c)))
            r += rng.uniform(0.15, 0.3 if atypical else 0.5) * np.exp(-0.5 * (d / rng.uniform(0.03, 0.06)) ** 2)
    else:
        r += rng.uniform(0.0, 0.03) * np.cos(5 * theta + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.3, None)
    return r / np.sqrt(np.mean(r**2))  # area of a star-shaped region = 0.5 * integral r^2 -> pi r0^2


def lesion_image(
    seed: int, label: int, size: int = 128, rgb: bool = True, atypical: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic lesion image and its mask (deterministic in ``seed`` and ``label``).

    Parameters
    ----------
    seed : int
        Random seed; the image is a pure function of ``(seed, label, size, rgb)``.
    label : int
        0 benign (round, smooth, homogeneous) or 1 malignant (irregular/spiculated, heterogeneous).
    size : int
        Image side in pixels (square), >= 32.
    rgb : bool
        RGB dermoscopy-like colours (True) or a single gray channel (False).
    atypical : bool
        A borderline case: benign with a mildly irregular border and some heterogeneity
        (dysplastic naevus), or malignant with a milder border, few spicules, less heterogeneity.

    Returns
    -------
    image : ndarray, (size, size, 3) uint8 if ``rgb`` else (size, size) uint8
    mask : ndarray, (size, size) bool
        The lesion (including spicules).
    """
    if label not in (0, 1):
        raise ConfigError(f"lesion label must be 0 (benign) or 1 (malignant), got {label!r}")
    if size < 32:
        raise ConfigError(f"lesion image size must be >= 32 pixels, got {size}")
    rng = np.random.default_rng([int(seed), int(label), 7919])
    h = w = size
    # --- shape -----------------------------------------------------------------------------
    r0 = rng.uniform(0.17, 0.27) * size  # equal-area radius: same distribution for both classes
    cy = size / 2 + rng.uniform(-0.08, 0.08) * size
    cx = size / 2 + rng.uniform(-0.08, 0.08) * size
    prof = _radial_profile(rng, label, atypical)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    rad = np.hypot(dy, dx)
    ang = np.mod(np.arctan2(dy, dx), 2 * np.pi)
    idx = (ang / (2 * np.pi) * len(prof)).astype(int) % len(prof)
    rb = r0 * prof[idx]
    mask = rad <= rb
    # soft edge (same width for both classes)
    edge = np.clip((rb - rad) / 1.5 + 0.5, 0.0, 1.0)
    # --- pigment -----------------------------------------------------------------------------
    darkness = rng.uniform(0.35, 0.6)  # mean fractional darkening inside the lesion, class-independent
    if label == 1:
        het = rng.uniform(0.18, 0.3) if atypical else rng.uniform(0.35, 0.55)
        tex = 1.0 + het * _smooth_noise(rng, (h, w), size / 25) + 0.5 * het * _smooth_noise(rng, (h, w), size / 64)
        # dark dots / globules, irregularly placed
        dots = np.zeros((h, w))
        n_dots = rng.integers(2, 8) if atypical else rng.integers(8, 20)
        py = np.clip(cy + rng.normal(0, r0 * 0.5, n_dots), 0, h - 1).astype(int)
        px = np.clip(cx + rng.normal(0, r0 * 0.5, n_dots), 0, w - 1).astype(int)
        dots[py, px] = 1.0
        dots = ndi.gaussian_filter(dots, size / 110) * (2 * np.pi * (size / 110) ** 2)
        tex += 1.2 * dots
    else:
        het = rng.uniform(0.12, 0.22) if atypical else rng.uniform(0.03, 0.10)
        tex = 1.0 + het * _smooth_noise(rng, (h, w), size / 25)
    tex = np.clip(tex, 0.05, None)
    if mask.any():
        tex = tex / tex[mask].mean()  # mean darkening inside the lesion is exactly `darkness`
    dark = np.clip(darkness * tex, 0.0, 0.92) * edge
    # --- skin ------------------------------------------------------------------------------
    illum = 1.0 + 0.06 * _smooth_noise(rng, (h, w), size / 4) + 0.02 * _smooth_noise(rng, (h, w), 1.5)
    base = 0.60 + rng.uniform(-0.08, 0.08)
    if rgb:
        skin = np.array([0.93, 0.74, 0.64]) * base / 0.60  # skin tone
        skin = skin * rng.uniform(0.95, 1.05, 3)
        pigment = np.array([0.55, 0.35, 0.25])  # brownish pigment: darkening strongest in blue/green
        img = skin[None, None, :] * illum[..., None] * (1.0 - dark[..., None] * (1.0 - pigment[None, None, :] * 0.6))
        img = img + 0.012 * rng.standard_normal(img.shape)
    else:
        img = base * illum * (1.0 - dark) + 0.012 * rng.standard_normal((h, w))
    img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    return img, mask


def write_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG atomically (scikit-image)."""
    path = Path(path)
    with atomic_write(path, suffix=".png") as tmp:
        skio.imsave(str(tmp), array, check_contrast=False)
    return path


def make_lesion_dataset(
    out_dir: str | Path,
    n: int = 200,
    seed: int = 0,
    size: int = 128,
    rgb: bool = True,
    malignant_fraction: float = 0.5,
    splits: Sequence[float] = (0.6, 0.2, 0.2),
    class_names: Sequence[str] | None = None,
    atypical_fraction: float = 0.2,
) -> Path:
    """Write ``n`` synthetic lesion images, their masks, a labels CSV and a datalist JSON.

    Parameters
    ----------
    out_dir : path
        Created if needed. Receives ``images/lesion_XXXX.png``, ``masks/lesion_XXXX.png`` (0/255),
        ``labels.csv`` (image, mask, label, class_name, split) and ``dataset.json``.
    n : int
        Number of images (>= 3 so every split has one).
    seed : int
        Dataset seed; image ``i`` uses ``seed * 100003 + i``.
    size : int
        Image side in pixels.
    rgb : bool
        RGB (True) or gray (False) images.
    malignant_fraction : float
        Fraction of malignant images (class imbalance is allowed, e.g. 0.2).
    splits : (train, validation, test) fractions
        Stratified by class; each split gets at least one image of each class when n allows.
    class_names : two names, default ("benign", "malignant")
    atypical_fraction : float
        Fraction of borderline cases in each class (see :func:`lesion_image`), so the task is not
        trivially separable; listed in the ``atypical`` column of ``labels.csv``.

    Returns
    -------
    Path of ``dataset.json``: MSD-style ``{"labels": {"0": "benign", "1": "malignant"},
    "training": [{"image", "mask", "label"}], "validation": [...], "test": [...]}`` with paths
    relative to ``out_dir`` and integer ``label``.
    """
    if n < 3:
        raise ConfigError(f"a lesion dataset needs n >= 3 images, got {n}")
    if not 0.0 < malignant_fraction < 1.0:
        raise ConfigError(f"malignant_fraction must be in (0, 1), got {malignant_fraction}")
    if len(splits) != 3 or any(s < 0 for s in splits) or abs(sum(splits) - 1.0) > 1e-6:
        raise ConfigError(f"splits must be three fractions (train, validation, test) summing to 1, got {splits}")
    names = list(class_names or CLASS_NAMES)
    if len(names) != 2:
        raise ConfigError(f"lesion data has two classes; got class_names {names}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_mal = int(round(n * malignant_fraction))
    labels = np.array([1] * n_mal + [0] * (n - n_mal))
    rng.shuffle(labels)
    split_of = np.empty(n, dtype=object)
    for c in (0, 1):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_c = len(idx)
        n_val = int(round(n_c * splits[1]))
        n_test = int(round(n_c * splits[2]))
        if n_c >= 3:
            n_val = max(n_val, 1) if splits[1] > 0 else 0
            n_test = max(n_test, 1) if splits[2] > 0 else 0
        split_of[idx[:n_val]] = "validation"
        split_of[idx[n_val : n_val + n_test]] = "test"
        split_of[idx[n_val + n_test :]] = "training"
    if not 0.0 <= atypical_fraction <= 1.0:
        raise ConfigError(f"atypical_fraction must be in [0, 1], got {atypical_fraction}")
    atypical = rng.random(n) < atypical_fraction
    rows = []
    data: dict = {
        "name": "synthetic_lesions",
        "description": "medseg synthetic benign/malignant lesions",
        "labels": {str(i): nm for i, nm in enumerate(names)},
        "training": [],
        "validation": [],
        "test": [],
    }
    for i in range(n):
        lab = int(labels[i])
        img, mask = lesion_image(seed * 100003 + i, lab, size=size, rgb=rgb, atypical=bool(atypical[i]))
        stem = f"lesion_{i:04d}"
        write_png(img, out / "images" / f"{stem}.png")
        write_png(mask.astype(np.uint8) * 255, out / "masks" / f"{stem}.png")
        entry = {"image": f"images/{stem}.png", "mask": f"masks/{stem}.png", "label": lab}
        data[str(split_of[i])].append(entry)
        rows.append([entry["image"], entry["mask"], lab, names[lab], split_of[i], int(atypical[i])])
    atomic_write_csv(out / "labels.csv", ["image", "mask", "label", "class_name", "split", "atypical"], rows)
    path = atomic_write_text(out / "dataset.json", json.dumps(data, indent=1))
    log.info("wrote %d synthetic lesion images (%d malignant, %d atypical) to %s", n, n_mal, int(atypical.sum()), out)
    return path
