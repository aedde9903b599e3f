"""Cross-validation of classification (AUC with CI, patient groups) and detection (F1); their ensembles."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medseg.cli import main
from medseg.config import parse_config
from medseg.data.histology import write_histology_dataset
from medseg.data.lesions import make_lesion_dataset
from medseg.engine.checkpoint import load_run_model
from medseg.engine.ensemble import FoldEnsemble
from medseg.errors import ConfigError
from medseg.tasks.crossval import train_folds


def _cls_cfg(datalist, folds=2):
    return parse_config(
        {
            "task": "classification",
            "device": "cpu",
            "image_size": 32,
            "data": {"datalist": str(datalist), "folds": folds},
            "model": {"name": "efficientnet_lite0"},
            "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "steps_per_epoch": 1},
            "operating_points": {"n_bootstrap": 50},
        }
    )


def test_classification_folds_keep_patients_together_and_report_auc_with_ci(tmp_path):
    dl = make_lesion_dataset(tmp_path / "data", n=16, seed=0, size=32)
    d = json.loads(dl.read_text())
    for i, e in enumerate(d["training"] + d["validation"]):
        e["patient"] = f"PAT{i // 2}"  # two images per patient
    dl.write_text(json.dumps(d))
    out = train_folds(_cls_cfg(dl), tmp_path / "cv", [0, 1])
    parent = tmp_path / "cv"
    split = json.loads((parent / "folds.json").read_text())
    assert split["grouped_by"] == "patient" and split["stratified_by"] == "class label"
    assert "PAT" not in (parent / "folds.json").read_text()  # patient values are used, never written
    fold_of = {a["image"]: a["fold"] for a in split["assignment"]}
    by_patient: dict[str, set[int]] = {}
    for e in d["training"] + d["validation"]:
        by_patient.setdefault(e["patient"], set()).add(fold_of[e["image"]])
    assert all(len(f) == 1 for f in by_patient.values())
    rows = list(csv.DictReader((parent / "cv_summary.csv").open()))
    assert [r["fold"] for r in rows] == ["0", "1", "mean", "sd", "pooled_out_of_fold"]
    for r in rows[:2]:
        assert float(r["auc_ci_low"]) <= float(r["auc"]) <= float(r["auc_ci_high"])
    assert 0.0 <= out["oof_auc"] <= 1.0 and len(out["oof_auc_ci95"]) == 2
    info = json.loads((parent / "classifier.json").read_text())  # what `classify --model PARENT` reads
    assert info["ensemble_of_folds"] == 2 and "youden" in info["operating_points"]
    ens, cfg, ckpt = load_run_model(parent)
    assert isinstance(ens, FoldEnsemble) and ens.output == "softmax" and ckpt["meta"]["image_size"] == 32
    assert json.loads((parent / "model_card.json").read_text())["ensemble"]["folds"] == 2
    images = [str(dl.parent / e["image"]) for e in d["test"]]
    assert main(["classify", "--model", str(parent), *images, "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "pred" / "run.json").read_text())["ensemble"]["folds"] == 2


def test_a_class_rarer_than_the_folds_is_refused(tmp_path):
    dl = make_lesion_dataset(tmp_path / "data", n=12, seed=0, size=32)
    with pytest.raises(ConfigError, match="use at most"):
        train_folds(_cls_cfg(dl, folds=6), tmp_path / "cv", [0])


def test_detection_folds_report_f1_and_average_score_maps(tmp_path):
    ds = write_histology_dataset(tmp_path / "data", n_train=4, n_val=2, n_test=1, shape=(64, 64), mitosis_rate=0.2)
    cfg = parse_config(
        {
            "task": "detection",
            "device": "cpu",
            "cpu_threads": 1,
            "data": {"datalist": str(ds), "folds": 2},
            "model": {"name": "proximity_unet", "features": [4, 4, 8, 8, 8, 4]},
            "sampling": {"crop_size": 32},
            "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4},
        }
    )
    out = train_folds(cfg, tmp_path / "cv", [0, 1])
    parent = tmp_path / "cv"
    assert set(out["metrics"]) >= {"f1", "ap", "test_f1"} and "f1" in out["quote"]
    thresholds = [json.loads((parent / f"fold_{k}" / "detection.json").read_text())["threshold"] for k in (0, 1)]
    info = json.loads((parent / "detection.json").read_text())
    assert info["threshold"] == pytest.approx(np.mean(thresholds)) and info["ensemble_of_folds"] == 2
    ens, _, _ = load_run_model(parent)
    assert isinstance(ens, FoldEnsemble) and ens.output == "sigmoid"
    assert "Ensemble of 2 folds" in (parent / "model_card.md").read_text()
    images = [str(ds.parent / e["image"]) for e in json.loads(ds.read_text())["test"]]
    rc = main(["detect", "--model", str(parent), *images, "--out", str(tmp_path / "pred"), "--device", "cpu"])
    assert rc == 0 and json.loads((tmp_path / "pred" / "run.json").read_text())["ensemble"]["folds"] == 2
