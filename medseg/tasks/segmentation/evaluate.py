"""Scores of the segmentation task: Dice per class (validation, cohort tables) and ``medseg evaluate``.

:func:`evaluate` scores two folders of NIfTI label maps matched by case id (MONAI ``DiceMetric``,
``HausdorffDistanceMetric(percentile=95)`` and ``SurfaceDiceMetric`` with the voxel spacing in mm)
and writes ``evaluation_cases.csv`` (one row per case and class) and ``evaluation.json``.
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
            f"prediction {pred_path.name} and reference {ref_path} do not overlay (shape or affine differ)", pred_path
        )
    pa, ra = p.as_tensor().long(), r.as_tensor().long()
    if label_map:
        ra0 = ra.clone()
        for src, dst in label_map.items():
            ra[ra0 == src] = dst
    k = int(max(pa.max(), ra.max())) + 1
    if class_names is not None:
        k = max(k, len(class_names) + 1)
    k = max(k, 2)
    sd = pa.ndim - 1
    spacing = [float(x) for x in np.linalg.norm(np.asarray(p.affine)[:sd, :sd], axis=0)]
    po, ro = one_hot(pa[None], k), one_hot(ra[None], k)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(po, ro)
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(po, ro, spacing=spacing)
    sdice = SurfaceDiceMetric([tolerance_mm] * (k - 1), include_background=False, reduction="none")(
        po, ro, spacing=spacing
    )
    assert isinstance(dice, torch.Tensor) and isinstance(hd, torch.Tensor) and isinstance(sdice, torch.Tensor)
    rows = []
    for c in range(1, k):
        name = class_names[c - 1] if class_names and c - 1 < len(class_names) else f"class_{c}"
        rows.append(
            {
                "case_id": cid,
                "class": name,
                "label": c,
                "dice": float(dice[0, c - 1]),
                "hd95_mm": float(hd[0, c - 1]),
                "surface_dice": float(sdice[0, c - 1]),
                "pred_voxels": int((pa == c).sum()),
                "ref_voxels": int((ra == c).sum()),
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
    **_: Any,
) -> dict[str, Any]:
    """Dice, HD95 (mm) and surface Dice (``tolerance_mm``) per class and case (MONAI metrics).

    Parameters
    ----------
    pred, ref : folders of NIfTI label maps matched by case id (``pred/labels/`` is used when present).
    out : output folder (default: ``<pred>_evaluation`` beside ``pred``); gets ``evaluation_cases.csv``
        (one row per case and class) and ``evaluation.json`` (means per class, skipped cases).
    tolerance_mm : surface Dice tolerance (mm).
    class_names : names of classes 1..K-1 (default: the model's when ``pred`` is a ``medseg segment``
        output, else "class_<i>").
    **_ : options of the other tasks' ``evaluate`` (``radius``, ``pixel_size``), ignored here.

    A case whose prediction and reference do not overlay (shape/affine) or is missing is skipped
    and listed. When ``pred`` is a ``medseg segment`` output, the model's ``label_map`` is applied
    to the references.

    Returns
    -------
    The JSON summary: ``cases``, ``per_class`` means, ``mean_dice``, ``mean_hd95_mm``,
    ``mean_surface_dice``, ``tolerance_mm``, ``skipped`` ({case: why}), ``table``.
    """
    pred, ref = Path(pred), Path(ref)
    for p in (pred, ref):
        if not p.is_dir():
            raise MissingFileError("expected a folder of NIfTI label maps", p)
    out = Path(out) if out is not None else pred.parent / f"{pred.name}_evaluation"
    out.mkdir(parents=True, exist_ok=True)
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
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for cid in sorted(set(pf) | set(rf)):
        if cid not in pf or cid not in rf:
            skipped[cid] = "no prediction" if cid not in pf else "no reference"
            continue
        try:
            rows += _score_case(pf[cid], rf[cid], cid, label_map, class_names, tolerance_mm)
        except (MedsegError, RuntimeError, ValueError, OSError) as e:
            skipped[cid] = f"{type(e).__name__}: {e}"
            log.error("%s: skipped: %s", cid, e)
    if rows:
        write_table(rows, out, "evaluation_cases")
    per_class: dict[str, dict[str, float | None]] = {}
    for name in dict.fromkeys(r["class"] for r in rows):
        sel = [r for r in rows if r["class"] == name]
        per_class[name] = {m: _nanmean([r[m] for r in sel]) for m in ("dice", "hd95_mm", "surface_dice")}
    summary = {
        "cases": len({r["case_id"] for r in rows}),
        "per_class": per_class,
        "mean_dice": _nanmean([v["dice"] for v in per_class.values()]),
        "mean_hd95_mm": _nanmean([v["hd95_mm"] for v in per_class.values()]),
        "mean_surface_dice": _nanmean([v["surface_dice"] for v in per_class.values()]),
        "tolerance_mm": tolerance_mm,
        "skipped": skipped,
        "table": str(out / "evaluation_cases.csv"),
    }
    atomic_write_text(out / "evaluation.json", json.dumps(summary, indent=2) + "\n")
    return summary
