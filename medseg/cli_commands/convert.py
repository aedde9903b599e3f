"""``medseg convert PATH OUT.nii.gz``: a DICOM series (or any loadable image) to NIfTI, with geometry checks."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a DICOM series to NIfTI (with geometry checks)",
        description="Load PATH (DICOM series folder, DICOM file, NIfTI, NRRD / .seg.nrrd, MetaImage .mha/.mhd, "
        "PNG/TIFF) with medseg's geometry checks and write it as NIfTI in RAS+ world coordinates. What pydicom "
        "warns about a file is reported without header values.",
    )
    p.add_argument("path", type=Path, help="DICOM series folder or image file")
    p.add_argument("output", type=Path, help="output .nii or .nii.gz")
    p.add_argument(
        "--series", default=None, help="SeriesInstanceUID (or its index in 'medseg info') when PATH holds several"
    )
    p.add_argument(
        "--resample",
        action="store_true",
        help="interpolate irregular series (missing slices, uneven spacing, gantry tilt) onto a uniform "
        "grid instead of stopping with an error; what was done is printed",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs: `medseg --help` stays instant
    from medseg.io import load, save_nifti
    from medseg.io.safety import visible

    img = load(args.path, series=args.series, resample=args.resample)
    out = save_nifti(img, args.output)
    spacing = "x".join(f"{v:.4g}" for v in img.meta.get("spacing", []))
    print(
        visible(
            f"wrote {out}  channels={img.shape[0]} shape={tuple(img.shape[1:])} spacing={spacing} mm "
            f"orientation={img.meta.get('orientation')}"
        )
    )
    for p in img.meta.get("problems", []):
        print(f"  note: {visible(p)}")
    return 0
