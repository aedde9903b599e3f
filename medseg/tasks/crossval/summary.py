"""The cross-validation summary table, and what the predict commands need to use the fold ensemble.

Per fold, the validation figures of the checkpoint the fold keeps (the one the ensemble uses):

- segmentation: Dice per class and their mean (``metrics.csv`` at the best epoch);
- detection: F1 at the fold's threshold and average precision on the fold's validation images
  (``summary.json``, ``metrics.csv``), test F1 when the data has a test list;
- classification: AUC with its 95 % bootstrap CI on the fold's validation images (out-of-fold
  predictions, recomputed here), test AUC when the data has a test list; plus the pooled
  out-of-fold AUC with CI, on which the ensemble's temperature and operating points are chosen.

Then the mean and the sample standard deviation over the folds. ``cv_summary.csv`` holds one row
per fold and the ``mean`` and ``sd`` rows; ``cv_summary.json`` the same plus a ready-to-quote line.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.config import ClassificationConfig, DetectionConfig, PipelineConfig
from medseg.engine.checkpoint import fold_member_dirs, load_run_model
from medseg.metrics.classification import bootstrap_auc_ci
from medseg.tasks.classification.data import Split, load_rows, read_datalist
from medseg.tasks.classification.predict import predict_logits, softmax
from medseg.tasks.classification.report import auc_or_nan, operating_report
from medseg.tasks.crossval.split import fold_datalist, read_split
from medseg.tasks.modelcard import write_ensemble_card
from medseg.transforms.classification import prepare_images
from medseg.utils import atomic_write_records, atomic_write_text

__all__ = ["write_cv_summary", "mean_sd", "fold_finished"]

log = logging.getLogger("medseg.tasks.crossval")

#: columns of the table that describe a fold rather than measure it
_DESCRIPTIVE = ("fold", "training", "validation", "best_epoch", "threshold", "auc_ci_low", "auc_ci_high")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        out: dict[str, Any] = json.loads(path.read_text())
        return out
    except (OSError, ValueError):
        return {}


def fold_finished(fold_dir: Path) -> bool:
    """True when the fold's run folder finished (``run.json`` status ok) and holds checkpoints."""
    return _read_json(fold_dir / "run.json").get("status") == "ok" and (fold_dir / "checkpoints").is_dir()


def _task_summary(fold_dir: Path) -> dict[str, Any]:
    # segmentation writes train_summary.json, detection and classification summary.json
    return _read_json(fold_dir / "train_summary.json") or _read_json(fold_dir / "summary.json")


def _best_row(fold_dir: Path, best_epoch: int | None) -> dict[str, float]:
    """The metrics.csv row of the kept checkpoint's epoch (else the last validated row)."""
    try:
        with open(fold_dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    parsed = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in rows]
    hit = [r for r in parsed if best_epoch is not None and int(r.get("epoch", -1)) == int(best_epoch)]
    validated = [r for r in parsed if any(k.startswith("val_") for k in r)]
    return hit[0] if hit else (validated[-1] if validated else (parsed[-1] if parsed else {}))


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN with one value) of the finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _base_row(k: int, split: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    c = split["counts"][k]
    return {
        "fold": k,
        "training": c["training"],
        "validation": c["validation"],
        "best_epoch": summary.get("best_epoch"),
    }


def _segmentation_row(cfg: PipelineConfig, fold_dir: Path, row: dict[str, Any]) -> dict[str, Any]:
    best = _best_row(fold_dir, row["best_epoch"])
    for name in cfg.class_names[1:]:  # type: ignore[attr-defined]
        row[f"dice_{name}"] = best.get(f"val_dice_{name}")
    row["dice_mean"] = best.get("val_dice")
    return row


def _detection_row(fold_dir: Path, row: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    best = _best_row(fold_dir, row["best_epoch"])
    row.update(f1=summary.get("val_f1"), ap=best.get("val_ap"), threshold=summary.get("threshold"))
    if "test_f1" in summary:
        row["test_f1"] = summary["test_f1"]
    return row


def _out_of_fold(cfg: ClassificationConfig, parent: Path, k: int, device: torch.device) -> tuple[Split, np.ndarray]:
    """Fold ``k``'s model on its validation images: (the images read, probabilities ``(N, K)``)."""
    model, _, ckpt = load_run_model(parent / f"fold_{k}", map_location=device)
    meta = ckpt.get("meta", {})
    rows = read_datalist(fold_datalist(parent, k), None, cfg.class_names)["validation"]
    images, split = load_rows(rows, [])
    stacked, _ = prepare_images(
        images, split.names, meta.get("image_size", cfg.image_size), meta.get("channels", "auto")
    )
    return split, softmax(predict_logits(model, stacked, device, cfg.infer.batch_size * 8))


def _classification_rows(
    cfg: ClassificationConfig, parent: Path, done: list[int], rows: dict[int, dict[str, Any]], ensemble_info: bool
) -> dict[str, Any]:
    """AUC (+ CI) per fold from out-of-fold predictions; pooled; the ensemble's classifier.json."""
    pos = cfg.class_names.index(cfg.positive_class) if cfg.positive_class else 1
    binary = len(cfg.class_names) == 2
    device = torch.device("cpu")
    splits, probs = [], []
    for k in done:
        split, p = _out_of_fold(cfg, parent, k, device)
        splits.append(split)
        probs.append(p)
        yb = (split.labels == pos).astype(int)
        auc = auc_or_nan(split.labels, p, pos)
        lo = hi = None
        if binary and 0 < yb.sum() < len(yb):
            lo, hi = bootstrap_auc_ci(yb, p[:, pos], n_boot=cfg.operating_points.n_bootstrap, seed=cfg.seed)
        rows[k].update(auc=auc, auc_ci_low=lo, auc_ci_high=hi)
        test_auc = _task_summary(parent / f"fold_{k}").get("test_auc")
        if test_auc is not None:
            rows[k]["test_auc"] = test_auc
    if not done:
        return {}
    pooled = Split(
        [n for s in splits for n in s.names],
        [p for s in splits for p in s.paths],
        np.concatenate([s.labels for s in splits]),
    )
    p_all = np.concatenate(probs)
    out: dict[str, Any] = {"oof_auc": auc_or_nan(pooled.labels, p_all, pos)}
    yb = (pooled.labels == pos).astype(int)
    if binary and 0 < yb.sum() < len(yb):
        lo, hi = bootstrap_auc_ci(yb, p_all[:, pos], n_boot=cfg.operating_points.n_bootstrap, seed=cfg.seed)
        out["oof_auc_ci95"] = [lo, hi]
    if ensemble_info:
        # the ensemble averages the folds' softmax: its temperature and operating points are chosen on
        # the pooled out-of-fold probabilities (each case scored by the fold that did not train on it)
        first = _read_json(parent / "fold_0" / "classifier.json")
        info = {k: first[k] for k in ("class_names", "positive_class", "positive_index", "image_size", "channels")}
        info["ensemble_of_folds"] = len(done)
        empty = Split([], [], np.zeros(0, dtype=np.int64))
        rep = operating_report(
            np.log(np.clip(p_all, 1e-7, 1.0)),
            pooled,
            None,
            empty,
            class_names=cfg.class_names,
            pos=pos,
            op=cfg.operating_points,
            seed=cfg.seed,
            ev_dir=parent / "evaluation",
            info=info,
            info_path=parent / "classifier.json",
        )
        out["ensemble_operating_points"] = rep.get("operating_points")
    return out


def _detection_info(parent: Path, done: list[int]) -> None:
    """``detection.json`` of the ensemble: fold 0's parameters, the mean of the folds' thresholds."""
    infos = [_read_json(parent / f"fold_{k}" / "detection.json") for k in done]
    info = {**infos[0], "threshold": float(np.mean([i["threshold"] for i in infos])), "ensemble_of_folds": len(done)}
    info["val_f1"] = float(np.mean([i.get("val_f1", float("nan")) for i in infos]))
    atomic_write_text(parent / "detection.json", json.dumps(info, indent=2) + "\n")


def _quote(task: str, metrics: dict[str, dict[str, Any]], k: int, n: int) -> str:
    keys = {
        "segmentation": [m for m in metrics if m.startswith("dice_")],
        "detection": ["f1"],
        "classification": ["auc"],
    }[task]
    parts = [f"{m} {metrics[m]['mean']:.3f} ± {metrics[m]['sd']:.3f}" for m in keys if m in metrics]
    return f"{'; '.join(parts)} (mean ± SD over {n} of {k} folds, {k}-fold cross-validation)"


def write_cv_summary(cfg: PipelineConfig, parent: str | Path) -> dict[str, Any]:
    """Write ``cv_summary.csv`` / ``cv_summary.json`` of the finished folds of a parent run.

    When every fold has finished, also writes what the predict commands read to use the ensemble
    (classification: ``classifier.json`` and ``evaluation/``; detection: ``detection.json``).

    Returns
    -------
    ``{"folds", "folds_done", "metrics": {name: {"mean", "sd", "per_fold"}}, "rows", "quote", ...}``
    """
    parent = Path(parent)
    split = read_split(parent)
    k_total = int(split["folds"])
    done = [k for k, d in enumerate(fold_member_dirs(parent)) if fold_finished(d)]
    rows: dict[int, dict[str, Any]] = {}
    for k in done:
        fold_dir = parent / f"fold_{k}"
        summary = _task_summary(fold_dir)
        row = _base_row(k, split, summary)
        if isinstance(cfg, DetectionConfig):
            rows[k] = _detection_row(fold_dir, row, summary)
        elif isinstance(cfg, ClassificationConfig):
            rows[k] = row
        else:
            rows[k] = _segmentation_row(cfg, fold_dir, row)
    extra: dict[str, Any] = {}
    if isinstance(cfg, ClassificationConfig):
        extra = _classification_rows(cfg, parent, done, rows, ensemble_info=len(done) == k_total)
    elif isinstance(cfg, DetectionConfig) and done and len(done) == k_total:
        _detection_info(parent, done)
    table = [rows[k] for k in done]
    metric_cols = [c for c in (table[0] if table else {}) if c not in _DESCRIPTIVE]
    metrics: dict[str, dict[str, Any]] = {}
    for c in metric_cols:
        vals = [r.get(c) for r in table]
        m, s = mean_sd([float(v) for v in vals if v is not None])
        metrics[c] = {"mean": m, "sd": s, "per_fold": vals}
    footer = [{"fold": "mean", **{c: metrics[c]["mean"] for c in metric_cols}}]
    footer.append({"fold": "sd", **{c: metrics[c]["sd"] for c in metric_cols}})
    if "oof_auc" in extra:  # every case scored by the fold that did not train on it, pooled
        lo, hi = extra.get("oof_auc_ci95") or (None, None)
        footer.append({"fold": "pooled_out_of_fold", "auc": extra["oof_auc"], "auc_ci_low": lo, "auc_ci_high": hi})
    atomic_write_records(parent / "cv_summary.csv", table + footer)
    out = {
        "task": cfg.task,
        "folds": k_total,
        "folds_done": done,
        "metrics": metrics,
        "rows": table,
        **extra,
        "quote": _quote(cfg.task, metrics, k_total, len(done)) if done else "",
    }
    atomic_write_text(parent / "cv_summary.json", json.dumps(out, indent=2, default=float) + "\n")
    review = write_ensemble_card(parent, cfg, out)  # all folds done: the ensemble's card and OOD reference
    if review is not None:
        out["review"] = review
    return out
