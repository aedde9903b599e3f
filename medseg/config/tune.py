"""Config schema of the ``tune:`` section: the hyperparameter / augmentation search of ``medseg tune``.

A task config (segmentation, detection, classification) may carry a ``tune:`` section. ``medseg
train`` ignores it; ``medseg tune CONFIG`` reads it: the search space over any config key, the
objective, the sampler and the pruner (Optuna). Example::

    tune:
      space:
        train.lr: {log_uniform: [1.0e-4, 1.0e-1]}
        augment.level: {choice: [light, default, heavy]}
        model.channels: {choice: [[8, 16, 32], [16, 32, 64]]}
      objective: validation        # or cv_mean (needs data.folds)
      pruner: median

Imports no torch or Optuna, so validating a config is instant.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from medseg.config.base import Section

__all__ = ["ParamSpec", "TuneSection", "KINDS", "FORBIDDEN_KEYS"]

#: the kinds of search range a key may have (exactly one per key)
KINDS = ("uniform", "log_uniform", "integer", "log_integer", "choice")

#: keys (and sections) a search may not change: they name the run, or change the data every trial
#: is compared on (the validation cases)
FORBIDDEN_KEYS = ("task", "name", "output_dir", "tune", "data", "synthetic")


class ParamSpec(Section):
    """The range of one searched config key: exactly one of the kinds below.

    ``uniform: [low, high]`` / ``log_uniform: [low, high]`` (floats; log: low > 0),
    ``integer: [low, high]`` / ``log_integer: [low, high]`` (inclusive), ``choice: [a, b, ...]``
    (any YAML values, lists included: e.g. ``model.channels``). ``step`` quantises uniform/integer.
    """

    uniform: list[float] | None = Field(None, min_length=2, max_length=2, description="[low, high] float")
    log_uniform: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[low, high] float, log scale"
    )
    integer: list[int] | None = Field(None, min_length=2, max_length=2, description="[low, high] integer (inclusive)")
    log_integer: list[int] | None = Field(None, min_length=2, max_length=2, description="[low, high], log scale")
    choice: list[Any] | None = Field(None, min_length=1, description="the values to choose from")
    step: float | None = Field(None, gt=0, description="quantisation step of uniform / integer")

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(KINDS)} (got {', '.join(given) or 'none'}); "
                "e.g. {log_uniform: [1.0e-4, 1.0e-1]} or {choice: [light, default, heavy]}"
            )
        kind = given[0]
        if kind != "choice":
            low, high = getattr(self, kind)
            if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
                raise ValueError(f"{kind}: [low, high] needs low < high, got [{low}, {high}]")
            if kind.startswith("log_") and low <= 0:
                raise ValueError(f"{kind}: a log scale needs low > 0, got {low}")
        if self.step is not None and kind not in ("uniform", "integer"):
            raise ValueError(f"step applies to uniform / integer only, not {kind}")
        if self.step is not None and kind == "integer" and self.step != int(self.step):
            raise ValueError(f"integer: step must be a whole number, got {self.step}")
        return self

    @property
    def kind(self) -> str:
        """The one kind given (``uniform``, ``log_uniform``, ``integer``, ``log_integer`` or ``choice``)."""
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def values(self) -> list[Any]:
        """``[low, high]`` of a range, or the choices."""
        v: list[Any] = getattr(self, self.kind)
        return v


class TuneSection(Section):
    """The search of ``medseg tune``: space, objective, sampler, pruner (Optuna)."""

    space: dict[str, ParamSpec] = Field(
        ...,
        min_length=1,
        description="config key (section.key, as in --set) -> its range, e.g. train.lr: {log_uniform: [1e-4, 1e-1]}",
    )
    objective: Literal["validation", "cv_mean"] = Field(
        "validation",
        description="validation: the trial's validation metric (its kept checkpoint); "
        "cv_mean: the mean over the data.folds folds (K trainings per trial)",
    )
    metric: str | None = Field(
        None,
        description="validation metric (a metrics.csv column); default: the one that picks the task's "
        "checkpoint (segmentation val_dice, detection val_score, classification val_auc)",
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="default: minimize for metrics whose name ends in 'loss', else maximize"
    )
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler (TPE or random search)")
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median", description="Optuna pruner acting on the validation figure after each validation"
    )
    startup_trials: int = Field(
        5, ge=0, description="trials sampled at random and never pruned before TPE / the pruner start"
    )
    warmup_epochs: int = Field(1, ge=0, description="epochs of a trial before it may be pruned")
    heartbeat_seconds: int = Field(
        60,
        ge=1,
        description="a worker's heartbeat; a trial silent for 2x this (killed worker) is failed and retried once",
    )

    @field_validator("space")
    @classmethod
    def _keys_look_like_keys(cls, v: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for key in v:
            parts = key.split(".")
            if not all(p.strip() for p in parts):
                raise ValueError(f"space key {key!r} must be a config key such as train.lr")
            if any(key == f or key.startswith(f + ".") for f in FORBIDDEN_KEYS):
                raise ValueError(f"space key {key!r} cannot be searched ({', '.join(FORBIDDEN_KEYS)} are fixed)")
        return v
