"""Shared pytest fixtures: real sample files shipped with pydicom / nibabel, and a generic DICOM writer.

Keep these generic: any test package may use them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest


def pydicom_test_file(name: str) -> str:
    """Path of a DICOM test file shipped with pydicom / pydicom-data; skips the test when absent.

    Never downloads (``download=False``): tests run offline.
    """
    from pydicom.data import get_testdata_file

    try:
        p = get_testdata_file(name, download=False)
    except Exception:  # pragma: no cover
        p = None
    if not p:
        pytest.skip(f"pydicom test file {name} not installed")
    return str(p)


def nibabel_test_file(name: str) -> str:
    """Path of a file in nibabel's ``tests/data``; skips when absent."""
    import nibabel

    p = Path(nibabel.__file__).parent / "tests" / "data" / name
    if not p.exists():
        pytest.skip(f"nibabel test file {name} not installed")
    return str(p)


def rotation(ax: float = 0.0, ay: float = 0.0, az: float = 0.0) -> np.ndarray:
    """3x3 rotation matrix (radians about x, then y, then z)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def write_dicom_series(
    folder: str | Path,
    volume: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    positions: Sequence[Sequence[float]] | None = None,
    slope: float | Sequence[float] = 1.0,
    intercept: float | Sequence[float] = -1024.0,
    modality: str = "CT",
    patient_name: str = "TEST^PATIENT",
    patient_id: str = "TESTID",
    series_uid: str | None = None,
    shuffle: bool = True,
    per_slice: Callable | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write ``volume`` (X, Y, Z) (real values, e.g. HU) as a classic single-frame DICOM series.

    Geometry is the DICOM definition itself: slice ``k`` has ImagePositionPatient
    ``origin + k * spacing[2] * (r x c)`` (LPS mm) unless ``positions`` are given; voxel ``(i, j)``
    of a slice lies at ``IPP + i * spacing[0] * r + j * spacing[1] * c`` where ``r, c`` = ``iop``.
    Stored values are ``round((v - intercept) / slope)`` as signed 16 bit (slope/intercept may vary per
    slice). Files are written in a shuffled order with shuffled InstanceNumbers (sorting must use the
    positions). ``per_slice(ds, k)`` may edit each dataset before writing. Returns the paths in slice order.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    X, Y, Z = volume.shape
    r = np.asarray(iop[:3], float)
    c = np.asarray(iop[3:], float)
    n = np.cross(r, c)
    if positions is None:
        positions = [np.asarray(origin, float) + k * spacing[2] * n for k in range(Z)]
    slopes = np.broadcast_to(np.asarray(slope, float), (Z,))
    inters = np.broadcast_to(np.asarray(intercept, float), (Z,))
    rng = np.random.default_rng(seed)
    order = rng.permutation(Z) if shuffle else np.arange(Z)
    study, series, frame = generate_uid(), series_uid or generate_uid(), generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    paths: list[Path] = [None] * Z  # type: ignore[list-item]
    for file_no, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        uid = generate_uid()
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = modality
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.SeriesDescription = "test series"
        ds.SeriesNumber = 1
        ds.InstanceNumber = int(rng.integers(1, 10000))
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in positions[k]]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2]) * 0.5  # deliberately NOT the spacing: must not be used
        ds.Rows, ds.Columns = Y, X
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = f"{slopes[k]:g}"
        ds.RescaleIntercept = f"{inters[k]:g}"
        stored = np.round((volume[:, :, k].astype(np.float64) - inters[k]) / slopes[k]).astype(np.int16)
        ds.PixelData = np.ascontiguousarray(stored.T).tobytes()
        if per_slice is not None:
            per_slice(ds, k)
        p = folder / f"file_{file_no:04d}.dcm"
        pydicom.dcmwrite(p, ds, enforce_file_format=True)
        paths[k] = p
    return paths


@pytest.fixture
def dicom_writer() -> Callable[..., list[Path]]:
    """The generic :func:`write_dicom_series` writer."""
    return write_dicom_series


@pytest.fixture
def pydicom_file() -> Callable[[str], str]:
    """:func:`pydicom_test_file`: path of a pydicom / pydicom-data test file (skips when absent, never downloads)."""
    return pydicom_test_file


@pytest.fixture
def nibabel_file() -> Callable[[str], str]:
    """:func:`nibabel_test_file`: path of a file in nibabel's tests/data (skips when absent)."""
    return nibabel_test_file


@pytest.fixture
def rotation_matrix() -> Callable[..., np.ndarray]:
    """:func:`rotation`: 3x3 rotation matrix from angles (radians) about x, y, z."""
    return rotation


@pytest.fixture(scope="session")
def small_ct_series(tmp_path_factory) -> tuple[Path, object]:
    """A small synthetic CT phantom written as a DICOM series: (folder, Phantom)."""
    from medseg.data.synthetic import ct_phantom, write_phantom_dicom

    ph = ct_phantom(seed=3, shape=(32, 28, 12))
    folder = tmp_path_factory.mktemp("ct") / "series"
    write_phantom_dicom(ph, folder)
    return folder, ph


@pytest.fixture(scope="session")
def tiny_seg_cfg() -> Callable[..., object]:
    """Factory of the tiny 3D U-Net segmentation config (~2 s per epoch on 2 CPU cores).

    ``tiny_seg_cfg(tmp, train__epochs=3)``: synthetic phantoms (4 cases, 32 x 32 x 16 at 6 x 6 x 9 mm),
    liver only, a 3-level U-Net with 4-8-16 channels, 2 epochs of 2 steps; ``section__key=value``
    overrides one key. Returns a :class:`medseg.config.SegmentationConfig`.
    """
    from medseg.config import SegmentationConfig

    def make(tmp: Path, **kw: object) -> SegmentationConfig:
        raw: dict = {
            "task": "segmentation",
            "name": "tiny",
            "output_dir": str(tmp),
            "seed": 3,
            "device": "cpu",
            "class_names": ["background", "liver"],
            "label_map": {4: 1, 2: 0, 3: 0},
            "data": {"synthetic": True, "num_cases": 4, "val_fraction": 0.34, "cache": "memory"},
            "synthetic": {"shape": [32, 32, 16], "spacing": [6.0, 6.0, 9.0]},
            "model": {"name": "unet", "channels": [4, 8, 16]},
            "train": {"epochs": 2, "batch_size": 2, "lr": 0.01, "val_every": 1, "steps_per_epoch": 2},
            "plan": {"max_patch_voxels": 24 * 24 * 16},
            "augment": {"level": "light", "samples_per_image": 1},
        }
        for k, v in kw.items():
            section, key = k.split("__")
            raw[section][key] = v
        return SegmentationConfig.model_validate(raw)

    return make


@pytest.fixture(scope="session")
def tiny_seg2d_yaml(tiny_seg_cfg) -> Callable[..., Path]:
    """Factory of a tiny 2D segmentation config file (axial phantom slices; < 1 s per epoch on 2 cores).

    ``tiny_seg2d_yaml(tmp, name="cv", data={"folds": 2}, tune={...})`` writes ``tmp/<name>.yaml``:
    :func:`tiny_seg_cfg` in 2D (8 synthetic 32 x 32 slices: 6 training, 2 test; 2 of the training
    ones validate), 2 epochs of 3 steps of batches of 4; keyword arguments update one section each
    (dicts are merged). Returns the path; runs go to ``tmp``.
    """
    import json

    import yaml

    def make(tmp: Path, name: str = "tiny2d", **sections: object) -> Path:
        raw: dict = json.loads(tiny_seg_cfg(tmp).model_dump_json(exclude_unset=True))
        raw.update(name=name, spatial_dims=2)
        raw["data"].update(num_cases=8)
        raw["train"].update(batch_size=4, steps_per_epoch=3)
        raw["plan"] = {"max_patch_voxels": 32 * 32}
        for section, value in sections.items():
            if isinstance(value, dict) and isinstance(raw.get(section), dict):
                raw[section].update(value)
            else:
                raw[section] = value
        path = Path(tmp) / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return make


@pytest.fixture(scope="session")
def tiny_seg_run(tmp_path_factory, tiny_seg_cfg) -> Path:
    """A trained run of :func:`tiny_seg_cfg` (~10 s on 2 CPU cores), shared by the tests that only read it."""
    from medseg.runs import Run
    from medseg.tasks import segmentation as seg

    tmp = tmp_path_factory.mktemp("tiny_seg_run")
    cfg = tiny_seg_cfg(tmp)
    with Run.create(tmp / "run", cfg, command="train") as run:
        seg.train(cfg, run)
    return tmp / "run"


@pytest.fixture(scope="session")
def tiny_det_run(tmp_path_factory) -> tuple[Path, Path]:
    """A detection run (proximity U-Net, 2 training steps on 64 x 64 synthetic H&E tiles) and its datalist.

    Returns ``(run folder, dataset.json)``; the data set has 2 training, 1 validation, 2 test tiles.
    """
    from medseg.config import parse_config
    from medseg.data.histology import write_histology_dataset
    from medseg.runs import Run
    from medseg.tasks import detection as det

    tmp = tmp_path_factory.mktemp("detrun")
    ds = write_histology_dataset(tmp / "data", n_train=2, n_val=1, n_test=2, shape=(64, 64), mitosis_rate=0.2)
    cfg = parse_config(
        {
            "task": "detection",
            "device": "cpu",
            "data": {"datalist": str(ds)},
            "model": {"name": "proximity_unet", "features": [4, 4, 8, 8, 8, 4]},
            "sampling": {"crop_size": 32},
            "cpu_threads": 1,
            "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4},
        }
    )
    with Run.create(tmp / "run", cfg) as run:
        det.train(cfg, run)
    return tmp / "run", ds
