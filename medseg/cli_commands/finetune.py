"""``medseg finetune --model RUN --corrections DIR``: a new run trained on radiologists' corrections."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli_commands import EXIT_OK, EXIT_SOME_SKIPPED, add_config_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a segmentation run on corrected cases (DICOM SEG, .seg.nrrd, NIfTI)",
        description="Train a new run from RUN's weights and plan on the corrected cases in DIR (label files or SEG "
        "folders named after the cases of the medseg segment output they correct, or DICOM SEGs referencing their "
        "series; or a datalist JSON of image + label), the cases accepted in the report's feedback, and a replay "
        "sample of RUN's training cases. Writes the run folder (run.json and the model card name the parent and "
        "the cases) with finetune.json: Dice before / after on RUN's validation cases and on the corrected cases. "
        "Defaults that differ from RUN's config: train.epochs=20, half its learning rate, no train.max_minutes "
        "(change them with --set). Exit status 1 when some corrections were left out (each listed with why). "
        "See docs/review.md.",
    )
    p.add_argument("--model", type=Path, required=True, help="the segmentation run to start from")
    p.add_argument("--corrections", type=Path, required=True, help="folder of corrected labels, or a datalist JSON")
    p.add_argument(
        "--predictions",
        type=Path,
        default=None,
        help="the medseg segment output the corrections were made on (default: DIR or its parent, "
        "whichever holds segment.json)",
    )
    p.add_argument(
        "--feedback",
        type=Path,
        default=None,
        help="feedback.json / .csv exported from report.html (default: PREDICTIONS/feedback.json if present); "
        "accepted cases are learnt as predicted",
    )
    p.add_argument(
        "--replay",
        type=int,
        default=None,
        metavar="N",
        help="RUN's training cases mixed in so the model does not forget (default: as many as the corrected "
        "cases; 0: none)",
    )
    add_config_args(
        p,
        out_help="new run folder (default: RUN-finetuned beside RUN)",
        force_help="move an existing run folder aside instead of failing",
    )  # --set: the new run's config (defaults: train.epochs=20, train.lr = half RUN's, no max_minutes)
    p.set_defaults(func=run)


def _fmt(d: dict) -> str:
    return "-" if not d else f"{d.get('dice_mean')} ({d.get('cases')} cases)"


def run(args: argparse.Namespace) -> int:
    from medseg.tasks.finetune import finetune  # imported when the command runs: `medseg --help` stays instant

    rec = finetune(
        args.model,
        args.corrections,
        predictions=args.predictions,
        feedback=args.feedback,
        replay=args.replay,
        out=args.out,
        overrides=args.overrides,
        force=args.force,
    )
    kinds = [c["kind"] for c in rec["cases"]]
    print(f"run folder: {rec['run_dir']}")
    print(
        f"  learnt from {kinds.count('corrected')} corrected and {kinds.count('accepted')} accepted case(s) "
        f"+ {len(rec['replay'])} replayed; best epoch {rec['train'].get('best_epoch')}"
    )
    for where, figs in rec["dice"].items():
        where = "corrected cases (trained on)" if where == "corrected_cases" else "parent's validation cases"
        print(f"  Dice on the {where}: before {_fmt(figs['parent'])}, after {_fmt(figs['finetuned'])}")
    for x in rec["left_out"]:
        print(f"  left out: {x['item']}: {x['reason']}")
    return EXIT_SOME_SKIPPED if rec["left_out"] else EXIT_OK
