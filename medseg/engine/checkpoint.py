"""Run checkpoints: rebuild the network of a finished run and load its weights.

Reading and writing checkpoint files is :mod:`medseg.models.weights` (safe loading,
``weights_only=True``); this module adds what needs a run folder and its config.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medseg.config import load_config
from medseg.errors import CheckpointError, MissingFileError
from medseg.models import build_model
from medseg.models.weights import load_checkpoint, load_state_dict_file, save_checkpoint

__all__ = ["save_checkpoint", "load_checkpoint", "load_state_dict_file", "load_run_model"]


def load_run_model(run_dir: str | Path, which: str = "best", map_location: str | torch.device = "cpu"):
    """Rebuild the network of a finished run and load its weights.

    Reads ``run_dir/config.yaml`` (the resolved config) and ``run_dir/checkpoints/<which>.pt``
    (falling back to ``last.pt``). Returns ``(model, config, checkpoint)``; the model is in eval mode.
    """
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
    model_section = getattr(cfg, "model", None)  # every task config has one; PipelineConfig itself does not
    params = dict(meta.get("model_params") or (model_section.model_dump() if model_section is not None else {}))
    if "name" not in params:
        raise CheckpointError("the checkpoint and config.yaml name no model to rebuild", ckpt_path)
    if "pretrained" in params:  # the checkpoint holds the trained weights; no need to load ImageNet ones
        params["pretrained"] = False
    model = build_model(**params)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"weights do not fit the model in config.yaml: {str(e)[:300]}", ckpt_path) from None
    model.eval()
    return model, cfg, ckpt
