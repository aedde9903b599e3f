"""Device selection: CUDA when available, else CPU, overridable by config (``device: auto|cpu|cuda``)."""

from __future__ import annotations

import torch

from medseg.errors import ConfigError

__all__ = ["select_device", "describe_device", "use_amp"]


def select_device(device: str = "auto") -> torch.device:
    """Resolve ``auto|cpu|cuda[:N]`` to a :class:`torch.device`.

    Raises ConfigError when CUDA is asked for and there is none.
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available; use device: auto or cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"invalid device {device!r}: {e}") from None


def describe_device(device: torch.device) -> str:
    """Human-readable device name for run.json (e.g. 'cuda:0 (NVIDIA H100)', 'cpu (2 threads)')."""
    if device.type == "cuda":
        idx = device.index or 0
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def use_amp(device: torch.device, requested: bool = True) -> bool:
    """AMP only where it helps and is safe: CUDA."""
    return bool(requested) and device.type == "cuda"
