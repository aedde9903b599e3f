"""``torch.compile`` as an option, with an eager fallback that never changes a result.

:func:`compiled` wraps a network in :class:`CompiledModule`: its first call compiles the network with
``torch.compile`` (TorchDynamo + Inductor; on CPU Inductor writes C++ and needs a C++ compiler, on CUDA
Triton) and later calls run the compiled code. When compiling or a compiled call fails (no C++ compiler,
Inductor or Triton missing, an operator Dynamo cannot trace, a platform without ``torch.compile``), the
wrapper logs one WARNING naming the reason and runs the plain (eager) network from then on, for good: the
failed call is re-run eagerly, so the outputs are those of the plain network either way. Out-of-memory
errors are not compile failures and are raised as they are (the sliding window has its own fallback).

What the wrapper keeps plain:

- ``state_dict`` / ``load_state_dict`` are the wrapped network's (no ``_orig_mod.`` prefix, which
  ``torch.compile``'s own wrapper adds), so checkpoints load into an uncompiled network;
- parameters, buffers and ``train()``/``eval()`` are the wrapped network's own (the same tensors);
- attributes the wrapper lacks are looked up on the wrapped network.

Shapes are compiled static (``dynamic=False``): patch sizes are fixed per run, and static kernels are the
fast ones; a new input shape (the last, smaller batch of a sliding window: :func:`pad_batch` avoids it)
compiles once more. Under DDP the DDP-wrapped network is compiled (PyTorch's order: wrap, then compile,
so Dynamo's DDP optimiser splits the graph at the gradient buckets).

The first call pays the compilation (tens of seconds on CPU for a 3D U-Net; see docs/performance.md).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["CompiledModule", "compiled", "compile_status", "pad_batch"]

log = logging.getLogger("medseg.engine")

#: compiled wrappers of the networks inference saw (one per network: compiled once, reused for every case)
_WRAPPERS: weakref.WeakKeyDictionary[nn.Module, CompiledModule] = weakref.WeakKeyDictionary()


class CompiledModule(nn.Module):
    """A network compiled by ``torch.compile`` on first call, eager for good when that fails.

    Parameters
    ----------
    module : the plain network (registered as ``_orig_mod``; its keys are the wrapper's ``state_dict``).
    compile_fn : the compiler (default ``torch.compile(module, dynamic=False)``); tests pass one that fails.

    Attributes
    ----------
    fallback_reason : None while compiled (or not yet called), else why the eager network runs.
    """

    def __init__(self, module: nn.Module, compile_fn: Callable[[nn.Module], Callable[..., Any]] | None = None):
        super().__init__()
        self._orig_mod = module
        # not registered as a submodule: torch's OptimizedModule would add a second copy of every key
        object.__setattr__(self, "_compile_fn", compile_fn or _torch_compile)
        object.__setattr__(self, "_compiled", None)
        object.__setattr__(self, "fallback_reason", None)
        object.__setattr__(self, "calls", 0)

    @property
    def module(self) -> nn.Module:
        """The plain (eager) network."""
        return self._orig_mod

    @property
    def used(self) -> bool:
        """True while the compiled network runs (before the first call: not known yet, True)."""
        return self.fallback_reason is None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.fallback_reason is None:
            try:
                if self._compiled is None:
                    object.__setattr__(self, "_compiled", self._compile_fn(self._orig_mod))
                out = self._compiled(*args, **kwargs)
                object.__setattr__(self, "calls", self.calls + 1)
                return out
            except torch.OutOfMemoryError:
                raise
            except Exception as e:  # any compile failure (Dynamo, Inductor, the C++ compiler): eager for good
                reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
                object.__setattr__(self, "fallback_reason", reason)
                object.__setattr__(self, "_compiled", None)
                log.warning("torch.compile failed (%s); running the network uncompiled (eager) from now on", reason)
        return self._orig_mod(*args, **kwargs)

    # the plain network's keys (checkpoints written from a compiled run load without compile)
    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self._orig_mod.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        return self._orig_mod.load_state_dict(state_dict, strict=strict, assign=assign)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("_orig_mod")
            if inner is None:  # not set up yet (copy, unpickling): a plain missing attribute
                raise
            return getattr(inner, name)

    def status(self) -> dict[str, Any]:
        """What run.json records: ``{"requested": True, "used": bool, "fallback_reason": str | None}``."""
        return {"requested": True, "used": self.used, "fallback_reason": self.fallback_reason}


def _torch_compile(module: nn.Module) -> Callable[..., Any]:
    return torch.compile(module, dynamic=False)


def compiled(model: nn.Module, enabled: bool = True) -> nn.Module:
    """``model`` compiled on first call (:class:`CompiledModule`), or ``model`` itself when not ``enabled``.

    The same network gets the same wrapper every time (its compiled code is reused across calls and
    cases); a :class:`CompiledModule` is returned as it is.
    """
    if not enabled or isinstance(model, CompiledModule):
        return model
    wrapper = _WRAPPERS.get(model)
    if wrapper is None:
        wrapper = _WRAPPERS[model] = CompiledModule(model)
    return wrapper


def compile_status(model: nn.Module | None, requested: bool) -> dict[str, Any]:
    """The ``compile`` record of a run: requested, actually used, and why not (the fallback's reason).

    ``model`` is what ran (a :class:`CompiledModule`, or the network, or the fold ensemble whose members,
    inference compiled through :func:`compiled`); ``used`` is False when nothing was requested or
    compiling failed (for any member).
    """
    if not requested or model is None:
        return {"requested": bool(requested), "used": False, "fallback_reason": None}
    if isinstance(model, CompiledModule):
        return model.status()
    # the network itself, or the members of a fold ensemble that inference ran one by one
    nets = [model, *(getattr(model, "members", None) or [])]
    wrappers = [w for w in (_WRAPPERS.get(m) for m in nets) if w is not None]
    if not wrappers:
        return {"requested": True, "used": False, "fallback_reason": "the network was never called"}
    reasons = [w.fallback_reason for w in wrappers if w.fallback_reason is not None]
    return {"requested": True, "used": not reasons, "fallback_reason": reasons[0] if reasons else None}


def pad_batch(fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn`` with inputs of fewer than ``batch_size`` items padded (repeating the last) to ``batch_size``
    and the output cut back: a compiled network then sees one input shape per window size (no recompile
    for the last, smaller batch of a sliding window). Items are independent in eval mode, so the kept
    outputs are those of the unpadded batch.
    """

    def call(x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        if n >= batch_size:
            return fn(x)
        pad = x[-1:].expand(batch_size - n, *x.shape[1:])
        return fn(torch.cat([x, pad]))[:n]

    return call
