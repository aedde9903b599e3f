#!/usr/bin/env python
"""Weak supervision: segment lesions from image-level labels via Grad-CAM pseudo-masks.

Trains (or reuses) a lesion classifier, turns its Grad-CAM maps into pseudo-masks, trains a 2D
segmenter on them and the same segmenter on the true masks, and reports both test Dice scores
(thin wrapper over ``medseg train`` with ``task: weak_supervision``):

    python pipelines/weak_supervision.py configs/weak_lesions.yaml --out runs/weak_lesions
    python pipelines/weak_supervision.py configs/weak_lesions.yaml --set weak.classifier_run=runs/cls_lesions
"""

import sys

from medseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
