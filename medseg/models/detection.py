"""Detection networks for 2D microscopy: a proximity-map U-Net and a Ciresan-style patch CNN.

* ``proximity_unet`` -- MONAI's :class:`~monai.networks.nets.BasicUNet` (2D) regressing one
  channel, the logit of a proximity map that peaks at cell centres (Xie et al., MICCAI 2015).
* ``mitosis_cnn`` -- a patch classifier after Ciresan et al. (MICCAI 2013): it looks at a
  ``receptive_field`` x ``receptive_field`` patch and says "mitosis centred here" or not. It has
  no strides (the pooling is stride 1 and the later convolutions are dilated, the equivalence of
  Giusti et al. 2013 for fast max-pooling CNN scanning), so the very same weights applied to a
  whole image with :meth:`MitosisCNN.dense` give the per-pixel probability map that sliding the
  patch classifier over every pixel would give, in one pass. MONAI has no such network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.registry import register_model

__all__ = ["MitosisCNN", "proximity_unet", "mitosis_cnn"]


@register_model("proximity_unet")
def proximity_unet(
    in_channels: int = 3, features: tuple | list = (16, 16, 32, 64, 128, 16), dropout: float = 0.0, norm: str = "batch"
) -> nn.Module:
    """MONAI BasicUNet (2D) with one output channel: the proximity-map logit.

    Input (B, in_channels, H, W) with H, W multiples of 16; output (B, 1, H, W) logits
    (``sigmoid`` gives the proximity map in [0, 1]).
    """
    from monai.networks.nets import BasicUNet  # heavy (MONAI networks): imported when the model is built

    return BasicUNet(
        spatial_dims=2, in_channels=in_channels, out_channels=1, features=tuple(features), dropout=dropout, norm=norm
    )


class MitosisCNN(nn.Module):
    """Patch classifier applicable densely (see module docstring).

    ``forward(x)`` on patches (B, C, P, P) with ``P == receptive_field`` returns (B,) logits;
    on larger inputs it returns the valid (unpadded) logit map (B, 1, H - P + 1, W - P + 1).
    :meth:`dense` reflect-pads so that the map has the input's size (B, 1, H, W).
    """

    def __init__(self, in_channels: int = 3, width: int = 32, dilations: tuple | list = (1, 2, 4, 8)):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width // 2, 5),
            nn.BatchNorm2d(width // 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=1),
        ]
        rf = 5 + 2
        ch = width // 2
        for d in dilations:
            layers += [nn.Conv2d(ch, width, 3, dilation=int(d)), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            rf += 2 * int(d)
            ch = width
        layers += [nn.Conv2d(ch, width, 1), nn.ReLU(inplace=True), nn.Conv2d(width, 1, 1)]
        self.net = nn.Sequential(*layers)
        self.receptive_field = rf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if y.shape[-1] == 1 and y.shape[-2] == 1:
            return y.flatten()
        return y

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """Logit map (B, 1, H, W) of the patch classifier centred on every pixel of x (B, C, H, W)."""
        p = self.receptive_field // 2
        mode = "reflect" if min(x.shape[-2:]) > p else "replicate"
        return self.net(F.pad(x, (p, p, p, p), mode=mode))


@register_model("mitosis_cnn")
def mitosis_cnn(in_channels: int = 3, width: int = 32, dilations: tuple | list = (1, 2, 4, 8)) -> nn.Module:
    """Ciresan-style mitosis patch CNN; receptive field ``7 + 2 * sum(dilations)`` pixels (37 by default)."""
    return MitosisCNN(in_channels=in_channels, width=width, dilations=tuple(dilations))
