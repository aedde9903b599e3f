"""``medseg train CONFIG --fold k|all``: train the folds of a cross-validation into one parent run.

Layout of the parent run folder (``<output_dir>/<name>``, or ``--out``)::

    config.yaml, run.json, run.log   the config (with data.folds) and provenance
    folds.json, splits/fold_<k>.json the split (see :mod:`.split`); plan.json (segmentation)
    data/                            synthetic data, generated once for every fold
    fold_0/ ... fold_<K-1>/          ordinary run folders (config.yaml reads splits/fold_<k>.json)
    cv_summary.csv, cv_summary.json  per fold and mean +- sd (see :mod:`.summary`)
    classifier.json / detection.json what `classify` / `detect` need to use the fold ensemble

Folds may be trained one at a time, in parallel on several machines sharing the folder
(``--fold 0``, ``--fold 1`` ...), or all at once; the summary is rewritten after each fold.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.config import PipelineConfig
from medseg.engine.checkpoint import FOLDS_FILE
from medseg.errors import ConfigError, RunFolderExistsError
from medseg.runs import Run, open_run
from medseg.tasks.crossval.split import fold_datalist, prepare_split, read_split
from medseg.tasks.crossval.summary import write_cv_summary
from medseg.tasks.datalists import SUPPORTED_TASKS, derived_config

__all__ = ["train_folds", "fold_config", "parse_fold"]

log = logging.getLogger("medseg.tasks.crossval")


def parse_fold(value: str | int | None, k: int | None) -> list[int] | None:
    """``--fold`` -> the fold indices to train (``all``: every fold), None without ``data.folds``.

    Raises ConfigError for ``--fold`` without ``data.folds`` or a fold outside ``0..K-1``.
    """
    if k is None:
        if value is not None:
            raise ConfigError("--fold needs cross-validation: set data.folds: K in the config (or --set data.folds=5)")
        return None
    if value is None or str(value) == "all":
        return list(range(k))
    try:
        f = int(value)
    except ValueError:
        raise ConfigError(f"--fold must be a fold index 0..{k - 1} or 'all', got {value!r}") from None
    if not 0 <= f < k:
        raise ConfigError(f"--fold {f} is outside 0..{k - 1} (data.folds: {k})")
    return [f]


def fold_config(cfg: PipelineConfig, parent: Path, k: int, split: dict[str, Any]) -> PipelineConfig:
    """The config of fold ``k``: the parent's, reading ``splits/fold_<k>.json`` with the shared values."""
    return derived_config(
        cfg,
        name=f"fold_{k}",
        output_dir=parent,
        datalist=fold_datalist(parent, k),
        updates=split.get("fold_updates") or {},
    )


def _open_parent(cfg: PipelineConfig, parent: Path, all_folds: bool, resume: bool, force: bool, command: str) -> Run:
    exists = parent.is_dir() and any(parent.iterdir())
    if exists and (parent / FOLDS_FILE).is_file() and (resume or not all_folds):
        run = Run.open(parent)
        if int(read_split(parent)["folds"]) != cfg.data.folds:  # type: ignore[attr-defined]
            raise ConfigError(
                f"the parent run has {read_split(parent)['folds']} folds, the config data.folds "
                f"{cfg.data.folds}: use another run name or --force to start over",  # type: ignore[attr-defined]
                parent,
            )
        run.set(status="running")
        return run
    if exists and not force and not all_folds:
        raise RunFolderExistsError("run folder exists and is not a cross-validation run; choose another name", parent)
    return Run.create(parent, cfg, force=force, command=command)


def train_folds(
    cfg: PipelineConfig,
    parent: str | Path,
    folds: list[int],
    *,
    resume: bool = False,
    force: bool = False,
    command: str = "train",
    on_fold: Callable[[int, dict[str, Any]], bool | None] | None = None,
) -> dict[str, Any]:
    """Train the given folds of ``cfg`` (``data.folds`` = K) into the parent run folder ``parent``.

    Parameters
    ----------
    cfg : validated config with ``data.folds``.
    parent : the parent run folder; created with the split on first use, reused afterwards.
    folds : fold indices to train now (:func:`parse_fold`).
    resume : continue unfinished folds from their ``last.pt``; finished folds are skipped.
    force : move an existing fold folder (all folds: the whole parent) aside and start again.
    command : recorded in run.json.
    on_fold : called after each fold with ``(k, the task's training summary)``; returning True stops
        before the next fold (e.g. a pruned tuning trial); the summary covers the folds done.

    Returns
    -------
    the cross-validation summary (:func:`~medseg.tasks.crossval.summary.write_cv_summary`) with
    ``run_dir``.

    Raises
    ------
    RunFolderExistsError: a fold folder (or, for all folds, the parent) exists without resume / force.
    """
    if cfg.task not in SUPPORTED_TASKS:  # before anything is written
        raise ConfigError(f"data.folds: cross-validation trains {', '.join(SUPPORTED_TASKS)} runs, not {cfg.task!r}")
    parent = Path(parent)
    k_total = int(cfg.data.folds)  # type: ignore[attr-defined]
    all_folds = len(folds) == k_total
    train = importlib.import_module(f"medseg.tasks.{cfg.task}").train
    with _open_parent(cfg, parent, all_folds, resume, force, command) as run:
        split = read_split(parent) if (parent / FOLDS_FILE).is_file() else None
        if split is None:
            with run.stage("split"):
                split = prepare_split(cfg, parent)
        for k in folds:
            fold_dir = parent / f"fold_{k}"
            done = _finished(fold_dir)
            if resume and done:
                log.info("fold %d already finished: skipped", k)
                continue
            fcfg = fold_config(cfg, parent, k, split)
            fold_resume = resume and (fold_dir / "checkpoints" / "last.pt").is_file()
            if fold_dir.exists() and any(fold_dir.iterdir()) and not (fold_resume or force):
                raise RunFolderExistsError(
                    f"fold {k} is already trained here: use --resume to continue unfinished folds, or --force "
                    "to train it again (the old folder is moved aside)",
                    fold_dir,
                )
            log.info("training fold %d of %d", k + 1, k_total)
            with run.stage(f"fold_{k}"):
                with open_run(fcfg, out=fold_dir, force=force, resume=fold_resume, command=command) as frun:
                    frun.set(fold=k, folds=k_total, parent=str(parent))
                    summary = train(fcfg, frun, resume=fold_resume)
            if on_fold is not None and on_fold(k, summary):
                log.info("stopped after fold %d", k)
                break
        with run.stage("summary"):
            out = write_cv_summary(cfg, parent)
        run.set(folds_done=out["folds_done"], folds=k_total)
        if out.get("review"):  # the needs-review threshold the predict commands read (load_segmenter)
            run.set(review=out["review"])
    return {**out, "run_dir": str(parent)}


def _finished(fold_dir: Path) -> bool:
    try:
        return json.loads((fold_dir / "run.json").read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False
