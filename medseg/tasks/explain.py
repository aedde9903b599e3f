"""``medseg explain``: Grad-CAM / Grad-CAM++ maps of a trained classifier run, per input image.

``explain(model_dir, inputs, out, ...)`` loads a classification run (``medseg train`` with
``task: classification``), preprocesses each image exactly as the classifier was trained
(:func:`medseg.tasks.classification.preprocess`), computes the maps in batches with
:class:`medseg.explain.cam.CAMExplainer`, resizes each map back to the image's own size and writes

    <out>/cams/<case>_cam.png    heat-map overlay on the image (medseg.review.overlay.heatmap_2d)
    <out>/cams/<case>_cam.npy    the map itself, float32 (H, W) in [0, 1], aligned with the image
    <out>/explain.csv            case, image, target class, predicted class and probability, files
    <out>/skipped.csv            images that could not be read (the others are processed)
    <out>/run.json               provenance (medseg run folder)

For segmentation networks and 3D volumes use the library (:func:`medseg.explain.cam.grad_cam` with
a :class:`~monai.data.MetaTensor`; :func:`medseg.explain.cam.save_cam_nifti` keeps the affine).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import ConfigError, FileFormatError, InputError, MissingFileError

__all__ = ["explain", "explain_images", "resolve_target"]

log = logging.getLogger("medseg.explain")


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


def _resize_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    if cam.shape == tuple(shape):
        return cam.astype(np.float32)
    return np.clip(resize(cam, shape, order=1, anti_aliasing=False), 0.0, 1.0).astype(np.float32)


def explain_images(
    model: torch.nn.Module,
    info: dict,
    images: Sequence[np.ndarray],
    names: Sequence[str],
    out_dir: str | Path,
    *,
    method: str = "gradcam",
    target: int | None = None,
    layer: str | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Grad-CAM maps of a classifier for 2D images; writes ``<case>_cam.png`` and ``<case>_cam.npy``.

    Parameters
    ----------
    model, info : from :func:`medseg.tasks.classification.load_classifier`.
    images : (H, W) or (H, W, 3) uint8 arrays (:func:`medseg.tasks.classification.read_image`).
    names : one case id per image (used in file names; never a DICOM value).
    out_dir : folder receiving the files.
    method : "gradcam" or "gradcampp".
    target : class index, or None for each image's predicted class.
    layer : target layer (default: :func:`medseg.explain.cam.default_target_layer`).

    Returns
    -------
    one dict per image: ``case_id``, ``map`` ((H, W) float32 array in [0, 1] at the image's size),
    ``png``, ``npy`` (paths), ``target`` / ``predicted`` (class index), ``probabilities`` (list),
    ``layer``.
    """
    from medseg.explain.cam import CAMExplainer, save_cam_png
    from medseg.tasks.classification import preprocess

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    model = model.to(dev).eval()
    temperature = float(info.get("temperature", 1.0))
    results: list[dict[str, Any]] = []
    with CAMExplainer(model, method=method, layer=layer, task="classification") as cam:
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            cnames = list(names[start : start + batch_size])
            x = preprocess(chunk, info, cnames).to(dev)
            maps = cam(x, target=target)
            logits = cam.last_logits
            probs = torch.softmax(logits.float() / temperature, 1).numpy()
            for i, (img, cid) in enumerate(zip(chunk, cnames)):
                m = _resize_map(maps[i, 0].numpy(), img.shape[:2])
                png = save_cam_png(img, m, out_dir / f"{cid}_cam.png")
                npy = out_dir / f"{cid}_cam.npy"
                from medseg.utils import atomic_write

                with atomic_write(npy, suffix=".npy") as tmp:
                    np.save(tmp, m)
                results.append(
                    {
                        "case_id": cid,
                        "map": m,
                        "png": png,
                        "npy": npy,
                        "target": int(cam.last_target[i]),
                        "predicted": int(probs[i].argmax()),
                        "probabilities": probs[i].tolist(),
                        "layer": cam.layer,
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
) -> dict[str, Any]:
    """Grad-CAM / Grad-CAM++ maps of a trained classifier for each input image.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` with ``task: classification``.
    inputs : image files (PNG/JPEG/TIFF), folders of images, or a datalist JSON.
    out : output folder (a medseg run folder; see the module docstring for its content).
    method : "gradcam" (default) or "gradcampp".
    target : class index or name to explain; default: each image's predicted class.
    layer : target layer name; default: the model's (see :func:`medseg.explain.cam.default_target_layer`).
    device : "auto" | "cpu" | "cuda".
    force : move an existing ``out`` aside instead of failing.

    Returns
    -------
    dict: ``n_images``, ``n_skipped``, ``method``, ``layer``, ``table`` (explain.csv path), ``cams`` folder.
    """
    from medseg.config import load_config
    from medseg.engine.device import describe_device, select_device
    from medseg.runs import Run
    from medseg.tasks.classification import _expand_inputs, load_classifier, read_image

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
    dev = select_device(device)
    model, info = load_classifier(model_dir, map_location=dev)
    class_names = list(info["class_names"])
    tgt = resolve_target(target, class_names)
    files = _expand_inputs(inputs)
    run = Run.create(out, None, force=force, command="explain")
    with run:
        run.set(
            device=describe_device(dev),
            model_dir=str(model_dir.resolve()),
            method=method,
            target=None if tgt is None else class_names[tgt],
        )
        imgs, names, paths, skipped = [], [], [], []
        seen: dict[str, int] = {}
        for f in files:
            try:
                imgs.append(read_image(f))
            except (FileFormatError, MissingFileError, InputError) as e:
                log.warning("skipping %s", e)
                skipped.append((f, str(e)))
                continue
            cid = f.stem
            if cid in seen:  # same file name in two folders: keep both
                seen[cid] += 1
                cid = f"{cid}_{seen[cid]}"
            else:
                seen[cid] = 0
            names.append(cid)
            paths.append(f)
        res = []
        if imgs:
            with run.stage("gradcam"):
                res = explain_images(
                    model, info, imgs, names, run.path / "cams", method=method, target=tgt, layer=layer, device=dev
                )
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(
            [
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
        )
        for r, p in zip(res, paths):
            w.writerow(
                [
                    r["case_id"],
                    str(p),
                    method,
                    r["layer"],
                    class_names[r["target"]],
                    f"{r['probabilities'][r['target']]:.6f}",
                    class_names[r["predicted"]],
                    f"{max(r['probabilities']):.6f}",
                    str(r["png"]),
                    str(r["npy"]),
                ]
            )
        from medseg.utils import atomic_write_text

        table = atomic_write_text(run.path / "explain.csv", buf.getvalue())
        if skipped:
            from medseg.utils import atomic_write_csv

            atomic_write_csv(run.path / "skipped.csv", ["image", "error"], [[str(f), e] for f, e in skipped])
        summary = {
            "n_images": len(res),
            "n_skipped": len(skipped),
            "method": method,
            "layer": res[0]["layer"] if res else layer,
            "table": str(table),
            "cams": str(run.path / "cams"),
        }
        run.write_json("summary.json", summary)
    return summary
