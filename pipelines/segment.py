#!/usr/bin/env python
"""Segment images with a trained run (same as ``medseg segment``), optionally scoring against references.

python pipelines/segment.py --model runs/seg_ct_phantom --out runs/seg_out data/ct/*.nii.gz path/to/dicom/series
python pipelines/segment.py --model runs/seg_ct_phantom --out runs/seg_out data/dataset.json --ref data/labelsTs
(a datalist gives its "test" list; --split validation|training|all to choose)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from medseg.tasks.segmentation import evaluate, segment

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="trained run folder")
    p.add_argument("inputs", nargs="+", type=Path, help="NIfTI files, DICOM series folders, or a datalist JSON")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "validation", "training", "all"],
        help="which list of a datalist JSON to segment (default: test)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--ref", type=Path, default=None, help="folder of reference label maps: also run evaluate")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    summary = segment(a.model, a.inputs, a.out, device=a.device, force=a.force, tta=a.tta, split=a.split)
    print(json.dumps(summary, indent=2))
    if a.ref is not None:
        print(json.dumps(evaluate(a.out, a.ref, a.out / "evaluation"), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
