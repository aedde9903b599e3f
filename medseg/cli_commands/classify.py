"""``medseg classify --model RUN_DIR INPUT... --out DIR``: classify images with a trained classifier."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli_commands import task_function


def add_parser(sub) -> None:
    p = sub.add_parser(
        "classify",
        help="classify 2D images (e.g. lesions) with a trained classifier",
        description="Classify 2D images (PNG/JPEG/TIFF) with the model of a trained classification run folder. "
        "Writes OUT/predictions.csv (per-image class probabilities, the predicted class at the chosen "
        "operating point, and the threshold) and OUT/skipped.csv for unreadable images.",
    )
    p.add_argument("--model", type=Path, required=True, help="run folder of a trained classifier (from 'medseg train')")
    p.add_argument("inputs", nargs="+", type=Path, help="image files, folders of images, or a datalist JSON")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "validation", "training", "all"],  # medseg.tasks.inputs.SPLITS (kept light: no import)
        help="which list of a datalist JSON input to take (default: test; all = training, validation, test)",
    )
    p.add_argument(
        "--operating-point",
        default=None,
        choices=["youden", "high_sensitivity", "high_specificity", "default"],
        help="threshold for the predicted class, chosen on the validation set at training: "
        "high_sensitivity (screening), high_specificity, youden (balanced), default (p >= 0.5); "
        "default: the one set in the training config (operating_points.use)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
    p.add_argument("--force", action="store_true", help="move an existing output folder aside instead of failing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = task_function("classification", "classify")
    summary = fn(
        model_dir=args.model,
        inputs=args.inputs,
        out=args.out,
        device=args.device,
        force=args.force,
        split=args.split,
        operating_point=args.operating_point,
    )
    print(f"outputs: {args.out}")
    for k, v in (summary or {}).items():
        print(f"  {k}: {v}")
    return 0
