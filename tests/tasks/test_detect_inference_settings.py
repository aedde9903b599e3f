"""`detect` reads images the way the run was trained: its microscopy preset, and each image's own pixel size."""

from __future__ import annotations

import json
import logging

import numpy as np
import tifffile
from skimage.io import imread, imsave

from medseg.cli import main
from medseg.config import parse_config
from medseg.data.histology import write_histology_dataset
from medseg.runs import Run
from medseg.tasks import detection as det
from medseg.tasks.detection import data as det_data


def test_detect_uses_the_runs_preset_and_each_images_pixel_size(tmp_path, monkeypatch, caplog):
    ds = write_histology_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=1, shape=(64, 64), mitosis_rate=0.2)
    cfg = parse_config(
        {
            "task": "detection",
            "device": "cpu",
            "cpu_threads": 1,
            "data": {"datalist": str(ds), "modality": "fluorescence", "pixel_size_um": 0.5},
            "model": {"name": "proximity_unet", "features": [4, 4, 8, 8, 8, 4]},
            "sampling": {"crop_size": 32},
            "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2},
        }
    )
    with Run.create(tmp_path / "run", cfg) as run:
        det.train(cfg, run)
    test = ds.parent / json.loads(ds.read_text())["test"][0]["image"]
    rgb = imread(test)[..., :3]
    tagged = tmp_path / "in" / "tagged.tif"
    tagged.parent.mkdir()
    tifffile.imwrite(tagged, rgb, photometric="rgb", resolution=(40000.0, 40000.0), resolutionunit="CENTIMETER")
    plain = tmp_path / "in" / "plain.png"
    imsave(plain, rgb, check_contrast=False)
    seen: list[str] = []
    real = det_data.read_microscopy

    def spy(path, modality="he"):
        seen.append(modality)
        return real(path, modality)

    monkeypatch.setattr(det_data, "read_microscopy", spy)
    caplog.set_level(logging.WARNING)
    out = tmp_path / "out"
    assert main(["detect", "--model", str(tmp_path / "run"), str(tagged), str(plain), "--out", str(out)]) == 0
    assert seen == ["fluorescence", "fluorescence"]  # percentile-normalised as in training, not read as H&E
    per = json.loads((out / "detect_summary.json").read_text())["per_image"]
    assert per["tagged"]["pixel_size_um"] == 0.25 and per["tagged"]["pixel_size_source"] == "tiff"
    assert per["plain"]["pixel_size_um"] == 0.5 and per["plain"]["pixel_size_source"] == "run"
    assert np.isclose(per["tagged"]["area_mm2"], 64 * 64 * 0.25e-3**2, rtol=1e-3)
    assert any("differs from the training images" in r.getMessage() for r in caplog.records)
