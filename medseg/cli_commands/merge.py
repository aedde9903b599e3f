"""``medseg merge SHARD_DIR... --out DIR``: join the output folders of a sharded cohort (``--shard i/n``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli_commands import EXIT_CODES_HELP, print_summary, task_function


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="join the output folders of 'segment/detect/classify/explain --shard i/n' into one",
        description="Join the output folders of a sharded cohort (every shard of one command, run with "
        "--shard i/n on a cluster) into OUT: one <command>.csv/.json with the rows in input order, one "
        "summary in run.json and one report.html. The case outputs stay in the shard folders (their paths "
        "are in the table). Missing or repeated shards are an error.",
    )
    p.add_argument("folders", nargs="+", type=Path, help="the shards' output folders (any order)")
    p.add_argument("--out", type=Path, required=True, help="the merged output folder")
    p.add_argument("--force", action="store_true", help="move an existing output folder aside instead of failing")
    p.epilog = EXIT_CODES_HELP
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    merge = task_function("merge", "merge_shards")
    summary = merge(args.folders, args.out, force=args.force)
    return print_summary(args.out, summary.to_dict())
