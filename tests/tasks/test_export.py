"""medseg export: TorchScript and ONNX (onnxruntime) agree with the PyTorch model and carry the preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.engine.checkpoint import load_run_model
from medseg.errors import InputError
from medseg.tasks.export import TOLERANCE, export_model


@pytest.fixture(scope="module")
def seg_run(tiny_seg_run) -> Path:
    return tiny_seg_run


def _reference(run: Path, x: torch.Tensor) -> np.ndarray:
    model, _, _ = load_run_model(run)
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.slow  # trains a tiny model, exports and runs it twice (~25 s on 2 cores)
def test_torchscript_and_onnx_match_pytorch_and_carry_preprocessing(seg_run, tmp_path, capsys):
    import onnx
    import onnxruntime as ort

    assert main(["export", str(seg_run), "--format", "torchscript", "--out", str(tmp_path / "ts")]) == 0
    assert "max abs logit difference" in capsys.readouterr().out
    assert main(["export", str(seg_run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    info = json.loads((tmp_path / "onnx" / "export.json").read_text())
    plan = info["preprocessing"]
    assert info["class_names"] == ["background", "liver"] and info["modality"] == "CT"
    assert plan["orientation"] == "RAS" and len(plan["target_spacing_mm"]) == 3 and plan["intensity"]["clip"]
    assert info["check"]["max_abs_logit_diff"] <= TOLERANCE == info["check"]["tolerance"]

    # an input the exporter never saw (another size): same logits within the stated tolerance
    x = torch.randn(2, 1, 32, 24, 16, generator=torch.Generator().manual_seed(7))
    ref = _reference(seg_run, x)
    extra = {"medseg.json": ""}
    ts = torch.jit.load(str(tmp_path / "ts" / "model.ts"), _extra_files=extra)
    assert json.loads(extra["medseg.json"])["preprocessing"] == plan
    with torch.no_grad():
        assert np.abs(ts(x).numpy() - ref).max() <= TOLERANCE
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(["logits"], {"image": x.numpy()})[0] - ref).max() <= TOLERANCE
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "onnx" / "model.onnx")).metadata_props}
    assert json.loads(props["medseg"])["preprocessing"] == plan


def test_failed_run_is_refused(tmp_path):
    failed = tmp_path / "failed_run"
    failed.mkdir()
    (failed / "config.yaml").write_text("task: segmentation\n")
    (failed / "run.json").write_text(json.dumps({"name": "failed_run", "status": "failed"}))
    with pytest.raises(InputError, match="marked 'failed'"):
        export_model(failed, "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["export", str(failed), "--format", "torchscript", "--out", str(tmp_path / "o2")]) == 2


@pytest.mark.slow  # MONAI's bundle runner in a subprocess + medseg segment (~40 s on 2 cores)
def test_bundle_runs_with_monais_runner_like_medseg_segment(seg_run, tmp_path):
    import importlib.util
    import subprocess
    import sys

    import nibabel as nib

    from medseg.data.synthetic import ct_phantom, write_phantom_nifti

    case = write_phantom_nifti(
        ct_phantom(seed=50, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0)), tmp_path / "case.nii.gz"
    )[0]
    bundle = tmp_path / "bundle"
    assert main(["export", str(seg_run), "--format", "bundle", "--out", str(bundle)]) == 0
    for f in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md"):
        assert (bundle / f).is_file(), f
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "liver"}
    assert (bundle / "docs" / "README.md").read_text() == (seg_run / "model_card.md").read_text()
    args = dict(
        config_file=str(bundle / "configs/inference.json"), bundle_root=str(bundle), output_dir=str(tmp_path / "b")
    )
    if importlib.util.find_spec("fire") is not None:  # the command line needs python-fire
        cmd = [sys.executable, "-m", "monai.bundle", "run", *[f"--{k}={v}" for k, v in args.items()]]
        cmd.append(f"--input_files=['{case}']")
    else:  # the same runner, called as the command line calls it
        call = f"from monai.bundle import run; run(input_files=[{str(case)!r}], **{args!r})"
        cmd = [sys.executable, "-c", call]
    root = str(Path(__file__).resolve().parents[2])
    env = {**__import__("os").environ, "PYTHONPATH": root}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "seg"
    assert main(["segment", "--model", str(seg_run), str(case), "--out", str(out), "--device", "cpu"]) == 0
    ours = nib.load(out / "labels" / "case.nii.gz")
    theirs = nib.load(tmp_path / "b" / "case_seg.nii.gz")
    a, b = np.asarray(ours.dataobj), np.asarray(theirs.dataobj).reshape(np.asarray(ours.dataobj).shape)
    assert a.any() and np.array_equal(a, b)  # Dice 1.0 on every class
    assert np.allclose(ours.affine, theirs.affine, atol=1e-4)
