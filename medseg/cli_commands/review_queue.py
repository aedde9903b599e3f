"""``medseg review-queue PRED_DIR [--feedback FILE]``: which cases to correct first."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "review-queue",
        help="order a prediction folder's cases for correction (feedback, OOD, uncertainty)",
        description="Read PRED_DIR's case table (segment/detect/classify.json) and the report's exported feedback "
        "(--feedback, default PRED_DIR/feedback.json if present); write PRED_DIR/review_queue.csv: cases marked "
        "'needs correction' first, then out-of-distribution cases, then by review score (uncertainty over the "
        "calibrated threshold); accepted cases last. See docs/review.md.",
    )
    p.add_argument("pred_dir", type=Path, help="output folder of medseg segment / detect / classify")
    p.add_argument("--feedback", type=Path, default=None, help="feedback.json / feedback.csv exported from report.html")
    p.add_argument("--out", type=Path, default=None, help="queue CSV (default PRED_DIR/review_queue.csv)")
    p.add_argument("--top", type=int, default=20, help="print the first N cases (default 20)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medseg.tasks.review_queue import review_queue  # imported when the command runs

    queue = review_queue(args.pred_dir, args.feedback, args.out)
    for row in queue[: max(args.top, 0)]:
        print(f"{row['rank']:4d}  {row['case_id']}  {row['why']}  (uncertainty {row['uncertainty']})")
    print(f"{len(queue)} cases in {args.out or args.pred_dir / 'review_queue.csv'}")
    return 0
