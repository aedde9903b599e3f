"""U-Net (2D/3D) for segmentation: MONAI's ``DynUNet`` behind the registry name ``"unet"``.

Why ``DynUNet`` rather than MONAI's ``UNet`` or ``BasicUNet``: it is the nnU-Net architecture
(two conv-norm-LeakyReLU per level, instance norm, strided-conv downsampling), and its kernel sizes
and strides are given *per level and per axis*. That lets the self-configuring plan
(:mod:`medseg.engine.plan`) use anisotropic strides for thick-slice CT (no down-sampling along z
until the spacing is near-isotropic), exactly as nnU-Net does, and it has optional deep supervision.
``UNet``/``BasicUNet`` use the same stride on every axis.

Config::

    model: {name: unet, channels: [16, 32, 64, 128], deep_supervision: false}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models.registry import register_model

__all__ = ["build_unet", "default_strides"]


def default_strides(levels: int, spatial_dims: int) -> list[list[int]]:
    """Isotropic strides: 1 at the first level, 2 after (``levels`` entries of ``spatial_dims`` ints)."""
    return [[1] * spatial_dims] + [[2] * spatial_dims for _ in range(levels - 1)]


@register_model("unet")
def build_unet(
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[Sequence[int]] | None = None,
    kernel_sizes: Sequence[Sequence[int]] | None = None,
    deep_supervision: bool = False,
    deep_supr_num: int = 1,
    norm: str = "instance",
    dropout: float = 0.0,
    res_block: bool = False,
) -> nn.Module:
    """Build a U-Net (MONAI ``DynUNet``).

    Parameters
    ----------
    spatial_dims : 2 or 3.
    in_channels, out_channels : image channels; number of classes (background included).
    channels : feature channels per level (its length is the depth).
    strides : per level, per axis down-sampling factors (first level usually 1s); default 1 then 2s.
        The plan sets anisotropic strides for thick slices.
    kernel_sizes : per level, per axis kernel sizes; default 3 everywhere.
    deep_supervision : in training mode the network returns ``(B, 1 + deep_supr_num, C, *S)``
        (MONAI convention); :func:`medseg.tasks.segmentation` losses handle it. Eval returns ``(B, C, *S)``.
    norm : "instance" or "batch".
    dropout : dropout probability.
    res_block : residual blocks in each level.

    Returns
    -------
    nn.Module mapping ``(B, in_channels, *S)`` to logits ``(B, out_channels, *S)``; every spatial
    size must be divisible by the product of the strides (sliding-window inference pads to it).
    """
    from monai.networks.nets import DynUNet

    if spatial_dims not in (2, 3):
        raise ConfigError(f"unet: spatial_dims must be 2 or 3, got {spatial_dims}")
    levels = len(channels)
    if levels < 2:
        raise ConfigError("unet: 'channels' needs at least 2 levels")
    strides = [list(s) for s in strides] if strides is not None else default_strides(levels, spatial_dims)
    kernel_sizes = [list(k) for k in kernel_sizes] if kernel_sizes is not None else [[3] * spatial_dims] * levels
    if len(strides) != levels or len(kernel_sizes) != levels:
        raise ConfigError(
            f"unet: strides ({len(strides)}) and kernel_sizes ({len(kernel_sizes)}) need one entry "
            f"per level of channels ({levels})"
        )
    if any(len(s) != spatial_dims for s in strides + kernel_sizes):
        raise ConfigError(f"unet: each stride / kernel entry needs {spatial_dims} values")
    return DynUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_sizes,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=list(channels),
        dropout=dropout if dropout > 0 else None,
        norm_name=(norm, {"affine": True}) if norm == "instance" else norm,
        deep_supervision=deep_supervision,
        deep_supr_num=deep_supr_num,
        res_block=res_block,
    )


def network_divisor(strides: Sequence[Sequence[int]]) -> list[int]:
    """Product of the strides per axis: every input size must be a multiple of it."""
    out = [1] * len(strides[0])
    for s in strides:
        out = [a * b for a, b in zip(out, s)]
    return out


def main_output(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The full-resolution logits of a (possibly deep-supervised) output."""
    if isinstance(out, torch.Tensor):
        return out
    return out[0]
