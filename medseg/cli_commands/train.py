"""``medseg train CONFIG``: train the task named in the config (segmentation, detection, classification).

With ``data.folds: K`` in the config, ``--fold k|all`` (default: all) trains cross-validation folds
into one parent run folder and prints the per-fold and mean +- sd summary.

Several processes (DDP): ``torchrun --nproc_per_node N -m medseg train CONFIG`` (or ``medseg train
--gpus N CONFIG``, which starts torchrun for you) trains one model on N ranks; rank 0 creates and
writes the run folder, the other ranks work in ``<run>/.rank<r>/`` (their share of the data cache;
removed at the end) and write nothing else. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from medseg.cli_commands import add_config_args, task_function
from medseg.config import config_hash, load_config
from medseg.runs import Run, open_run


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
    p.add_argument(
        "--gpus",
        type=int,
        default=None,
        metavar="N",
        help="train on N processes (DDP): runs 'torchrun --standalone --nproc_per_node N -m medseg train ...'; "
        "one GPU per process with CUDA (NCCL), else N CPU processes (gloo)",
    )
    p.add_argument(
        "--ddp-timeout",
        type=float,
        default=None,
        metavar="S",
        help="distributed runs: seconds a rank waits for the others before the job fails (default 1800)",
    )
    p.set_defaults(func=run)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else str(v)


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command line of ``medseg <argv>`` on ``nproc`` local ranks (``--gpus`` removed)."""
    rest: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--gpus":
            skip = True
        elif not a.startswith("--gpus="):
            rest.append(a)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, "-m", "medseg", *rest]


def _launch(args: argparse.Namespace) -> int:
    """``medseg train --gpus N``: the same command under torchrun (N ranks on this machine)."""
    if args.gpus < 1:
        print("medseg train: error: --gpus needs N >= 1", file=sys.stderr)
        return 2
    cmd = torchrun_command(args.gpus, list(args.argv))
    print("starting: torchrun " + " ".join(cmd[4:]), flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        print(f"medseg train: the distributed job failed (exit status {rc}); the failing rank's error is above")
    return rc


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)  # a config error stops here, before any rank starts
    if args.gpus is not None and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _launch(args)
    distributed = importlib.import_module("medseg.engine.distributed")  # heavy (torch): only when a command runs
    kw = {} if args.ddp_timeout is None else {"timeout_s": args.ddp_timeout}
    ctx = distributed.init_from_env(getattr(cfg, "device", "auto"), **kw)
    device = importlib.import_module("medseg.engine.device")
    # the one CPU-thread policy (docs/performance.md): cores per local rank, less the loader workers
    workers = int(getattr(getattr(cfg, "data", None), "num_workers", 0) or 0)
    try:
        with device.torch_threads(device.thread_budget(workers)):
            return _run(args, cfg, ctx)
    finally:
        distributed.shutdown()


def _run(args: argparse.Namespace, cfg: Any, ctx: Any) -> int:
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
    if ctx.world_size > 1:
        return _run_rank(args, cfg, ctx, train)
    run_ = open_run(cfg, out=args.out, force=args.force, resume=args.resume, command="train")
    with run_:
        summary = train(cfg, run_, resume=args.resume)
    print(f"run folder: {run_.path}")
    for k, v in (summary or {}).items():
        print(f"  {k}: {v}")
    return 0


def _run_rank(args: argparse.Namespace, cfg: Any, ctx: Any, train: Any) -> int:
    """One rank of a distributed training: rank 0 owns the run folder, the others a scratch folder in it."""
    ctx.check_same({"config": config_hash(cfg), "resume": bool(args.resume), "out": str(args.out)}, "config")
    main_run = None
    found: Any = None
    if ctx.is_main:
        try:
            main_run = open_run(cfg, out=args.out, force=args.force, resume=args.resume, command="train")
            main_run.set(distributed=ctx.describe(), world_size=ctx.world_size)
            found = str(main_run.path)
        except Exception as e:  # noqa: BLE001  every rank must learn that the folder could not be opened
            found = e
    found = ctx.broadcast(found)
    if isinstance(found, BaseException):
        raise found
    if main_run is not None:
        with main_run:
            summary = train(cfg, main_run, resume=args.resume)
        ctx.barrier()
        print(f"run folder: {main_run.path} ({ctx.world_size} processes, {ctx.backend})")
        for k, v in (summary or {}).items():
            print(f"  {k}: {v}")
        return 0
    scratch = Path(found) / f".rank{ctx.rank}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        with Run.create(scratch, cfg, command="train") as run_:
            logging.getLogger("medseg").setLevel(logging.WARNING)  # rank 0 reports progress; the others problems
            train(cfg, run_, resume=args.resume)
        ctx.barrier()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0
