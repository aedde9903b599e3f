"""Several processes, one training: PyTorch DDP under ``torchrun`` (gloo on CPU, NCCL on CUDA).

``torchrun --nproc_per_node N -m medseg train CONFIG`` starts N copies of medseg; each reads its
rank from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT``)
and :func:`init_from_env` joins them into one process group. What each piece does:

- :class:`DistContext` is the rank's view (rank, world size, local rank, backend) with the few
  collective operations the project needs: :meth:`~DistContext.barrier`, :meth:`~DistContext.mean`
  (metrics reduced across ranks), :meth:`~DistContext.any` (one rank's stop decision binds all),
  :meth:`~DistContext.broadcast` (rank 0's state to every rank) and :meth:`~DistContext.check_same`
  (a clear error when ranks disagree, e.g. different configs);
- data: :meth:`~DistContext.partition` (MONAI's ``partition_dataset``: each rank caches only its own
  cases) or :meth:`~DistContext.sampler` (PyTorch's ``DistributedSampler``); per-rank seeds
  (:meth:`~DistContext.rank_seed`) so that augmentations differ between ranks yet stay reproducible;
- the model: :meth:`~DistContext.wrap` (``DistributedDataParallel``: gradients are averaged across
  ranks in the backward pass, so N ranks x batch b step like one process with batch N*b);
- only rank 0 writes (checkpoints, logs, ``run.json``): the :class:`~medseg.engine.trainer.Trainer`
  and the CLI ask :attr:`~DistContext.is_main`.

Without torchrun (``WORLD_SIZE`` unset or 1) everything here is a no-op and ``DistContext()`` is the
single process. A rank that fails ends the job: torchrun stops the other ranks, and every
collective has a timeout (:data:`DEFAULT_TIMEOUT_S`) so that nothing waits forever.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import nn

from medseg.errors import ConfigError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistContext",
    "DistributedError",
    "current",
    "init_from_env",
    "shutdown",
    "value_hash",
]

log = logging.getLogger("medseg.engine")

T = TypeVar("T")

#: seconds a collective (gradient sync, broadcast, barrier) may wait for the other ranks
DEFAULT_TIMEOUT_S = 1800.0


class DistributedError(ConfigError):
    """The ranks of a distributed job disagree (config, plan, data) or cannot be joined."""


def value_hash(value: Any) -> str:
    """SHA-256 (16 hex digits) of ``value`` as canonical JSON: what :meth:`DistContext.check_same` compares."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DistContext:
    """One rank of a distributed job (defaults: the single process of a plain run).

    Attributes
    ----------
    rank : global rank, 0 .. world_size - 1 (rank 0 writes the outputs).
    world_size : number of processes.
    local_rank : rank on this machine (the GPU number under NCCL).
    backend : ``"gloo"`` | ``"nccl"`` | None (not distributed).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when there are several ranks (collectives do something)."""
        return self.world_size > 1 and tdist.is_available() and tdist.is_initialized()

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one rank that writes checkpoints, logs and ``run.json``."""
        return self.rank == 0

    def _tensor_device(self) -> torch.device:
        # NCCL reduces CUDA tensors only; gloo CPU tensors
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    # -- collectives -------------------------------------------------------------------
    def barrier(self) -> None:
        """Wait until every rank gets here (no-op in a single process)."""
        if self.enabled:
            tdist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over ranks of each value (every rank passes the same keys, in any order)."""
        if not self.enabled or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._tensor_device())
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one (a stop decision binds all ranks)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self._tensor_device())
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (pickled; plain values and state dicts)."""
        if not self.enabled:
            return obj
        box: list[Any] = [obj if self.is_main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def check_same(self, value: Any, what: str) -> None:
        """Raise :class:`DistributedError` on every rank unless ``value`` is the same on all ranks.

        ``what`` names the value in the message (``"config"``, ``"plan"`` ...). Values are compared by
        :func:`value_hash`, so anything JSON-serialisable (or with a ``str``) works.
        """
        if not self.enabled:
            return
        mine = value_hash(value)
        hashes: list[Any] = [None] * self.world_size
        tdist.all_gather_object(hashes, mine)
        if len(set(hashes)) > 1:
            groups: dict[str, list[int]] = {}
            for r, h in enumerate(hashes):
                groups.setdefault(str(h), []).append(r)
            desc = "; ".join(f"ranks {rs} have {h}" for h, rs in groups.items())
            raise DistributedError(
                f"the ranks of this distributed job disagree on the {what} ({desc}); start every rank "
                f"with the same {what} (same command line, same files, same --set overrides)"
            )

    # -- data, seeds, model ------------------------------------------------------------
    def rank_seed(self, seed: int) -> int:
        """The seed of this rank: ``seed`` on rank 0, distinct and fixed on the others."""
        return int(seed) + 1_000_003 * self.rank

    def partition(self, items: Sequence[T], seed: int) -> list[T]:
        """This rank's share of ``items`` (MONAI ``partition_dataset``: shuffled with ``seed``, equal
        sizes so that every rank runs the same number of steps; a short list repeats items)."""
        if self.world_size <= 1:
            return list(items)
        from monai.data import partition_dataset  # heavy (MONAI): only for a distributed run

        parts = partition_dataset(
            list(items), num_partitions=self.world_size, shuffle=True, seed=int(seed), even_divisible=True
        )
        return list(parts[self.rank])

    def sampler(self, dataset: Any, *, shuffle: bool, seed: int) -> torch.utils.data.Sampler | None:
        """A ``DistributedSampler`` (equal shares, reshuffled per epoch by the Trainer), None when single."""
        if self.world_size <= 1:
            return None
        return torch.utils.data.distributed.DistributedSampler(
            dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle, seed=int(seed)
        )

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``DistributedDataParallel(model)`` when distributed (rank 0's weights are broadcast), else ``model``."""
        if not self.enabled:
            return model
        ids = [device.index if device.index is not None else self.local_rank] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def describe(self) -> dict[str, Any]:
        """What ``run.json`` records: ``world_size``, ``backend``."""
        return {"world_size": self.world_size, "backend": self.backend}


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    try:
        return int(v) if v not in (None, "") else default
    except ValueError:
        raise DistributedError(f"environment variable {name}={v!r} is not an integer (set by torchrun)") from None


def current() -> DistContext:
    """The context of this process: the joined process group, else the single process."""
    if tdist.is_available() and tdist.is_initialized():
        ws = tdist.get_world_size()
        return DistContext(
            rank=tdist.get_rank(),
            world_size=ws,
            local_rank=_env_int("LOCAL_RANK", 0),
            backend=str(tdist.get_backend()),
        )
    return DistContext()


def init_from_env(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group torchrun describes in the environment; a no-op without torchrun.

    Parameters
    ----------
    device : the run's device setting: ``cpu`` -> gloo; ``auto``/``cuda`` with a GPU -> NCCL, one GPU
        per rank (``cuda:LOCAL_RANK``, made the current device).
    timeout_s : seconds any collective waits for the other ranks before failing (gloo and NCCL).

    Returns
    -------
    the :class:`DistContext` of this rank (``DistContext()`` when ``WORLD_SIZE`` is unset or 1).
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    if tdist.is_initialized():
        return current()
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    use_cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise DistributedError(
                f"rank {rank} has local rank {local} but this machine shows {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (--nproc_per_node)"
            )
        torch.cuda.set_device(local)
    tdist.init_process_group(
        backend=backend, rank=rank, world_size=world, timeout=_dt.timedelta(seconds=float(timeout_s))
    )
    ctx = current()
    log.info("rank %d of %d joined (%s, timeout %.0f s)", ctx.rank, ctx.world_size, backend, timeout_s)
    return ctx


def shutdown() -> None:
    """Leave the process group (end of a distributed command)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
