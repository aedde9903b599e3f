"""``medseg classify --model RUN_DIR INPUT... --out DIR``: classify images with a trained classifier."""

from __future__ import annotations

import argparse

from medseg.cli_commands import (
    add_predict_args,
    predict_kwargs,
    run_lesion_classifier,
    run_predict,
    task_function,
)


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
    g = p.add_argument_group(
        "lesions in volumes",
        "with --lesions, the inputs are 'medseg segment' output folders (or datalists of image + label): each "
        "label map is split into lesions, each lesion is cropped and classified by a classifier trained with "
        "volume: (see docs/lesions.md); OUT/lesions.csv holds one row per lesion",
    )
    g.add_argument(
        "--lesions",
        nargs="*",
        default=None,
        metavar="CLASS",
        help="classify lesions: the label values that are lesions (none given: every non-zero value)",
    )
    g.add_argument("--min-lesion-ml", type=float, default=0.0, help="drop lesions smaller than this (mL)")
    g.add_argument("--no-cam", action="store_true", help="skip the per-lesion 3D Grad-CAM")
    g.add_argument(
        "--dicom-seg",
        action="store_true",
        help="write a DICOM SEG per DICOM case: one segment per lesion, its class in the segment description",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.lesions is not None:
        return run_lesion_classifier(
            args,
            min_ml=args.min_lesion_ml,
            operating_point=args.operating_point,
            cam=not args.no_cam,
            dicom_seg=args.dicom_seg,
        )
    fn = task_function("classification", "classify")
    return run_predict(args, lambda: fn(**predict_kwargs(args), operating_point=args.operating_point))
