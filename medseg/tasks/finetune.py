"""Learning from radiologists' corrections: ``medseg finetune --model RUN --corrections DIR``.

The correction loop (docs/review.md): ``medseg segment`` writes labels, DICOM SEG and ``report.html``;
the radiologist accepts or corrects cases (a DICOM SEG from the PACS viewer, a ``.seg.nrrd`` from 3D
Slicer, a NIfTI from ITK-SNAP); ``medseg review-queue`` says which cases to correct first; then
:func:`finetune` trains a new run that starts from the parent's weights and plan on

- the **corrected** cases: each correction file read onto its source image's grid with
  :func:`medseg.io.load_label` (segments mapped to the model's classes by label / coded concept);
- the **accepted** cases (with ``feedback``): the prediction the radiologist accepted, as is;
- a **replay** sample of the parent's own training cases (seeded), so that it does not forget;

validated on the parent's validation cases (the checkpoint kept is the best there). It writes
``finetune.json`` and a run whose ``run.json`` (``finetune``) and model card name the parent, its
checkpoint's SHA-256, the corrected / accepted / replayed cases and the Dice before / after on the
parent's validation cases and on the corrected cases (the latter were trained on: a fit figure).

Matching a correction to its case: a file or folder in ``DIR`` named ``<case_id>`` plus a label
suffix (``.seg.dcm``, ``.dcm``, ``.seg.nrrd``, ``.nrrd``, ``.nhdr``, ``.nii.gz``, ``.nii``; a trailing
``_corrected`` / ``_label`` / ``_labels`` / ``_seg`` is ignored), else for a DICOM SEG the case whose
DICOM series it references; the case's image comes from the prediction folder's case table. Or
``DIR`` is a datalist JSON (``training``: ``image`` + ``label``). A correction that cannot be used
(no matching case, a label that does not overlay its image, a class it cannot map) is left out with
its reason, and the other corrections are still used.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medseg.config import SegmentationConfig, apply_overrides, load_config, parse_config, read_datalist_json
from medseg.engine.checkpoint import is_fold_parent
from medseg.errors import InputError, MedsegError, MissingFileError
from medseg.io import discover, load, load_label, save_nifti
from medseg.io.label_load import seg_referenced_series
from medseg.io.registry import case_id as case_id_of
from medseg.io.registry import format_of
from medseg.models.weights import load_checkpoint
from medseg.runs import Run, file_sha256
from medseg.tasks.cohort import one_line_reason
from medseg.tasks.inputs import resolve_series
from medseg.tasks.modelcard import write_model_card
from medseg.tasks.ood import merge_references
from medseg.tasks.review_queue import TABLES, case_table, read_feedback
from medseg.tasks.segmentation.data import datalists
from medseg.tasks.segmentation.files import read_case_image, write_nifti
from medseg.tasks.segmentation.predict import Segmenter, load_segmenter, predict_case, reference_dice
from medseg.tasks.segmentation.train import train
from medseg.utils import atomic_write_text

__all__ = ["finetune", "find_corrections", "Correction", "LABEL_SUFFIXES"]

log = logging.getLogger("medseg.finetune")

#: correction file suffixes, longest first (a name is matched against the first that fits)
LABEL_SUFFIXES = (".seg.dcm", ".seg.nrrd", ".nii.gz", ".nrrd", ".nhdr", ".nii", ".dcm")
_TAGS = re.compile(r"([_-](corrected|correction|labels?|seg))+$", re.IGNORECASE)


@dataclass(frozen=True)
class Correction:
    """One case to learn from.

    ``kind``: ``corrected`` (a radiologist's label file) or ``accepted`` (the prediction the radiologist
    accepted); ``images``: the case's image file(s) (one per channel); ``label``: the file as given;
    ``series``: the series ``segment --series`` read in a folder holding several.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path
    kind: str
    series: str | int | None = None


def _stem(p: Path) -> str:
    name = p.name
    for suf in LABEL_SUFFIXES:
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    return name


def _images(row: Mapping[str, Any], base: Path) -> tuple[Path, ...]:
    """The image file(s) of a case table row (``source``: a path, or channel paths joined by " + ")."""
    out = []
    for part in str(row.get("source") or "").split(" + "):
        p = Path(part)
        out.append(p if p.is_absolute() or p.exists() else base / p)
    return tuple(out)


def _series_of(images: tuple[Path, ...]) -> set[str]:
    """The DICOM SeriesInstanceUIDs of a case's image (a DICOM folder or file), else empty."""
    uids: set[str] = set()
    for p in images:
        if not p.is_dir() and format_of(p) not in ("dicom", None):  # another format: no series to match
            continue
        uids.update(str(s.series_uid) for s in discover(p) if s.series_uid)
    return uids


def find_corrections(
    corrections: str | Path,
    predictions: str | Path | None = None,
    feedback: str | Path | None = None,
) -> tuple[list[Correction], list[dict[str, str]]]:
    """The cases to learn from, and the corrections left out (each ``{"item", "reason"}``).

    Parameters
    ----------
    corrections : a folder of corrected label files / SEG folders, or a datalist JSON (``training``
        entries with ``image`` and ``label``).
    predictions : the ``medseg segment`` output folder the corrections were made on (its
        ``segment.json`` gives each case's image). Default: ``corrections`` itself or its parent,
        whichever holds ``segment.json``. Not needed for a datalist.
    feedback : the report's ``feedback.json`` / ``.csv`` (default ``predictions/feedback.json`` when
        present): accepted cases join as ``accepted``; a case marked needs-correction without a
        correction file is reported as left out.

    Raises
    ------
    MissingFileError, InputError : no such folder / file, no case table, nothing usable.
    """
    src = Path(corrections)
    if not src.exists():
        raise MissingFileError("corrections not found", src)
    left: list[dict[str, str]] = []
    if src.is_file():
        content = read_datalist_json(src, InputError)
        entries = content.get("training") if isinstance(content, Mapping) else None
        if not isinstance(entries, list) or not entries:
            raise InputError("a corrections datalist needs a 'training' list of {image, label} entries", src)
        found = []
        for e in entries:
            if not isinstance(e, Mapping) or "image" not in e or "label" not in e:
                raise InputError("each corrections entry needs 'image' and 'label'", src)
            imgs = e["image"] if isinstance(e["image"], list) else [e["image"]]
            paths = tuple(p if Path(p).is_absolute() else src.parent / p for p in map(Path, imgs))
            lab = Path(e["label"]) if Path(e["label"]).is_absolute() else src.parent / e["label"]
            found.append(Correction(case_id_of(paths[0]), paths, lab, "corrected"))
        return found, left
    pred = (
        Path(predictions)
        if predictions is not None
        else next((d for d in (src, src.parent) if (d / TABLES[0]).is_file()), None)
    )
    if pred is None:
        raise InputError("which predictions were corrected? pass --predictions (the medseg segment output)", src)
    table = case_table(pred, TABLES[:1])  # segment.json: the only table whose cases have label maps
    rows = {str(r["case_id"]): r for r in table if r.get("case_id") and r.get("status") == "ok"}
    info = json.loads((pred / "run.json").read_text()) if (pred / "run.json").is_file() else {}
    chosen = info.get("series")  # what `segment --series` read in a folder holding several series
    if feedback is None and (pred / "feedback.json").is_file():
        feedback = pred / "feedback.json"
    decisions = {k: v["decision"] for k, v in read_feedback(feedback).items()} if feedback is not None else {}
    found_by_case: dict[str, Correction] = {}
    series: dict[str, set[str]] | None = None
    for f in sorted(src.iterdir()):
        if f.name.startswith(".") or f.name in (*TABLES, "feedback.json", "feedback.csv", "review_queue.csv"):
            continue
        stem = _stem(f)
        cid = next((c for c in (stem, _TAGS.sub("", stem)) if c in rows), None)
        if cid is None and (f.is_dir() or f.name.lower().endswith(".dcm")):
            refs = seg_referenced_series(f)
            if refs:
                if series is None:  # read only when a SEG needs it: one header walk per DICOM case
                    series = {c: _series_of(_images(r, pred)) for c, r in rows.items()}
                cid = next((c for c, uids in series.items() if uids & refs), None)
        if cid is None:
            if f.is_file() and not f.name.lower().endswith(LABEL_SUFFIXES):
                continue  # not a label file (notes, exports of the viewer)
            left.append({"item": f.name, "reason": "no case of the prediction folder has this name or series"})
            continue
        if cid in found_by_case:
            left.append({"item": f.name, "reason": f"a second correction of case {cid} (the first one is used)"})
            continue
        if decisions.get(cid) == "accept":
            log.info("case %s was accepted in the feedback but has a correction file: the correction is used", cid)
        found_by_case[cid] = Correction(cid, _images(rows[cid], pred), f, "corrected", chosen)
    for cid, decision in decisions.items():
        if cid in found_by_case or cid not in rows:
            continue
        if decision == "needs_correction":
            left.append({"item": cid, "reason": "marked 'needs correction' but no corrected label in the folder"})
        elif decision == "accept":
            labels = (rows[cid].get("outputs") or {}).get("labels")
            if labels:
                lp = Path(labels) if Path(labels).is_absolute() else pred / labels
                found_by_case[cid] = Correction(cid, _images(rows[cid], pred), lp, "accepted", chosen)
    return [found_by_case[c] for c in sorted(found_by_case)], left


def _raw_values(cfg: SegmentationConfig) -> np.ndarray:
    """class index -> the label-file value the training pipeline maps to it (inverse of ``label_map``)."""
    k = len(cfg.class_names)
    out = np.arange(k, dtype=np.uint8)
    for c in range(k):
        if c in cfg.label_map:  # value c itself means another class: use a value that maps to c
            srcs = sorted(s for s, d in cfg.label_map.items() if d == c)
            if not srcs:
                raise InputError(f"label_map sends every value to other classes than {cfg.class_names[c]!r}")
            out[c] = srcs[0]
    return out


def _prepare(
    items: Sequence[Correction], cfg: SegmentationConfig, folder: Path
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Each correction onto its image's grid as a NIfTI label in ``folder`` -> datalist entries."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = _raw_values(cfg)
    entries, left = [], []
    for c in items:
        try:
            ref = load(resolve_series(c.images[0], c.series))
            lab = load_label(c.label, ref, classes=list(cfg.class_names))
            arr = raw[np.asarray(lab)[0].astype(np.int64)]
            out = write_nifti(arr, np.asarray(ref.affine, dtype=np.float64), folder / f"{c.case_id}_label.nii.gz")
            image: Any = [str(p) for p in c.images] if len(c.images) > 1 else str(c.images[0])
            if len(c.images) == 1 and c.images[0].is_dir():
                # a DICOM series folder (perhaps one of several): the voxels just read, kept in the run, so the
                # training reads exactly the series the correction was drawn on (and the run stays reproducible)
                image = str(save_nifti(ref, folder / f"{c.case_id}_image.nii.gz"))
        except MedsegError as e:
            left.append({"item": c.label.name, "reason": one_line_reason(e)})
            log.warning("correction %s left out: %s", c.label.name, one_line_reason(e))
            continue
        entries.append({"image": image, "label": str(out), "case_id": c.case_id, "kind": c.kind})
    return entries, left


def _dice(
    models: Mapping[str, Segmenter], items: Sequence[Mapping[str, Any]], cfg: SegmentationConfig
) -> dict[str, dict[str, Any]]:
    """Mean Dice per class over ``items`` (image + label files) of each model, as ``segment`` computes it;
    each image is read once for all the models."""
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for it in items:
        paths = it["image"] if isinstance(it["image"], list) else [it["image"]]
        img = read_case_image(paths, spatial_dims=cfg.spatial_dims)
        for name, sm in models.items():
            res = predict_case(
                sm.model, img.clone(), meta=sm.meta, infer=sm.infer, device=sm.device, post=sm.cfg.postprocess
            )
            rows[name].append(reference_dice(Path(it["label"]), res["labels"], cfg.label_map, sm.class_names))
    return {name: _mean(r) for name, r in rows.items()}


def _mean(rows: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """The case count and the mean of each ``dice_*`` figure over ``rows`` ({} for none)."""
    if not rows:
        return {}
    keys = [k for k in rows[0] if k.startswith("dice_")]
    return {"cases": len(rows), **{k: round(float(np.nanmean([r.get(k, np.nan) for r in rows])), 4) for k in keys}}


def _config(parent_dir: Path, datalist: Path, name: str, overrides: Sequence[str]) -> SegmentationConfig:
    raw = yaml.safe_load((parent_dir / "config.yaml").read_text())
    data = dict(raw.get("data") or {})
    data.update({"synthetic": False, "datalist": str(datalist), "root": None, "folds": None})
    raw.update({"data": data, "name": name})
    raw.pop("synthetic", None)
    train_s = dict(raw.get("train") or {})
    train_s.update({"epochs": 20, "lr": float(train_s.get("lr", 1e-2)) * 0.5, "max_minutes": None})
    raw["train"] = train_s
    raw = apply_overrides(raw, overrides, source="finetune")
    cfg = parse_config(raw, source=str(parent_dir / "config.yaml"))
    if not isinstance(cfg, SegmentationConfig):
        raise InputError("medseg finetune fine-tunes segmentation runs", parent_dir)
    return cfg


def finetune(
    model: str | Path,
    corrections: str | Path,
    *,
    predictions: str | Path | None = None,
    feedback: str | Path | None = None,
    replay: int | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    force: bool = False,
) -> dict[str, Any]:
    """Fine-tune segmentation run ``model`` on corrected cases; returns the ``finetune.json`` content.

    Parameters
    ----------
    model : the parent run folder (a finished single-model segmentation run).
    corrections, predictions, feedback : see :func:`find_corrections`.
    replay : parent training cases mixed in (default: as many as there are cases to learn from; 0: none).
    out : the new run folder (default ``<model>-finetuned`` beside the parent).
    overrides : ``--set`` values for the new run's config. Defaults changed from the parent's:
        ``train.epochs = 20``, ``train.lr`` = half the parent's, no ``train.max_minutes``.
    force : move an existing ``out`` aside.

    Raises
    ------
    MissingFileError, InputError : not a finished segmentation run; no usable correction.
    """
    parent = Path(model)
    info_path = parent / "run.json"
    if not (parent / "config.yaml").is_file() or not info_path.is_file():
        raise MissingFileError("not a trained medseg run folder (no config.yaml / run.json)", parent)
    if is_fold_parent(parent):
        raise InputError("a cross-validation parent is an ensemble: fine-tune one of its fold runs", parent)
    info = json.loads(info_path.read_text())
    if info.get("status") != "ok" or info.get("command") not in ("train", "finetune"):
        raise InputError(f"the run is not a finished training run (status {info.get('status')!r})", parent)
    pcfg = load_config(parent / "config.yaml")
    if not isinstance(pcfg, SegmentationConfig):
        raise InputError(f"medseg finetune fine-tunes segmentation runs; this one is {pcfg.task!r}", parent)
    found, left = find_corrections(corrections, predictions, feedback)
    if not found:
        why = "; ".join(f"{x['item']}: {x['reason']}" for x in left[:5])
        raise InputError("no correction matched a case" + (f" ({why})" if why else ""), corrections)
    ckpt_path = parent / "checkpoints" / "best.pt"
    ckpt = load_checkpoint(ckpt_path)
    plan = json.loads((parent / "plan.json").read_text())
    p_train, p_val, _ = datalists(pcfg, parent / "data")
    p_val = [it for it in p_val if "block" not in it]  # a spatial-block validation case is not a whole case
    recorded = (info.get("data") or {}).get("datalist_sha256")
    if pcfg.data.datalist is not None and recorded and file_sha256(pcfg.data.datalist) != recorded:
        log.warning("the parent's datalist changed since it was trained: replay and validation use its new content")
    out_dir = Path(out) if out is not None else parent.with_name(parent.name + "-finetuned")
    cfg = _config(parent, out_dir / "data" / "finetune_datalist.json", out_dir.name, overrides)
    with Run.create(out_dir, cfg, force=force, command="finetune") as run:
        entries, bad = _prepare(found, cfg, out_dir / "data" / "corrections")
        left += bad
        if not entries:
            raise InputError("no correction could be used: " + "; ".join(f"{x['item']}: {x['reason']}" for x in bad))
        n_replay = len(entries) if replay is None else max(0, int(replay))
        rng = random.Random(cfg.seed)
        replayed = rng.sample(p_train, min(n_replay, len(p_train)))
        train_items = [{"image": e["image"], "label": e["label"]} for e in entries] + replayed
        atomic_write_text(
            out_dir / "data" / "finetune_datalist.json",
            json.dumps({"training": train_items, "validation": p_val}, indent=2) + "\n",
        )
        record = {
            "parent": str(parent.resolve()),
            "parent_config_hash": info.get("config_hash"),
            "parent_checkpoint_sha256": file_sha256(ckpt_path),
            "cases": [{"case_id": e["case_id"], "kind": e["kind"]} for e in entries],
            "replay": [case_id_of(Path(str(it["image"]))) for it in replayed],
            "left_out": left,
            "validation": "the parent's validation cases",
        }
        run.set(finetune=record)
        summary = train(cfg, run, init_weights=ckpt["model"], fixed_plan=plan)
        # the new model has seen the parent's data and the corrections: its OOD reference spans both
        ref_files = [parent / "ood_reference.json", out_dir / "ood_reference.json"]
        if all(p.is_file() for p in ref_files):
            run.write_json("ood_reference.json", merge_references([json.loads(p.read_text()) for p in ref_files]))
        with run.stage("before_after"):
            corrected = [e for e in entries if e["kind"] == "corrected"]
            device = "cpu" if cfg.device == "cpu" else "auto"
            models = {"parent": load_segmenter(parent, device), "finetuned": load_segmenter(out_dir, device)}
            record["dice"] = {
                "parent_validation": _dice(models, p_val, cfg),
                "corrected_cases": _dice(models, corrected, cfg),
            }
        record["train"] = {k: summary.get(k) for k in ("epochs", "best_epoch", "best_val_dice", "train_seconds")}
        run.set(finetune=record)
        run.write_json("finetune.json", record)
        write_model_card(run, cfg, summary)
    return {**record, "run_dir": str(out_dir)}
