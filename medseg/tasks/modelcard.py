"""The model card of a training run: ``model_card.md`` (for people) and ``model_card.json`` (for tools).

:func:`write_model_card` is called at the end of every task's ``train``. It gathers what the run
folder already records, so the card cannot disagree with it: the task, classes and network
(``config.yaml``), the training data (``run.json`` ``data``: source, datalist and its SHA-256,
case counts per split, the fingerprint: modalities, spacings, intensities, shapes), the
validation figures (the training summary and ``metrics.csv`` at the best epoch), the calibrated
needs-review threshold (``run.json`` ``review``), the intended input and the known limits (the
out-of-distribution reference, ``ood_reference.json``) and the versions. It is the document a
methods section or a radiologist needs; nothing in it comes from a patient.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.runs import Run
from medseg.tasks.ood import (
    ANISOTROPY,
    EXTENT_RANGE,
    INTENSITY_MARGIN,
    NOISE_RATIO,
    SPACING_RATIO,
    merge_references,
)
from medseg.utils import atomic_write_text

__all__ = ["write_model_card", "model_card", "write_ensemble_card"]

log = logging.getLogger("medseg.modelcard")

_AXES = ("R/L", "A/P", "S/I")


def _read_json(p: Path) -> dict[str, Any]:
    try:
        out: dict[str, Any] = json.loads(p.read_text())
        return out
    except (OSError, ValueError):
        return {}


def _best_row(run_dir: Path, epoch: Any) -> dict[str, str]:
    """The row of ``metrics.csv`` at the best epoch (its per-class validation figures)."""
    try:
        with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    for r in rows:
        if epoch is not None and str(r.get("epoch")) == str(epoch):
            return r
    return rows[-1] if rows else {}


def _num(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return round(f, 4)


def _dump(section: Any) -> dict[str, Any] | None:
    """A config section as a dict (None when there is none)."""
    dump = getattr(section, "model_dump", None)
    return dict(dump(exclude_none=True)) if callable(dump) else None


def model_card(run: Run, cfg: Any, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The model card content (what :func:`write_model_card` writes as JSON)."""
    info = _read_json(run.path / "run.json")
    data = info.get("data") or {}
    reference = _read_json(run.path / "ood_reference.json")
    best = _best_row(run.path, summary.get("best_epoch"))

    def is_figure(k: str) -> bool:
        return k.startswith(("best_val", "val_", "test_")) and not k.endswith(("_cases", "_images"))

    validation = {k: _num(v) for k, v in summary.items() if is_figure(k)}
    validation.update({k: _num(v) for k, v in best.items() if is_figure(k) and v not in ("", None)})
    task = getattr(cfg, "task", "?")
    classes = list(getattr(cfg, "class_names", []) or [])
    model = getattr(cfg, "model", None)
    return {
        "name": run.path.name,
        "task": task,
        "classes": classes,
        "modality": getattr(cfg, "modality", None),
        "spatial_dims": getattr(cfg, "spatial_dims", 2 if task != "segmentation" else None),
        "model": _dump(model),
        "training_data": data,
        "training": {
            k: summary.get(k)
            for k in ("epochs", "best_epoch", "stop_reason", "train_seconds", "seconds")
            if k in summary
        },
        "validation": validation,
        "review": info.get("review"),
        "finetune": info.get("finetune"),
        "ood_reference": reference or None,
        "versions": info.get("versions"),
        "git_revision": info.get("git_revision"),
        "config_hash": info.get("config_hash"),
        "device": info.get("device"),
        "created": info.get("start"),
    }


def _span(lo: float, hi: float) -> str:
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g} to {hi:.4g}"


def _ranges(rs: Sequence[Sequence[float]], names: Sequence[str], unit: str) -> str:
    return ", ".join(f"{n} {_span(lo, hi)} {unit}" for n, (lo, hi) in zip(names, rs))


def _markdown(card: Mapping[str, Any]) -> str:
    data = card["training_data"] or {}
    ref = card["ood_reference"] or {}
    counts = data.get("counts") or {}
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"- **Task**: {card['task']}"
        + (f", {card['spatial_dims']}D" if card.get("spatial_dims") else "")
        + (f", modality {card['modality']}" if card.get("modality") else ""),
        f"- **Classes**: {', '.join(card['classes']) or '-'}",
        f"- **Network**: {(card.get('model') or {}).get('name', '-')} "
        f"({json.dumps({k: v for k, v in (card.get('model') or {}).items() if k != 'name'}, default=str)})",
        f"- **Created**: {card.get('created')} on {card.get('device')}",
        *_ensemble_lines(card.get("ensemble")),
        *_finetune_lines(card.get("finetune")),
        "",
        "## Training data",
        "",
    ]
    if data.get("source") == "synthetic":
        lines.append(
            "- **Source**: synthetic data generated by medseg (phantoms / synthetic tiles), generator settings "
            f"`{json.dumps(data.get('generator') or {})}`. **Not for clinical use**: a model trained on synthetic "
            "data has seen no patient."
        )
    if data.get("datalist"):
        lines.append(f"- **Datalist**: `{data['datalist']}` (SHA-256 `{data.get('datalist_sha256')}`)")
    lines.append(
        f"- **Cases**: {', '.join(f'{k} {n}' for k, n in counts.items()) or '-'} (case ids in model_card.json)"
    )
    fp = data.get("fingerprint") or {}
    if ref:
        d3 = ref.get("spatial_dims") == 3
        unit = "mm" if ref.get("spacing_mm") else "px"
        names = _AXES if d3 else ("axis 0", "axis 1")
        lines.append(
            f"- **Modalities**: {', '.join(ref.get('modalities') or []) or card.get('modality') or '-'}; "
            f"{ref.get('channels')} channel(s)"
        )
        if ref.get("spacing_mm"):
            lines.append(f"- **Spacing**: {_ranges(ref['spacing_mm'], names, 'mm')}")
        lines.append(f"- **Field of view**: {_ranges(ref['extent_mm'], names, unit)}")
        if ref.get("noise"):
            lines.append(f"- **Noise level**: {', '.join(_span(lo, hi) for lo, hi in ref['noise'])}")
        if ref.get("acquisition_axes"):
            lines.append(f"- **Thick-slice axis**: {', '.join(ref['acquisition_axes'])}")
        for c, rng in enumerate(ref.get("intensity") or []):
            lo, hi = rng[0], rng[-1]
            lines.append(
                f"- **Intensity** {'inside the body' if d3 else 'of the images'}"
                + (f" (channel {c})" if len(ref["intensity"]) > 1 else "")
                + f": p{ref['percentiles'][0]} {_span(*lo)}, p{ref['percentiles'][-1]} {_span(*hi)}"
            )
    if fp.get("median_shape"):
        lines.append(
            f"- **Median shape** (voxels, RAS): {fp['median_shape']}; median spacing {fp.get('median_spacing')} mm"
        )
    if fp.get("foreground"):
        f = fp["foreground"]
        lines.append(
            f"- **Foreground intensity** (labelled voxels): p0.5 {f['p00_5']:.4g}, p99.5 {f['p99_5']:.4g}, "
            f"mean {f['mean']:.4g}, sd {f['std']:.4g}"
        )
    lines += ["", "## Validation", ""]
    val = card.get("validation") or {}
    lines += [f"- {k}: {v}" for k, v in val.items()] or ["- no validation figures (no validation cases)"]
    review = card.get("review") or {}
    if review.get("threshold") is not None:
        lines.append(
            f"- needs-review threshold: uncertainty > {review['threshold']:.4g} "
            f"({review.get('percentile', 95):g}th percentile over {review.get('n_cases')} validation case(s))"
        )
    elif review:
        lines.append(f"- needs-review threshold: not calibrated ({review.get('reason', 'no validation cases')})")
    lines += ["", "## Intended input", ""]
    if ref:
        lines.append(
            f"{'3D volumes' if ref.get('spatial_dims') == 3 else '2D images'} with {ref.get('channels')} channel(s)"
            + (
                f" of modality {', '.join(ref.get('modalities') or [card.get('modality') or '?'])}"
                if ref.get("spatial_dims") == 3
                else ""
            )
            + ", like the training data above. medseg checks every case at inference (`--ood warn|refuse|off`)."
        )
    lines += [
        "",
        "## Known limits",
        "",
        "A case is flagged out of distribution (OOD) when it differs from the training data:",
        "- modality other than the training modalities; a different number of channels;",
        f"- spacing more than {SPACING_RATIO:g}x outside the training range on any axis;",
        f"- thick slices (spacing ratio > {ANISOTROPY:g}) along another axis than in training (acquisition plane);",
        f"- field of view below {EXTENT_RANGE[0]:g}x the smallest or above {EXTENT_RANGE[1]:g}x the largest "
        "training one;",
        f"- intensity percentiles (inside the body) beyond the training range by more than "
        f"{INTENSITY_MARGIN:g}x the training p5-p95 spread;",
        f"- a noise level more than {NOISE_RATIO:g}x outside the training range;",
        f"- trained on {counts.get('training', '?')} case(s): figures on few cases are uncertain; "
        "validate on your own data before use.",
        "",
        "## Versions",
        "",
        f"- medseg git revision: {card.get('git_revision')}; config hash {card.get('config_hash')}",
        f"- {', '.join(f'{k} {v}' for k, v in (card.get('versions') or {}).items())}",
        "",
    ]
    return "\n".join(lines)


def _finetune_lines(ft: Mapping[str, Any] | None) -> list[str]:
    """The model card's lines on a fine-tuned run (``medseg finetune``): parent, cases, Dice before / after."""
    if not ft:
        return []
    kinds = [c.get("kind") for c in ft.get("cases") or []]
    lines = [
        f"- **Fine-tuned from** `{ft.get('parent')}` (checkpoint SHA-256 `{ft.get('parent_checkpoint_sha256')}`) on "
        f"{kinds.count('corrected')} corrected and {kinds.count('accepted')} accepted case(s) "
        f"({', '.join(c['case_id'] for c in ft.get('cases') or [])}) plus {len(ft.get('replay') or [])} replayed "
        f"training case(s); {len(ft.get('left_out') or [])} correction(s) left out (finetune.json says why)"
    ]
    for where, figs in (ft.get("dice") or {}).items():
        before, after = (figs or {}).get("parent") or {}, (figs or {}).get("finetuned") or {}
        if before.get("dice_mean") is not None and after.get("dice_mean") is not None:
            name = "parent's validation cases"
            if where == "corrected_cases":
                name = "corrected cases (trained on: a fit figure)"
            lines.append(
                f"- **Dice on the {name}**: {before['dice_mean']} before, "
                f"{after['dice_mean']} after ({before.get('cases')} case(s))"
            )
    return lines


def _ensemble_lines(ens: Mapping[str, Any] | None) -> list[str]:
    if not ens:
        return []
    return [
        f"- **Ensemble of {ens['folds']} folds** ({', '.join(ens['members'])}): the predict commands average "
        "the fold models' probabilities (score maps for detection). The validation figures below are the "
        f"{ens['folds']}-fold cross-validation mean ± SD of the single fold models: every training case "
        "was seen by some fold, so the ensemble itself has no held-out validation figure."
    ]


def write_ensemble_card(parent: Path, cfg: Any, cv: Mapping[str, Any]) -> dict[str, Any] | None:
    """Model card, OOD reference and review threshold of a cross-validation parent run (its fold ensemble).

    Written when every fold has finished and has its own card. The card is fold 0's (task, network,
    modality, versions) with: ``ensemble`` (folds, members), the cross-validation figures as
    validation, the training data counted over all folds, ``ood_reference.json`` spanning every fold's
    reference (:func:`medseg.tasks.ood.merge_references`) and the needs-review threshold: the median of
    the folds' calibrated thresholds (each calibrated on its fold's validation cases with a single model;
    the ensemble's averaged probabilities are usually less uncertain, so it flags fewer cases).

    Returns
    -------
    the ``review`` record for the parent's run.json, or None when a fold has no card.
    """
    parent = Path(parent)
    done = list(cv.get("folds_done") or [])
    cards = [_read_json(parent / f"fold_{k}" / "model_card.json") for k in done]
    if not cards or len(done) != int(cv.get("folds", 0)) or not all(cards):
        return None
    card = dict(cards[0])
    refs = [c["ood_reference"] for c in cards if c.get("ood_reference")]
    ref = merge_references(refs) if len(refs) == len(cards) else None
    if ref is not None:
        atomic_write_text(parent / "ood_reference.json", json.dumps(ref, indent=2) + "\n")
    split = _read_json(parent / "folds.json")
    data = dict(card.get("training_data") or {})
    data.pop("cases", None)  # per-fold case ids: in each fold's card
    data["counts"] = {"training (all folds)": split.get("cases"), "test": split.get("test_cases")}
    thresholds = [(c.get("review") or {}).get("threshold") for c in cards]
    known = [float(t) for t in thresholds if t is not None]
    review: dict[str, Any] = {
        "threshold": float(np.median(known)) if known else None,
        "percentile": (cards[0].get("review") or {}).get("percentile", 95),
        "n_cases": sum(int((c.get("review") or {}).get("n_cases") or 0) for c in cards),
        "per_fold": thresholds,
        "source": "median of the folds' calibrated thresholds (single fold models)",
    }
    if not known:
        review["reason"] = "no fold has a calibrated threshold"
    metrics = cv.get("metrics") or {}
    card.update(
        name=parent.name,
        ensemble={"folds": len(done), "members": [f"fold_{k}" for k in done]},
        training_data=data,
        training={"folds": len(done), "quote": cv.get("quote")},
        validation={
            f"cv_{k}": f"{v['mean']:.4g} ± {v['sd']:.4g}" for k, v in metrics.items() if v.get("mean") is not None
        },
        review=review,
        ood_reference=ref,
    )
    atomic_write_text(parent / "model_card.json", json.dumps(card, indent=2, default=str) + "\n")
    atomic_write_text(parent / "model_card.md", _markdown(card))
    log.info("model card of the %d-fold ensemble: %s", len(done), parent / "model_card.md")
    return review


def write_model_card(run: Run, cfg: Any, summary: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``model_card.md`` and ``model_card.json`` into the training run folder.

    Parameters
    ----------
    run : the training run (its run.json ``data`` from :func:`medseg.tasks.provenance.record_training_data`).
    cfg : the run's config.
    summary : the training summary (epochs, best epoch, validation figures).

    Returns
    -------
    (markdown path, JSON path).
    """
    card = model_card(run, cfg, summary)
    j = atomic_write_text(run.path / "model_card.json", json.dumps(card, indent=2, default=str) + "\n")
    m = atomic_write_text(run.path / "model_card.md", _markdown(card))
    log.info("model card: %s", m)
    return m, j
