"""``medseg train`` with ``task: weak_supervision``: the whole experiment (see the package docstring)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics.meandice import compute_dice

from medseg.config import (
    ClassificationConfig,
    DataSection,
    FinetuneSection,
    OperatingPointSection,
    TrainSection,
    WeakSupervisionConfig,
)
from medseg.config.classification import ClassifierModelSection
from medseg.data.lesions import make_lesion_dataset
from medseg.engine.device import describe_device, select_device
from medseg.errors import ConfigError, InputError
from medseg.explain.maps import classifier_cams
from medseg.explain.weak import pseudo_masks
from medseg.review.overlay import heatmap_2d, overlay_2d, save_png
from medseg.runs import Run
from medseg.tasks.classification import load_classifier
from medseg.tasks.classification import train as train_classifier
from medseg.tasks.modelcard import write_model_card
from medseg.tasks.provenance import record_training_data
from medseg.tasks.weak_supervision.data import load_lesion_split
from medseg.tasks.weak_supervision.localisation import localisation_report
from medseg.tasks.weak_supervision.segmenter import segmenter_dice, train_segmenter

__all__ = ["train"]

log = logging.getLogger("medseg.weak")


def _classifier(cfg: WeakSupervisionConfig, run: Run, datalist: Path, size: int) -> Path:
    """The classifier run: ``weak.classifier_run``, or EfficientNet-Lite0 fine-tuned here on the labels."""
    if cfg.weak.classifier_run is not None:
        return Path(cfg.weak.classifier_run)
    ccfg = ClassificationConfig(
        name="classifier",
        seed=cfg.seed,
        device=cfg.device,
        image_size=size,
        augmentation="dermoscopy",
        class_names=list(cfg.class_names),
        data=DataSection(
            datalist=datalist, root=cfg.data.root, val_fraction=cfg.data.val_fraction, num_workers=cfg.data.num_workers
        ),
        model=ClassifierModelSection.model_validate({"name": "efficientnet_lite0", "pretrained": True}),
        train=TrainSection(
            epochs=cfg.weak.classifier_epochs, batch_size=16, lr=1e-3, max_minutes=cfg.weak.classifier_max_minutes
        ),
        finetune=FinetuneSection(strategy="full"),
        operating_points=OperatingPointSection(n_bootstrap=200),
    )
    crun = Run.create(run.path / "classifier", ccfg, force=True, command="weak_supervision classifier")
    with crun:
        train_classifier(ccfg, crun)
    return crun.path


def _examples_png(
    images: Sequence[np.ndarray], pseudo: Sequence[np.ndarray], masks: Sequence[np.ndarray], maps: np.ndarray,
    path: Path, n: int = 6,
) -> Path:  # fmt: skip
    """Rows of map | pseudo-mask | true mask for the first ``n`` images (``maps`` ``(N, 1, H, W)``)."""
    rows = []
    for i in range(min(n, len(images))):
        rows.append(
            np.concatenate(
                [
                    heatmap_2d(images[i], maps[i, 0]),
                    overlay_2d(images[i], pseudo[i].astype(np.uint8), contour=True),
                    overlay_2d(images[i], masks[i].astype(np.uint8), contour=True),
                ],
                axis=1,
            )
        )
    return save_png(np.concatenate(rows, axis=0), path)


def _datalist(cfg: WeakSupervisionConfig, run: Run, size: int) -> tuple[Path, Path | None]:
    if cfg.data.datalist is not None:
        return Path(cfg.data.datalist), cfg.data.root
    if cfg.data.synthetic:
        with run.stage("data"):
            datalist = make_lesion_dataset(
                run.path / "data",
                n=cfg.data.num_cases,
                seed=cfg.seed,
                size=size,
                splits=(0.6, 0.2, 0.2),
                class_names=list(cfg.class_names),
            )
        return Path(datalist), None
    raise ConfigError(
        "weak supervision needs data.datalist (lesion images with image-level labels) or data.synthetic: true"
    )


def train(cfg: WeakSupervisionConfig, run: Run, resume: bool = False) -> dict[str, Any]:
    """Run the weak-supervision experiment; returns the summary dict (also ``weak_supervision.json``).

    Parameters
    ----------
    cfg : the validated config (``task: weak_supervision``)
    run : the run folder (``classifier/``, ``seg_pseudo/``, ``seg_true/``, ``pseudo_masks.png``,
        ``localisation.json``, ``weak_supervision.json``)
    resume : not supported (a ConfigError)

    Returns
    -------
    dict: pointing game (+ centre baseline), map Dice/IoU, deletion AUC (maps vs random), the
    randomisation check, pseudo-mask Dice, test Dice of the segmenter on pseudo-masks
    (``dice_weak``) and on true masks (``dice_full``) and their ratio, seconds.
    """
    if resume:
        raise ConfigError("weak supervision runs cannot be resumed; start a new run (--force to replace it)")
    t0 = time.perf_counter()
    dev = select_device(cfg.device)
    run.set(device=describe_device(dev))
    size = cfg.weak.image_size
    datalist, root = _datalist(cfg, run, size)
    with run.stage("classifier"):
        cls_dir = _classifier(cfg, run, datalist, size)
        model, info = load_classifier(cls_dir, map_location=dev)
    tr = load_lesion_split(datalist, "training", root)
    va = load_lesion_split(datalist, "validation", root)
    te = load_lesion_split(datalist, "test", root)
    if not tr["images"] or not te["images"]:
        raise InputError("the datalist needs 'training' and 'test' images", datalist)
    if any(m is None for m in te["masks"]):
        raise InputError("test images need a 'mask' (used only to score the segmenters and the maps)", datalist)
    # provenance (issue 13): datalist + SHA-256 and the case ids of each split (the classifier run has the rest)
    record_training_data(run, cfg, {"training": tr["ids"], "validation": va["ids"], "test": te["ids"]}, reference=False)
    # 1. pseudo-masks of the training (+ validation) images: image-level labels only
    fit_images = tr["images"] + va["images"]
    with run.stage("pseudo_masks"):
        maps = classifier_cams(model, info, fit_images, method=cfg.weak.method, layer=cfg.weak.layer, batch_size=16)
        chw = np.stack([im.transpose(2, 0, 1) if im.ndim == 3 else im[None] for im in fit_images]).astype(np.float32)
        labels = pseudo_masks(
            maps.stacked(),
            threshold=cfg.weak.threshold,
            n_components=cfg.weak.n_components,
            images=chw,
            refine=cfg.weak.refine,
        )
    pseudo = [lab.mask for lab in labels]
    fit_masks = tr["masks"] + va["masks"]
    have_true = all(m is not None for m in fit_masks)
    pseudo_quality = None
    if have_true:
        pq = compute_dice(
            torch.as_tensor(np.stack(pseudo)[:, None]).float(),
            torch.as_tensor(np.stack(fit_masks)[:, None]).float(),
            include_background=True,
            ignore_empty=False,
        )
        pseudo_quality = float(pq.nanmean())
        _examples_png(fit_images, pseudo, fit_masks, maps.stacked(), run.path / "pseudo_masks.png")
    # 2. localisation figures of the maps on the test images
    with run.stage("localisation"):
        loc = localisation_report(
            model, info, te["images"], te["masks"], method=cfg.weak.method, layer=cfg.weak.layer, seed=cfg.seed
        )
    run.write_json(
        "localisation.json",
        {k: v for k, v in loc.items() if k not in ("maps", "hits", "dice")} | {"pseudo_mask_dice": pseudo_quality},
    )
    # 3. segmenters: pseudo-masks vs true masks, same network and budget
    params = cfg.model.model_dump()
    params["in_channels"] = 3 if fit_images[0].ndim == 3 else 1
    kw: dict[str, Any] = {"seed": cfg.seed, "device": dev, "num_workers": cfg.data.num_workers}
    with run.stage("segmenter_pseudo"):
        seg_p = train_segmenter(params, fit_images, pseudo, run.path / "seg_pseudo", cfg.train, **kw)
        dice_p = segmenter_dice(seg_p, te["images"], te["masks"])
    dice_t = None
    if cfg.weak.compare_full_supervision:
        if not have_true:
            raise InputError("compare_full_supervision needs a 'mask' for every training image", datalist)
        with run.stage("segmenter_true"):
            seg_t = train_segmenter(params, fit_images, fit_masks, run.path / "seg_true", cfg.train, **kw)
            dice_t = segmenter_dice(seg_t, te["images"], te["masks"])
    dp = float(np.mean(dice_p))
    dt = float(np.mean(dice_t)) if dice_t is not None else None
    result = {
        "n_fit": len(fit_images),
        "n_test": len(te["images"]),
        "image_size": size,
        "classifier_run": str(Path(cls_dir).resolve()),
        "cam_method": cfg.weak.method,
        "cam_layer": loc["layer"],
        "threshold": cfg.weak.threshold,
        "refine": cfg.weak.refine,
        "pointing_game": round(loc["pointing_game"], 4),
        "pointing_game_centre_baseline": round(loc["pointing_game_centre_baseline"], 4),
        "cam_dice": round(loc["cam_dice"], 4),
        "cam_iou": round(loc["cam_iou"], 4),
        "deletion_auc": round(loc["deletion_auc"], 4),
        "deletion_auc_random": round(loc["deletion_auc_random"], 4),
        "randomisation_spearman": round(loc["randomisation"]["spearman_mean"], 4),
        "randomisation_spearman_abs": round(loc["randomisation"]["spearman_abs_mean"], 4),
        "randomisation_passed": loc["randomisation"]["passed"],
        "pseudo_mask_dice": None if pseudo_quality is None else round(pseudo_quality, 4),
        "dice_weak": round(dp, 4),
        "dice_full": None if dt is None else round(dt, 4),
        "dice_ratio": None if not dt else round(dp / dt, 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    run.write_json("weak_supervision.json", result)
    write_model_card(run, cfg, result)  # issue 13
    log.info(
        "weak supervision: Dice %.3f (pseudo-masks) vs %s (true masks); pointing game %.2f",
        dp,
        "n/a" if dt is None else f"{dt:.3f}",
        loc["pointing_game"],
    )
    return result
