"""Run checkpoints: rebuild the network of a finished run and load its weights.

Reading and writing checkpoint files is :mod:`medseg.models.weights` (safe loading,
``weights_only=True``); this module adds what needs a run folder and its config. A cross-validation
parent run (``folds.json`` plus ``fold_<k>/`` run folders, written by ``medseg train --fold``) loads
as the :class:`~medseg.engine.ensemble.FoldEnsemble` of its folds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from medseg.config import PipelineConfig, load_config
from medseg.engine.ensemble import FoldEnsemble, Output
from medseg.errors import CheckpointError, MissingFileError
from medseg.models import build_model
from medseg.models.weights import load_checkpoint, load_state_dict_file, save_checkpoint

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_state_dict_file",
    "load_run_model",
    "is_fold_parent",
    "fold_member_dirs",
    "FOLDS_FILE",
]

#: the file that marks a cross-validation parent run (the split; written by medseg.tasks.crossval)
FOLDS_FILE = "folds.json"


def load_run_model(run_dir: str | Path, which: str = "best", map_location: str | torch.device = "cpu"):
    """Rebuild the network of a finished run and load its weights.

    Reads ``run_dir/config.yaml`` (the resolved config) and ``run_dir/checkpoints/<which>.pt``
    (falling back to ``last.pt``). Returns ``(model, config, checkpoint)``; the model is in eval mode.

    A cross-validation parent run (``folds.json``) returns the :class:`FoldEnsemble` of its K folds
    (softmax averaging for segmentation / classification, sigmoid score maps for detection), the
    parent's config, and a checkpoint-like dict whose ``meta`` is fold 0's plus
    ``meta["ensemble"] = {"folds": K, "members": [...], "best_epochs": [...]}``.

    Raises
    ------
    MissingFileError (no config.yaml, no checkpoint; a fold not trained yet), CheckpointError (weights
    that do not fit; folds whose plans differ).
    """
    run_dir = Path(run_dir)
    if is_fold_parent(run_dir):
        return _load_fold_ensemble(run_dir, which, map_location)
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


def is_fold_parent(run_dir: str | Path) -> bool:
    """True for a cross-validation parent run folder (``folds.json``, no checkpoints of its own)."""
    run_dir = Path(run_dir)
    return (run_dir / FOLDS_FILE).is_file() and not (run_dir / "checkpoints").is_dir()


def fold_member_dirs(run_dir: str | Path) -> list[Path]:
    """The fold run folders ``fold_0 .. fold_{K-1}`` of a parent run (whether trained or not)."""
    run_dir = Path(run_dir)
    try:
        k = int(json.loads((run_dir / FOLDS_FILE).read_text())["folds"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"unreadable {FOLDS_FILE} ({type(e).__name__}: {e})", run_dir / FOLDS_FILE) from None
    return [run_dir / f"fold_{i}" for i in range(k)]


def _load_fold_ensemble(
    run_dir: Path, which: str, map_location: str | torch.device
) -> tuple[FoldEnsemble, PipelineConfig, dict[str, Any]]:
    members = fold_member_dirs(run_dir)
    missing = [d.name for d in members if not (d / "checkpoints").is_dir()]
    if missing:
        raise MissingFileError(
            f"cross-validation run with untrained folds ({', '.join(missing)}): train them with "
            "`medseg train CONFIG --fold k` (or --fold all --resume) before using the ensemble",
            run_dir,
        )
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise MissingFileError("not a trained medseg run folder (no config.yaml)", run_dir)
    cfg = load_config(cfg_path)
    loaded = [load_run_model(d, which, map_location) for d in members]
    metas = [ck.get("meta", {}) for _, _, ck in loaded]
    plans = {json.dumps(m.get("plan"), sort_keys=True) for m in metas}
    if len(plans) > 1:
        raise CheckpointError(
            "the folds were trained with different plans (spacing, patch, normalisation): their outputs "
            "cannot be averaged; retrain the folds from one parent run",
            run_dir,
        )
    output: Output = "sigmoid" if cfg.task == "detection" else "softmax"
    ensemble = FoldEnsemble([m for m, _, _ in loaded], output=output, names=[d.name for d in members])
    ensemble.eval()
    meta = {
        **metas[0],
        "ensemble": {
            "folds": len(members),
            "members": [d.name for d in members],
            "best_epochs": [(ck.get("state") or {}).get("best_epoch") for _, _, ck in loaded],
            "output": output,
            "checkpoint": which,
        },
    }
    return ensemble, cfg, {"meta": meta, "state": {}}
