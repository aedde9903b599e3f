"""``medseg classify --model RUN_DIR INPUT... --out DIR``: classify lesion images with a trained classifier."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.commands import task_function


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="classify lesion images with a trained classifier",
                       description="classify lesion images with a trained classifier, with the model of a trained run folder.")
    p.add_argument("--model", type=Path, required=True, help="run folder of a trained model (from 'medseg train')")
    p.add_argument("inputs", nargs="+", type=Path, help="input images, series folders or a datalist JSON")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
    p.add_argument("--force", action="store_true", help="move an existing output folder aside instead of failing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = task_function("classification", "classify", "lesion classification")
    summary = fn(model_dir=args.model, inputs=args.inputs, out=args.out, device=args.device, force=args.force)
    print(f"outputs: {args.out}")
    for k, v in (summary or {}).items():
        print(f"  {k}: {v}")
    return 0
