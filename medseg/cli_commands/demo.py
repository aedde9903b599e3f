"""``medseg demo``: generate the embedded synthetic data and run every capability end to end."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run every capability on the embedded synthetic data",
        description="Generate the synthetic data (CT phantoms as NIfTI and DICOM, histology, "
        "lesions), train and run each task briefly, and write one HTML review report.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo run folder (default: runs/demo)")
    p.add_argument("--force", action="store_true", help="move an existing demo folder aside")
    p.add_argument("--quick", action="store_true", help="smaller data and shorter training (for tests)")
    p.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="STAGE",
        help="run only this stage (repeatable): data, segmentation, detection, classification, explain",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medseg.demo import run_demo  # imports every task (torch): only when the command runs

    res = run_demo(args.out, quick=args.quick, force=args.force, only=args.only)
    print(f"demo outputs: {res['run_dir']}")
    for name, st in res["stages"].items():
        extra = {k: v for k, v in st.items() if k != "status"}
        print(f"  {name:15s} {st['status']:10s} {extra if extra else ''}")
    if res.get("report"):
        print(f"review report: {res['report']}")
    failed = [k for k, v in res["stages"].items() if v.get("status") == "failed"]
    return 1 if failed else 0
