"""Run folders: provenance in run.json, resolved config, never silently overwritten."""

from __future__ import annotations

import json

import pytest

from medseg.config import parse_config
from medseg.errors import RunFolderExistsError
from medseg.runs import Run, open_run


def _cfg(tmp_path, **kw):
    return parse_config({"task": "segmentation", "name": "exp", "output_dir": str(tmp_path / "runs"), "seed": 7, **kw})


def test_run_folder_contents(tmp_path):
    cfg = _cfg(tmp_path)
    with open_run(cfg, command="train") as run:
        with run.stage("load"):
            pass
        run.set(device="cpu (2 threads)")
    info = json.loads((run.path / "run.json").read_text())
    assert run.path == tmp_path / "runs" / "exp"
    assert info["status"] == "ok" and info["end"] is not None
    assert info["seed"] == 7 and info["device"] == "cpu (2 threads)"
    assert {"python", "medseg", "torch", "monai"} <= set(info["versions"])
    assert "load" in info["timings_s"] and len(info["config_hash"]) == 16
    assert "seed: 7" in (run.path / "config.yaml").read_text()
    assert (run.path / "run.log").exists()


def test_existing_run_folder_is_not_overwritten(tmp_path):
    cfg = _cfg(tmp_path)
    with open_run(cfg) as run:
        (run.path / "precious.txt").write_text("keep")
    with pytest.raises(RunFolderExistsError, match="already exists"):
        open_run(cfg)
    # --force moves the old folder aside; nothing is deleted
    with open_run(cfg, force=True):
        pass
    aside = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("exp.old-")]
    assert len(aside) == 1 and (aside[0] / "precious.txt").read_text() == "keep"


def test_failed_run_is_recorded(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(ValueError):
        with open_run(cfg) as run:
            raise ValueError("boom")
    info = json.loads((run.path / "run.json").read_text())
    assert info["status"] == "failed" and "boom" in info["error"]


def test_resume_reopens(tmp_path):
    cfg = _cfg(tmp_path)
    with open_run(cfg):
        pass
    cfg2 = _cfg(tmp_path, train={"epochs": 99})
    with open_run(cfg2, resume=True) as run:
        assert run.info["status"] == "running"
    assert "epochs: 99" in (run.path / "config.yaml").read_text()
    assert Run.open(run.path).info["status"] == "ok"


def test_saved_config_has_absolute_paths(tmp_path, monkeypatch):
    """A config built in code with relative paths means the same when reloaded from the run folder."""
    from medseg.config import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset.json").write_text('{"training": []}')
    cfg = parse_config(
        {"task": "segmentation", "name": "rel", "output_dir": "runs", "data": {"datalist": "data/dataset.json"}}
    )
    with open_run(cfg) as run:
        pass
    monkeypatch.chdir(run.path)  # reload from elsewhere
    again = load_config(tmp_path / "runs" / "rel" / "config.yaml")
    assert again.data.datalist == tmp_path / "data" / "dataset.json"


def test_failed_run_folder_is_reused_by_the_identical_command(tmp_path):
    """A crashed `medseg train` does not block its retry: same command + config -> the folder is reused."""
    cfg = _cfg(tmp_path)
    with pytest.raises(RuntimeError):
        with open_run(cfg, command="train") as run:
            (run.path / "checkpoints").mkdir()
            (run.path / "checkpoints" / "last.pt").write_text("stale")
            raise RuntimeError("out of memory")
    assert json.loads((run.path / "run.json").read_text())["status"] == "failed"
    with open_run(cfg, command="train") as again:
        assert again.path == run.path
    info = json.loads((run.path / "run.json").read_text())
    assert info["status"] == "ok"
    kept = [p for p in run.path.iterdir() if p.name.startswith("failed-")]
    assert len(kept) == 1 and (kept[0] / "checkpoints" / "last.pt").is_file()  # the failed attempt, kept aside
    assert not (run.path / "checkpoints").exists()  # no stale checkpoint in the new run
    assert json.loads((kept[0] / "run.json").read_text())["status"] == "failed"


def test_failed_run_with_another_config_or_a_finished_run_still_blocks(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(ValueError):
        with open_run(cfg, command="train"):
            raise ValueError("bad data")
    with pytest.raises(RunFolderExistsError):  # a different experiment: never reuse silently
        open_run(_cfg(tmp_path, seed=8), command="train")
    with open_run(cfg, command="train"):  # the identical command reuses it
        pass
    with pytest.raises(RunFolderExistsError):  # a finished run is never reused
        open_run(cfg, command="train")


def test_interrupted_run_whose_process_died_is_reused(tmp_path):
    cfg = _cfg(tmp_path)
    run = open_run(cfg, command="train")
    info = json.loads((run.path / "run.json").read_text())
    info["pid"] = 2**22 + 12345  # no such process: killed (kill -9, power loss) while "running"
    (run.path / "run.json").write_text(json.dumps(info))
    run._detach_log()
    with open_run(cfg, command="train") as again:
        assert again.info["status"] == "running"
    assert any(p.name.startswith("failed-") for p in run.path.iterdir())


def test_outputs_follow_the_umask(tmp_path):
    """Files are created 0666 & ~umask (0644 under 022), folders 0777 & ~umask, atomic writes included."""
    import os
    import stat

    import numpy as np

    from medseg.review.overlay import save_png
    from medseg.tasks.segmentation.files import write_nifti

    old = os.umask(0o022)
    try:
        with Run.create(tmp_path / "out", _cfg(tmp_path), command="segment") as run:
            run.write_json("summary.json", {"a": 1})
            write_nifti(np.zeros((4, 4, 4), np.uint8), np.eye(4), run.path / "labels" / "a.nii.gz")
            save_png(np.zeros((4, 4, 3), np.uint8), run.path / "overlays" / "a.png")
        files = [p for p in run.path.rglob("*") if p.is_file()]
        dirs = [run.path, *(p for p in run.path.rglob("*") if p.is_dir())]
        assert len(files) >= 5 and {"config.yaml", "run.json", "a.nii.gz", "a.png"} <= {p.name for p in files}
        assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {"0o644"}
        assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in dirs} == {"0o755"}
        os.umask(0o027)
        save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "group" / "b.png")
        assert stat.S_IMODE((tmp_path / "group" / "b.png").stat().st_mode) == 0o640
    finally:
        os.umask(old)
