"""The embedded default data: deterministic synthetic phantoms generated from a seed.

- :func:`ct_phantom`: a 3D CT-like abdomen (body with fat rim, spine, lungs, liver, spleen,
  kidneys, liver lesions) in HU with a label map, correlated noise and anisotropic spacing.
  :func:`write_phantom_dicom` writes it as a real DICOM CT series (pydicom datasets with full
  geometry tags), :func:`write_phantom_nifti` as NIfTI image + label.
- :func:`mr_phantom`: a skull-stripped-like T1 MR head (background exactly 0, grey and white
  matter with partial-volume edges, ventricles, bias field, Rician-like noise inside the brain
  only); :func:`make_mr_dataset` writes a set of them as NIfTI with a ``dataset.json``.
- 2D histology-like images with nuclei/mitoses and 2D lesion images are added by the detection and
  classification modules (see the functions re-exported at the end of this module).

Geometry convention: arrays are indexed ``[i, j, k]`` = (x, y, z) voxels of a DICOM-style axial
stack: ``i`` runs to the patient's left, ``j`` to posterior, ``k`` to superior (LPS directions),
so the RAS affine is ``diag(-sx, -sy, sz)`` plus the origin. This is what MONAI's ``LoadImage``
returns for a DICOM series, so a phantom written as DICOM and loaded back gives the same array.
The liver is on the patient's right (low ``i``), the spleen on the left, lungs superior,
spine posterior: the phantom is asymmetric so that flips are detectable.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from scipy import ndimage

from medseg.utils import atomic_write

__all__ = [
    "Phantom",
    "CT_CLASSES",
    "ct_phantom",
    "phantom_affine",
    "write_phantom_nifti",
    "write_phantom_dicom",
    "make_ct_dataset",
    "MR_CLASSES",
    "mr_phantom",
    "make_mr_dataset",
]

#: label values of :func:`ct_phantom`'s label map
CT_CLASSES = {0: "background", 1: "liver", 2: "spleen", 3: "kidney", 4: "lesion"}

# (mean HU, label) of each tissue
_HU = {
    "air": -1000,
    "lung": -850,
    "fat": -100,
    "soft": 40,
    "liver": 65,
    "spleen": 45,
    "kidney": 30,
    "lesion": 10,
    "bone": 700,
}


@dataclass
class Phantom:
    """A synthetic CT volume.

    Attributes
    ----------
    image : (X, Y, Z) int16, Hounsfield units.
    label : (X, Y, Z) uint8, values in :data:`CT_CLASSES`.
    spacing : (sx, sy, sz) mm.
    origin : LPS position (mm) of voxel (0, 0, 0), as DICOM ImagePositionPatient of the first slice.
    seed : the seed it was generated from.
    """

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    seed: int
    class_names: dict[int, str] = field(default_factory=lambda: dict(CT_CLASSES))

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-RAS-mm affine."""
        return phantom_affine(self.spacing, self.origin)


def phantom_affine(spacing, origin) -> np.ndarray:
    """RAS affine of an axial LPS stack with ``spacing`` (mm) and LPS ``origin`` (mm)."""
    sx, sy, sz = spacing
    a = np.diag([-sx, -sy, sz, 1.0])
    a[:3, 3] = [-origin[0], -origin[1], origin[2]]
    return a


def _ellipsoid(grid, center, radii, angle=0.0):
    x, y, z = (g - c for g, c in zip(grid, center))
    ca, sa = np.cos(angle), np.sin(angle)
    xr, yr = ca * x + sa * y, -sa * x + ca * y
    return (xr / radii[0]) ** 2 + (yr / radii[1]) ** 2 + (z / radii[2]) ** 2 <= 1.0


def ct_phantom(
    seed: int = 0,
    shape: tuple[int, int, int] = (96, 96, 48),
    spacing: tuple[float, float, float] = (2.0, 2.0, 3.0),
    noise_hu: float = 15.0,
    n_lesions: tuple[int, int] = (1, 3),
) -> Phantom:
    """Generate a deterministic CT-like abdominal phantom.

    Parameters
    ----------
    seed : RNG seed; the same seed gives the same phantom, bit for bit.
    shape : (X, Y, Z) voxels.
    spacing : (sx, sy, sz) mm (anisotropic by default: thicker slices).
    noise_hu : standard deviation (HU) of the correlated noise.
    n_lesions : inclusive range of the number of liver lesions.
    """
    rng = np.random.default_rng(seed)
    sx, sy, sz = spacing
    X, Y, Z = shape
    # physical coordinates (mm) centred on the volume; x to patient left, y posterior, z superior
    gx = (np.arange(X) - (X - 1) / 2) * sx
    gy = (np.arange(Y) - (Y - 1) / 2) * sy
    gz = (np.arange(Z) - (Z - 1) / 2) * sz
    grid = np.meshgrid(gx, gy, gz, indexing="ij")
    ext = np.array([X * sx, Y * sy, Z * sz]) / 2  # half field of view, mm
    j = lambda s=0.08: 1.0 + rng.uniform(-s, s)  # noqa: E731  size jitter

    img = np.full(shape, _HU["air"], np.float32)
    lab = np.zeros(shape, np.uint8)

    body_r = np.array([0.86 * ext[0] * j(0.05), 0.72 * ext[1] * j(0.05), 10 * ext[2]])
    body = _ellipsoid(grid, (0, 0, 0), body_r)
    inner = _ellipsoid(grid, (0, 0, 0), body_r - np.array([8.0 * j(), 8.0 * j(), 0]))
    img[body] = _HU["fat"]
    img[inner] = _HU["soft"]
    # spine: posterior cylinder
    spine = _ellipsoid(grid, (0, 0.45 * body_r[1], 0), (0.1 * ext[0], 0.1 * ext[1], 10 * ext[2]))
    img[spine] = _HU["bone"]
    # lungs: superior, both sides
    for side in (-1, 1):
        lung = _ellipsoid(
            grid,
            (side * 0.38 * ext[0], -0.05 * ext[1], 0.95 * ext[2]),
            (0.3 * ext[0] * j(), 0.45 * ext[1] * j(), 0.55 * ext[2] * j()),
        )
        img[lung & inner] = _HU["lung"]

    def organ(name, label, center, radii, angle):
        m = _ellipsoid(grid, center, radii, angle) & inner & ~spine
        img[m] = _HU[name] + rng.normal(0, 3)
        lab[m] = label
        return m

    # liver: large, patient's right (negative x), slightly anterior
    liver = organ(
        "liver",
        1,
        (-0.38 * ext[0] + rng.uniform(-4, 4), -0.1 * ext[1] + rng.uniform(-4, 4), 0.05 * ext[2]),
        (0.36 * ext[0] * j(), 0.42 * ext[1] * j(), 0.5 * ext[2] * j()),
        rng.uniform(-0.3, 0.3),
    )
    organ(
        "spleen",
        2,
        (0.45 * ext[0] + rng.uniform(-3, 3), 0.15 * ext[1] + rng.uniform(-3, 3), 0.15 * ext[2]),
        (0.14 * ext[0] * j(), 0.22 * ext[1] * j(), 0.3 * ext[2] * j()),
        rng.uniform(-0.5, 0.5),
    )
    for side in (-1, 1):
        organ(
            "kidney",
            3,
            (side * 0.28 * ext[0] + rng.uniform(-3, 3), 0.3 * ext[1] + rng.uniform(-2, 2), -0.35 * ext[2]),
            (0.1 * ext[0] * j(), 0.14 * ext[1] * j(), 0.28 * ext[2] * j()),
            side * rng.uniform(0.2, 0.6),
        )
    # lesions inside the liver
    idx = np.argwhere(ndimage.binary_erosion(liver, iterations=3))
    for _ in range(int(rng.integers(n_lesions[0], n_lesions[1] + 1)) if len(idx) else 0):
        c = idx[rng.integers(len(idx))]
        center = (gx[c[0]], gy[c[1]], gz[c[2]])
        r = rng.uniform(6, 12)
        m = _ellipsoid(grid, center, (r, r * j(0.2), r * j(0.2))) & liver
        img[m] = _HU["lesion"]
        lab[m] = 4

    # correlated noise (as in reconstructed CT) and a little partial-volume blur
    img = ndimage.gaussian_filter(img, sigma=(0.6, 0.6, 0.3))
    noise = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), sigma=0.8)
    noise *= noise_hu / max(noise.std(), 1e-6)
    img = np.clip(np.round(img + noise * (img > -900)), -1024, 3071).astype(np.int16)

    origin = (-(X - 1) / 2 * sx, -(Y - 1) / 2 * sy, -(Z - 1) / 2 * sz)  # LPS of voxel (0,0,0)
    sp = (float(sx), float(sy), float(sz))
    org = (float(origin[0]), float(origin[1]), float(origin[2]))
    return Phantom(image=img, label=lab, spacing=sp, origin=org, seed=seed)


def write_phantom_nifti(
    ph: Phantom, image_path: str | Path, label_path: str | Path | None = None
) -> tuple[Path, Path | None]:
    """Write the phantom as NIfTI (int16 HU image; uint8 label), qform = sform = RAS affine."""

    def write(arr: np.ndarray, path: str | Path) -> Path:
        nii = nib.Nifti1Image(arr, ph.affine)
        nii.header.set_xyzt_units("mm")
        nii.set_qform(ph.affine, code=1)
        nii.set_sform(ph.affine, code=1)
        with atomic_write(path) as tmp:
            nib.save(nii, str(tmp))
        return Path(path)

    return write(ph.image, image_path), None if label_path is None else write(ph.label, label_path)


def write_phantom_dicom(
    ph: Phantom,
    folder: str | Path,
    patient_name: str = "PHANTOM^SYNTHETIC",
    patient_id: str = "SYN0001",
    series_description: str = "medseg synthetic CT phantom",
    rescale_intercept: float = -1024.0,
) -> list[Path]:
    """Write the phantom as a DICOM CT series (one file per axial slice, CT Image Storage).

    Geometry tags: ImagePositionPatient per slice (LPS mm), ImageOrientationPatient
    ``[1,0,0, 0,1,0]``, PixelSpacing ``[row spacing (y), column spacing (x)]``, SliceThickness,
    SpacingBetweenSlices; pixel data are unsigned with RescaleIntercept so stored values are >= 0.
    Files are named by slice index (never from DICOM values). Returns the file paths.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sx, sy, sz = ph.spacing
    X, Y, Z = ph.image.shape
    prefix = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root
    rng_uid = np.random.default_rng(ph.seed + 7919)
    uid = lambda: generate_uid(prefix=prefix, entropy_srcs=[str(ph.seed), str(rng_uid.integers(1 << 62))])  # noqa: E731
    study_uid, series_uid, frame_uid = uid(), uid(), uid()
    today = _dt.date(2024, 1, 1).strftime("%Y%m%d")
    stored = (ph.image.astype(np.int32) - int(rescale_intercept)).clip(0, 4095).astype(np.uint16)
    paths = []
    for k in range(Z):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        sop_uid = uid()
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.Manufacturer = "medseg synthetic"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = series_description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [f"{v:.6g}" for v in (ph.origin[0], ph.origin[1], ph.origin[2] + k * sz)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [f"{sy:.6g}", f"{sx:.6g}"]  # row spacing (between rows = y), column spacing (x)
        ds.SliceThickness = f"{sz:.6g}"
        ds.SpacingBetweenSlices = f"{sz:.6g}"
        ds.SliceLocation = f"{ph.origin[2] + k * sz:.6g}"
        ds.Rows, ds.Columns = Y, X
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = f"{rescale_intercept:g}"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.KVP = "120"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows = y, columns = x
        path = folder / f"slice_{k:04d}.dcm"
        with atomic_write(path) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def make_ct_dataset(out_dir: str | Path, n_cases: int = 12, seed: int = 0, n_test: int = 0, **phantom_kw) -> Path:
    """Write ``n_cases`` phantoms as NIfTI plus an MSD-style ``dataset.json``; returns its path.

    Layout: ``imagesTr/case_XXX.nii.gz``, ``labelsTr/case_XXX.nii.gz`` (and ``imagesTs``/``labelsTs``
    for the last ``n_test`` cases, listed under ``"test"``).
    """
    phantoms = [ct_phantom(seed=seed * 1000 + i, **phantom_kw) for i in range(n_cases)]
    return _write_dataset(out_dir, phantoms, n_test, "medseg synthetic CT phantoms", "CT", CT_CLASSES)


def _write_dataset(
    out_dir: str | Path, phantoms: list[Phantom], n_test: int, name: str, modality: str, classes: dict[int, str]
) -> Path:
    """Write phantoms as NIfTI (the last ``n_test`` under ``*Ts``) and an MSD-style ``dataset.json``."""
    out_dir = Path(out_dir)
    train: list[dict[str, str]] = []
    test: list[dict[str, str]] = []
    for i, ph in enumerate(phantoms):
        split = "Ts" if i >= len(phantoms) - n_test else "Tr"
        img, lab = write_phantom_nifti(
            ph, out_dir / f"images{split}/case_{i:03d}.nii.gz", out_dir / f"labels{split}/case_{i:03d}.nii.gz"
        )
        assert lab is not None  # a label path was given
        item = {"image": str(img.relative_to(out_dir)), "label": str(lab.relative_to(out_dir))}
        (test if split == "Ts" else train).append(item)
    ds = {
        "name": name,
        "modality": {"0": modality},
        "labels": {str(k): v for k, v in classes.items()},
        "numTraining": len(train),
        "training": train,
        "test": test,
    }
    path = out_dir / "dataset.json"
    path.write_text(json.dumps(ds, indent=2))
    return path


#: label values of :func:`mr_phantom`'s label map
MR_CLASSES = {0: "background", 1: "grey_matter", 2: "white_matter"}


def mr_phantom(
    seed: int = 0,
    shape: tuple[int, int, int] = (48, 56, 48),
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
    noise: float = 0.04,
) -> Phantom:
    """A skull-stripped-like T1 MR head: background exactly 0, two tissue classes with partial volume.

    The brain is an ellipsoid with a folded surface (smoothed noise); white matter (T1 ~1.0) lies
    inside a grey-matter ribbon (~0.6) of 2-4 voxels, with dark ventricles (~0.25, labelled
    background, as CSF is not a tissue class here). The tissues are drawn at twice the resolution
    and averaged down, so edge voxels mix tissues (partial volume) and the label is the tissue
    with the largest share. A smooth multiplicative bias field (+-15 %) and noise (``noise`` times
    the WM intensity) apply inside the brain only; everything outside it is exactly 0 (about
    half of the voxels, as in a skull-stripped scan). Intensities are scaled to 0..1000 (int16).

    Parameters
    ----------
    seed : RNG seed; the same seed gives the same phantom.
    shape : (X, Y, Z) voxels.
    spacing : (sx, sy, sz) mm.
    noise : noise standard deviation as a fraction of the white-matter intensity.

    Returns
    -------
    :class:`Phantom` with ``image`` (X, Y, Z) int16, ``label`` (X, Y, Z) uint8 in :data:`MR_CLASSES`.
    """
    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    fine = (2 * X, 2 * Y, 2 * Z)
    sx, sy, sz = (float(v) / 2 for v in spacing)
    g = [(np.arange(n) - (n - 1) / 2) * d for n, d in zip(fine, (sx, sy, sz))]
    gx, gy, gz = np.meshgrid(*g, indexing="ij")
    ext = np.array([X * spacing[0], Y * spacing[1], Z * spacing[2]]) / 2
    radii = ext * np.array([0.78, 0.82, 0.74]) * (1 + rng.uniform(-0.05, 0.05, 3))
    r = np.sqrt((gx / radii[0]) ** 2 + (gy / radii[1]) ** 2 + (gz / radii[2]) ** 2)
    folds = ndimage.gaussian_filter(rng.normal(0, 1, fine).astype(np.float32), sigma=3.0)
    folds /= max(float(folds.std()), 1e-6)
    brain = r + 0.04 * folds <= 1.0
    ribbon = (0.09 + 0.03 * np.tanh(folds)) * (1 + rng.uniform(-0.1, 0.1))  # cortex thickness (fraction of radius)
    wm = brain & (r + 0.06 * folds <= 1.0 - ribbon)
    vent = np.zeros(fine, bool)
    for side in (-1, 1):
        c = (side * 0.12 * ext[0], -0.05 * ext[1], 0.05 * ext[2])
        rad = (0.08 * ext[0], 0.3 * ext[1], 0.12 * ext[2])
        vent |= ((gx - c[0]) / rad[0]) ** 2 + ((gy - c[1]) / rad[1]) ** 2 + ((gz - c[2]) / rad[2]) ** 2 <= 1.0
    vent &= wm
    gm = brain & ~wm
    wm &= ~vent
    inten = np.zeros(fine, np.float32)
    inten[gm], inten[wm], inten[vent] = 0.6, 1.0, 0.25

    def down(a: np.ndarray) -> np.ndarray:  # mean over 2x2x2 blocks: partial volume
        return a.reshape(X, 2, Y, 2, Z, 2).mean(axis=(1, 3, 5))

    img = down(inten)
    shares = np.stack(
        [down((~brain | vent).astype(np.float32)), down(gm.astype(np.float32)), down(wm.astype(np.float32))]
    )
    lab = shares.argmax(0).astype(np.uint8)
    inside = down(brain.astype(np.float32)) > 0
    lab[~inside] = 0
    cx, cy, cz = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    a = rng.uniform(-0.15, 0.15, 3)
    bias = 1.0 + a[0] * cx + a[1] * cy + a[2] * cz * cx
    img = img * bias + rng.normal(0, noise, shape) * inside
    img = np.where(inside, np.clip(img, 0.01, None), 0.0)
    origin = (-(X - 1) / 2 * spacing[0], -(Y - 1) / 2 * spacing[1], -(Z - 1) / 2 * spacing[2])
    return Phantom(
        image=np.round(img * 1000).astype(np.int16),
        label=lab,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        seed=seed,
        class_names=dict(MR_CLASSES),
    )


def make_mr_dataset(out_dir: str | Path, n_cases: int = 8, seed: int = 0, n_test: int = 0, **phantom_kw) -> Path:
    """Write ``n_cases`` :func:`mr_phantom` heads as NIfTI plus an MSD-style ``dataset.json``; returns its path.

    Same layout as :func:`make_ct_dataset` (``imagesTr``/``labelsTr``, the last ``n_test`` under ``*Ts``).
    """
    phantoms = [mr_phantom(seed=seed * 1000 + i, **phantom_kw) for i in range(n_cases)]
    return _write_dataset(out_dir, phantoms, n_test, "medseg synthetic skull-stripped MR phantoms", "MR", MR_CLASSES)
