"""Cross-validation: `medseg train --fold`, one parent run, the summary table, the fold ensemble."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from medseg.cli import main
from medseg.config import load_config, parse_config
from medseg.engine.checkpoint import load_run_model
from medseg.engine.ensemble import FoldEnsemble
from medseg.errors import ConfigError, MissingFileError, RunFolderExistsError
from medseg.tasks.crossval import parse_fold, train_folds


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, tiny_seg2d_yaml):
    tmp = tmp_path_factory.mktemp("cv")
    cfg = tiny_seg2d_yaml(tmp, name="cv", data={"folds": 3}, train={"epochs": 1})
    assert main(["train", str(cfg), "--fold", "all"]) == 0
    return tmp / "cv", cfg


def test_fold_runs_live_in_one_parent_with_a_summary(cv_run):
    parent, _ = cv_run
    split = json.loads((parent / "folds.json").read_text())
    assert split["folds"] == 3 and split["cases"] == 6 and split["test_cases"] == 2
    validation = []
    for k in range(3):
        fold = parent / f"fold_{k}"
        assert (fold / "checkpoints" / "best.pt").is_file()
        assert json.loads((fold / "run.json").read_text())["fold"] == k
        fcfg = load_config(fold / "config.yaml")  # an ordinary run: its config reproduces it
        assert fcfg.data.datalist == parent / "splits" / f"fold_{k}.json" and fcfg.data.folds is None
        assert fcfg.plan.patch_size == json.loads((parent / "plan.json").read_text())["patch_size"]  # one plan
        dl = json.loads(fcfg.data.datalist.read_text())
        assert not {e["image"] for e in dl["training"]} & {e["image"] for e in dl["validation"]}
        validation += [e["image"] for e in dl["validation"]]
    assert len(validation) == len(set(validation)) == 6  # each case validates in exactly one fold
    rows = list(csv.DictReader((parent / "cv_summary.csv").open()))
    assert [r["fold"] for r in rows] == ["0", "1", "2", "mean", "sd"]
    dice = [float(r["dice_liver"]) for r in rows[:3]]
    assert float(rows[3]["dice_liver"]) == pytest.approx(sum(dice) / 3)
    assert float(rows[4]["dice_liver"]) == pytest.approx(float(torch.tensor(dice).std()), rel=1e-4)
    summary = json.loads((parent / "cv_summary.json").read_text())
    assert summary["folds_done"] == [0, 1, 2] and "3-fold cross-validation" in summary["quote"]


def test_parent_run_loads_as_the_ensemble_of_its_folds(cv_run):
    parent, _ = cv_run
    ens, cfg, ckpt = load_run_model(parent)
    assert isinstance(ens, FoldEnsemble) and len(ens) == 3 and cfg.data.folds == 3
    assert ckpt["meta"]["ensemble"]["folds"] == 3 and "plan" in ckpt["meta"]
    x = torch.randn(1, 1, 32, 32)
    members = [load_run_model(parent / f"fold_{k}")[0] for k in range(3)]
    with torch.no_grad():
        want = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
        assert torch.allclose(torch.softmax(ens(x), 1), want, atol=1e-5)


def test_single_folds_resume_and_refusals(cv_run, tmp_path):
    parent, cfg_path = cv_run
    with pytest.raises(RunFolderExistsError, match="fold 1"):
        train_folds(load_config(cfg_path), parent, [1])
    before = (parent / "fold_1" / "checkpoints" / "best.pt").stat().st_mtime
    out = train_folds(load_config(cfg_path), parent, [0, 1, 2], resume=True)  # finished folds are skipped
    assert out["folds_done"] == [0, 1, 2] and (parent / "fold_1" / "checkpoints" / "best.pt").stat().st_mtime == before
    # a fold trained alone into a new parent: the split is drawn, the others wait
    cfg = load_config(cfg_path, ["data.folds=3"])
    out = train_folds(cfg, tmp_path / "p", [2])
    assert out["folds_done"] == [2] and not (tmp_path / "p" / "fold_0").exists()
    assert (
        json.loads((tmp_path / "p" / "folds.json").read_text())["assignment"]
        == json.loads((parent / "folds.json").read_text())["assignment"]
    )  # the same cases in the same folds
    with pytest.raises(MissingFileError, match="untrained folds"):
        load_run_model(tmp_path / "p")


def test_fold_option_errors(tmp_path, tiny_seg2d_yaml, capsys):
    assert parse_fold(None, None) is None and parse_fold("all", 3) == [0, 1, 2] and parse_fold("1", 3) == [1]
    with pytest.raises(ConfigError, match="data.folds"):
        parse_fold("0", None)
    with pytest.raises(ConfigError, match="outside"):
        parse_fold("3", 3)
    with pytest.raises(ConfigError, match="'all'"):
        parse_fold("first", 3)
    cfg = tiny_seg2d_yaml(tmp_path)
    assert main(["train", str(cfg), "--fold", "0"]) == 2
    assert "data.folds" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="greater than or equal to 2"):
        parse_config({"task": "segmentation", "data": {"folds": 1}})
    with pytest.raises(ConfigError, match="at least 9 cases"):
        train_folds(load_config(cfg, ["data.folds=9"]), tmp_path / "nine", [0])


def test_segment_with_the_parent_run_uses_the_ensemble_and_its_card(cv_run, tmp_path):
    parent, _ = cv_run
    card = json.loads((parent / "model_card.json").read_text())
    assert card["ensemble"] == {"folds": 3, "members": ["fold_0", "fold_1", "fold_2"]}
    assert set(card["validation"]) == {"cv_dice_liver", "cv_dice_mean"} and "±" in card["validation"]["cv_dice_liver"]
    assert "Ensemble of 3 folds" in (parent / "model_card.md").read_text()
    ref = json.loads((parent / "ood_reference.json").read_text())
    folds = [json.loads((parent / f"fold_{k}" / "ood_reference.json").read_text()) for k in range(3)]
    assert ref["merged_from"] == 3 and ref["intensity"][0][0][0] == min(f["intensity"][0][0][0] for f in folds)
    review = json.loads((parent / "run.json").read_text())["review"]
    assert review["per_fold"] == [
        f["review"]["threshold"]
        for f in (json.loads((parent / f"fold_{k}" / "model_card.json").read_text()) for k in range(3))
    ]
    test = json.loads((parent / "splits" / "fold_0.json").read_text())["test"]
    out = tmp_path / "pred"
    rc = main(["segment", "--model", str(parent), *(e["image"] for e in test), "--out", str(out), "--device", "cpu"])
    assert rc == 0
    rows = json.loads((out / "segment.json").read_text())
    assert [r["status"] for r in rows] == ["ok"] * len(test)
    assert all(Path(p).is_file() for r in rows for p in r["outputs"].values())
    assert json.loads((out / "run.json").read_text())["ensemble"]["members"] == ["fold_0", "fold_1", "fold_2"]
    assert all(0.0 <= r["disagreement"] <= 1.0 for r in rows)  # the members' mutual information per case


def test_member_by_member_inference_equals_the_ensembles_forward(cv_run):
    """segment runs an ensemble's members one by one (for their disagreement): the same segmentation."""
    from medseg.tasks.segmentation.predict import load_segmenter, predict_case

    parent, _ = cv_run
    sm = load_segmenter(parent, "cpu")
    image = json.loads((parent / "splits" / "fold_0.json").read_text())["test"][0]["image"]

    class Plain(torch.nn.Module):  # the ensemble's forward, without its members showing
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    a = predict_case(sm.model, image, meta=sm.meta, infer=sm.infer, device=sm.device)
    b = predict_case(Plain(sm.model).eval(), image, meta=sm.meta, infer=sm.infer, device=sm.device)
    # the window blends logits before the softmax: each member's vs the ensemble's log-mean differ at seams only
    assert float(abs(torch.as_tensor(a["probs"]) - torch.as_tensor(b["probs"])).max()) < 0.05
    assert (a["labels"] == b["labels"]).mean() > 0.999
    assert b["disagreement"] is None and 0.0 <= a["disagreement"] <= 1.0
