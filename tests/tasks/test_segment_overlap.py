"""``medseg segment`` with the writing of case k overlapped with the network of case k+1 gives the files and table
of the sequential path; a failing write skips its own case only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from medseg.data.synthetic import ct_phantom, write_phantom_dicom, write_phantom_nifti
from medseg.tasks import segmentation as seg
from medseg.tasks.segmentation import predict as predict_mod


def _files(root: Path) -> dict[str, str]:
    """sha1 of every case output (the DICOM SEG apart: its UIDs and time stamps are new in every run)."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.parent.name in ("labels", "probabilities", "overlays", "viewer")
    }


def _rows(root: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "outputs"} for r in json.loads((root / "segment.json").read_text())]


def test_overlapped_writing_gives_the_sequential_outputs(tiny_seg_run: Path, tmp_path: Path, monkeypatch) -> None:
    inputs = []
    for i in range(2):
        ph = ct_phantom(seed=20 + i, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
        inputs.append(write_phantom_nifti(ph, tmp_path / f"c{i}.nii.gz")[0])
    write_phantom_dicom(ph, tmp_path / "series")
    inputs.append(tmp_path / "series")
    draw = predict_mod.write_review_images

    def failing_for_c1(image, labels, files, **kw):  # the label file of c1 is written before this fails
        if files.case_id == "c1":
            raise OSError("no space left on device (overlay)")
        return draw(image, labels, files, **kw)

    monkeypatch.setattr(predict_mod, "write_review_images", failing_for_c1)
    outs = {}
    for mode in ("1", "0"):
        monkeypatch.setenv("MEDSEG_COHORT_OVERLAP", mode)
        outs[mode] = tmp_path / f"out{mode}"
        s = seg.segment(tiny_seg_run, inputs, outs[mode], device="cpu", save_probabilities=True)
        assert (s["ok"], s["skipped"]) == (2, 1)
    assert _files(outs["1"]) == _files(outs["0"])
    assert _rows(outs["1"]) == _rows(outs["0"])
    rows = _rows(outs["1"])
    assert [r["case_id"] for r in rows] == ["c0", "c1", "series"]
    assert rows[1]["status"] == "skipped" and rows[1]["reason"] == "OSError: no space left on device (overlay)"
    assert not list(outs["1"].rglob("c1*"))  # its label map (written before the failure) was removed
    for name in ("c0", "series"):  # the case after the failed write is complete
        assert nib.load(str(outs["1"] / "labels" / f"{name}.nii.gz")).shape == (32, 32, 16)
    assert (outs["1"] / "viewer" / "series.json").is_file()
    segs = [pydicom.dcmread(outs[m] / "dicom_seg" / "series.seg.dcm") for m in ("1", "0")]
    assert np.array_equal(segs[0].pixel_array, segs[1].pixel_array)
