"""``medseg explain --model RUN_DIR IMAGES... --out DIR``: Grad-CAM / Grad-CAM++ maps."""

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
        "explain",
        help="Grad-CAM / Grad-CAM++ maps of a trained model",
        description="Compute Grad-CAM / Grad-CAM++ maps of a trained run for each input. Classification: "
        "heat-map overlays (cams/<case>_cam.png) and the maps (cams/<case>_cam.npy, aligned with the image). "
        "Segmentation: the map of --target (a class; default the first foreground class) inside its "
        "predicted region, as NIfTI on the image's grid (cams/<case>_cam.nii.gz) with slice heat maps. "
        "Detection: the map of the score around detection --target (an index, 0 = highest score) or of all "
        "detections. Also explain.csv and report.html.",
    )
    add_predict_args(
        p,
        "input images (PNG/JPEG/TIFF/BMP; volumes for segmentation runs), folders of them (searched "
        "recursively), or a datalist JSON (its --split list)",
        model_help="run folder of a trained classification, segmentation or detection model",
    )
    p.add_argument(
        "--method",
        choices=["gradcam", "gradcampp"],
        default="gradcam",
        help="Grad-CAM (Selvaraju et al.) or Grad-CAM++ (Chattopadhyay et al.)",
    )
    p.add_argument(
        "--target",
        default=None,
        help="classification / segmentation: a class name or index (default: the predicted class / the "
        "first foreground class); detection: the index of a detection (default: all detections)",
    )
    p.add_argument(
        "--layer",
        default=None,
        help="target layer name, one of model.named_modules() "
        "(default: the model's, e.g. _blocks.5 for EfficientNet-Lite0)",
    )
    p.add_argument(
        "--lesions",
        nargs="*",
        default=None,
        metavar="CLASS",
        help="lesions in volumes: the inputs are 'medseg segment' output folders (or datalists of image + "
        "label) and the model a classifier trained with volume:; each lesion's 3D Grad-CAM on its crop, "
        "with the pointing game and CAM Dice against the lesion mask (CLASS: the lesion label values; "
        "none given: every non-zero value); see docs/lesions.md",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.lesions is not None:
        return run_lesion_classifier(args, cam=True, method=args.method, command="explain", target=args.target)
    fn = task_function("explain", "explain")
    return run_predict(
        args, lambda: fn(**predict_kwargs(args), method=args.method, target=args.target, layer=args.layer)
    )
