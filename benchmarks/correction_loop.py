#!/usr/bin/env python
"""Benchmark: the correction loop — does correcting the review queue's first cases help more than random ones?

Set-up (2D CT phantom slices, :func:`_model_selection.shifted_phantoms`; every file written in a
temporary folder):

- a **deliberately weak** parent model: a small 2D U-Net (:func:`_model_selection.seg2d_config`)
  trained on 6 source-domain slices only (validated on 2 more);
- a **pool** of unlabelled cases to choose from, half source domain and half shifted (rotated, lower
  contrast, more noise: another scanner), and a **held-out** test set with the same mix;
- ``medseg segment`` on the pool, then ``medseg review-queue`` (no feedback: out-of-distribution
  cases first, then by review score); the radiologist's corrections are simulated by the ground-truth
  labels of the chosen cases;
- for k = 2, 4, 8: ``medseg.tasks.finetune.finetune`` from the parent on the queue's first k cases,
  and on k cases drawn at random from the pool (``--draws`` seeded draws, mean and spread), with the
  same settings (``--ft-epochs`` epochs, replay of k parent training cases);
- figure: held-out mean Dice (``medseg segment --split test``) after fine-tuning on the queue's
  choice vs. the random choice; goal: the queue's choice is better at k = 4. The parent's held-out
  Dice is printed too.

Usage::

    python benchmarks/correction_loop.py            # k = 2, 4, 8, 3 random draws (~10 min on 2 cores)
    python benchmarks/correction_loop.py --quick    # k = 2, 4, 2 draws, fewer epochs
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_selection import emit, heldout_dice, options, seg2d_config, shifted_phantoms  # noqa: E402

from medseg.cli import main  # noqa: E402
from medseg.runs import Run  # noqa: E402
from medseg.tasks import segmentation as seg  # noqa: E402
from medseg.tasks.finetune import finetune  # noqa: E402
from medseg.tasks.review_queue import review_queue  # noqa: E402
from medseg.tasks.segmentation.files import read_image, write_nifti  # noqa: E402

BENCH = "correction_loop"


def _data(work: Path, pool: int, test: int) -> tuple[Path, list[dict], list[dict]]:
    """Parent datalist (6 + 2 source slices; test = the held-out mix), pool entries, test entries."""
    half_pool, half_test = pool // 2, test // 2
    dl = shifted_phantoms(
        work / "data", n_train=8 + half_pool + half_test, n_val=0, n_test=pool - half_pool + test - half_test
    )
    lists = json.loads(dl.read_text())
    src, shifted = lists["training"], lists["test"]
    parent_train, parent_val = src[:6], src[6:8]
    pool_items = src[8 : 8 + half_pool] + shifted[: pool - half_pool]
    test_items = src[8 + half_pool :] + shifted[pool - half_pool :]
    parent_dl = work / "parent.json"
    parent_dl.write_text(json.dumps({"training": parent_train, "validation": parent_val, "test": test_items}))
    return parent_dl, pool_items, test_items


def _correction(item: dict, folder: Path) -> dict:
    """The radiologist's corrected label, simulated: the ground truth in the model's classes (liver = 1 + 4)."""
    lab = read_image(item["label"])
    arr = np.asarray(lab)[0]
    out = write_nifti(np.isin(arr, (1, 4)).astype(np.uint8), np.asarray(lab.affine), folder / Path(item["label"]).name)
    return {"image": item["image"], "label": str(out)}


def _finetuned_dice(parent: Path, chosen: list[dict], work: Path, name: str, test_dl: Path, epochs: int) -> float:
    folder = work / name
    folder.mkdir(parents=True)
    corr = folder / "corrections.json"
    corr.write_text(json.dumps({"training": [_correction(it, folder) for it in chosen]}))
    rec = finetune(parent, corr, out=folder / "run", overrides=[f"train.epochs={epochs}"])
    return heldout_dice(Path(rec["run_dir"]), test_dl, folder / "pred")


def main_(argv=None) -> int:
    a = options(__doc__, argv, pool=(16, 12), test=(12, 8), draws=(3, 2), ft_epochs=(12, 6))
    ks = [2, 4] if a.quick else [2, 4, 8]
    work = Path(tempfile.mkdtemp(prefix="medseg_corrloop_"))
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    settings = {"pool": a.pool, "test": a.test, "draws": a.draws, "ft_epochs": a.ft_epochs}
    try:
        parent_dl, pool_items, test_items = _data(work, a.pool, a.test)
        cfg = seg2d_config(parent_dl, work, "parent")
        with Run.create(work / "parent", cfg, command="train") as run:
            seg.train(cfg, run)
        parent = work / "parent"
        parent_dice = heldout_dice(parent, parent_dl, work / "parent_pred")
        pool_dl = work / "pool.json"
        pool_dl.write_text(json.dumps({"training": [], "test": [{"image": it["image"]} for it in pool_items]}))
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(
                [
                    "-q",
                    "segment",
                    "--model",
                    str(parent),
                    str(pool_dl),
                    "--out",
                    str(work / "pool_pred"),
                    "--split",
                    "test",
                ]
            )
        if rc not in (0, 1):
            raise RuntimeError("medseg segment failed on the pool")
        order = [r["case_id"] for r in review_queue(work / "pool_pred")]
        by_id = {Path(it["image"]).name.split(".")[0]: it for it in pool_items}
        ranked = [by_id[c] for c in order if c in by_id]
        shifted_ids = {Path(it["image"]).name.split(".")[0] for it in pool_items[a.pool // 2 :]}
        emit(BENCH, "parent_heldout_dice", parent_dice, "Dice", "none", None, "informational", True, "cpu", **settings)
        for k in ks:
            q = _finetuned_dice(parent, ranked[:k], work, f"queue_k{k}", parent_dl, a.ft_epochs)
            rnd = []
            for d in range(a.draws):
                chosen = random.Random(1000 * k + d).sample(pool_items, k)
                rnd.append(_finetuned_dice(parent, chosen, work, f"random_k{k}_d{d}", parent_dl, a.ft_epochs))
            shifted_in_queue = sum(Path(it["image"]).name.split(".")[0] in shifted_ids for it in ranked[:k])
            emit(
                BENCH,
                f"heldout_dice_queue_k{k}",
                q,
                "Dice",
                f"random choice of k={k} (mean of {a.draws} draws)",
                float(np.mean(rnd)),
                "queue > random at k=4" if k == 4 else "informational",
                q > float(np.mean(rnd)) if k == 4 else True,
                "cpu",
                random_draws=[round(x, 4) for x in rnd],
                shifted_cases_chosen_by_queue=shifted_in_queue,
                parent_heldout_dice=round(parent_dice, 4),
                **settings,
            )
        emit(
            BENCH,
            "wall_seconds",
            time.perf_counter() - t0,
            "s",
            "none",
            None,
            "informational",
            True,
            "cpu",
            machine_load_start=round(load0, 2),
            machine_load_end=round(os.getloadavg()[0], 2),
        )
    finally:
        if a.keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
