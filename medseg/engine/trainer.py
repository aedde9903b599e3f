"""A generic training loop shared by every task (segmentation, detection, classification).

What it does for every task: device placement, AMP on CUDA, gradient clipping, a scheduler step
per epoch, validation every N epochs, best/last checkpoints, exact resume, early stopping, a
wall-time budget, per-epoch ``metrics.csv`` and a training-curve PNG, and a progress bar (quiet
when stdout is not a terminal).

Budget-fitted schedule (issue 17): with ``max_minutes`` set and the epoch count not binding
(``Trainer.from_config`` when the config sets ``train.max_minutes`` but not ``train.epochs``),
training runs until the time budget is spent (or ``early_stop_patience`` validations without
improvement, the convergence rule) and the learning rate follows the *budget*: at every step it is
``lr0 * f(t / T)`` with ``t`` the training time spent, ``T`` the budget and ``f`` the cosine
(``0.5 (1 + cos(pi x))``) or poly (``(1 - x) ** 0.9``) curve, so it anneals to 0 when the budget ends
whatever the speed of the machine. Validation then runs every ``val_every`` epochs but at most
:data:`BUDGET_VALIDATIONS` times over the budget, and takes at most a fifth of the time (and runs
when the budget ends); ``last.pt`` is written at validations; an epoch has at least
:data:`BUDGET_EPOCH_STEPS` steps (going round a small data set). The run is not bit-reproducible
(the LR depends on time).
Without a budget, ``max_epochs`` ends training and the expected duration is logged after the first
epoch. An epoch-level progress bar shows the ETA (time budget or epochs).

Several processes (DDP under torchrun, :mod:`medseg.engine.distributed`): with a ``dist`` context of
more than one rank the model is wrapped in ``DistributedDataParallel`` (gradients averaged across
ranks), each rank seeds its own RNG stream (:meth:`~medseg.engine.distributed.DistContext.rank_seed`),
a ``DistributedSampler`` is re-seeded per epoch, the training loss is averaged across ranks, rank 0
alone validates, writes checkpoints and ``metrics.csv`` and decides when to stop (its state is
broadcast after every epoch), a budget-bound run uses the ranks' mean elapsed time, and resume
broadcasts rank 0's checkpoint.

Exact resume without pickling RNG objects: at the start of epoch ``e`` every RNG (Python, NumPy,
torch, and the MONAI transforms of the training dataset) is re-seeded from ``(seed, e)``, so the
state at an epoch boundary is a function of the seed and the epoch alone. Resuming from a
checkpoint written at the end of epoch ``e`` continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from medseg.engine.checkpoint import load_checkpoint, save_checkpoint
from medseg.engine.compiled import compile_status, compiled
from medseg.engine.curves import plot_history
from medseg.engine.device import amp_dtype
from medseg.engine.distributed import DistContext, current
from medseg.utils import atomic_write_bytes, atomic_write_records, seed_everything

__all__ = [
    "Trainer",
    "TrainState",
    "default_step",
    "build_optimizer",
    "build_scheduler",
    "budget_lr_factor",
    "ValidationHook",
    "validation_hook",
]

log = logging.getLogger("medseg.engine")

StepFn = Callable[[nn.Module, Any, torch.device], torch.Tensor]
ValFn = Callable[[nn.Module], dict[str, float]]
#: ``(epoch, row) -> stop reason or None``, called after each validation with that epoch's metrics.csv row
ValidationHook = Callable[[int, dict[str, float]], str | None]

_VALIDATION_HOOK: contextvars.ContextVar[ValidationHook | None] = contextvars.ContextVar(
    "medseg_validation_hook", default=None
)


@contextlib.contextmanager
def validation_hook(fn: ValidationHook) -> Iterator[None]:
    """Within the block, every :class:`Trainer` created without ``on_validation`` reports to ``fn``.

    Lets a caller that does not build the trainer (``medseg tune`` around a task's ``train``) see
    the validation figures as they come and stop the training (a non-empty return value becomes the
    stop reason: e.g. an Optuna pruning decision).
    """
    token = _VALIDATION_HOOK.set(fn)
    try:
        yield
    finally:
        _VALIDATION_HOOK.reset(token)


def default_step(loss_fn: Callable) -> StepFn:
    """Step for dict batches ``{"image": (B, C, *S), "label": (B, *, *S)}``: ``loss_fn(model(x), y)``."""

    def step(model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        return loss_fn(model(x), y)

    return step


def build_optimizer(params: Iterable, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 1e-5):
    """AdamW or SGD (momentum 0.99, Nesterov, as nnU-Net uses)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def build_scheduler(optimizer, name: str = "cosine", epochs: int = 100):
    """Per-epoch LR schedule: cosine annealing, nnU-Net's poly (exponent 0.9), or none."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if name == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(1, epochs), power=0.9)
    return None


def budget_lr_factor(name: str, fraction: float) -> float:
    """LR multiplier of schedule ``name`` ("cosine" | "poly" | "none") after ``fraction`` (0..1) of the budget."""
    x = min(max(float(fraction), 0.0), 1.0)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * x))
    if name == "poly":
        return (1.0 - x) ** 0.9
    return 1.0


#: a budget-bound run validates at most this many times (plus once when the budget ends)
BUDGET_VALIDATIONS = 20

#: fewest training steps in an epoch of a budget-bound run (one case gives one-step epochs otherwise)
BUDGET_EPOCH_STEPS = 10

#: epoch limit of a budget-bound run (the time budget or the convergence rule ends it first)
UNBOUNDED_EPOCHS = 1_000_000


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint (plain values only)."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    validations_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str | None = None
    train_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        s = cls()
        for k, v in d.items():
            if hasattr(s, k):
                setattr(s, k, v)
        return s


class Trainer:
    """Train ``model`` with ``step_fn`` over ``train_loader``; validate with ``val_fn``.

    Parameters
    ----------
    model, optimizer, train_loader : the usual; ``train_loader`` yields whatever ``step_fn`` takes.
    step_fn : ``(model, batch, device) -> scalar loss``; see :func:`default_step`.
    val_fn : ``(model) -> {"metric": value}``, called in eval mode under ``torch.no_grad`` is *not*
        imposed (sliding-window inferers manage it); the dict must include ``key_metric``.
    key_metric, mode : the metric that picks the best checkpoint and drives early stopping.
    run_dir : where ``checkpoints/``, ``metrics.csv`` and ``training_curve.png`` go.
    model_meta : plain values saved with every checkpoint (e.g. the model's build parameters).
    on_validation : :data:`ValidationHook` called after each validation (default: the one installed
        by :func:`validation_hook`, if any); a non-empty return value stops training with that reason.
    dist : the rank of a distributed job (default: :func:`medseg.engine.distributed.current`).
    compile : train through ``torch.compile`` (:mod:`medseg.engine.compiled`: eager for good when it fails;
        checkpoints hold the plain network's keys either way).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: Iterable,
        step_fn: StepFn,
        *,
        val_fn: ValFn | None = None,
        key_metric: str = "val_loss",
        mode: str = "min",
        scheduler=None,
        device: torch.device | str = "cpu",
        amp: bool = False,
        grad_clip: float | None = None,
        max_epochs: int = 10,
        max_minutes: float | None = None,
        val_every: int = 1,
        early_stop_patience: int | None = None,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        run_dir: str | Path | None = None,
        model_meta: dict[str, Any] | None = None,
        progress: bool | None = None,
        budget_schedule: str | None = None,
        on_validation: ValidationHook | None = None,
        dist: DistContext | None = None,
        compile: bool = False,
    ):
        self.dist = dist if dist is not None else current()
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.train_loader = train_loader
        self.step_fn = step_fn
        self.val_fn = val_fn
        self.key_metric = key_metric
        if mode not in ("min", "max"):
            raise ValueError("mode must be 'min' or 'max'")
        self.mode = mode
        self.scheduler = scheduler
        self.amp = bool(amp) and self.device.type == "cuda"
        # bf16 where the GPU has it (no scaling needed), else fp16 with loss scaling; CPU: no autocast
        self.amp_dtype = amp_dtype(self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.grad_clip = grad_clip
        self.max_epochs = int(max_epochs)
        self.max_minutes = max_minutes
        self.val_every = max(1, int(val_every))
        self.early_stop_patience = early_stop_patience
        self.steps_per_epoch = steps_per_epoch
        self.seed = int(seed)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.model_meta = model_meta or {}
        self.progress = (sys.stderr.isatty() if progress is None else progress) and self.dist.is_main
        # budget-fitted LR (see the module docstring): the schedule's name, None = per-epoch scheduler
        self.budget_schedule = budget_schedule if max_minutes else None
        if self.budget_schedule is not None:
            self.max_epochs = UNBOUNDED_EPOCHS
            self.scheduler = None
            if self.steps_per_epoch is None:  # at least BUDGET_EPOCH_STEPS steps between epoch overheads
                self.steps_per_epoch = max(_len_or_none(train_loader) or 1, BUDGET_EPOCH_STEPS)
        self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        self.on_validation = on_validation if on_validation is not None else _VALIDATION_HOOK.get()
        self.state = TrainState()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch sizes: cuDNN picks its fastest kernels once
            if _is_2d(self.model):  # Module.to takes memory_format at run time; torch's stubs lack it
                self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # what trains: the DDP wrapper under several ranks (syncs gradients), else the model itself, compiled
        # after the DDP wrap when asked (PyTorch's order); self.model stays the bare module (checkpoints' keys)
        self.compile = bool(compile)
        self.net = compiled(self.dist.wrap(self.model, self.device), self.compile)

    @classmethod
    def from_config(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: Iterable,
        step_fn: StepFn,
        *,
        train: Any,
        seed: int,
        **kwargs: Any,
    ) -> Trainer:
        """A trainer with the loop settings of a config's ``train`` section.

        ``train`` is a task's train section (``epochs``, ``max_minutes``, ``grad_clip``, ``amp``, and
        where the task has them ``val_every``, ``early_stop_patience``, ``steps_per_epoch``);
        ``kwargs`` (``val_fn``, ``key_metric``, ``mode``, ``scheduler``, ``device``, ``run_dir``,
        ``model_meta`` ...) are passed on and win over the section's values.

        With ``train.max_minutes`` set and ``train.epochs`` not set in the config, the budget ends
        training and the LR schedule (``train.scheduler``) is fitted to the budget; with both set,
        whichever comes first ends it and the LR follows the epochs.
        """
        settings: dict[str, Any] = {
            "amp": train.amp,
            "compile": getattr(train, "compile", False),
            "grad_clip": train.grad_clip,
            "max_epochs": train.epochs,
            "max_minutes": train.max_minutes,
            "val_every": getattr(train, "val_every", 1),
            "early_stop_patience": getattr(train, "early_stop_patience", None),
            "steps_per_epoch": getattr(train, "steps_per_epoch", None),
            "seed": seed,
        }
        fields_set: set[str] = set(getattr(train, "model_fields_set", set()))
        if train.max_minutes and "epochs" not in fields_set:
            settings["budget_schedule"] = getattr(train, "scheduler", "cosine")
        return cls(model, optimizer, train_loader, step_fn, **{**settings, **kwargs})

    def compile_status(self) -> dict[str, Any]:
        """run.json's ``compile``: ``{"requested", "used", "fallback_reason"}``."""
        return compile_status(self.net, self.compile)

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint_path(self, which: str) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "checkpoints" / f"{which}.pt"

    def save(self, which: str) -> Path | None:
        if self.run_dir is None or not self.dist.is_main:  # rank 0 alone writes
            return None
        return save_checkpoint(
            self.checkpoint_path(which),
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            state=self.state.to_dict(),
            meta={**self.model_meta, "seed": self.seed},
        )

    def resume(self, path: str | Path | None = None) -> TrainState:
        """Restore model, optimiser, scheduler and state from ``last.pt`` (or ``path``)."""
        path = Path(path) if path is not None else self.checkpoint_path("last")
        # distributed: rank 0 reads its checkpoint and every rank gets the same one
        ckpt = self.dist.broadcast(load_checkpoint(path, map_location=self.device) if self.dist.is_main else {})
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
            # training extended past the planned epochs: stretch the schedule to the new length
            for attr in ("T_max", "total_iters"):
                if getattr(self.scheduler, attr, None) is not None and getattr(self.scheduler, attr) < self.max_epochs:
                    setattr(self.scheduler, attr, self.max_epochs)
                    # torch's schedulers update the LR recursively (a cosine that reached 0 stays 0):
                    # restart the recursion from the closed-form LR of the stretched schedule
                    if hasattr(self.scheduler, "_get_closed_form_lr"):
                        for group, lr in zip(self.optimizer.param_groups, self.scheduler._get_closed_form_lr()):
                            group["lr"] = lr
        if self.scaler.is_enabled() and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState.from_dict(ckpt["state"])
        self.state.stop_reason = None
        log.info("resumed from %s at epoch %d", path, self.state.epoch)
        return self.state

    # -- loop --------------------------------------------------------------------------
    def _seed_epoch(self, epoch: int) -> None:
        s = self.dist.rank_seed(self.seed * 100_003 + epoch)  # rank 0 (and a single process): seed * 100003 + e
        seed_everything(s)
        set_epoch = getattr(getattr(self.train_loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):  # DistributedSampler: a new shuffle per epoch, the same on every rank
            set_epoch(epoch)
        ds = getattr(self.train_loader, "dataset", None)
        tf = getattr(ds, "transform", None)
        if tf is not None and hasattr(tf, "set_random_state"):
            tf.set_random_state(seed=s % (2**32))

    def _better(self, value: float) -> bool:
        best = self.state.best_metric
        if best is None or math.isnan(best):
            return not math.isnan(value)
        return value > best if self.mode == "max" else value < best

    def _spent_seconds(self) -> float:
        """Training seconds spent so far, this ``fit`` call included."""
        t_fit = getattr(self, "_t_fit", None)
        return self._spent_before + (time.perf_counter() - t_fit) if t_fit is not None else self.state.train_seconds

    def _budget_spent(self, spent: float) -> bool:
        budget_s = float(self.max_minutes or 0) * 60
        return self.budget_schedule is not None and bool(self.max_minutes) and spent >= budget_s

    def _budget_lr(self, spent: float) -> None:
        """Set the LR from the share of the time budget spent (budget-fitted schedule only)."""
        if self.budget_schedule is None or not self.max_minutes:
            return
        f = budget_lr_factor(self.budget_schedule, spent / (self.max_minutes * 60))
        for g, lr0 in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr0 * f

    def _validation_due(self) -> bool:
        """Budget-bound runs validate at most every 1/:data:`BUDGET_VALIDATIONS` of the budget, and only
        after training for 4 times as long as the last validation took (epochs of a few cases are short;
        validating after each would eat the budget); other runs every ``val_every`` epochs."""
        if self.budget_schedule is None or not self.max_minutes:
            return True
        last = getattr(self, "_last_val_spent", None)
        if last is None:
            return True
        gap = max(float(self.max_minutes) * 60 / BUDGET_VALIDATIONS, 4.0 * getattr(self, "_last_val_cost", 0.0))
        return self._spent_seconds() - last >= gap

    def describe_schedule(self) -> str:
        """One line saying what ends training and how the LR moves (logged when ``fit`` starts)."""
        if self.budget_schedule is not None:
            return (
                f"training for {self.max_minutes:g} min (time budget; epochs are not the limit"
                + (
                    f", or {self.early_stop_patience} validations without improvement"
                    if self.early_stop_patience
                    else ""
                )
                + f"); LR {self.budget_schedule} over the budget"
            )
        budget = f", at most {self.max_minutes:g} min" if self.max_minutes else " (no time budget set)"
        return f"training {self.max_epochs} epochs{budget}; the expected duration is logged after the first epoch"

    def train_epoch(self) -> float:
        """One pass over the training loader (or ``steps_per_epoch`` batches); returns mean loss."""
        self.model.train()
        total, n = 0.0, 0
        limit = self.steps_per_epoch
        batches: Iterable = self.train_loader
        if self.budget_schedule is not None:  # short data sets: an epoch goes round the loader until `limit`
            batches = itertools.chain.from_iterable(itertools.repeat(self.train_loader))
        bar = None
        if self.progress:
            of = "" if self.budget_schedule is not None else f"/{self.max_epochs}"
            bar = tqdm(total=limit or _len_or_none(batches), desc=f"epoch {self.state.epoch + 1}{of}", leave=False)
        for i, batch in enumerate(batches):
            if limit is not None and i >= limit:
                break
            if self.budget_schedule is not None:
                # the ranks' mean time: the same LR and the same stop step on every rank
                spent = self.dist.mean({"s": self._spent_seconds()})["s"]
                if i > 0 and self._budget_spent(spent):  # a budget-bound run stops mid-epoch when the time is up
                    break
                self._budget_lr(spent)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                loss = self.step_fn(self.net, batch, self.device)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {self.state.epoch + 1}, step {i}")
            self.scaler.scale(loss).backward()
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += float(loss.detach())
            n += 1
            self.state.global_step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / n:.4f}")
        if bar is not None:
            bar.close()
        return self.dist.mean({"loss": total / max(n, 1)})["loss"]  # metrics reduced across ranks

    def fit(self, resume: bool | str | Path = False) -> TrainState:
        """Train until ``max_epochs``, the time budget, or early stopping. Returns the final state."""
        if resume:
            self.resume(None if resume is True else resume)
        t_start = time.perf_counter()
        budget_s = self.max_minutes * 60 if self.max_minutes else None
        spent_before = self.state.train_seconds
        self._t_fit, self._spent_before = t_start, spent_before
        log.info(self.describe_schedule())
        overall = self._overall_bar(budget_s, spent_before)
        while self.state.epoch < self.max_epochs:
            epoch = self.state.epoch
            self._seed_epoch(epoch)
            t0 = time.perf_counter()
            train_loss = self.train_epoch()
            row: dict[str, float] = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "lr": float(self.optimizer.param_groups[0]["lr"]),
            }
            if self.scheduler is not None:
                self.scheduler.step()
            row["epoch_seconds"] = time.perf_counter() - t0
            self.state.epoch = epoch + 1
            validated = False
            # the last epoch before the time budget runs out is validated too (so 'best' exists)
            out_of_time = budget_s is not None and (time.perf_counter() - t_start) >= budget_s
            if (
                self.val_fn is not None
                and self.dist.is_main
                and (  # rank 0 validates (its state is broadcast)
                    (self.state.epoch % self.val_every == 0 and self._validation_due())
                    or self.state.epoch == self.max_epochs
                    or out_of_time
                )
            ):
                t_val = time.perf_counter()
                self.model.eval()
                metrics = self.val_fn(self.model)
                self.model.train()
                self._last_val_cost = time.perf_counter() - t_val
                self._last_val_spent = self._spent_seconds()
                row.update({k: float(v) for k, v in metrics.items()})
                validated = True
            elif self.val_fn is None:
                metrics = {"train_loss": train_loss}
                validated = True
            self.state.train_seconds = spent_before + (time.perf_counter() - t_start)
            row["elapsed_seconds"] = self.state.train_seconds
            self._report_progress(overall, row, budget_s)
            self.state.history.append(row)
            if validated:
                value = row.get(self.key_metric, train_loss)
                if self._better(value):
                    self.state.best_metric = float(value)
                    self.state.best_epoch = self.state.epoch
                    self.state.validations_without_improvement = 0
                    self.save("best")
                else:
                    self.state.validations_without_improvement += 1
            log.info(
                "epoch %d%s %s",
                self.state.epoch,
                "" if self.budget_schedule is not None else f"/{self.max_epochs}",
                " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
            )
            if (
                self.early_stop_patience is not None
                and self.state.validations_without_improvement >= self.early_stop_patience
            ):
                self.state.stop_reason = (
                    f"early stop: no {self.key_metric} improvement in {self.early_stop_patience} validations"
                )
            elif budget_s is not None and (time.perf_counter() - t_start) >= budget_s:
                self.state.stop_reason = f"time budget of {self.max_minutes} min reached"
            if validated and self.on_validation is not None:
                self.state.stop_reason = self.on_validation(self.state.epoch, dict(row)) or self.state.stop_reason
            if self.dist.enabled:  # rank 0's history, best metric and stop decision bind every rank
                self.state = TrainState.from_dict(self.dist.broadcast(self.state.to_dict()))
            if validated or self.budget_schedule is None:  # budget-bound: at validations only (cheap short epochs)
                self.save("last")
                self.write_metrics()
            if self.state.stop_reason:
                log.info(self.state.stop_reason)
                break
        if overall is not None:
            overall.close()
        if self.state.stop_reason is None:
            self.state.stop_reason = f"completed {self.state.epoch} epochs"
        self.save("last")
        self.write_metrics(plot=True)
        return self.state

    # -- progress ----------------------------------------------------------------------
    def _overall_bar(self, budget_s: float | None, spent: float):
        """The epoch-level progress bar: seconds of the budget, or epochs (tqdm's ETA); None when quiet."""
        if not self.progress:
            return None
        if self.budget_schedule is not None and budget_s is not None:
            return tqdm(total=round(budget_s), initial=round(spent), unit="s", desc="training (time budget)")
        return tqdm(total=self.max_epochs, initial=self.state.epoch, unit="epoch", desc="training")

    def _report_progress(self, bar, row: dict[str, float], budget_s: float | None) -> None:
        """Advance the overall bar; after the first epoch of an epoch-bound run, log its expected duration."""
        if bar is not None:
            if self.budget_schedule is not None:
                bar.update(max(0, min(round(row["elapsed_seconds"]), bar.total) - bar.n))
            else:
                bar.update(1)
            metric = row.get(self.key_metric)
            if metric is not None:
                bar.set_postfix({self.key_metric: f"{metric:.4g}"})
        if self.budget_schedule is None and len(self.state.history) == 1 and self.max_epochs > 1:
            total = row["epoch_seconds"] * self.max_epochs
            capped = f" (capped by the {self.max_minutes:g}-min budget)" if budget_s and total > budget_s else ""
            log.info(
                "epoch 1 took %.1f s: %d epochs take about %.1f min on this machine%s",
                row["epoch_seconds"],
                self.max_epochs,
                total / 60,
                capped,
            )

    # -- outputs -----------------------------------------------------------------------
    def write_metrics(self, plot: bool = False) -> None:
        """``metrics.csv`` (one row per epoch) and, with ``plot``, ``training_curve.png``."""
        if self.run_dir is None or not self.state.history or not self.dist.is_main:
            return
        atomic_write_records(self.run_dir / "metrics.csv", self.state.history)
        if plot:
            atomic_write_bytes(self.run_dir / "training_curve.png", plot_history(self.state.history))


def _len_or_none(x) -> int | None:
    try:
        return len(x)
    except TypeError:
        return None


def _is_2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
