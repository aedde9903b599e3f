"""Device selection (``device: auto|cpu|cuda|cuda:N``) and the project's one CPU-thread / loader-worker policy.

Thread policy (docs/performance.md): the cores this process may use (its CPU affinity, e.g. a SLURM
allocation or ``taskset``) are shared by the processes torchrun started on this machine
(``LOCAL_WORLD_SIZE``); each process gets ``cores // processes`` torch intra-op threads, less one per
DataLoader worker (a worker is one more busy process; PyTorch gives each worker one thread), and
never fewer than 1 (:func:`thread_budget`). So 2 cores and 2 ranks give 1 thread each, 64 cores and
one process with 8 workers give 56: the CPU is never oversubscribed (OpenMP threads waiting on each
other on a busy CPU made steps 20-25x slower here). An explicit count (``cpu_threads`` of a config,
``OMP_NUM_THREADS`` set by the user) wins. :func:`torch_threads` applies a count for a block.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from medseg.errors import ConfigError

__all__ = [
    "select_device",
    "describe_device",
    "use_amp",
    "available_cores",
    "thread_budget",
    "torch_threads",
    "loader_options",
    "amp_dtype",
]


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


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows: no affinity mask
        return max(1, os.cpu_count() or 1)


def thread_budget(workers: int = 0, processes: int | None = None) -> int:
    """Torch intra-op threads for one process: ``cores // processes - workers``, at least 1.

    Parameters
    ----------
    workers : DataLoader worker processes this process starts (each keeps one core busy).
    processes : processes sharing this machine's cores (default: torchrun's ``LOCAL_WORLD_SIZE``, else 1).

    ``OMP_NUM_THREADS`` set in the environment (by the user; torchrun sets 1 with several ranks) is
    an upper bound.
    """
    procs = processes if processes is not None else int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    n = max(1, available_cores() // max(1, procs) - max(0, int(workers)))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return min(n, int(omp)) if omp.isdigit() and int(omp) > 0 else n


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's CPU intra-op threads (None: leave as is).

    On a shared, oversubscribed CPU, OpenMP threads that wait on each other can make a step
    20x slower than one thread (measured here: 4.7 s vs 0.19 s per step on 2 busy cores).
    """
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def loader_options(num_workers: int, device: torch.device | str = "cpu", *, persistent: bool = False) -> dict[str, Any]:
    """Keyword arguments of a ``DataLoader`` with ``num_workers`` workers and pinned memory for
    non-blocking copies to a GPU.

    ``persistent`` keeps the workers alive across epochs (saves their start-up) and is only for data
    without random augmentation: workers started once keep their first random seeds, while the
    Trainer's exact resume needs workers re-seeded at every epoch from the epoch's seed.
    """
    dev = torch.device(device)
    return {
        "num_workers": int(num_workers),
        "persistent_workers": bool(persistent) and int(num_workers) > 0,
        "pin_memory": dev.type == "cuda",
    }


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype of ``device``: bfloat16 where the GPU supports it (no loss scaling needed,
    the range of float32), else float16 (with a ``GradScaler``); float32 on CPU (no autocast)."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
