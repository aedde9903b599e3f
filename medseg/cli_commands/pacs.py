"""``medseg pacs pull|push``: studies from a PACS into folders, results (DICOM SEG) back to the study."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medseg.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pacs",
        help="pull studies from a PACS / push DICOM SEG results back (DIMSE or DICOMweb)",
        description="Talk to a PACS node configured in a YAML nodes file (--nodes or $MEDSEG_PACS_NODES; "
        "credentials and TLS files from environment variables only). See docs/pacs.md.",
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--node", required=True, help="node name in the nodes file")
    common.add_argument("--nodes", type=Path, default=None, help="nodes YAML file (default: $MEDSEG_PACS_NODES)")
    common.add_argument("--via", choices=["dimse", "dicomweb"], default="dimse", help="protocol (default: dimse)")

    pull = verbs.add_parser(
        "pull",
        parents=[common],
        help="retrieve studies into OUT/<study UID>/<series UID>/",
        description="C-FIND + C-GET/C-MOVE (dimse) or QIDO-RS + WADO-RS (dicomweb) of the studies that match; "
        "one folder per series, ready for 'medseg segment'; OUT/pull.json lists them.",
    )
    pull.add_argument("--study", help="StudyInstanceUID")
    pull.add_argument("--accession", help="AccessionNumber")
    pull.add_argument(
        "--query", action="append", default=[], metavar="KEY=VALUE", help="study-level matching key (repeatable)"
    )
    pull.add_argument("--modality", help="only series of this modality (e.g. CT)")
    pull.add_argument("--out", type=Path, required=True, help="destination folder")
    pull.set_defaults(func=run_pull)

    push = verbs.add_parser(
        "push",
        parents=[common],
        help="send DICOM files (a SEG) back by C-STORE / STOW-RS",
        description="Send DICOM files or folders of them (e.g. the .dcm SEGs 'medseg segment' wrote) to the node; "
        "a SEG carries its source's StudyInstanceUID and lands in that study.",
    )
    push.add_argument("files", nargs="+", type=Path, help="DICOM files or folders")
    push.set_defaults(func=run_push)


def _query(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--query takes KEY=VALUE (a DICOM keyword), got {item!r}")
        out[key.strip()] = value
    return out


def run_pull(args: argparse.Namespace) -> int:
    from medseg.pacs import get_node, pull  # imported when the command runs: `medseg --help` stays instant

    node = get_node(args.node, args.nodes)
    pulled = pull(
        node,
        args.out,
        study_uid=args.study,
        accession=args.accession,
        query=_query(args.query),
        modality=args.modality,
        via=args.via,
    )
    for s in pulled:
        print(f"{s.modality or '?':4s} {s.n_instances:5d} instances  {s.folder}")
    print(f"{len(pulled)} series from node {node.name} in {args.out}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from medseg.pacs import get_node, push  # imported when the command runs

    node = get_node(args.node, args.nodes)
    stored = push(node, args.files, via=args.via)
    print(json.dumps({"node": node.name, "via": args.via, "stored": len(stored)}))
    return 0
