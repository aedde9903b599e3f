"""The library API: medseg.load_model(run) -> model.predict(image) equals the CLI; medseg.explain.gradcam."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from skimage.io import imread

import medseg
from medseg import io as mio
from medseg.cli import main
from medseg.config import parse_config
from medseg.data.histology import write_histology_dataset
from medseg.data.synthetic import ct_phantom, write_phantom_nifti
from medseg.errors import InputError
from medseg.explain import gradcam
from medseg.runs import Run
from medseg.tasks import detection as det
from medseg.tasks import segmentation as seg
from medseg.tasks.trained import ClassificationModel, DetectionModel, SegmentationModel
from tests.explain.conftest import write_classifier_run


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory, tiny_seg_cfg) -> Path:
    tmp = tmp_path_factory.mktemp("api_seg")
    cfg = tiny_seg_cfg(tmp, train__epochs=8, train__steps_per_epoch=3, train__val_every=4)
    with Run.create(tmp / "run", cfg, command="train") as run:
        seg.train(cfg, run)
    return tmp / "run"


def test_segmentation_predict_equals_segment_for_a_path_a_metatensor_and_an_array(seg_run, tmp_path):
    ph = ct_phantom(seed=31, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
    path = write_phantom_nifti(ph, tmp_path / "case.nii.gz")[0]
    model = medseg.load_model(seg_run, device="cpu")
    assert isinstance(model, SegmentationModel) and model.class_names == ["background", "liver"]
    assert main(["segment", "--model", str(seg_run), str(path), "--out", str(tmp_path / "cli"), "--device", "cpu"]) == 0
    cli = nib.load(str(tmp_path / "cli" / "labels" / "case.nii.gz"))
    pred = model.predict(path)
    assert pred.labels.shape == (1, *ph.image.shape) and pred.probabilities.shape == (2, *ph.image.shape)
    assert np.array_equal(pred.labels[0].numpy(), np.asarray(cli.dataobj))
    assert np.allclose(pred.labels.affine.numpy(), cli.affine, atol=1e-4)
    assert np.allclose(pred.probabilities.sum(0).numpy(), 1.0, atol=1e-4) and 0.0 <= pred.uncertainty <= 1.0
    img = mio.load(path)
    assert np.array_equal(model.predict(img).labels.numpy(), pred.labels.numpy())
    arr = nib.load(str(path))
    from_array = model.predict(np.asarray(arr.dataobj, np.float32), affine=arr.affine)
    assert np.array_equal(from_array.labels.numpy(), pred.labels.numpy())
    with pytest.raises(InputError, match="affine"):
        model.predict(np.asarray(arr.dataobj, np.float32))
    with pytest.raises(InputError, match="given to a 3D model"):
        model.predict(np.zeros((32, 32), np.float32), affine=np.eye(4))


def test_segmentation_gradcam_is_on_the_source_grid_and_follows_the_region(seg_run, tmp_path):
    ph = ct_phantom(seed=32, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
    path = write_phantom_nifti(ph, tmp_path / "case.nii.gz")[0]
    model = medseg.load_model(seg_run, device="cpu")
    pred = model.predict(path)
    if not bool((pred.labels == 1).any()):
        pytest.skip("the tiny model predicts no liver on this case")
    cam = gradcam(model, path, target="liver")
    assert isinstance(cam, MetaTensor) and cam.shape == (1, *ph.image.shape)
    assert np.allclose(cam.affine.numpy(), pred.labels.affine.numpy(), atol=1e-4)
    assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0 and float(cam.max()) > 0.5
    corner = np.zeros(ph.image.shape, bool)
    corner[:8, :8, :4] = True  # a small region in a corner: the map there is of the logits in that corner
    cam_corner = gradcam(model, path, target=1, region=corner)
    assert cam_corner.shape == cam.shape and not torch.allclose(cam_corner, cam)
    with pytest.raises(InputError, match="unknown class"):
        gradcam(model, path, target="spleen")
    with pytest.raises(InputError, match="region is empty"):
        gradcam(model, path, target=1, region=np.zeros(ph.image.shape, bool))


@pytest.fixture(scope="module")
def det_run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("api_det")
    ds = write_histology_dataset(tmp / "data", n_train=2, n_val=1, n_test=1, shape=(64, 64), mitosis_rate=0.2)
    cfg = parse_config(
        {
            "task": "detection",
            "device": "cpu",
            "cpu_threads": 1,
            "data": {"datalist": str(ds)},
            "model": {"name": "proximity_unet", "features": [4, 4, 8, 8, 8, 4]},
            "sampling": {"crop_size": 32},
            "train": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 4},
        }
    )
    with Run.create(tmp / "run", cfg) as run:
        det.train(cfg, run)
    return tmp / "run", ds.parent / json.loads(ds.read_text())["test"][0]["image"]


def test_detection_predict_equals_detect_and_gradcam_around_a_detection(det_run, tmp_path):
    run_dir, image = det_run
    model = medseg.load_model(run_dir, device="cpu")
    assert isinstance(model, DetectionModel)
    pred = model.predict(image)
    assert main(["detect", "--model", str(run_dir), str(image), "--out", str(tmp_path / "cli")]) == 0
    rows = list(csv.DictReader((tmp_path / "cli" / f"{image.stem}_detections.csv").open()))
    assert len(rows) == len(pred) and len(pred.table()) == len(pred)
    for r, t in zip(rows, pred.table()):
        assert abs(float(r["x"]) - t["x"]) < 1e-3 and abs(float(r["y"]) - t["y"]) < 1e-3
    assert np.array_equal(model.predict(imread(image)).points, pred.points)  # an array as stored
    h, w = imread(image).shape[:2]
    everywhere = gradcam(model, image)
    assert everywhere.shape == (h, w) and 0.0 <= everywhere.min() and everywhere.max() <= 1.0
    if len(pred):
        x, y = pred.points[0]
        # the decoder's last block: this barely trained model's deepest block has no positive evidence yet
        near = gradcam(model, image, target=0, layer="upcat_1")
        assert near.shape == (h, w) and near.max() == pytest.approx(1.0)
        assert np.allclose(near, gradcam(model, image, target=(x, y), layer="upcat_1"), atol=1e-5)
        assert not model.network.training and len(model.predict(image)) == len(pred)  # the maps change nothing
        with pytest.raises(InputError, match="does not exist"):
            gradcam(model, image, target=len(pred) + 5)


def test_classification_predict_equals_classify_and_gradcam_at_the_image_size(tmp_path):
    run_dir = write_classifier_run(tmp_path / "cls", size=32)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    from skimage.io import imsave

    imsave(tmp_path / "a.png", img, check_contrast=False)
    model = medseg.load_model(run_dir, device="cpu")
    assert isinstance(model, ClassificationModel)
    pred = model.predict(tmp_path / "a.png")
    assert main(["classify", "--model", str(run_dir), str(tmp_path / "a.png"), "--out", str(tmp_path / "cli")]) == 0
    row = next(csv.DictReader((tmp_path / "cli" / "predictions.csv").open()))
    assert row["predicted_class"] == pred.predicted_class
    for c, p in pred.probabilities.items():
        assert abs(float(row[f"prob_{c}"]) - p) < 1e-5
    assert model.predict(img).probabilities == pytest.approx(pred.probabilities, abs=1e-6)
    cam = gradcam(model, img, target="malignant")
    assert cam.shape == (40, 50) and 0.0 <= cam.min() and cam.max() <= 1.0
    with pytest.raises(InputError, match="unknown class"):
        gradcam(model, img, target="cyst")


def test_explain_cli_writes_maps_of_segmentation_and_detection_runs(seg_run, det_run, tmp_path):
    ph = ct_phantom(seed=33, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
    path = write_phantom_nifti(ph, tmp_path / "case.nii.gz")[0]
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    out = tmp_path / "seg"
    rc = main(["explain", "--model", str(seg_run), str(path), str(bad), "--out", str(out), "--target", "liver"])
    rows = {r["case_id"]: r for r in json.loads((out / "explain.json").read_text())}
    if rows["case"]["status"] == "ok":  # the tiny model may predict no liver: then the case is skipped, named
        assert rc == 1
        cam = nib.load(rows["case"]["outputs"]["cam_map"])
        assert cam.shape == ph.image.shape and np.allclose(cam.affine, ph.affine, atol=1e-4)
        assert np.asarray(cam.dataobj).max() == pytest.approx(1.0, abs=1e-5)
    else:
        assert "no voxel is predicted" in rows["case"]["reason"]
    assert rows["bad"]["status"] == "skipped" and (out / "report.html").is_file()
    run_dir, image = det_run
    out = tmp_path / "det"
    assert main(["explain", "--model", str(run_dir), str(image), "--out", str(out), "--layer", "upcat_1"]) == 0
    row = json.loads((out / "explain.json").read_text())[0]
    cam = np.load(row["outputs"]["cam_map"])
    assert cam.shape == imread(image).shape[:2] and row["detections"] > 0
    assert (
        main(["explain", "--model", str(run_dir), str(image), "--out", str(tmp_path / "x"), "--target", "liver"]) == 2
    )


def test_gradcam_of_a_2d_configuration_covers_the_slices_of_the_region(tmp_path, tiny_seg_cfg):
    cfg = tiny_seg_cfg(tmp_path, plan__configuration="2d", train__epochs=4, train__steps_per_epoch=2)
    with Run.create(tmp_path / "run", cfg, command="train") as run:
        seg.train(cfg, run)
    model = medseg.load_model(tmp_path / "run", device="cpu")
    assert json.loads((tmp_path / "run" / "plan.json").read_text()).get("slice_axis") is not None
    ph = ct_phantom(seed=34, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
    path = write_phantom_nifti(ph, tmp_path / "case.nii.gz")[0]
    region = ph.label > 0
    cam = gradcam(model, path, target="liver", region=region)
    assert cam.shape == (1, *ph.image.shape) and float(cam.max()) == pytest.approx(1.0, abs=1e-5)
    z = np.flatnonzero(region.any((0, 1)))
    outside = np.setdiff1d(np.arange(ph.image.shape[2]), np.arange(z.min() - 1, z.max() + 2))
    assert float(cam[0][..., outside].abs().max()) < 1e-6  # only the slices holding the region are explained


def test_segment_writes_labels_in_the_inputs_family_or_the_chosen_format(seg_run, tmp_path):
    import SimpleITK as sitk

    ph = ct_phantom(seed=35, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
    nii = write_phantom_nifti(ph, tmp_path / "case.nii.gz")[0]
    (tmp_path / "nrrd").mkdir()
    sitk.WriteImage(sitk.ReadImage(str(nii)), str(tmp_path / "nrrd" / "case.nrrd"))
    out = tmp_path / "auto"
    assert main(["segment", "--model", str(seg_run), str(tmp_path / "nrrd" / "case.nrrd"), "--out", str(out)]) == 0
    seg_nrrd = mio.load(out / "labels" / "case.seg.nrrd")  # a 3D Slicer segmentation, segments named by class
    ref = medseg.load_model(seg_run, device="cpu").predict(nii)
    if bool((ref.labels == 1).any()):
        assert [(s["name"], s["label_value"]) for s in seg_nrrd.meta["segments"]] == [("liver", 1)]
    assert np.array_equal(np.asarray(seg_nrrd[0]), ref.labels[0].numpy())
    out = tmp_path / "nifti"
    args = ["segment", "--model", str(seg_run), str(tmp_path / "nrrd" / "case.nrrd"), "--out", str(out)]
    assert main([*args, "--labels-format", "nifti"]) == 0
    assert np.array_equal(np.asarray(nib.load(str(out / "labels" / "case.nii.gz")).dataobj), ref.labels[0].numpy())
