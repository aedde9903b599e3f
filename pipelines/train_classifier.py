#!/usr/bin/env python
"""Train an image classifier from a YAML config (thin wrapper over ``medseg train``).

python pipelines/train_classifier.py configs/cls_lesions.yaml [--set train.epochs=5] [--out DIR]
"""

import sys

from medseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *(sys.argv[1:] or ["configs/cls_lesions.yaml"])]))
