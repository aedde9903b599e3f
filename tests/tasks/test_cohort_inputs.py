"""Clear answers for wrong input: label/image mismatch before planning, series choice, multi-channel entries."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.config import SegmentationConfig
from medseg.data.synthetic import ct_phantom, write_phantom_nifti
from medseg.errors import ConfigError, InputError, LabelMismatchError
from medseg.runs import Run
from medseg.tasks import segmentation as seg
from medseg.tasks.inputs import expand_inputs, resolve_series


def _ph(seed: int):
    return ct_phantom(seed=seed, shape=(24, 24, 12), spacing=(8.0, 8.0, 12.0))


def _seg_cfg(tmp: Path, datalist: Path, **kw) -> SegmentationConfig:
    raw = {
        "task": "segmentation",
        "name": "mc",
        "output_dir": str(tmp),
        "device": "cpu",
        "seed": 1,
        "class_names": ["background", "liver"],
        "label_map": {4: 1, 2: 0, 3: 0},
        "data": {"datalist": str(datalist), "val_fraction": 0.34},
        "model": {"name": "unet", "channels": [4, 8, 16]},
        "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1},
        "plan": {"max_patch_voxels": 16 * 16 * 8},
        "augment": {"level": "none", "samples_per_image": 1},
        **kw,
    }
    return SegmentationConfig.model_validate(raw)


def test_label_one_slice_short_is_a_label_mismatch_before_planning(tmp_path):
    img, lab = write_phantom_nifti(_ph(1), tmp_path / "imagesTr/a.nii.gz", tmp_path / "labelsTr/a.nii.gz")
    img2, lab2 = write_phantom_nifti(_ph(2), tmp_path / "imagesTr/b.nii.gz", tmp_path / "labelsTr/b.nii.gz")
    short = nib.load(str(lab2))
    nib.save(nib.Nifti1Image(np.asarray(short.dataobj)[:, :, :-1], short.affine), str(lab2))
    dl = tmp_path / "dl.json"
    dl.write_text(
        json.dumps({"training": [{"image": str(img), "label": str(lab)}, {"image": str(img2), "label": str(lab2)}]})
    )
    cfg = _seg_cfg(tmp_path, dl)
    with pytest.raises(LabelMismatchError) as e, Run.create(tmp_path / "run", cfg) as run:
        seg.train(cfg, run)
    msg = str(e.value)
    assert "b.nii.gz" in msg and "labelsTr" in msg and "imagesTr" in msg
    assert "(24, 24, 11)" in msg and "(24, 24, 12)" in msg
    assert not (tmp_path / "run" / "plan.json").exists()  # refused before the fingerprint / plan


def _series(folder: Path, desc: str, seed: int, localizer: bool = False, n: int = 6) -> None:
    from tests.conftest import write_dicom_series

    def edit(ds, k):
        ds.SeriesDescription = desc
        ds.SeriesNumber = seed
        if localizer:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]

    vol = np.random.default_rng(seed).normal(0, 100, (16, 16, 1 if localizer else n))
    iop = (0, 1, 0, 0, 0, -1) if localizer else (1, 0, 0, 0, 1, 0)
    write_dicom_series(folder, vol, spacing=(1.0, 1.0, 2.0), per_slice=edit, iop=iop, seed=seed)


def test_localizer_is_never_a_candidate_and_series_picks_one(tmp_path):
    study = tmp_path / "study"
    _series(study / "scout", "SCOUT", 1, localizer=True)
    _series(study / "ax", "AX ABDOMEN", 2)
    assert resolve_series(study).description == "AX ABDOMEN"  # the localizer is not a candidate
    _series(study / "cor", "COR T2", 3)
    with pytest.raises(InputError, match="2 image series here; choose one with --series") as e:
        resolve_series(study)
    assert "AX ABDOMEN" in str(e.value) and "COR T2" in str(e.value) and "SCOUT" not in str(e.value)
    assert resolve_series(study, "cor t2").description == "COR T2"  # description, any case
    assert resolve_series(study, "ABDOMEN").description == "AX ABDOMEN"  # a unique part of it
    uid = resolve_series(study, "2").series_uid
    assert resolve_series(study, uid).series_uid == uid  # SeriesInstanceUID
    with pytest.raises(InputError, match="matches no series"):
        resolve_series(study, "sagittal")


def test_multichannel_entries_are_one_case_and_train_and_predict(tmp_path):
    entries = []
    for i in range(3):
        ph = _ph(10 + i)
        t1, lab = write_phantom_nifti(ph, tmp_path / f"t1/c{i}.nii.gz", tmp_path / f"lab/c{i}.nii.gz")
        t2 = tmp_path / f"t2/c{i}.nii.gz"
        t2.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(ph.image, np.float32) * -0.5, ph.affine), str(t2))
        entries.append({"image": [f"t1/c{i}.nii.gz", f"t2/c{i}.nii.gz"], "label": f"lab/c{i}.nii.gz"})
    dl = tmp_path / "dataset.json"
    dl.write_text(json.dumps({"training": entries[:2], "test": entries[2:]}))
    cases = expand_inputs([dl], kind="volume")
    assert len(cases) == 1 and [p.parent.name for p in cases[0].channels] == ["t1", "t2"]
    assert " + " in cases[0].source
    cfg = _seg_cfg(tmp_path, dl, modality="MR")
    with Run.create(tmp_path / "run", cfg) as run:
        seg.train(cfg, run)
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["fingerprint"]["channels"] == 2
    summary = seg.segment(tmp_path / "run", [dl], tmp_path / "out", device="cpu")
    assert summary["ok"] == 1 and (tmp_path / "out" / "labels" / "c2.nii.gz").is_file()
    # one channel given to the two-channel model: one line naming the file, what it expects, what it got
    one = seg.segment(tmp_path / "run", [tmp_path / "t1" / "c2.nii.gz"], tmp_path / "out1", device="cpu")
    assert "has 1 channel(s); the model expects 2" in one["skipped_cases"]["c2"]


def test_channels_on_different_grids_name_both_files(tmp_path):
    from medseg.tasks.segmentation.files import load_channels

    a = write_phantom_nifti(_ph(1), tmp_path / "a.nii.gz")[0]
    b = write_phantom_nifti(ct_phantom(seed=1, shape=(24, 24, 10), spacing=(8.0, 8.0, 12.0)), tmp_path / "b.nii.gz")[0]
    with pytest.raises(LabelMismatchError, match=r"b\.nii\.gz.*\(24, 24, 10\).*a\.nii\.gz.*\(24, 24, 12\)"):
        load_channels([a, b])


def test_datalist_and_synthetic_together_are_a_config_error():
    for task in ("segmentation", "detection", "classification", "weak_supervision"):
        with pytest.raises(ConfigError, match="choose one"):
            from medseg.config import parse_config

            parse_config({"task": task, "data": {"synthetic": True, "datalist": "x.json"}})
