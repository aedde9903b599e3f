"""Inference of a trained classifier run: load it, predict probabilities, ``medseg classify``.

A classification run folder holds what inference needs: the network (``config.yaml`` +
``checkpoints/best.pt``) and ``classifier.json`` (class names, image size, channel mode, softmax
temperature, operating-point thresholds), written by :func:`medseg.tasks.classification.train`.
:func:`load_classifier` is the one reader of that folder (``classify``, ``explain``, weak
supervision and the demo use it): the format and its reader live with the task that writes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import softmax as _scipy_softmax
from torch import nn

from medseg.config import ClassificationConfig
from medseg.engine.checkpoint import load_run_model
from medseg.engine.device import describe_device, select_device
from medseg.errors import ConfigError, InputError
from medseg.io import as_rgb, read_image_uint8
from medseg.review.cases import ReviewCase
from medseg.review.overlay import save_png, shrink
from medseg.runs import Run
from medseg.tasks.cohort import CaseOutputs, CaseResult, finish_cohort, run_cohort
from medseg.tasks.inputs import CaseInput, expand_inputs, refuse_series_for_2d
from medseg.tasks.ood import check_ood_2d, check_ood_mode, read_reference
from medseg.transforms.classification import normalize_lite, prepare_images
from medseg.utils import atomic_write_csv

__all__ = ["load_classifier", "predict_logits", "softmax", "write_predictions", "classify"]

log = logging.getLogger("medseg.tasks.classification")


def load_classifier(
    model_dir: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """A trained classifier and what it needs for inference (used by ``classify`` and Grad-CAM).

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` with ``task: classification``
    map_location : device the weights are loaded to

    Returns
    -------
    (model in eval mode, info) where ``info`` holds ``class_names``, ``positive_index``,
    ``image_size``, ``channels`` ("rgb"/"gray"), ``temperature``, ``operating_points``
    ({name: probability threshold}) and ``use`` (the default point). Feed the model
    :func:`medseg.transforms.classification.preprocess` output.

    Raises
    ------
    MissingFileError (no config.yaml / checkpoint), InputError (not a classification run),
    CheckpointError.
    """
    model_dir = Path(model_dir)
    model, cfg, ckpt = load_run_model(model_dir, map_location=map_location)
    if not isinstance(cfg, ClassificationConfig):
        raise InputError(f"not a classification run (task {cfg.task!r})", model_dir)
    meta = ckpt.get("meta", {})
    info_path = model_dir / "classifier.json"
    if info_path.is_file():
        info: dict[str, Any] = json.loads(info_path.read_text())
    else:
        log.warning("%s has no classifier.json (training did not finish?): using threshold 0.5", model_dir)
        info = {
            "class_names": meta.get("class_names", list(cfg.class_names)),
            "positive_index": meta.get("positive_index", 1),
            "image_size": meta.get("image_size", cfg.image_size),
            "channels": meta.get("channels", "rgb"),
            "temperature": 1.0,
            "operating_points": {"default": 0.5},
            "use": "default",
        }
    if meta.get("ensemble"):  # a cross-validation parent run: the mean of its K folds' probabilities
        info = {**info, "ensemble": meta["ensemble"]}
    return model, info


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """Logits ``(N, K)`` of a uint8 batch ``(N, C, S, S)`` (normalised here), in eval mode, in batches."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize_lite(images[i : i + batch_size]).to(device)
        out.append(model(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities ``(N, K)`` of logits ``(N, K)`` at a softmax temperature."""
    return np.asarray(_scipy_softmax(z / temperature, axis=1))


def write_predictions(
    path: Path,
    names: Sequence[str],
    probs: np.ndarray,
    class_names: Sequence[str],
    labels: np.ndarray | None = None,
    pred: np.ndarray | None = None,
) -> Path:
    """Write ``image, prob_<class>..., predicted_class[, reference_class]`` rows (``evaluation/test_predictions.csv``).

    ``pred`` (class indices) defaults to the argmax of ``probs`` ``(N, K)``.
    """
    chosen = probs.argmax(1) if pred is None else pred
    header = ["image", *[f"prob_{c}" for c in class_names], "predicted_class"]
    header += ["reference_class"] if labels is not None else []
    rows = []
    for i, n in enumerate(names):
        row = [n, *[f"{v:.6f}" for v in probs[i]], class_names[int(chosen[i])]]
        if labels is not None:
            row.append(class_names[int(labels[i])])
        rows.append(row)
    return atomic_write_csv(path, header, rows)


def _normalised_entropy(p: np.ndarray) -> float:
    """Entropy of class probabilities ``(K,)`` divided by log K: 0 (certain) .. 1 (uniform)."""
    q = np.clip(p, 1e-12, 1.0)
    return float(-(q * np.log(q)).sum() / np.log(len(q)))


def classify(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    device: str = "auto",
    force: bool = False,
    operating_point: str | None = None,
    split: str = "test",
    ood: str = "warn",
    series: str | int | None = None,
) -> dict[str, Any]:
    """Classify images with a trained classifier run; per-image probabilities + predicted class.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` (task classification)
    inputs : image files, folders of images (recursively), or a datalist JSON
        (:func:`medseg.tasks.inputs.expand_inputs`)
    out : output folder (a run folder: ``predictions.csv``, ``classify.csv``/``.json`` (one row per
        case with status and reason), ``report.html``, ``thumbnails/``, run.json)
    device : "auto" | "cpu" | "cuda" | "cuda:N"
    force : move an existing ``out`` aside instead of failing
    operating_point : "youden" | "high_sensitivity" | "high_specificity" | "default" (p >= 0.5);
        default: the one chosen at training (``operating_points.use``).
    split : list of a datalist input: "test" (default), "validation", "training" or "all"
    series : refused (a ConfigError): 2D image files have no series.
    ood : "warn" | "refuse" | "off": images unlike the training images are flagged, skipped, or
        not checked (needs the run's ``ood_reference.json``).

    Returns
    -------
    The cohort summary (``cases``, ``ok``, ``skipped``, ``skipped_cases``, ``ood``, ``table``,
    ``report``, ``exit_code`` ...) plus ``predictions`` (CSV path), ``operating_point``,
    ``threshold`` and ``counts`` per class.

    Notes
    -----
    Images are read by :func:`medseg.io.read_image_uint8`, converted to the model's channel mode
    (gray <-> RGB) and resized to its training size, one case at a time (a bad image is skipped
    with its reason; the others are classified). The ``uncertainty`` column is the normalised
    entropy of the calibrated probabilities.
    """
    refuse_series_for_2d(series, "classify")
    model_dir = Path(model_dir)
    check_ood_mode(ood)
    model, info = load_classifier(model_dir)
    class_names = list(info["class_names"])
    pos = int(info.get("positive_index", 1))
    point = operating_point or info.get("use", "default")
    if point not in info["operating_points"]:
        raise ConfigError(
            f"operating point {point!r} not available for this model; available: {sorted(info['operating_points'])}"
        )
    threshold = float(info["operating_points"][point])
    temperature = float(info.get("temperature", 1.0))
    dev = select_device(device)
    model.to(dev)
    cases = expand_inputs(inputs, kind="image2d", split=split)
    reference = read_reference(model_dir)
    identity = json.dumps([str(model_dir.resolve()), [str(i) for i in inputs], split, point, ood])
    run = Run.create(out, force=force, command="classify", identity=identity)

    def one(case: CaseInput, files: CaseOutputs) -> CaseResult:
        img = read_image_uint8(case.image)
        reasons = check_ood_2d(img, reference, ood, case.source)
        stacked, _ = prepare_images([img], [case.image.name], int(info["image_size"]), info["channels"])
        p = softmax(predict_logits(model, stacked, dev, 1), temperature)[0]
        k = (pos if p[pos] >= threshold else 1 - pos) if len(class_names) == 2 else int(p.argmax())
        thumb = save_png(shrink(as_rgb(img)), files.path("thumbnails", f"{case.case_id}.png"))
        files.add("thumbnail", thumb)
        unc = round(_normalised_entropy(p), 4)
        values = {
            **{f"prob_{c}": round(float(v), 6) for c, v in zip(class_names, p)},
            "predicted_class": class_names[k],
            "predicted_probability": round(float(p[k]), 6),
            "operating_point": point,
            "threshold": round(threshold, 6),
            "uncertainty": unc,
        }
        review = ReviewCase(
            case_id=case.case_id,
            task="classification",
            thumbnail=str(thumb.resolve()),
            prediction=class_names[k],
            probability=round(float(p[k]), 4),
            uncertainty=unc,
            needs_review=bool(reasons),
        )
        flags = ["ood", "needs_review"] if reasons else []
        return CaseResult.of(case, flags=flags, ood_reasons=reasons, values=values, review=review)

    with run:
        run.set(
            device=describe_device(dev),
            model_dir=str(model_dir.resolve()),
            operating_point=point,
            threshold=threshold,
            ensemble=info.get("ensemble"),
        )
        results = run_cohort(cases, one, out=run.path, command="classify")
        ok = [r for r in results if r.ok]
        header = ["image", "case_id", *[f"prob_{c}" for c in class_names]]
        header += ["predicted_class", "predicted_probability", "operating_point", "threshold"]
        rows = [
            [r.source, r.case_id, *[f"{r.values[f'prob_{c}']:.6f}" for c in class_names]]
            + [r.values["predicted_class"], f"{r.values['predicted_probability']:.6f}", point, f"{threshold:.6f}"]
            for r in ok
        ]
        pred_csv = atomic_write_csv(run.path / "predictions.csv", header, rows)
        details = {
            "predictions": str(pred_csv),
            "operating_point": point,
            "threshold": round(threshold, 4),
            "counts": {c: sum(r.values["predicted_class"] == c for r in ok) for c in class_names},
        }
        summary = finish_cohort(
            run,
            results,
            command="classify",
            task="classification",
            title="medseg classification review",
            details=details,
        )
    return summary.to_dict()
