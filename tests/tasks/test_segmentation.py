"""Segmentation task: quick training, outputs in the source geometry, resume, cohort errors, evaluate."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config import SegInferSection, SegmentationConfig
from medseg.data.synthetic import ct_phantom, write_phantom_dicom, write_phantom_nifti
from medseg.engine.checkpoint import load_checkpoint
from medseg.errors import LabelMismatchError
from medseg.io import load
from medseg.runs import Run
from medseg.tasks import segmentation as seg


def _train(cfg, out: Path, resume=False):
    run = Run.open(out) if resume else Run.create(out, cfg)
    if resume:
        run.save_config(cfg)
    with run:
        return seg.train(cfg, run, resume=resume)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_seg_cfg):
    tmp = tmp_path_factory.mktemp("seg")
    cfg = tiny_seg_cfg(tmp, train__epochs=3)
    summary = _train(cfg, tmp / "run")
    return tmp / "run", cfg, summary


def test_training_writes_run_and_loss_falls(trained):
    run_dir, cfg, summary = trained
    assert summary["epochs"] == 3
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["target_spacing"] == [6.0, 6.0, 9.0]  # median spacing of the phantoms
    assert np.prod(plan["patch_size"]) <= 24 * 24 * 16 * 1.3
    assert "foreground" in plan["fingerprint"]
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4 and "val_dice" in rows[0]
    assert (run_dir / "training_curve.png").is_file()
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    ck = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    hist = ck["state"]["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]


class Bright(torch.nn.Module):
    """A stand-in network: class 1 where the normalised intensity is high (bone, > ~400 HU)."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 20 * (x - 0.4)], 1)


def _bone_meta(target_spacing):
    return {
        "plan": {
            "target_spacing": list(target_spacing),
            "patch_size": [32, 32, 16],
            "norm": {"clip": [-1000.0, 1000.0], "mean": 0.0, "std": 1000.0},
        },
        "class_names": ["background", "bone"],
        "modality": "CT",
        "spatial_dims": 3,
    }


@pytest.mark.parametrize("kind", ["nifti", "nifti_permuted", "dicom"])
def test_output_in_source_geometry(tmp_path, kind):
    """The label map has the input's affine and shape, and the bone lands on the bone voxels
    (resampled to another spacing, reoriented, then inverted back)."""
    ph = ct_phantom(seed=5, shape=(40, 36, 20), spacing=(2.0, 2.5, 4.0))
    image, truth = ph.image, ph.image > 400
    if kind == "nifti":
        path = write_phantom_nifti(ph, tmp_path / "ct.nii.gz")[0]
        ref_affine = ph.affine
    elif kind == "nifti_permuted":  # stored as (Z, X, Y) with a matching affine: not RAS-ordered
        arr = np.transpose(image, (2, 0, 1))
        aff = ph.affine[:, [2, 0, 1, 3]]
        nib.save(nib.Nifti1Image(arr, aff), str(tmp_path / "perm.nii.gz"))
        path, ref_affine, truth = tmp_path / "perm.nii.gz", aff, np.transpose(truth, (2, 0, 1))
    else:
        write_phantom_dicom(ph, tmp_path / "series")
        path, ref_affine = tmp_path / "series", ph.affine
    res = seg.predict_case(
        Bright(), path, meta=_bone_meta((3.0, 3.0, 3.0)), infer=SegInferSection(), device=torch.device("cpu")
    )
    assert res["labels"].dtype == np.uint8 and res["labels"].shape == truth.shape
    assert np.allclose(res["affine"], ref_affine, atol=1e-4)
    assert np.allclose(res["affine"], np.asarray(load(path).affine), atol=1e-6)  # == what medseg convert reads
    out = seg.write_nifti(res["labels"], res["affine"], tmp_path / "out" / "lab.nii.gz")
    nii = nib.load(str(out))
    assert np.allclose(nii.affine, ref_affine, atol=1e-4)
    pred = np.asarray(nii.dataobj) > 0
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.8, dice


def test_segment_cohort_skips_bad_case(trained, tmp_path):
    run_dir, cfg, _ = trained
    ph = ct_phantom(seed=11, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
    good = write_phantom_nifti(ph, tmp_path / "good.nii.gz")[0]
    bad = np.asarray(ph.image, np.float32)
    bad[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(bad, ph.affine), str(tmp_path / "nan.nii.gz"))
    write_phantom_dicom(ph, tmp_path / "series")
    summary = seg.segment(
        run_dir,
        [good, tmp_path / "nan.nii.gz", tmp_path / "missing.nii.gz", tmp_path / "series"],
        tmp_path / "out",
        device="cpu",
        save_probabilities=True,
    )
    assert summary["ok"] == 2 and summary["skipped"] == 2 and summary["exit_code"] == 1
    assert "NaN" in summary["skipped_cases"]["nan"]
    table = json.loads((tmp_path / "out" / "segment.json").read_text())
    assert [r["status"] for r in table] == ["ok", "skipped", "skipped", "ok"]
    assert list(table[0])[:8] == ["case_id", "source", "split", "status", "reason", "flags", "ood_reasons", "outputs"]
    for cid in ("good", "series"):
        nii = nib.load(str(tmp_path / "out" / "labels" / f"{cid}.nii.gz"))
        assert nii.get_data_dtype() == np.uint8
        assert np.allclose(nii.affine, ph.affine, atol=1e-4)
        assert nii.shape == ph.image.shape
        assert nib.load(str(tmp_path / "out" / "probabilities" / f"{cid}.nii.gz")).shape == ph.image.shape + (2,)
    assert {"uncertainty", "needs_review", "volume_ml_liver", "review_threshold"} <= set(table[0])
    # DICOM input -> DICOM SEG beside the NIfTI; NIfTI input -> none; one review report for the run
    assert (
        table[3]["outputs"]["dicom_seg"].endswith("series.seg.dcm") and Path(table[3]["outputs"]["dicom_seg"]).exists()
    )
    assert "dicom_seg" not in table[0]["outputs"]
    # skipped cases leave no outputs
    assert not (tmp_path / "out" / "labels" / "nan.nii.gz").exists()
    html = (tmp_path / "out" / "report.html").read_text()
    assert summary["report"].endswith("report.html") and "missing" in html and "NaN" in html


def test_segment_datalist_takes_the_test_list_unless_split_says(trained, tmp_path):
    """A datalist gives its ``test`` list (one rule for every predict command); ``split`` chooses another."""
    run_dir, _, _ = trained
    ph = ct_phantom(seed=12, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
    tr = write_phantom_nifti(ph, tmp_path / "imagesTr" / "tr.nii.gz", tmp_path / "labelsTr" / "tr.nii.gz")
    ts = write_phantom_nifti(ph, tmp_path / "imagesTs" / "ts.nii.gz", tmp_path / "labelsTs" / "ts.nii.gz")
    dl = tmp_path / "dataset.json"
    dl.write_text(
        json.dumps(
            {
                "training": [{"image": "imagesTr/tr.nii.gz", "label": "labelsTr/tr.nii.gz"}],
                "test": [{"image": "imagesTs/ts.nii.gz", "label": "labelsTs/ts.nii.gz"}],
            }
        )
    )
    assert tr[0].is_file() and ts[0].is_file()
    cases, rows = seg.segment_cases(run_dir, [dl], tmp_path, device="cpu", thumbnails=False)
    assert [c.case_id for c in cases] == ["ts"] and "dice_liver" in rows[0]  # the entry's label is scored
    cases, _ = seg.segment_cases(run_dir, [dl], tmp_path, device="cpu", split="all", thumbnails=False)
    assert [c.case_id for c in cases] == ["tr", "ts"]


def test_resume_reproduces_state(tmp_path, tiny_seg_cfg):
    """2 epochs straight == 1 epoch, stop, resume to 2 (weights bit-equal); extending to 3 stretches the schedule."""
    a = tiny_seg_cfg(tmp_path, train__epochs=2, train__val_every=5)
    _train(a, tmp_path / "a")
    b1 = tiny_seg_cfg(tmp_path, train__epochs=1, train__val_every=5)
    _train(b1, tmp_path / "b")
    _train(a, tmp_path / "b", resume=True)
    wa = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    wb = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert wa["state"]["epoch"] == wb["state"]["epoch"] == 2
    for k in wa["model"]:
        assert torch.equal(wa["model"][k], wb["model"][k]), k
    c = tiny_seg_cfg(tmp_path, train__epochs=3, train__val_every=5)
    _train(c, tmp_path / "b", resume=True)
    wc = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert wc["state"]["epoch"] == 3 and wc["scheduler"]["T_max"] == 3


def test_bad_label_values_name_the_case(tmp_path):
    ph = ct_phantom(seed=1, **{"shape": (24, 24, 12), "spacing": (8.0, 8.0, 12.0)})
    img, lab = write_phantom_nifti(ph, tmp_path / "imagesTr/a.nii.gz", tmp_path / "labelsTr/a.nii.gz")
    ph2 = ct_phantom(seed=2, **{"shape": (24, 24, 12), "spacing": (8.0, 8.0, 12.0)})
    img2, lab2 = write_phantom_nifti(ph2, tmp_path / "imagesTr/b.nii.gz", tmp_path / "labelsTr/b.nii.gz")
    (tmp_path / "dl.json").write_text(
        json.dumps({"training": [{"image": str(img), "label": str(lab)}, {"image": str(img2), "label": str(lab2)}]})
    )
    cfg = SegmentationConfig.model_validate(
        {
            "task": "segmentation",
            "device": "cpu",
            "class_names": ["background", "liver"],
            "data": {"datalist": str(tmp_path / "dl.json"), "val_fraction": 0.0},
            "model": {"name": "unet", "channels": [4, 8]},
            "train": {"epochs": 1},
        }
    )
    with pytest.raises(LabelMismatchError, match=r"labelsTr/.\.nii\.gz has unexpected values \[2, 3"):
        _train(cfg, tmp_path / "run")


def test_evaluate_dice_hd95(tmp_path):
    ref = np.zeros((20, 20, 10), np.uint8)
    ref[5:15, 5:15, 2:8] = 1
    pred = np.roll(ref, 1, axis=0)
    aff = np.diag([-2.0, -2.0, 3.0, 1.0])
    for d, arr in (("pred", pred), ("ref", ref)):
        seg.write_nifti(arr, aff, tmp_path / d / "c1.nii.gz")
        seg.write_nifti(ref, aff, tmp_path / d / "c2.nii.gz")
    seg.write_nifti(ref[:-1], aff, tmp_path / "pred" / "c3.nii.gz")
    seg.write_nifti(ref, aff, tmp_path / "ref" / "c3.nii.gz")
    s = seg.evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "ev", class_names=["liver"])
    assert s["ok"] == 2 and s["skipped"] == 1 and "c3" in s["skipped_cases"] and s["exit_code"] == 1
    assert abs(s["per_class"]["liver"]["dice"] - (0.9 + 1.0) / 2) < 1e-3
    assert abs(s["per_class"]["liver"]["hd95_mm"] - 1.0) < 0.01  # 2 mm shift on one case, 0 on the other
    assert (tmp_path / "ev" / "evaluation_cases.csv").is_file() and (tmp_path / "ev" / "evaluation.json").is_file()


def test_evaluate_stray_label_value_fails_fast_and_never_overwrites(tmp_path):
    """A label map with one stray value 100000 is a clear error naming the file, in image-size time
    (not a 100001-class one-hot), and the other cases are still scored."""
    import time

    from medseg.errors import RunFolderExistsError

    ref = np.zeros((40, 40, 20), np.int32)
    ref[10:30, 10:30, 5:15] = 1
    aff = np.diag([-2.0, -2.0, 3.0, 1.0])
    stray = ref.copy()
    stray[0, 0, 0] = 100000
    for d in ("pred", "ref"):
        seg.write_nifti(ref.astype(np.uint8), aff, tmp_path / d / "good.nii.gz")
    seg.write_nifti(ref.astype(np.uint8), aff, tmp_path / "pred" / "bad.nii.gz")
    nib.save(nib.Nifti1Image(stray.astype(np.int32), aff), str(tmp_path / "ref" / "bad.nii.gz"))
    t0 = time.perf_counter()
    s = seg.evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "ev", class_names=["liver"])
    assert time.perf_counter() - t0 < 30
    assert s["ok"] == 1 and s["per_class"]["liver"]["dice"] == 1.0
    assert "100000" in s["skipped_cases"]["bad"] and "bad.nii.gz" in s["skipped_cases"]["bad"]
    # without class names the stray value is not a class either: still fast, still a clear error
    s2 = seg.evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "ev2")
    assert "not label maps" in s2["skipped_cases"]["bad"] or "100000" in s2["skipped_cases"]["bad"]
    with pytest.raises(RunFolderExistsError):  # an earlier evaluation is never overwritten
        seg.evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "ev", class_names=["liver"])
    again = seg.evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "ev", class_names=["liver"], force=True)
    assert again["ok"] == 1 and any(p.name.startswith("ev.old-") for p in tmp_path.iterdir())
