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
