"""One bad case never stops a cohort: good cases with one of each failure class in the middle, through
every predict command (and the CLI's exit codes).

Failure classes: a decoder failure (a ``BaseException`` subclass, as pylibjpeg-rle's
``PanicException`` is), an output-write failure (for ``segment``: a DICOM series without
StudyInstanceUID: the SEG writer refuses it after the label map was written), wrong
dimensionality (a 2D PNG to a 3D model, a 3D stack to a 2D model), and an unreadable file. Every
good case must have its outputs; every failed case none (partial outputs removed), with a one-line
reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.uid import RLELossless

from medseg.cli import main
from medseg.data.synthetic import ct_phantom, write_phantom_dicom, write_phantom_nifti
from medseg.io.dicom import pixels as dicom_pixels
from tests.explain.conftest import write_classifier_run


class PanicException(BaseException):
    """What pyo3 decoders (pylibjpeg-rle) raise on a damaged frame: not an ``Exception``."""


@pytest.fixture(scope="module")
def seg_run(tiny_seg_run) -> Path:
    return tiny_seg_run  # read only


def _phantom(seed: int):
    return ct_phantom(seed=seed, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))


def _volume_inputs(tmp: Path) -> tuple[list[Path], dict[str, str]]:
    """Good NIfTI / DICOM cases with the four failure classes in the middle; {case id: expected reason}."""
    good1 = write_phantom_nifti(_phantom(21), tmp / "good1.nii.gz")[0]
    # decoder failure: an RLE-compressed series (its frames go through the decoder)
    dec = tmp / "decoder"
    for p in write_phantom_dicom(_phantom(22), dec):
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless)
        ds.save_as(p)
    # SEG write failure: a real series without StudyInstanceUID (medseg.io.seg refuses a damaged UID)
    nouid = tmp / "nostudyuid"
    for p in write_phantom_dicom(_phantom(23), nouid):
        ds = pydicom.dcmread(p)
        del ds.StudyInstanceUID
        ds.save_as(p)
    png = tmp / "slice.png"  # 2D image to a 3D model
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(png)
    garbage = tmp / "garbage.nii.gz"
    garbage.write_bytes(b"\x1f\x8b" + b"not a nifti" * 10)
    good2 = tmp / "good2"
    write_phantom_dicom(_phantom(24), good2)
    good3 = write_phantom_nifti(_phantom(25), tmp / "good3.nii.gz")[0]
    inputs = [good1, dec, nouid, png, garbage, good2, good3]
    reasons = {
        "decoder": "PanicException",
        "nostudyuid": "damaged UID",
        "slice": "2D image",
        "garbage": "FileFormatError",
    }
    return inputs, reasons


def _panic_on(folder_name: str, monkeypatch) -> None:
    real = dicom_pixels.PixelCache.get

    def get(self, h):
        if folder_name in str(h.src):
            raise PanicException("called `Result::unwrap()` on an `Err` value")
        return real(self, h)

    monkeypatch.setattr(dicom_pixels.PixelCache, "get", get)


def test_segment_cohort_survives_every_failure_class(seg_run, tmp_path, monkeypatch, capsys):
    inputs, reasons = _volume_inputs(tmp_path / "in")
    _panic_on("decoder", monkeypatch)
    out = tmp_path / "out"
    rc = main(["segment", "--model", str(seg_run), *map(str, inputs), "--out", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert rc == 1 and "3 of 7 case(s) skipped" not in printed and "4 of 7 case(s) skipped" in printed
    table = json.loads((out / "segment.json").read_text())
    by = {r["case_id"]: r for r in table}
    assert [r["case_id"] for r in table] == ["good1", "decoder", "nostudyuid", "slice", "garbage", "good2", "good3"]
    for cid in ("good1", "good2", "good3"):
        assert by[cid]["status"] == "ok"
        assert (out / "labels" / f"{cid}.nii.gz").is_file() and (out / "overlays" / f"{cid}.png").is_file()
        assert Path(by[cid]["outputs"]["labels"]).is_file()
    assert (out / "dicom_seg" / "good2.seg.dcm").is_file()
    for cid, why in reasons.items():
        assert by[cid]["status"] == "skipped" and why in by[cid]["reason"] and "\n" not in by[cid]["reason"]
        assert by[cid]["outputs"] == {}
        assert not list(out.rglob(f"{cid}*")), list(out.rglob(f"{cid}*"))  # partial outputs removed
    assert "expects 3D volumes" in by["slice"]["reason"]
    html = (out / "report.html").read_text()
    assert "PanicException" in html and "damaged UID" in html


@pytest.fixture(scope="module")
def det_run(tiny_det_run) -> tuple[Path, Path]:
    return tiny_det_run


def _image_inputs(tmp: Path, good: list[Path]) -> tuple[list[Path], dict[str, str]]:
    tmp.mkdir(parents=True, exist_ok=True)
    stack = tmp / "stack.tif"  # a 3D stack to a 2D model
    tifffile.imwrite(stack, np.zeros((8, 32, 32), np.uint8))
    garbage = tmp / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 20)
    decoder = tmp / "decoder.png"
    writefail = tmp / "writefail.png"
    for p in (decoder, writefail):
        p.write_bytes(good[0].read_bytes())
    inputs = [good[0], decoder, writefail, stack, garbage, *good[1:]]
    reasons = {"decoder": "PanicException", "writefail": "OSError", "stack": "2D", "garbage": "FileFormatError"}
    return inputs, reasons


def _break_2d(monkeypatch, module) -> None:
    """The 2D decoder panics on decoder.png; writing the thumbnail / overlay of writefail fails."""
    from medseg.io import raster

    real_read, real_save = raster._read_pillow, module.save_png

    def read_pillow(path, *a, **kw):
        if "decoder" in str(path):
            raise PanicException("decoder panicked")
        return real_read(path, *a, **kw)

    def save_png(rgb, path):
        if "writefail" in str(path):
            raise OSError("No space left on device")
        return real_save(rgb, path)

    monkeypatch.setattr(raster, "_read_pillow", read_pillow)
    monkeypatch.setattr(module, "save_png", save_png)


def _check_2d(out: Path, command: str, good_ids: list[str], reasons: dict[str, str]) -> dict:
    table = json.loads((out / f"{command}.json").read_text())
    by = {r["case_id"]: r for r in table}
    for cid in good_ids:
        assert by[cid]["status"] == "ok" and by[cid]["outputs"], (command, cid)
        assert all(Path(p).is_file() for p in by[cid]["outputs"].values())
    for cid, why in reasons.items():
        assert by[cid]["status"] == "skipped" and why in by[cid]["reason"], (command, cid, by[cid]["reason"])
        assert not [p for p in out.rglob(f"{cid}*") if p.is_file()], (command, cid)
    assert (out / "report.html").is_file() and (out / f"{command}.csv").is_file()
    return by


def test_detect_cohort_survives_every_failure_class(det_run, tmp_path, monkeypatch):
    from medseg.tasks.detection import predict as det_predict

    run_dir, ds = det_run
    content = json.loads(ds.read_text())
    good = [ds.parent / e["image"] for e in content["test"]]
    inputs, reasons = _image_inputs(tmp_path / "in", good)
    _break_2d(monkeypatch, det_predict)
    rc = main(["detect", "--model", str(run_dir), *map(str, inputs), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert rc == 1
    by = _check_2d(tmp_path / "out", "detect", [p.stem for p in good], reasons)
    assert "geojson" in by[good[0].stem]["outputs"]
    # the write failure came after the CSV and GeoJSON: those were removed too
    assert not (tmp_path / "out" / "writefail_detections.csv").exists()


def test_classify_and_explain_cohorts_survive_every_failure_class(tmp_path, monkeypatch):
    from medseg.data.lesions import make_lesion_dataset
    from medseg.tasks import explain as explain_module
    from medseg.tasks.classification import predict as cls_predict

    dl = make_lesion_dataset(tmp_path / "data", n=6, seed=0, size=32, splits=(0.5, 0.25, 0.25))
    run_dir = write_classifier_run(tmp_path / "cls", 32, dl)
    good = sorted((tmp_path / "data" / "images").glob("*.png"))[:2]
    inputs, reasons = _image_inputs(tmp_path / "in", good)
    for command, module in (("classify", cls_predict), ("explain", explain_module)):
        with monkeypatch.context() as m:
            _break_2d(m, module)
            out = tmp_path / command
            rc = main([command, "--model", str(run_dir), *map(str, inputs), "--out", str(out), "--device", "cpu"])
        assert rc == 1, command
        _check_2d(out, command, [p.stem for p in good], reasons)


def test_every_case_failing_exits_3_and_usage_errors_exit_2(seg_run, tmp_path, capsys):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"nope")
    assert main(["segment", "--model", str(seg_run), str(bad), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 3
    assert "no case succeeded" in capsys.readouterr().out
    # a config / usage error: nothing runs
    assert main(["segment", "--model", str(tmp_path), str(bad), "--out", str(tmp_path / "o2")]) == 2
    with pytest.raises(SystemExit) as e:
        main(["segment", "--model", str(seg_run), str(bad), "--out", str(tmp_path / "o3"), "--device", "gpu"])
    assert e.value.code == 2
    assert main(["detect", "--model", str(seg_run), str(bad), "--out", str(tmp_path / "o4"), "--series", "1"]) == 2


def test_all_ok_exits_0_and_summary_keys_are_shared(seg_run, tmp_path, capsys):
    ph = _phantom(31)
    good = write_phantom_nifti(ph, tmp_path / "ok.nii.gz")[0]
    assert main(["segment", "--model", str(seg_run), str(good), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    summary = json.loads((tmp_path / "o" / "run.json").read_text())["summary"]
    assert {"command", "cases", "ok", "skipped", "needs_review", "ood", "skipped_cases", "table", "exit_code"} <= set(
        summary
    )
    nii = nib.load(str(tmp_path / "o" / "labels" / "ok.nii.gz"))
    assert nii.shape == ph.image.shape
