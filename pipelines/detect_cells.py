#!/usr/bin/env python
"""Train a cell / mitosis detector from a YAML config, then detect on images and evaluate.

    python pipelines/detect_cells.py train configs/det_nuclei.yaml [--set train.epochs=5] [--out runs/x]
    python pipelines/detect_cells.py detect --model runs/det_nuclei IMAGES... --out runs/det_nuclei_detect
    python pipelines/detect_cells.py evaluate --pred runs/det_nuclei_detect --ref points.csv --radius 3 --pixel-size 0.5

A thin wrapper over ``medseg train|detect|evaluate`` (same options).
"""

import sys

from medseg.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and argv[0] == "evaluate" and "--task" not in argv:
        argv = argv[:1] + ["--task", "detection"] + argv[1:]
    sys.exit(main(argv))
