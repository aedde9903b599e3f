"""`medseg explain` task and the explain demo stage, on a small (untrained) classifier run folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, make_classifier_run) -> Path:
    """A classification run folder as medseg.tasks.classification.train leaves it (weights untrained)."""
    from medseg.data.lesions import make_lesion_dataset

    root = tmp_path_factory.mktemp("demo")
    cls_dir = root / "classification"
    datalist = make_lesion_dataset(cls_dir / "data", n=8, seed=0, size=48, splits=(0.5, 0.25, 0.25))
    return make_classifier_run(cls_dir / "run", 48, datalist)


def test_explain_writes_maps_pngs_and_table(classifier_run, tmp_path):
    from medseg.tasks.explain import explain

    images = sorted((classifier_run.parent / "data" / "images").glob("*.png"))[:3]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    s = explain(classifier_run, [*images, bad], tmp_path / "out", method="gradcampp", target="malignant")
    assert s["ok"] == 3 and s["skipped"] == 1 and s["layer"] == "_blocks.4"  # 48 px input
    rows = json.loads(Path(s["json"]).read_text())
    assert [r["target_class"] for r in rows[:3]] == ["malignant"] * 3
    m = np.load(rows[0]["outputs"]["cam_map"])
    assert m.shape == (48, 48) and 0.0 <= m.min() and m.max() <= 1.0
    assert Path(rows[0]["outputs"]["cam_png"]).is_file()
    assert rows[3]["status"] == "skipped" and "broken.png" in rows[3]["reason"]
    assert "cam_png=" in next(csv.DictReader(open(s["table"])))["outputs"]
    assert (tmp_path / "out" / "report.html").is_file()
    with pytest.raises(ConfigError, match="unknown target class"):
        explain(classifier_run, images, tmp_path / "out2", target="melanoma")


def test_explain_refuses_runs_without_a_model_to_explain(tmp_path):
    from medseg.config import SegmentationConfig
    from medseg.config.weak_supervision import WeakSupervisionConfig
    from medseg.errors import MissingFileError
    from medseg.runs import Run
    from medseg.tasks.explain import explain

    run = Run.create(tmp_path / "weak", WeakSupervisionConfig())
    run.finish()
    with pytest.raises(InputError, match="not 'weak_supervision'"):
        explain(run.path, [tmp_path], tmp_path / "out")
    run = Run.create(tmp_path / "seg", SegmentationConfig())  # a segmentation run that never trained
    run.finish()
    with pytest.raises(MissingFileError):
        explain(run.path, [tmp_path], tmp_path / "out2")


def test_explain_cli(classifier_run, tmp_path, capsys):
    from medseg.cli import main

    img = sorted((classifier_run.parent / "data" / "images").glob("*.png"))[0]
    rc = main(["explain", "--model", str(classifier_run), str(img), "--out", str(tmp_path / "cli"), "--device", "cpu"])
    assert rc == 0
    assert (tmp_path / "cli" / "cams" / f"{img.stem}_cam.png").is_file()


def test_demo_stage_uses_the_classification_run(classifier_run):
    from medseg.demo.explain import run_demo

    res = run_demo(classifier_run.parent.parent / "explain", quick=True)
    s = res["summary"]
    assert s["n_images"] == len(res["cases"]) >= 1
    assert 0.0 <= s["pointing_game"] <= 1.0 and 0.0 <= s["cam_dice"] <= 1.0
    c = res["cases"][0]
    assert c.task == "explain" and Path(c.cam).is_file() and Path(c.cam).is_absolute()
    assert c.metrics["pointing_game_hit"] in (0.0, 1.0)


def test_demo_stage_without_classifier_reports_it(tmp_path):
    from medseg.demo.explain import run_demo

    res = run_demo(tmp_path / "explain", quick=True)
    assert res["cases"] == [] and "no trained classifier" in res["summary"]["skipped"]


def test_weak_supervision_config_validates(tmp_path):
    from medseg.config import load_config

    cfg = load_config(
        Path(__file__).resolve().parents[2] / "configs" / "weak_lesions.yaml",
        ["weak.threshold=0.4", "weak.method=gradcampp"],
    )
    assert cfg.weak.threshold == 0.4 and cfg.weak.method == "gradcampp" and cfg.model.name == "unet"
    with pytest.raises(ConfigError, match="thresh"):
        load_config(Path(__file__).resolve().parents[2] / "configs" / "weak_lesions.yaml", ["weak.treshold=0.4"])


def test_explain_takes_the_test_list_of_a_datalist_by_default(classifier_run, tmp_path):
    from medseg.tasks.explain import explain

    dl = classifier_run.parent / "data" / "dataset.json"
    lists = json.loads(dl.read_text())
    s = explain(classifier_run, [dl], tmp_path / "out", device="cpu")
    rows = list(csv.DictReader(open(s["table"])))
    assert s["ok"] == len(lists["test"]) == len(rows) > 0
    assert sorted(Path(r["source"]).name for r in rows) == sorted(Path(e["image"]).name for e in lists["test"])
    assert {r["split"] for r in rows} == {"test"}


def test_explain_cli_split_chooses_the_datalist_list(classifier_run, tmp_path):
    from medseg.cli import main

    dl = classifier_run.parent / "data" / "dataset.json"
    n_val = len(json.loads(dl.read_text())["validation"])
    out = tmp_path / "cli"
    rc = main(["explain", "--model", str(classifier_run), str(dl), "--out", str(out), "--split", "validation"])
    assert rc == 0
    assert len(list(csv.DictReader(open(out / "explain.csv")))) == n_val > 0
