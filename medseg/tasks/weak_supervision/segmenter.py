"""The 2D segmenter of weak supervision: trained on (pseudo-)masks, scored by Dice against true masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.metrics.meandice import compute_dice
from torch import nn

from medseg.config.weak_supervision import WeakTrainSection
from medseg.engine.trainer import Trainer, build_optimizer, build_scheduler
from medseg.models import build_model
from medseg.utils import seed_everything

__all__ = ["segmentation_tensors", "train_segmenter", "segmenter_dice"]


def segmentation_tensors(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(H, W[, 3])`` uint8 -> ``(N, C, H, W)`` float ``x / 255 - 0.5``; masks -> ``(N, 1, H, W)`` int64."""
    x = np.stack([im.transpose(2, 0, 1) if im.ndim == 3 else im[None] for im in images]).astype(np.float32)
    return torch.as_tensor(x / 255.0 - 0.5), torch.as_tensor(np.stack(masks)[:, None].astype(np.int64))


def train_segmenter(
    params: dict[str, Any],
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    run_dir: Path,
    settings: WeakTrainSection,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> nn.Module:
    """Train a 2D segmenter on images ``(H, W[, 3])`` uint8 and binary masks with DiceCE (random flips).

    Parameters
    ----------
    params : ``build_model`` parameters of the segmenter
    images, masks : training images and their (pseudo-)masks ``(H, W)`` bool
    run_dir : folder of the checkpoints and metrics.csv
    settings : epochs, batch size, optimiser, LR schedule, budget (``train`` section of the config)
    seed, device, num_workers : seed, device and data-loading workers

    Returns
    -------
    the model after the last epoch, in eval mode (the shared :class:`medseg.engine.trainer.Trainer`).
    """
    seed_everything(seed)
    model = build_model(**params)
    x, y = segmentation_tensors(images, masks)
    ds = [{"image": x[i], "label": y[i]} for i in range(len(x))]
    bs = settings.batch_size
    # a list is a map-style dataset (__getitem__ + __len__); torch's stubs want a Dataset subclass
    loader: torch.utils.data.DataLoader[dict[str, torch.Tensor]] = torch.utils.data.DataLoader(
        ds,  # type: ignore[arg-type]
        batch_size=bs,
        shuffle=True,
        drop_last=len(ds) > bs,
        num_workers=num_workers,
    )
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def step(net: nn.Module, batch: dict[str, torch.Tensor], dev: torch.device) -> torch.Tensor:
        xb, yb = batch["image"].to(dev), batch["label"].to(dev)
        for ax in (2, 3):  # random flips (the lesion task has no preferred orientation)
            if torch.rand(()) < 0.5:
                xb, yb = xb.flip(ax), yb.flip(ax)
        out = net(xb)
        if out.ndim == xb.ndim + 1:  # deep supervision (B, 1 + k, C, H, W): train on the full-size head
            out = out[:, 0]
        return torch.as_tensor(loss_fn(out, yb))

    opt = build_optimizer(model.parameters(), settings.optimizer, lr=settings.lr, weight_decay=settings.weight_decay)
    trainer = Trainer.from_config(
        model,
        opt,
        loader,
        step,
        train=settings,
        seed=seed,
        scheduler=build_scheduler(opt, settings.scheduler, settings.epochs),
        device=device,
        run_dir=run_dir,
        model_meta={"model_params": params},
    )
    trainer.fit()
    return trainer.model.eval()


@torch.no_grad()
def segmenter_dice(
    model: nn.Module, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], batch_size: int = 16
) -> np.ndarray:
    """Foreground Dice ``(N,)`` of the segmenter's argmax on each image vs its mask (MONAI ``compute_dice``)."""
    x, y = segmentation_tensors(images, masks)
    dev = next(model.parameters()).device
    preds = []
    for s in range(0, len(x), batch_size):
        preds.append(model(x[s : s + batch_size].to(dev)).argmax(1, keepdim=True).cpu())
    pred = torch.cat(preds).float()
    return np.asarray(compute_dice(pred, y.float(), include_background=True, ignore_empty=False)[:, 0].numpy())
