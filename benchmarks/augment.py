#!/usr/bin/env python
"""Benchmark: augmentation engineering under a domain shift — presets vs the searched policy.

2D liver segmentation on phantom slices: training cases from one "scanner", validation and test
cases from another (rotated 15-30 degrees, lower soft-tissue contrast, more noise; see
``_model_selection.shifted_phantoms``). The same U-Net (32 x 32 patches of the 48 x 48 slices) is
trained with each augmentation preset (``augment.level`` light / default / heavy) and by a
``medseg tune`` study over the augmentation keys (level, flipped axes, foreground fraction of the
patches, patches per image), chosen on the 8 shifted validation cases. Figures (held-out Dice on
the shifted test cases, ``medseg segment --split test``):

- ``heldout_dice_<preset>``: each preset (baseline: the light preset);
- ``heldout_dice_searched``: the best trial of the study; goal: >= the best preset.

``--quick``: few epochs and trials (checks the script). Exit code 0 whether or not goals are met.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_selection import emit, heldout_dice, options, seg2d_config, shifted_phantoms  # noqa: E402

PRESETS = ("light", "default", "heavy")


def main(argv=None) -> int:
    a = options(__doc__, argv, epochs=(15, 2), trials=(12, 2))
    epochs, trials = a.epochs, a.trials
    from medseg.runs import Run
    from medseg.tasks.segmentation import train
    from medseg.tasks.tune import tune

    tmp = Path(tempfile.mkdtemp(prefix="medseg_bench_augment_"))
    try:
        dl = shifted_phantoms(tmp / "data", n_train=12, n_val=8, n_test=8, seed=0)
        train_kw = {"epochs": epochs, "steps_per_epoch": 4}
        plan = {"max_patch_voxels": 32 * 32}  # patches smaller than the slices: pos_fraction matters
        dice: dict[str, float] = {}
        for level in PRESETS:
            cfg = seg2d_config(dl, tmp, level, train=train_kw, plan=plan, augment={"level": level})
            with Run.create(tmp / level, cfg) as run:
                train(cfg, run)
            dice[level] = heldout_dice(tmp / level, dl, tmp / f"{level}_test")
        space = {
            "augment.level": {"choice": list(PRESETS)},
            "augment.flip_axes": {"choice": [None, [0], [1], [0, 1]]},
            "augment.pos_fraction": {"uniform": [0.3, 0.9]},
            "augment.samples_per_image": {"integer": [1, 4]},
        }
        search = {"space": space, "startup_trials": 5, "pruner": "none"}
        cfg = seg2d_config(dl, tmp, "search", train=train_kw, plan=plan, tune=search)
        s = tune(cfg, trials, out=tmp / "search", plots=False)
        best_dir = tmp / "search" / "trials" / f"trial_{s['best_trial']:04d}"
        dice["searched"] = heldout_dice(best_dir, dl, tmp / "searched_test")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    best_preset = max(PRESETS, key=lambda k: dice[k])
    for level in PRESETS:
        emit(
            "augment",
            f"heldout_dice_{level}",
            dice[level],
            "Dice",
            "preset light",
            dice["light"],
            "none (reference for the searched policy)",
            True,
            "cpu",
        )
    emit(
        "augment",
        "heldout_dice_searched",
        dice["searched"],
        "Dice",
        f"best preset ({best_preset})",
        dice[best_preset],
        "ratio >= 1.0",
        dice["searched"] >= dice[best_preset],
        "cpu",
    )
    print(f"# searched policy: {s.get('best_params')} (validation Dice {s.get('best_value')})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
