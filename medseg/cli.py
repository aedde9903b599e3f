"""``medseg <command>``: one subcommand per pipeline, plus ``demo``.

Each subcommand lives in ``medseg/cli_commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Exit status: 0 success (every case ok); 1 some cases of a cohort command
skipped (the summary lists them); 2 a usage or config error (``MedsegError`` before anything ran:
one clear paragraph); 3 every case of a cohort command failed; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from medseg import __version__
from medseg.errors import MedsegError
from medseg.io.raster import MAX_PIXELS

COMMANDS = [
    "info",
    "convert",
    "train",
    "tune",
    "segment",
    "lesions",
    "detect",
    "classify",
    "explain",
    "evaluate",
    "merge",
    "pacs",
    "export",
    "review-queue",
    "finetune",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg",
        description="medseg: from DICOM/NIfTI/microscopy images to reviewed segmentation, detection "
        "and classification results.",
        epilog="Run 'medseg <command> --help' for a command's options. Docs: docs/ in the repository.",
    )
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument(
        "--max-pixels",
        type=_pixels,
        default=None,
        metavar="N",
        help="largest 2D image read, in pixels (height x width x pages), checked before decoding; "
        f"0: no limit (default {MAX_PIXELS:,}, or $MEDSEG_MAX_PIXELS)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = importlib.import_module(f"medseg.cli_commands.{name.replace('-', '_')}")
        mod.add_parser(sub)
    return parser


def _pixels(text: str) -> int:
    try:
        n = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of pixels: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `medseg train --gpus N` relaunches it under torchrun
    if not args.command:
        parser.print_help()
        return 1
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("medseg").setLevel(level)
    old_limit = os.environ.get("MEDSEG_MAX_PIXELS")
    if args.max_pixels is not None:  # every 2D read of this command (medseg.io.raster.max_pixels_limit)
        os.environ["MEDSEG_MAX_PIXELS"] = str(args.max_pixels)
    try:
        return int(args.func(args) or 0)
    except MedsegError as e:
        print(f"medseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if args.max_pixels is not None:
            if old_limit is None:
                os.environ.pop("MEDSEG_MAX_PIXELS", None)
            else:
                os.environ["MEDSEG_MAX_PIXELS"] = old_limit


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
