"""Lesion tables through the commands: ``medseg lesions`` on label maps, ``medseg segment --lesions``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main
from medseg.data.synthetic import ct_phantom, write_phantom_nifti
from medseg.errors import ConfigError
from medseg.metrics.lesions import find_lesions
from medseg.runs import Run
from medseg.tasks import segmentation as seg
from medseg.tasks.lesions import resolve_lesion_classes


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _label_map(path: Path, spacing=(1.0, 1.0, 2.0)) -> Path:
    lab = np.zeros((40, 40, 12), np.uint8)
    lab[5:25, 5:25, 2:10] = 1  # organ
    lab[10:14, 10:14, 4:7] = 2  # lesion inside it (48 voxels = 0.096 mL)
    lab[30:36, 30:36, 3:9] = 2  # another (216 voxels = 0.432 mL)
    lab[38, 38, 11] = 2  # one voxel (0.002 mL)
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = (-20, -20, 0)
    nib.save(nib.Nifti1Image(lab, aff), str(path))
    return path


def test_resolve_lesion_classes():
    names = ["background", "liver", "tumour"]
    assert resolve_lesion_classes(["tumour", "1"], names) == {2: "tumour", 1: "liver"}
    assert resolve_lesion_classes(None, names) == {1: "liver", 2: "tumour"}
    assert resolve_lesion_classes(["3"]) == {3: "class_3"}
    with pytest.raises(ConfigError, match="not a class"):
        resolve_lesion_classes(["cyst"], names)
    with pytest.raises(ConfigError, match="foreground"):
        resolve_lesion_classes(["0"], names)


def test_lesions_command_tables_min_size_and_bad_case(tmp_path, capsys):
    a = _label_map(tmp_path / "a.nii.gz")
    b = _label_map(tmp_path / "b.nii.gz", spacing=(0.5, 0.5, 1.0))
    out = tmp_path / "out"
    code = main(
        [
            "lesions",
            str(a),
            str(b),
            str(tmp_path / "missing.nii.gz"),
            "--out",
            str(out),
            "--classes",
            "tumour",
            "--class-names",
            "background",
            "liver",
            "tumour",
            "--min-ml",
            "0.05",
        ]
    )
    assert code == 1  # the missing file is skipped, the others finish
    assert "lesions.csv" in capsys.readouterr().out
    per_a = _rows(out / "lesions" / "a_lesions.csv")
    # 0.05 mL drops the one-voxel lesion; largest first
    assert [r["voxels"] for r in per_a] == ["216", "48"]
    assert [float(r["volume_ml"]) for r in per_a] == pytest.approx([0.432, 0.096])
    assert {r["class_name"] for r in per_a} == {"tumour"}
    assert float(per_a[0]["diameter_3d_mm"]) == pytest.approx(np.sqrt(5**2 + 5**2 + 10**2), abs=0.01)
    assert float(per_a[0]["centroid_r_mm"]) == pytest.approx(-20 + 32.5)
    # b: same voxels at 1/8 of the volume: only the 216-voxel lesion (0.054 mL) is kept
    assert [r["voxels"] for r in _rows(out / "lesions" / "b_lesions.csv")] == ["216"]
    cohort = _rows(out / "lesions.csv")
    assert [r["case_id"] for r in cohort] == ["a", "a", "b"]
    cases = json.loads((out / "lesion_cases.json").read_text())
    assert [c["status"] for c in cases] == ["ok", "ok", "skipped"]
    assert cases[0]["n_lesions"] == 2 and cases[0]["largest_lesion_ml"] == pytest.approx(0.432)
    assert (out / "report.html").is_file()
    assert json.loads((out / "run.json").read_text())["summary"]["n_lesions"] == 3


def test_segment_with_lesions_writes_per_case_and_cohort_tables(tmp_path, tiny_seg_cfg):
    cfg = tiny_seg_cfg(tmp_path, train__epochs=1)
    run = Run.create(tmp_path / "run", cfg)
    with run:
        seg.train(cfg, run)
    ph = ct_phantom(seed=11, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
    img = write_phantom_nifti(ph, tmp_path / "ct.nii.gz")[0]
    out = tmp_path / "seg"
    summary = seg.segment(tmp_path / "run", [img], out, device="cpu", lesions=["liver"], min_lesion_ml=0.0)
    assert summary["ok"] == 1 and summary["lesions"].endswith("lesions.csv")
    row = json.loads((out / "segment.json").read_text())[0]
    labels = nib.load(str(out / "labels" / "ct.nii.gz"))
    _, expected = find_lesions(np.asarray(labels.dataobj), labels.affine, {1: "liver"})
    assert row["n_lesions"] == len(expected)
    assert row["lesions_total_ml"] == pytest.approx(row["volume_ml_liver"], abs=1e-2)
    per_case = _rows(out / "lesions" / "ct_lesions.csv")
    assert len(per_case) == len(expected) == len(_rows(out / "lesions.csv"))
    assert [int(r["voxels"]) for r in per_case] == [les.voxels for les in expected]
    assert row["outputs"]["lesions"].endswith("ct_lesions.csv")
