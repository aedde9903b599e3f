#!/usr/bin/env python
"""Segment scans, split the label maps into lesions and classify each lesion (``medseg segment --lesions``
then ``medseg classify --lesions``), in one command.

python pipelines/lesion_pipeline.py --segmenter runs/seg_nodules --classifier runs/cls_nodules \\
    --lesions nodule --out runs/lesions study/CT_series other/*.nii.gz [--dicom-seg] [--min-lesion-ml 0.05]

Writes OUT/segment/ (label maps, segment.csv, lesions.csv of the segmentation, report.html) and
OUT/classify/ (lesions.csv with per-lesion probabilities and operating-point calls, lesion views and
Grad-CAM, per-lesion DICOM SEG with --dicom-seg, report.html with a row per lesion).
Exit status: the worse of the two commands' (0 all ok, 1 some cases skipped, 3 all failed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medseg.cli import main as medseg
from medseg.config import load_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="scans: DICOM series folders, NIfTI files, folders or a datalist")
    ap.add_argument("--segmenter", required=True, help="run folder of the trained segmentation model")
    ap.add_argument("--classifier", required=True, help="run folder of the lesion classifier (trained with volume:)")
    ap.add_argument("--lesions", nargs="+", required=True, metavar="CLASS", help="the segmenter's lesion classes")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--min-lesion-ml", default="0", help="drop lesions smaller than this (mL)")
    ap.add_argument("--dicom-seg", action="store_true", help="per-lesion DICOM SEG for DICOM inputs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--force", action="store_true", help="move existing output folders aside")
    args = ap.parse_args(argv)
    common = ["--device", args.device] + (["--force"] if args.force else [])
    seg_out = args.out / "segment"
    code = medseg(
        ["segment", "--model", args.segmenter, *args.inputs, "--out", str(seg_out), "--lesions", *args.lesions]
        + ["--min-lesion-ml", args.min_lesion_ml, *common]
    )
    if code == 3:
        return code
    # the label maps hold the segmenter's class values: its lesion class names -> values
    names = list(load_config(Path(args.segmenter) / "config.yaml").class_names)
    values = [str(names.index(c)) if c in names else c for c in args.lesions]
    cls = ["classify", "--lesions", *values, "--model", args.classifier, str(seg_out)]
    cls += ["--out", str(args.out / "classify")]
    cls += ["--min-lesion-ml", args.min_lesion_ml, *common] + (["--dicom-seg"] if args.dicom_seg else [])
    return max(code, medseg(cls))


if __name__ == "__main__":
    sys.exit(main())
