"""CLI subcommands: one module per command (``add_parser`` + ``run``)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def add_config_args(
    p: argparse.ArgumentParser,
    out_help: str = "run folder (default: <output_dir>/<name> from the config)",
    force_help: str = "move an existing run folder aside instead of failing",
) -> None:
    """``--set a.b=value`` (repeatable), ``--out DIR``, ``--force``: every pipeline takes them."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable; values parsed as YAML)",
    )
    p.add_argument("--out", default=None, help=out_help)
    p.add_argument("--force", action="store_true", help=force_help)


def add_predict_args(p: argparse.ArgumentParser, inputs_help: str, model_help: str | None = None) -> None:
    """The arguments every predict command takes: ``--model``, inputs, ``--out``, ``--split``, ``--device``,
    ``--force`` (one wording, one set of choices)."""
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help=model_help or "run folder of a trained model (from 'medseg train')",
    )
    p.add_argument("inputs", nargs="+", type=Path, help=inputs_help)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "validation", "training", "all"],  # medseg.tasks.inputs.SPLITS (kept light: no import)
        help="which list of a datalist JSON input to take (default: test; all = training, validation, test)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
    p.add_argument("--force", action="store_true", help="move an existing output folder aside instead of failing")


def predict_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of the task function that :func:`add_predict_args` collected."""
    return {
        "model_dir": args.model,
        "inputs": args.inputs,
        "out": args.out,
        "split": args.split,
        "device": args.device,
        "force": args.force,
    }


def print_summary(out: Path, summary: Mapping[str, Any] | None) -> None:
    """Print a predict command's summary: the output folder, then one line per entry (dicts one per item)."""
    print(f"outputs: {out}")
    for k, v in (summary or {}).items():
        if isinstance(v, Mapping) and v and all(isinstance(x, Mapping | str) for x in v.values()):
            print(f"  {k}:")
            for name, item in v.items():
                print(f"    {name}: {item}")
        else:
            print(f"  {k}: {v}")


def task_function(task: str, func: str) -> Callable[..., Any]:
    """``medseg.tasks.<task>.<func>``, imported when a command runs.

    Command modules are imported to build the parser; the tasks (and torch, MONAI) only when a
    command runs, so ``medseg --help`` and a config error answer at once.
    """
    fn: Callable[..., Any] = getattr(importlib.import_module(f"medseg.tasks.{task}"), func)
    return fn
