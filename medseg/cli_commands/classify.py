"""``medseg classify --model RUN_DIR INPUT... --out DIR``: classify images with a trained classifier."""

from __future__ import annotations

import argparse

from medseg.cli_commands import add_predict_args, predict_kwargs, run_predict, task_function


def add_parser(sub) -> None:
    p = sub.add_parser(
        "classify",
        help="classify 2D images (e.g. lesions) with a trained classifier",
        description="Classify 2D images (PNG/JPEG/TIFF) with the model of a trained classification run folder. "
        "Writes OUT/predictions.csv (per-image class probabilities, the predicted class at the chosen "
        "operating point, and the threshold) and OUT/skipped.csv for unreadable images.",
    )
    add_predict_args(
        p,
        "image files (PNG/JPEG/TIFF/BMP), folders of them (searched recursively), "
        "or a datalist JSON (its --split list)",
        model_help="run folder of a trained classifier (from 'medseg train')",
    )
    p.add_argument(
        "--operating-point",
        default=None,
        choices=["youden", "high_sensitivity", "high_specificity", "default"],
        help="threshold for the predicted class, chosen on the validation set at training: "
        "high_sensitivity (screening), high_specificity, youden (balanced), default (p >= 0.5); "
        "default: the one set in the training config (operating_points.use)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = task_function("classification", "classify")
    return run_predict(args, lambda: fn(**predict_kwargs(args), operating_point=args.operating_point))
