"""``medseg export RUN --format bundle|torchscript|onnx --out DIR``: a run's network for other tools."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained run as a MONAI bundle, TorchScript or ONNX (checked, with its preprocessing)",
        description="Write a MONAI bundle (DIR/configs/inference.json, metadata.json, models/model.pt, docs/README.md; "
        "run it with MONAI's bundle runner), or DIR/model.ts (TorchScript) or DIR/model.onnx (ONNX, checked with "
        "onnxruntime), and "
        "DIR/export.json: class names, preprocessing (orientation, spacing, intensity, crop, patch) and "
        "inference settings, also embedded in the model file. The export is compared with the PyTorch model "
        "on random inputs (max abs logit difference <= 1e-4). A run marked failed is refused. See docs/export.md.",
    )
    p.add_argument("run", type=Path, help="trained run folder")
    p.add_argument("--format", choices=["bundle", "torchscript", "onnx"], required=True, dest="fmt")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medseg.tasks.export import export_model  # imported when the command runs: `medseg --help` stays instant

    meta = export_model(args.run, args.fmt, args.out)
    if args.fmt == "bundle":
        print(f"{args.out}: MONAI bundle, classes {', '.join(meta['class_names'])}; run it with:")
        print(f"  python -m monai.bundle run --config_file {args.out}/configs/inference.json --bundle_root {args.out} "
              "--input_files \"['image.nii.gz']\" --output_dir out")  # fmt: skip
        return 0
    check = meta["check"]
    print(
        f"{args.out / meta['file']}: {args.fmt}, classes {', '.join(meta['class_names'])}; "
        f"max abs logit difference {check['max_abs_logit_diff']:.2g} (tolerance {check['tolerance']:g})"
    )
    return 0
