"""Running a study on Optuna: trials as ordinary runs, intermediate figures, pruning, shared storage.

One worker = one :func:`run_worker` call (one ``medseg tune`` process). Workers on one machine or
many share a study through its storage (an SQLite file by default; a PostgreSQL / MySQL URL on a
cluster): Optuna hands each trial number out once, so no trial runs twice. Each trial is a run
folder ``<tune folder>/trials/trial_<number>`` trained by the task's own ``train``; the
validation figures the trainer computes are reported to Optuna after every validation (through
:func:`medseg.engine.trainer.validation_hook`) and the pruner may stop the trial there.

A worker stops when the study holds ``n_trials`` finished (complete or pruned) trials, waiting for
trials that other workers are running. A worker that dies leaves a trial whose heartbeat stops:
after ``2 x tune.heartbeat_seconds`` any worker fails it and runs it again (same parameters, a new
trial folder), so an interrupted study resumes by simply starting a worker again.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.config import PipelineConfig, TuneSection
from medseg.engine.trainer import validation_hook
from medseg.errors import ConfigError, MissingDependencyError
from medseg.runs import Run, open_run
from medseg.tasks.crossval import train_folds
from medseg.tasks.datalists import derived_config
from medseg.tasks.tune.space import objective_metric, suggest

if TYPE_CHECKING:  # Optuna is imported only when a study runs
    import optuna

__all__ = ["import_optuna", "sqlite_url", "open_study", "make_sampler", "run_worker", "TrialRunner", "count_trials"]

log = logging.getLogger("medseg.tasks.tune")

#: the most failed (diverged) trials a worker accepts before it stops the study
MAX_FAILED = 20


def import_optuna() -> Any:
    """The ``optuna`` module, or MissingDependencyError saying how to install it."""
    try:
        import optuna  # optional dependency (extra 'tune'): only `medseg tune` needs it
    except ImportError:
        raise MissingDependencyError(
            "`medseg tune` needs Optuna: pip install 'medseg[tune]' (or pip install optuna)"
        ) from None
    return optuna


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of an SQLite file (absolute path)."""
    return f"sqlite:///{Path(path).resolve()}"


def open_study(url: str, name: str, tune: TuneSection, *, metric_direction: str, seed: int) -> optuna.Study:
    """Create or join the study ``name`` in the storage at ``url``.

    The storage records a heartbeat of every running trial; a trial silent for twice
    ``tune.heartbeat_seconds`` (its worker was killed) is failed and queued again once
    (Optuna's ``RetryHeartbeatStaleTrialCallback``).
    """
    optuna = import_optuna()
    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9
            retry = {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
        else:
            retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=tune.heartbeat_seconds,
            grace_period=2 * tune.heartbeat_seconds,
            **retry,
        )
    sampler = make_sampler(tune, seed)
    pruner: Any
    if tune.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs)
    elif tune.pruner == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=max(1, tune.warmup_epochs))
    else:
        pruner = optuna.pruners.NopPruner()
    try:
        return optuna.create_study(
            storage=storage,
            study_name=name,
            sampler=sampler,
            pruner=pruner,
            direction=metric_direction,
            load_if_exists=True,
        )
    except ValueError as e:  # e.g. an existing study with the other direction
        raise ConfigError(f"cannot join study {name!r}: {e}") from None


def make_sampler(tune: TuneSection, seed: int) -> optuna.samplers.BaseSampler:
    """TPE (``tune.startup_trials`` random trials first) or random search, seeded."""
    optuna = import_optuna()
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup_trials)


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Trials of the study by state name (``COMPLETE``, ``PRUNED``, ``RUNNING``, ``WAITING``, ``FAIL``)."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


@dataclass
class TrialRunner:
    """The objective of a study: one trial = one training run (or one cross-validation) of the config.

    Attributes
    ----------
    cfg : the user's config (with its ``tune`` section).
    trials_dir : where the trial run folders go.
    datalist : the data every trial reads (synthetic data generated once), or None: the config's own.
    """

    cfg: PipelineConfig
    trials_dir: Path
    datalist: Path | None = None

    @property
    def tune(self) -> TuneSection:
        t = getattr(self.cfg, "tune", None)
        if t is None:
            raise ConfigError("the config has no tune: section (the search space of `medseg tune`)")
        return t

    def trial_config(self, name: str, params: dict[str, Any]) -> PipelineConfig:
        """The config of a trial: the user's config with the trial's parameters."""
        return derived_config(
            self.cfg,
            name=name,
            output_dir=self.trials_dir,
            datalist=self.datalist,
            updates=params,
            keep_folds=self.tune.objective == "cv_mean",
        )

    def __call__(self, trial: optuna.Trial) -> float:
        optuna = import_optuna()
        params = suggest(trial, self.tune.space)
        name = f"trial_{trial.number:04d}"
        run_dir = self.trials_dir / name
        tcfg = self.trial_config(name, params)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        metric = objective_metric(self.cfg, self.tune)
        epochs_per_run = int(tcfg.train.epochs)  # type: ignore[attr-defined]
        state: dict[str, Any] = {"offset": 0, "rows": {}, "pruned": None, "epochs": 0}

        def report(epoch: int, row: dict[str, float]) -> str | None:
            if metric not in row:
                raise ConfigError(
                    f"tune.metric {metric!r} is not a validation figure of this {self.cfg.task} run; "
                    f"figures: {', '.join(k for k in row if k.startswith('val_'))}"
                )
            state["rows"][epoch] = row
            step = state["offset"] + epoch
            trial.report(float(row[metric]), step)
            if trial.should_prune():
                state["pruned"] = f"pruned by Optuna at epoch {epoch}"
                return str(state["pruned"])
            return None

        fold_values: list[float] = []

        def fold_done(k: int, summary: dict[str, Any]) -> bool:
            fold_values.append(_value_at_best(state["rows"], summary, metric))
            state["epochs"] += int(summary.get("epochs") or 0)
            state["offset"] += epochs_per_run
            state["rows"] = {}
            if state["pruned"]:
                state["pruned"] = f"{state['pruned']} of fold {k}"
            return bool(state["pruned"])  # a pruned trial trains no further fold

        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in params.items()))
        try:
            with validation_hook(report):
                if self.tune.objective == "cv_mean":
                    k_total = int(tcfg.data.folds)  # type: ignore[attr-defined]
                    train_folds(tcfg, run_dir, list(range(k_total)), force=True, command="tune", on_fold=fold_done)
                    if state["pruned"]:
                        Run.open(run_dir).finish("pruned", stop_reason=state["pruned"])
                    value = sum(fold_values) / len(fold_values)
                else:
                    train = _task_train(tcfg.task)
                    with open_run(tcfg, out=run_dir, force=True, command="tune") as run:
                        summary = train(tcfg, run)
                        state["epochs"] += int(summary.get("epochs") or 0)
                        if state["pruned"]:
                            run.finish("pruned", stop_reason=state["pruned"])
                    value = _value_at_best(state["rows"], summary, metric)
        finally:
            trial.set_user_attr("epochs", int(state["epochs"]))
        if state["pruned"]:
            raise optuna.TrialPruned(state["pruned"])
        log.info("trial %d: %s = %.4f", trial.number, metric, value)
        return value


def _task_train(task: str) -> Callable[..., dict[str, Any]]:
    fn: Callable[..., dict[str, Any]] = importlib.import_module(f"medseg.tasks.{task}").train
    return fn


def _value_at_best(rows: dict[int, dict[str, float]], summary: dict[str, Any], metric: str) -> float:
    """The metric of the epoch whose checkpoint the run keeps (else its last validation)."""
    if not rows:
        raise ConfigError("the trial validated nothing: tuning needs a validation set (data.val_fraction > 0)")
    best = summary.get("best_epoch")
    row = rows.get(int(best)) if best is not None else None
    return float((row or rows[max(rows)])[metric])


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    optuna = import_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def run_worker(
    study: optuna.Study,
    objective: TrialRunner,
    n_trials: int,
    *,
    poll_seconds: float | None = None,
    after_trial: Callable[[optuna.Study], None] | None = None,
) -> dict[str, int]:
    """Run trials of ``study`` until it holds ``n_trials`` finished ones; returns the final counts.

    Before each trial the worker fails stale trials of dead workers (they are queued again and run
    first). When the study is full but other workers still run trials, it waits for them (polling
    every ``poll_seconds``, default half the heartbeat), so the outputs written afterwards are complete.
    Trials that diverge (non-finite loss) are recorded as failed; after :data:`MAX_FAILED` the worker stops.
    """
    optuna = import_optuna()
    hb = objective.tune.heartbeat_seconds
    poll = poll_seconds if poll_seconds is not None else max(0.5, hb / 2)
    while True:
        with _quiet_experimental():
            optuna.storages.fail_stale_trials(study)
        c = count_trials(study)
        finished = c.get("COMPLETE", 0) + c.get("PRUNED", 0)
        if c.get("FAIL", 0) - c.get("WAITING", 0) >= MAX_FAILED:
            log.error("%d trials failed: the study stops (see the failed trials' run.log)", c["FAIL"])
            return c
        if finished >= n_trials:
            return c
        if not c.get("WAITING") and finished + c.get("RUNNING", 0) >= n_trials:
            time.sleep(poll)  # the study is full: wait for the trials other workers run
            continue
        with _quiet_experimental():
            study.optimize(objective, n_trials=1, catch=(FloatingPointError,), gc_after_trial=True)
        if after_trial is not None:
            after_trial(study)
