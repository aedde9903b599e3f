#!/usr/bin/env python
"""Grad-CAM as a weak localiser on the synthetic lesion set, and weak supervision from it.

Pipeline (:func:`medseg.tasks.weak_supervision.train`, the same code as
``pipelines/weak_supervision.py``): synthetic lesions with image-level labels (benign /
malignant) -> ImageNet EfficientNet-Lite0 fine-tuned on the labels -> Grad-CAM maps -> Otsu
threshold, largest component, intensity refinement -> pseudo-masks -> a 2D U-Net trained on the
pseudo-masks, and the same U-Net with the same budget on the true masks. Masks are used only to
score.

Prints ONE JSON line: value = test Dice of the U-Net trained on pseudo-masks, baseline = test Dice
of the same U-Net trained on the true masks, ratio = value / baseline. Extra keys: pointing game
(and what a centre-point map scores: the lesions are roughly centred, so read the pointing game
with that baseline in mind), Dice / IoU of the thresholded map, deletion AUC (vs random deletion
order), the randomisation sanity check (Adebayo et al. 2018: Spearman rank correlation of the maps
with those of a weight-randomised copy, BatchNorm statistics re-estimated), pseudo-mask Dice.
Goal: ratio >= 0.7 and pointing game >= 0.85 and the sanity check passes (|rho| < 0.5).

    python benchmarks/cam_localisation.py [--quick] [--device cpu] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data and budgets (figures not meaningful)")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="gradcam", choices=["gradcam", "gradcampp"])
    ap.add_argument("--out", type=Path, default=None, help="keep the run folder here (default: a temp folder)")
    ap.add_argument(
        "--classifier-run",
        type=Path,
        default=None,
        help="reuse a classification run trained on the same synthetic lesion set (same seed/size/n)",
    )
    ap.add_argument("--seg-epochs", type=int, default=None, help="segmenter epochs (default 12; quick 2)")
    args = ap.parse_args(argv)

    import logging

    import torch

    from medseg.config import DataSection, ModelSection, WeakSection, WeakSupervisionConfig
    from medseg.config.weak_supervision import WeakTrainSection
    from medseg.engine.device import describe_device, select_device
    from medseg.runs import Run
    from medseg.tasks.weak_supervision import train

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.quick:
        n, size, cls_epochs, seg_epochs = 30, 64, 1, 2
    else:
        n, size, cls_epochs, seg_epochs = 160, 96, 4, 12
    if args.seg_epochs:
        seg_epochs = args.seg_epochs
    cfg = WeakSupervisionConfig(
        name="cam_localisation",
        seed=args.seed,
        device=args.device,
        data=DataSection(synthetic=True, num_cases=n),
        weak=WeakSection(
            method=args.method,
            image_size=size,
            classifier_epochs=cls_epochs,
            refine=True,
            classifier_run=args.classifier_run,
        ),
        model=ModelSection(
            name="unet", spatial_dims=2, in_channels=3, out_channels=2, channels=[16, 32, 64, 128], norm="batch"
        ),
        train=WeakTrainSection(epochs=seg_epochs, batch_size=16, lr=3e-3),
    )
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="cam_localisation_")
        out = Path(tmp.name) / "run"
    else:
        out = args.out
    t0 = time.perf_counter()
    run = Run.create(out, cfg, force=True, command="benchmark cam_localisation")
    with run:
        r = train(cfg, run)
    dev = select_device(args.device)
    ratio = r["dice_ratio"]
    met = bool(ratio is not None and ratio >= 0.7 and r["pointing_game"] >= 0.85 and r["randomisation_passed"])
    line = {
        "benchmark": "cam_localisation",
        "metric": "test_dice_unet_on_cam_pseudo_masks",
        "value": r["dice_weak"],
        "unit": "dice",
        "baseline": "same U-Net, same budget, trained on the true masks",
        "baseline_value": r["dice_full"],
        "ratio": ratio,
        "goal": "ratio >= 0.7 and pointing_game >= 0.85 and randomisation_passed",
        "met": met,
        "device": describe_device(dev),
        "pointing_game": r["pointing_game"],
        "pointing_game_centre_baseline": r["pointing_game_centre_baseline"],
        "cam_dice": r["cam_dice"],
        "cam_iou": r["cam_iou"],
        "deletion_auc": r["deletion_auc"],
        "deletion_auc_random_order": r["deletion_auc_random"],
        "randomisation_spearman": r["randomisation_spearman"],
        "randomisation_spearman_abs": r["randomisation_spearman_abs"],
        "randomisation_passed": r["randomisation_passed"],
        "pseudo_mask_dice": r["pseudo_mask_dice"],
        "cam_method": r["cam_method"],
        "cam_layer": r["cam_layer"],
        "n_fit_images": r["n_fit"],
        "n_test_images": r["n_test"],
        "image_size": r["image_size"],
        "quick": args.quick,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(line), flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
