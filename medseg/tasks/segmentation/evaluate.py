"""Scores of the segmentation task: Dice per class (validation, cohort tables) and ``medseg evaluate``.

:func:`evaluate` scores two folders of NIfTI label maps matched by case id (MONAI ``DiceMetric``,
``HausdorffDistanceMetric(percentile=95)`` and ``SurfaceDiceMetric`` with the voxel spacing in mm)
through the cohort engine (:mod:`medseg.tasks.cohort`: one bad case is skipped, the others scored)
into a new run folder: ``evaluate.csv``/``.json`` (one row per case), ``evaluation_cases.csv`` (one
row per case and class) and ``evaluation.json``. Label values are checked before any one-hot
encoding, so time is proportional to the image size, not to the largest label value.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric
from monai.networks.utils import one_hot

from medseg.config import SegmentationConfig, load_config
from medseg.errors import LabelMismatchError, MedsegError, MissingFileError
from medseg.io.registry import case_id, format_of
from medseg.runs import Run
from medseg.tasks.cohort import CaseOutputs, CaseResult, finish_cohort, run_cohort
from medseg.tasks.inputs import CaseInput
from medseg.tasks.segmentation.files import read_image, write_table
from medseg.utils import atomic_write_text

__all__ = ["dice_per_class", "evaluate"]

log = logging.getLogger("medseg.segmentation")


def _spatial_ndim(t: torch.Tensor) -> int:
    """Number of spatial axes of a label map ``(*S)`` or ``(1, *S)`` (2D or 3D)."""
    return t.ndim if t.ndim in (2, 3) and t.shape[0] != 1 else t.ndim - 1


def dice_per_class(pred: torch.Tensor, ref: torch.Tensor, n_classes: int) -> np.ndarray:
    """Dice of each foreground class between two label maps (MONAI ``DiceMetric``).

    Parameters
    ----------
    pred, ref : integer label maps ``(*S)`` or ``(1, *S)`` on the same voxel grid.
    n_classes : number of classes, background included.

    Returns
    -------
    ``(n_classes - 1,)`` float array; NaN for a class absent from both maps.
    """
    p_t, r_t = torch.as_tensor(pred), torch.as_tensor(ref)
    p = one_hot(p_t.long().reshape((1, 1, *p_t.shape[-_spatial_ndim(p_t) :])), n_classes)
    r = one_hot(r_t.long().reshape((1, 1, *r_t.shape[-_spatial_ndim(r_t) :])), n_classes)
    m = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    out = m(p, r)
    assert isinstance(out, torch.Tensor)  # reduction="none" returns the (B, K - 1) tensor
    return out[0].cpu().numpy()


def _label_files(folder: Path) -> dict[str, Path]:
    """{case id: NIfTI file} of a folder (its ``labels/`` subfolder when present)."""
    if (folder / "labels").is_dir():
        folder = folder / "labels"
    return {case_id(p): p for p in sorted(folder.iterdir()) if p.is_file() and format_of(p) == "nifti"}


def _model_run_of(pred: Path) -> Path | None:
    """The model run folder recorded in a ``medseg segment`` output's run.json, if it still exists."""
    info = pred / "run.json"
    if not info.is_file():
        return None
    try:
        m = json.loads(info.read_text()).get("model")
    except (OSError, json.JSONDecodeError):
        return None
    return Path(m) if m and (Path(m) / "config.yaml").is_file() else None


def _nanmean(v: Sequence[float | None]) -> float | None:
    a = np.array([x for x in v if x is not None and np.isfinite(x)], float)
    return round(float(a.mean()), 4) if a.size else None


#: without class names, at most this many distinct label values (more: not a label map)
MAX_CLASSES = 64


def _class_values(
    pa: np.ndarray, ra: np.ndarray, class_names: Sequence[str] | None, pred: Path, ref: Path
) -> list[int]:
    """The label values scored: 0..K-1 with class names (others are an error), else those present.

    ``np.unique`` only (time proportional to the image, whatever the values): checked before any
    one-hot encoding, so a stray value 100000 is a clear error, not a 100001-class one-hot.
    """
    values = {int(v) for v in np.unique(pa)} | {int(v) for v in np.unique(ra)}
    if class_names is not None:
        allowed = set(range(len(class_names) + 1))
        bad = sorted(values - allowed)
        if bad:
            where = [str(f.name) for f, a in ((pred, pa), (ref, ra)) if np.isin(a, bad).any()]
            raise LabelMismatchError(
                f"label value(s) {bad[:5]} in {' and '.join(where)} are not classes 0..{len(class_names)} "
                f"(background, {', '.join(class_names)}); fix the label map or pass the right class names",
                pred if where and where[0] == pred.name else ref,
            )
        return sorted(allowed)
    bad = sorted(v for v in values if not 0 <= v <= 255)
    if bad or len(values) > MAX_CLASSES:
        where = [str(f.name) for f, a in ((pred, pa), (ref, ra)) if not bad or np.isin(a, bad).any()]
        raise LabelMismatchError(
            f"label values {bad[:5] or sorted(values)[:5]} ({len(values)} distinct) in {' and '.join(where)}: "
            f"not label maps (expected at most {MAX_CLASSES} integer classes in 0..255); pass class names to "
            "check them against the classes",
            pred if where and where[0] == pred.name else ref,
        )
    return sorted(values | {0})


def _score_case(
    pred_path: Path,
    ref_path: Path,
    cid: str,
    label_map: dict[int, int],
    class_names: Sequence[str] | None,
    tolerance_mm: float,
) -> list[dict[str, Any]]:
    """Rows (one per foreground class) of one case; LabelMismatchError when the maps do not overlay."""
    p, r = read_image(pred_path), read_image(ref_path)
    if tuple(p.shape) != tuple(r.shape) or not np.allclose(np.asarray(p.affine), np.asarray(r.affine), atol=1e-3):
        raise LabelMismatchError(
            f"prediction {pred_path.name} {tuple(p.shape[1:])} and reference {ref_path} {tuple(r.shape[1:])} "
            "do not overlay (shape or affine differ)",
            pred_path,
        )
    pa, ra = np.asarray(p), np.asarray(r)
    for name, a, f in (("prediction", pa, pred_path), ("reference", ra, ref_path)):
        if np.issubdtype(a.dtype, np.floating) and not np.array_equal(a, np.round(a)):
            raise LabelMismatchError(f"{name} {f.name} has non-integer values: not a label map", f)
    pa, ra = pa.astype(np.int64), ra.astype(np.int64)
    if label_map:
        ra0 = ra.copy()
        for src, dst in label_map.items():
            ra[ra0 == src] = dst
    values = _class_values(pa, ra, class_names, pred_path, ref_path)
    vals = np.asarray(values)
    # label value -> one-hot channel 0..K-1 (values sorted and all present: searchsorted is exact)
    pi, ri = torch.as_tensor(np.searchsorted(vals, pa)), torch.as_tensor(np.searchsorted(vals, ra))
    k = max(len(values), 2)
    sd = pi.ndim - 1
    spacing = [float(x) for x in np.linalg.norm(np.asarray(p.affine)[:sd, :sd], axis=0)]
    po, ro = one_hot(pi[None], k), one_hot(ri[None], k)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(po, ro)
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(po, ro, spacing=spacing)
    sdice = SurfaceDiceMetric([tolerance_mm] * (k - 1), include_background=False, reduction="none")(
        po, ro, spacing=spacing
    )
    assert isinstance(dice, torch.Tensor) and isinstance(hd, torch.Tensor) and isinstance(sdice, torch.Tensor)
    rows = []
    for c in range(1, k):
        v = values[c] if c < len(values) else c
        name = class_names[v - 1] if class_names and v - 1 < len(class_names) else f"class_{v}"
        rows.append(
            {
                "case_id": cid,
                "class": name,
                "label": v,
                "dice": float(dice[0, c - 1]),
                "hd95_mm": float(hd[0, c - 1]),
                "surface_dice": float(sdice[0, c - 1]),
                "pred_voxels": int((pi == c).sum()),
                "ref_voxels": int((ri == c).sum()),
            }
        )
    return rows


def evaluate(
    pred: str | Path,
    ref: str | Path,
    out: str | Path | None = None,
    *,
    tolerance_mm: float = 2.0,
    class_names: Sequence[str] | None = None,
    force: bool = False,
    **_: Any,
) -> dict[str, Any]:
    """Dice, HD95 (mm) and surface Dice (``tolerance_mm``) per class and case (MONAI metrics).

    Parameters
    ----------
    pred, ref : folders of NIfTI label maps matched by case id (``pred/labels/`` is used when present).
    out : output folder, a new run folder (default: ``<pred>_evaluation`` beside ``pred``); it gets
        ``evaluate.csv`` / ``.json`` (one row per case: the cohort table, with the per-class figures),
        ``evaluation_cases.csv`` (one row per case and class) and ``evaluation.json`` (means per
        class, skipped cases). An existing folder is never overwritten (``force`` moves it aside).
    tolerance_mm : surface Dice tolerance (mm).
    class_names : names of classes 1..K-1 (default: the model's when ``pred`` is a ``medseg segment``
        output, else the label values present, as "class_<value>"). With names, any other label value
        is an error naming the file (checked before the one-hot encoding).
    force : move an existing output folder aside.
    **_ : options of the other tasks' ``evaluate`` (``radius``, ``pixel_size``), ignored here.

    A case whose prediction and reference do not overlay (shape/affine), holds values that are not
    classes, or is missing on one side is skipped and listed; the others are scored. When ``pred``
    is a ``medseg segment`` output, the model's ``label_map`` is applied to the references.

    Returns
    -------
    The cohort summary (``cases``, ``ok``, ``skipped``, ``skipped_cases``, ``table``, ``exit_code`` ...)
    plus ``per_class`` means, ``mean_dice``, ``mean_hd95_mm``, ``mean_surface_dice``, ``tolerance_mm``.
    """
    pred, ref = Path(pred), Path(ref)
    for p in (pred, ref):
        if not p.is_dir():
            raise MissingFileError("expected a folder of NIfTI label maps", p)
    out = Path(out) if out is not None else pred.parent / f"{pred.name}_evaluation"
    label_map: dict[int, int] = {}
    model_run = _model_run_of(pred)
    if model_run is not None:  # a 'medseg segment' output: use the model's class names and label map
        try:
            mcfg = load_config(model_run / "config.yaml")
            if isinstance(mcfg, SegmentationConfig):
                class_names = class_names or list(mcfg.class_names[1:])
                label_map = dict(mcfg.label_map)
        except (MedsegError, OSError) as e:
            log.warning("cannot read the model config of %s (%s)", pred, e)
    pf, rf = _label_files(pred), _label_files(ref)
    cases = [
        CaseInput(cid, pf.get(cid, rf.get(cid, pred / cid)), rf.get(cid), None) for cid in sorted(set(pf) | set(rf))
    ]
    identity = json.dumps([str(pred.resolve()), str(ref.resolve()), tolerance_mm, class_names], default=str)
    run = Run.create(out, None, force=force, command="evaluate", identity=identity)
    rows: list[dict[str, Any]] = []

    def score(case: CaseInput, _files: CaseOutputs) -> CaseResult:
        if case.case_id not in pf:
            raise MissingFileError("no prediction for this reference", case.label)
        if case.label is None:
            raise MissingFileError("no reference for this prediction", case.image)
        got = _score_case(case.image, case.label, case.case_id, label_map, class_names, tolerance_mm)
        rows.extend(got)
        values = {f"{m}_{r['class']}": round(r[m], 4) for r in got for m in ("dice", "hd95_mm", "surface_dice")}
        return CaseResult(case.case_id, str(case.image), values={"reference": str(case.label), **values})

    with run:
        results = run_cohort(cases, score, out=out, command="evaluate")
        if rows:
            write_table(rows, out, "evaluation_cases")
        per_class: dict[str, dict[str, float | None]] = {}
        for name in dict.fromkeys(r["class"] for r in rows):
            sel = [r for r in rows if r["class"] == name]
            per_class[name] = {m: _nanmean([r[m] for r in sel]) for m in ("dice", "hd95_mm", "surface_dice")}
        figures = {
            "per_class": per_class,
            "mean_dice": _nanmean([v["dice"] for v in per_class.values()]),
            "mean_hd95_mm": _nanmean([v["hd95_mm"] for v in per_class.values()]),
            "mean_surface_dice": _nanmean([v["surface_dice"] for v in per_class.values()]),
            "tolerance_mm": tolerance_mm,
        }
        summary = finish_cohort(run, results, command="evaluate", task="segmentation", details=figures, report=False)
        atomic_write_text(out / "evaluation.json", json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary.to_dict()
