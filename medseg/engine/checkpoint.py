"""Checkpoints: tensors and plain Python values only, loaded with ``weights_only=True``.

A checkpoint is a dict ``{"model": state_dict, "optimizer": ..., "scheduler": ..., "state": {...},
"meta": {...}}``. Loading never unpickles arbitrary objects (untrusted checkpoints cannot run
code). ``.safetensors`` files (model weights only) are read with safetensors when installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medseg.errors import CheckpointError, MissingDependencyError, MissingFileError
from medseg.utils import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "load_state_dict_file", "load_run_model"]


def save_checkpoint(path: str | Path, **content: Any) -> Path:
    """Save ``content`` (state dicts, numbers, strings, lists, dicts) atomically with ``torch.save``."""
    path = Path(path)
    with atomic_write(path, suffix=".pt") as tmp:
        torch.save(content, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a medseg checkpoint safely (``weights_only=True``).

    Raises MissingFileError / CheckpointError (corrupt, or holds non-tensor objects).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError("checkpoint not found", path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt / unsafe files
        raise CheckpointError(
            f"cannot load checkpoint safely ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "medseg only loads tensors and plain values (weights_only=True)",
            path,
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"expected a dict checkpoint, found {type(ckpt).__name__}", path)
    return ckpt


def load_state_dict_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a bare state dict from ``.pt/.pth/.bin`` (weights_only) or ``.safetensors``.

    A medseg checkpoint (with a ``model`` entry) yields its model state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError("weights file not found", path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise MissingDependencyError(
                "reading .safetensors needs the 'safetensors' package: pip install safetensors", path
            ) from None
        return load_file(str(path), device=str(map_location))
    sd = load_checkpoint(path, map_location)
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    elif "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd


def load_run_model(run_dir: str | Path, which: str = "best", map_location: str | torch.device = "cpu"):
    """Rebuild the network of a finished run and load its weights.

    Reads ``run_dir/config.yaml`` (the resolved config) and ``run_dir/checkpoints/<which>.pt``
    (falling back to ``last.pt``). Returns ``(model, config, checkpoint)``; the model is in eval mode.
    """
    from medseg.config import load_config
    from medseg.models import build_model

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise MissingFileError("not a trained medseg run folder (no config.yaml)", run_dir)
    cfg = load_config(cfg_path)
    ckpt_path = run_dir / "checkpoints" / f"{which}.pt"
    if not ckpt_path.is_file():
        ckpt_path = run_dir / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(ckpt_path, map_location)
    meta = ckpt.get("meta", {})
    params = meta.get("model_params") or cfg.model.model_dump()
    params = dict(params)
    if "pretrained" in params:  # the checkpoint holds the trained weights; no need to load ImageNet ones
        params["pretrained"] = False
    model = build_model(**params)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"weights do not fit the model in config.yaml: {str(e)[:300]}", ckpt_path) from None
    model.eval()
    return model, cfg, ckpt
