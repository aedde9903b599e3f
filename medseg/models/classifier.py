"""Image classifiers registered by name (``model: {name: efficientnet_lite0, ...}`` in a config).

=========================  =====  ==============================================================
name                       dims   what
=========================  =====  ==============================================================
``efficientnet_lite0``     2D     EfficientNet-Lite0 (MONAI ``EfficientNet``), ImageNet weights
                                  by default; gray input -> stem RGB filters summed
``efficientnet_lite0_25d`` 2.5D   the same 2D pretrained backbone on a stack of ``num_slices``
                                  slices used as channels; accepts (B, S, H, W) or a volume
                                  patch (B, 1, H, W, S); ``views: planes`` takes a
                                  lesion cube (B, 1, G, G, G) as its three central
                                  orthogonal planes (axial, coronal, sagittal) as RGB
``densenet121``            2D/3D  MONAI DenseNet121, from scratch or a local checkpoint
``resnet``                 2D/3D  MONAI ResNet (depth 10/18/34/50), from scratch or a checkpoint
=========================  =====  ==============================================================

A local ``checkpoint`` (``.pt``/``.safetensors``/a medseg run's ``checkpoints/best.pt``, e.g. a
3D segmentation network) is loaded with :func:`medseg.models.pretrained.load_pretrained`: the
tensors whose names (after ``key_map`` regexes) and shapes fit are loaded, the rest are reported
(``model.pretrained_report``) and left at their initialisation. Nothing is downloaded.

Every builder returns logits ``(B, num_classes)``; :func:`backbone_and_head` tells the fine-tuning
strategies which parameters are the classifier head.
"""

from __future__ import annotations

import logging
import re
from typing import cast

import torch
from monai.networks.nets import DenseNet121, resnet
from torch import nn

from medseg.errors import ConfigError
from medseg.models.pretrained import efficientnet_lite0 as _lite0
from medseg.models.pretrained import load_pretrained
from medseg.models.registry import register_model

__all__ = [
    "build_efficientnet_lite0",
    "build_efficientnet_lite0_25d",
    "build_densenet121",
    "build_resnet",
    "SlicesAsChannels",
    "CubeViews",
    "head_parameter_names",
    "backbone_stages",
]

log = logging.getLogger("medseg.models")


def _maybe_load(model: nn.Module, checkpoint: str | None, key_map: dict[str, str] | None) -> nn.Module:
    if checkpoint:
        rep = load_pretrained(model, checkpoint, key_map=key_map)
        # torch's stubs type Module.__setattr__ values as Tensor | Module; any attribute value is allowed
        model.pretrained_report = rep.to_dict()  # type: ignore[assignment]
        log.info("initialised from %s", rep)
    return model


@register_model("efficientnet_lite0")
def build_efficientnet_lite0(
    num_classes: int = 2,
    in_channels: int = 3,
    pretrained: bool = True,
    spatial_dims: int = 2,
    image_size: int = 224,
    dropout_rate: float = 0.2,
    drop_connect_rate: float = 0.2,
    checkpoint: str | None = None,
    key_map: dict[str, str] | None = None,
) -> nn.Module:
    """EfficientNet-Lite0 classifier (see :func:`medseg.models.pretrained.efficientnet_lite0`).

    Input ``(B, in_channels, H, W)`` normalised with :func:`medseg.models.pretrained.normalize_lite`;
    output logits ``(B, num_classes)``. ``checkpoint`` (optional) is loaded after the ImageNet weights.
    """
    model = _lite0(
        pretrained=pretrained,
        num_classes=num_classes,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        image_size=image_size,
        dropout_rate=dropout_rate,
        drop_connect_rate=drop_connect_rate,
    )
    return _maybe_load(model, checkpoint, key_map)


class SlicesAsChannels(nn.Module):
    """2.5D wrapper: feed ``num_slices`` neighbouring slices as the channels of a 2D network.

    ``forward`` takes ``(B, S, H, W)`` or a volume patch ``(B, C, H, W, S)`` (MONAI channel-first,
    last axis = slices), which is reshaped to ``(B, C*S, H, W)``.
    """

    def __init__(self, net: nn.Module, num_slices: int):
        super().__init__()
        self.net = net
        self.num_slices = num_slices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5:
            b, c, h, w, s = x.shape
            if s != self.num_slices:
                raise ValueError(f"2.5D model expects {self.num_slices} slices on the last axis, got {s}")
            x = x.permute(0, 1, 4, 2, 3).reshape(b, c * s, h, w)
        return self.net(x)


class CubeViews(nn.Module):
    """2.5D views of a lesion cube ``(B, 1, G, G, G)`` (axes R, A, S) for a 2D network.

    ``views="planes"``: the three central orthogonal planes (axial ``[..., G//2]``, coronal
    ``[:, :, :, G//2, :]``, sagittal ``[:, :, G//2]``) as three channels ``(B, 3, G, G)``: the RGB
    stem of an ImageNet network sees one plane per colour. ``views="slices"``: the ``num_slices``
    central axial slices as channels. ``size``: the views are resized (bilinear) to ``size`` pixels
    a side (ImageNet features need more than the 16-32 px of a lesion crop). A 4D input
    ``(B, S, H, W)`` passes through unchanged.
    """

    def __init__(self, net: nn.Module, views: str, num_slices: int, size: int | None = None):
        super().__init__()
        self.net = net
        self.views = views
        self.num_slices = num_slices
        self.size = size

    def views_of(self, x: torch.Tensor) -> torch.Tensor:
        """The 2D input ``(B, 3 or S, G, G)`` the network sees for a cube ``(B, 1, G, G, G)``."""
        if x.ndim != 5:
            return x
        if x.shape[1] != 1:
            raise ValueError(f"2.5D views take one image channel, got {x.shape[1]}")
        v = x[:, 0]
        if self.views == "planes":
            c = [s // 2 for s in v.shape[1:]]
            out = torch.stack([v[:, :, :, c[2]], v[:, :, c[1], :], v[:, c[0], :, :]], dim=1)
        else:
            z0 = v.shape[-1] // 2 - self.num_slices // 2
            out = v[..., z0 : z0 + self.num_slices].permute(0, 3, 1, 2)
        if self.size and tuple(out.shape[-2:]) != (self.size, self.size):
            out = nn.functional.interpolate(out, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.views_of(x))


@register_model("efficientnet_lite0_25d")
def build_efficientnet_lite0_25d(
    num_classes: int = 2,
    num_slices: int = 3,
    pretrained: bool = True,
    image_size: int = 224,
    dropout_rate: float = 0.2,
    drop_connect_rate: float = 0.2,
    views: str | None = None,
    view_size: int | None = None,
) -> nn.Module:
    """2.5D classifier: the 2D (ImageNet) Lite0 on ``num_slices`` slices as channels.

    With 3 slices the RGB stem filters are used as they are; otherwise the mean RGB filter is
    replicated to each slice (scaled by ``3 / num_slices``). ``views``: None (a volume patch whose
    last axis holds the ``num_slices`` slices, :class:`SlicesAsChannels`) or, for a lesion cube
    (:class:`CubeViews`), ``slices`` (its central axial slices) or ``planes`` (its three orthogonal
    planes; ``num_slices`` must be 3), resized to ``view_size`` pixels when set (the network is then
    built for ``view_size``).
    """
    if num_slices < 1:
        raise ConfigError(f"num_slices must be >= 1, got {num_slices}")
    if views not in (None, "slices", "planes"):
        raise ConfigError(f"views must be 'slices' or 'planes', got {views!r}")
    if views == "planes" and num_slices != 3:
        raise ConfigError("views: planes gives three channels (axial, coronal, sagittal): num_slices must be 3")
    net = _lite0(
        pretrained=pretrained,
        num_classes=num_classes,
        in_channels=num_slices,
        spatial_dims=2,
        image_size=view_size or image_size,
        dropout_rate=dropout_rate,
        drop_connect_rate=drop_connect_rate,
    )
    if views is not None:
        return CubeViews(net, views, num_slices, view_size)
    return SlicesAsChannels(net, num_slices)


@register_model("densenet121")
def build_densenet121(
    num_classes: int = 2,
    in_channels: int = 1,
    spatial_dims: int = 3,
    dropout_prob: float = 0.0,
    checkpoint: str | None = None,
    key_map: dict[str, str] | None = None,
) -> nn.Module:
    """MONAI DenseNet121 (2D or 3D); input ``(B, in_channels, *S)``, logits ``(B, num_classes)``."""
    model = DenseNet121(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes, dropout_prob=dropout_prob
    )
    return _maybe_load(model, checkpoint, key_map)


@register_model("resnet")
def build_resnet(
    num_classes: int = 2,
    in_channels: int = 1,
    spatial_dims: int = 3,
    depth: int = 18,
    checkpoint: str | None = None,
    key_map: dict[str, str] | None = None,
) -> nn.Module:
    """MONAI ResNet of ``depth`` 10/18/34/50 (2D or 3D); logits ``(B, num_classes)``."""
    builders = {10: resnet.resnet10, 18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50}
    if depth not in builders:
        raise ConfigError(f"resnet depth must be one of {sorted(builders)}, got {depth}")
    model = builders[depth](
        spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes, pretrained=False
    )
    return _maybe_load(model, checkpoint, key_map)


# --------------------------------------------------------------------------------------------
# structure helpers for fine-tuning strategies


def _core(model: nn.Module) -> nn.Module:
    return model.net if isinstance(model, (SlicesAsChannels, CubeViews)) else model


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the classifier-head parameters (trained by every strategy, also a linear probe)."""
    names = [n for n, _ in model.named_parameters()]
    for pattern in (r"(^|\.)_fc\.", r"(^|\.)class_layers\.out\.", r"(^|\.)fc\."):
        head = [n for n in names if re.search(pattern, n)]
        if head:
            return head
    raise ConfigError(f"cannot find the classifier head of {type(model).__name__}")


def backbone_stages(model: nn.Module) -> list[list[str]]:
    """Backbone parameter names grouped from the **top** (next to the head) to the stem.

    Used by gradual unfreezing (one group per step, top first) and discriminative learning rates
    (each group's LR is the next one's times ``lr_decay``).
    """
    head = set(head_parameter_names(model))
    named = [n for n, _ in model.named_parameters() if n not in head]
    core = _core(model)
    prefix = "net." if core is not model else ""
    groups: list[list[str]] = []
    if hasattr(core, "_blocks"):  # EfficientNet: head conv, then stages 6..0, then stem
        groups.append([n for n in named if n.startswith(prefix + "_conv_head") or n.startswith(prefix + "_bn1")])
        for i in reversed(range(len(cast(nn.Sequential, core._blocks)))):
            groups.append([n for n in named if n.startswith(f"{prefix}_blocks.{i}.")])
        groups.append([n for n in named if n.startswith(prefix + "_conv_stem") or n.startswith(prefix + "_bn0")])
    else:  # generic: top-level children in reverse order
        tops: list[str] = []
        for n in named:
            t = n.split(".")[0] if not n.startswith("features.") else ".".join(n.split(".")[:2])
            if t not in tops:
                tops.append(t)
        for t in reversed(tops):
            groups.append([n for n in named if n == t or n.startswith(t + ".")])
    groups = [g for g in groups if g]
    covered = {n for g in groups for n in g}
    rest = [n for n in named if n not in covered]
    if rest:
        groups.append(rest)
    return groups
