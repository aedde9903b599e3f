"""The review queue: which predicted cases a radiologist should correct first.

:func:`review_queue` reads a prediction folder's case table (``segment.json`` / ``detect.json`` /
``classify.json``, written by the cohort engine) and, optionally, the feedback exported from its
``report.html`` (``feedback.json`` or ``feedback.csv``), and orders the cases:

1. ``needs_correction`` in the feedback (the radiologist already said so), most uncertain first;
2. cases without a decision that are out of distribution (``ood`` flag), by review score;
3. the other cases without a decision, by review score (uncertainty in units of the run's calibrated
   review threshold; the uncertainty itself where the table has no score);
4. accepted cases last (nothing to correct).

Cases that were skipped (no prediction) are left out and counted. The queue is written as
``review_queue.csv`` (rank, case, why, decision, flags, uncertainty, score, the label / SEG files).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.errors import FileFormatError, InputError, MissingFileError
from medseg.utils import atomic_write_records

__all__ = ["review_queue", "read_feedback", "case_table", "QUEUE_COLUMNS", "TABLES"]

log = logging.getLogger(__name__)

#: the case tables of the prediction commands, looked for in this order
TABLES = ("segment.json", "detect.json", "classify.json")
QUEUE_COLUMNS = (
    "rank",
    "case_id",
    "why",
    "decision",
    "comment",
    "flags",
    "ood_reasons",
    "uncertainty",
    "review_score",
    "labels",
    "dicom_seg",
)
_WHY = ("needs correction (feedback)", "out of distribution", "uncertainty", "accepted (feedback)")


def read_feedback(path: str | Path) -> dict[str, dict[str, str]]:
    """``{case_id: {"decision", "comment"}}`` from a report's exported ``feedback.json`` or ``feedback.csv``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError("feedback file not found", path)
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                rows: list[Any] = list(csv.DictReader(f))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = data.get("feedback", []) if isinstance(data, Mapping) else data
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        raise FileFormatError(f"not a medseg feedback export ({type(e).__name__})", path) from None
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) and "case_id" in r for r in rows):
        raise FileFormatError("not a medseg feedback export (rows with case_id, decision, comment)", path)
    return {
        str(r["case_id"]): {"decision": str(r.get("decision") or ""), "comment": str(r.get("comment") or "")}
        for r in rows
    }


def case_table(pred_dir: Path, tables: tuple[str, ...] = TABLES) -> list[dict[str, Any]]:
    """The rows of a prediction folder's case table (the first of ``tables`` found).

    Raises FileFormatError for an unreadable table, InputError when there is none.
    """
    for name in tables:
        p = pred_dir / name
        if p.is_file():
            try:
                rows = json.loads(p.read_text())
            except ValueError:
                raise FileFormatError("unreadable case table", p) from None
            if not isinstance(rows, list):
                raise FileFormatError("a case table is a list of rows", p)
            return rows
    raise InputError(
        f"no case table ({', '.join(tables)}) here: pass the --out folder of medseg "
        + " / ".join(t.split(".")[0] for t in tables),
        pred_dir,
    )


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def review_queue(
    pred_dir: str | Path, feedback: str | Path | None = None, out: str | Path | None = None
) -> list[dict[str, Any]]:
    """Order a prediction folder's cases for correction; write the queue as CSV.

    Parameters
    ----------
    pred_dir : the output folder of ``medseg segment`` / ``detect`` / ``classify``.
    feedback : the report's exported ``feedback.json`` / ``feedback.csv`` (default: ``pred_dir/feedback.json``
        when it exists).
    out : the CSV to write (default ``pred_dir/review_queue.csv``).

    Returns
    -------
    The queue rows (:data:`QUEUE_COLUMNS`), first to correct first.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise MissingFileError("prediction folder not found", pred_dir)
    if feedback is None and (pred_dir / "feedback.json").is_file():
        feedback = pred_dir / "feedback.json"
    fb = read_feedback(feedback) if feedback is not None else {}
    rows = case_table(pred_dir)
    ok = [r for r in rows if r.get("status") == "ok"]
    unknown = sorted(set(fb) - {str(r.get("case_id")) for r in rows})
    if unknown:
        log.warning("feedback names %d case(s) that are not in this prediction folder (ignored)", len(unknown))
    queue = []
    for r in ok:
        cid = str(r["case_id"])
        decision = fb.get(cid, {}).get("decision", "")
        flags = str(r.get("flags") or "")
        tier = 0 if decision == "needs_correction" else 3 if decision == "accept" else 1 if "ood" in flags else 2
        score = _num(r.get("review_score", r.get("uncertainty")))
        outputs = r.get("outputs") or {}
        queue.append(
            (
                tier,
                -score,
                cid,
                {
                    "case_id": cid,
                    "why": _WHY[tier],
                    "decision": decision,
                    "comment": fb.get(cid, {}).get("comment", ""),
                    "flags": flags,
                    "ood_reasons": r.get("ood_reasons", ""),
                    "uncertainty": r.get("uncertainty", ""),
                    "review_score": r.get("review_score", ""),
                    "labels": outputs.get("labels", ""),
                    "dicom_seg": outputs.get("dicom_seg", ""),
                },
            )
        )
    queue.sort(key=lambda t: (t[0], t[1], t[2]))
    ordered = [{"rank": i + 1, **row} for i, (*_, row) in enumerate(queue)]
    if len(ok) < len(rows):
        log.info("%d skipped case(s) left out of the queue (no prediction to correct)", len(rows) - len(ok))
    atomic_write_records(Path(out) if out else pred_dir / "review_queue.csv", ordered, QUEUE_COLUMNS)
    return ordered
