"""CLI subcommands: one module per command (``add_parser`` + ``run``)."""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from medseg.errors import NotBuiltError


def add_config_args(p: argparse.ArgumentParser) -> None:
    """``--set a.b=value`` (repeatable), ``--out DIR``, ``--force``: every pipeline takes them."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable; values parsed as YAML)",
    )
    p.add_argument("--out", default=None, help="run folder (default: <output_dir>/<name> from the config)")
    p.add_argument("--force", action="store_true", help="move an existing run folder aside instead of failing")


def task_module(task: str, capability: str) -> ModuleType:
    """Import ``medseg.tasks.<task>``; NotBuiltError naming the capability if it is not there."""
    name = f"medseg.tasks.{task}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            raise NotBuiltError(f"{capability} ({name}) is not built in this version of medseg") from None
        raise


def task_function(task: str, func: str, capability: str):
    mod = task_module(task, capability)
    fn = getattr(mod, func, None)
    if fn is None:
        raise NotBuiltError(f"{capability} ({mod.__name__}.{func}) is not built in this version of medseg")
    return fn
