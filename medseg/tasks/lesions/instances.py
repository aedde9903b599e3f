"""Lesion tables of label maps: per case ``lesions/<case>_lesions.csv``, per cohort ``lesions.csv``.

- :func:`resolve_lesion_classes`: the user's class list (values or names) as ``{value: name}``.
- :func:`case_lesions`: one case's lesions, its CSV written (registered with the case's
  :class:`~medseg.tasks.cohort.CaseOutputs`, so a failed case leaves nothing) and its summary columns.
- :func:`write_cohort_lesions`: every lesion of every case that finished, ``case_id`` first.
- :func:`find_lesions_in_labels`: the command ``medseg lesions``: label maps in, a run folder with the
  per-case tables, ``lesions.csv``, ``lesion_cases.csv``/``.json`` and ``report.html`` out.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io import load
from medseg.metrics.lesions import LESION_COLUMNS, Lesion, find_lesions, lesion_rows
from medseg.review.cases import ReviewCase
from medseg.runs import Run
from medseg.tasks.cohort import CaseOutputs, CaseResult, finish_cohort, run_cohort
from medseg.tasks.inputs import CaseInput, expand_inputs
from medseg.utils import atomic_write_records

__all__ = ["resolve_lesion_classes", "case_lesions", "write_cohort_lesions", "find_lesions_in_labels"]

log = logging.getLogger("medseg.lesions")

#: the per-case summary columns a lesion table adds to a command's table
SUMMARY_COLUMNS: tuple[str, ...] = ("n_lesions", "lesions_total_ml", "largest_lesion_ml", "largest_lesion_diameter_mm")


def resolve_lesion_classes(
    spec: Sequence[str | int] | None, class_names: Sequence[str] | None = None
) -> dict[int, str] | None:
    """``{value: name}`` of the lesion classes the user asked for.

    Parameters
    ----------
    spec : label values (``2``, ``"2"``) or class names (``"tumour"``, looked up in ``class_names``);
        None or empty: every non-zero value.
    class_names : names of the label values (index = value), e.g. a trained run's classes.

    Raises
    ------
    ConfigError : a name that is not a class, the background (0), or a negative value.
    """
    if not spec:
        return None if not class_names else {i: n for i, n in enumerate(class_names) if i > 0}
    names = list(class_names or [])
    out: dict[int, str] = {}
    for item in spec:
        text = str(item).strip()
        if text.lstrip("-").isdigit():
            v = int(text)
            if v <= 0:
                raise ConfigError(f"lesion class {v}: give a foreground label value (1 or more)")
            out[v] = names[v] if v < len(names) else f"class_{v}"
        elif text in names and names.index(text) > 0:
            out[names.index(text)] = text
        else:
            known = ", ".join(names[1:]) if len(names) > 1 else "none: give label values"
            raise ConfigError(f"lesion class {text!r} is not a class of the label map (classes: {known})")
    return out


def _summary(lesions: Sequence[Lesion]) -> dict[str, Any]:
    big = lesions[0] if lesions else None
    return {
        "n_lesions": len(lesions),
        "lesions_total_ml": round(sum(les.volume_ml for les in lesions), 4),
        "largest_lesion_ml": round(big.volume_ml, 4) if big else 0.0,
        "largest_lesion_diameter_mm": round(big.diameter_3d_mm, 2) if big else 0.0,
    }


def case_lesions(
    labels: np.ndarray,
    affine: np.ndarray,
    case_id: str,
    files: CaseOutputs,
    *,
    classes: Mapping[int, str] | None = None,
    min_ml: float = 0.0,
    connectivity: int | None = None,
) -> tuple[np.ndarray, list[Lesion], dict[str, Any]]:
    """Find one case's lesions and write ``lesions/<case_id>_lesions.csv`` (one row per lesion).

    Parameters
    ----------
    labels : ``(X, Y, Z)`` (or 2D) label map; ``affine`` its 4x4 voxel -> RAS mm.
    case_id : the case (the file name).
    files : the case's outputs (the CSV is registered there, recorded under ``lesions``).
    classes, min_ml, connectivity : see :func:`medseg.metrics.lesions.find_lesions`.

    Returns
    -------
    (instance map, lesions, the summary columns :data:`SUMMARY_COLUMNS` for the command's table).
    """
    instances, lesions = find_lesions(labels, affine, classes, min_ml=min_ml, connectivity=connectivity)
    path = files.path("lesions", f"{case_id}_lesions.csv")
    atomic_write_records(path, lesion_rows(lesions), LESION_COLUMNS)
    files.add("lesions", path)
    return instances, lesions, _summary(lesions)


def write_cohort_lesions(path: str | Path, results: Sequence[CaseResult]) -> Path:
    """``lesions.csv`` of a cohort: the rows of every finished case's lesion table, ``case_id`` first
    (columns: :data:`LESION_COLUMNS`, then any the case tables add, e.g. probabilities and calls)."""
    rows: list[dict[str, Any]] = []
    cols = ["case_id", *LESION_COLUMNS]
    for r in results:
        src = r.outputs.get("lesions") if r.ok else None
        if not src or not Path(src).is_file():
            continue
        with open(src, newline="") as fh:
            reader = csv.DictReader(fh)
            cols += [c for c in reader.fieldnames or [] if c not in cols]
            rows += [{"case_id": r.case_id, **row} for row in reader]
    return atomic_write_records(path, rows, cols)


def _read_labels(case: CaseInput) -> tuple[np.ndarray, np.ndarray]:
    img = load(case.image)
    arr = np.asarray(img.array if hasattr(img, "array") else img)
    if arr.shape[0] != 1:
        raise InputError(f"a label map has one channel, this file has {arr.shape[0]}", case.source)
    return arr[0], np.asarray(img.affine, dtype=float)


def find_lesions_in_labels(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    classes: Sequence[str | int] | None = None,
    class_names: Sequence[str] | None = None,
    min_ml: float = 0.0,
    connectivity: int | None = None,
    split: str = "test",
    force: bool = False,
) -> dict[str, Any]:
    """The ``medseg lesions`` command: per-lesion tables of label maps.

    Parameters
    ----------
    inputs : label maps (NIfTI, NRRD, MetaImage, 2D images, DICOM ...), folders of them, or a datalist
        JSON (its entries' ``label`` if present, else ``image``).
    out : output folder (a medseg run folder).
    classes : lesion classes (values, or names in ``class_names``); default: every non-zero value.
    class_names : names of the label values (index = value).
    min_ml : minimum lesion size (mL); connectivity : see :func:`medseg.metrics.lesions.find_lesions`.
    split : datalist list to take; force : move an existing output folder aside.

    Returns
    -------
    The cohort summary (``cases``, ``ok``, ``skipped`` ..., ``table`` = ``lesion_cases.csv``), plus
    ``lesions`` (the cohort's ``lesions.csv``) and ``n_lesions``.
    """
    table = resolve_lesion_classes(classes, class_names)
    cases = [
        CaseInput(c.case_id, c.label, split=c.split, entry=c.entry) if c.label is not None else c
        for c in expand_inputs(inputs, kind="volume", split=split)
    ]
    identity = json.dumps([[str(i) for i in inputs], classes, min_ml, connectivity, split], default=str)
    run = Run.create(out, None, force=force, command="lesions", identity=identity)
    with run:
        run.set(lesion_classes=table, min_lesion_ml=min_ml, connectivity=connectivity or "full")
        t0 = time.perf_counter()

        def one(case: CaseInput, files: CaseOutputs) -> CaseResult:
            labels, affine = _read_labels(case)
            _, lesions, values = case_lesions(
                labels, affine, case.case_id, files, classes=table, min_ml=min_ml, connectivity=connectivity
            )
            review = ReviewCase(
                case_id=case.case_id,
                task="lesions",
                volumes_ml={f"lesion {les.lesion_id} ({les.class_name})": round(les.volume_ml, 3) for les in lesions},
            )
            return CaseResult.of(case, values=values, review=review)

        with run.stage("lesions"):
            results = run_cohort(cases, one, out=run.path, command="lesions")
        cohort = write_cohort_lesions(run.path / "lesions.csv", results)
        n = sum(int(r.values.get("n_lesions", 0)) for r in results if r.ok)
        summary = finish_cohort(
            run,
            results,
            command="lesions",
            task="lesions",
            title="medseg lesions",
            details={"lesions": str(cohort), "n_lesions": n},
            seconds=time.perf_counter() - t0,
            table="lesion_cases",
        )
    return summary.to_dict()
