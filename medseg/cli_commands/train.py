"""``medseg train CONFIG``: train the task named in the config (segmentation, detection, classification).

With ``data.folds: K`` in the config, ``--fold k|all`` (default: all) trains cross-validation folds
into one parent run folder and prints the per-fold and mean +- sd summary.
"""

from __future__ import annotations

import argparse
import importlib
import math
from pathlib import Path
from typing import Any

from medseg.cli_commands import add_config_args, task_function
from medseg.config import load_config
from medseg.runs import open_run


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train the model described by CONFIG (its 'task' key picks segmentation, "
        "detection, classification or weak_supervision). Writes a run folder with config.yaml, "
        "run.json, checkpoints/, metrics.csv and training_curve.png. With data.folds: K, trains "
        "K cross-validation folds into one parent run folder (fold_0/ ... and cv_summary.csv).",
    )
    p.add_argument("config", type=Path, help="YAML config (see configs/)")
    add_config_args(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the run folder from checkpoints/last.pt (exact resume); "
        "combine with --set train.epochs=N to train past the planned epochs. With folds: finished folds "
        "are skipped, unfinished ones continued",
    )
    p.add_argument(
        "--fold",
        default=None,
        metavar="k|all",
        help="cross-validation (needs data.folds: K): train fold k (0..K-1) or all folds (the default) "
        "into the parent run folder; folds may run on several machines sharing the folder",
    )
    p.set_defaults(func=run)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else str(v)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    folds_k = getattr(getattr(cfg, "data", None), "folds", None)
    if folds_k is not None or args.fold is not None:
        crossval = importlib.import_module("medseg.tasks.crossval")  # heavy (torch): only when a command runs
        folds = crossval.parse_fold(args.fold, folds_k)
        parent = Path(args.out) if args.out is not None else Path(cfg.output_dir) / cfg.name
        out = crossval.train_folds(cfg, parent, folds, resume=args.resume, force=args.force)
        print(f"cross-validation run folder: {out['run_dir']}")
        print(f"  folds finished: {len(out['folds_done'])} of {out['folds']}")
        for name, m in out["metrics"].items():
            per = ", ".join(_fmt(v) for v in m["per_fold"])
            print(f"  {name}: {_fmt(m['mean'])} ± {_fmt(m['sd'])}  (folds: {per})")
        if out.get("quote"):
            print(f"  {out['quote']}")
        return 0
    train = task_function(cfg.task, "train")
    run_ = open_run(cfg, out=args.out, force=args.force, resume=args.resume, command="train")
    with run_:
        summary = train(cfg, run_, resume=args.resume)
    print(f"run folder: {run_.path}")
    for k, v in (summary or {}).items():
        print(f"  {k}: {v}")
    return 0
