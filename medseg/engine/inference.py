"""Segmentation inference: sliding window with Gaussian blending, flip TTA, post-processing, uncertainty.

:func:`predict_probs` runs a trained plan's configuration on a whole preprocessed image: the 3D
configuration by sliding window, the 2D configuration of a volume slice by slice across its slice
axis (the plane of highest resolution), reassembled into the volume's grid, and sets voxels that
are exactly 0 to background where the plan says the data set has a zero background.

The sliding window is MONAI's ``SlidingWindowInferer`` (Gaussian importance map, configurable
overlap, batch of windows). Flip test-time augmentation averages the softmax of the image and
its flips. Post-processing works per class on label maps (scipy.ndimage): small-component
removal, largest connected component, hole filling. Uncertainty is either the mean normalised
entropy of the probabilities inside the predicted foreground, or the flip-TTA disagreement.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from scipy import ndimage
from torch import nn

from medseg.engine.compiled import compiled, pad_batch

__all__ = [
    "sliding_window_probs",
    "stitch_device",
    "predict_probs",
    "postprocess_labels",
    "entropy_uncertainty",
    "component_volumes_ml",
]

log = logging.getLogger("medseg.engine")


def _logits(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The main output of a network (deep-supervision networks return a list, the full-size head first)."""
    if isinstance(out, torch.Tensor):
        return out
    return out[0]


@torch.no_grad()
def sliding_window_probs(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    *,
    sw_batch_size: int = 4,
    overlap: float = 0.5,
    sigma_scale: float = 0.125,
    device: torch.device | str = "cpu",
    amp: bool = False,
    tta_axes: Sequence[int] | None = None,
    return_disagreement: bool = False,
    compile: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities of a whole image by Gaussian-blended sliding-window inference.

    Parameters
    ----------
    model : network mapping ``(N, C, *roi)`` to logits ``(N, K, *roi)``; used in eval mode.
    image : ``(B, C, *S)`` float tensor (already normalised), on any device.
    roi_size : window size (the training patch); images smaller than it are padded.
    sw_batch_size : windows per forward pass.
    overlap : fraction of window overlap (0..1).
    sigma_scale : Gaussian sigma as a fraction of the window size.
    device : where the network runs; the blended output stays there.
    amp : autocast (CUDA only).
    tta_axes : spatial axes (0-based) to flip for test-time augmentation (each axis alone); None: none.
    return_disagreement : also return, per voxel, the fraction of TTA members whose argmax differs
        from the averaged prediction's (``(B, *S)`` float).
    compile : run the network through ``torch.compile`` (:func:`medseg.engine.compiled.compiled`: compiled
        once per network and reused, eager for good when compiling fails; the last, smaller batch of
        windows is padded to ``sw_batch_size`` so one shape is compiled).

    Returns
    -------
    (probs ``(B, K, *S)`` float32 softmax, disagreement or None)
    """
    device = torch.device(device)
    model.eval()
    net = compiled(model, compile)
    x = torch.as_tensor(image).to(device)
    use_amp = bool(amp) and device.type == "cuda"
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    blend = stitch_device(device, n_classes=None, spatial_shape=tuple(x.shape[2:]), free_bytes=free)

    def logits(t: torch.Tensor) -> torch.Tensor:
        return _logits(net(t))

    network = pad_batch(logits, sw_batch_size) if compile else logits

    def blended(inp: torch.Tensor, out_device: torch.device) -> Any:
        # the windows run on `device`; MONAI blends them on `out_device` (GPU-side stitching when it fits)
        inferer = SlidingWindowInferer(
            roi_size=list(roi_size),
            sw_batch_size=sw_batch_size,
            overlap=overlap,
            mode="gaussian",
            sigma_scale=sigma_scale,
            padding_mode="replicate",
            sw_device=device,
            device=out_device,
            progress=False,
        )
        with torch.autocast(device_type=device.type, enabled=use_amp):
            return inferer(inp, network)

    def run(inp: torch.Tensor) -> torch.Tensor:
        nonlocal blend
        try:
            out = blended(inp, blend)
        except torch.OutOfMemoryError:
            if blend.type == "cpu":
                raise
            # nnU-Net's fallback too: the blended output did not fit next to the network; blend on the CPU
            log.warning("GPU memory ran out while blending the windows: blending this image on the CPU (slower)")
            torch.cuda.empty_cache()
            blend = torch.device("cpu")
            out = blended(inp, blend)
        return torch.softmax(torch.as_tensor(out).float(), dim=1)

    def member(f: tuple[int, ...]) -> torch.Tensor:  # probabilities of the image flipped along f, flipped back
        p = run(torch.flip(x, f) if f else x)
        return torch.flip(p, f) if f else p

    flips: list[tuple[int, ...]] = [(int(a) + 2,) for a in tta_axes or ()]
    total = member(())
    members = [total.argmax(1)] if return_disagreement else []
    for f in flips:
        p = member(f)
        total = total + p
        if return_disagreement:
            members.append(p.argmax(1))
    probs = total / (1 + len(flips))
    disagreement = None
    if return_disagreement:
        mean_lab = probs.argmax(1)
        disagreement = torch.stack([(m != mean_lab).float() for m in members]).mean(0)
    return probs, disagreement


def stitch_device(
    device: torch.device,
    *,
    n_classes: int | None,
    spatial_shape: Sequence[int],
    free_bytes: int | None,
    margin: float = 0.5,
) -> torch.device:
    """Where the sliding window's output is blended: on ``device`` (GPU-side stitching, no copies back and
    forth) when the blended output fits in ``margin`` of the free GPU memory, else on the CPU.

    Parameters
    ----------
    device : where the network runs.
    n_classes : output channels (None: assume 8, a generous segmentation head).
    spatial_shape : the image's spatial shape.
    free_bytes : free memory on ``device`` (``torch.cuda.mem_get_info``), None for a CPU device.
    margin : the fraction of the free memory the output and MONAI's count map may take.

    The output is float32 ``(K, *S)`` plus a count map of ``*S``, each held twice while blending.
    """
    if device.type == "cpu" or free_bytes is None:
        return device
    need = 2 * 4 * ((n_classes or 8) + 1) * math.prod(int(s) for s in spatial_shape)
    return device if need <= margin * free_bytes else torch.device("cpu")


def predict_probs(
    model: nn.Module,
    image: torch.Tensor,
    plan: Mapping[str, Any],
    *,
    tta_axes: Sequence[int] | None = None,
    **window: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities of a preprocessed image with the plan's configuration.

    Parameters
    ----------
    model : the trained network of ``plan`` (2D for a 2D configuration, else of the image's dims).
    image : ``(1, C, *S)`` float tensor, preprocessed as in training (the plan's grid).
    plan : the run's plan (``patch_size``, and ``slice_axis`` / ``zero_is_background`` when present;
        plans of earlier runs without them are 3D / 2D sliding window on the image's own dims).
    tta_axes : spatial axes of ``image`` (0-based) flipped for TTA; for a 2D configuration the slice
        axis is skipped (flipping the stack does not change a slice).
    **window : the other keyword arguments of :func:`sliding_window_probs` (``sw_batch_size``,
        ``overlap``, ``sigma_scale``, ``device``, ``amp``, ``compile``, ``return_disagreement``: the TTA
        disagreement ``(1, *S)``).

    Returns
    -------
    (probs ``(1, K, *S)`` float32 softmax on ``image``'s grid, disagreement or None). With a slice
    axis, slice ``k`` of the output is the 2D network's prediction of slice ``k`` of the input.
    """
    x = torch.as_tensor(image)
    axis = plan.get("slice_axis")
    kw: dict[str, Any] = dict(window)
    if axis is None or x.dim() != 5:
        probs, dis = sliding_window_probs(model, x, plan["patch_size"], tta_axes=tta_axes, **kw)
    else:
        a = int(axis)
        inplane = [d for d in range(3) if d != a]
        slices = torch.movedim(x[0], 1 + a, 0)  # (C, X, Y, Z) -> (S, C, *in-plane)
        axes2d = [inplane.index(d) for d in (tta_axes or []) if d in inplane] if tta_axes is not None else None
        p2, d2 = sliding_window_probs(model, slices, plan["patch_size"], tta_axes=axes2d, **kw)
        probs = torch.movedim(p2, 0, 1 + a)[None]  # (S, K, *in-plane) -> (1, K, X, Y, Z)
        dis = torch.movedim(d2, 0, a)[None] if d2 is not None else None
    if plan.get("zero_is_background"):
        zero = (x[0] == 0).all(0).to(probs.device)
        if bool(zero.any()):
            probs = probs.clone()
            probs[0, :, zero] = 0.0
            probs[0, 0, zero] = 1.0
            if dis is not None:
                dis = dis.clone()
                dis[0, zero] = 0.0
    return probs, dis


def postprocess_labels(
    labels: np.ndarray,
    *,
    largest_component: Sequence[int] = (),
    min_size_voxels: int = 0,
    fill_holes: bool = False,
) -> np.ndarray:
    """Clean a label map per class.

    scipy.ndimage is used rather than MONAI's ``RemoveSmallObjects`` because that one treats the
    label values of a (non one-hot) map as the components, not the connected pieces of each class.

    Parameters
    ----------
    labels : ``(*S)`` integer label map (0 = background).
    largest_component : classes reduced to their largest connected component.
    min_size_voxels : connected components (per class) smaller than this become background.
    fill_holes : fill background holes enclosed by a class with that class.

    Returns
    -------
    ``(*S)`` label map of the same dtype.
    """
    out = labels.copy()
    for c in [int(v) for v in np.unique(out) if v != 0]:
        m = out == c
        if min_size_voxels > 0 or c in largest_component:
            comp, n = ndimage.label(m)
            if n > 0:
                sizes = np.bincount(comp.ravel())
                sizes[0] = 0
                keep = np.zeros_like(sizes, dtype=bool)
                if c in largest_component:
                    keep[int(np.argmax(sizes))] = True
                else:
                    keep = sizes >= max(min_size_voxels, 1)
                if min_size_voxels > 0:
                    keep &= sizes >= min_size_voxels
                keep[0] = False
                drop = m & ~keep[comp]
                out[drop] = 0
                m = out == c
        if fill_holes and m.any():
            filled = ndimage.binary_fill_holes(m)
            out[filled & (out == 0)] = c
    return out


def entropy_uncertainty(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean normalised entropy (0..1) of ``probs`` ``(K, *S)`` over the predicted foreground ``labels > 0``.

    0.0 when nothing is predicted as foreground.
    """
    k = probs.shape[0]
    p = probs.clamp_min(1e-8)
    ent = -(p * p.log()).sum(0) / math.log(max(k, 2))
    fg = torch.as_tensor(labels) > 0
    return float(ent[fg].mean()) if bool(fg.any()) else 0.0


def component_volumes_ml(labels: np.ndarray, affine: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Volume (mL) of each foreground class of ``labels`` ``(*S)``; voxel volume from ``affine``.

    In 2D the value is the area in mm^2 / 1000 (so mL-like units of a 1 mm thick slab).
    """
    nd = labels.ndim
    a = np.asarray(affine, float)[:nd, :nd]
    vox = abs(float(np.linalg.det(a))) if nd == a.shape[0] else float(np.prod(np.linalg.norm(a, axis=0)))
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(class_names))
    return {name: round(float(counts[i]) * vox / 1000.0, 3) for i, name in enumerate(class_names) if i > 0}
