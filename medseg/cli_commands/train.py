"""``medseg train CONFIG``: train the task named in the config (segmentation, detection, classification)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli_commands import add_config_args, task_function
from medseg.config import load_config
from medseg.runs import open_run


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train the model described by CONFIG (its 'task' key picks segmentation, "
        "detection, classification or weak_supervision). Writes a run folder with config.yaml, "
        "run.json, checkpoints/, metrics.csv and training_curve.png.",
    )
    p.add_argument("config", type=Path, help="YAML config (see configs/)")
    add_config_args(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the run folder from checkpoints/last.pt (exact resume); "
        "combine with --set train.epochs=N to train past the planned epochs",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    train = task_function(cfg.task, "train")
    run_ = open_run(cfg, out=args.out, force=args.force, resume=args.resume, command="train")
    with run_:
        summary = train(cfg, run_, resume=args.resume)
    print(f"run folder: {run_.path}")
    for k, v in (summary or {}).items():
        print(f"  {k}: {v}")
    return 0
