#!/usr/bin/env python
"""Run the medseg demo: synthetic data -> every capability -> one HTML review report.

Same as ``medseg demo``; usage: ``python pipelines/demo.py [--out runs/demo] [--quick] [--force]``.
"""

import sys

from medseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
