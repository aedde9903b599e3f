"""``medseg evaluate --task classification``: score ``classify`` predictions against reference labels.

Predictions are matched to references through the cohort engine (:mod:`medseg.tasks.cohort`: a
prediction without a reference is a skipped row, with its reason) into a new run folder that is
never overwritten.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import FileFormatError, InputError, MissingFileError
from medseg.metrics.classification import (
    bootstrap_auc_ci,
    confusion_matrix,
    expected_calibration_error,
    multiclass_report,
    reliability_diagram,
    roc_auc,
    sens_spec_at,
)
from medseg.runs import Run
from medseg.tasks.classification.data import label_index
from medseg.tasks.cohort import CaseOutputs, CaseResult, finish_cohort, run_cohort
from medseg.tasks.inputs import CaseInput
from medseg.utils import atomic_write_csv, atomic_write_text

__all__ = ["read_csv_rows", "evaluate"]

_OPERATING_POINT_KEYS = (
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "sensitivity_ci_low",
    "sensitivity_ci_high",
    "specificity_ci_low",
    "specificity_ci_high",
)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts. Raises MissingFileError / FileFormatError."""
    if not path.is_file():
        raise MissingFileError("CSV not found", path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as e:
        raise FileFormatError(f"not a readable CSV: {e}", path) from None


def evaluate(
    pred: str | Path,
    ref: str | Path,
    out: str | Path | None = None,
    n_boot: int = 1000,
    force: bool = False,
) -> dict[str, Any]:
    """Score ``classify`` predictions against reference labels.

    Parameters
    ----------
    pred : predictions.csv from :func:`medseg.tasks.classification.classify` (columns image,
        prob_<class>..., predicted_class)
    ref : CSV with an ``image`` column and ``label`` (index) or ``class_name``/``label`` (name)
        column, e.g. ``labels.csv`` of :func:`medseg.data.lesions.make_lesion_dataset`. Rows are
        matched on the image file stem.
    out : a new run folder (default: ``evaluation/`` beside ``pred``; never overwritten, ``force``
        moves it aside): metrics.json, per_case.csv, confusion_matrix.csv, reliability.png (binary),
        ``evaluate.csv``/``.json`` (one row per prediction: matched or skipped, and why)
    n_boot : bootstrap resamples of the AUC 95% CI
    force : move an existing output folder aside

    Returns
    -------
    The cohort summary (``cases``, ``ok``, ``skipped`` (predictions without a reference) ...) plus
    AUC (binary) with 95% CI, or one-vs-rest AUC + balanced accuracy; sensitivity/specificity at the
    predictions' operating point; ECE; ``n_cases`` matched and ``n_unmatched_predictions``.
    """
    pred, ref = Path(pred), Path(ref)
    prows, rrows = read_csv_rows(pred), read_csv_rows(ref)
    if not prows:
        raise InputError("predictions CSV is empty", pred)
    class_names = [c[5:] for c in prows[0] if c.startswith("prob_")]
    if len(class_names) < 2:
        raise InputError("predictions CSV has no prob_<class> columns (is it from medseg classify?)", pred)
    key = "label" if rrows and "label" in rrows[0] else "class_name"
    if not rrows or "image" not in rrows[0] or key not in rrows[0]:
        raise InputError("reference CSV needs columns 'image' and 'label' (or 'class_name')", ref)
    refmap = {
        Path(r["image"]).stem: label_index(r[key], class_names, f"{ref.name} row {i + 2}") for i, r in enumerate(rrows)
    }
    y: list[int] = []
    probs: list[list[float]] = []
    predicted: list[int] = []
    names: list[str] = []

    def match(case: CaseInput, _files: CaseOutputs) -> CaseResult:
        r = case.entry
        stem = Path(r["image"]).stem
        if stem not in refmap:
            raise InputError("no reference label for this image", r["image"])
        p = [float(r[f"prob_{c}"]) for c in class_names]
        k = label_index(r["predicted_class"], class_names, pred.name)
        y.append(refmap[stem])
        probs.append(p)
        predicted.append(k)
        names.append(stem)
        values = {
            "reference_class": class_names[refmap[stem]],
            "predicted_class": class_names[k],
            "correct": int(refmap[stem] == k),
        }
        return CaseResult(stem, r["image"], values=values)

    cases = [CaseInput(Path(r["image"]).stem, Path(r["image"]), entry=r) for r in prows]
    out_dir = Path(out) if out is not None else pred.parent / "evaluation"
    identity = json.dumps([str(pred.resolve()), str(ref.resolve()), n_boot])
    run = Run.create(out_dir, None, force=force, command="evaluate", identity=identity)
    with run:
        results = run_cohort(cases, match, out=out_dir, command="evaluate")
        if not y:
            raise InputError(f"no prediction matches a reference image (first prediction {prows[0]['image']!r})", pred)
        res = _metrics(np.array(y), np.array(probs), np.array(predicted), class_names, prows, n_boot, out_dir)
        res["n_unmatched_predictions"] = sum(not r.ok for r in results)
        _write_tables(out_dir, names, y, predicted, probs, class_names, res)
        details: dict[str, Any] = {
            k2: (round(v, 4) if isinstance(v, float) else v)
            for k2, v in res.items()
            if k2 in ("n_cases", "auc", "accuracy", "ece", "n_unmatched_predictions")
        }
        details["metrics"] = str(out_dir / "metrics.json")
        summary = finish_cohort(run, results, command="evaluate", task="classification", details=details, report=False)
    return summary.to_dict()


def _metrics(
    y_arr: np.ndarray,
    p_arr: np.ndarray,
    pr: np.ndarray,
    class_names: list[str],
    prows: list[dict[str, str]],
    n_boot: int,
    out_dir: Path,
) -> dict[str, Any]:
    """AUC (+ CI), operating point, ECE and reliability diagram (binary), or the multi-class report."""
    k = len(class_names)
    cm = confusion_matrix(y_arr, pr, k)
    res: dict[str, Any] = {
        "n_cases": int(len(y_arr)),
        "class_names": class_names,
        "confusion_matrix": cm.tolist(),
        "accuracy": float((pr == y_arr).mean()),
    }
    if k == 2:
        pos = 1
        yb = (y_arr == pos).astype(int)
        thr = float(prows[0].get("threshold") or 0.5)
        if 0 < yb.sum() < len(yb):
            res["auc"] = roc_auc(yb, p_arr[:, pos])
            res["auc_ci95"] = list(bootstrap_auc_ci(yb, p_arr[:, pos], n_boot=n_boot))
        else:
            res["notes"] = ["AUC undefined: the references contain one class only"]
        ss = sens_spec_at(yb, (pr == pos).astype(float), 0.5)
        res["operating_point"] = {
            "name": prows[0].get("operating_point"),
            "threshold": thr,
            **{m: ss[m] for m in _OPERATING_POINT_KEYS},
        }
        res["ece"], _ = expected_calibration_error(yb, p_arr[:, pos])
        reliability_diagram(yb, p_arr[:, pos], out_dir / "reliability.png", title=f"n={len(yb)}")
    else:
        res.update(multiclass_report(y_arr, p_arr, class_names))
    return res


def _write_tables(
    out_dir: Path,
    names: list[str],
    y: list[int],
    predicted: list[int],
    probs: list[list[float]],
    class_names: list[str],
    res: dict[str, Any],
) -> None:
    """per_case.csv, confusion_matrix.csv and metrics.json."""
    atomic_write_csv(
        out_dir / "per_case.csv",
        ["case_id", "reference_class", "predicted_class", *[f"prob_{c}" for c in class_names], "correct"],
        (
            [
                n,
                class_names[y[i]],
                class_names[predicted[i]],
                *[f"{v:.6f}" for v in probs[i]],
                int(y[i] == predicted[i]),
            ]
            for i, n in enumerate(names)
        ),
    )
    cm = res["confusion_matrix"]
    atomic_write_csv(
        out_dir / "confusion_matrix.csv",
        ["reference \\ predicted", *class_names],
        [[class_names[i], *cm[i]] for i in range(len(class_names))],
    )
    atomic_write_text(out_dir / "metrics.json", json.dumps(res, indent=2, default=float) + "\n")
