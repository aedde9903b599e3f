"""Image classification task: fine-tune a (pretrained) network, choose clinical operating points.

``train(cfg, run)`` reads a datalist of 2D images with image-level labels, fine-tunes the
configured network (default: ImageNet EfficientNet-Lite0) with the shared
:class:`medseg.engine.trainer.Trainer` (checkpoints, exact resume, early stopping on validation
AUC), then on the best checkpoint fits a softmax temperature and chooses the operating points on
the **validation** set and reports them on the **test** set (Gulshan et al. 2016).

Datalist (MSD-style JSON): ``{"training": [{"image": "a.png", "label": 1}, ...], "validation":
[...], "test": [...]}``; ``label`` is a class index or a class name from ``class_names``. Without
a ``validation`` list, ``data.val_fraction`` of the training list is held out (stratified).

Run folder: ``checkpoints/``, ``metrics.csv``, ``training_curve.png``, ``classifier.json``
(preprocessing, temperature, thresholds: what ``classify`` needs), ``evaluation/``
(metrics.json, operating_points.csv, confusion_matrix.csv, reliability.png, test_predictions.csv).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import ConfigError, FileFormatError, InputError, MissingFileError
from medseg.utils import atomic_write_text, seed_everything

__all__ = [
    "read_image",
    "load_classifier",
    "preprocess",
    "prepare_images",
    "augmentation_transforms",
    "configure_finetuning",
    "train",
    "classify",
    "evaluate",
    "run_demo",
]

log = logging.getLogger("medseg.tasks.classification")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


# --------------------------------------------------------------------------------------------
# reading images (one small function; medseg.io.load will take over)


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2D image file as uint8: ``(H, W)`` gray or ``(H, W, 3)`` RGB (``medseg.io.read_image_array``).

    Alpha channels are dropped; 16-bit / float images are rescaled to 0..255 (min-max).

    Raises
    ------
    MissingFileError, FileFormatError (unreadable / corrupt / not a 2D image).
    """
    from medseg.io import read_image_array

    path = Path(path)
    img = np.asarray(read_image_array(path))
    if img.ndim == 3 and img.shape[-1] in (2, 4):
        img = img[..., 0] if img.shape[-1] == 2 else img[..., :3]
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3) or min(img.shape[:2]) < 2:
        raise FileFormatError(f"expected a 2D gray or RGB image, got an array of shape {img.shape}", path)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        f = img.astype(np.float64)
        lo, hi = float(f.min()), float(f.max())
        img = np.zeros(f.shape, np.uint8) if hi <= lo else np.round((f - lo) / (hi - lo) * 255).astype(np.uint8)
    return img


def prepare_images(
    images: Sequence[np.ndarray],
    names: Sequence[str],
    image_size: int | None,
    channels: str = "auto",
) -> tuple[torch.Tensor, str]:
    """Stack images into a uint8 tensor ``(N, C, S, S)``, checking/convert channels and sizes.

    Parameters
    ----------
    images : sequence of (H, W) or (H, W, 3) uint8 arrays
    names : file names (for error messages)
    image_size : int or None
        Resize every image to ``(image_size, image_size)``; None: all images must have one size.
    channels : "auto" | "rgb" | "gray"
        auto: all images must be gray or all RGB (a mixture is an InputError); rgb: gray images are
        replicated to 3 channels; gray: RGB images are converted (luminance).

    Returns
    -------
    (tensor (N, C, H, W) uint8, channel mode "rgb" or "gray")
    """
    from skimage.color import rgb2gray
    from skimage.transform import resize

    if not images:
        raise InputError("no images to prepare")
    is_rgb = [im.ndim == 3 for im in images]
    if channels == "auto":
        if any(is_rgb) and not all(is_rgb):
            g = names[is_rgb.index(False)]
            c = names[is_rgb.index(True)]
            raise InputError(
                f"mixture of grayscale and RGB images (e.g. {g} is gray, {c} is RGB); set channels: rgb "
                "(replicate gray) or channels: gray (convert RGB) in the config"
            )
        mode = "rgb" if is_rgb[0] else "gray"
    elif channels in ("rgb", "gray"):
        mode = channels
    else:
        raise ConfigError(f"channels must be auto, rgb or gray, got {channels!r}")
    if image_size is None:
        shapes = {im.shape[:2] for im in images}
        if len(shapes) > 1:
            first = images[0].shape[:2]
            other = next(i for i, im in enumerate(images) if im.shape[:2] != first)
            raise InputError(
                f"images have different sizes ({names[0]} is {first[0]}x{first[1]}, {names[other]} is "
                f"{images[other].shape[0]}x{images[other].shape[1]}); set image_size to resize them all"
            )
    out = []
    for im in images:
        if mode == "rgb" and im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=-1)
        elif mode == "gray" and im.ndim == 3:
            im = np.round(rgb2gray(im) * 255).astype(np.uint8)
        if image_size is not None and im.shape[:2] != (image_size, image_size):
            im = np.round(resize(im, (image_size, image_size), anti_aliasing=True, preserve_range=True))
            im = np.clip(im, 0, 255).astype(np.uint8)
        out.append(im.transpose(2, 0, 1) if im.ndim == 3 else im[None])
    return torch.from_numpy(np.stack(out)), mode


# --------------------------------------------------------------------------------------------
# data


@dataclass
class _Split:
    names: list[str]
    paths: list[Path]
    labels: np.ndarray


def _label_index(value: Any, class_names: Sequence[str], where: str) -> int:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, (int, np.integer)) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        i = int(value)
        if not 0 <= i < len(class_names):
            raise InputError(f"{where}: class index {i} outside 0..{len(class_names) - 1} ({', '.join(class_names)})")
        return i
    if isinstance(value, str):
        if value in class_names:
            return list(class_names).index(value)
        import difflib

        m = difflib.get_close_matches(value, list(class_names), n=1)
        hint = f" (did you mean {m[0]!r}?)" if m else ""
        raise InputError(f"{where}: unknown class name {value!r}{hint}; class_names are {list(class_names)}")
    raise InputError(f"{where}: label must be a class index or name, got {value!r}")


def _read_datalist(path: Path, root: Path | None, class_names: Sequence[str]) -> dict[str, list[tuple[Path, int]]]:
    if not path.is_file():
        raise MissingFileError("datalist not found", path)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"datalist is not valid JSON: {e}", path) from None
    base = Path(root) if root else path.parent
    if "labels" in content and isinstance(content["labels"], dict):
        listed = [content["labels"][k] for k in sorted(content["labels"], key=lambda k: int(k))]
        if listed != list(class_names):
            raise ConfigError(f"datalist classes {listed} differ from config class_names {list(class_names)}", path)
    out: dict[str, list[tuple[Path, int]]] = {}
    for key in ("training", "validation", "test"):
        items = content.get(key) or []
        rows = []
        for i, it in enumerate(items):
            if not isinstance(it, dict) or "image" not in it or "label" not in it:
                raise ConfigError(f"datalist entry {key}[{i}] needs 'image' and 'label'", path)
            p = Path(it["image"])
            rows.append(
                (p if p.is_absolute() else base / p, _label_index(it["label"], class_names, f"{path.name} {key}[{i}]"))
            )
        out[key] = rows
    if not out["training"]:
        raise ConfigError("datalist has no 'training' images", path)
    return out


def _stratified_holdout(rows: list[tuple[Path, int]], fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.array([r[1] for r in rows])
    val_idx: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            k = max(k, 1)
        val_idx += idx[:k].tolist()
    vs = set(val_idx)
    return [r for i, r in enumerate(rows) if i not in vs], [r for i, r in enumerate(rows) if i in vs]


def _load_rows(rows: list[tuple[Path, int]], skipped: list[dict]) -> tuple[list[np.ndarray], _Split]:
    imgs, names, paths, labels = [], [], [], []
    for p, lab in rows:
        try:
            imgs.append(read_image(p))
        except (FileFormatError, MissingFileError) as e:
            log.warning("skipping %s", e)
            skipped.append({"image": str(p), "error": str(e)})
            continue
        names.append(p.name)
        paths.append(p)
        labels.append(lab)
    return imgs, _Split(names, paths, np.array(labels, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# transforms


def augmentation_transforms(preset: str, image_size: int) -> list:
    """MONAI dict transforms (key ``image``, (C, H, W) float 0..255) of an augmentation preset.

    dermoscopy: any orientation (flips, 90 deg rotations, free rotation), mild scale, per-channel
    colour gain; histology: flips/rotations, strong per-channel gain (stain variation), blur and
    noise; xray: small rotations/shifts/zoom (anatomy keeps its orientation, no flips), gamma.
    """
    from monai import transforms as mt

    k = ["image"]
    if preset == "none":
        return []
    if preset == "dermoscopy":
        return [
            mt.RandFlipd(k, prob=0.5, spatial_axis=0),
            mt.RandFlipd(k, prob=0.5, spatial_axis=1),
            mt.RandRotate90d(k, prob=0.5),
            mt.RandAffined(k, prob=0.5, rotate_range=math.pi, scale_range=0.1, padding_mode="reflection"),
            mt.RandScaleIntensityd(k, factors=0.1, prob=0.5, channel_wise=True),
        ]
    if preset == "histology":
        return [
            mt.RandFlipd(k, prob=0.5, spatial_axis=0),
            mt.RandFlipd(k, prob=0.5, spatial_axis=1),
            mt.RandRotate90d(k, prob=0.5),
            mt.RandScaleIntensityd(k, factors=0.15, prob=0.8, channel_wise=True),
            mt.RandGaussianSmoothd(k, prob=0.2, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
            mt.RandGaussianNoised(k, prob=0.2, std=4.0),
        ]
    if preset == "xray":
        return [
            mt.RandAffined(
                k,
                prob=0.7,
                rotate_range=math.radians(10),
                scale_range=0.1,
                translate_range=(0.05 * image_size, 0.05 * image_size),
                padding_mode="border",
            ),
            mt.RandAdjustContrastd(k, prob=0.5, gamma=(0.8, 1.25)),
        ]
    raise ConfigError(f"unknown augmentation preset {preset!r}; use none, dermoscopy, histology or xray")


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8-range intensities -> the ImageNet-Lite0 normalisation ``(x - 127) / 128``."""
    return (x.float() - 127.0) / 128.0


class _TrainSet(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        d = {"image": self.images[i].float()}
        if self.transform is not None:
            d = self.transform(d)
        img = d["image"]
        img = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
        return {"image": _normalize(img), "label": int(self.labels[i])}


# --------------------------------------------------------------------------------------------
# fine-tuning strategies


def configure_finetuning(
    model: nn.Module,
    strategy: str,
    lr: float,
    *,
    lr_decay: float = 0.5,
    head_lr_mult: float = 1.0,
    unfreeze_every: int = 1,
    freeze_bn: bool = True,
):
    """Parameter groups and a per-epoch hook implementing a fine-tuning strategy.

    Returns
    -------
    (param_groups, hook) : list of optimizer param-group dicts; ``hook(model, epoch)`` sets
        ``requires_grad`` and the BatchNorm mode for that epoch (call at every step; it is cheap).
    """
    from medseg.models.classifier import backbone_stages, head_parameter_names

    params = dict(model.named_parameters())
    head = head_parameter_names(model)
    stages = backbone_stages(model)
    head_group = {"params": [params[n] for n in head], "lr": lr * head_lr_mult, "name": "head"}
    if strategy == "full":
        groups = [head_group, {"params": [params[n] for g in stages for n in g], "lr": lr, "name": "backbone"}]
        trainable = lambda epoch: len(stages)  # noqa: E731
    elif strategy == "linear_probe":
        groups = [head_group]
        trainable = lambda epoch: 0  # noqa: E731
    elif strategy == "discriminative":
        groups = [head_group] + [
            {"params": [params[n] for n in g], "lr": lr * lr_decay**i, "name": f"stage{i}"}
            for i, g in enumerate(stages)
        ]
        trainable = lambda epoch: len(stages)  # noqa: E731
    elif strategy == "gradual_unfreeze":
        groups = [head_group] + [
            {"params": [params[n] for n in g], "lr": lr, "name": f"stage{i}"} for i, g in enumerate(stages)
        ]
        trainable = lambda epoch: min(len(stages), epoch // max(1, unfreeze_every))  # noqa: E731
    else:
        raise ConfigError(f"unknown fine-tuning strategy {strategy!r}")
    frozen_cache: dict[str, Any] = {"k": None}

    def hook(m: nn.Module, epoch: int) -> None:
        k = trainable(epoch)
        if frozen_cache["k"] != k:
            on = set(head) | {n for g in stages[:k] for n in g}
            for n, p in m.named_parameters():
                p.requires_grad_(n in on)
            frozen_cache["k"] = k
            log.info(
                "fine-tuning (%s): epoch %d, %d of %d backbone stages trainable", strategy, epoch + 1, k, len(stages)
            )
        if freeze_bn and k < len(stages):
            for mod in m.modules():
                if (
                    isinstance(mod, nn.modules.batchnorm._BatchNorm)
                    and mod.weight is not None
                    and not mod.weight.requires_grad
                ):
                    mod.eval()

    return groups, hook


# --------------------------------------------------------------------------------------------
# training


def _model_params(cfg, mode: str) -> dict[str, Any]:
    from medseg.models import model_parameters

    extra = cfg.model.model_dump()
    name = extra.pop("name")
    try:
        allowed = model_parameters(name)
    except KeyError:
        allowed = {}
    params: dict[str, Any] = {"name": name, **extra}
    if "num_classes" in allowed:
        params.setdefault("num_classes", len(cfg.class_names))
    if "in_channels" in allowed:
        params.setdefault("in_channels", 3 if mode == "rgb" else 1)
    if "image_size" in allowed and cfg.image_size:
        params.setdefault("image_size", cfg.image_size)  # MONAI EfficientNet's static SAME padding
    if params.get("spatial_dims", 2) != 2:
        raise ConfigError(
            f"the classification pipeline classifies 2D images; model {name!r} with spatial_dims="
            f"{params['spatial_dims']} is for volumes (use it through the library API), or set spatial_dims: 2"
        )
    if params.get("num_classes") not in (None, len(cfg.class_names)):
        raise ConfigError(f"model.num_classes={params['num_classes']} but {len(cfg.class_names)} class_names")
    return params


@torch.no_grad()
def _predict_logits(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = _normalize(images[i : i + batch_size]).to(device)
        out.append(model(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def _softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    from scipy.special import softmax

    return softmax(z / temperature, axis=1)


def _auc_or_nan(y: np.ndarray, p: np.ndarray, pos: int = 1) -> float:
    """Binary: AUC of class ``pos``; multi-class: macro one-vs-rest AUC."""
    from medseg.metrics.classification import one_vs_rest_auc, roc_auc

    if p.shape[1] == 2:
        yb = (y == pos).astype(int)
        return roc_auc(yb, p[:, pos]) if 0 < yb.sum() < len(yb) else float("nan")
    return one_vs_rest_auc(y, p)["macro"]


def _write_predictions(
    path: Path,
    names: Sequence[str],
    probs: np.ndarray,
    class_names: Sequence[str],
    labels: np.ndarray | None = None,
    pred: np.ndarray | None = None,
) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["image", *[f"prob_{c}" for c in class_names], "predicted_class"]
        + (["reference_class"] if labels is not None else [])
    )
    pred = probs.argmax(1) if pred is None else pred
    for i, n in enumerate(names):
        row = [n, *[f"{v:.6f}" for v in probs[i]], class_names[int(pred[i])]]
        if labels is not None:
            row.append(class_names[int(labels[i])])
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())


def train(cfg, run, resume: bool = False) -> dict[str, Any]:
    """Fine-tune a classifier as configured; choose operating points; evaluate on the test split.

    Parameters
    ----------
    cfg : ClassificationConfig
    run : medseg.runs.Run
        The run folder (checkpoints, metrics, classifier.json, evaluation/).
    resume : bool
        Continue exactly from ``checkpoints/last.pt``.

    Returns
    -------
    dict summary: val/test AUC (+ 95% CI), operating points, epochs, seconds, skipped files.
    """
    from medseg.data.lesions import make_lesion_dataset
    from medseg.engine.checkpoint import load_checkpoint
    from medseg.engine.device import describe_device, select_device
    from medseg.engine.trainer import Trainer, build_optimizer, build_scheduler
    from medseg.metrics.classification import binary_report, fit_temperature, multiclass_report
    from medseg.models import build_model

    t_start = time.perf_counter()
    device = select_device(cfg.device)
    run.set(device=describe_device(device))
    seed_everything(cfg.seed)
    class_names = list(cfg.class_names)
    if len(set(class_names)) != len(class_names):
        raise ConfigError(f"class_names has duplicates: {class_names}")
    binary = len(class_names) == 2
    pos = class_names.index(cfg.positive_class) if cfg.positive_class else 1
    if cfg.positive_class and cfg.positive_class not in class_names:
        raise ConfigError(f"positive_class {cfg.positive_class!r} is not one of class_names {class_names}")

    # --- data ---------------------------------------------------------------------------
    if cfg.data.datalist is not None:
        datalist = Path(cfg.data.datalist)
    elif cfg.data.synthetic:
        if not binary:
            raise ConfigError("synthetic lesion data has two classes; set two class_names")
        ddir = run.path / "data"
        datalist = ddir / "dataset.json"
        if not datalist.is_file():
            datalist = make_lesion_dataset(
                ddir, n=cfg.data.num_cases, seed=cfg.seed, size=cfg.image_size or 128, class_names=class_names
            )
    else:
        raise ConfigError("set data.datalist (a JSON of images and labels) or data.synthetic: true")
    with run.stage("load_data"):
        lists = _read_datalist(datalist, cfg.data.root, class_names)
        train_rows, val_rows = lists["training"], lists["validation"]
        if not val_rows:
            train_rows, val_rows = _stratified_holdout(train_rows, cfg.data.val_fraction, cfg.seed)
        skipped: list[dict] = []
        tr_imgs, tr = _load_rows(train_rows, skipped)
        va_imgs, va = _load_rows(val_rows, skipped)
        te_imgs, te = _load_rows(lists["test"], skipped)
        missing = [class_names[c] for c in range(len(class_names)) if not (va.labels == c).any()]
        if missing:
            raise InputError(
                f"class {missing[0]!r} has no validation examples: validation AUC, early stopping and the "
                "operating points cannot be chosen; add such images to the 'validation' list (or raise "
                "data.val_fraction)",
                datalist,
            )
        absent = [class_names[c] for c in range(len(class_names)) if not (tr.labels == c).any()]
        if absent:
            raise InputError(f"class {absent[0]!r} has no training examples", datalist)
        all_imgs = tr_imgs + va_imgs + te_imgs
        all_names = tr.names + va.names + te.names
        stacked, mode = prepare_images(all_imgs, all_names, cfg.image_size, cfg.channels)
        x_tr, x_va, x_te = (
            stacked[: len(tr_imgs)],
            stacked[len(tr_imgs) : len(tr_imgs) + len(va_imgs)],
            stacked[len(tr_imgs) + len(va_imgs) :],
        )
        size = int(stacked.shape[-1])
    log.info(
        "classification data: %d train, %d validation, %d test images (%s, %dpx), %d skipped",
        len(tr.labels),
        len(va.labels),
        len(te.labels),
        mode,
        size,
        len(skipped),
    )

    # --- model, loss, strategy ----------------------------------------------------------------
    params = _model_params(cfg, mode)
    model = build_model(**params)
    counts = np.bincount(tr.labels, minlength=len(class_names)).astype(np.float64)
    weight = None
    sampler = None
    if cfg.imbalance == "weighted_loss":
        weight = torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)
    elif cfg.imbalance == "sampler":
        w = (1.0 / counts)[tr.labels]
        sampler = torch.utils.data.WeightedRandomSampler(
            torch.as_tensor(w, dtype=torch.double), len(w), replacement=True
        )
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None)
    ft = cfg.finetune
    groups, hook = configure_finetuning(
        model,
        ft.strategy,
        cfg.train.lr,
        lr_decay=ft.lr_decay,
        head_lr_mult=ft.head_lr_mult,
        unfreeze_every=ft.unfreeze_every,
        freeze_bn=ft.freeze_bn,
    )
    optimizer = build_optimizer(groups, cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    scheduler = build_scheduler(optimizer, cfg.train.scheduler, cfg.train.epochs)

    from monai.transforms import Compose

    transform = Compose(augmentation_transforms(cfg.augmentation, size))
    ds = _TrainSet(x_tr, tr.labels, transform)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=min(cfg.train.batch_size, len(ds)),
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        drop_last=len(ds) > cfg.train.batch_size,
    )
    trainer_ref: dict[str, Any] = {}

    def step(m: nn.Module, batch: dict, dev: torch.device) -> torch.Tensor:
        hook(m, trainer_ref["t"].state.epoch)
        x = batch["image"].to(dev, non_blocking=True)
        y = torch.as_tensor(batch["label"]).to(dev)
        return loss_fn(m(x), y)

    def val_fn(m: nn.Module) -> dict[str, float]:
        z = _predict_logits(m, x_va, device, cfg.infer.batch_size * 8)
        p = _softmax(z)
        yl = torch.as_tensor(va.labels)
        vloss = float(nn.functional.cross_entropy(torch.as_tensor(z), yl))
        auc = _auc_or_nan(va.labels, p, pos)
        return {"val_auc": auc, "val_loss": vloss, "val_accuracy": float((p.argmax(1) == va.labels).mean())}

    meta = {
        "model_params": params,
        "class_names": class_names,
        "image_size": size,
        "channels": mode,
        "positive_index": pos,
    }
    trainer = Trainer(
        model,
        optimizer,
        loader,
        step,
        val_fn=val_fn,
        key_metric="val_auc",
        mode="max",
        scheduler=scheduler,
        device=device,
        amp=cfg.train.amp,
        grad_clip=cfg.train.grad_clip,
        max_epochs=cfg.train.epochs,
        max_minutes=cfg.train.max_minutes,
        val_every=cfg.train.val_every,
        early_stop_patience=cfg.train.early_stop_patience,
        steps_per_epoch=cfg.train.steps_per_epoch,
        seed=cfg.seed,
        run_dir=run.path,
        model_meta=meta,
    )
    trainer_ref["t"] = trainer
    with run.stage("train"):
        state = trainer.fit(resume=resume)

    # --- operating points on validation, report on test ------------------------------------------
    with run.stage("evaluate"):
        best = run.path / "checkpoints" / "best.pt"
        ckpt = load_checkpoint(best if best.is_file() else run.path / "checkpoints" / "last.pt", device)
        model.load_state_dict(ckpt["model"])
        z_va = _predict_logits(model, x_va, device)
        z_te = _predict_logits(model, x_te, device) if len(te.labels) else None
        temperature = 1.0
        temp_note = None
        if cfg.operating_points.temperature_scaling:
            separated = binary and _auc_or_nan(va.labels, _softmax(z_va), pos) == 1.0
            if separated:  # NLL -> 0 as T -> 0: nothing to calibrate on, keep T = 1
                temp_note = "temperature scaling skipped: the validation set is perfectly separated"
            else:
                temperature = fit_temperature(z_va, va.labels)
        p_va = _softmax(z_va, temperature)
        ev_dir = run.subdir("evaluation")
        op = cfg.operating_points
        info: dict[str, Any] = {
            "class_names": class_names,
            "positive_class": class_names[pos],
            "positive_index": pos,
            "image_size": size,
            "channels": mode,
            "temperature": temperature,
            "operating_points": {},
            "use": op.use,
        }
        summary: dict[str, Any] = {
            "epochs": state.epoch,
            "best_epoch": state.best_epoch,
            "best_val_auc": state.best_metric,
            "stop_reason": state.stop_reason,
            "n_train": int(len(tr.labels)),
            "n_validation": int(len(va.labels)),
            "n_test": int(len(te.labels)),
            "skipped": len(skipped),
            "temperature": round(temperature, 4),
        }
        if binary:
            yv = (va.labels == pos).astype(int)
            if z_te is not None:
                p_te = _softmax(z_te, temperature)
                yt = (te.labels == pos).astype(int)
                rep = binary_report(
                    yv,
                    p_va[:, pos],
                    yt,
                    p_te[:, pos],
                    sensitivity_target=op.sensitivity_target,
                    specificity_target=op.specificity_target,
                    n_boot=op.n_bootstrap,
                    seed=cfg.seed,
                    out_dir=ev_dir,
                    class_names=(class_names[1 - pos], class_names[pos]),
                )
            else:  # no test set: thresholds only (reported on validation itself)
                rep = binary_report(
                    yv,
                    p_va[:, pos],
                    yv,
                    p_va[:, pos],
                    sensitivity_target=op.sensitivity_target,
                    specificity_target=op.specificity_target,
                    n_boot=op.n_bootstrap,
                    seed=cfg.seed,
                    out_dir=ev_dir,
                    class_names=(class_names[1 - pos], class_names[pos]),
                )
                rep["notes"].append("no test split: metrics are on the validation set (optimistic)")
            if temp_note:
                rep["notes"].append(temp_note)
            info["operating_points"] = {k: v["threshold"] for k, v in rep["operating_points"].items()}
            info["operating_points"]["default"] = 0.5
            summary.update(
                {
                    "test_auc" if z_te is not None else "val_auc": round(rep["auc"], 4),
                    "auc_ci95": [round(v, 4) for v in rep["auc_ci95"]],
                    "ece": round(rep["ece"], 4),
                    "operating_points": {
                        k: {
                            "threshold": round(v["threshold"], 4),
                            "sensitivity": round(v["sensitivity"], 3),
                            "specificity": round(v["specificity"], 3),
                        }
                        for k, v in rep["operating_points"].items()
                    },
                    "notes": rep["notes"],
                }
            )
            if z_te is not None:
                thr = info["operating_points"].get(op.use, 0.5)
                pred = np.where(p_te[:, pos] >= thr, pos, 1 - pos)
                _write_predictions(ev_dir / "test_predictions.csv", te.names, p_te, class_names, te.labels, pred)
        else:
            if z_te is not None:
                p_te = _softmax(z_te, temperature)
                rep = multiclass_report(te.labels, p_te, class_names, out_dir=ev_dir)
                _write_predictions(ev_dir / "test_predictions.csv", te.names, p_te, class_names, te.labels)
                summary.update(
                    {
                        "test_macro_auc": round(rep["one_vs_rest_auc"]["macro"], 4),
                        "test_balanced_accuracy": round(rep["balanced_accuracy"], 4),
                    }
                )
        if skipped:
            run.write_json("skipped.json", skipped)
        atomic_write_text(run.path / "classifier.json", json.dumps(info, indent=2) + "\n")
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    run.write_json("summary.json", summary)
    return summary


# --------------------------------------------------------------------------------------------
# inference


def _expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS and f.is_file())
            if not found:
                raise InputError(f"no images ({', '.join(IMAGE_EXTS)}) in folder", p)
            files += found
        elif p.suffix.lower() == ".json":
            if not p.is_file():
                raise MissingFileError("datalist not found", p)
            content = json.loads(p.read_text())
            for key in ("test", "validation", "training"):
                for it in content.get(key) or []:
                    q = Path(it["image"] if isinstance(it, dict) else it)
                    files.append(q if q.is_absolute() else p.parent / q)
        elif not p.exists():
            raise MissingFileError("input not found", p)
        else:
            files.append(p)
    return files


def load_classifier(model_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A trained classifier and what it needs for inference (used by ``classify`` and Grad-CAM).

    Returns
    -------
    (model in eval mode, info) where ``info`` holds ``class_names``, ``positive_index``,
    ``image_size``, ``channels`` ("rgb"/"gray"), ``temperature``, ``operating_points``
    ({name: probability threshold}) and ``use`` (the default point). Feed the model
    :func:`preprocess` output.
    """
    from medseg.engine.checkpoint import load_run_model

    model_dir = Path(model_dir)
    model, cfg, ckpt = load_run_model(model_dir, map_location=map_location)
    meta = ckpt.get("meta", {})
    info_path = model_dir / "classifier.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
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


def preprocess(images: Sequence[np.ndarray], info: dict, names: Sequence[str] | None = None) -> torch.Tensor:
    """Images -> the model's input: channel mode and size of training, Lite0 normalisation.

    Parameters
    ----------
    images : (H, W) or (H, W, 3) uint8 arrays (e.g. from :func:`read_image`)
    info : the ``info`` of :func:`load_classifier`

    Returns
    -------
    Tensor (N, C, S, S) float32, ``(x - 127) / 128``.
    """
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    x, _ = prepare_images(list(images), names, int(info["image_size"]), info["channels"])
    return _normalize(x)


def classify(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    device: str = "auto",
    force: bool = False,
    operating_point: str | None = None,
) -> dict[str, Any]:
    """Classify images with a trained classifier run; per-image probabilities + predicted class.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` (task classification)
    inputs : image files, folders of images, or a datalist JSON
    out : output folder (a run folder: ``predictions.csv``, ``skipped.csv``, run.json)
    device : "auto" | "cpu" | "cuda"
    force : move an existing ``out`` aside instead of failing
    operating_point : "youden" | "high_sensitivity" | "high_specificity" | "default" (p >= 0.5);
        default: the one chosen at training (``operating_points.use``).

    Returns
    -------
    dict: n_images, n_skipped, predictions (CSV path), operating_point, threshold, counts per class.

    Notes
    -----
    Images are converted to the model's channel mode (gray <-> RGB, logged) and resized to its
    training size. Unreadable images are listed in ``skipped.csv``; the others are classified.
    """
    from medseg.engine.device import describe_device, select_device
    from medseg.runs import Run

    model_dir = Path(model_dir)
    model, info = load_classifier(model_dir)
    class_names = info["class_names"]
    pos = int(info.get("positive_index", 1))
    point = operating_point or info.get("use", "default")
    if point not in info["operating_points"]:
        raise ConfigError(
            f"operating point {point!r} not available for this model; available: {sorted(info['operating_points'])}"
        )
    threshold = float(info["operating_points"][point])
    dev = select_device(device)
    model.to(dev)
    files = _expand_inputs(inputs)
    run = Run.create(out, force=force, command="classify")
    with run:
        run.set(
            device=describe_device(dev), model_dir=str(model_dir.resolve()), operating_point=point, threshold=threshold
        )
        imgs, names, skipped = [], [], []
        for f in files:
            try:
                imgs.append(read_image(f))
                names.append(f)
            except (FileFormatError, MissingFileError) as e:
                log.warning("skipping %s", e)
                skipped.append((f, str(e)))
        rows = []
        if imgs:
            stacked, _ = prepare_images(imgs, [n.name for n in names], int(info["image_size"]), info["channels"])
            z = _predict_logits(model, stacked, dev, 32)
            p = _softmax(z, float(info.get("temperature", 1.0)))
            if len(class_names) == 2:
                pred = np.where(p[:, pos] >= threshold, pos, 1 - pos)
            else:
                pred = p.argmax(1)
            for i, f in enumerate(names):
                rows.append(
                    [
                        str(f),
                        f.stem,
                        *[f"{v:.6f}" for v in p[i]],
                        class_names[int(pred[i])],
                        f"{p[i, int(pred[i])]:.6f}",
                        point,
                        f"{threshold:.6f}",
                    ]
                )
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(
            [
                "image",
                "case_id",
                *[f"prob_{c}" for c in class_names],
                "predicted_class",
                "predicted_probability",
                "operating_point",
                "threshold",
            ]
        )
        w.writerows(rows)
        pred_csv = atomic_write_text(run.path / "predictions.csv", buf.getvalue())
        if skipped:
            from medseg.utils import atomic_write_csv

            atomic_write_csv(run.path / "skipped.csv", ["image", "error"], [[str(f), e] for f, e in skipped])
        counts = {c: sum(1 for r in rows if r[2 + len(class_names)] == c) for c in class_names}
        summary = {
            "n_images": len(rows),
            "n_skipped": len(skipped),
            "predictions": str(pred_csv),
            "operating_point": point,
            "threshold": round(threshold, 4),
            "counts": counts,
        }
        run.write_json("summary.json", summary)
    return summary


# --------------------------------------------------------------------------------------------
# evaluation of a predictions CSV against references


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise MissingFileError("CSV not found", path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as e:
        raise FileFormatError(f"not a readable CSV: {e}", path) from None


def evaluate(
    pred: str | Path,
    ref: str | Path,
    out: str | Path | None = None,
    radius: Any = None,
    pixel_size: Any = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Score ``classify`` predictions against reference labels.

    Parameters
    ----------
    pred : predictions.csv from :func:`classify` (columns image, prob_<class>..., predicted_class)
    ref : CSV with an ``image`` column and ``label`` (index) or ``class_name``/``label`` (name)
        column, e.g. ``labels.csv`` of :func:`medseg.data.lesions.make_lesion_dataset`. Rows are
        matched on the image file stem.
    out : output folder (default: beside ``pred``): metrics.json, per_case.csv, confusion_matrix.csv,
        reliability.png (binary)
    radius, pixel_size : unused (detection options of ``medseg evaluate``)

    Returns
    -------
    dict: AUC (binary) with 95% CI, or one-vs-rest AUC + balanced accuracy; sensitivity/specificity
    at the predictions' operating point; ECE; numbers of matched/unmatched cases.
    """
    from medseg.metrics.classification import (
        bootstrap_auc_ci,
        confusion_matrix,
        expected_calibration_error,
        multiclass_report,
        reliability_diagram,
        roc_auc,
        sens_spec_at,
    )

    pred, ref = Path(pred), Path(ref)
    prows, rrows = _read_csv(pred), _read_csv(ref)
    if not prows:
        raise InputError("predictions CSV is empty", pred)
    class_names = [c[5:] for c in prows[0] if c.startswith("prob_")]
    if len(class_names) < 2:
        raise InputError("predictions CSV has no prob_<class> columns (is it from medseg classify?)", pred)
    key = "label" if rrows and "label" in rrows[0] else "class_name"
    if not rrows or "image" not in rrows[0] or key not in rrows[0]:
        raise InputError("reference CSV needs columns 'image' and 'label' (or 'class_name')", ref)
    refmap = {
        Path(r["image"]).stem: _label_index(r[key], class_names, f"{ref.name} row {i + 2}") for i, r in enumerate(rrows)
    }
    y, probs, predicted, names = [], [], [], []
    unmatched = []
    for r in prows:
        stem = Path(r["image"]).stem
        if stem not in refmap:
            unmatched.append(stem)
            continue
        y.append(refmap[stem])
        probs.append([float(r[f"prob_{c}"]) for c in class_names])
        predicted.append(_label_index(r["predicted_class"], class_names, pred.name))
        names.append(stem)
    if not y:
        raise InputError(f"no prediction matches a reference image (first prediction {prows[0]['image']!r})", pred)
    y_arr, p_arr, pr = np.array(y), np.array(probs), np.array(predicted)
    out_dir = Path(out) if out is not None else pred.parent / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    k = len(class_names)
    cm = confusion_matrix(y_arr, pr, k)
    res: dict[str, Any] = {
        "n_cases": len(y),
        "n_unmatched_predictions": len(unmatched),
        "class_names": class_names,
        "confusion_matrix": cm.tolist(),
        "accuracy": float((pr == y_arr).mean()),
    }
    if k == 2:
        pos = 1
        yb = (y_arr == pos).astype(int)
        thr = float(prows[0].get("threshold") or 0.5)
        if 0 < yb.sum() < len(yb):
            res["auc"] = roc_auc(yb, p_arr[:, pos])
            res["auc_ci95"] = list(bootstrap_auc_ci(yb, p_arr[:, pos], n_boot=n_boot))
        else:
            res["notes"] = ["AUC undefined: the references contain one class only"]
        ss = sens_spec_at(yb, (pr == pos).astype(float), 0.5)
        res["operating_point"] = {
            "name": prows[0].get("operating_point"),
            "threshold": thr,
            **{
                m: ss[m]
                for m in (
                    "sensitivity",
                    "specificity",
                    "ppv",
                    "npv",
                    "sensitivity_ci_low",
                    "sensitivity_ci_high",
                    "specificity_ci_low",
                    "specificity_ci_high",
                )
            },
        }
        res["ece"], _ = expected_calibration_error(yb, p_arr[:, pos])
        reliability_diagram(yb, p_arr[:, pos], out_dir / "reliability.png", title=f"n={len(yb)}")
    else:
        res.update(multiclass_report(y_arr, p_arr, class_names))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["case_id", "reference_class", "predicted_class", *[f"prob_{c}" for c in class_names], "correct"])
    for i, n in enumerate(names):
        w.writerow(
            [
                n,
                class_names[y[i]],
                class_names[predicted[i]],
                *[f"{v:.6f}" for v in probs[i]],
                int(y[i] == predicted[i]),
            ]
        )
    atomic_write_text(out_dir / "per_case.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["reference \\ predicted", *class_names])
    w.writerows([[class_names[i], *cm[i].tolist()] for i in range(k)])
    atomic_write_text(out_dir / "confusion_matrix.csv", buf.getvalue())
    atomic_write_text(out_dir / "metrics.json", json.dumps(res, indent=2, default=float) + "\n")
    summary = {
        k2: (round(v, 4) if isinstance(v, float) else v)
        for k2, v in res.items()
        if k2 in ("n_cases", "auc", "accuracy", "ece", "n_unmatched_predictions")
    }
    summary["metrics"] = str(out_dir / "metrics.json")
    return summary


# --------------------------------------------------------------------------------------------
# demo stage


def run_demo(out: Path, quick: bool = False) -> dict[str, Any]:
    """Demo stage ``classification``: synthetic lesions -> fine-tuned Lite0 -> test AUC + review cases.

    Leaves the trained run folder at ``out / "run"`` (used by the explain stage).
    Budget: ~60 s on 2 CPU cores (``quick``: ~15 s).
    """
    from medseg.config import (
        ClassificationConfig,
        DataSection,
        FinetuneSection,
        ModelSection,
        OperatingPointSection,
        TrainSection,
    )
    from medseg.data.lesions import make_lesion_dataset, write_png
    from medseg.review.cases import ReviewCase
    from medseg.runs import Run

    out = Path(out)
    t0 = time.perf_counter()
    n, size = (40, 48) if quick else (160, 96)
    datalist = make_lesion_dataset(out / "data", n=n, seed=0, size=size, splits=(0.5, 0.25, 0.25))
    cfg = ClassificationConfig(
        name="run",
        seed=0,
        device="cpu",
        image_size=size,
        augmentation="dermoscopy",
        data=DataSection(datalist=datalist),
        model=ModelSection(name="efficientnet_lite0", pretrained=True, image_size=size),
        # quick (tests): a linear probe on the ImageNet features (no backward through the backbone)
        train=TrainSection(
            epochs=2 if quick else 8,
            batch_size=16,
            lr=1e-2 if quick else 1e-3,
            max_minutes=0.2 if quick else 1.0,
            early_stop_patience=2 if quick else 4,
        ),
        finetune=FinetuneSection(strategy="linear_probe" if quick else "full"),
        operating_points=OperatingPointSection(n_bootstrap=200 if quick else 1000),
    )
    run = Run.create(out / "run", cfg, force=True, command="demo classification")
    with run:
        summary = train(cfg, run)
    test = json.loads(Path(datalist).read_text())["test"]
    images = [out / "data" / e["image"] for e in test]
    cls = classify(out / "run", images, out / "predictions", device="cpu", force=True)
    ev = evaluate(Path(cls["predictions"]), out / "data" / "labels.csv", out / "evaluation", n_boot=200)
    # review cases
    try:
        from medseg.review.overlay import overlay_2d, save_png  # type: ignore[attr-defined]
    except ImportError:
        overlay_2d = save_png = None
    rows = _read_csv(Path(cls["predictions"]))
    ref = {Path(e["image"]).stem: e for e in test}
    class_names = list(cfg.class_names)
    cases = []
    thumbs = out / "thumbnails"
    thumbs.mkdir(parents=True, exist_ok=True)
    for r in rows:
        stem = r["case_id"]
        e = ref[stem]
        img = read_image(out / "data" / e["image"])
        thumb = thumbs / f"{stem}.png"
        if overlay_2d is not None:
            # the image as the classifier saw it: a filled reference mask would hide the border and
            # texture the reviewer has to judge (Grad-CAM rows show where the model looked)
            save_png(overlay_2d(img), thumb)
        else:
            write_png(img, thumb)
        p_mal = float(r[f"prob_{class_names[1]}"])
        cases.append(
            ReviewCase(
                case_id=stem,
                task="classification",
                thumbnail=str(thumb.resolve()),
                prediction=r["predicted_class"],
                probability=round(p_mal, 4),
                metrics={
                    f"reference_{class_names[1]}": float(e["label"]),
                    "correct": float(r["predicted_class"] == class_names[int(e["label"])]),
                },
                uncertainty=round(1.0 - abs(2 * p_mal - 1), 4),
                needs_review=abs(p_mal - 0.5) < 0.2,
                outputs={"predictions": str(Path(cls["predictions"]).resolve())},
            )
        )
    return {
        "summary": {
            "run": str((out / "run").resolve()),
            "n_train": summary["n_train"],
            "n_test": summary["n_test"],
            "test_auc": summary.get("test_auc"),
            "auc_ci95": summary.get("auc_ci95"),
            "operating_points": summary.get("operating_points"),
            "epochs": summary["epochs"],
            "accuracy": ev.get("accuracy"),
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "cases": cases,
    }
