"""`medseg tune`: trials are ordinary runs, figures reach Optuna, pruning, resume, outputs."""

from __future__ import annotations

import csv
import json

import pytest

from medseg.cli import main
from medseg.config import load_config

optuna = pytest.importorskip("optuna")

from medseg.tasks.tune import TrialRunner, sqlite_url  # noqa: E402  (after the Optuna skip)

SPACE = {"train.lr": {"log_uniform": [1.0e-5, 1.0e-1]}}


def _rows(folder):
    return list(csv.DictReader((folder / "trials.csv").open()))


def test_study_outputs_and_resume(tmp_path, tiny_seg2d_yaml):
    cfg = tiny_seg2d_yaml(
        tmp_path,
        name="lr",
        train={"epochs": 1, "steps_per_epoch": 2},
        tune={"space": SPACE, "startup_trials": 2, "heartbeat_seconds": 2},
    )
    assert main(["tune", str(cfg), "--trials", "2", "--no-plots"]) == 0
    folder = tmp_path / "lr-tune"
    first = _rows(folder)
    assert [r["number"] for r in first] == ["0", "1"]
    # the same command again resumes the study: the two trials are kept, one more runs
    assert main(["tune", str(cfg), "--trials", "3"]) == 0
    rows = _rows(folder)
    assert [r["number"] for r in rows] == ["0", "1", "2"] and rows[:2] == first
    study = optuna.load_study(study_name="lr", storage=sqlite_url(folder / "study.db"))
    for t in study.trials:
        run_dir = folder / "trials" / f"trial_{t.number:04d}"
        assert t.user_attrs["run_dir"] == str(run_dir)
        trial_cfg = load_config(run_dir / "config.yaml")  # an ordinary run folder
        assert trial_cfg.train.lr == pytest.approx(t.params["train.lr"]) and trial_cfg.tune is None
        assert trial_cfg.data.datalist == folder / "datalist.json"  # synthetic data made once for all trials
        if t.state.name == "COMPLETE":
            assert sorted(t.intermediate_values) == [1]  # one report per validation (epoch)
    best = load_config(folder / "best_config.yaml")
    assert best.tune is None and best.data.synthetic and best.name == "lr-best"
    assert best.train.lr == pytest.approx(study.best_params["train.lr"])
    assert (folder / "optimization_history.png").is_file() and (folder / "param_importances.png").is_file()
    assert "trial_0002" in (folder / "report.html").read_text()
    assert json.loads((folder / "tune.json").read_text())["storage"] == sqlite_url(folder / "study.db")


def test_a_poor_trial_is_pruned_after_its_first_validation(tmp_path, tiny_seg2d_yaml):
    cfg = load_config(tiny_seg2d_yaml(tmp_path, tune={"space": SPACE}, train={"epochs": 2, "steps_per_epoch": 2}))
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    )
    study.enqueue_trial({"train.lr": 0.05})
    study.enqueue_trial({"train.lr": 1.0e-5})
    runner = TrialRunner(cfg, tmp_path / "trials")
    study.optimize(runner, n_trials=2)
    good, poor = study.trials
    assert good.state.name == "COMPLETE" and good.user_attrs["epochs"] == 2
    assert poor.state.name == "PRUNED" and poor.user_attrs["epochs"] == 1
    info = json.loads((tmp_path / "trials" / "trial_0001" / "run.json").read_text())
    assert info["status"] == "pruned" and "epoch 1" in info["stop_reason"]


def test_cross_validated_trials_score_the_mean_of_their_folds(tmp_path, tiny_seg2d_yaml):
    cfg = load_config(
        tiny_seg2d_yaml(
            tmp_path,
            data={"folds": 2},
            train={"epochs": 1, "steps_per_epoch": 2},
            tune={"space": SPACE, "objective": "cv_mean"},
        )
    )
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"train.lr": 0.02})
    study.optimize(TrialRunner(cfg, tmp_path / "trials"), n_trials=1)
    trial = study.trials[0]
    summary = json.loads((tmp_path / "trials" / "trial_0000" / "cv_summary.json").read_text())
    assert summary["folds_done"] == [0, 1]
    assert trial.value == pytest.approx(summary["metrics"]["dice_mean"]["mean"])
    assert sorted(trial.intermediate_values) == [1, 2]  # fold 0 epoch 1, fold 1 epoch 1
    assert trial.user_attrs["epochs"] == 2
