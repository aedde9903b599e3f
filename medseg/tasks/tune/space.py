"""The search space of ``tune:``: Optuna suggestions for config keys, checked against the config schema."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medseg.config import ParamSpec, PipelineConfig, TuneSection
from medseg.errors import ConfigError
from medseg.tasks.datalists import derived_config

if TYPE_CHECKING:  # Optuna is imported only when a study runs
    import optuna

__all__ = ["DEFAULT_METRIC", "suggest", "decode_params", "check_space", "objective_metric", "direction"]

#: the validation figure that picks each task's checkpoint (the default objective)
DEFAULT_METRIC = {"segmentation": "val_dice", "detection": "val_score", "classification": "val_auc"}

_PRIMITIVE = (str, int, float, bool, type(None))


def _choices(spec: ParamSpec) -> tuple[list[Any], bool]:
    """Optuna's categorical choices for ``spec.choice`` and whether they are JSON-encoded.

    Optuna stores only None/bool/int/float/str choices; lists (e.g. ``model.channels``) and
    mappings are stored as their JSON text and decoded by :func:`decode_params`.
    """
    values = list(spec.values)
    if all(isinstance(v, _PRIMITIVE) for v in values):
        return values, False
    return [json.dumps(v) for v in values], True


def suggest(trial: optuna.Trial, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Draw a value for every key of ``space`` from ``trial``: ``{"train.lr": 0.003, ...}`` (decoded)."""
    raw: dict[str, Any] = {}
    for key, spec in space.items():
        kind, v = spec.kind, spec.values
        if kind in ("uniform", "log_uniform"):
            raw[key] = trial.suggest_float(key, v[0], v[1], log=kind == "log_uniform", step=spec.step)
        elif kind in ("integer", "log_integer"):
            raw[key] = trial.suggest_int(key, v[0], v[1], log=kind == "log_integer", step=int(spec.step or 1))
        else:
            choices, _ = _choices(spec)
            raw[key] = trial.suggest_categorical(key, choices)
    return decode_params(raw, space)


def decode_params(params: Mapping[str, Any], space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Optuna's stored parameter values -> config values (JSON-encoded choices decoded)."""
    out = dict(params)
    for key, value in params.items():
        spec = space.get(key)
        if spec is not None and spec.kind == "choice" and _choices(spec)[1] and isinstance(value, str):
            out[key] = json.loads(value)
    return out


def check_space(cfg: PipelineConfig, space: Mapping[str, ParamSpec]) -> None:
    """Every key of ``space`` must be a config key taking every value of its range (both ends, each choice).

    Raises
    ------
    ConfigError naming the key and what the schema says (unknown key, value not allowed ...).
    """
    for key, spec in space.items():
        candidates = spec.values if spec.kind == "choice" else [spec.values[0], spec.values[1]]
        for value in candidates:
            try:
                derived_config(cfg, name="check", output_dir=cfg.output_dir, updates={key: value}, keep_folds=True)
            except ConfigError as e:
                raise ConfigError(
                    f"tune.space key {key!r} with value {value!r} does not give a valid config: {e}"
                ) from None


def objective_metric(cfg: PipelineConfig, tune: TuneSection) -> str:
    """The validation figure optimised: ``tune.metric`` or the task's checkpoint metric."""
    return tune.metric or DEFAULT_METRIC.get(cfg.task, "val_loss")


def direction(tune: TuneSection, metric: str) -> str:
    """``tune.direction``, else minimize for ``*loss`` metrics and maximize otherwise."""
    if tune.direction is not None:
        return tune.direction
    return "minimize" if metric.endswith("loss") else "maximize"
