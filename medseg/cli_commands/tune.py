"""``medseg tune CONFIG --trials N [--storage URL] [--study NAME]``: hyperparameter search on Optuna."""

from __future__ import annotations

import argparse
import importlib
import logging
import math
from pathlib import Path

from medseg.cli_commands import add_config_args
from medseg.config import load_config


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="search hyperparameters / augmentation (Optuna) over the config's tune: space",
        description="Run trials of the config's tune: search space (each trial an ordinary run folder under "
        "<tune folder>/trials/), report validation figures to Optuna and prune poor trials; write trials.csv, "
        "best_config.yaml, plots and report.html into the tune folder (--out; default <output_dir>/<name>-tune; "
        "--force moves it aside and starts a new study). Run it again on the same folder to resume "
        "an interrupted study or to add a worker (several processes or machines share the study through its "
        "storage). Needs Optuna: pip install 'medseg[tune]'.",
    )
    p.add_argument("config", type=Path, help="YAML config with a tune: section (see docs/model-selection.md)")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold (all workers)")
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL shared by the workers (default: sqlite:///<tune folder>/study.db); "
        "on a cluster e.g. postgresql://user:password@host/db",
    )
    p.add_argument("--study", default=None, help="study name (default: the config's name)")
    add_config_args(
        p,
        out_help="tune folder (default: <output_dir>/<name>-tune); an existing one is joined (resume, more workers)",
        force_help="move an existing tune folder aside and start a new study",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the optimisation-history and importance plots")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    # Optuna's own log lines go through Python logging (the CLI's handler), not its coloured default handler
    try:
        import optuna  # optional dependency; medseg.tasks.tune raises the install hint when missing

        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
        logging.getLogger("optuna").setLevel(logging.WARNING)
    except ImportError:
        pass
    tune = importlib.import_module("medseg.tasks.tune").tune  # heavy (torch): only when the command runs
    s = tune(
        cfg,
        args.trials,
        out=args.out,
        storage=args.storage,
        study_name=args.study,
        force=args.force,
        plots=not args.no_plots,
    )
    print(f"tune folder: {s['tune_dir']}")
    print(f"  study: {s['study']} ({s['storage']})")
    print(f"  trials: {', '.join(f'{k.lower()} {v}' for k, v in s['trials'].items())}")
    if "best_value" in s:
        v = s["best_value"]
        print(f"  best: trial {s['best_trial']}, {s['metric']} = {v:.4f}" if math.isfinite(v) else f"  best: {v}")
        for k, x in s["best_params"].items():
            print(f"    {k}: {x}")
        print(f"  best config: {s['best_config']}")
    print(f"  trials table: {s['trials_table']}")
    print(f"  report: {s['report']}")
    return 0
