#!/usr/bin/env python
"""Train a segmentation model from a YAML config (same as ``medseg train CONFIG``).

python pipelines/train_segmentation.py configs/seg_ct_phantom.yaml [--set train.epochs=5] [--out runs/x]
python pipelines/train_segmentation.py configs/seg_ct_phantom.yaml --resume --out runs/x --set train.epochs=120
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from medseg.config import load_config
    from medseg.runs import open_run
    from medseg.tasks.segmentation import train

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: <output_dir>/<name>)")
    p.add_argument("--force", action="store_true", help="move an existing run folder aside")
    p.add_argument("--resume", action="store_true", help="continue the run from checkpoints/last.pt")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_config(a.config, a.overrides)
    run = open_run(cfg, out=a.out, force=a.force, resume=a.resume, command="pipelines/train_segmentation.py")
    with run:
        summary = train(cfg, run, resume=a.resume)
    for k, v in summary.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
