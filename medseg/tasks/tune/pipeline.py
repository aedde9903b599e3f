"""``medseg tune CONFIG --trials N``: set up (or join) a study in a tune folder and work on it.

The tune folder (``--out``, default ``<output_dir>/<name>-tune``)::

    config.yaml, run.json, run.log   the config with its tune: section; provenance
    tune.json                        study name, storage (password hidden), metric, direction
    study.db                         the SQLite storage (unless --storage names another)
    datalist.json, data/             synthetic data, generated once for every trial
    trials/trial_<number>/           one ordinary run folder per trial
    trials.csv, best_config.yaml, optimization_history.png, param_importances.png, report.html

Running the command again on the same folder joins the study: it resumes an interrupted study, or
adds a worker to a running one (several processes, or machines sharing the folder and storage).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg.config import PipelineConfig, TuneSection, config_hash
from medseg.errors import ConfigError
from medseg.runs import Run
from medseg.tasks.datalists import SUPPORTED_TASKS, task_data, write_datalist
from medseg.tasks.tune.outputs import trials_table, write_tune_outputs
from medseg.tasks.tune.space import check_space, direction, objective_metric
from medseg.tasks.tune.study import TrialRunner, import_optuna, make_sampler, open_study, run_worker, sqlite_url
from medseg.utils import atomic_write_records, atomic_write_text

__all__ = ["tune", "tune_folder", "redact_url"]

log = logging.getLogger("medseg.tasks.tune")


def tune_folder(cfg: PipelineConfig, out: str | Path | None = None) -> Path:
    """The tune folder: ``out``, else ``<output_dir>/<name>-tune``."""
    return Path(out) if out is not None else Path(cfg.output_dir) / f"{cfg.name}-tune"


def redact_url(url: str) -> str:
    """A storage URL without its password (for files and logs)."""
    from sqlalchemy.engine import make_url  # installed with Optuna

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands: keep only the scheme
        return url.split(":", 1)[0] + "://***"


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` (workers starting together set up the folder once)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        try:
            import fcntl  # POSIX; elsewhere workers should be started one after the other
        except ImportError:  # pragma: no cover
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def _check(cfg: PipelineConfig) -> TuneSection:
    if cfg.task not in SUPPORTED_TASKS:
        raise ConfigError(f"`medseg tune` works on {', '.join(SUPPORTED_TASKS)} configs, not task {cfg.task!r}")
    t: TuneSection | None = cfg.tune  # type: ignore[attr-defined]  # every supported task's config has one
    if t is None:
        raise ConfigError(
            "the config has no tune: section; add one naming the search space, e.g.\n"
            "tune:\n  space:\n    train.lr: {log_uniform: [1.0e-4, 1.0e-1]}"
        )
    if t.objective == "cv_mean" and getattr(cfg.data, "folds", None) is None:  # type: ignore[attr-defined]
        raise ConfigError("tune.objective: cv_mean needs data.folds: K (the folds each trial trains)")
    check_space(cfg, t.space)
    return t


def _setup(cfg: PipelineConfig, folder: Path, storage: str | None, study: str | None, force: bool) -> tuple[Run, dict]:
    """Create the tune folder (first worker) or open it (later workers); returns the run and tune.json."""
    with _exclusive(_lock_path(folder)):
        info_path = folder / "tune.json"
        if info_path.is_file() and not force:
            info: dict[str, Any] = json.loads(info_path.read_text())
            if info.get("config_hash") != config_hash(cfg):
                log.warning("this worker's config differs from the one the study started with (see config.yaml)")
            run = Run.open(folder)
            run.set(status="running")
            return run, info
        run = Run.create(folder, cfg, force=force, command="tune")
        datalist = None
        if getattr(cfg.data, "synthetic", False):  # type: ignore[attr-defined]
            with run.stage("data"):
                d = task_data(cfg, folder / "data")
                datalist = write_datalist(folder / "datalist.json", d.training, d.validation, d.test, d.extra)
        info = {
            "study": study or cfg.name,
            "storage": storage,
            "default_storage": storage is None,
            "datalist": str(datalist) if datalist else None,
            "config_hash": config_hash(cfg),
        }
        shown = {**info, "storage": redact_url(storage) if storage else sqlite_url(folder / "study.db")}
        atomic_write_text(info_path, json.dumps(shown, indent=2) + "\n")
        return run, {**info, "storage": storage}


def tune(
    cfg: PipelineConfig,
    n_trials: int,
    *,
    out: str | Path | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    force: bool = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Search ``cfg.tune.space`` with Optuna until the study holds ``n_trials`` finished trials.

    Parameters
    ----------
    cfg : a segmentation, detection or classification config with a ``tune:`` section.
    n_trials : finished (complete or pruned) trials the study should hold, all workers together.
    out : the tune folder (default ``<output_dir>/<name>-tune``); joined when it exists.
    storage : an Optuna RDB URL (``postgresql://user:pw@host/db``, ``mysql+pymysql://...``,
        ``sqlite:///path``); default: ``sqlite:///<tune folder>/study.db``.
    study_name : default: the name the folder's study was created with, else ``cfg.name``.
    force : move an existing tune folder aside and start a new study (with the default storage).
    plots : draw the optimisation history and parameter importances.

    Returns
    -------
    summary: study, trial counts per state, best trial / value / parameters, output paths.

    Raises
    ------
    ConfigError (no tune section, a space key that is not a valid config value, cv_mean without
    data.folds), MissingDependencyError (Optuna not installed).
    """
    if n_trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {n_trials}")
    t = _check(cfg)
    import_optuna()  # fail at once, with the install hint, when Optuna is missing
    folder = tune_folder(cfg, out)
    run, info = _setup(cfg, folder, storage, study_name, force)
    with run:
        url = storage or info.get("storage") or sqlite_url(folder / "study.db")
        if "***" in url:
            raise ConfigError("the study's storage URL holds a password: pass it again with --storage")
        name = study_name or info.get("study") or cfg.name
        metric = objective_metric(cfg, t)
        with _exclusive(_lock_path(folder)):  # workers starting together: one creates the storage's tables
            study = open_study(url, name, t, metric_direction=direction(t, metric), seed=cfg.seed)
        # each worker samples with its own seed (the seed plus the trials already in the study), so two
        # workers starting together do not draw the same values; one uninterrupted worker is reproducible
        study.sampler = make_sampler(t, cfg.seed + len(study.get_trials(deepcopy=False)))
        runner = TrialRunner(cfg, folder / "trials", Path(info["datalist"]) if info.get("datalist") else None)
        log.info("study %r in %s: %d trials wanted", name, redact_url(url), n_trials)

        def after_trial(s: Any) -> None:
            atomic_write_records(folder / "trials.csv", trials_table(s, t))

        with run.stage("trials"):
            counts = run_worker(study, runner, n_trials, after_trial=after_trial)
        with run.stage("outputs"):
            summary = write_tune_outputs(study, cfg, t, folder, metric, plots=plots)
        run.set(study=name, trials=counts, best_value=summary.get("best_value"), pid=os.getpid())
    return {**summary, "tune_dir": str(folder), "storage": redact_url(url)}
