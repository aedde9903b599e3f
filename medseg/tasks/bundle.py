"""``medseg export --format bundle``: a MONAI bundle that MONAI's own runner executes.

Layout (the MONAI bundle specification)::

    OUT/configs/metadata.json    version, versions of MONAI / PyTorch / NumPy, network_data_format, medseg's metadata
    OUT/configs/inference.json   the inference workflow, run by ``python -m monai.bundle run``
    OUT/models/model.pt          the network's state dict (MONAI DynUNet)
    OUT/docs/README.md           the run's model card

``inference.json`` builds the network as MONAI's ``DynUNet`` with the run's parameters, loads
``models/model.pt`` (a plain state dict), and for each of ``input_files``: medseg's preprocessing, MONAI's
``SlidingWindowInferer`` (Gaussian blending, the plan's patch, the run's overlap and sigma), softmax,
``Invertd`` back onto the input's grid, argmax and ``SaveImaged`` (``<output_dir>/<name>_seg.nii.gz``): the
steps of ``medseg segment``, with the same result. The loop is written as config expressions rather
than MONAI's ``SupervisedEvaluator``, which needs pytorch-ignite (not a medseg dependency).

The deterministic preprocessing (medseg's reader, RAS, spacing, body crop, the plan's intensity
normalisation) is medseg's own ``preprocess`` Compose of MONAI transforms, so the bundle needs ``medseg``
importable: re-implementing it in the config would be a second copy that can drift. What a bundle
cannot reproduce is refused: label post-processing (components / holes), test-time augmentation,
2D-over-slices configurations and plans with ``zero_is_background``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

import medseg
from medseg.errors import InputError
from medseg.utils import atomic_write, atomic_write_text

__all__ = ["write_bundle"]


def _network_def(params: dict[str, Any]) -> dict[str, Any]:
    """The MONAI ``DynUNet`` of medseg's ``unet`` parameters (as :func:`medseg.models.unet.build_unet` builds it)."""
    if params.get("name") != "unet":
        raise InputError(f"bundle export covers medseg's 'unet' (MONAI DynUNet), not {params.get('name')!r}")
    sd = int(params.get("spatial_dims", 3))
    channels = list(params["channels"])
    levels = len(channels)
    strides = params.get("strides") or [[1] * sd] + [[2] * sd for _ in range(levels - 1)]
    kernels = params.get("kernel_sizes") or [[3] * sd] * levels
    norm = params.get("norm", "instance")
    dropout = float(params.get("dropout", 0.0) or 0.0)
    return {
        "_target_": "DynUNet",
        "spatial_dims": sd,
        "in_channels": int(params.get("in_channels", 1)),
        "out_channels": int(params.get("out_channels", 2)),
        "kernel_size": kernels,
        "strides": strides,
        "upsample_kernel_size": strides[1:],
        "filters": channels,
        "dropout": dropout if dropout > 0 else None,
        "norm_name": [norm, {"affine": True}] if norm == "instance" else norm,
        "deep_supervision": False,
        "res_block": bool(params.get("res_block", False)),
    }


def _inference(meta: dict[str, Any], infer: dict[str, Any]) -> dict[str, Any]:
    plan = meta["preprocessing"]["plan"]
    if plan.get("slice_axis") is not None:
        raise InputError("bundle export covers 3D configurations; this run uses a 2D network over slices")
    if plan.get("zero_is_background"):
        raise InputError("the run's plan forces zero voxels to background, which the bundle's inferer does not")
    pre = (
        f"$preprocess(['image'], spatial_dims={meta['spatial_dims']}, modality={meta['modality']!r}, "
        f"target_spacing={plan['target_spacing']!r}, norm={plan['norm']!r}, crop_foreground=True)"
    )

    return {
        "imports": [
            "$import torch",
            "$import numpy",
            "$import monai",
            "$from medseg.transforms.pipeline import preprocess",
        ],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "input_files": [],
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": _network_def(meta["model"]),
        "network": "$@network_def.to(@device)",
        "preprocessing": pre,
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": plan["patch_size"],
            "sw_batch_size": int(infer.get("batch_size", 4)),
            "overlap": float(infer.get("overlap", 0.5)),
            "mode": "gaussian",
            "sigma_scale": float(infer.get("sigma_scale", 0.125)),
            "padding_mode": "replicate",
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "output_dtype": "$numpy.uint8",
                    "resample": False,
                    "separate_folder": False,
                },
            ],
        },
        "predict": "$lambda d: {**d, 'pred': monai.data.MetaTensor(@inferer(d['image'].as_tensor()[None].to(@device), "
        "@network)[0].float().cpu(), affine=d['image'].affine, meta=dict(d['image'].meta))}",
        "initialize": ["$monai.utils.set_determinism(seed=0)", "$torch.set_grad_enabled(False)"],
        "run": [
            "$@network.load_state_dict(torch.load(@bundle_root + '/models/model.pt', map_location=@device, "
            "weights_only=True))",
            "$@network.eval()",
            "$[@postprocessing(@predict(@preprocessing({'image': f}))) for f in @input_files]",
        ],
    }


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    import monai  # lazy: heavy

    plan = meta["preprocessing"]
    names = meta["class_names"]
    return {
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported from medseg run {meta['run']}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"medseg": medseg.__version__},
        "name": f"medseg {meta['run']}",
        "task": f"{meta['modality']} segmentation: {', '.join(names[1:])}",
        "description": "Exported by medseg export --format bundle; preprocessing is medseg's (see docs/README.md)",
        "authors": "medseg",
        "copyright": "see the training data's licence",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if meta["modality"] == "CT" else "magnitude",
                    "modality": meta["modality"],
                    "num_channels": meta["in_channels"],
                    "spatial_shape": plan["patch_size"],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(names),
                    "spatial_shape": plan["patch_size"],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(i): n for i, n in enumerate(names)},
                }
            },
        },
        "medseg": meta,
    }


def write_bundle(run_dir: Path, meta: dict[str, Any], state_dict: dict[str, Any], out: Path, post: Any) -> Path:
    """Write the bundle of a segmentation run into ``out``.

    ``meta`` is :func:`medseg.tasks.export.export_metadata`'s; ``post`` the run's post-processing section.
    """
    if meta.get("task") != "segmentation":
        raise InputError(f"bundle export covers segmentation runs, not {meta.get('task')!r}", run_dir)
    if post is not None and (post.largest_component or post.min_component_ml or post.fill_holes):
        raise InputError("the run post-processes its labels (components / holes), which a bundle does not", run_dir)
    infer = dict(meta.get("inference") or {})
    if infer.get("tta"):
        raise InputError("the run infers with test-time augmentation, which the bundle's inferer does not", run_dir)
    inference = _inference(meta, infer)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    (out / "docs").mkdir(exist_ok=True)
    with atomic_write(out / "models" / "model.pt", suffix=".pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
    atomic_write_text(out / "configs" / "inference.json", json.dumps(inference, indent=2))
    atomic_write_text(out / "configs" / "metadata.json", json.dumps(_metadata(meta), indent=2, default=str))
    card = run_dir / "model_card.md"
    readme = out / "docs" / "README.md"
    if card.is_file():
        shutil.copyfile(card, readme)
    else:
        atomic_write_text(readme, f"# medseg {meta['run']}\n\nNo model card was written for this run.\n")
    return out
