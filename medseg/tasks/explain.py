"""``medseg explain``: Grad-CAM / Grad-CAM++ maps of a trained classifier run, per input image.

``explain(model_dir, inputs, out, ...)`` loads a classification run
(:func:`medseg.tasks.classification.load_classifier`), takes its inputs like every predict command
(:func:`medseg.tasks.inputs.expand_inputs`: files, folders, the ``test`` list of a datalist by
default), reads the pixels like every 2D task (:func:`medseg.io.read_image_uint8`), computes the
maps at each image's own size (:func:`medseg.explain.maps.classifier_cams`: preprocessing exactly
as in training) and writes

    <out>/cams/<case>_cam.png    heat-map overlay on the image (medseg.review.overlay.heatmap_2d)
    <out>/cams/<case>_cam.npy    the map itself, float32 (H, W) in [0, 1], aligned with the image
    <out>/explain.csv            case, image, target class, predicted class and probability, files
    <out>/skipped.csv            images that could not be read (the others are processed)
    <out>/run.json               provenance (medseg run folder)

For segmentation networks and 3D volumes use the library (:func:`medseg.explain.cam.grad_cam` with
a :class:`~monai.data.MetaTensor`; :func:`medseg.explain.writers.save_cam_nifti` keeps the affine).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.config import load_config
from medseg.engine.device import describe_device, select_device
from medseg.errors import ConfigError, InputError, MissingFileError
from medseg.explain.cam import Method
from medseg.explain.maps import classifier_cams
from medseg.explain.writers import save_cam_png
from medseg.runs import Run
from medseg.tasks.classification import load_classifier, read_images
from medseg.tasks.inputs import expand_inputs
from medseg.utils import atomic_write, atomic_write_csv

__all__ = ["explain", "explain_images", "resolve_target"]

log = logging.getLogger("medseg.explain")

_TABLE_COLUMNS = [
    "case_id",
    "image",
    "method",
    "layer",
    "target_class",
    "target_probability",
    "predicted_class",
    "predicted_probability",
    "cam_png",
    "cam_map",
]


def resolve_target(target: Any, class_names: Sequence[str]) -> int | None:
    """A class given by index or name -> its index (None stays None: the predicted class).

    Raises ConfigError naming the allowed classes.
    """
    if target is None or (isinstance(target, str) and target.strip().lower() in ("", "pred", "predicted")):
        return None
    names = list(class_names)
    if isinstance(target, str) and target in names:
        return names.index(target)
    try:
        idx = int(target)
    except (TypeError, ValueError):
        raise ConfigError(
            f"unknown target class {target!r}; use an index 0..{len(names) - 1} or one of {', '.join(names)}"
        ) from None
    if not 0 <= idx < len(names):
        raise ConfigError(
            f"target class index {idx} is out of range; the model has {len(names)} classes ({', '.join(names)})"
        )
    return idx


def explain_images(
    model: nn.Module,
    info: dict[str, Any],
    images: Sequence[np.ndarray],
    names: Sequence[str],
    out_dir: str | Path,
    *,
    method: Method = "gradcam",
    target: int | None = None,
    layer: str | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Grad-CAM maps of a classifier for 2D images; writes ``<case>_cam.png`` and ``<case>_cam.npy``.

    Parameters
    ----------
    model, info : from :func:`medseg.tasks.classification.load_classifier`.
    images : ``(H, W)`` or ``(H, W, 3)`` uint8 arrays (:func:`medseg.io.read_image_uint8`).
    names : one case id per image (used in file names; never a DICOM value).
    out_dir : folder receiving the files.
    method : "gradcam" or "gradcampp".
    target : class index, or None for each image's predicted class.
    layer : target layer (default: :func:`medseg.explain.cam.default_target_layer`).
    device : where the maps are computed.
    batch_size : images per Grad-CAM batch.

    Returns
    -------
    one dict per image: ``case_id``, ``map`` (``(H, W)`` float32 array in [0, 1] at the image's size),
    ``png``, ``npy`` (paths), ``target`` / ``predicted`` (class index), ``probabilities`` (list),
    ``layer``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.to(torch.device(device)).eval()
    temperature = float(info.get("temperature", 1.0))
    cams = classifier_cams(
        model, info, images, method=method, layer=layer, target=target, batch_size=batch_size, names=names
    )
    probs = torch.softmax(cams.logits.float() / temperature, 1).numpy()
    results: list[dict[str, Any]] = []
    for i, (img, cid, m) in enumerate(zip(images, names, cams.maps)):
        png = save_cam_png(img, m, out_dir / f"{cid}_cam.png")
        npy = out_dir / f"{cid}_cam.npy"
        with atomic_write(npy, suffix=".npy") as tmp:
            np.save(tmp, m)
        results.append(
            {
                "case_id": cid,
                "map": m,
                "png": png,
                "npy": npy,
                "target": int(cams.targets[i]),
                "predicted": int(probs[i].argmax()),
                "probabilities": probs[i].tolist(),
                "layer": cams.layer,
            }
        )
    return results


def explain(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    method: str = "gradcam",
    target: Any = None,
    layer: str | None = None,
    device: str = "auto",
    force: bool = False,
    split: str = "test",
) -> dict[str, Any]:
    """Grad-CAM / Grad-CAM++ maps of a trained classifier for each input image.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` with ``task: classification``.
    inputs : image files (PNG/JPEG/TIFF/BMP), folders of images (recursively), or a datalist JSON.
    out : output folder (a medseg run folder; see the module docstring for its content).
    method : "gradcam" (default) or "gradcampp".
    target : class index or name to explain; default: each image's predicted class.
    layer : target layer name; default: the model's (see :func:`medseg.explain.cam.default_target_layer`).
    device : "auto" | "cpu" | "cuda".
    force : move an existing ``out`` aside instead of failing.
    split : list of a datalist input: "test" (default), "validation", "training" or "all".

    Returns
    -------
    dict: ``n_images``, ``n_skipped``, ``method``, ``layer``, ``table`` (explain.csv path), ``cams`` folder.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.yaml").is_file():
        raise MissingFileError("not a trained medseg run folder (no config.yaml)", model_dir)
    task = getattr(load_config(model_dir / "config.yaml"), "task", None)
    if task != "classification":
        raise InputError(
            f"`medseg explain` explains classification runs; this run is task {task!r}. For "
            "segmentation networks use medseg.explain.grad_cam(model, image) in Python "
            "(the target is the class's logits inside its predicted mask or an ROI)",
            model_dir,
        )
    if method not in ("gradcam", "gradcampp"):
        raise ConfigError(f"unknown method {method!r}; use gradcam or gradcampp")
    cam_method: Method = "gradcampp" if method == "gradcampp" else "gradcam"
    dev = select_device(device)
    model, info = load_classifier(model_dir, map_location=dev)
    class_names = list(info["class_names"])
    tgt = resolve_target(target, class_names)
    cases = expand_inputs(inputs, kind="image2d", split=split)
    run = Run.create(out, None, force=force, command="explain")
    with run:
        run.set(
            device=describe_device(dev),
            model_dir=str(model_dir.resolve()),
            method=method,
            target=None if tgt is None else class_names[tgt],
        )
        read = read_images([c.image for c in cases])
        kept = [cases[i] for i in read.index]
        res: list[dict[str, Any]] = []
        if read.images:
            with run.stage("gradcam"):
                res = explain_images(
                    model,
                    info,
                    read.images,
                    [c.case_id for c in kept],
                    run.path / "cams",
                    method=cam_method,
                    target=tgt,
                    layer=layer,
                    device=dev,
                )
        rows = [
            [
                r["case_id"],
                str(c.image),
                method,
                r["layer"],
                class_names[r["target"]],
                f"{r['probabilities'][r['target']]:.6f}",
                class_names[r["predicted"]],
                f"{max(r['probabilities']):.6f}",
                str(r["png"]),
                str(r["npy"]),
            ]
            for r, c in zip(res, kept)
        ]
        table = atomic_write_csv(run.path / "explain.csv", _TABLE_COLUMNS, rows)
        if read.skipped:
            atomic_write_csv(run.path / "skipped.csv", ["image", "error"], [[str(f), e] for f, e in read.skipped])
        summary = {
            "n_images": len(res),
            "n_skipped": len(read.skipped),
            "method": method,
            "layer": res[0]["layer"] if res else layer,
            "table": str(table),
            "cams": str(run.path / "cams"),
        }
        run.write_json("summary.json", summary)
    return summary
