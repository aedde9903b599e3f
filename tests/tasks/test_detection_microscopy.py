"""Microscopy presets and small data in detection (issue 17): modality from the data, percentile
normalisation of 16-bit fluorescence, pixel size from the TIFF tags, one image validates on a block."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from medseg.config import parse_config
from medseg.errors import ConfigError
from medseg.runs import Run
from medseg.tasks import detection as det
from medseg.tasks.detection.annotations import Case, split_block
from medseg.tasks.detection.targets import intensity_jitter
from medseg.transforms.microscopy import choose_modality, read_microscopy


def _fluo(seed: int = 0, shape=(96, 96), n=12) -> tuple[np.ndarray, np.ndarray]:
    """A 16-bit fluorescence-like image: dark background, bright round nuclei, one hot pixel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = rng.normal(300, 20, shape)
    pts = rng.uniform(8, min(shape) - 8, (n, 2))
    for x, y in pts:
        img += 3000 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))
    img[5, 5] = 65535  # a hot pixel: min-max scaling to 8 bit would crush the nuclei
    return np.clip(img, 0, 65535).astype(np.uint16), pts


def test_modality_from_the_data():
    gray16, _ = _fluo()
    assert choose_modality(gray16)[0] == "fluorescence"
    bright = np.full((64, 64), 220, np.uint8)
    bright[20:30, 20:30] = 60
    assert choose_modality(bright)[0] == "brightfield"
    he = np.zeros((64, 64, 3), np.uint8)
    he[...] = (230, 180, 210)
    he[10:20, 10:20] = (80, 40, 140)
    assert choose_modality(he)[0] == "he"


def test_fluorescence_is_percentile_normalised_not_min_max(tmp_path):
    img, pts = _fluo()
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, img)
    x = read_microscopy(p, "fluorescence")
    assert x.shape == (96, 96, 3) and x.dtype == np.uint8
    assert np.array_equal(x[..., 0], x[..., 1])
    cx, cy = np.round(pts[0]).astype(int)
    assert x[cy, cx, 0] > 150  # nuclei stay bright despite the hot pixel
    assert np.median(x[..., 0]) < 40
    he = read_microscopy(p, "he")  # the old min-max rule: nuclei crushed by the hot pixel
    assert he[cy, cx, 0] < 60


def test_stain_jitter_refused_for_fluorescence():
    with pytest.raises(ConfigError, match="stain_jitter"):
        parse_config({"task": "detection", "data": {"modality": "fluorescence"}, "augment": {"stain_jitter": 0.05}})


def test_intensity_jitter_stays_in_range():
    rng = np.random.default_rng(0)
    x = intensity_jitter(np.full((8, 8, 3), 128, np.uint8), 0.2, rng)
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1


def test_split_block_keeps_points_with_their_part():
    img = np.zeros((40, 100, 3), np.uint8)
    c = Case("a", None, img, np.array([[10.0, 5.0], [90.0, 20.0]]), np.array([0, 1]))  # type: ignore[arg-type]
    a, b = split_block(c, 0.2)
    assert a.image.shape[1] == 80 and b.image.shape[1] == 20
    assert a.points.tolist() == [[10.0, 5.0]] and b.points.tolist() == [[10.0, 20.0]] and b.classes.tolist() == [1]


def test_one_fluorescence_image_trains_with_block_validation_and_file_pixel_size(tmp_path, caplog):
    img, pts = _fluo(shape=(96, 128))
    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(data / "f.tif", img, resolution=(1e4 / 0.65, 1e4 / 0.65), resolutionunit="CENTIMETER")
    (data / "points.csv").write_text("image,x,y\n" + "".join(f"f.tif,{x:.1f},{y:.1f}\n" for x, y in pts))
    (data / "dataset.json").write_text(json.dumps({"training": [{"image": "f.tif"}], "points": "points.csv"}))
    cfg = parse_config(
        {
            "task": "detection",
            "device": "cpu",
            "cpu_threads": 1,
            "class_names": ["nucleus"],
            "data": {"datalist": str(data / "dataset.json")},
            "model": {"name": "proximity_unet", "features": [4, 4, 8, 8, 8, 4]},
            "sampling": {"crop_size": 32},
            "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2},
        }
    )
    with Run.create(tmp_path / "run", cfg) as run:
        s = det.train(cfg, run)
    assert s["validation"] == "spatial_block" and s["modality"] == "fluorescence"
    assert s["pixel_size_um"] == pytest.approx(0.65, rel=1e-4)
    info = json.loads((tmp_path / "run" / "detection.json").read_text())
    assert info["modality"] == "fluorescence" and "tiff metadata" in info["pixel_size_source"]
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["validation"]["mode"] == "spatial_block" and "too few" in run_json["validation"]["reason"]
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "pixel_size_um: 0.65" in saved and "modality: fluorescence" in saved
