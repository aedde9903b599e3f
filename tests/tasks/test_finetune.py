"""medseg finetune: corrections matched to their cases, a new run from the parent's weights and plan."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.data.synthetic import ct_phantom, write_phantom_nifti
from medseg.errors import CheckpointError, InputError
from medseg.io import discover, load
from medseg.io.label_load import seg_referenced_series
from medseg.io.seg import write_dicom_seg
from medseg.models.weights import load_checkpoint
from medseg.runs import Run, file_sha256
from medseg.tasks import segmentation as seg
from medseg.tasks.finetune import find_corrections, finetune


def _phantom_case(folder: Path, seed: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """A phantom image (NIfTI), its liver label in the model's classes (lesions 4 -> liver) and affine."""
    ph = ct_phantom(seed=seed, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
    img, _ = write_phantom_nifti(ph, folder / f"case{seed}.nii.gz")
    return img, np.isin(ph.label, (1, 4)).astype(np.uint8), ph.affine


def _save(arr: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def _prediction_folder(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "segment.json").write_text(json.dumps(rows))
    return folder


def test_corrections_matched_by_name_by_series_and_feedback(tmp_path, small_ct_series):
    series, ph = small_ct_series
    imgs = {
        f"n{i}": write_phantom_nifti(ct_phantom(seed=i, shape=(8, 8, 4)), tmp_path / f"n{i}.nii.gz")[0]
        for i in (1, 2, 3, 4)
    }
    rows = [{"case_id": "ct_a", "source": str(series), "status": "ok", "outputs": {}}]
    rows += [
        {"case_id": c, "source": str(p), "status": "ok", "outputs": {"labels": str(tmp_path / f"pred_{c}.nii.gz")}}
        for c, p in imgs.items()
    ]
    rows.append({"case_id": "failed_case", "source": "x.nii.gz", "status": "skipped", "outputs": {}})
    pred = _prediction_folder(tmp_path / "pred", rows)
    corr = tmp_path / "pred" / "corrections"
    corr.mkdir()
    (corr / "n1_corrected.nii.gz").write_bytes(b"")  # names only: the files are read when used
    (corr / "n2.seg.nrrd").write_bytes(b"")
    (corr / "stray.nii.gz").write_bytes(b"")  # no such case: left out, said why
    (corr / "notes.txt").write_text("reviewed by Dr X")  # not a label file: ignored
    # a DICOM SEG named by its UID, as a PACS export names it: matched through the series it references
    labels = np.zeros(tuple(load(series).shape[1:]), np.uint8)
    labels[8:20, 8:20, 2:8] = 1
    write_dicom_seg(labels, series, corr / "1.2.826.0.1.3680043.99.dcm", {1: "liver"})
    assert seg_referenced_series(corr / "1.2.826.0.1.3680043.99.dcm") == {discover(series)[0].series_uid}
    assert seg_referenced_series(corr / "n1_corrected.nii.gz") == set()
    fb = tmp_path / "feedback.json"
    fb.write_text(json.dumps({"feedback": [
        {"case_id": "n3", "decision": "accept", "comment": ""},
        {"case_id": "n4", "decision": "needs_correction", "comment": "missed the lesion"},
    ]}))  # fmt: skip
    found, left = find_corrections(corr, feedback=fb)  # the prediction folder: the corrections' parent
    by_case = {c.case_id: c for c in found}
    assert set(by_case) == {"ct_a", "n1", "n2", "n3"}
    assert by_case["ct_a"].kind == "corrected" and by_case["ct_a"].images == (series,)
    assert by_case["n1"].label.name == "n1_corrected.nii.gz" and by_case["n1"].images == (imgs["n1"],)
    assert by_case["n3"].kind == "accepted" and by_case["n3"].label == tmp_path / "pred_n3.nii.gz"
    reasons = {x["item"]: x["reason"] for x in left}
    assert set(reasons) == {"stray.nii.gz", "n4"}
    assert "no case" in reasons["stray.nii.gz"] and "needs correction" in reasons["n4"]
    lone = tmp_path / "lone"
    lone.mkdir()
    with pytest.raises(InputError, match="which predictions"):
        find_corrections(lone)
    with pytest.raises(InputError, match="segment.json"):
        find_corrections(lone, predictions=lone)
    assert find_corrections(corr, predictions=pred)[0] == find_corrections(corr)[0]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_seg_run) -> tuple[Path, dict, Path]:
    tmp = tmp_path_factory.mktemp("finetune")
    entries = []
    for seed in (70, 71):
        img, lab, aff = _phantom_case(tmp, seed)
        entries.append({"image": str(img), "label": str(_save(lab, aff, tmp / f"case{seed}_corrected.nii.gz"))})
    img, lab, aff = _phantom_case(tmp, 72)
    shifted = aff.copy()
    shifted[:3, 3] += 2.0  # a third of a voxel off: does not overlay its image
    entries.append({"image": str(img), "label": str(_save(lab, shifted, tmp / "case72_corrected.nii.gz"))})
    corr = tmp / "corrections.json"
    corr.write_text(json.dumps({"training": entries}))
    rec = finetune(tiny_seg_run, corr, out=tmp / "ft", overrides=["train.epochs=1"])
    return tmp / "ft", rec, tiny_seg_run


def test_finetune_starts_from_the_parent_and_records_it(finetuned):
    out, rec, parent = finetuned
    assert rec["parent"] == str(parent.resolve())
    assert rec["parent_checkpoint_sha256"] == file_sha256(parent / "checkpoints" / "best.pt")
    assert [c["case_id"] for c in rec["cases"]] == ["case70", "case71"]
    assert all(c["kind"] == "corrected" for c in rec["cases"])
    assert [x["item"] for x in rec["left_out"]] == ["case72_corrected.nii.gz"]
    assert "LabelMismatchError" in rec["left_out"][0]["reason"]
    assert len(rec["replay"]) == min(2, json.loads((parent / "run.json").read_text())["data"]["counts"]["training"])
    # the parent's plan, not a new one: the same network input
    assert json.loads((out / "plan.json").read_text()) == json.loads((parent / "plan.json").read_text())
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "ok" and info["command"] == "finetune" and info["finetune"]["parent"] == rec["parent"]
    assert json.loads((out / "finetune.json").read_text())["cases"] == rec["cases"]
    card = (out / "model_card.md").read_text()
    assert "Fine-tuned from" in card and "case70, case71" in card and "Dice on the parent's validation cases" in card
    for where in ("parent_validation", "corrected_cases"):
        before, after = rec["dice"][where]["parent"], rec["dice"][where]["finetuned"]
        assert before["cases"] == after["cases"] > 0
        assert 0.0 <= before["dice_mean"] <= 1.0 and 0.0 <= after["dice_mean"] <= 1.0
    # trained from the parent's weights: one epoch moves them, but not the architecture
    p, f = (
        load_checkpoint(parent / "checkpoints" / "best.pt")["model"],
        load_checkpoint(out / "checkpoints" / "best.pt")["model"],
    )
    assert p.keys() == f.keys() and any(not torch.equal(p[k], f[k]) for k in p)
    # corrections are stored on their image grid, in the label values the training pipeline maps to classes
    stored = nib.load(out / "data" / "corrections" / "case70_label.nii.gz")
    assert stored.shape == (32, 32, 16) and set(np.unique(np.asarray(stored.dataobj))) <= {0, 1}
    datalist = json.loads((out / "data" / "finetune_datalist.json").read_text())
    assert len(datalist["training"]) == 2 + len(rec["replay"]) and datalist["validation"]


def test_finetune_refuses_what_it_cannot_use(tmp_path, tiny_seg_run):
    parent = tiny_seg_run
    empty = tmp_path / "none.json"
    empty.write_text(json.dumps({"training": []}))
    with pytest.raises(InputError, match="training"):
        finetune(parent, empty, out=tmp_path / "x")
    failed = tmp_path / "failed_run"
    failed.mkdir()
    for name in ("config.yaml", "plan.json"):
        (failed / name).write_bytes((parent / name).read_bytes())
    info = json.loads((parent / "run.json").read_text())
    (failed / "run.json").write_text(json.dumps({**info, "status": "failed"}))
    with pytest.raises(InputError, match="not a finished training run"):
        finetune(failed, empty, out=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # nothing written


def test_train_refuses_starting_weights_of_another_network(tmp_path, tiny_seg_cfg):
    cfg = tiny_seg_cfg(tmp_path, train__epochs=1)
    with Run.create(tmp_path / "run", cfg, command="train") as run, pytest.raises(CheckpointError, match="do not fit"):
        seg.train(cfg, run, init_weights={"conv.weight": torch.zeros(1)})


@pytest.mark.slow  # segments 3 cases (one DICOM) and fine-tunes through the CLI (~40 s on 2 cores)
def test_cli_loop_from_segment_output_to_finetuned_run(tmp_path, tiny_seg_run, small_ct_series, capsys):
    series, _ = small_ct_series
    cases = [_phantom_case(tmp_path, seed) for seed in (80, 81)]
    pred = tmp_path / "pred"
    args = ["segment", "--model", str(tiny_seg_run), str(series), *(str(c[0]) for c in cases), "--out", str(pred)]
    assert main([*args, "--device", "cpu"]) == 0
    rows = {r["case_id"]: r for r in json.loads((pred / "segment.json").read_text())}
    dicom_case = next(c for c, r in rows.items() if r["source"] == str(series))
    corr = pred / "corrections"
    corr.mkdir()
    # the radiologist's SEG, exported from the PACS under its own name; a NIfTI correction of case80
    (corr / "exported.dcm").write_bytes((pred / "dicom_seg" / f"{dicom_case}.seg.dcm").read_bytes())
    img, lab, aff = cases[0]
    _save(lab, aff, corr / "case80.nii.gz")
    (pred / "feedback.json").write_text(json.dumps({"feedback": [{"case_id": "case81", "decision": "accept"}]}))
    rc = main(["finetune", "--model", str(tiny_seg_run), "--corrections", str(corr), "--out", str(tmp_path / "ft"),
               "--set", "train.epochs=1"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "learnt from 2 corrected and 1 accepted case(s)" in printed
    rec = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert {c["case_id"]: c["kind"] for c in rec["cases"]} == {
        dicom_case: "corrected",
        "case80": "corrected",
        "case81": "accepted",
    }
    # the DICOM case's voxels are kept in the run (the series the SEG was drawn on), next to its label
    kept = tmp_path / "ft" / "data" / "corrections" / f"{dicom_case}_image.nii.gz"
    assert np.array_equal(np.asarray(load(kept)), np.asarray(load(series)))
    # the fine-tuned run is a model like any other: it segments
    assert (
        main(["segment", "--model", str(tmp_path / "ft"), str(img), "--out", str(tmp_path / "p2"), "--device", "cpu"])
        == 0
    )
