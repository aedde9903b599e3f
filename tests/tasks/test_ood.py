"""A model that knows its limits: the OOD check against the training reference, the calibrated
needs-review threshold, and the provenance every training run records (run.json, model card)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medseg.data.synthetic import ct_phantom, phantom_affine, write_phantom_dicom, write_phantom_nifti
from medseg.runs import file_sha256
from medseg.tasks import segmentation as seg
from medseg.tasks.ood import build_reference, image_features, ood_reasons

SHAPE, SPACING = (32, 32, 16), (6.0, 6.0, 9.0)


def _mt(image: np.ndarray, spacing=SPACING, modality: str | None = None) -> MetaTensor:
    aff = phantom_affine(spacing, (0.0, 0.0, 0.0))
    meta = {"modality": modality} if modality else {}
    return MetaTensor(torch.as_tensor(image, dtype=torch.float32)[None], affine=torch.as_tensor(aff), meta=meta)


def _feat(image: np.ndarray, **kw) -> dict:
    return image_features(_mt(image, **kw), modality="CT", spatial_dims=3)


@pytest.fixture(scope="module")
def reference() -> dict:
    feats = [_feat(ct_phantom(seed=s, shape=SHAPE, spacing=SPACING).image) for s in range(6)]
    return build_reference(feats, modality="CT", spatial_dims=3)


def test_in_distribution_phantoms_are_not_flagged(reference):
    for seed in (40, 41, 42):
        assert ood_reasons(_feat(ct_phantom(seed=seed, shape=SHAPE, spacing=SPACING).image), reference) == []


def test_each_shift_is_flagged_with_its_reason(reference):
    ph = ct_phantom(seed=50, shape=SHAPE, spacing=SPACING)
    img = ph.image.astype(np.float32)
    mr_like = np.where(img > -500, 1200 - img, 0.0)  # another contrast: tissue order inverted, no air at -1000
    assert any("intensity" in r for r in ood_reasons(_feat(mr_like), reference))
    noisy = ct_phantom(seed=50, shape=SHAPE, spacing=SPACING, noise_hu=45.0).image
    assert any("noise level" in r for r in ood_reasons(_feat(noisy), reference))
    fine = ood_reasons(_feat(img, spacing=(1.5, 1.5, 2.25)), reference)  # 4x finer: a 0.5 mm case to a 2 mm model
    assert any("spacing along R/L" in r for r in fine) and any("spacing along S/I" in r for r in fine)
    cropped = ood_reasons(_feat(img[8:24, 8:24]), reference)
    assert any("field of view along R/L" in r for r in cropped) and any("A/P" in r for r in cropped)
    mr = ood_reasons(_feat(img, modality="MR"), reference)
    assert mr and mr[0] == "modality MR (the model was trained on CT)"
    # a sagittal acquisition (thick slices along R/L) given to an axial model
    ref_axial = build_reference(
        [
            _feat(ct_phantom(seed=s, shape=(24, 24, 12), spacing=(2.0, 2.0, 6.0)).image, spacing=(2.0, 2.0, 6.0))
            for s in range(3)
        ],
        modality="CT",
        spatial_dims=3,
    )
    sag = np.transpose(ct_phantom(seed=3, shape=(12, 24, 24), spacing=(6.0, 2.0, 2.0)).image, (0, 1, 2))
    reasons = ood_reasons(_feat(sag, spacing=(6.0, 2.0, 2.0)), ref_axial)
    assert any("sagittal acquisition" in r and "axial" in r for r in reasons)


@pytest.fixture(scope="module")
def trained(tiny_seg_run) -> Path:
    return tiny_seg_run  # read only


def test_training_records_provenance_calibration_and_model_card(trained):
    info = json.loads((trained / "run.json").read_text())
    data = info["data"]
    dl = trained / "data" / "dataset.json"
    assert data["source"] == "synthetic" and data["datalist"] == str(dl)
    assert data["datalist_sha256"] == file_sha256(dl)
    assert data["counts"] == {k: len(v) for k, v in data["splits"].items()} and data["counts"]["validation"] == 1
    assert set(data["splits"]["training"]).isdisjoint(data["splits"]["validation"])
    assert data["fingerprint"]["median_spacing"] == [6.0, 6.0, 9.0]
    review = info["review"]
    assert review["n_cases"] == 1 and review["threshold"] == pytest.approx(review["uncertainties"][0])
    ref = json.loads((trained / "ood_reference.json").read_text())
    assert ref["spacing_mm"] == [[6.0, 6.0], [6.0, 6.0], [9.0, 9.0]] and ref["modalities"] == []
    card = (trained / "model_card.md").read_text()
    for text in (
        "segmentation",
        "liver",
        "Not for clinical use",
        data["datalist_sha256"],
        "needs-review threshold",
        "Known limits",
        "Spacing",
        "torch",
    ):
        assert text in card, text
    cj = json.loads((trained / "model_card.json").read_text())
    assert cj["training_data"]["splits"] == data["splits"] and cj["review"]["threshold"] == review["threshold"]


def test_segment_uses_the_calibrated_threshold_and_flags_ood_first(trained, tmp_path):
    ph = ct_phantom(seed=60, shape=SHAPE, spacing=SPACING)
    ok = write_phantom_nifti(ph, tmp_path / "in_dist.nii.gz")[0]
    mr_dir = tmp_path / "mr_series"
    write_phantom_dicom(ph, mr_dir)
    import pydicom

    for p in mr_dir.iterdir():  # the same pixels, tagged as an MR series (a different modality)
        ds = pydicom.dcmread(p)
        ds.Modality = "MR"
        ds.save_as(p)
    cropped = tmp_path / "cropped.nii.gz"
    nib.save(nib.Nifti1Image(ph.image[8:24, 8:24], ph.affine), str(cropped))
    s = seg.segment(trained, [ok, mr_dir, cropped], tmp_path / "warn", device="cpu")
    review = json.loads((trained / "run.json").read_text())["review"]
    assert s["review_threshold"] == pytest.approx(review["threshold"], abs=1e-4)
    assert s["ok"] == 3 and set(s["ood"]) == {"mr_series", "cropped"}
    rows = {r["case_id"]: r for r in json.loads((tmp_path / "warn" / "segment.json").read_text())}
    assert rows["mr_series"]["ood_reasons"].startswith("modality MR") and "ood" in rows["mr_series"]["flags"]
    assert "field of view" in rows["cropped"]["ood_reasons"] and rows["in_dist"]["ood_reasons"] == ""
    html = (tmp_path / "warn" / "report.html").read_text()
    order = [html.index(f'data-case="{c}"') for c in ("mr_series", "cropped", "in_dist")]
    assert order[2] > max(order[:2])  # out-of-distribution cases first
    refused = seg.segment(trained, [ok, cropped], tmp_path / "refuse", device="cpu", ood="refuse")
    assert refused["ok"] == 1 and "out of distribution" in refused["skipped_cases"]["cropped"]
    assert not (tmp_path / "refuse" / "labels" / "cropped.nii.gz").exists()
    off = seg.segment(trained, [cropped], tmp_path / "off", device="cpu", ood="off")
    assert off["ood"] == [] and off["ok"] == 1
