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
import sys
from collections.abc import Sequence

from medseg import __version__
from medseg.errors import MedsegError

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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = importlib.import_module(f"medseg.cli_commands.{name}")
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("medseg").setLevel(level)
    try:
        return int(args.func(args) or 0)
    except MedsegError as e:
        print(f"medseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
