"""``medseg train`` with ``task: classification``: fine-tune a (pretrained) classifier on image-level labels.

Reads the datalist (or generates the synthetic lesion set), fine-tunes the configured network with
the shared :class:`medseg.engine.trainer.Trainer` (checkpoints, exact resume, early stopping on
validation AUC), then, on the best checkpoint, calibrates and chooses the operating points
(:mod:`medseg.tasks.classification.report`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from torch import nn

from medseg.config import ClassificationConfig
from medseg.data.lesions import make_lesion_dataset
from medseg.data.lesions3d import make_lesion_volume_dataset
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.device import describe_device, loader_options, select_device
from medseg.engine.distributed import current
from medseg.engine.trainer import Trainer, build_optimizer, build_scheduler
from medseg.errors import ConfigError, InputError
from medseg.models import build_model
from medseg.runs import Run
from medseg.tasks.classification.data import ImageLabelDataset, Split, load_rows, read_datalist, stratified_holdout
from medseg.tasks.classification.finetune import configure_finetuning, model_params
from medseg.tasks.classification.predict import predict_logits, softmax
from medseg.tasks.classification.report import auc_or_nan, operating_report
from medseg.tasks.classification.volumes import holdout_lesions, lesion_crops, read_lesion_datalist, volume_augmentation
from medseg.tasks.modelcard import write_model_card
from medseg.tasks.provenance import record_training_data
from medseg.transforms.classification import augmentation_transforms, prepare_images
from medseg.utils import seed_everything

__all__ = ["train"]

log = logging.getLogger("medseg.tasks.classification")


@dataclass
class _Data:
    """The three splits: uint8 batches ``(N, C, S, S)`` and their names/labels."""

    x_tr: torch.Tensor
    x_va: torch.Tensor
    x_te: torch.Tensor
    tr: Split
    va: Split
    te: Split
    mode: str
    size: int
    skipped: list[dict[str, str]]


def _datalist(cfg: ClassificationConfig, run: Run) -> Path:
    if cfg.data.datalist is not None:
        return Path(cfg.data.datalist)
    if cfg.data.synthetic:
        if len(cfg.class_names) != 2:
            raise ConfigError("synthetic lesion data has two classes; set two class_names")
        datalist = run.path / "data" / "dataset.json"
        if not datalist.is_file() and cfg.volume is not None:  # CT-like nodule volumes, one entry per lesion
            datalist = make_lesion_volume_dataset(run.path / "data", n=cfg.data.num_cases, seed=cfg.seed)
        if not datalist.is_file():
            datalist = make_lesion_dataset(
                run.path / "data",
                n=cfg.data.num_cases,
                seed=cfg.seed,
                size=cfg.image_size or 128,
                class_names=list(cfg.class_names),
            )
        return datalist
    raise ConfigError("set data.datalist (a JSON of images and labels) or data.synthetic: true")


def _load_volumes(cfg: ClassificationConfig, datalist: Path) -> _Data:
    """The lesion crops of a ``volume:`` run (uint8 ``(N, C, G, G, G)`` per split)."""
    assert cfg.volume is not None
    lists = read_lesion_datalist(datalist, cfg.data.root, list(cfg.class_names))
    train_rows, val_rows = lists["training"], lists["validation"]
    if not val_rows:
        train_rows, val_rows = holdout_lesions(train_rows, cfg.data.val_fraction, cfg.seed)
    skipped: list[dict[str, str]] = []
    x_tr, tr = lesion_crops(train_rows, cfg.volume, skipped)
    x_va, va = lesion_crops(val_rows, cfg.volume, skipped)
    x_te, te = lesion_crops(lists["test"], cfg.volume, skipped)
    _check_classes(list(cfg.class_names), tr, va, datalist)
    return _Data(x_tr, x_va, x_te, tr, va, te, "gray", int(cfg.volume.grid), skipped)


def _check_classes(class_names: list[str], tr: Split, va: Split, datalist: Path) -> None:
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


def _load_data(cfg: ClassificationConfig, datalist: Path) -> _Data:
    if cfg.volume is not None:
        return _load_volumes(cfg, datalist)
    class_names = list(cfg.class_names)
    lists = read_datalist(datalist, cfg.data.root, class_names)
    train_rows, val_rows = lists["training"], lists["validation"]
    if not val_rows:
        train_rows, val_rows = stratified_holdout(train_rows, cfg.data.val_fraction, cfg.seed)
    skipped: list[dict[str, str]] = []
    tr_imgs, tr = load_rows(train_rows, skipped)
    va_imgs, va = load_rows(val_rows, skipped)
    te_imgs, te = load_rows(lists["test"], skipped)
    _check_classes(class_names, tr, va, datalist)
    stacked, mode = prepare_images(
        tr_imgs + va_imgs + te_imgs, tr.names + va.names + te.names, cfg.image_size, cfg.channels
    )
    n_tr, n_va = len(tr_imgs), len(va_imgs)
    x_tr, x_va, x_te = stacked[:n_tr], stacked[n_tr : n_tr + n_va], stacked[n_tr + n_va :]
    return _Data(x_tr, x_va, x_te, tr, va, te, mode, int(stacked.shape[-1]), skipped)


def train(cfg: ClassificationConfig, run: Run, resume: bool = False) -> dict[str, Any]:
    """Fine-tune a classifier as configured; choose operating points; evaluate on the test split.

    Parameters
    ----------
    cfg : the validated config (``task: classification``)
    run : the run folder (checkpoints, metrics.csv, classifier.json, evaluation/)
    resume : continue exactly from ``checkpoints/last.pt``

    Returns
    -------
    dict summary: epochs, best validation AUC, split sizes, test AUC (+ 95% CI), operating points,
    temperature, seconds, number of skipped files.
    """
    t_start = time.perf_counter()
    device = select_device(cfg.device)
    dist = current()  # the rank of a DDP job (torchrun), or the single process
    run.set(device=describe_device(device), world_size=dist.world_size)
    seed_everything(cfg.seed)
    class_names = list(cfg.class_names)
    if len(set(class_names)) != len(class_names):
        raise ConfigError(f"class_names has duplicates: {class_names}")
    if cfg.positive_class and cfg.positive_class not in class_names:
        raise ConfigError(f"positive_class {cfg.positive_class!r} is not one of class_names {class_names}")
    pos = class_names.index(cfg.positive_class) if cfg.positive_class else 1

    datalist = _datalist(cfg, run)
    with run.stage("load_data"):
        d = _load_data(cfg, datalist)
    tr, va, te = d.tr, d.va, d.te
    # provenance (issue 13): datalist + SHA-256, case ids per split, image statistics, OOD reference
    record_training_data(run, cfg, {"training": tr.paths, "validation": va.paths, "test": te.paths})
    log.info(
        "classification data: %d train, %d validation, %d test images (%s, %dpx), %d skipped",
        len(tr.labels),
        len(va.labels),
        len(te.labels),
        d.mode,
        d.size,
        len(d.skipped),
    )

    # --- model, loss, strategy ----------------------------------------------------------------
    params = model_params(cfg, d.mode, d.size)
    model = build_model(**params)
    counts = np.bincount(tr.labels, minlength=len(class_names)).astype(np.float64)
    weight = None
    sampler: torch.utils.data.Sampler | None = None
    if cfg.imbalance == "weighted_loss":
        weight = torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)
    elif cfg.imbalance == "sampler":
        w = (1.0 / counts)[tr.labels]
        # DDP: each rank draws its share of the samples from its own (rank-seeded) stream
        n_draw = max(1, len(w) // dist.world_size)
        sampler = torch.utils.data.WeightedRandomSampler(w.tolist(), n_draw, replacement=True)
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None)
    ft = cfg.finetune
    if dist.world_size > 1 and ft.strategy == "gradual_unfreeze":
        # DDP syncs the gradients of the parameters trainable when it starts; unfreezing later would not sync them
        raise ConfigError(
            "finetune.strategy: gradual_unfreeze cannot train on several processes; use full or discriminative"
        )
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
    aug = volume_augmentation(cfg.volume) if cfg.volume else augmentation_transforms(cfg.augmentation, d.size)
    ds = ImageLabelDataset(d.x_tr, tr.labels, Compose(aug))
    if sampler is None:  # DDP: a DistributedSampler (equal shares, one shuffle per epoch); None in one process
        sampler = dist.sampler(ds, shuffle=True, seed=cfg.seed)
    share = len(ds) // dist.world_size
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=min(cfg.train.batch_size, max(1, share)),
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=share > cfg.train.batch_size,
        **loader_options(cfg.data.num_workers, device),
    )
    trainer_ref: dict[str, Trainer] = {}

    def step(m: nn.Module, batch: dict[str, Any], dev: torch.device) -> torch.Tensor:
        hook(getattr(m, "module", m), trainer_ref["t"].state.epoch)  # the bare model inside a DDP wrapper
        x = batch["image"].to(dev, non_blocking=True)
        y = torch.as_tensor(batch["label"]).to(dev)
        return loss_fn(m(x), y)

    def val_fn(m: nn.Module) -> dict[str, float]:
        z = predict_logits(m, d.x_va, device, cfg.infer.batch_size * 8)
        p = softmax(z)
        vloss = float(nn.functional.cross_entropy(torch.as_tensor(z), torch.as_tensor(va.labels)))
        auc = auc_or_nan(va.labels, p, pos)
        return {"val_auc": auc, "val_loss": vloss, "val_accuracy": float((p.argmax(1) == va.labels).mean())}

    meta = {
        "model_params": params,
        "class_names": class_names,
        "image_size": d.size,
        "channels": d.mode,
        "positive_index": pos,
        **({"volume": cfg.volume.model_dump()} if cfg.volume else {}),
    }
    trainer = Trainer.from_config(
        model,
        optimizer,
        loader,
        step,
        train=cfg.train,
        seed=cfg.seed,
        val_fn=val_fn,
        key_metric="val_auc",
        mode="max",
        scheduler=scheduler,
        device=device,
        run_dir=run.path,
        model_meta=meta,
    )
    trainer_ref["t"] = trainer
    with run.stage("train"):
        state = trainer.fit(resume=resume)
    run.set(compile=trainer.compile_status())  # asked for, and used or fell back (as segmentation records it)
    if not dist.is_main:  # rank 0 writes the outputs (operating points, report, model card)
        return {"rank": dist.rank, "epochs": state.epoch}

    # --- operating points on validation, report on test ------------------------------------------
    with run.stage("evaluate"):
        best = run.path / "checkpoints" / "best.pt"
        ckpt = load_checkpoint(best if best.is_file() else run.path / "checkpoints" / "last.pt", device)
        model.load_state_dict(ckpt["model"])
        z_va = predict_logits(model, d.x_va, device)
        z_te = predict_logits(model, d.x_te, device) if len(te.labels) else None
        summary: dict[str, Any] = {
            "epochs": state.epoch,
            "best_epoch": state.best_epoch,
            "best_val_auc": state.best_metric,
            "stop_reason": state.stop_reason,
            "n_train": int(len(tr.labels)),
            "n_validation": int(len(va.labels)),
            "n_test": int(len(te.labels)),
            "skipped": len(d.skipped),
        }
        info = {
            "class_names": class_names,
            "positive_class": class_names[pos],
            "positive_index": pos,
            "image_size": d.size,
            "channels": d.mode,
            **({"volume": cfg.volume.model_dump()} if cfg.volume else {}),
        }
        summary.update(
            operating_report(
                z_va,
                va,
                z_te,
                te,
                class_names=class_names,
                pos=pos,
                op=cfg.operating_points,
                seed=cfg.seed,
                ev_dir=run.subdir("evaluation"),
                info=info,
                info_path=run.path / "classifier.json",
            )
        )
        if d.skipped:
            run.write_json("skipped.json", d.skipped)
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    run.write_json("summary.json", summary)
    write_model_card(run, cfg, summary)  # issue 13
    return summary
