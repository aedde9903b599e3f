"""``medseg explain --model RUN_DIR IMAGES... --out DIR``: Grad-CAM / Grad-CAM++ maps."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.commands import task_function


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM / Grad-CAM++ maps of a trained model",
                       description="Compute class activation maps of a trained classifier (or segmenter) for "
                       "each input image; writes NIfTI maps (3D) and heat-map overlays (PNG).")
    p.add_argument("--model", type=Path, required=True, help="run folder of a trained model")
    p.add_argument("inputs", nargs="+", type=Path, help="input images")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--method", choices=["gradcam", "gradcampp"], default="gradcam")
    p.add_argument("--target", default=None, help="target class name or index (default: predicted class)")
    p.add_argument("--layer", default=None, help="target layer name (default: the model's last conv block)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--force", action="store_true", help="move an existing output folder aside instead of failing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = task_function("explain", "explain", "Grad-CAM explanation")
    summary = fn(model_dir=args.model, inputs=args.inputs, out=args.out, method=args.method,
                 target=args.target, layer=args.layer, device=args.device, force=args.force)
    print(f"outputs: {args.out}")
    for k, v in (summary or {}).items():
        print(f"  {k}: {v}")
    return 0
