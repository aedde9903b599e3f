"""``medseg lesions LABELS... --out DIR [--classes C...] [--min-ml V]``: per-lesion tables of label maps.

Connected components of the chosen classes of each label map become lesions (id, class, volume in mL,
centroid in voxels and RAS mm, longest 3D and in-plane diameter in mm, bounding box): one
``lesions/<case>_lesions.csv`` per case, ``lesions.csv`` for the cohort, ``lesion_cases.csv`` (one row
per case) and ``report.html``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli_commands import EXIT_CODES_HELP, print_summary, task_function


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lesions",
        help="split label maps into lesions: a per-lesion table (volume, diameters, centroid, bounding box)",
        description="Split label maps (medseg's own or any NIfTI / NRRD / MetaImage / DICOM label map) into "
        "lesion instances: connected components of the chosen classes. Writes OUT/lesions/<case>_lesions.csv, "
        "OUT/lesions.csv (every lesion, case_id first), OUT/lesion_cases.csv (one row per case) and "
        "OUT/report.html. A datalist input takes its entries' 'label' (else 'image').",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("inputs", nargs="+", type=Path, help="label maps, folders of them, or a datalist JSON")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--classes",
        nargs="+",
        default=None,
        metavar="CLASS",
        help="lesion classes: label values, or names from --class-names (default: every non-zero value)",
    )
    p.add_argument(
        "--class-names",
        nargs="+",
        default=None,
        metavar="NAME",
        help="names of the label values 0, 1, 2 ... (e.g. background liver tumour)",
    )
    p.add_argument("--min-ml", type=float, default=0.0, help="drop lesions smaller than this (mL; default 0)")
    p.add_argument(
        "--connectivity",
        type=int,
        default=None,
        choices=[1, 2, 3],
        help="voxel neighbourhood: 1 = faces (6 in 3D), 2 = + edges (18), 3 = + corners (26, the default)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "validation", "training", "all"],
        help="which list of a datalist JSON input to take (default: test)",
    )
    p.add_argument("--force", action="store_true", help="move an existing output folder aside instead of failing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = task_function("lesions", "find_lesions_in_labels")
    summary = fn(
        args.inputs,
        args.out,
        classes=args.classes,
        class_names=args.class_names,
        min_ml=args.min_ml,
        connectivity=args.connectivity,
        split=args.split,
        force=args.force,
    )
    return print_summary(args.out, summary)
