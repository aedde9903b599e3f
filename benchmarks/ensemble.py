#!/usr/bin/env python
"""Benchmark: what a fold ensemble's disagreement says about its errors (cross-validation, K = 3).

A 2D liver U-Net is cross-validated (``data.folds: 3``) on phantom slices of one "scanner"; the
fold ensemble (``load_run_model(PARENT)``) segments held-out slices of the same scanner and of a
shifted one (rotation, lower contrast, more noise). Per voxel (within 3 pixels of the reference or
the prediction) and per case it compares the ensemble's disagreement (mutual information of the
members, :func:`medseg.engine.ensemble.mutual_information`) with the entropy of one fold model (the
uncertainty a single run reports). Figures (goal for each: ratio >= 1, i.e. at least as good):

- ``dice_ensemble_source`` / ``dice_ensemble_shifted``: mean Dice of the ensemble vs the mean
  Dice of its members;
- ``voxel_error_auroc_mi``: AUROC of the members' disagreement for the ensemble's wrong voxels
  vs that of fold 0's entropy for fold 0's wrong voxels (shifted test cases);
- ``voxel_error_auroc_ensemble_entropy``: the same with the entropy of the averaged probability;
- ``case_error_spearman_mi``: rank correlation of a case's mean disagreement (predicted
  foreground) with its 1 - Dice vs the same for fold 0's entropy (all test cases);
- ``case_shift_auroc_mi``: AUROC of a case's mean disagreement for "comes from the shifted
  scanner" vs fold 0's mean entropy (an out-of-distribution flag).

``--quick``: few epochs (checks the script). Exit code 0 whether or not goals are met.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_selection import emit, options, seg2d_config, shifted_phantoms  # noqa: E402


def _entropy(p):
    """Normalised entropy (0..1) over the class axis of probabilities ``(B, K, *S)``."""
    q = p.clamp_min(1e-7)
    return -(q * q.log()).sum(1) / math.log(p.shape[1])


def main(argv=None) -> int:
    a = options(__doc__, argv, epochs=(15, 2))
    epochs = a.epochs

    import torch
    from scipy import ndimage
    from scipy.stats import spearmanr

    from medseg.config import load_config
    from medseg.engine.checkpoint import load_run_model
    from medseg.engine.ensemble import mutual_information
    from medseg.engine.inference import sliding_window_probs
    from medseg.metrics.classification import roc_auc
    from medseg.tasks.crossval import train_folds
    from medseg.tasks.segmentation.evaluate import dice_per_class
    from medseg.tasks.segmentation.train import make_transforms

    tmp = Path(tempfile.mkdtemp(prefix="medseg_bench_ensemble_"))
    try:
        dl = shifted_phantoms(tmp / "data", n_train=15, n_val=0, n_test=8, n_test_source=8, seed=1)
        cfg = seg2d_config(dl, tmp, "cv", data={"folds": 3}, train={"epochs": epochs, "steps_per_epoch": 4})
        train_folds(cfg, tmp / "cv", [0, 1, 2])
        ens, _, ckpt = load_run_model(tmp / "cv")
        plan = ckpt["meta"]["plan"]
        fcfg = load_config(tmp / "cv" / "fold_0" / "config.yaml")
        _, val_tf = make_transforms(fcfg, plan)
        lists = json.loads(dl.read_text())
        cases = [(e, False) for e in lists["test_source"]] + [(e, True) for e in lists["test"]]
        vox = {"err_e": [], "mi": [], "h_e": [], "err_1": [], "h_1": []}
        per_case = []
        for entry, shifted in cases:
            d = val_tf(dict(entry))
            x, ref = d["image"].as_tensor()[None], d["label"].as_tensor()[0].long()
            members = torch.stack(
                [sliding_window_probs(m, x, plan["patch_size"], overlap=0.25)[0] for m in ens.members]
            )  # (M, 1, K, *S)
            mean = members.mean(0)
            pred_e, pred_1 = mean.argmax(1)[0], members[0].argmax(1)[0]
            mi = mutual_information(members)[0]
            h_e, h_1 = _entropy(mean)[0], _entropy(members[0])[0]
            roi = ndimage.binary_dilation(((ref > 0) | (pred_e > 0) | (pred_1 > 0)).numpy(), iterations=3)
            if shifted:
                vox["err_e"].append((pred_e != ref).numpy()[roi])
                vox["err_1"].append((pred_1 != ref).numpy()[roi])
                for k, v in (("mi", mi), ("h_e", h_e), ("h_1", h_1)):
                    vox[k].append(v.numpy()[roi])
            fg_e, fg_1 = (pred_e > 0).numpy(), (pred_1 > 0).numpy()
            per_case.append(
                {
                    "shifted": shifted,
                    "dice_e": float(dice_per_class(pred_e, ref, 2)[0]),
                    "dice_members": [float(dice_per_class(m.argmax(1)[0], ref, 2)[0]) for m in members],
                    "mi": float(mi.numpy()[fg_e].mean()) if fg_e.any() else 0.0,
                    "h_1": float(h_1.numpy()[fg_1].mean()) if fg_1.any() else 0.0,
                }
            )
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    cat = {k: np.concatenate(v) for k, v in vox.items()}
    for domain, flag in (("source", False), ("shifted", True)):
        rows = [c for c in per_case if c["shifted"] == flag]
        de = float(np.nanmean([c["dice_e"] for c in rows]))
        dm = float(np.nanmean([np.nanmean(c["dice_members"]) for c in rows]))
        emit(
            "ensemble",
            f"dice_ensemble_{domain}",
            de,
            "Dice",
            "mean Dice of the 3 fold models",
            dm,
            "ratio >= 1.0",
            de >= dm,
            "cpu",
        )
    a_mi = roc_auc(cat["err_e"].astype(int), cat["mi"])
    a_he = roc_auc(cat["err_e"].astype(int), cat["h_e"])
    a_h1 = roc_auc(cat["err_1"].astype(int), cat["h_1"])
    emit(
        "ensemble",
        "voxel_error_auroc_mi",
        a_mi,
        "AUROC",
        "fold 0 entropy for fold 0 errors",
        a_h1,
        "ratio >= 1.0",
        a_mi >= a_h1,
        "cpu",
    )
    emit(
        "ensemble",
        "voxel_error_auroc_ensemble_entropy",
        a_he,
        "AUROC",
        "fold 0 entropy for fold 0 errors",
        a_h1,
        "ratio >= 1.0",
        a_he >= a_h1,
        "cpu",
    )
    one_minus = [1 - c["dice_e"] for c in per_case]
    one_minus_1 = [1 - c["dice_members"][0] for c in per_case]
    r_mi = float(spearmanr([c["mi"] for c in per_case], one_minus).statistic)
    r_h1 = float(spearmanr([c["h_1"] for c in per_case], one_minus_1).statistic)
    emit(
        "ensemble",
        "case_error_spearman_mi",
        r_mi,
        "Spearman rho",
        "fold 0 entropy vs fold 0 1-Dice",
        r_h1,
        "ratio >= 1.0",
        r_mi >= r_h1,
        "cpu",
    )
    y = [int(c["shifted"]) for c in per_case]
    s_mi = roc_auc(y, [c["mi"] for c in per_case])
    s_h1 = roc_auc(y, [c["h_1"] for c in per_case])
    emit(
        "ensemble",
        "case_shift_auroc_mi",
        s_mi,
        "AUROC",
        "fold 0 mean entropy",
        s_h1,
        "ratio >= 1.0",
        s_mi >= s_h1,
        "cpu",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
