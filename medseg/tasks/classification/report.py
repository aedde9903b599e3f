"""After training: calibrate, choose operating points on validation, report on test, write ``classifier.json``.

Gulshan et al. (JAMA 2016): thresholds (a high-sensitivity, a high-specificity and Youden's point)
are **chosen on the validation set** and **reported on the test set**; a softmax temperature is
fitted on the validation logits first (Guo et al. 2017).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import OperatingPointSection
from medseg.metrics.classification import binary_report, fit_temperature, multiclass_report, one_vs_rest_auc, roc_auc
from medseg.tasks.classification.data import Split
from medseg.tasks.classification.predict import softmax, write_predictions
from medseg.utils import atomic_write_text

__all__ = ["auc_or_nan", "operating_report"]


def auc_or_nan(y: np.ndarray, p: np.ndarray, pos: int = 1) -> float:
    """Binary ``p`` ``(N, 2)``: AUC of class ``pos`` (NaN with one class); multi-class: macro one-vs-rest AUC."""
    if p.shape[1] == 2:
        yb = (y == pos).astype(int)
        return roc_auc(yb, p[:, pos]) if 0 < yb.sum() < len(yb) else float("nan")
    return float(one_vs_rest_auc(y, p)["macro"])


def operating_report(
    z_va: np.ndarray,
    va: Split,
    z_te: np.ndarray | None,
    te: Split,
    *,
    class_names: Sequence[str],
    pos: int,
    op: OperatingPointSection,
    seed: int,
    ev_dir: Path,
    info: dict[str, Any],
    info_path: Path,
) -> dict[str, Any]:
    """Calibrate and choose/report operating points from validation/test logits ``(N, K)``.

    Writes ``ev_dir`` (metrics.json, operating_points.csv, confusion_matrix.csv, reliability.png,
    test_predictions.csv) and ``info_path`` (``classifier.json``: ``info`` completed with the
    temperature and the thresholds, what ``classify`` needs).

    Returns
    -------
    the summary entries: temperature, test (or validation) AUC with 95% CI, ECE, operating points,
    notes; multi-class: macro one-vs-rest AUC and balanced accuracy on test.
    """
    class_names = list(class_names)
    binary = len(class_names) == 2
    temperature = 1.0
    temp_note = None
    if op.temperature_scaling:
        separated = binary and auc_or_nan(va.labels, softmax(z_va), pos) == 1.0
        if separated:  # NLL -> 0 as T -> 0: nothing to calibrate on, keep T = 1
            temp_note = "temperature scaling skipped: the validation set is perfectly separated"
        else:
            temperature = fit_temperature(z_va, va.labels)
    p_va = softmax(z_va, temperature)
    info = {**info, "temperature": temperature, "operating_points": {}, "use": op.use}
    summary: dict[str, Any] = {"temperature": round(temperature, 4)}
    if binary:
        yv = (va.labels == pos).astype(int)
        # thresholds chosen on validation, reported on test (without a test split: on validation itself)
        p_te = softmax(z_te, temperature) if z_te is not None else p_va
        yt = (te.labels == pos).astype(int) if z_te is not None else yv
        rep = binary_report(
            yv,
            p_va[:, pos],
            yt,
            p_te[:, pos],
            sensitivity_target=op.sensitivity_target,
            specificity_target=op.specificity_target,
            n_boot=op.n_bootstrap,
            seed=seed,
            out_dir=ev_dir,
            class_names=(class_names[1 - pos], class_names[pos]),
        )
        if z_te is None:
            rep["notes"].append("no test split: metrics are on the validation set (optimistic)")
        if temp_note:
            rep["notes"].append(temp_note)
        info["operating_points"] = {k: v["threshold"] for k, v in rep["operating_points"].items()}
        info["operating_points"]["default"] = 0.5
        summary.update(
            {
                "test_auc" if z_te is not None else "val_auc": round(rep["auc"], 4),
                "auc_ci95": [round(v, 4) for v in rep["auc_ci95"]],
                "ece": round(rep["ece"], 4),
                "operating_points": {
                    k: {
                        "threshold": round(v["threshold"], 4),
                        "sensitivity": round(v["sensitivity"], 3),
                        "specificity": round(v["specificity"], 3),
                    }
                    for k, v in rep["operating_points"].items()
                },
                "notes": rep["notes"],
            }
        )
        if z_te is not None:
            thr = info["operating_points"].get(op.use, 0.5)
            pred = np.where(p_te[:, pos] >= thr, pos, 1 - pos)
            write_predictions(ev_dir / "test_predictions.csv", te.names, p_te, class_names, te.labels, pred)
    elif z_te is not None:
        p_te = softmax(z_te, temperature)
        mrep = multiclass_report(te.labels, p_te, class_names, out_dir=ev_dir)
        write_predictions(ev_dir / "test_predictions.csv", te.names, p_te, class_names, te.labels)
        summary.update(
            {
                "test_macro_auc": round(mrep["one_vs_rest_auc"]["macro"], 4),
                "test_balanced_accuracy": round(mrep["balanced_accuracy"], 4),
            }
        )
    atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    return summary
