"""Training loop, inference, checkpoints, device selection."""

from medseg.engine.checkpoint import load_checkpoint, load_run_model, save_checkpoint
from medseg.engine.device import select_device
from medseg.engine.trainer import Trainer, TrainState

__all__ = ["Trainer", "TrainState", "save_checkpoint", "load_checkpoint", "load_run_model", "select_device"]
