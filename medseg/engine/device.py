"""Device selection: CUDA when available, else CPU, overridable by config (``device: auto|cpu|cuda|cuda:N``)."""

from __future__ import annotations

import torch

from medseg.errors import ConfigError

__all__ = ["select_device", "describe_device", "use_amp"]


def select_device(device: str = "auto") -> torch.device:
    """Resolve ``auto|cpu|cuda|cuda:N`` to a :class:`torch.device`.

    ``cuda:N`` is the N-th GPU this process sees (after ``CUDA_VISIBLE_DEVICES``).
    Raises ConfigError when CUDA is asked for and there is none, or GPU N does not exist.
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is available; use device: auto or cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"invalid device {device!r}: {e}") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ConfigError(
            f"device {device!r}: this process sees {n} GPU(s) (cuda:0..cuda:{n - 1}); "
            "check CUDA_VISIBLE_DEVICES or choose another number"
        )
    return dev


def describe_device(device: torch.device) -> str:
    """Human-readable device name for run.json (e.g. 'cuda:0 (NVIDIA H100)', 'cpu (2 threads)')."""
    if device.type == "cuda":
        idx = device.index or 0
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def use_amp(device: torch.device, requested: bool = True) -> bool:
    """AMP only where it helps and is safe: CUDA."""
    return bool(requested) and device.type == "cuda"
