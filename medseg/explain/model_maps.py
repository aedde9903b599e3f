"""``medseg.explain.gradcam(model, image, target=...)``: Grad-CAM of a trained model on one image.

One entry point for the three tasks. ``model`` is what :func:`medseg.load_model` returns (a
segmentation, detection or classification model that knows its preprocessing) or a bare network.
A loaded model prepares the network input itself (:meth:`cam_inputs`: the run's preprocessing,
the target class, the region) and maps the result back to the image (``restore``), so the map lies
on the image as given:

- **classification**: the map of a class (default: the predicted one) at the image's size;
- **segmentation**: the map of a class inside a region (default: the voxels predicted as that class),
  on the source voxel grid with its affine (3D: a ``MetaTensor`` ``(1, X, Y, Z)``);
- **detection**: the map of the score inside a disk around one detection (``target=(x, y)`` or the
  index of a detection), or of all detections (``target=None``), at the image's size.

A cross-validation fold ensemble gives the mean of its members' maps (each normalised to [0, 1]).
The maps themselves are :class:`~medseg.explain.cam.CAMExplainer`'s (MONAI's Grad-CAM / Grad-CAM++).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from medseg.errors import InputError
from medseg.explain.cam import CAMExplainer, Method, normalise_maps

__all__ = ["CamInputs", "Explainable", "gradcam"]


@dataclass
class CamInputs:
    """What a loaded model gives :func:`gradcam` for one image.

    Attributes
    ----------
    network : the trained network (or a fold ensemble with ``members``), in eval mode.
    x : ``(B, C, *S)`` network input, preprocessed as in training (several ``B`` for slice-wise models).
    task : ``"classification"`` (logits ``(B, K)``) or ``"segmentation"`` (logits ``(B, K, *S)``:
        segmenters and detection score maps).
    target : the class (output channel) explained.
    roi : segmentation only: ``(B, 1, *S)`` region whose logits are explained, or None (the
        predicted mask of ``target``).
    restore : ``(B, 1, *S)`` maps (normalised over the whole input) -> the map on the image as given.
    """

    network: nn.Module
    x: torch.Tensor
    task: Literal["classification", "segmentation"]
    target: int
    roi: torch.Tensor | None
    restore: Callable[[torch.Tensor], Any]


@runtime_checkable
class Explainable(Protocol):
    """A loaded model (:func:`medseg.load_model`) that prepares its own Grad-CAM input."""

    def cam_inputs(self, image: Any, *, target: Any = None, region: Any = None, affine: Any = None) -> CamInputs: ...


def _members(network: nn.Module) -> Sequence[nn.Module]:
    members = getattr(network, "members", None)  # medseg.engine.ensemble.FoldEnsemble
    return list(members) if members is not None else [network]


def gradcam(
    model: Explainable | nn.Module,
    image: Any,
    target: Any = None,
    *,
    region: Any = None,
    affine: Any = None,
    method: Method = "gradcam",
    layer: str | None = None,
) -> Any:
    """Grad-CAM (or Grad-CAM++) map of ``model`` on one ``image``, in [0, 1].

    Parameters
    ----------
    model : a model of :func:`medseg.load_model`, or a bare network (then ``image`` is the network
        input ``(C, *S)`` / ``(B, C, *S)`` and the result is :class:`CAMExplainer`'s).
    image : a path, a ``MetaTensor`` ``(C, *S)``, or an array (volumes need ``affine``), as the
        model's ``predict`` takes it.
    target : classification / segmentation: a class name or index (default: the predicted class;
        for segmentation the first foreground class); detection: a detection ``(x, y)`` in pixels or
        its index in ``model.predict(image)``, or None for all detections.
    region : segmentation only: a boolean mask on the image's own grid (default: the voxels
        predicted as ``target``).
    affine : the 4x4 voxel -> RAS mm affine of an array volume.
    method : ``"gradcam"`` or ``"gradcampp"``.
    layer : target layer (``network.named_modules()`` name; default per network).

    Returns
    -------
    2D tasks: a ``(H, W)`` float32 array at the image's size; segmentation of volumes: a
    ``MetaTensor`` ``(1, X, Y, Z)`` with the image's affine.

    Raises
    ------
    InputError (a target the model does not have, a class not predicted in the image without a
    region, a wrong input) and the errors of reading the image.
    """
    if not isinstance(model, Explainable):
        if not isinstance(model, nn.Module):
            raise InputError(f"gradcam needs a model from medseg.load_model or a torch network, not {type(model)}")
        with CAMExplainer(model, method=method, layer=layer) as cam:
            return cam(image, target=target)
    inp = model.cam_inputs(image, target=target, region=region, affine=affine)
    total: torch.Tensor | None = None
    members = _members(inp.network)
    for net in members:
        with CAMExplainer(net, method=method, layer=layer, task=inp.task, normalise=False) as cam:
            raw = torch.as_tensor(cam(inp.x, target=inp.target, roi=inp.roi)).float()
        m = normalise_maps(raw.reshape(1, 1, -1)).reshape(raw.shape)  # over the whole input, not per slice
        total = m if total is None else total + m
    assert total is not None
    out = inp.restore(total / len(members))
    top = float(out.max())
    # resampling back to the image's grid (linear) lowers the peak: the map's maximum is 1 again
    return out / top if top > 0 else out
