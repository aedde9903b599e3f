"""``medseg evaluate --pred P --ref R [--task ...]``: score predictions against references."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from medseg.cli_commands import EXIT_CODES_HELP, print_summary, task_function


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions against reference labels",
        description="segmentation: Dice, HD95, surface Dice per class and case (folders of label "
        "maps); detection: precision/recall/F1 and AP within a radius (CSV points); "
        "classification: ROC AUC with CI, operating points, calibration (CSV). Writes a new output folder "
        "(never overwritten: --force moves an old one aside) with evaluate.csv/.json (one row per case) and the "
        "task's tables.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("--task", choices=["segmentation", "detection", "classification"], default="segmentation")
    p.add_argument("--pred", type=Path, required=True, help="predictions (folder or CSV)")
    p.add_argument("--ref", type=Path, required=True, help="references (folder or CSV)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <pred>_evaluation beside --pred)")
    p.add_argument("--force", action="store_true", help="move an existing output folder aside instead of failing")
    p.add_argument(
        "--radius", type=float, default=None, help="detection: matching radius in pixels (or µm with --pixel-size)"
    )
    p.add_argument("--pixel-size", type=float, default=None, help="detection: micrometres per pixel")
    p.add_argument(
        "--tolerance-mm", type=float, default=None, help="segmentation: surface Dice tolerance in mm (default 2)"
    )
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    kw: dict[str, Any] = {"pred": args.pred, "ref": args.ref, "out": args.out, "force": args.force}
    per_task = {"detection": ("radius", "pixel_size"), "segmentation": ("tolerance_mm",)}
    own = per_task.get(args.task, ())
    for name in ("radius", "pixel_size", "tolerance_mm"):
        value = getattr(args, name)
        if value is None:
            continue
        if name not in own:
            args.parser.error(f"--{name.replace('_', '-')} is not read by --task {args.task}")
        kw[name] = value
    summary = task_function(args.task, "evaluate")(**kw)
    return print_summary(None, summary)
