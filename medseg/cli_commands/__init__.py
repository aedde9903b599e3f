"""CLI subcommands: one module per command (``add_parser`` + ``run``)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any


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


def task_function(task: str, func: str) -> Callable[..., Any]:
    """``medseg.tasks.<task>.<func>``, imported when a command runs.

    Command modules are imported to build the parser; the tasks (and torch, MONAI) only when a
    command runs, so ``medseg --help`` and a config error answer at once.
    """
    fn: Callable[..., Any] = getattr(importlib.import_module(f"medseg.tasks.{task}"), func)
    return fn
