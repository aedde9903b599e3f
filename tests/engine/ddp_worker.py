"""A worker that ``torchrun`` starts on every rank in tests/engine/test_ddp.py (and the single-process reference).

``python ddp_worker.py MODE OUT [BATCH]``: MODE ``step`` (one SGD step, weights saved), ``resume`` (4 epochs
straight vs 2 + resume to 4, both saved), ``all`` (both),
``crash`` (rank 1 fails in its second step). Under torchrun the worker joins the group with
:func:`medseg.engine.distributed.init_from_env` (gloo, short timeout).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from medseg.engine.distributed import DistributedError, current, init_from_env, shutdown
from medseg.engine.trainer import Trainer, default_step

N_SAMPLES = 8


def _data() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, 3, 8, 8, generator=g)
    y = (x.mean(1, keepdim=True) > 0).float()
    return [{"image": x[i], "label": y[i]} for i in range(N_SAMPLES)]


def _model(dropout: float) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout(dropout), nn.Conv2d(4, 1, 3, padding=1))


def _trainer(
    batch: int, epochs: int, run_dir: Path | None, dropout: float = 0.0, shuffle: bool = True, **kw
) -> Trainer:
    ds = _data()
    ctx = current()
    # unshuffled, rank r takes samples r, r + N, ... so one step of N ranks x b sees the first N*b samples
    sampler = ctx.sampler(ds, shuffle=shuffle, seed=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=shuffle and sampler is None, sampler=sampler)
    model = _model(dropout)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    return Trainer(
        model,
        opt,
        loader,
        default_step(nn.functional.mse_loss),
        scheduler=sched,
        max_epochs=epochs,
        seed=5,
        run_dir=run_dir,
        progress=False,
        **kw,
    )


def main(mode: str, out: Path, batch: int) -> None:
    torch.set_num_threads(1)
    ctx = init_from_env("cpu", timeout_s=60)
    out.mkdir(parents=True, exist_ok=True)
    if mode == "all":  # ranks that disagree get a clear error, on every rank
        try:
            ctx.check_same({"lr": 0.1 * (1 + ctx.rank)}, "config")
        except DistributedError as e:
            (out / f"disagree_rank{ctx.rank}.txt").write_text(str(e))
        ctx.check_same({"lr": 0.1}, "config")  # the same value passes
    if mode in ("step", "all"):
        t = _trainer(batch, 1, None, shuffle=False, steps_per_epoch=1)
        t.fit()
        if ctx.is_main:
            torch.save(t.model.state_dict(), out / f"step_ws{ctx.world_size}.pt")
    if mode in ("resume", "all"):
        straight = _trainer(batch, 4, out / "straight", dropout=0.3)
        straight.fit()
        stop_at_2 = lambda e, row: "stop" if e == 2 else None  # noqa: E731
        first = _trainer(batch, 4, out / "resumed", dropout=0.3, on_validation=stop_at_2)
        first.val_fn = lambda m: {"val_loss": 0.0}
        first.fit()
        assert first.state.epoch == 2, first.state.epoch  # every rank stopped with rank 0's decision
        second = _trainer(batch, 4, out / "resumed", dropout=0.3)
        second.fit(resume=True)
        if ctx.is_main:
            torch.save(straight.model.state_dict(), out / "straight.pt")
            torch.save(second.model.state_dict(), out / "resumed.pt")
    elif mode == "crash":

        def step(m: nn.Module, b, dev: torch.device) -> torch.Tensor:
            step.calls += 1  # type: ignore[attr-defined]
            if ctx.rank == 1 and step.calls == 2:  # type: ignore[attr-defined]
                raise RuntimeError("injected failure on rank 1")
            return nn.functional.mse_loss(m(b["image"]), b["label"])

        step.calls = 0  # type: ignore[attr-defined]
        t = _trainer(1, 50, None)
        t.step_fn = step
        t.fit()
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 2)
