#!/usr/bin/env python
"""Benchmark: DDP training on CPU — samples/s of 2 processes (gloo, 1 thread each) vs 1 process (1 thread).

Both runs train the 3D phantom U-Net (``configs/seg_ct_phantom.yaml``) for the same wall-time budget
(``train.max_minutes``; the LR follows the budget) through the real command line: ``medseg train`` for
one process, ``medseg train --gpus 2`` (torchrun, gloo) for two. Figures (one JSON object per line):

- ``samples_per_second``: training samples (patches) per second of training time, all ranks together
  (``global_step x batch x samples_per_image x ranks / train_seconds``); baseline: one process.
  Goal: ratio >= 1.6 on an idle 2-core machine.
- ``val_dice_after_equal_time``: best validation Dice of each run after the same budget (higher is
  better; the 2-process run sees more samples in the same time). Goal: ratio >= 1.0.

The machine's 1-minute load average before the runs is printed with each figure (``load_1min``):
on a shared machine other processes take cores and the ratio falls. ``--minutes`` sets the budget
(default 1.0); ``--quick``: 0.25 min and smaller phantoms. Exit code 0 whether or not goals are met.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_selection import emit  # noqa: E402  (the benchmarks' one JSON-line writer)


def _train(out: Path, nproc: int, sets: list[str]) -> dict:
    """Run ``medseg train`` (``--gpus nproc`` when > 1); returns its figures."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "medseg", "-q", "train", str(ROOT / "configs" / "seg_ct_phantom.yaml")]
    cmd += ["--out", str(out)] + [x for s in sets for x in ("--set", s)]
    if nproc > 1:
        cmd += ["--gpus", str(nproc)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"training with {nproc} process(es) failed:\n{r.stderr[-3000:]}")
    summary = json.loads((out / "train_summary.json").read_text())
    state = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["state"]
    return {"summary": summary, "global_step": int(state["global_step"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--minutes", type=float, default=None, help="training budget of each run (default 1.0)")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    args = p.parse_args(argv)
    minutes = args.minutes or (0.25 if args.quick else 1.0)
    batch, spi = 2, 2
    sets = [
        f"device={args.device}",
        f"train.max_minutes={minutes}",
        f"train.batch_size={batch}",
        f"augment.samples_per_image={spi}",
        "train.val_every=1",
    ]
    if args.quick:
        sets += ["synthetic.shape=[32,32,16]", "data.num_cases=8", "plan.max_patch_voxels=8000"]
    load = round(os.getloadavg()[0], 2)
    cores = len(os.sched_getaffinity(0))
    dev = "cpu (gloo, 1 thread per process)" if args.device == "cpu" else f"{args.device} (NCCL)"
    with tempfile.TemporaryDirectory() as tmp:
        one = _train(Path(tmp) / "one", 1, sets)
        two = _train(Path(tmp) / "two", 2, sets)
    rates = {}
    for name, r, n in (("one", one, 1), ("two", two, 2)):
        rates[name] = r["global_step"] * batch * spi * n / max(r["summary"]["train_seconds"], 1e-9)
    extra = {
        "load_1min": load,
        "cores": cores,
        "budget_minutes": minutes,
        "steps": [one["global_step"], two["global_step"]],
    }
    ratio = rates["two"] / rates["one"]
    emit(
        "ddp",
        "samples_per_second",
        rates["two"],
        "samples/s",
        "1 process, 1 thread",
        rates["one"],
        "ratio >= 1.6 (idle 2-core machine)",
        ratio >= 1.6,
        dev,
        **extra,
    )
    d1, d2 = one["summary"]["best_val_dice"], two["summary"]["best_val_dice"]
    emit(
        "ddp",
        "val_dice_after_equal_time",
        d2,
        "Dice",
        "1 process, 1 thread",
        d1,
        "ratio >= 1.0",
        d1 is not None and d2 is not None and d2 >= d1,
        dev,
        **extra,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
