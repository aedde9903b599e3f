"""Segment -> lesions -> classify: per-lesion probabilities, calls, views, Grad-CAM, DICOM SEG, report rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from medseg.cli import main
from medseg.config import ClassificationConfig
from medseg.data.lesions3d import lesion_ct_volume
from medseg.data.synthetic import Phantom, write_phantom_dicom
from medseg.errors import InputError
from medseg.io import load, save_label
from medseg.models import build_model
from medseg.runs import Run
from medseg.tasks.classification import train
from medseg.tasks.lesions import lesion_cases
from medseg.tasks.lesions.classify import lesion_cam


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def lesion_model(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("lesion_model")
    cfg = ClassificationConfig.model_validate(
        {
            "task": "classification",
            "name": "nodules",
            "output_dir": str(tmp),
            "device": "cpu",
            "data": {"synthetic": True, "num_cases": 16},
            "volume": {"size_mm": 40, "grid": 16},
            "model": {"name": "resnet", "depth": 10},
            "train": {"epochs": 1, "batch_size": 8},
            "operating_points": {"n_bootstrap": 50},
        }
    )
    run = Run.create(tmp / "run", cfg)
    with run:
        train(cfg, run)
    return tmp / "run"


def _scans(tmp: Path) -> tuple[Path, list[dict]]:
    entries, truth = [], []
    for i in range(2):
        v = lesion_ct_volume(20 + i, [0, 1], shape=(64, 64, 32), diameter_mm=(6.0, 10.0))
        img = tmp / f"scan{i}.nii.gz"
        nib.save(nib.Nifti1Image(v["image"], v["affine"]), str(img))
        nib.save(nib.Nifti1Image(v["labels"], v["affine"]), str(tmp / f"scan{i}_seg.nii.gz"))
        entries.append({"image": img.name, "label": f"scan{i}_seg.nii.gz"})
        truth.append(v)
    dl = tmp / "scans.json"
    dl.write_text(json.dumps({"test": entries}))
    return dl, truth


def test_classify_lesions_table_calls_views_cam_and_report(lesion_model, tmp_path):
    dl, truth = _scans(tmp_path)
    out = tmp_path / "out"
    assert main(["classify", "--lesions", "1", "--model", str(lesion_model), str(dl), "--out", str(out)]) == 0
    rows = _rows(out / "lesions.csv")
    assert len(rows) == 4 and [r["case_id"] for r in rows] == ["scan0", "scan0", "scan1", "scan1"]
    info = json.loads((lesion_model / "classifier.json").read_text())
    for r in rows:
        p = float(r["probability"])
        assert 0.0 <= p <= 1.0
        for point, thr in info["operating_points"].items():
            assert r[f"call_{point}"] == ("malignant" if p >= thr else "benign")
        assert r["prediction"] == r[f"call_{info['use']}"]
        assert r["cam_pointing_hit"] in ("True", "False") and 0.0 <= float(r["cam_dice"]) <= 1.0
        assert (out / "lesion_views" / f"{r['case_id']}_L{r['lesion_id']}.png").is_file()
        assert (out / "lesion_views" / f"{r['case_id']}_L{r['lesion_id']}_cam.png").is_file()
    # the lesions are the generator's nodules: same volumes
    true_ml = sorted(float((t["instances"] == k).sum()) * 0.8 * 0.8 * 1.25 / 1000 for t in truth for k in (1, 2))
    assert sorted(float(r["volume_ml"]) for r in rows) == pytest.approx(true_ml, abs=1e-3)
    per_case = _rows(out / "lesions" / "scan0_lesions.csv")
    assert [r["lesion_id"] for r in per_case] == ["1", "2"] and "probability" in per_case[0]
    html = (out / "report.html").read_text()
    assert "scan0_L1" in html and "scan1_L2" in html
    cases = json.loads((out / "classify.json").read_text())
    assert [c["n_lesions"] for c in cases] == [2, 2]


def test_segment_folders_are_inputs_and_unlabelled_scans_are_refused(tmp_path):
    seg = tmp_path / "seg"
    seg.mkdir()
    rows = [
        {"case_id": "a", "source": "/data/a.nii.gz", "status": "ok", "outputs": {"labels": str(seg / "a.nii.gz")}},
        {"case_id": "b", "source": "/data/b.nii.gz", "status": "skipped", "outputs": {}},
    ]
    (seg / "segment.json").write_text(json.dumps(rows))
    cases = lesion_cases([seg])
    assert [(c.case_id, c.label) for c in cases] == [("a", seg / "a.nii.gz")]
    (tmp_path / "x.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="label map"):
        lesion_cases([tmp_path / "x.nii.gz"])


def test_25d_cam_is_scored_on_the_planes():
    net = build_model("efficientnet_lite0_25d", pretrained=False, image_size=32, views="planes").eval()
    crop = np.zeros((1, 32, 32, 32), np.uint8)
    crop[0, 12:20, 12:20, 12:20] = 200
    mask = crop[0] > 0
    maps, c3, hit, dice = lesion_cam(net, crop, mask, target=1)
    assert len(maps) == 3 and maps[0].shape == (32, 32) and c3 is None
    assert isinstance(hit, bool) and 0.0 <= dice <= 1.0
    # views resized for the network (view_size): the map comes back on the crop's grid
    big = build_model("efficientnet_lite0_25d", pretrained=False, image_size=32, views="planes", view_size=64).eval()
    assert big.views_of(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 3, 64, 64)
    maps, _, _, _ = lesion_cam(big, crop, mask, target=1)
    assert maps[0].shape == (32, 32)


def test_dicom_case_gets_a_per_lesion_seg_with_calls(lesion_model, tmp_path):
    v = lesion_ct_volume(7, [0, 1], shape=(64, 64, 32), diameter_mm=(6.0, 10.0))
    folder = tmp_path / "series"
    ph = Phantom(v["image"].astype(np.int16), v["labels"], (0.8, 0.8, 1.25), (0.0, 0.0, 0.0), 7)
    write_phantom_dicom(ph, folder)
    img = load(folder)
    labels = save_label(v["labels"][None], img, tmp_path / "seg.nii.gz")
    (tmp_path / "dl.json").write_text(json.dumps({"test": [{"image": str(folder), "label": str(labels)}]}))
    out = tmp_path / "out"
    code = main(
        ["classify", "--lesions", "--dicom-seg", "--no-cam", "--model", str(lesion_model), str(tmp_path / "dl.json")]
        + ["--out", str(out)]
    )
    assert code == 0
    rows = _rows(out / "lesions.csv")
    segs = list((out / "dicom_seg").glob("*.seg.dcm"))
    assert len(segs) == 1
    ds = pydicom.dcmread(segs[0])
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [f"lesion {r['lesion_id']}" for r in rows]
    for s, r in zip(ds.SegmentSequence, rows, strict=True):
        assert s.SegmentDescription == f"{r['prediction']} (p={float(r['probability']):.2f})"
    assert "cam_dice" not in rows[0]


def test_explain_lesions_writes_3d_maps_in_scan_space(lesion_model, tmp_path):
    dl, truth = _scans(tmp_path)
    out = tmp_path / "cams"
    assert main(["explain", "--lesions", "--model", str(lesion_model), str(dl), "--out", str(out)]) == 0
    rows = _rows(out / "lesions.csv")
    assert (out / "explain.csv").is_file() and len(rows) == 4
    summary = json.loads((out / "run.json").read_text())["summary"]
    hits = [r["cam_pointing_hit"] == "True" for r in rows]
    assert summary["cam_pointing_game"] == pytest.approx(np.mean(hits), abs=1e-3)
    assert summary["cam_dice_mean"] == pytest.approx(np.mean([float(r["cam_dice"]) for r in rows]), abs=1e-3)
    r = rows[0]
    nii = nib.load(str(out / "lesion_cams" / f"{r['case_id']}_L{r['lesion_id']}_cam.nii.gz"))
    assert nii.shape == (16, 16, 16) and np.allclose(nii.header.get_zooms(), 2.5)
    centre = nii.affine[:3, :3] @ [7.5, 7.5, 7.5] + nii.affine[:3, 3]
    assert centre == pytest.approx([float(r[f"centroid_{a}_mm"]) for a in "ras"], abs=0.01)
    assert 0.0 <= np.asarray(nii.dataobj).min() and np.asarray(nii.dataobj).max() <= 1.0 + 1e-6


@pytest.mark.slow
def test_lesion_pipeline_script_segments_then_classifies(lesion_model, tmp_path, tiny_seg_cfg):
    import importlib.util

    from medseg.data.synthetic import ct_phantom, write_phantom_nifti
    from medseg.tasks import segmentation as seg

    cfg = tiny_seg_cfg(tmp_path, train__epochs=2)
    run = Run.create(tmp_path / "seg_run", cfg)
    with run:
        seg.train(cfg, run)
    ph = ct_phantom(seed=11, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
    img = write_phantom_nifti(ph, tmp_path / "ct.nii.gz")[0]
    spec = importlib.util.spec_from_file_location("lesion_pipeline", Path("pipelines/lesion_pipeline.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "out"
    args = ["--segmenter", str(tmp_path / "seg_run"), "--classifier", str(lesion_model), "--lesions", "liver"]
    assert mod.main([*args, "--out", str(out), "--device", "cpu", str(img)]) == 0
    seg_rows = _rows(out / "segment" / "lesions.csv")
    cls_rows = _rows(out / "classify" / "lesions.csv")
    assert len(cls_rows) == len(seg_rows)
    assert [r["volume_ml"] for r in cls_rows] == [r["volume_ml"] for r in seg_rows]
    assert all(r["prediction"] in ("benign", "malignant") for r in cls_rows)


def test_explain_lesions_target_picks_the_class_explained(lesion_model, tmp_path, monkeypatch):
    import medseg.tasks.lesions.classify as lesion_classify

    seen: list[int] = []
    real = lesion_classify.lesion_cam

    def spy(model, crop, mask, target, method="gradcam"):
        seen.append(target)
        return real(model, crop, mask, target, method)

    monkeypatch.setattr(lesion_classify, "lesion_cam", spy)  # records the class each map is computed for
    dl, _ = _scans(tmp_path)
    for target, index in ((None, 1), ("benign", 0)):
        out = tmp_path / f"cams_{target}"
        args = ["explain", "--lesions", "--model", str(lesion_model), str(dl), "--out", str(out)]
        seen.clear()
        assert main(args + (["--target", target] if target else [])) == 0
        assert seen == [index] * 4  # every lesion's map is of that class
        assert json.loads((out / "run.json").read_text())["cam_class"] == ["benign", "malignant"][index]
    code = main(["explain", "--lesions", "--model", str(lesion_model), str(dl), "--out", str(tmp_path / "bad")]
                + ["--target", "cyst"])  # fmt: skip
    assert code == 2 and not (tmp_path / "bad").exists()  # refused before a run folder is made


def test_lesions_of_a_multi_series_folder_read_the_chosen_series(lesion_model, tmp_path):
    v = lesion_ct_volume(8, [0, 1], shape=(64, 64, 32), diameter_mm=(6.0, 10.0))
    study = tmp_path / "study"
    write_phantom_dicom(
        Phantom(v["image"].astype(np.int16), v["labels"], (0.8, 0.8, 1.25), (0.0, 0.0, 0.0), 8),
        study / "a",
        series_description="chest nodules",
    )
    other = lesion_ct_volume(9, [0], shape=(48, 48, 24), diameter_mm=(6.0, 8.0))
    write_phantom_dicom(
        Phantom(other["image"].astype(np.int16), other["labels"], (0.8, 0.8, 1.25), (0.0, 0.0, 0.0), 9),
        study / "b",
        series_description="other scan",
    )
    labels = save_label(v["labels"][None], load(study / "a"), tmp_path / "seg.nii.gz")
    (tmp_path / "dl.json").write_text(json.dumps({"test": [{"image": str(study), "label": str(labels)}]}))
    base = ["classify", "--lesions", "--no-cam", "--model", str(lesion_model), str(tmp_path / "dl.json")]
    assert main([*base, "--series", "chest nodules", "--out", str(tmp_path / "ok")]) == 0
    assert len(_rows(tmp_path / "ok" / "lesions.csv")) == 2
    assert main([*base, "--series", "other scan", "--out", str(tmp_path / "wrong")]) == 3  # label map of the other grid
    assert "differ" in json.loads((tmp_path / "wrong" / "classify.json").read_text())[0]["reason"]
    # a segment folder passes on the series its run read
    seg = tmp_path / "segout"
    seg.mkdir()
    (seg / "run.json").write_text(json.dumps({"series": "chest nodules"}))
    row = {"case_id": "s", "source": str(study), "status": "ok", "outputs": {"labels": str(labels)}}
    (seg / "segment.json").write_text(json.dumps([row]))
    assert lesion_cases([seg])[0].entry == {"series": "chest nodules"}


def test_scans_unlike_the_training_scans_are_flagged_or_refused(lesion_model, tmp_path):
    ref = json.loads((lesion_model / "ood_reference.json").read_text())
    assert ref["spatial_dims"] == 3 and ref["n_cases"] >= 2  # the classifier's training scans, each once
    dl, _ = _scans(tmp_path)
    v = lesion_ct_volume(30, [0, 1], shape=(64, 64, 32), diameter_mm=(6.0, 10.0))
    coarse = np.diag([3.2, 3.2, 5.0, 1.0])  # 4x the training spacing on every axis: another protocol
    nib.save(nib.Nifti1Image(v["image"], coarse), str(tmp_path / "coarse.nii.gz"))
    nib.save(nib.Nifti1Image(v["labels"], coarse), str(tmp_path / "coarse_seg.nii.gz"))
    entries = json.loads(dl.read_text())["test"] + [{"image": "coarse.nii.gz", "label": "coarse_seg.nii.gz"}]
    dl.write_text(json.dumps({"test": entries}))
    base = ["classify", "--lesions", "--no-cam", "--model", str(lesion_model), str(dl)]
    assert main([*base, "--out", str(tmp_path / "warn")]) == 0
    rows = {r["case_id"]: r for r in json.loads((tmp_path / "warn" / "classify.json").read_text())}
    assert "ood" in rows["coarse"]["flags"] and "spacing" in rows["coarse"]["ood_reasons"]
    assert "ood" not in rows["scan0"]["flags"] and "ood" not in rows["scan1"]["flags"]
    assert main([*base, "--ood", "refuse", "--out", str(tmp_path / "refuse")]) == 1  # that case skipped
    rows = {r["case_id"]: r for r in json.loads((tmp_path / "refuse" / "classify.json").read_text())}
    assert rows["coarse"]["status"] == "skipped" and "out of distribution" in rows["coarse"]["reason"]
