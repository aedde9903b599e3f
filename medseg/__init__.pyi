from . import (
    config,
    data,
    demo,
    engine,
    errors,
    explain,
    io,
    metrics,
    models,
    palette,
    review,
    runs,
    tasks,
    transforms,
    utils,
)
from .config import load_config
from .tasks.trained import load_model

__version__: str

__all__ = [
    "config",
    "data",
    "demo",
    "engine",
    "errors",
    "explain",
    "io",
    "metrics",
    "models",
    "palette",
    "review",
    "runs",
    "tasks",
    "transforms",
    "utils",
    "load_config",
    "load_model",
]
