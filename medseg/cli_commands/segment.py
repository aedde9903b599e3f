"""``medseg segment --model RUN_DIR INPUT... --out DIR``: segment images with a trained U-Net/FCN.

Sliding-window inference; outputs in the source geometry.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli_commands import task_function


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment images with a trained U-Net/FCN (sliding window), in the source geometry",
        description="Segment images with the model of a trained run folder (sliding-window inference "
        "with Gaussian blending). Writes uint8 label maps with the input's affine to OUT/labels/, "
        "optional probabilities to OUT/probabilities/, a DICOM SEG per DICOM series to OUT/dicom_seg/, "
        "OUT/segmentation.csv/.json with per-class volumes (mL), an uncertainty score and a needs_review "
        "flag per case, and OUT/report.html. A datalist input gives its 'test' list (--split to choose). "
        "A case that cannot be read is reported and skipped; the others finish.",
    )
    p.add_argument("--model", type=Path, required=True, help="run folder of a trained model (from 'medseg train')")
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        help="NIfTI files, DICOM series folders, folders of NIfTI files, or an MSD datalist JSON",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "validation", "training", "all"],
        help="which list of a datalist JSON to segment (default: test; all = training, validation, test)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
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
    p.add_argument("--force", action="store_true", help="move an existing output folder aside instead of failing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = task_function("segmentation", "segment")
    summary = fn(
        model_dir=args.model,
        inputs=args.inputs,
        out=args.out,
        device=args.device,
        force=args.force,
        tta=args.tta,
        save_probabilities=args.probabilities,
        split=args.split,
    )
    print(f"outputs: {args.out}")
    for k, v in (summary or {}).items():
        print(f"  {k}: {v}")
    return 0 if (summary or {}).get("ok", 1) else 1
