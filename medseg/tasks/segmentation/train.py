"""Training of the segmentation task (``medseg train`` with ``task: segmentation``).

Fingerprint + plan (:mod:`medseg.engine.plan`), cached MONAI datasets, DiceCE loss (deep
supervision heads weighted 1, 1/2, 1/4 ...), the shared :class:`medseg.engine.trainer.Trainer`
(step :func:`~medseg.engine.trainer.default_step`), sliding-window validation on whole volumes,
best/last checkpoints, exact resume and extension past the planned epochs.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset, ThreadDataLoader
from monai.losses import DiceCELoss
from monai.transforms import Compose
from torch import nn

from medseg.config import SegmentationConfig
from medseg.engine.device import describe_device, loader_options, select_device, use_amp
from medseg.engine.distributed import current
from medseg.engine.inference import predict_probs
from medseg.engine.plan import fingerprint, make_plan
from medseg.engine.trainer import Trainer, build_optimizer, build_scheduler, default_step
from medseg.errors import CheckpointError, ConfigError
from medseg.models import build_model, model_parameters
from medseg.runs import Run
from medseg.tasks.modelcard import write_model_card
from medseg.tasks.provenance import record_training_data
from medseg.tasks.segmentation.calibrate import calibrate_review
from medseg.tasks.segmentation.data import Item, datalists, dataset, validation_note
from medseg.tasks.segmentation.evaluate import dice_per_class
from medseg.transforms.pipeline import is_photo, train_transforms
from medseg.utils import atomic_write_bytes, atomic_write_text, seed_everything

__all__ = ["train", "model_params", "loss_fn", "make_transforms", "plan_run", "assert_dice"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

log = logging.getLogger("medseg.segmentation")


def assert_dice(value: float, name: str) -> None:
    """A figure named Dice is a fraction in [0, 1] (or NaN: no class present); anything else is a bug."""
    if not (math.isnan(value) or 0.0 <= value <= 1.0):
        raise AssertionError(f"{name} = {value} is not a Dice (outside [0, 1]); a loss was reported as a Dice")


def model_params(cfg: SegmentationConfig, plan: Mapping[str, Any], in_channels: int) -> dict[str, Any]:
    """Build parameters of the network (``name`` plus the model's keyword arguments).

    ``spatial_dims`` defaults to the plan's configuration (2 for the 2D configuration of a volume),
    ``in_channels`` and ``out_channels`` (= number of classes) to the task's, ``norm`` to the plan's
    normalisation layer; a U-Net takes its per-level strides from the plan.
    """
    params = cfg.model.model_dump()
    name = params.pop("name")
    params.setdefault("spatial_dims", int(plan.get("network_dims", cfg.spatial_dims)))
    if "norm_layer" in plan and "norm" in model_parameters(name):
        params.setdefault("norm", plan["norm_layer"])
    params.setdefault("in_channels", in_channels)
    params.setdefault("out_channels", len(cfg.class_names))
    if name == "fcn" and params.get("pretrained"):
        params["encoder"] = "lite0"  # so load_run_model rebuilds the same encoder (with pretrained: false)
    if name == "unet":
        levels = len(params.get("channels") or (16, 32, 64, 128))
        if "strides" not in params:
            params["strides"] = plan["strides"][:levels]
    return {"name": name, **params}


def loss_fn() -> LossFn:
    """DiceCE on softmax outputs ``(B, K, *S)`` vs label maps ``(B, 1, *S)`` (foreground classes only).

    Deep-supervision outputs ``(B, 1 + n, K, *S)`` (DynUNet in training) are weighted 1, 1/2, 1/4 ...
    """
    dice_ce = DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        include_background=False,
        squared_pred=False,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        batch=True,
    )

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if out.dim() == y.dim() + 1:  # deep supervision heads, already at full size
            w = [0.5**i for i in range(out.shape[1])]
            total = sum((wi * dice_ce(out[:, i], y) for i, wi in enumerate(w)), torch.zeros((), device=out.device))
            return total / sum(w)
        return dice_ce(out, y)

    return loss


def plan_run(cfg: SegmentationConfig, run_dir: Path, items: list[Item], resume: bool) -> dict[str, Any]:
    """The run's plan (``plan.json``): read back on resume, else fingerprint the items and plan.

    Returns ``{"fingerprint": ..., "target_spacing", "patch_size", "strides", "norm", ...}``.
    """
    path = run_dir / "plan.json"
    if resume and path.is_file():
        plan: dict[str, Any] = json.loads(path.read_text())
        return plan
    unique = list({str(it["image"]): {"image": it["image"], "label": it["label"]} for it in items}.values())
    fp = fingerprint(
        unique,
        spatial_dims=cfg.spatial_dims,
        modality=cfg.modality,
        max_cases=cfg.plan.fingerprint_cases,
        seed=cfg.seed,
    )
    levels = len(cfg.model.model_dump().get("channels") or (16, 32, 64, 128))
    plan = make_plan(
        fp,
        spatial_dims=cfg.spatial_dims,
        modality=cfg.modality,
        levels=levels,
        overrides=cfg.plan.model_dump(),
        budget_minutes=cfg.train.max_minutes,
    )
    plan = {"fingerprint": fp, **plan}
    atomic_write_text(path, json.dumps(plan, indent=2) + "\n")
    return plan


def make_transforms(cfg: SegmentationConfig, plan: Mapping[str, Any]) -> tuple[Compose, Compose]:
    """(training, validation) transforms of ``cfg`` with the plan's spacing, patch and normalisation."""
    flip = cfg.augment.flip_axes
    if flip is None and is_photo(cfg.modality):
        flip = list(range(cfg.spatial_dims))
    return train_transforms(
        spatial_dims=cfg.spatial_dims,
        modality=cfg.modality,
        target_spacing=plan["target_spacing"],
        patch_size=plan["patch_size"],
        n_classes=len(cfg.class_names),
        label_map=cfg.label_map,
        norm=plan["norm"],
        augment=cfg.augment.level,
        flip_axes=flip,
        samples_per_image=cfg.augment.samples_per_image * int(plan.get("batch_factor", 1)),
        pos_fraction=cfg.augment.pos_fraction,
        slice_axis=plan.get("slice_axis"),
    )


def _validation(
    cfg: SegmentationConfig, val_ds: Dataset, plan: Mapping[str, Any], device: torch.device, amp: bool
) -> Callable[[nn.Module], dict[str, float]]:
    """The Trainer's ``val_fn``: Dice per class on whole validation volumes (sliding window, training spacing)."""
    n_classes = len(cfg.class_names)
    cpu0 = time.process_time()

    def val_fn(m: nn.Module) -> dict[str, float]:
        cpu_s = time.process_time() - cpu0  # CPU seconds of this process (contention-independent)
        dices = []
        for i in range(len(val_ds)):
            d = val_ds[i]
            probs, _ = predict_probs(
                m,
                d["image"].as_tensor()[None],
                plan,
                sw_batch_size=cfg.infer.batch_size,
                overlap=min(cfg.infer.overlap, 0.25),
                device=device,
                amp=amp,
            )
            pred = probs.argmax(1)[0].cpu()
            dices.append(dice_per_class(pred, d["label"].as_tensor()[0], n_classes))
        arr = np.array(dices)
        per_class = np.nanmean(arr, axis=0) if len(arr) else np.full(n_classes - 1, np.nan)
        mean = float(np.nanmean(per_class))
        assert_dice(mean, "val_dice")
        out = {"val_dice": mean, "cpu_seconds": cpu_s}
        out.update({f"val_dice_{n}": float(v) for n, v in zip(cfg.class_names[1:], per_class)})
        return out

    return val_fn


def train(
    cfg: SegmentationConfig,
    run: Run,
    resume: bool = False,
    *,
    init_weights: Mapping[str, torch.Tensor] | None = None,
    fixed_plan: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a segmenter as configured; write checkpoints, metrics and the plan into ``run``.

    Parameters
    ----------
    cfg : the validated config.
    run : the run folder (``Run.create`` / ``open_run``); gets ``plan.json``, ``checkpoints/``,
        ``metrics.csv``, ``training_curve.png``, ``train_summary.json`` and (synthetic data) ``data/``.
    resume : continue from ``checkpoints/last.pt`` (exactly), possibly to a larger ``train.epochs``.
    init_weights : start from these network weights (a parent run's ``state_dict``: fine-tuning,
        :mod:`medseg.tasks.finetune`) instead of a random initialisation; ignored on resume.
    fixed_plan : use this plan (a parent run's ``plan.json``: same spacing, patch, normalisation and
        network) instead of planning from the data; written as this run's ``plan.json``.

    Returns
    -------
    summary dict: ``epochs``, ``best_val_dice`` (mean over foreground classes; None when nothing was
    validated) and ``best_epoch``, ``validation`` (``cases`` | ``spatial_block`` | ``none``, also in
    ``run.json`` with the reason), ``final_train_loss``, ``configuration`` (``3d`` | ``2d``),
    ``stop_reason``, ``train_seconds``, case counts, ``patch_size``, ``target_spacing``, ``run_dir``.
    """
    if len(cfg.class_names) < 2:
        raise ConfigError("class_names needs background plus at least one class")
    device = select_device(cfg.device)
    dist = current()  # the rank of a DDP job (torchrun), or the single process
    run.set(device=describe_device(device), world_size=dist.world_size)
    seed_everything(cfg.seed)
    run_dir = Path(run.path)
    with run.stage("data"):
        train_items, val_items, test_items = datalists(cfg, run_dir / "data")
        validation = validation_note(train_items, val_items, cfg.data.val_fraction)
        run.set(validation=validation)
        if validation["mode"] != "cases":
            log.warning("validation: %s", validation["reason"])
        if fixed_plan is not None and not (resume and (run_dir / "plan.json").is_file()):
            plan = dict(fixed_plan)
            atomic_write_text(run_dir / "plan.json", json.dumps(plan, indent=2) + "\n")
        else:
            plan = plan_run(cfg, run_dir, train_items + val_items, resume)
        # provenance (issue 13): datalist + SHA-256, case ids per split, fingerprint, OOD reference
        splits = {"training": train_items, "validation": val_items, "test": test_items}
        record_training_data(run, cfg, splits, plan["fingerprint"])
        dist.check_same(plan, "plan (data fingerprint, patch size, spacing)")
        train_tf, val_tf = make_transforms(cfg, plan)
        # DDP: each rank trains on (and caches) its own equal share of the cases (MONAI partition_dataset)
        train_ds = dataset(dist.partition(train_items, cfg.seed), train_tf, cfg, run_dir / "cache" / "train")
        val_ds = dataset(val_items, val_tf, cfg, run_dir / "cache" / "val") if val_items else None
    params = model_params(cfg, plan, int(plan["fingerprint"]["channels"]))
    seed_everything(cfg.seed)
    model = build_model(**params)
    if init_weights is not None and not resume:
        try:
            model.load_state_dict(dict(init_weights))
        except RuntimeError as e:
            raise CheckpointError(f"the starting weights do not fit this network ({str(e).splitlines()[0]})") from None
    loader: DataLoader
    if cfg.data.num_workers == 0:
        # patches are cropped/augmented in a background thread while the network trains on the previous
        # batch (MONAI ThreadDataLoader); one thread keeps the random stream in order (exact resume)
        loader = ThreadDataLoader(train_ds, batch_size=cfg.train.batch_size, shuffle=True, num_workers=0, buffer_size=1)
    else:
        loader = DataLoader(
            train_ds, batch_size=cfg.train.batch_size, shuffle=True, **loader_options(cfg.data.num_workers, device)
        )
    amp = use_amp(device, cfg.train.amp)
    opt = build_optimizer(model.parameters(), cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    sched = build_scheduler(opt, cfg.train.scheduler, cfg.train.epochs)
    trainer = Trainer.from_config(
        model,
        opt,
        loader,
        default_step(loss_fn()),
        train=cfg.train,
        seed=cfg.seed,
        val_fn=_validation(cfg, val_ds, plan, device, amp) if val_ds is not None else None,
        key_metric="val_dice" if val_ds is not None else "train_loss",
        mode="max" if val_ds is not None else "min",
        scheduler=sched,
        device=device,
        amp=amp,
        run_dir=run_dir,
        model_meta={
            "model_params": params,
            "plan": {k: v for k, v in plan.items() if k != "fingerprint"},
            "class_names": list(cfg.class_names),
            "modality": cfg.modality,
            "spatial_dims": cfg.spatial_dims,
        },
    )
    with run.stage("train"):
        # resume: model, optimiser, scheduler (stretched by the Trainer when train.epochs grew), state, RNG
        state = trainer.fit(resume=resume)
    run.set(compile=trainer.compile_status())  # asked for, and used or fell back (like device, in run.json)
    if not dist.is_main:  # rank 0 writes the outputs (calibration, model card)
        return {"rank": dist.rank, "epochs": state.epoch}
    validated = val_ds is not None
    if not validated:  # no selection on training figures: the checkpoint used is the last one
        last = run_dir / "checkpoints" / "last.pt"
        if last.is_file():
            atomic_write_bytes(run_dir / "checkpoints" / "best.pt", last.read_bytes())
    best_dice = state.best_metric if validated else None
    if best_dice is not None:
        assert_dice(best_dice, "best_val_dice")
    summary = {
        "epochs": state.epoch,
        "best_val_dice": best_dice,  # None without validation: a training loss is never reported as a Dice
        "best_epoch": state.best_epoch if validated else None,
        "validation": validation["mode"],
        "final_train_loss": state.history[-1]["train_loss"] if state.history else None,
        "configuration": plan.get("configuration", "3d" if cfg.spatial_dims == 3 else "2d"),
        "stop_reason": state.stop_reason,
        "train_seconds": round(state.train_seconds, 1),
        "train_cases": len(train_items),
        "val_cases": len(val_items),
        "patch_size": plan["patch_size"],
        "target_spacing": plan["target_spacing"],
        "run_dir": str(run_dir),
    }
    run.write_json("train_summary.json", summary)
    # issue 13: needs-review threshold calibrated on the validation cases, then the model card
    with run.stage("calibrate"):
        # a spatial-block validation case was mostly trained on: its uncertainty would calibrate too low
        calibrate_review(run, cfg, [it for it in val_items if "block" not in it])
    write_model_card(run, cfg, summary)
    return summary
