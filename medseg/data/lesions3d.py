"""Synthetic CT-like lesion volumes (lung nodules) for per-lesion 3D classification, with labels per lesion.

Each volume is a patch of lung: parenchyma around -820 HU with smooth texture, a few vessels (thin
bright tubes, which cross lesions like spicules do), correlated noise and a point-spread blur, and
one or more nodules, each labelled benign (0) or malignant (1):

=================  ==========================================  =========================================
cue                benign (label 0)                            malignant (label 1)
=================  ==========================================  =========================================
shape              round / ellipsoidal, smooth                 lobulated (broad bumps) and spiculated
                                                               (thin strands)
texture            homogeneous                                 heterogeneous, low-density foci
=================  ==========================================  =========================================

Matched between classes (same sampling distributions): nodule **volume** (the radial function is
rescaled so the volume is the sampled equal-volume sphere's), **mean density** (the texture is
normalised to the sampled mean, in -150..60 HU: "varying contrast" against the parenchyma),
position, vessels and noise. A fraction of *atypical* nodules (benign with a mildly lobulated
border, malignant with a milder one and few spicules) keeps the task from being trivially separable.

The generator is deterministic: :func:`lesion_ct_volume` is a pure function of its arguments.
:func:`make_lesion_volume_dataset` writes a classification data set (NIfTI volumes, instance maps,
``lesions.csv``, ``dataset.json`` with one entry per lesion).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from medseg.errors import ConfigError
from medseg.utils import atomic_write, atomic_write_records, atomic_write_text

__all__ = ["CLASS_NAMES", "lesion_ct_volume", "make_lesion_volume_dataset", "sphere_directions"]

log = logging.getLogger("medseg.data")

CLASS_NAMES: tuple[str, str] = ("benign", "malignant")

PARENCHYMA_HU = -820.0


def sphere_directions(n: int = 2000) -> np.ndarray:
    """``n`` nearly uniform unit vectors ``(n, 3)`` (Fibonacci sphere)."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def _radial_function(rng: np.random.Generator, label: int, atypical: bool) -> Any:
    """``f(u)``: relative radius in unit directions ``u`` ``(..., 3)``, scaled so the volume is the unit sphere's."""
    axes = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    stretch = 1.0 + rng.uniform(0.0, 0.2, size=3)  # ellipticity: same for both classes
    bumps: list[tuple[np.ndarray, float, float]] = []
    if label == 1 or atypical:
        n_lobes = rng.integers(2, 4) if atypical else rng.integers(4, 8)
        for _ in range(n_lobes):  # lobulation: broad bumps and notches
            bumps.append((_unit(rng), rng.uniform(-0.2, 0.35) * (0.5 if atypical else 1.0), rng.uniform(0.3, 0.5)))

    def raw(u: np.ndarray) -> np.ndarray:
        local = u @ axes
        r = 1.0 / np.sqrt(np.maximum(np.sum((local / stretch) ** 2, axis=-1), 1e-12))
        for d, amp, width in bumps:
            ang = np.arccos(np.clip(u @ d, -1.0, 1.0))
            r = r + amp * np.exp(-0.5 * (ang / width) ** 2)
        return np.clip(r, 0.3, None)

    scale = float(np.mean(raw(sphere_directions()) ** 3)) ** (-1.0 / 3.0)
    return lambda u: scale * raw(u)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: float | Sequence[float] | np.ndarray
) -> np.ndarray:
    n = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-8)


def _tube(grid_mm: np.ndarray, p0: np.ndarray, d: np.ndarray, radius: float) -> np.ndarray:
    """Soft occupancy (0..1) of an infinite tube of ``radius`` mm through ``p0`` along unit ``d``."""
    rel = grid_mm - p0
    along = np.tensordot(rel, d, axes=([-1], [0]))
    dist = np.linalg.norm(rel - along[..., None] * d, axis=-1)
    return np.clip(radius + 0.5 - dist, 0.0, 1.0)


def lesion_ct_volume(
    seed: int,
    labels: Sequence[int] = (1,),
    *,
    shape: Sequence[int] = (48, 48, 32),
    spacing: Sequence[float] = (0.8, 0.8, 1.25),
    diameter_mm: tuple[float, float] = (6.0, 16.0),
    atypical: Sequence[bool] | None = None,
    noise_hu: float = 25.0,
) -> dict[str, Any]:
    """One CT-like lung volume with one nodule per entry of ``labels``.

    Parameters
    ----------
    seed : the volume is a pure function of the arguments.
    labels : per nodule, 0 benign or 1 malignant.
    shape : ``(X, Y, Z)`` voxels; spacing : ``(sx, sy, sz)`` mm.
    diameter_mm : range of the equal-volume sphere diameter (uniform, same for both classes).
    atypical : per nodule, a borderline case (see the module doc); default: none.
    noise_hu : standard deviation of the correlated noise.

    Returns
    -------
    dict: ``image`` ``(X, Y, Z)`` float32 HU; ``labels`` uint8 (1 = nodule, the segmentation target);
    ``instances`` uint8 (nodule id 1..N per voxel); ``affine`` 4x4 voxel -> RAS mm (axial,
    RAS-aligned); ``lesions``: per nodule ``lesion_id``, ``label``, ``class_name``, ``center_vox``,
    ``diameter_mm``, ``mean_hu``, ``atypical``.
    """
    labels = [int(v) for v in labels]
    if any(v not in (0, 1) for v in labels):
        raise ConfigError(f"nodule labels must be 0 (benign) or 1 (malignant), got {labels}")
    if len(shape) != 3 or len(spacing) != 3 or min(shape) < 16:
        raise ConfigError(f"shape must be 3 sizes >= 16 voxels and spacing 3 values (mm), got {shape}, {spacing}")
    aty = [bool(a) for a in (atypical if atypical is not None else [False] * len(labels))]
    if len(aty) != len(labels):
        raise ConfigError("atypical needs one value per nodule")
    rng = np.random.default_rng([int(seed), 104729])
    shp = tuple(int(s) for s in shape)
    sp = np.asarray(spacing, dtype=float)
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shp, sp, strict=True)], indexing="ij"), axis=-1)
    ext = np.asarray(shp) * sp
    img = PARENCHYMA_HU + 30.0 * _smooth_noise(rng, shp, 4.0 / sp)
    for _ in range(rng.integers(2, 5)):  # vessels: bright tubes crossing the patch
        tube = _tube(grid, rng.uniform(0.2, 0.8, 3) * ext, _unit(rng), rng.uniform(0.5, 1.4))
        img = img * (1 - tube) + rng.uniform(-40.0, 40.0) * tube
    lab = np.zeros(shp, np.uint8)
    inst = np.zeros(shp, np.uint8)
    records: list[dict[str, Any]] = []
    centres: list[tuple[np.ndarray, float]] = []
    for i, (label, atyp) in enumerate(zip(labels, aty, strict=True), start=1):
        d = rng.uniform(*diameter_mm)
        r0 = d / 2
        for _ in range(200):  # place inside the patch (margin: a spiculated radius), not touching another
            c = np.array([rng.uniform(1.6 * r0 + 1, e - 1.6 * r0 - 1) if e > 3.2 * r0 + 2 else e / 2 for e in ext])
            if all(np.linalg.norm(c - c2) > 1.8 * (r0 + r2) for c2, r2 in centres):
                break
        else:
            raise ConfigError(
                f"cannot place {len(labels)} separate nodules of up to {diameter_mm[1]} mm in a "
                f"{' x '.join(f'{e:.0f}' for e in ext)} mm volume: use a larger shape or fewer nodules"
            )
        centres.append((c, r0))
        f = _radial_function(rng, label, atyp)
        rel = grid - c
        dist = np.linalg.norm(rel, axis=-1)
        u = rel / np.maximum(dist, 1e-6)[..., None]
        inside = dist <= r0 * f(u)
        if label == 1 or atyp:  # spicules: thin strands (0.5-0.9 mm radius) from the core outwards
            for _ in range(rng.integers(0, 3) if atyp else rng.integers(4, 9)):
                d_sp, length = _unit(rng), r0 * rng.uniform(1.3, 1.6 if atyp else 2.0)
                along = np.clip(rel @ d_sp, 0.0, length)
                off = np.linalg.norm(rel - along[..., None] * d_sp, axis=-1)
                inside |= off <= rng.uniform(0.5, 0.9) * (1 - 0.6 * along / length)
        inside &= inst == 0
        comp, n_comp = ndi.label(inside, structure=np.ones((3, 3, 3)))
        if n_comp > 1:  # one connected nodule: strand tips thinner than a voxel can fall apart
            inside = comp == 1 + int(np.argmax(np.bincount(comp.ravel())[1:]))
        # texture with its mean fixed at the sampled density ("contrast"), class-independent
        mean_hu = rng.uniform(-150.0, 60.0)
        if label == 1:
            het = rng.uniform(25.0, 45.0) if atyp else rng.uniform(50.0, 90.0)
            tex = het * _smooth_noise(rng, shp, 1.2 / sp)
            foci = _smooth_noise(rng, shp, 1.5 / sp) > (1.6 if atyp else 1.1)  # low-density foci
            tex = tex - (150.0 if not atyp else 80.0) * foci
        else:
            het = rng.uniform(15.0, 30.0) if atyp else rng.uniform(3.0, 12.0)
            tex = het * _smooth_noise(rng, shp, 2.0 / sp)
        vals = tex[inside]
        tex = tex - (vals.mean() if vals.size else 0.0) + mean_hu
        img[inside] = tex[inside]
        lab[inside] = 1
        inst[inside] = i
        records.append(
            {
                "lesion_id": i,
                "label": label,
                "class_name": CLASS_NAMES[label],
                "center_vox": [round(float(v), 2) for v in c / sp],
                "diameter_mm": round(float(d), 2),
                "mean_hu": round(float(mean_hu), 1),
                "atypical": atyp,
            }
        )
    img = ndi.gaussian_filter(img, 0.5 * np.asarray([1.0, 1.0, 1.0]))  # point spread
    img += noise_hu * _smooth_noise(rng, shp, 0.7)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -ext / 2
    return {"image": img.astype(np.float32), "labels": lab, "instances": inst, "affine": affine, "lesions": records}


def _write_nifti(arr: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    import nibabel as nib  # heavy optional reader: imported when a data set is written

    with atomic_write(path, suffix=".nii.gz") as tmp:
        nib.save(nib.Nifti1Image(arr, affine), str(tmp))
    return path


def make_lesion_volume_dataset(
    out_dir: str | Path,
    n: int = 60,
    seed: int = 0,
    *,
    lesions_per_volume: int = 1,
    malignant_fraction: float = 0.5,
    atypical_fraction: float = 0.2,
    splits: Sequence[float] = (0.6, 0.2, 0.2),
    **volume_kw: Any,
) -> Path:
    """Write ``n`` synthetic nodules in volumes of ``lesions_per_volume`` each, and a per-lesion datalist.

    Parameters
    ----------
    out_dir : receives ``images/vol_XXXX.nii.gz`` (HU), ``labels/vol_XXXX.nii.gz`` (instance map:
        nodule id per voxel), ``lesions.csv`` and ``dataset.json``.
    n : number of nodules (>= 3).
    seed : data-set seed (volume ``i`` uses ``seed * 100003 + i``).
    lesions_per_volume : nodules per volume (the last volume may hold fewer).
    malignant_fraction, atypical_fraction : class balance; borderline fraction in each class.
    splits : (training, validation, test) fractions of the volumes, stratified by their first nodule's class.
    volume_kw : passed to :func:`lesion_ct_volume` (``shape``, ``spacing``, ``diameter_mm``, ``noise_hu``).

    Returns
    -------
    Path of ``dataset.json``: ``{"labels": {"0": "benign", "1": "malignant"}, "training": [{"image",
    "mask", "mask_value", "label"}], "validation": [...], "test": [...]}``, one entry per nodule,
    paths relative to ``out_dir``.
    """
    if n < 3 or lesions_per_volume < 1:
        raise ConfigError(f"a lesion volume data set needs n >= 3 nodules and >= 1 per volume, got {n}")
    if not 0.0 < malignant_fraction < 1.0:
        raise ConfigError(f"malignant_fraction must be in (0, 1), got {malignant_fraction}")
    if len(splits) != 3 or any(s < 0 for s in splits) or abs(sum(splits) - 1.0) > 1e-6:
        raise ConfigError(f"splits must be three fractions (train, validation, test) summing to 1, got {splits}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    n_mal = int(round(n * malignant_fraction))
    labels = np.array([1] * n_mal + [0] * (n - n_mal))
    rng.shuffle(labels)
    aty = rng.random(n) < atypical_fraction
    groups = [list(range(i, min(i + lesions_per_volume, n))) for i in range(0, n, lesions_per_volume)]
    split_of: dict[int, str] = {}
    for c in (0, 1):
        idx = np.array([g for g, members in enumerate(groups) if labels[members[0]] == c])
        rng.shuffle(idx)
        n_tr, n_va = int(round(len(idx) * splits[0])), int(round(len(idx) * splits[1]))
        if len(idx) >= 3:
            n_va = max(n_va, 1)
            n_tr = min(n_tr, len(idx) - n_va - (1 if splits[2] > 0 else 0))
        for j, g in enumerate(idx):
            split_of[int(g)] = "training" if j < n_tr else "validation" if j < n_tr + n_va else "test"
    data: dict[str, Any] = {
        "labels": {"0": CLASS_NAMES[0], "1": CLASS_NAMES[1]},
        "training": [],
        "validation": [],
        "test": [],
    }
    rows: list[dict[str, Any]] = []
    for g, members in enumerate(groups):
        vol = lesion_ct_volume(
            seed * 100003 + g, [int(labels[m]) for m in members], atypical=[bool(aty[m]) for m in members], **volume_kw
        )
        name = f"vol_{g:04d}"
        _write_nifti(vol["image"], vol["affine"], out / "images" / f"{name}.nii.gz")
        _write_nifti(vol["instances"], vol["affine"], out / "labels" / f"{name}.nii.gz")
        for rec in vol["lesions"]:
            entry = {
                "image": f"images/{name}.nii.gz",
                "mask": f"labels/{name}.nii.gz",
                "mask_value": rec["lesion_id"],
                "label": rec["label"],
            }
            data[split_of[g]].append(entry)
            rows.append({**entry, "class_name": rec["class_name"], "split": split_of[g], **rec})
    atomic_write_records(out / "lesions.csv", rows)
    path = atomic_write_text(out / "dataset.json", json.dumps(data, indent=1) + "\n")
    log.info("wrote %d synthetic nodules in %d volumes to %s", n, len(groups), out)
    return path
