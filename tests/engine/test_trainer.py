"""The generic training loop: loss falls, checkpoints, exact resume, early stop, metrics outputs."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medseg.engine.checkpoint import load_checkpoint, save_checkpoint
from medseg.engine.trainer import Trainer, build_optimizer, build_scheduler
from medseg.errors import CheckpointError


def _problem(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def _step(model, batch, device):
    x, y = (t.to(device) for t in batch)
    return nn.functional.cross_entropy(model(x), y)


def _make(tmp_path, epochs=6, seed=0, **kw):
    torch.manual_seed(123)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    opt = build_optimizer(model.parameters(), "adamw", lr=0.05)
    sched = build_scheduler(opt, "cosine", epochs)
    loader = DataLoader(_problem(), batch_size=8, shuffle=True)
    ds = _problem(1)

    def val(m):
        with torch.no_grad():
            logits = m(ds.tensors[0])
            return {
                "val_loss": float(nn.functional.cross_entropy(logits, ds.tensors[1])),
                "val_acc": float((logits.argmax(1) == ds.tensors[1]).float().mean()),
            }

    return Trainer(
        model,
        opt,
        loader,
        _step,
        val_fn=val,
        key_metric="val_acc",
        mode="max",
        scheduler=sched,
        max_epochs=epochs,
        seed=seed,
        run_dir=tmp_path,
        model_meta={"model_params": {"name": "toy"}},
        **kw,
    )


def test_loss_falls_and_outputs_written(tmp_path):
    t = _make(tmp_path, epochs=6)
    state = t.fit()
    h = state.history
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert state.best_metric >= 0.8
    assert (tmp_path / "checkpoints" / "best.pt").exists() and (tmp_path / "checkpoints" / "last.pt").exists()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 6 and {"train_loss", "val_acc", "lr"} <= set(rows[0])
    assert (tmp_path / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ck["state"]["epoch"] == 6 and ck["meta"]["model_params"] == {"name": "toy"}


def test_exact_resume(tmp_path):
    full = _make(tmp_path / "full", epochs=4)
    full.fit()
    part = _make(tmp_path / "part", epochs=4)
    part.max_epochs = 2  # interrupted after 2 of 4 planned epochs
    part.fit()
    resumed = _make(tmp_path / "part", epochs=4)
    resumed.fit(resume=True)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert resumed.state.epoch == 4
    assert [r["train_loss"] for r in full.state.history] == pytest.approx(
        [r["train_loss"] for r in resumed.state.history], abs=1e-6
    )


def test_extend_past_planned_epochs(tmp_path):
    t = _make(tmp_path, epochs=2)
    t.fit()
    more = _make(tmp_path, epochs=5)
    state = more.fit(resume=True)
    assert state.epoch == 5 and len(state.history) == 5
    assert more.scheduler.T_max == 5  # the schedule stretches to the new length
    assert all(r["lr"] > 0 for r in state.history)


def test_early_stop_and_time_budget(tmp_path):
    t = _make(tmp_path / "es", epochs=50, early_stop_patience=1)
    t.val_fn = lambda m: {"val_acc": 0.5}  # never improves after the first validation
    state = t.fit()
    assert state.epoch == 2 and "early stop" in state.stop_reason
    t2 = _make(tmp_path / "tb", epochs=50, max_minutes=1e-6)
    state2 = t2.fit()
    assert state2.epoch == 1 and "time budget" in state2.stop_reason


def test_non_finite_loss_raises(tmp_path):
    t = _make(tmp_path, epochs=1)
    t.step_fn = lambda m, b, d: torch.tensor(float("nan"), requires_grad=True)
    with pytest.raises(FloatingPointError, match="non-finite"):
        t.fit()


def test_checkpoint_refuses_pickled_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, bad)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(bad)
    ok = save_checkpoint(tmp_path / "ok.pt", model={"w": torch.ones(2)}, state={"epoch": 1})
    assert load_checkpoint(ok)["state"]["epoch"] == 1
    (tmp_path / "trunc.pt").write_bytes(ok.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_checkpoint(tmp_path / "trunc.pt")


def test_last_epoch_is_validated_whatever_val_every(tmp_path):
    """With val_every=3 and 4 epochs, epochs 3 and 4 are validated: the last one always is."""
    t = _make(tmp_path, epochs=4, val_every=3)
    t.fit()
    validated = [int(r["epoch"]) for r in t.state.history if "val_acc" in r]
    assert validated == [3, 4]
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert rows[-1]["val_acc"] != ""
