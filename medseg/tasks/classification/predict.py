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
from medseg.runs import Run
from medseg.tasks.classification.data import read_images
from medseg.tasks.inputs import expand_inputs
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


def classify(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    device: str = "auto",
    force: bool = False,
    operating_point: str | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Classify images with a trained classifier run; per-image probabilities + predicted class.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` (task classification)
    inputs : image files, folders of images (recursively), or a datalist JSON
        (:func:`medseg.tasks.inputs.expand_inputs`)
    out : output folder (a run folder: ``predictions.csv``, ``skipped.csv``, run.json)
    device : "auto" | "cpu" | "cuda"
    force : move an existing ``out`` aside instead of failing
    operating_point : "youden" | "high_sensitivity" | "high_specificity" | "default" (p >= 0.5);
        default: the one chosen at training (``operating_points.use``).
    split : list of a datalist input: "test" (default), "validation", "training" or "all"

    Returns
    -------
    dict: n_images, n_skipped, predictions (CSV path), operating_point, threshold, counts per class.

    Notes
    -----
    Images are read by :func:`medseg.io.read_image_uint8`, converted to the model's channel mode
    (gray <-> RGB) and resized to its training size. Unreadable images are listed in
    ``skipped.csv``; the others are classified.
    """
    model_dir = Path(model_dir)
    model, info = load_classifier(model_dir)
    class_names = list(info["class_names"])
    pos = int(info.get("positive_index", 1))
    point = operating_point or info.get("use", "default")
    if point not in info["operating_points"]:
        raise ConfigError(
            f"operating point {point!r} not available for this model; available: {sorted(info['operating_points'])}"
        )
    threshold = float(info["operating_points"][point])
    dev = select_device(device)
    model.to(dev)
    cases = expand_inputs(inputs, kind="image2d", split=split)
    run = Run.create(out, force=force, command="classify")
    with run:
        run.set(
            device=describe_device(dev), model_dir=str(model_dir.resolve()), operating_point=point, threshold=threshold
        )
        read = read_images([c.image for c in cases])
        kept = [cases[i] for i in read.index]
        rows: list[list[Any]] = []
        pred = np.zeros(0, dtype=np.int64)
        if read.images:
            stacked, _ = prepare_images(
                read.images, [c.image.name for c in kept], int(info["image_size"]), info["channels"]
            )
            p = softmax(predict_logits(model, stacked, dev, 32), float(info.get("temperature", 1.0)))
            pred = np.where(p[:, pos] >= threshold, pos, 1 - pos) if len(class_names) == 2 else p.argmax(1)
            for i, c in enumerate(kept):
                k = int(pred[i])
                rows.append(
                    [str(c.image), c.case_id, *[f"{v:.6f}" for v in p[i]], class_names[k], f"{p[i, k]:.6f}", point]
                    + [f"{threshold:.6f}"]
                )
        header = ["image", "case_id", *[f"prob_{c}" for c in class_names]]
        header += ["predicted_class", "predicted_probability", "operating_point", "threshold"]
        pred_csv = atomic_write_csv(run.path / "predictions.csv", header, rows)
        if read.skipped:
            atomic_write_csv(run.path / "skipped.csv", ["image", "error"], [[str(f), e] for f, e in read.skipped])
        summary = {
            "n_images": len(rows),
            "n_skipped": len(read.skipped),
            "predictions": str(pred_csv),
            "operating_point": point,
            "threshold": round(threshold, 4),
            "counts": {c: int((pred == k).sum()) for k, c in enumerate(class_names)},
        }
        run.write_json("summary.json", summary)
    return summary
