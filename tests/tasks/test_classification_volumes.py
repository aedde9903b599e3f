"""Lesion classification on volumes: crops in mm, 2.5D views, config rules, training with operating points."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config import ClassificationConfig
from medseg.data.lesions3d import make_lesion_volume_dataset
from medseg.errors import ConfigError, InputError
from medseg.models import build_model
from medseg.runs import Run
from medseg.tasks.classification import train
from medseg.tasks.classification.finetune import model_params
from medseg.transforms.lesion_crop import crop_grid_affine, lesion_crop


def test_crop_is_in_mm_around_the_centre_on_any_grid():
    # a bright 4 mm cube at RAS (10, -5, 20) in an anisotropic, LPS-like (flipped) scan
    sp = np.array([0.7, 0.7, 2.0])
    aff = np.diag([-sp[0], -sp[1], sp[2], 1.0])
    aff[:3, 3] = (40.0, 30.0, -10.0)
    img = np.full((120, 120, 40), -800.0, np.float32)
    ijk = np.indices(img.shape).reshape(3, -1).T
    ras = ijk @ aff[:3, :3].T + aff[:3, 3]
    inside = np.all(np.abs(ras - [10.0, -5.0, 20.0]) <= 2.0, axis=1).reshape(img.shape)
    img[inside] = 200.0
    crop = lesion_crop(img, aff, (10.0, -5.0, 20.0), size_mm=16.0, grid=16, mask=inside, window=(-1000, 400))
    assert crop.shape == (2, 16, 16, 16) and crop.dtype == np.uint8
    bright = np.argwhere(crop[0] > 200)
    # 1 mm voxels: the cube spans ~4 voxels around the centre (7.5, 7.5, 7.5), along every axis
    assert np.allclose(bright.mean(axis=0), 7.5, atol=0.6)
    assert 3 <= np.ptp(bright[:, 0]) + 1 <= 6 and 3 <= np.ptp(bright[:, 2]) + 1 <= 6
    assert crop[0, 0, 0, 0] == round((-800 + 1000) * 255 / 1400)  # windowed background
    assert set(np.unique(crop[1])) == {0, 255} and (crop[1] == 255).sum() == pytest.approx(64, rel=0.5)
    a = crop_grid_affine((10.0, -5.0, 20.0), 16.0, 16)
    assert np.allclose(a[:3, :3] @ [7.5, 7.5, 7.5] + a[:3, 3], (10.0, -5.0, 20.0))
    with pytest.raises(InputError):
        lesion_crop(img[..., 0], aff, (0, 0, 0))


def test_25d_views_take_planes_or_slices_of_the_cube():
    net = build_model("efficientnet_lite0_25d", pretrained=False, image_size=32, views="planes")
    x = torch.zeros(2, 1, 32, 32, 32)
    x[:, :, :, :, 16] = 1.0  # the axial plane
    seen: list[torch.Tensor] = []
    net.net.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    assert net(x).shape == (2, 2)
    assert seen[0].shape == (2, 3, 32, 32) and seen[0][:, 0].min() == 1.0 and seen[0][:, 1].mean() < 0.1
    sl = build_model("efficientnet_lite0_25d", pretrained=False, image_size=32, views="slices", num_slices=5)
    assert sl(x).shape == (2, 2)
    with pytest.raises(ConfigError, match="num_slices must be 3"):
        build_model("efficientnet_lite0_25d", pretrained=False, views="planes", num_slices=5)


def _cfg(tmp, **kw) -> ClassificationConfig:
    raw = {
        "task": "classification",
        "name": "v",
        "output_dir": str(tmp),
        "device": "cpu",
        "data": {"synthetic": True, "num_cases": 16},
        "volume": {"size_mm": 40, "grid": 16, "mask_channel": True},
        "model": {"name": "resnet", "depth": 10},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.001},
        "operating_points": {"n_bootstrap": 50},
    }
    for k, v in kw.items():
        raw[k] = v
    return ClassificationConfig.model_validate(raw)


def test_volume_model_rules(tmp_path):
    p = model_params(_cfg(tmp_path), "gray", 16)
    assert p["in_channels"] == 2 and p["name"] == "resnet"
    p = model_params(_cfg(tmp_path, model={"name": "efficientnet_lite0_25d"}, volume={"grid": 24}), "gray", 24)
    assert p["views"] == "planes" and p["image_size"] == 24
    with pytest.raises(ConfigError, match="second channel"):
        model_params(_cfg(tmp_path, model={"name": "efficientnet_lite0_25d"}), "gray", 16)
    with pytest.raises(ConfigError, match="not a volume classifier"):
        model_params(_cfg(tmp_path, model={"name": "efficientnet_lite0"}), "gray", 16)
    with pytest.raises(ValueError, match="low < high"):
        _cfg(tmp_path, volume={"window": [400, -1000]})


def test_train_3d_from_scratch_on_synthetic_lesions(tmp_path):
    cfg = _cfg(tmp_path)
    run = Run.create(tmp_path / "run", cfg)
    with run:
        summary = train(cfg, run)
    assert summary["n_train"] + summary["n_validation"] + summary["n_test"] == 16
    assert 0.0 <= summary["test_auc"] <= 1.0 and len(summary["auc_ci95"]) == 2
    assert {"youden", "high_sensitivity", "high_specificity"} <= set(summary["operating_points"])
    info = json.loads((tmp_path / "run" / "classifier.json").read_text())
    assert info["volume"]["grid"] == 16 and info["volume"]["mask_channel"] is True
    assert (tmp_path / "run" / "evaluation" / "operating_points.csv").is_file()


def test_lesion_datalist_with_centre_and_a_bad_lesion(tmp_path):
    data = tmp_path / "data"
    path = make_lesion_volume_dataset(data, n=12, seed=2, shape=(32, 32, 20))
    dl = json.loads(path.read_text())
    e = dl["training"][0]
    inst = nib.load(str(data / e["mask"]))
    vox = np.argwhere(np.asarray(inst.dataobj) == e["mask_value"]).mean(0)
    centre = (inst.affine[:3, :3] @ vox + inst.affine[:3, 3]).tolist()
    dl["training"].append({"image": e["image"], "center_mm": centre, "label": e["label"]})
    dl["training"].append({"image": e["image"], "mask": e["mask"], "mask_value": 9, "label": e["label"]})
    (data / "dataset.json").write_text(json.dumps(dl))
    cfg = _cfg(
        tmp_path,
        data={"datalist": str(data / "dataset.json")},
        volume={"grid": 16, "size_mm": 40},
        train={"epochs": 1, "batch_size": 8},
    )
    run = Run.create(tmp_path / "run", cfg)
    with run:
        summary = train(cfg, run)
    assert summary["skipped"] == 1  # the lesion with no voxels of value 9
    skipped = json.loads((tmp_path / "run" / "skipped.json").read_text())
    assert "empty" in skipped[0]["error"]
