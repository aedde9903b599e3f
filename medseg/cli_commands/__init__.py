"""CLI subcommands: one module per command (``add_parser`` + ``run``).

Exit codes of the cohort commands (``segment``, ``detect``, ``classify``, ``explain``, ``evaluate``):

- 0: every case ok;
- 1: some cases skipped (the summary, with each skipped case and why, is printed);
- 2: usage or config error (bad option, unreadable config, not a model folder): nothing was run;
- 3: every case failed (or there was none).
"""

from __future__ import annotations

import argparse
import importlib
import os
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


#: the exit codes (see the module docstring)
EXIT_OK, EXIT_SOME_SKIPPED, EXIT_USAGE, EXIT_ALL_FAILED = 0, 1, 2, 3

EXIT_CODES_HELP = (
    "exit status: 0 every case ok, 1 some cases skipped (listed in the summary), "
    "2 usage or config error, 3 every case failed"
)


def _device(value: str) -> str:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (checked here: a typo is a usage error, exit 2)."""
    v = value.strip().lower()
    if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
        return v
    raise argparse.ArgumentTypeError(f"{value!r}: use auto, cpu, cuda or cuda:N (N = GPU number)")


def _shard(value: str) -> Any:
    """``i/n`` -> :class:`medseg.tasks.cohort.Shard` (a malformed value is a usage error, exit 2)."""
    cohort = importlib.import_module("medseg.tasks.cohort")  # only when --shard is given
    try:
        return cohort.parse_shard(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_predict_args(p: argparse.ArgumentParser, inputs_help: str, model_help: str | None = None) -> None:
    """The arguments every predict command takes: ``--model``, inputs, ``--out``, ``--split``, ``--series``,
    ``--ood``, ``--device``, ``--force`` (one wording, one set of choices)."""
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
    p.add_argument(
        "--series",
        default=None,
        metavar="WHICH",
        help="a folder holding several DICOM series: which one, by its index in 'medseg info FOLDER', its "
        "SeriesInstanceUID or its SeriesDescription (localizers and unreadable series are never picked)",
    )
    p.add_argument(
        "--ood",
        default=None,
        choices=["warn", "refuse", "off"],
        help="cases unlike the model's training data (modality, channels, spacing, field of view, "
        "intensities): warn = flag them (default), refuse = skip them, off = no check",
    )
    p.add_argument(
        "--device",
        default="auto",
        type=_device,
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where to run (default: auto = the first GPU when there is one); cuda:N = GPU number N "
        "(see also CUDA_VISIBLE_DEVICES)",
    )
    p.add_argument(
        "--shard",
        default=None,
        type=_shard,
        metavar="i/n",
        help="process only shard i of n (0 <= i < n) of the cases: i, i+n, i+2n ... of the expanded inputs "
        "(e.g. a SLURM array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); join the shards' "
        "folders with 'medseg merge'. Under torchrun every rank takes its shard and rank 0 merges",
    )
    p.add_argument("--force", action="store_true", help="move an existing output folder aside instead of failing")
    p.epilog = EXIT_CODES_HELP


def add_compile_arg(p: argparse.ArgumentParser) -> None:
    """``--compile/--no-compile`` of the commands that run a network through ``medseg.engine.inference``
    (``args.compile``: None = the run's ``infer.compile``)."""
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the network through torch.compile (default: the run's infer.compile): the first case pays the "
        "compilation (tens of seconds on CPU), later windows run faster where it helps (docs/performance.md); "
        "when compiling fails the network runs uncompiled with one warning, same results",
    )


def predict_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of the task function that :func:`add_predict_args` collected
    (``series`` and ``ood`` only when given, so each task keeps its own default)."""
    kw: dict[str, Any] = {
        "model_dir": args.model,
        "inputs": args.inputs,
        "out": args.out,
        "split": args.split,
        "device": args.device,
        "force": args.force,
    }
    for name in ("series", "ood"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    return kw


_LONG = ("per_image", "per_class")


def print_summary(out: Path | None, summary: Mapping[str, Any] | None) -> int:
    """Print a cohort command's summary and return its exit code (see the module docstring).

    One line per entry (dicts one per item); skipped cases are listed one per line with their reason;
    long per-image tables are left to the files (their path is printed).
    """
    summary = dict(summary or {})
    if out is not None:
        print(f"outputs: {out}")
    for k, v in summary.items():
        if k in _LONG and isinstance(v, Mapping) and len(v) > 10:
            print(f"  {k}: {len(v)} entries (see {summary.get('table', 'the table')})")
        elif isinstance(v, Mapping) and v and all(isinstance(x, Mapping | str) for x in v.values()):
            print(f"  {k}:")
            for name, item in v.items():
                print(f"    {name}: {item}")
        else:
            print(f"  {k}: {v}")
    code = summary.get("exit_code")
    if code is None:  # a summary without the cohort keys: judge by the counts
        ok, cases = summary.get("ok"), summary.get("cases")
        code = EXIT_OK if ok is None else EXIT_ALL_FAILED if not ok else EXIT_SOME_SKIPPED if ok != cases else EXIT_OK
    if code == EXIT_SOME_SKIPPED:
        print(f"medseg: {summary.get('skipped')} of {summary.get('cases')} case(s) skipped (exit status 1)")
    elif code == EXIT_ALL_FAILED:
        print(f"medseg: no case succeeded ({summary.get('cases', 0)} given) (exit status 3)")
    return int(code)


def task_function(task: str, func: str) -> Callable[..., Any]:
    """``medseg.tasks.<task>.<func>``, imported when a command runs.

    Command modules are imported to build the parser; the tasks (and torch, MONAI) only when a
    command runs, so ``medseg --help`` and a config error answer at once.
    """
    fn: Callable[..., Any] = getattr(importlib.import_module(f"medseg.tasks.{task}"), func)
    return fn


def run_predict(args: argparse.Namespace, call: Callable[[], Mapping[str, Any] | None]) -> int:
    """Run a predict command (``call`` runs the task with :func:`predict_kwargs`) and print its summary.

    With ``--shard i/n`` only that shard's cases run. Under torchrun (``WORLD_SIZE`` > 1, no ``--shard``)
    rank r of n runs shard r/n into ``<out>.shards/shard-<r>-of-<n>/`` (one GPU per rank with CUDA),
    then rank 0 merges every shard into ``--out`` (:func:`medseg.tasks.merge.merge_shards`).
    """
    cohort = importlib.import_module("medseg.tasks.cohort")  # heavy (torch, MONAI): only when a command runs
    device = importlib.import_module("medseg.engine.device")
    with device.torch_threads(device.thread_budget()):  # the one CPU-thread policy (docs/performance.md)
        return _run_predict(args, call, cohort)


def _run_predict(args: argparse.Namespace, call: Callable[[], Mapping[str, Any] | None], cohort: Any) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or args.shard is not None:
        with cohort.sharding(args.shard):
            summary = call()
        return print_summary(args.out, summary)
    distributed = importlib.import_module("medseg.engine.distributed")
    ctx = distributed.init_from_env(args.device)
    try:
        final = Path(args.out)
        shard_dirs = [Path(f"{final}.shards") / f"shard-{r}-of-{ctx.world_size}" for r in range(ctx.world_size)]
        args.out = shard_dirs[ctx.rank]
        with cohort.sharding(cohort.Shard(ctx.rank, ctx.world_size)):
            call()
        ctx.barrier()
        if not ctx.is_main:  # the rank's cases are in the merged summary (a non-zero exit would stop rank 0)
            return EXIT_OK
        merge = importlib.import_module("medseg.tasks.merge")
        summary = merge.merge_shards(shard_dirs, final, force=args.force)
        return print_summary(final, summary.to_dict())
    finally:
        distributed.shutdown()


def run_lesion_classifier(args: argparse.Namespace, **kw: Any) -> int:
    """``classify --lesions`` / ``explain --lesions``: :func:`medseg.tasks.lesions.classify_lesions` on the
    parsed predict arguments (``--lesions`` values as the lesion classes; none: every non-zero value)."""
    summary = task_function("lesions", "classify_lesions")(
        args.model,
        args.inputs,
        args.out,
        classes=args.lesions or None,
        device=args.device,
        split=args.split,
        force=args.force,
        series=getattr(args, "series", None),
        ood=getattr(args, "ood", None) or "warn",
        **kw,
    )
    return print_summary(args.out, summary)
