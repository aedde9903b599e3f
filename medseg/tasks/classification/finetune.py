"""The classifier network of a config and how it is fine-tuned (parameter groups, frozen stages)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from medseg.config import ClassificationConfig
from medseg.errors import ConfigError
from medseg.models import model_parameters
from medseg.models.classifier import backbone_stages, head_parameter_names

__all__ = ["model_params", "configure_finetuning"]

log = logging.getLogger("medseg.tasks.classification")

#: ``hook(model, epoch)`` of :func:`configure_finetuning`
FinetuneHook = Callable[[nn.Module, int], None]


def model_params(cfg: ClassificationConfig, mode: str, image_size: int) -> dict[str, Any]:
    """``build_model`` parameters of the configured network for images of ``image_size`` pixels.

    ``num_classes`` (from ``class_names``), ``in_channels`` (3 for ``mode`` "rgb", 1 for "gray") and
    ``image_size`` (MONAI EfficientNet's static SAME padding) are filled in where the builder takes
    them. A 3D network or a ``num_classes`` that disagrees with ``class_names`` is a ConfigError.
    """
    extra = cfg.model.model_dump()
    name = extra.pop("name")
    try:
        allowed = model_parameters(name)
    except KeyError:
        allowed = {}
    params: dict[str, Any] = {"name": name, **extra}
    if cfg.volume is not None:
        return _volume_params(cfg, name, params, allowed)
    if "num_classes" in allowed:
        params.setdefault("num_classes", len(cfg.class_names))
    if "in_channels" in allowed:
        params.setdefault("in_channels", 3 if mode == "rgb" else 1)
    if "image_size" in allowed:
        params["image_size"] = int(image_size)
    if params.get("spatial_dims", 2) != 2:
        raise ConfigError(
            f"the classification pipeline classifies 2D images; model {name!r} with spatial_dims="
            f"{params['spatial_dims']} is for volumes (use it through the library API), or set spatial_dims: 2"
        )
    if params.get("num_classes") not in (None, len(cfg.class_names)):
        raise ConfigError(f"model.num_classes={params['num_classes']} but {len(cfg.class_names)} class_names")
    return params


def _volume_params(
    cfg: ClassificationConfig, name: str, params: dict[str, Any], allowed: dict[str, Any]
) -> dict[str, Any]:
    """``build_model`` parameters of a lesion-crop classifier (``volume:`` set): a 3D network on the
    ``(C, G, G, G)`` crop, or the 2.5D Lite0 on its planes / central slices (one image channel)."""
    vol = cfg.volume
    assert vol is not None
    if "num_classes" in allowed:
        params.setdefault("num_classes", len(cfg.class_names))
    if "views" in allowed:  # the 2.5D ImageNet model: planes of the cube by default
        params.setdefault("views", "planes")
        if params["views"] is None:
            raise ConfigError("a lesion cube needs model.views: planes or slices")
        if vol.mask_channel:
            raise ConfigError(
                "volume.mask_channel feeds a second channel to 3D networks; the 2.5D model takes the image "
                "planes only (set mask_channel: false, or use densenet121 / resnet)"
            )
    elif params.get("spatial_dims", allowed.get("spatial_dims")) != 3:
        raise ConfigError(
            f"model {name!r} is not a volume classifier: with volume: use densenet121 / resnet "
            "(spatial_dims: 3) or efficientnet_lite0_25d (2.5D, ImageNet-pretrained)"
        )
    if "in_channels" in allowed:
        params.setdefault("in_channels", 2 if vol.mask_channel else 1)
    if "image_size" in allowed:
        params["image_size"] = int(vol.grid)
    if params.get("num_classes") not in (None, len(cfg.class_names)):
        raise ConfigError(f"model.num_classes={params['num_classes']} but {len(cfg.class_names)} class_names")
    return params


def configure_finetuning(
    model: nn.Module,
    strategy: str,
    lr: float,
    *,
    lr_decay: float = 0.5,
    head_lr_mult: float = 1.0,
    unfreeze_every: int = 1,
    freeze_bn: bool = True,
) -> tuple[list[dict[str, Any]], FinetuneHook]:
    """Parameter groups and a per-epoch hook implementing a fine-tuning strategy.

    Parameters
    ----------
    model : a classifier whose head and backbone stages :mod:`medseg.models.classifier` knows
    strategy : "full" | "linear_probe" | "gradual_unfreeze" | "discriminative"
    lr : learning rate of the backbone (the head: ``lr * head_lr_mult``)
    lr_decay : discriminative: LR factor per stage going down to the stem
    unfreeze_every : gradual_unfreeze: epochs between unfreezing two stages (top first)
    freeze_bn : keep the BatchNorm statistics of frozen layers fixed

    Returns
    -------
    (param_groups, hook) : list of optimizer param-group dicts; ``hook(model, epoch)`` sets
        ``requires_grad`` and the BatchNorm mode for that epoch (call at every step; it is cheap).
    """
    params = dict(model.named_parameters())
    head = head_parameter_names(model)
    stages = backbone_stages(model)
    head_group = {"params": [params[n] for n in head], "lr": lr * head_lr_mult, "name": "head"}
    trainable: Callable[[int], int]
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
    frozen_cache: dict[str, int | None] = {"k": None}

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
