"""Budget-fitted schedule: with a time budget the budget (not the epoch count) ends training and the
LR follows it; without one, epochs end training and the expected duration is logged."""

from __future__ import annotations

import logging
import math
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medseg.config.base import TrainSection
from medseg.engine.trainer import Trainer, budget_lr_factor, build_optimizer, build_scheduler


class SlowStep:
    """Cross-entropy step that takes at least ``seconds`` (a stand-in for a real network's step)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, model, batch, device):
        time.sleep(self.seconds)
        x, y = (t.to(device) for t in batch)
        return nn.functional.cross_entropy(model(x), y)


def _parts():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    ds = TensorDataset(x, (x[:, 0] > 0).long())
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = build_optimizer(model.parameters(), "adamw", lr=0.1)
    return model, opt, DataLoader(ds, batch_size=8)


def test_lr_factor_curves():
    assert budget_lr_factor("cosine", 0) == 1.0 and abs(budget_lr_factor("cosine", 1)) < 1e-12
    assert math.isclose(budget_lr_factor("cosine", 0.5), 0.5)
    assert budget_lr_factor("poly", 1.0) == 0.0 and budget_lr_factor("none", 0.7) == 1.0
    assert budget_lr_factor("cosine", 2.0) == budget_lr_factor("cosine", 1.0)  # clamped past the budget


def test_budget_not_epochs_ends_training_and_lr_anneals(tmp_path, caplog):
    """train.max_minutes set, train.epochs not set: the default epoch count does not end training, the
    budget does, and the LR has annealed to ~0 by its end (cosine over the budget)."""
    model, opt, loader = _parts()
    train = TrainSection(max_minutes=0.04)  # 2.4 s
    assert "epochs" not in train.model_fields_set
    object.__setattr__(train, "epochs", 3)  # a small default (not set by the config) that the budget outlasts
    t = Trainer.from_config(
        model, opt, loader, SlowStep(0.001), train=train, seed=0, scheduler=build_scheduler(opt, "cosine", 50)
    )
    assert t.budget_schedule == "cosine" and t.scheduler is None
    with caplog.at_level(logging.INFO, logger="medseg.engine"):
        state = t.fit()
    assert "time budget" in state.stop_reason
    assert state.epoch > 3  # the default epoch count did not end it
    assert 2.0 <= state.train_seconds <= 4.5
    lrs = [r["lr"] for r in state.history]
    assert lrs[0] > 0.09 and lrs[-1] < 0.01 and lrs == sorted(lrs, reverse=True)
    assert any("time budget; epochs are not the limit" in r.message for r in caplog.records)


def test_explicit_epochs_with_budget_keep_the_epoch_schedule(tmp_path):
    model, opt, loader = _parts()
    train = TrainSection(epochs=3, max_minutes=5)
    t = Trainer.from_config(
        model, opt, loader, SlowStep(0), train=train, seed=0, scheduler=build_scheduler(opt, "cosine", 3)
    )
    assert t.budget_schedule is None
    state = t.fit()
    assert state.epoch == 3 and state.stop_reason == "completed 3 epochs"


def test_epoch_bound_run_logs_expected_duration(tmp_path, caplog):
    model, opt, loader = _parts()
    t = Trainer.from_config(model, opt, loader, SlowStep(0), train=TrainSection(epochs=4), seed=0)
    with caplog.at_level(logging.INFO, logger="medseg.engine"):
        t.fit()
    msgs = [r.message for r in caplog.records]
    assert any(m.startswith("training 4 epochs") for m in msgs)
    assert any("4 epochs take about" in m and "min on this machine" in m for m in msgs)


def test_progress_bar_with_eta(tmp_path, capsys):
    model, opt, loader = _parts()
    t = Trainer.from_config(model, opt, loader, SlowStep(0), train=TrainSection(epochs=2), seed=0, progress=True)
    t.fit()
    err = capsys.readouterr().err
    assert "training" in err and "2/2" in err and "epoch" in err
