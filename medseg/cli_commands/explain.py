"""``medseg explain --model RUN_DIR IMAGES... --out DIR``: Grad-CAM / Grad-CAM++ maps."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli_commands import task_function


def add_parser(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="Grad-CAM / Grad-CAM++ maps of a trained model",
        description="Compute Grad-CAM / Grad-CAM++ maps of a trained classification run for "
        "each input image; writes heat-map overlays (cams/<case>_cam.png), the maps "
        "(cams/<case>_cam.npy, aligned with the image) and explain.csv. Segmenters and 3D "
        "volumes: use medseg.explain.grad_cam in Python (NIfTI output keeps the affine).",
    )
    p.add_argument("--model", type=Path, required=True, help="run folder of a trained model")
    p.add_argument(
        "inputs", nargs="+", type=Path, help="input images (PNG/JPEG/TIFF), folders of them, or a datalist JSON"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "validation", "training", "all"],  # medseg.tasks.inputs.SPLITS (kept light: no import)
        help="which list of a datalist JSON input to take (default: test; all = training, validation, test)",
    )
    p.add_argument(
        "--method",
        choices=["gradcam", "gradcampp"],
        default="gradcam",
        help="Grad-CAM (Selvaraju et al.) or Grad-CAM++ (Chattopadhyay et al.)",
    )
    p.add_argument("--target", default=None, help="target class name or index (default: predicted class)")
    p.add_argument(
        "--layer",
        default=None,
        help="target layer name, one of model.named_modules() "
        "(default: the model's, e.g. _blocks.5 for EfficientNet-Lite0)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--force", action="store_true", help="move an existing output folder aside instead of failing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = task_function("explain", "explain")
    summary = fn(
        model_dir=args.model,
        inputs=args.inputs,
        out=args.out,
        method=args.method,
        target=args.target,
        layer=args.layer,
        device=args.device,
        force=args.force,
        split=args.split,
    )
    print(f"outputs: {args.out}")
    for k, v in (summary or {}).items():
        print(f"  {k}: {v}")
    return 0
