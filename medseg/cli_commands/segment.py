"""``medseg segment --model RUN_DIR INPUT... --out DIR``: segment images with a trained U-Net/FCN.

Sliding-window inference; outputs in the source geometry.
"""

from __future__ import annotations

import argparse

from medseg.cli_commands import add_compile_arg, add_predict_args, predict_kwargs, run_predict, task_function


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment images with a trained U-Net/FCN (sliding window), in the source geometry",
        description="Segment images with the model of a trained run folder (sliding-window inference "
        "with Gaussian blending). Writes uint8 label maps with the input's affine to OUT/labels/, "
        "optional probabilities to OUT/probabilities/, a DICOM SEG per DICOM series to OUT/dicom_seg/, "
        "OUT/segment.csv/.json (one row per case: source, split, status, reason, flags, out-of-distribution "
        "reasons, outputs, per-class volumes in mL, uncertainty, needs_review) and OUT/report.html. A datalist "
        "input gives its 'test' list (--split to choose). A case that cannot be read is skipped with its "
        "reason (its partial outputs removed); the others finish.",
    )
    add_predict_args(
        p,
        "NIfTI files, DICOM series folders, folders of NIfTI files, or an MSD datalist JSON (its --split list)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flip test-time augmentation (default: the run's infer.tta)",
    )
    p.add_argument(
        "--probabilities",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write class probabilities (default: the run's infer.save_probabilities)",
    )
    p.add_argument(
        "--labels-format",
        choices=["auto", "nifti", "nrrd", "seg.nrrd"],
        default="auto",
        help="label map files: auto (a 3D Slicer .seg.nrrd with named segments for NRRD inputs, else NIfTI), "
        "nifti, nrrd (a label volume) or seg.nrrd",
    )
    p.add_argument(
        "--dicom-seg",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write a DICOM SEG per DICOM series input (default); --no-dicom-seg keeps the label maps only, "
        "e.g. for series whose UIDs are damaged (the SEG writer refuses them and fails the case)",
    )
    p.add_argument(
        "--lesions",
        nargs="+",
        default=None,
        metavar="CLASS",
        help="split these classes (names or label values) into lesions: OUT/lesions/<case>_lesions.csv, "
        "OUT/lesions.csv and lesion columns in segment.csv (see 'medseg lesions')",
    )
    p.add_argument(
        "--min-lesion-ml", type=float, default=0.0, help="with --lesions: drop lesions smaller than this (mL)"
    )
    add_compile_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = task_function("segmentation", "segment")
    return run_predict(
        args,
        lambda: fn(
            **predict_kwargs(args),
            tta=args.tta,
            save_probabilities=args.probabilities,
            labels_format=args.labels_format,
            dicom_seg=args.dicom_seg,
            lesions=args.lesions,
            min_lesion_ml=args.min_lesion_ml,
            compile=args.compile,
        ),
    )
