"""Weak supervision: segment lesions having only image-level labels, via Grad-CAM pseudo-masks.

``train(cfg, run)`` (``medseg train`` with ``task: weak_supervision``; ``pipelines/weak_supervision.py``):

1. data: a lesion datalist (``image``, image-level ``label``; ``mask`` used **only to evaluate**),
   or the synthetic lesion set (:func:`medseg.data.lesions.make_lesion_dataset`);
2. a classifier trained on the image-level labels (``weak.classifier_run``, or trained here with
   :func:`medseg.tasks.classification.train`);
3. Grad-CAM maps of the training images -> pseudo-masks (:func:`medseg.explain.weak.pseudo_masks`:
   Otsu threshold, largest component, optional intensity refinement);
4. the configured 2D segmenter (default medseg ``unet``) trained on the pseudo-masks and, for
   comparison, the same network with the same budget on the true masks;
5. both scored on the held-out test images against the true masks, plus the maps' localisation
   figures (pointing game, thresholded-map Dice, deletion AUC vs random deletion, randomisation
   sanity check).

Run folder: ``data/`` (synthetic), ``classifier/`` (its run), ``seg_pseudo/`` and ``seg_true/``
(segmenter runs: checkpoints, metrics.csv), ``pseudo_masks.png`` (examples),
``localisation.json`` (the maps' figures, written before the segmenters train),
``weak_supervision.json`` (every figure) and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import ConfigError, InputError

__all__ = ["train", "load_lesion_split", "cam_maps", "localisation_report", "train_segmenter", "segmenter_dice"]

log = logging.getLogger("medseg.weak")


# ----------------------------------------------------------------------------- data


def load_lesion_split(datalist: Path, split: str, root: Path | None = None) -> dict[str, Any]:
    """Images (uint8 ``(H, W[, 3])``), masks (bool ``(H, W)``), labels and ids of one datalist split."""
    from medseg.tasks.classification import read_image

    content = json.loads(Path(datalist).read_text())
    root = Path(root) if root is not None else Path(datalist).parent
    entries = content.get(split) or []
    out: dict[str, Any] = {"images": [], "masks": [], "labels": [], "ids": []}
    for e in entries:
        if not isinstance(e, dict) or "image" not in e:
            raise InputError(f"split {split!r}: each entry needs an 'image' (and 'label', 'mask')", datalist)
        p = Path(e["image"])
        out["images"].append(read_image(p if p.is_absolute() else root / p))
        if e.get("mask"):
            q = Path(e["mask"])
            out["masks"].append(read_image(q if q.is_absolute() else root / q) > 0)
        else:
            out["masks"].append(None)
        out["labels"].append(int(e.get("label", -1)))
        out["ids"].append(p.stem)
    return out


def _resize_maps(maps: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    import torch.nn.functional as F

    m = torch.as_tensor(maps).float()
    if tuple(m.shape[2:]) != tuple(shape):
        m = F.interpolate(m, size=tuple(shape), mode="bilinear", align_corners=False)
    return m.clamp(0, 1).numpy()


def cam_maps(
    model: torch.nn.Module,
    info: dict,
    images: Sequence[np.ndarray],
    *,
    method: str = "gradcam",
    layer: str | None = None,
    target: Any = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Grad-CAM maps ``(N, 1, H, W)`` (image size) of a classifier, plus its inputs, logits and targets."""
    from medseg.explain.cam import CAMExplainer
    from medseg.tasks.classification import preprocess

    x = preprocess(list(images), info)
    maps, logits, targets = [], [], []
    with CAMExplainer(model, method=method, layer=layer, task="classification") as cam:
        for s in range(0, len(x), batch_size):
            t = target[s : s + batch_size] if isinstance(target, (list, np.ndarray, torch.Tensor)) else target
            maps.append(cam(x[s : s + batch_size], target=t).as_tensor())
            logits.append(cam.last_logits)
            targets.append(cam.last_target)
        used_layer = cam.layer
    m = torch.cat(maps)
    return {
        "maps": _resize_maps(m, images[0].shape[:2]),
        "x": x,
        "logits": torch.cat(logits),
        "targets": torch.cat(targets),
        "layer": used_layer,
    }


def localisation_report(
    model: torch.nn.Module,
    info: dict,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    method: str = "gradcam",
    layer: str | None = None,
    n_deletion: int = 12,
    seed: int = 0,
) -> dict[str, Any]:
    """Localisation figures of a classifier's maps on images with lesion masks.

    Returns pointing game (fraction of hits), Dice / IoU of the Otsu-thresholded map, the deletion
    AUC of the maps and of random deletion orders (first ``n_deletion`` images), the randomisation
    sanity check (Spearman correlation with the maps of a weight-randomised copy, BatchNorm
    statistics re-estimated on the same images), and a centre-point baseline pointing game.
    """
    from medseg.metrics.localisation import (
        deletion_auc,
        map_dice,
        map_iou,
        pointing_game,
        randomisation_check,
        randomise_weights,
    )

    res = cam_maps(model, info, images, method=method, layer=layer)
    maps = res["maps"]
    ref = np.stack(masks)[:, None]
    hits = pointing_game(maps, ref)
    dice = map_dice(maps, ref)
    iou = map_iou(maps, ref)
    # centre prior: a map peaking at the image centre (what a map with no information would score)
    h, w = ref.shape[2:]
    yy, xx = np.mgrid[0:h, 0:w]
    centre = -((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2).astype(np.float64)
    centre_hits = pointing_game(np.broadcast_to(centre, ref.shape[:1] + centre.shape).copy(), ref[:, 0])
    # randomisation sanity check (Adebayo et al. 2018): same images, same target classes
    rnd = randomise_weights(model, seed=seed, calibrate=res["x"])
    rnd_maps = cam_maps(rnd, info, images, method=method, layer=res["layer"], target=res["targets"])["maps"]
    sanity = randomisation_check(maps, rnd_maps)
    dev_model = model
    aucs, rand_aucs = [], []
    for i in range(min(n_deletion, len(images))):
        tgt = int(res["targets"][i])
        aucs.append(deletion_auc(dev_model, res["x"][i], maps[i, 0], tgt, steps=16))
        rand_aucs.append(deletion_auc(dev_model, res["x"][i], maps[i, 0], tgt, steps=16, order="random", seed=seed + i))
    return {
        "layer": res["layer"],
        "method": method,
        "n_images": len(images),
        "pointing_game": float(np.mean(hits)),
        "pointing_game_centre_baseline": float(np.mean(centre_hits)),
        "cam_dice": float(np.nanmean(dice)),
        "cam_iou": float(np.nanmean(iou)),
        "deletion_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "deletion_auc_random": float(np.mean(rand_aucs)) if rand_aucs else float("nan"),
        "randomisation": sanity,
        "maps": maps,
        "hits": hits,
        "dice": dice,
    }


# ----------------------------------------------------------------------------- segmenter


def _seg_tensors(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.stack([im.transpose(2, 0, 1) if im.ndim == 3 else im[None] for im in images]).astype(np.float32)
    x = torch.as_tensor(x / 255.0 - 0.5)
    y = torch.as_tensor(np.stack(masks)[:, None].astype(np.int64))
    return x, y


def train_segmenter(
    params: dict[str, Any],
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    run_dir: Path,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    weight_decay: float = 1e-5,
    max_minutes: float | None = None,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """Train a 2D segmenter on images ``(H, W, 3)`` uint8 and binary masks with DiceCE (random flips).

    Uses the shared :class:`medseg.engine.trainer.Trainer` (checkpoints in ``run_dir``); returns the
    model after the last epoch, in eval mode.
    """
    from monai.losses import DiceCELoss

    from medseg.engine.trainer import Trainer, build_optimizer, build_scheduler
    from medseg.models import build_model
    from medseg.utils import seed_everything

    seed_everything(seed)
    model = build_model(**params)
    x, y = _seg_tensors(images, masks)
    ds = [{"image": x[i], "label": y[i]} for i in range(len(x))]
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=len(ds) > batch_size)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def step(net, batch, dev):
        xb, yb = batch["image"].to(dev), batch["label"].to(dev)
        for ax in (2, 3):  # random flips (the lesion task has no preferred orientation)
            if torch.rand(()) < 0.5:
                xb, yb = xb.flip(ax), yb.flip(ax)
        out = net(xb)
        if out.ndim == xb.ndim + 1:  # deep supervision (B, 1 + k, C, H, W): train on the full-size head
            out = out[:, 0]
        return loss_fn(out, yb)

    opt = build_optimizer(model.parameters(), "adamw", lr=lr, weight_decay=weight_decay)
    trainer = Trainer(
        model,
        opt,
        loader,
        step,
        scheduler=build_scheduler(opt, "cosine", epochs),
        device=device,
        max_epochs=epochs,
        max_minutes=max_minutes,
        seed=seed,
        run_dir=run_dir,
        grad_clip=1.0,
        model_meta={"model_params": params},
    )
    trainer.fit()
    return trainer.model.eval()


@torch.no_grad()
def segmenter_dice(
    model: torch.nn.Module, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], batch_size: int = 16
) -> np.ndarray:
    """Foreground Dice of the segmenter's argmax on each image vs its mask (MONAI ``compute_dice``)."""
    from monai.metrics.meandice import compute_dice

    x, y = _seg_tensors(images, masks)
    dev = next(model.parameters()).device
    preds = []
    for s in range(0, len(x), batch_size):
        preds.append(model(x[s : s + batch_size].to(dev)).argmax(1, keepdim=True).cpu())
    pred = torch.cat(preds).float()
    return compute_dice(pred, y.float(), include_background=True, ignore_empty=False)[:, 0].numpy()


# ----------------------------------------------------------------------------- pipeline


def _classifier(cfg, run, datalist: Path, size: int) -> Path:
    if cfg.weak.classifier_run is not None:
        return Path(cfg.weak.classifier_run)
    from medseg.config import (
        ClassificationConfig,
        DataSection,
        FinetuneSection,
        ModelSection,
        OperatingPointSection,
        TrainSection,
    )
    from medseg.runs import Run
    from medseg.tasks.classification import train as train_classifier

    ccfg = ClassificationConfig(
        name="classifier",
        seed=cfg.seed,
        device=cfg.device,
        image_size=size,
        augmentation="dermoscopy",
        class_names=list(cfg.class_names),
        data=DataSection(datalist=datalist),
        model=ModelSection(name="efficientnet_lite0", pretrained=True, image_size=size),
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


def _examples_png(images, pseudo, masks, maps, path: Path, n: int = 6) -> Path | None:
    try:
        from medseg.review.overlay import heatmap_2d, overlay_2d, save_png
    except ImportError:  # pragma: no cover
        return None
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


def train(cfg, run, resume: bool = False) -> dict[str, Any]:
    """Run the weak-supervision experiment (see the module docstring); returns the summary dict."""
    from medseg.engine.device import describe_device, select_device
    from medseg.explain.weak import pseudo_masks
    from medseg.tasks.classification import load_classifier

    if resume:
        raise ConfigError("weak supervision runs cannot be resumed; start a new run (--force to replace it)")
    t0 = time.perf_counter()
    dev = select_device(cfg.device)
    run.set(device=describe_device(dev))
    size = cfg.weak.image_size
    if cfg.data.datalist is not None:
        datalist, root = Path(cfg.data.datalist), cfg.data.root
    elif cfg.data.synthetic:
        from medseg.data.lesions import make_lesion_dataset

        with run.stage("data"):
            datalist = Path(
                make_lesion_dataset(
                    run.path / "data",
                    n=cfg.data.num_cases,
                    seed=cfg.seed,
                    size=size,
                    splits=(0.6, 0.2, 0.2),
                    class_names=list(cfg.class_names),
                )
            )
        root = None
    else:
        raise ConfigError(
            "weak supervision needs data.datalist (lesion images with image-level labels) or data.synthetic: true"
        )
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
    # 1. pseudo-masks of the training (+ validation) images: image-level labels only
    fit_images = tr["images"] + va["images"]
    with run.stage("pseudo_masks"):
        cams = cam_maps(model, info, fit_images, method=cfg.weak.method, layer=cfg.weak.layer)
        chw = np.stack([im.transpose(2, 0, 1) if im.ndim == 3 else im[None] for im in fit_images]).astype(np.float32)
        labels = pseudo_masks(
            cams["maps"],
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
        from monai.metrics.meandice import compute_dice

        pq = compute_dice(
            torch.as_tensor(np.stack(pseudo)[:, None]).float(),
            torch.as_tensor(np.stack(fit_masks)[:, None]).float(),
            include_background=True,
            ignore_empty=False,
        )
        pseudo_quality = float(pq.nanmean())
        _examples_png(fit_images, pseudo, fit_masks, cams["maps"], run.path / "pseudo_masks.png")
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
    in_ch = 3 if fit_images[0].ndim == 3 else 1
    params.setdefault("in_channels", in_ch)
    params["in_channels"] = in_ch
    tcfg = cfg.train
    kw = dict(
        epochs=tcfg.epochs,
        batch_size=tcfg.batch_size,
        lr=tcfg.lr,
        seed=cfg.seed,
        weight_decay=tcfg.weight_decay,
        max_minutes=tcfg.max_minutes,
        device=dev,
    )
    with run.stage("segmenter_pseudo"):
        seg_p = train_segmenter(params, fit_images, pseudo, run.path / "seg_pseudo", **kw)
        dice_p = segmenter_dice(seg_p, te["images"], te["masks"])
    dice_t = None
    if cfg.weak.compare_full_supervision:
        if not have_true:
            raise InputError("compare_full_supervision needs a 'mask' for every training image", datalist)
        with run.stage("segmenter_true"):
            seg_t = train_segmenter(params, fit_images, fit_masks, run.path / "seg_true", **kw)
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
    log.info(
        "weak supervision: Dice %.3f (pseudo-masks) vs %s (true masks); pointing game %.2f",
        dp,
        "n/a" if dt is None else f"{dt:.3f}",
        loc["pointing_game"],
    )
    return result
