"""The tune: section and its search space: validation, Optuna suggestions, objective defaults."""

from __future__ import annotations

import sys

import pytest

from medseg.config import parse_config
from medseg.errors import ConfigError, MissingDependencyError
from medseg.tasks.tune import check_space, decode_params, redact_url, suggest, tune
from medseg.tasks.tune.space import direction, objective_metric
from medseg.tasks.tune.study import import_optuna

optuna = pytest.importorskip("optuna")


def _cfg(space=None, **kw):
    raw = {"task": "segmentation", "tune": {"space": space or {"train.lr": {"log_uniform": [1e-4, 1e-1]}}}}
    raw.update(kw)
    return parse_config(raw)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"log_uniform": [0, 1]}, "low > 0"),
        ({"uniform": [1, 1]}, "low < high"),
        ({"uniform": [0, 1], "choice": [1]}, "exactly one"),
        ({}, "exactly one"),
        ({"choice": [1, 2], "step": 1}, "step applies"),
        ({"integer": [1, 9], "step": 0.5}, "whole number"),
        ({"logarithmic": [1, 2]}, "unknown key"),
    ],
)
def test_bad_ranges_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        _cfg({"train.lr": spec})


@pytest.mark.parametrize("key", ["name", "data.val_fraction", "tune.objective", "synthetic.noise_hu", "train..lr"])
def test_keys_that_cannot_be_searched(key):
    with pytest.raises(ConfigError, match="cannot be searched|config key"):
        _cfg({key: {"choice": [1, 2]}})


def test_space_keys_are_checked_against_the_schema():
    check_space(_cfg(), _cfg().tune.space)
    with pytest.raises(ConfigError, match="'train.lrr'.*did you mean 'lr'"):
        cfg = _cfg({"train.lrr": {"uniform": [0.1, 0.2]}})
        check_space(cfg, cfg.tune.space)
    with pytest.raises(ConfigError, match="'augment.level' with value 'extreme'"):
        cfg = _cfg({"augment.level": {"choice": ["light", "extreme"]}})
        check_space(cfg, cfg.tune.space)


def test_suggestions_decode_list_choices():
    space = _cfg(
        {
            "model.channels": {"choice": [[4, 8], [8, 16, 32]]},
            "augment.level": {"choice": ["light", "heavy"]},
            "train.lr": {"log_uniform": [1e-4, 1e-1]},
            "train.batch_size": {"integer": [2, 8], "step": 2},
        }
    ).tune.space
    trial = optuna.trial.FixedTrial(
        {"model.channels": "[8, 16, 32]", "augment.level": "heavy", "train.lr": 0.01, "train.batch_size": 4}
    )
    got = suggest(trial, space)
    assert got == {"model.channels": [8, 16, 32], "augment.level": "heavy", "train.lr": 0.01, "train.batch_size": 4}
    assert decode_params({"model.channels": "[4, 8]"}, space) == {"model.channels": [4, 8]}


def test_objective_defaults():
    cfg = _cfg()
    assert objective_metric(cfg, cfg.tune) == "val_dice" and direction(cfg.tune, "val_dice") == "maximize"
    assert direction(cfg.tune, "val_loss") == "minimize"
    cfg = parse_config({"task": "classification", "tune": cfg.tune.model_dump()})
    assert objective_metric(cfg, cfg.tune) == "val_auc"


def test_study_requests_that_cannot_run(tmp_path):
    with pytest.raises(ConfigError, match="no tune: section"):
        tune(parse_config({"task": "segmentation"}), 2, out=tmp_path)
    with pytest.raises(ConfigError, match="needs data.folds"):
        tune(_cfg(tune={"space": {"train.lr": {"uniform": [0.1, 0.2]}}, "objective": "cv_mean"}), 2, out=tmp_path)
    with pytest.raises(ConfigError, match="at least 1"):
        tune(_cfg(), 0, out=tmp_path)
    with pytest.raises(ConfigError, match="not task 'weak_supervision'"):
        tune(parse_config({"task": "weak_supervision"}), 2, out=tmp_path)


def test_storage_passwords_stay_out_of_files():
    shown = redact_url("postgresql://medseg:s3cret@db.example.org:5432/studies")
    assert "s3cret" not in shown and "db.example.org" in shown


def test_missing_optuna_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    with pytest.raises(MissingDependencyError, match=r"medseg\[tune\]"):
        import_optuna()
