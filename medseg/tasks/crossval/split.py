"""The split of a cross-validation parent run: ``folds.json``, one datalist per fold, the shared plan.

Written once, when the parent run is created; every later ``medseg train --fold k`` (on this or
another machine sharing the folder) reads it back, so the folds never change under a study.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from medseg.config import ClassificationConfig, PipelineConfig, SegmentationConfig
from medseg.data.folds import GROUP_KEYS, assign_folds, group_of
from medseg.engine.checkpoint import FOLDS_FILE
from medseg.errors import ConfigError, InputError
from medseg.tasks.datalists import TaskData, strata, task_data, write_datalist
from medseg.tasks.segmentation.train import plan_run
from medseg.utils import atomic_write_text

__all__ = ["prepare_split", "read_split", "fold_datalist"]

log = logging.getLogger("medseg.tasks.crossval")


def fold_datalist(parent: Path, k: int) -> Path:
    """The datalist of fold ``k``: training = the other folds, validation = fold ``k``, test = the test list."""
    return parent / "splits" / f"fold_{k}.json"


def read_split(parent: str | Path) -> dict[str, Any]:
    """The content of a parent run's ``folds.json``."""
    path = Path(parent) / FOLDS_FILE
    try:
        split: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"unreadable cross-validation split ({type(e).__name__}: {e})", path) from None
    return split


def _shared_plan(cfg: SegmentationConfig, parent: Path, pool: list[dict[str, Any]]) -> dict[str, Any]:
    """One plan for every fold (as nnU-Net plans once per data set), as ``plan.*`` config values.

    Folds planned separately could differ in spacing, patch or CT normalisation, and their outputs
    could not be averaged by the fold ensemble.
    """
    plan = plan_run(cfg, parent, [{k: e[k] for k in ("image", "label")} for e in pool], resume=False)
    fields = type(cfg.plan).model_fields
    wanted = {
        "target_spacing": plan.get("target_spacing"),
        "patch_size": plan.get("patch_size"),
        "clip": (plan.get("norm") or {}).get("clip"),
        "norm_mean": (plan.get("norm") or {}).get("mean"),
        "norm_std": (plan.get("norm") or {}).get("std"),
    }
    return {f"plan.{k}": v for k, v in wanted.items() if v is not None and k in fields}


def prepare_split(cfg: PipelineConfig, parent: Path) -> dict[str, Any]:
    """Draw the folds of ``cfg`` (``data.folds``) and write them into the parent run folder.

    Writes ``folds.json`` (per case its fold and stratum; how the split was made; the config values
    every fold shares), ``splits/fold_<k>.json`` (datalists) and, for segmentation, ``plan.json``.
    Synthetic data is generated once into ``parent/data``. Patient / group values are used to keep
    a patient's cases together but are never written.

    Raises
    ------
    ConfigError: fewer cases (patients, or cases of a class) than folds; unsupported task.
    """
    k = int(cfg.data.folds)  # type: ignore[attr-defined]
    data: TaskData = task_data(cfg, parent / "data")
    pool = data.pool
    if isinstance(cfg, SegmentationConfig):
        pool = [e for e in pool if e.get("label")]
        if not pool:
            raise InputError("the datalist has no labelled training cases", data.source)
    keys = [data.case_key(e) for e in pool]
    group_key = next((g for g in GROUP_KEYS if any(e.get(g) not in (None, "") for e in pool)), None)
    groups = [group_of(e, c) for e, c in zip(pool, keys)]
    stratum, stratified_by = strata(cfg, pool, data.extra)
    if isinstance(cfg, ClassificationConfig):
        small = {c: n for c, n in Counter(stratum).items() if n < k}
        if small:
            c, n = next(iter(small.items()))
            raise ConfigError(
                f"data.folds = {k} but class {c} has only {n} case(s): every fold's validation needs each "
                f"class; use at most {n} folds",
                data.source,
            )
    folds = assign_folds(keys, k, seed=cfg.seed, groups=groups, strata=stratum)
    updates = _shared_plan(cfg, parent, pool) if isinstance(cfg, SegmentationConfig) else {}
    counts = []
    for f in range(k):
        val = [e for e, g in zip(pool, folds) if g == f]
        tr = [e for e, g in zip(pool, folds) if g != f]
        write_datalist(fold_datalist(parent, f), tr, val, data.test, data.extra)
        counts.append(
            {
                "fold": f,
                "training": len(tr),
                "validation": len(val),
                "strata": dict(Counter(str(s) for s, g in zip(stratum, folds) if g == f)),
            }
        )
    split = {
        "folds": k,
        "seed": cfg.seed,
        "task": cfg.task,
        "cases": len(pool),
        "test_cases": len(data.test),
        "grouped_by": group_key,
        "groups": len(set(groups)),
        "stratified_by": stratified_by,
        "counts": counts,
        "fold_updates": updates,
        "assignment": [{"image": c, "fold": f, "stratum": str(s)} for c, f, s in zip(keys, folds, stratum)],
    }
    atomic_write_text(parent / FOLDS_FILE, json.dumps(split, indent=1) + "\n")
    log.info(
        "%d-fold split of %d cases (%d groups%s), stratified by %s",
        k,
        len(pool),
        len(set(groups)),
        f" by {group_key!r}" if group_key else "",
        stratified_by,
    )
    return split
