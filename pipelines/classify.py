#!/usr/bin/env python
"""Classify images with a trained classifier run (thin wrapper over ``medseg classify``).

python pipelines/classify.py --model runs/cls_lesions images/ --out runs/cls_lesions_pred
"""

import sys

from medseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["classify", *sys.argv[1:]]))
