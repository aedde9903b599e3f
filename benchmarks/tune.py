#!/usr/bin/env python
"""Benchmark: the same Optuna study with and without pruning (``medseg tune``).

2D liver segmentation on synthetic phantom slices; the search space is the learning rate
(log-uniform 1e-5 .. 1e-1) and the augmentation level. Both studies use the same TPE sampler seed
and trial budget; one prunes with Optuna's median pruner (after 4 unpruned startup trials and one
warm-up epoch), the other runs every trial to the end. Figures:

- ``best_value_pruned``: best validation Dice of the pruned study vs the unpruned one; goal: within
  0.01 (``abs(value - baseline_value) <= 0.01``);
- ``epochs_pruned``: epochs trained by all trials of the pruned study vs the unpruned one; goal:
  ratio <= 0.6.

``--quick``: few trials and epochs (checks the script). Exit code 0 whether or not goals are met.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_selection import emit, options, seg2d_config  # noqa: E402


def main(argv=None) -> int:
    a = options(__doc__, argv, trials=(16, 5), epochs=(10, 3))
    trials, epochs = a.trials, a.epochs
    from medseg.tasks.tune import tune

    space = {
        "train.lr": {"log_uniform": [1.0e-5, 1.0e-1]},
        "augment.level": {"choice": ["light", "default", "heavy"]},
    }
    tmp = Path(tempfile.mkdtemp(prefix="medseg_bench_tune_"))
    out = {}
    try:
        for pruner in ("none", "median"):
            cfg = seg2d_config(
                None,
                tmp,
                f"study_{pruner}",
                train={"epochs": epochs, "steps_per_epoch": 4},
                tune={"space": space, "pruner": pruner, "startup_trials": 4, "warmup_epochs": 1},
            )
            out[pruner] = tune(cfg, trials, out=tmp / pruner, plots=False)
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    best, best0 = out["median"]["best_value"], out["none"]["best_value"]
    emit(
        "tune",
        "best_value_pruned",
        best,
        "Dice",
        "same study without pruning",
        best0,
        "abs(value - baseline_value) <= 0.01",
        abs(best - best0) <= 0.01,
        "cpu",
    )
    ep, ep0 = out["median"]["epochs_trained"], out["none"]["epochs_trained"]
    emit(
        "tune", "epochs_pruned", ep, "epochs", "same study without pruning", ep0, "ratio <= 0.6", ep <= 0.6 * ep0, "cpu"
    )
    print(f"# trials: pruned study {out['median']['trials']}, unpruned {out['none']['trials']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
