"""Grad-CAM and Grad-CAM++ maps for 2D/3D classifiers and segmenters (built on ``monai.visualize``).

MONAI's :class:`monai.visualize.GradCAM` / :class:`~monai.visualize.GradCAMpp` compute the maps;
this module adds what they lack for use on many images in a clinical pipeline:

- **Hooks are removed.** MONAI's ``ModelWithHooks`` registers forward/backward hooks and never
  removes them (and keeps the last activations/gradients, i.e. the autograd graph, alive). Here
  the hooks live only inside a ``with CAMExplainer(...)`` block (or one :func:`grad_cam` call),
  the cached tensors are dropped after every call, and the ``inplace`` flags MONAI switches off on
  the target layer are restored. Many calls do not grow memory.
- **Batches with different targets.** MONAI's class score ``logits[:, class_idx]`` mixes the
  samples of a batch when ``class_idx`` is a per-sample tensor (a (B, B) matrix is summed), and its
  Grad-CAM++ broadcasts the (B,) score against the last spatial axis. Here the score is gathered
  per sample (``logits[i, target_i]``) and shaped ``(B, 1, ..., 1)``.
- **Frozen backbones.** Gradients are taken with respect to the input (parameters are temporarily
  set to ``requires_grad=False``), so the hooks fire even for a linear-probe model and no ``.grad``
  is left on the weights.
- **Segmentation networks.** :class:`SegmentationTarget` reduces a segmenter's logits to one score
  per class: the sum of that class's logits inside a region (the predicted mask of the class, or
  a user ROI). MONAI's Grad-CAM then runs unchanged on the wrapped model.
- **Geometry.** Maps are returned as :class:`monai.data.MetaTensor` aligned with the input image
  (same shape, affine and meta), normalised to [0, 1] per image (max -> 1; MONAI's default
  normaliser maps max -> 0).
- **Default target layers** per medseg model (EfficientNet-Lite0, DenseNet121, U-Net, ...), with a
  generic fallback found by probing one forward pass.
- **Writers** (:mod:`medseg.explain.writers`, re-exported here): NIfTI for 3D maps, heat-map PNG
  overlays for 2D images and selected 3D slices.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor
from monai.visualize import GradCAM, GradCAMpp
from monai.visualize.class_activation_maps import ModelWithHooks
from monai.visualize.visualizer import default_upsampler
from torch import nn

from medseg.errors import InputError
from medseg.explain.writers import save_cam_nifti, save_cam_png, save_cam_slices_png, select_slices  # re-exported

__all__ = [
    "CAMExplainer",
    "SegmentationTarget",
    "grad_cam",
    "default_target_layer",
    "spatial_dims_of",
    "normalise_maps",
    "save_cam_nifti",
    "save_cam_png",
    "save_cam_slices_png",
    "select_slices",
]

log = logging.getLogger("medseg.explain")

Method = Literal["gradcam", "gradcampp"]
Target = int | Sequence[int] | torch.Tensor | None


def _efficientnet_layer(model: nn.Module, example: torch.Tensor | None = None) -> str:
    # MONAI's EfficientNet groups its MBConv blocks by stage in ``_blocks`` (7 stages for B0 /
    # Lite0). The default is the second-to-last stage (Lite0: 192 channels, stride 32), chosen by
    # measurement on the synthetic lesion set (benchmarks/cam_localisation.py): Grad-CAM on the
    # head block (``_conv_head``/``_bn1``/its activation) or on the last 1-block stage pointed
    # outside the lesion (pointing game ~0.1), the stage before it inside it (~0.95+).
    # Below 96 px that stage is 2 x 2 (a peak can only sit at a quadrant centre): then the stage
    # before it (stride 16) is used.
    n = len(getattr(model, "_blocks", []))
    if n < 3:
        return "_bn1"
    if example is not None and min(example.shape[2:]) // 32 < 3:
        return f"_blocks.{n - 3}"
    return f"_blocks.{n - 2}"


#: default target layer per model class (a submodule name relative to that model, or a function)
_KNOWN_LAYERS: dict[str, Any] = {
    "EfficientNet": _efficientnet_layer,
    "EfficientNetBN": _efficientnet_layer,
    # MONAI DenseNet: the ReLU after the last dense block's norm (MONAI's own example).
    "DenseNet": "class_layers.relu",
    "DenseNet121": "class_layers.relu",
    "DenseNet169": "class_layers.relu",
    "DenseNet201": "class_layers.relu",
    "DenseNet264": "class_layers.relu",
    # MONAI ResNet: the last residual stage.
    "ResNet": "layer4",
    # Segmenters: the bottleneck (Seg-Grad-CAM, Vinogradova et al. 2020).
    "BasicUNet": "down_4",
    "BasicUnet": "down_4",
    "DynUNet": "bottleneck",  # medseg "unet"
}


# ----------------------------------------------------------------------------- helpers


def spatial_dims_of(model: nn.Module) -> int:
    """Number of spatial dimensions (2 or 3) of a convolutional network (from its first conv)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return 2
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            return 3
        if isinstance(m, nn.Conv1d):
            return 1
    raise InputError(f"cannot tell the spatial dimensions of {type(model).__name__}: it has no convolution")


def _unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """(inner model, name prefix) through SegmentationTarget / a known model nested in a wrapper."""
    prefix = ""
    if isinstance(model, SegmentationTarget):
        model, prefix = model.net, "net."
    if type(model).__name__ in _KNOWN_LAYERS:
        return model, prefix
    for name, sub in model.named_modules():
        if name and type(sub).__name__ in _KNOWN_LAYERS:
            return sub, f"{prefix}{name}."
    return model, prefix


def default_target_layer(
    model: nn.Module, example: torch.Tensor | None = None, task: Literal["classification", "segmentation"] | None = None
) -> str:
    """A sensible Grad-CAM target layer name for ``model``.

    Known MONAI/medseg networks get a fixed layer (EfficientNet incl. medseg's Lite0: the
    second-to-last block stage ``_blocks.5``, measured to localise where the head does not, or
    ``_blocks.4`` when ``example`` is smaller than 96 px (``_blocks.5`` would be 2 x 2);
    DenseNet: ``class_layers.relu``; ResNet: ``layer4``; BasicUNet: the bottleneck ``down_4``),
    also when nested in a wrapper module. Otherwise one forward pass of ``example`` is probed:
    a classifier gets the last (leaf) module whose output still has spatial extent (> 1 voxel);
    a segmenter the last (leaf) module with the coarsest spatial output (the bottleneck).

    Parameters
    ----------
    model : the network (or a :class:`SegmentationTarget`).
    example : an input batch ``(B, C, *S)``; needed only for unknown networks.
    task : "classification" or "segmentation"; default: segmentation for a SegmentationTarget.

    Returns
    -------
    str : a name from ``model.named_modules()``.
    """
    inner, prefix = _unwrap(model)
    cls = type(inner).__name__
    if cls in _KNOWN_LAYERS:
        known = _KNOWN_LAYERS[cls]
        return prefix + (known(inner, example) if callable(known) else known)
    if example is None:
        raise InputError(
            f"no default Grad-CAM layer known for {cls}; pass a layer name "
            f"(one of model.named_modules()) or an example input to probe"
        )
    if task is None:
        task = "segmentation" if isinstance(model, SegmentationTarget) else "classification"
    probe_model = model.net if isinstance(model, SegmentationTarget) else model
    pref = "net." if isinstance(model, SegmentationTarget) else ""
    records: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    nd = example.ndim

    def make_hook(name: str):
        def hook(_m, _i, out):
            if isinstance(out, torch.Tensor) and out.ndim == nd:
                records.append((name, tuple(out.shape[2:])))

        return hook

    for name, m in probe_model.named_modules():
        if name:
            handles.append(m.register_forward_hook(make_hook(name)))
    try:
        was_training = probe_model.training
        probe_model.eval()
        with torch.no_grad():
            probe_model(example[:1])
        probe_model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    leaves = {n for n, m in probe_model.named_modules() if n and not any(True for _ in m.children())}
    cands = [(n, s) for n, s in records if int(np.prod(s)) > 1]
    # prefer leaf modules (a container's output is its last leaf's output, hooked twice)
    cands = [(n, s) for n, s in cands if n in leaves] or cands
    if not cands:
        raise InputError(f"{cls}: no layer with a spatial output found for Grad-CAM; pass a layer name")
    if task == "segmentation":
        smallest = min(int(np.prod(s)) for _, s in cands)
        name = [n for n, s in cands if int(np.prod(s)) == smallest][-1]
    else:
        name = cands[-1][0]
    return pref + name


def normalise_maps(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min-max normalise each map of a batch ``(B, 1, *S)`` to [0, 1] (maximum -> 1).

    A constant map (e.g. all zero: no positive evidence) becomes all zero.
    """
    b = maps.shape[0]
    flat = maps.reshape(b, -1)
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    rng = hi - lo
    out = torch.where(rng > eps, (flat - lo) / rng.clamp_min(eps), torch.zeros_like(flat))
    return out.reshape(maps.shape)


def _upsampler(spatial_size: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """MONAI's default (bi/tri)linear upsampler, align_corners=False: maps land on the input grid."""
    return default_upsampler(spatial_size)


# ----------------------------------------------------------------------------- segmentation


class SegmentationTarget(nn.Module):
    """Turn a segmenter into a "classifier" for Grad-CAM: one score per class.

    ``score[b, c] = sum over the region of logits[b, c]``, where the region is either a user ROI
    (``roi``, binary ``(B or 1, 1, *S)``) or, by default, the predicted mask of class ``c``
    (argmax over classes for a softmax segmenter, ``sigmoid > 0.5`` for a one-channel one). The
    region is computed without gradient, so the map explains the logits inside it.

    Parameters
    ----------
    net : segmenter ``(B, C_in, *S) -> (B, K, *S)`` logits.
    roi : optional fixed region, broadcastable to ``(B, 1, *S)``; set/replace with :attr:`roi`.
    """

    def __init__(self, net: nn.Module, roi: torch.Tensor | None = None):
        super().__init__()
        self.net = net
        self.roi = roi
        self.last_region: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if isinstance(logits, (list, tuple)):  # deep supervision outputs: the first is full size
            logits = logits[0]
        logits = torch.as_tensor(logits)
        if self.roi is not None:
            region = torch.as_tensor(self.roi, device=logits.device).to(logits.dtype)
            if region.ndim == logits.ndim - 1:
                region = region.unsqueeze(0)
            region = region.expand(logits.shape[0], 1, *logits.shape[2:])
            region = region.expand(-1, logits.shape[1], *([-1] * (logits.ndim - 2)))
        else:
            with torch.no_grad():
                if logits.shape[1] == 1:
                    region = (torch.sigmoid(logits) > 0.5).to(logits.dtype)
                else:
                    idx = logits.argmax(1, keepdim=True)
                    region = torch.zeros_like(logits).scatter_(1, idx, 1.0)
        self.last_region = region.detach()
        return (logits * region).flatten(2).sum(-1)


# ----------------------------------------------------------------------------- explainer


class _Hooked:
    """A MONAI ``ModelWithHooks`` whose hooks can be removed and whose class score is per sample.

    Created by :class:`CAMExplainer`; see the module docstring for what it changes.
    """

    def __init__(self, model: nn.Module, layer: str):
        names = dict(model.named_modules())
        if layer not in names:
            near = difflib.get_close_matches(layer, list(names), n=3)
            raise InputError(
                f"layer {layer!r} is not a module of {type(model).__name__}"
                + (f" (did you mean {', '.join(near)}?)" if near else "")
                + "; list them with [n for n, _ in model.named_modules()]"
            )
        mod = names[layer]
        self._module = mod
        self._inplace = mod.__dict__.get("inplace", None)
        before_f = set(mod._forward_hooks)
        before_b = set(mod._backward_hooks)
        outer = self

        class _MWH(ModelWithHooks):  # MONAI's wrapper with a per-sample class score
            def class_score(self, logits, class_idx):
                return outer._score(logits, class_idx)

            def backward_hook(self, name):
                # A module called more than once per forward (e.g. EfficientNet's shared activation
                # module) sees several backward calls; the first one in the backward pass belongs
                # to its last forward call, whose output the forward hook kept. MONAI keeps the last.
                def _hook(_module, _grad_input, grad_output):
                    self.gradients.setdefault(name, grad_output[0])

                return _hook

            def __call__(self, x, class_idx=None, retain_graph=False, **kwargs):
                self.gradients.clear()
                logits, acti, grad = super().__call__(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
                outer.logits = logits.detach()
                # MONAI's Grad-CAM++ multiplies by exp(score): a positive per-sample factor that the
                # normalisation removes, but exp() overflows for large scores (a segmenter's summed
                # logits). Keep it at exp(0) = 1: the same map up to that per-sample scale.
                if self.score is not None:
                    self.score = torch.zeros_like(self.score.detach())
                return logits, acti, grad

        self.mwh = _MWH(model, layer, register_forward=True, register_backward=True)
        self._hook_keys = (set(mod._forward_hooks) - before_f, set(mod._backward_hooks) - before_b)
        self.ndim = 0
        self.logits: torch.Tensor | None = None

    def _score(self, logits: torch.Tensor, class_idx) -> torch.Tensor:
        b = logits.shape[0]
        idx = torch.as_tensor(class_idx, device=logits.device).long().reshape(-1)
        if idx.numel() == 1:
            idx = idx.expand(b)
        score = logits.gather(1, idx[:, None]).reshape(b, *([1] * max(self.ndim - 1, 0)))
        return score

    def clear(self) -> None:
        self.mwh.activations.clear()
        self.mwh.gradients.clear()
        self.mwh.score = None
        self.mwh.class_idx = None
        self.logits = None

    def remove(self) -> None:
        fk, bk = self._hook_keys
        for k in fk:
            self._module._forward_hooks.pop(k, None)
        for k in bk:
            self._module._backward_hooks.pop(k, None)
        if self._inplace is not None:
            self._module.inplace = self._inplace
        self.clear()


class CAMExplainer:
    """Grad-CAM / Grad-CAM++ for a 2D or 3D classifier or segmenter; hooks live inside ``with``.

    Examples
    --------
    >>> with CAMExplainer(model, method="gradcam") as cam:          # doctest: +SKIP
    ...     maps = cam(images)              # (B, 1, *S) MetaTensor in [0, 1], predicted class
    ...     maps1 = cam(images, target=1)   # class 1 for every image

    Parameters
    ----------
    model : classifier ``(B, C, *S) -> (B, K)`` logits, or segmenter ``-> (B, K, *S)`` logits.
    method : "gradcam" (Selvaraju et al. 2017) or "gradcampp" (Chattopadhyay et al. 2018).
    layer : target layer name (``model.named_modules()``); default :func:`default_target_layer`.
    task : "classification", "segmentation" or "auto" (segmentation if the output is spatial).
    roi : segmentation only: a fixed region ``(B or 1, 1, *S)``; default the predicted mask.
    normalise : min-max normalise each map to [0, 1] (otherwise the raw ReLU'd map, upsampled).
    """

    def __init__(
        self,
        model: nn.Module,
        method: Method = "gradcam",
        layer: str | None = None,
        task: Literal["auto", "classification", "segmentation"] = "auto",
        roi: torch.Tensor | None = None,
        normalise: bool = True,
    ):
        if method not in ("gradcam", "gradcampp"):
            raise InputError(f"unknown CAM method {method!r}; use 'gradcam' or 'gradcampp'")
        self.model = model
        self.method = method
        self.layer = layer
        self.task = task
        self.roi = roi
        self.normalise = normalise
        self.spatial_dims = spatial_dims_of(model)
        self._hooked: _Hooked | None = None
        self._net: nn.Module | None = None
        self._active = False
        self.last_logits: torch.Tensor | None = None
        self.last_target: torch.Tensor | None = None

    # -- hooks lifecycle -----------------------------------------------------------------
    def __enter__(self) -> CAMExplainer:
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook this explainer installed (idempotent)."""
        if self._hooked is not None:
            self._hooked.remove()
        self._hooked = None
        self._net = None
        self._active = False

    def _setup(self, x: torch.Tensor) -> None:
        if self._hooked is not None:
            return
        task = self.task
        if task == "auto":
            was = self.model.training
            self.model.eval()
            with torch.no_grad():
                out = self.model(x[:1])
            self.model.train(was)
            if isinstance(out, (list, tuple)):
                out = out[0]
            task = "segmentation" if out.ndim == x.ndim else "classification"
        self.task = task
        net = SegmentationTarget(self.model, self.roi) if task == "segmentation" else self.model
        # a new module is in training mode; MONAI restores the wrapper's mode after each call, which would
        # leave the network in training mode (batch norm on batch statistics) for every later prediction
        net.train(self.model.training)
        if self.layer is None:
            self.layer = default_target_layer(net, x, task=task)
        elif task == "segmentation" and not self.layer.startswith("net."):
            self.layer = "net." + self.layer
        self._net = net
        self._hooked = _Hooked(net, self.layer)
        log.debug("Grad-CAM (%s, %s) on layer %s", self.method, task, self.layer)

    # -- maps ----------------------------------------------------------------------------
    def __call__(self, image: torch.Tensor, target: Target = None, roi: torch.Tensor | None = None):
        """Maps for one image ``(C, *S)`` or a batch ``(B, C, *S)``.

        Parameters
        ----------
        image : tensor / MetaTensor; 2D ``(C, H, W)`` or 3D ``(C, X, Y, Z)`` (optionally batched).
        target : class index for every image, a sequence/tensor of one index per image, or None
            (the predicted class; for segmentation the first foreground class, 1).
        roi : segmentation only: region for this call (overrides the constructor's).

        Returns
        -------
        MetaTensor ``(1, *S)`` (or ``(B, 1, *S)`` for a batch) in [0, 1], with the input's
        affine and meta (plus ``cam_method``, ``cam_layer``, ``cam_target``). The logits and the
        targets used are left in :attr:`last_logits`, :attr:`last_target`.
        """
        x_in = image
        batched = x_in.ndim == self.spatial_dims + 2
        if not batched and x_in.ndim != self.spatial_dims + 1:
            raise InputError(
                f"expected an image (C, *S) or batch (B, C, *S) with {self.spatial_dims} spatial "
                f"dims for this model, got shape {tuple(x_in.shape)}"
            )
        x = (x_in.as_tensor() if isinstance(x_in, MetaTensor) else torch.as_tensor(x_in)).detach()
        if not batched:
            x = x[None]
        dev = next(self.model.parameters()).device
        x = x.to(dev, dtype=torch.float32).clone().requires_grad_(True)
        own_context = not self._active
        try:
            self._setup(x.detach())
            hooked = self._hooked
            assert hooked is not None and self._net is not None
            hooked.ndim = x.ndim
            if self.task == "segmentation":
                seg = self._net
                assert isinstance(seg, SegmentationTarget)
                seg.roi = roi if roi is not None else self.roi
                if target is None:
                    target = 1 if _n_out(seg, x) > 1 else 0
            assert self.layer is not None
            cls = GradCAMpp if self.method == "gradcampp" else GradCAM
            # MONAI annotates nn_module as nn.Module, but documents and accepts a ModelWithHooks
            cam = cls(
                nn_module=hooked.mwh,  # type: ignore[arg-type]
                target_layers=self.layer,
                upsampler=_upsampler,
                postprocessing=lambda t: t,
            )
            params = [p for p in self.model.parameters() if p.requires_grad]
            for p in params:  # gradients w.r.t. the input only: hooks fire for frozen backbones too
                p.requires_grad_(False)
            try:
                with torch.enable_grad():
                    tgt = None if target is None else torch.as_tensor(target, device=dev).long().reshape(-1)
                    maps = cam(x, class_idx=tgt)
                    used = hooked.mwh.class_idx
            finally:
                for p in params:
                    p.requires_grad_(True)
            self.last_target = torch.as_tensor(used).detach().reshape(-1).cpu().expand(x.shape[0]).clone()
            self.last_logits = hooked.logits.cpu() if hooked.logits is not None else None
            maps = maps.detach()
            if self.normalise:
                maps = normalise_maps(maps)
            hooked.clear()
        finally:
            if own_context:
                self.close()
        maps = maps.float().cpu()
        meta: dict[str, Any] = {}
        if isinstance(x_in, MetaTensor):
            meta = {k: v for k, v in x_in.meta.items()}
            meta["affine"] = x_in.affine.clone()
        meta.update(
            cam_method=self.method,
            cam_layer=self.layer,
            cam_target=self.last_target.tolist() if batched else int(self.last_target[0]),
        )
        out = maps if batched else maps[0]
        result = MetaTensor(out, meta=meta)
        if isinstance(x_in, MetaTensor):
            result.is_batch = x_in.is_batch if batched else False
        return result


def _n_out(seg: SegmentationTarget, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(seg(x[:1].detach()).shape[1])


def grad_cam(
    model: nn.Module,
    image: torch.Tensor,
    target: Target = None,
    method: Method = "gradcam",
    layer: str | None = None,
    task: Literal["auto", "classification", "segmentation"] = "auto",
    roi: torch.Tensor | None = None,
    normalise: bool = True,
):
    """One-shot Grad-CAM / Grad-CAM++ (hooks installed and removed within the call).

    See :class:`CAMExplainer` for the parameters. Returns a MetaTensor ``(1, *S)`` for one image
    ``(C, *S)`` or ``(B, 1, *S)`` for a batch, aligned with the input (same affine).
    """
    with CAMExplainer(model, method=method, layer=layer, task=task, roi=roi, normalise=normalise) as cam:
        return cam(image, target=target)
