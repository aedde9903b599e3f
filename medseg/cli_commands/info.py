"""``medseg info PATH [--json]``: the series table of a folder / DICOMDIR / zip / image file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "info",
        help="list the image series found under PATH",
        description="Walk PATH (folder, DICOMDIR, zip or single file), group DICOM files by series "
        "and print modality, description, slices, shape, spacing, orientation and problems found. "
        "NIfTI, NRRD (.nrrd, .nhdr, .seg.nrrd), MetaImage (.mha, .mhd) and 2D images are listed one per file; "
        "a file that cannot be read is listed with the reason (never with header values).",
    )
    p.add_argument("path", type=Path, help="folder, DICOMDIR, zip, or a DICOM/NIfTI/NRRD/MetaImage/PNG/TIFF file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medseg.io import discover, format_series_table  # imported when the command runs: `medseg --help` stays instant

    series = discover(args.path)
    if args.json:
        print(json.dumps([s.to_dict() for s in series], indent=2, default=str))
    else:
        print(format_series_table(series))
    return 0
