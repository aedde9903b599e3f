"""Self-configuration on zero-background MR and small data (issue 17): crop and normalisation rules,
a constant window predicts background, 2D and 3D configurations, honest validation of one case."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config import SegmentationConfig
from medseg.data.synthetic import make_mr_dataset, mr_phantom, write_phantom_nifti
from medseg.engine.checkpoint import load_run_model
from medseg.engine.inference import predict_probs
from medseg.engine.plan import choose_configuration, fingerprint, make_plan
from medseg.runs import Run
from medseg.tasks import segmentation as seg
from medseg.tasks.segmentation.train import assert_dice, make_transforms
from medseg.transforms.presets import intensity_transform

MR_SHAPE = [32, 40, 32]


def mr_cfg(tmp: Path, **kw) -> SegmentationConfig:
    """The default MR preset on small MR phantoms (only sizes and the step count are made small)."""
    raw: dict = {
        "task": "segmentation",
        "name": "mr",
        "output_dir": str(tmp),
        "seed": 1,
        "device": "cpu",
        "modality": "MR",
        "class_names": ["background", "grey_matter", "white_matter"],
        "data": {"synthetic": True, "num_cases": 4, "val_fraction": 0.34},
        "synthetic": {"shape": MR_SHAPE, "spacing": [4.0, 4.0, 4.0]},
        "model": {"name": "unet", "channels": [8, 16, 32]},
        "train": {"epochs": 8, "batch_size": 2, "lr": 0.01, "val_every": 4, "steps_per_epoch": 4},
        "plan": {"max_patch_voxels": 24 * 24 * 24},
    }
    for k, v in kw.items():
        section, key = k.split("__")
        raw[section][key] = v
    if not raw["data"]["synthetic"]:
        del raw["synthetic"], raw["data"]["num_cases"]
    return SegmentationConfig.model_validate(raw)


def _train(cfg: SegmentationConfig, out: Path) -> dict:
    with Run.create(out, cfg) as run:
        return seg.train(cfg, run)


def test_mr_phantom_is_skull_stripped_like():
    ph = mr_phantom(seed=2, shape=(32, 40, 32), spacing=(4.0, 4.0, 4.0))
    zero = ph.image == 0
    assert 0.6 < zero.mean() < 0.85  # mostly exact-zero background (the real T1 has 78 %)
    assert not (zero & (ph.label > 0)).any()  # no tissue label on a zero voxel
    assert set(np.unique(ph.label)) == {0, 1, 2}
    gm, wm = ph.image[ph.label == 1].mean(), ph.image[ph.label == 2].mean()
    assert wm > gm * 1.3  # T1: white matter brighter than grey
    # partial volume: the brain's edge voxels hold intermediate intensities
    edge = (ph.image > 0) & (ph.image < 0.45 * wm)
    assert edge.sum() > 50


def test_fingerprint_and_plan_of_zero_background_mr(tmp_path):
    dl = make_mr_dataset(tmp_path, n_cases=2, seed=0, shape=tuple(MR_SHAPE), spacing=(4.0, 4.0, 4.0))
    items = [{k: str(tmp_path / v) for k, v in it.items()} for it in json.loads(dl.read_text())["training"]]
    fp = fingerprint(items, spatial_dims=3, modality="MR")
    assert fp["crop_fraction"] < 0.75 and fp["zero_fraction"] > 0.6 and fp["labels_on_zero"] == 0.0
    assert all(c <= s for cs, ss in zip(fp["cropped_shapes"], fp["shapes"]) for c, s in zip(cs, ss))
    plan = make_plan(fp, spatial_dims=3, modality="MR")
    assert plan["crop"]["mode"] == "nonzero" and plan["norm"]["nonzero_mask"] is True
    assert plan["zero_is_background"] is True and plan["norm_layer"] == "batch"
    assert set(plan["configurations"]) == {"2d", "3d"} and plan["configuration_reason"]
    ct = make_plan(
        {**fp, "foreground": {"p00_5": -50, "p99_5": 200, "mean": 60, "std": 30}}, spatial_dims=3, modality="CT"
    )
    assert ct["crop"]["mode"] == "body" and "clip" in ct["norm"] and ct["zero_is_background"] is False


def test_configuration_choice_follows_data_and_budget():
    c = {"3d": {"coverage": 0.2}, "2d": {"coverage": 1.0}}
    assert choose_configuration(c, [1, 1, 1])[0] == "3d"
    assert choose_configuration(c, [1, 1, 1], budget_minutes=5)[0] == "2d"  # short budget: 3D needs 1/4
    assert choose_configuration(c, [0.8, 0.8, 5.0])[0] == "2d"  # thick slices
    assert choose_configuration({**c, "3d": {"coverage": 0.05}}, [1, 1, 1])[0] == "2d"
    assert choose_configuration(c, [0.8, 0.8, 5.0], requested="3d") == (
        "3d",
        "requested in the config (plan.configuration: 3d)",
    )
    assert choose_configuration({"2d": {"coverage": 1.0}}, [1, 1])[0] == "2d"


class PerVoxel(torch.nn.Module):
    """A 2D/3D stand-in network: class 1 where the intensity is above 0.5 (works on any window)."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 20 * (x - 0.5)], 1)


def test_slice_wise_2d_prediction_of_a_volume_is_reassembled_in_place():
    vol = torch.rand(1, 1, 20, 18, 7)
    plan = {"patch_size": [16, 16], "slice_axis": 2}
    probs, _ = predict_probs(PerVoxel(), vol, plan)
    assert probs.shape == (1, 2, 20, 18, 7)
    assert torch.equal(probs.argmax(1)[0], (vol[0, 0] > 0.5).long())
    plan_x = {"patch_size": [16, 8], "slice_axis": 0}  # slices across axis 0
    probs_x, dis = predict_probs(PerVoxel(), vol, plan_x, tta_axes=[0, 1, 2], return_disagreement=True)
    assert probs_x.shape == (1, 2, 20, 18, 7) and dis is not None and dis.shape == (1, 20, 18, 7)
    assert torch.equal(probs_x.argmax(1)[0], (vol[0, 0] > 0.5).long())


def test_zero_voxels_are_background_when_planned():
    vol = torch.rand(1, 1, 8, 8, 8) + 1.0
    vol[..., :4] = 0.0
    probs, _ = predict_probs(PerVoxel(), vol, {"patch_size": [8, 8, 8], "zero_is_background": True})
    assert (probs.argmax(1)[0, ..., :4] == 0).all() and (probs.argmax(1)[0, ..., 4:] == 1).all()


@pytest.fixture(scope="module")
def mr_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mr")
    cfg = mr_cfg(tmp)
    summary = _train(cfg, tmp / "run")
    return tmp, cfg, summary


def test_default_mr_preset_labels_nothing_outside_the_head(mr_run):
    tmp, cfg, summary = mr_run
    assert summary["validation"] == "cases" and 0.0 <= summary["best_val_dice"] <= 1.0
    ph = mr_phantom(seed=77, shape=tuple(MR_SHAPE), spacing=(4.0, 4.0, 4.0))
    path = write_phantom_nifti(ph, tmp / "test.nii.gz")[0]
    model, _, ck = load_run_model(tmp / "run", "best")
    res = seg.predict_case(model, path, meta=ck["meta"], infer=cfg.infer, device=torch.device("cpu"))
    outside = ph.image == 0
    assert int((res["labels"][outside] > 0).sum()) == 0
    wm = res["labels"] == 2
    assert 2 * (wm & (ph.label == 2)).sum() / (wm.sum() + (ph.label == 2).sum()) > 0.5


def test_constant_zero_window_predicts_background_with_the_planned_norm_layer(mr_run):
    """The network itself (no zero masking) gives background on an all-zero window."""
    tmp, cfg, _ = mr_run
    model, _, ck = load_run_model(tmp / "run", "best")
    plan = ck["meta"]["plan"]
    assert ck["meta"]["model_params"]["norm"] == "batch"
    raw = {"image": torch.zeros(1, *plan["patch_size"])}
    x = intensity_transform("MR", nonzero=plan["norm"]["nonzero_mask"])(raw)["image"]
    model.eval()
    with torch.no_grad():
        out = model(torch.as_tensor(x)[None])
    assert (out.argmax(1) == 0).float().mean() > 0.99


def test_ct_preset_constant_window_predicts_background(tmp_path, tiny_seg_cfg):
    cfg = tiny_seg_cfg(tmp_path, train__epochs=60, train__steps_per_epoch=4, train__val_every=20)  # trained: Dice > 0.5
    _train(cfg, tmp_path / "run")
    model, _, ck = load_run_model(tmp_path / "run", "best")
    plan, norm = ck["meta"]["plan"], ck["meta"]["plan"]["norm"]
    model.eval()
    # constant windows of what surrounds the organs: air outside the body, fat. (A constant 0 HU window is
    # not asked: water lies between the lesion (10 HU) and kidney (30 HU) values of these phantoms.)
    for hu in (-1000.0, -100.0):
        raw = {"image": torch.full((1, *plan["patch_size"]), hu)}
        x = intensity_transform("CT", clip=norm["clip"], mean=norm["mean"], std=norm["std"])(raw)["image"]
        with torch.no_grad():
            out = model(torch.as_tensor(x)[None])
        assert (out.argmax(1) == 0).float().mean() > 0.99, hu


def test_one_training_volume_holds_out_a_spatial_block(tmp_path):
    data = tmp_path / "data"
    ph = mr_phantom(seed=4, shape=tuple(MR_SHAPE), spacing=(4.0, 4.0, 4.0))
    img, lab = write_phantom_nifti(ph, data / "img.nii.gz", data / "lab.nii.gz")
    dl = data / "dataset.json"
    dl.write_text(json.dumps({"training": [{"image": "img.nii.gz", "label": "lab.nii.gz"}]}))
    cfg = mr_cfg(tmp_path, data__synthetic=False, data__datalist=str(dl), train__epochs=2, train__steps_per_epoch=2)
    summary = _train(cfg, tmp_path / "run")
    assert summary["validation"] == "spatial_block" and summary["train_cases"] == 1
    assert summary["best_val_dice"] is None or 0.0 <= summary["best_val_dice"] <= 1.0
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["validation"]["mode"] == "spatial_block" and "too few" in run_json["validation"]["reason"]
    # the blocks are disjoint: training and validation never share a voxel
    _, val_tf = make_transforms(cfg, json.loads((tmp_path / "run" / "plan.json").read_text()))
    tr = val_tf({"image": str(img), "label": str(lab), "block": "train:0.2"})
    va = val_tf({"image": str(img), "label": str(lab), "block": "val:0.2"})
    full = val_tf({"image": str(img), "label": str(lab)})
    ax = int(np.argmax(np.array(full["image"].shape[1:])))
    assert tr["image"].shape[1 + ax] + va["image"].shape[1 + ax] == full["image"].shape[1 + ax]
    assert va["image"].shape[1 + ax] < tr["image"].shape[1 + ax]


def test_no_validation_reports_no_dice(tmp_path):
    cfg = mr_cfg(tmp_path, data__val_fraction=0.0, train__epochs=1, train__steps_per_epoch=2)
    summary = _train(cfg, tmp_path / "run")
    assert summary["validation"] == "none" and summary["best_val_dice"] is None and summary["best_epoch"] is None
    assert summary["final_train_loss"] > 0
    assert (tmp_path / "run" / "checkpoints" / "best.pt").read_bytes() == (
        tmp_path / "run" / "checkpoints" / "last.pt"
    ).read_bytes()


def test_a_dice_outside_0_1_is_refused_at_the_source():
    assert_dice(0.5, "x")
    assert_dice(float("nan"), "x")
    with pytest.raises(AssertionError, match="not a Dice"):
        assert_dice(1.45, "best_val_dice")


def test_2d_configuration_trains_and_segments_a_volume(tmp_path):
    cfg = mr_cfg(tmp_path, plan__configuration="2d", train__epochs=2, train__steps_per_epoch=2)
    summary = _train(cfg, tmp_path / "run")
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert summary["configuration"] == "2d" and plan["network_dims"] == 2 and len(plan["patch_size"]) == 2
    ph = mr_phantom(seed=8, shape=tuple(MR_SHAPE), spacing=(4.0, 4.0, 4.0))
    path = write_phantom_nifti(ph, tmp_path / "t.nii.gz")[0]
    out = seg.segment(tmp_path / "run", [path], tmp_path / "seg", device="cpu")
    assert out["ok"] == 1
    nii = nib.load(str(tmp_path / "seg" / "labels" / "t.nii.gz"))
    assert nii.shape == ph.image.shape and np.allclose(nii.affine, ph.affine, atol=1e-4)


@pytest.mark.slow  # a fresh process (torch import + caching): ~15 s on a free machine
def test_empty_2d_label_map_is_a_clear_error_not_an_abort(tmp_path):
    """An empty (X, Y, 1) label map: the error names the file and the process exits normally (2), not 134."""
    import subprocess
    import sys

    for i in range(3):
        img = np.random.default_rng(i).random((48, 48, 1)).astype(np.float32) * 100
        lab = np.zeros((48, 48, 1), np.uint8)
        if i:
            lab[10:20, 10:20, 0] = 1
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(tmp_path / f"img{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp_path / f"lab{i}.nii.gz"))
    items = [{"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"} for i in range(3)]
    (tmp_path / "dl.json").write_text(json.dumps({"training": items}))
    (tmp_path / "cfg.yaml").write_text(
        "task: segmentation\nname: e\noutput_dir: runs\nspatial_dims: 2\nmodality: other\ndevice: cpu\n"
        "data: {datalist: dl.json}\ntrain: {epochs: 1}\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "medseg.cli", "train", str(tmp_path / "cfg.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "lab0.nii.gz is empty" in r.stderr and "terminate called" not in r.stderr
