"""``medseg detect --model RUN_DIR INPUT... --out DIR [--split test]``: detect cells / mitoses in 2D images.

Per image: ``<stem>_detections.csv`` (x, y, score, class), ``<stem>.geojson`` (QuPath import),
``<stem>_overlay.png``; plus ``counts.csv`` (count and density per mm²) and ``detect_summary.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli_commands import task_function


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="detect cells / mitoses in 2D microscopy images",
        description="detect cells / mitoses in 2D microscopy images, with the model of a trained run folder.",
    )
    p.add_argument("--model", type=Path, required=True, help="run folder of a trained model (from 'medseg train')")
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        help="input images (PNG/TIFF/JPEG/BMP, RGB or grayscale), folders of them (searched recursively), "
        "or a datalist JSON (its --split list)",
    )
    p.add_argument(
        "--split",
        default="test",
        metavar="training|validation|test|all",
        help="which list of a datalist JSON to detect on (default: test; all = the three in that order)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
    p.add_argument("--force", action="store_true", help="move an existing output folder aside instead of failing")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="score threshold (default: the one chosen on the validation images at training)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = task_function("detection", "detect")
    summary = fn(
        model_dir=args.model,
        inputs=args.inputs,
        out=args.out,
        device=args.device,
        force=args.force,
        threshold=args.threshold,
        split=args.split,
    )
    print(f"outputs: {args.out}")
    for k, v in (summary or {}).items():
        if k == "per_image":
            for name, d in v.items():
                print(f"  {name}: {d['count']} detections, {d['density_per_mm2']:.0f} per mm²")
        elif k == "skipped_files":
            for name, why in v.items():
                print(f"  skipped {name}: {why}")
        else:
            print(f"  {k}: {v}")
    return 0
