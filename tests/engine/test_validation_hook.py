"""The trainer's validation hook: sees every validation row and may stop training (pruning)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medseg.engine.trainer import Trainer, build_optimizer, validation_hook


def _trainer(tmp_path, **kw):
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(4, 2)
    opt = build_optimizer(model.parameters(), "adamw", lr=0.05)

    def step(m, batch, device):
        xb, yb = batch
        return nn.functional.cross_entropy(m(xb), yb)

    def val(m):
        with torch.no_grad():
            return {"val_acc": float((m(x).argmax(1) == y).float().mean())}

    return Trainer(
        model,
        opt,
        DataLoader(TensorDataset(x, y), batch_size=8),
        step,
        val_fn=val,
        key_metric="val_acc",
        mode="max",
        max_epochs=6,
        val_every=2,
        run_dir=tmp_path,
        **kw,
    )


def test_hook_sees_each_validation_and_stops_training(tmp_path):
    seen = []

    def hook(epoch, row):
        seen.append((epoch, row["val_acc"]))
        return "pruned at epoch 4" if epoch == 4 else None

    state = _trainer(tmp_path, on_validation=hook).fit()
    assert [e for e, _ in seen] == [2, 4]  # validations only (val_every 2)
    assert state.epoch == 4 and state.stop_reason == "pruned at epoch 4"
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_hook_installed_for_trainers_built_elsewhere(tmp_path):
    seen = []
    with validation_hook(lambda e, row: seen.append(e)):
        state = _trainer(tmp_path / "a").fit()
    assert seen == [2, 4, 6] and state.stop_reason == "completed 6 epochs"
    _trainer(tmp_path / "b").fit()  # outside the block: no hook
    assert seen == [2, 4, 6]
