"""``medseg detect --model RUN_DIR INPUT... --out DIR [--split test]``: detect cells / mitoses in 2D images.

Per image: ``<stem>_detections.csv`` (x, y, score, class), ``<stem>.geojson`` (QuPath import),
``<stem>_overlay.png``; plus ``counts.csv`` (count and density per mm²) and ``detect_summary.json``.
"""

from __future__ import annotations

import argparse

from medseg.cli_commands import add_predict_args, predict_kwargs, run_predict, task_function


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="detect cells / mitoses in 2D microscopy images",
        description="detect cells / mitoses in 2D microscopy images, with the model of a trained run folder.",
    )
    add_predict_args(
        p,
        "input images (PNG/TIFF/JPEG/BMP, RGB or grayscale), folders of them (searched recursively), "
        "or a datalist JSON (its --split list)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="score threshold (default: the one chosen on the validation images at training)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = task_function("detection", "detect")
    return run_predict(args, lambda: fn(**predict_kwargs(args), threshold=args.threshold))
