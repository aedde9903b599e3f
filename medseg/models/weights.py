"""Safe reading and writing of network weights: tensors and plain Python values only.

A medseg checkpoint is a dict ``{"model": state_dict, "optimizer": ..., "scheduler": ..., "state": {...},
"meta": {...}}``. Loading never unpickles arbitrary objects (``torch.load(..., weights_only=True)``:
untrusted checkpoints cannot run code). ``.safetensors`` files (model weights only) are read with
safetensors when installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medseg.errors import CheckpointError, MissingDependencyError, MissingFileError
from medseg.utils import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "load_state_dict_file"]


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
