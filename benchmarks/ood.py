#!/usr/bin/env python
"""Benchmark: does a segmentation model know its limits? The out-of-distribution flag and the needs-review score.

A 3D U-Net is trained with ``configs/seg_ct_phantom.yaml`` (phantoms at 4 x 4 x 6 mm). It then
segments, through ``medseg segment`` (``--ood warn``), two groups of phantoms with reference labels:

- **in distribution**: new phantoms from the training generator (unseen seeds, same settings);
- **shifted**, in five kinds, each from unseen seeds: *MR-like contrast* (body intensities remapped:
  tissue order inverted, background 0), *4x slice spacing* (24 mm slices over the same field of
  view), *cropped field of view* (the central half in-plane), *noise x3* (45 HU instead of 15) and
  *a different modality* (PET-like uptake values: background 0, body 1-3, liver 2.5).

Figures (one JSON object per line):

- ``ood_flag_rate_shifted``: fraction of shifted cases flagged ``ood``. Goal >= 0.95. Baseline: the
  fraction the old fixed rule (uncertainty > 0.2) flagged.
- ``ood_flag_rate_in_distribution``: fraction of in-distribution cases flagged. Goal <= 0.05.
  Baseline: the old rule's rate on them.
- ``needs_review_rate_in_distribution``: fraction flagged ``needs_review`` (calibrated threshold or
  OOD). Goal <= 0.10 (the 95th percentile of the validation uncertainty flags ~5 %).
- ``dice_in_distribution`` / ``dice_shifted``: mean liver Dice of each group (source geometry);
  ``dice_flagged`` vs ``dice_unflagged``: whether the flagged cases are the ones that fail.
  Goals: in distribution >= 0.85; the flagged cases' Dice below the unflagged ones'.
- ``needs_review_auroc_dice_below_0.8``: AUROC of the ``review_score`` column (uncertainty / the
  calibrated threshold, + 1 when OOD) for "Dice < 0.8" over all cases. Goal >= 0.9. Baseline: the
  AUROC of the uncertainty alone.

``--quick``: a short training and 2 cases per group (checks that the script works).
Exit code 0 whether or not the goals are met.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_selection import emit  # noqa: E402  (the one figure writer)

SHAPE, SPACING = (48, 48, 24), (4.0, 4.0, 6.0)


def _emit(metric, value, unit, baseline, baseline_value, goal, met, device):
    emit("ood", metric, value, unit, baseline, baseline_value, goal, met, device)


def _save(img: np.ndarray, lab: np.ndarray, affine: np.ndarray, folder: Path, name: str) -> dict[str, str]:
    """Write an image (float32) and its liver label map (uint8, lesions merged) as NIfTI; a datalist entry."""
    ip, lp = folder / "images" / f"{name}.nii.gz", folder / "labels" / f"{name}.nii.gz"
    ip.parent.mkdir(parents=True, exist_ok=True)
    lp.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(img.astype(np.float32), affine), str(ip))
    liver = ((lab == 1) | (lab == 4)).astype(np.uint8)
    nib.save(nib.Nifti1Image(liver, affine), str(lp))
    return {"image": str(ip), "label": str(lp)}


def _cases(folder: Path, n: int, seed0: int) -> tuple[list[dict], list[dict]]:
    """(in-distribution entries, shifted entries with their kind)."""
    from medseg.data.synthetic import ct_phantom, phantom_affine

    inside, shifted = [], []
    for i in range(n):
        ph = ct_phantom(seed=seed0 + i, shape=SHAPE, spacing=SPACING)
        inside.append(_save(ph.image, ph.label, ph.affine, folder, f"in_{i:02d}"))
    per_kind = max(1, n // 5)
    for i in range(per_kind):
        s = seed0 + 500 + i
        ph = ct_phantom(seed=s, shape=SHAPE, spacing=SPACING)
        img = ph.image.astype(np.float32)
        body = img > -500
        # MR-like contrast: tissue order inverted (fat bright, organs darker), no air at -1000
        mr = np.where(body, 900.0 - 2.0 * (img - 40.0), 0.0)
        shifted.append({**_save(mr, ph.label, ph.affine, folder, f"mr_{i}"), "kind": "MR-like contrast"})
        # 4x slice spacing: the same field of view in 24 mm slices (every 4th slice of a 6 mm phantom)
        thick = ph.image[:, :, ::4]
        aff = phantom_affine((SPACING[0], SPACING[1], SPACING[2] * 4), ph.origin)
        shifted.append({**_save(thick, ph.label[:, :, ::4], aff, folder, f"thick_{i}"), "kind": "4x slice spacing"})
        # cropped field of view: the central half in-plane
        c0, c1 = SHAPE[0] // 4, 3 * SHAPE[0] // 4
        aff_c = ph.affine.copy()
        aff_c[:3, 3] = (ph.affine @ np.array([c0, c0, 0, 1.0]))[:3]
        crop = _save(ph.image[c0:c1, c0:c1], ph.label[c0:c1, c0:c1], aff_c, folder, f"crop_{i}")
        shifted.append({**crop, "kind": "cropped field of view"})
        # noise x3
        noisy = ct_phantom(seed=s, shape=SHAPE, spacing=SPACING, noise_hu=45.0)
        shifted.append({**_save(noisy.image, noisy.label, noisy.affine, folder, f"noise_{i}"), "kind": "noise x3"})
        # a different modality: PET-like uptake (background 0, body 1-3, liver 2.5, bone 1)
        pet = np.where(body, 1.5, 0.0) + np.where(ph.label == 1, 1.0, 0.0) + np.where(ph.label == 2, 0.6, 0.0)
        pet += np.random.default_rng(s).normal(0.0, 0.15, pet.shape) * body
        shifted.append({**_save(pet, ph.label, ph.affine, folder, f"pet_{i}"), "kind": "different modality"})
    return inside, shifted


def _auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    from medseg.metrics.classification import roc_auc

    if positive.all() or not positive.any():
        return None
    return float(roc_auc(positive.astype(int), score))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cases", type=int, default=20, help="cases per group (shifted: cases / 5 of each kind)")
    a = p.parse_args(argv)

    from medseg.config import load_config
    from medseg.engine.device import describe_device, select_device
    from medseg.runs import Run
    from medseg.tasks import segmentation as seg

    tmp = Path(tempfile.mkdtemp(prefix="medseg_bench_ood_"))
    over = [f"output_dir={tmp}", "name=run", "data.num_cases=24", "data.val_fraction=0.25"]
    if a.quick:
        over += ["data.num_cases=8", "train.epochs=2", "train.max_minutes=0.3", "model.channels=[4,8,16]"]
    cfg = load_config(ROOT / "configs" / "seg_ct_phantom.yaml", over)
    dev = select_device(cfg.device)
    dname = describe_device(dev)
    with Run.create(tmp / "run", cfg, command="train") as run:
        seg.train(cfg, run)
    review = json.loads((tmp / "run" / "run.json").read_text())["review"]
    print(f"# calibrated threshold {review['threshold']} from {review['n_cases']} validation case(s)", file=sys.stderr)

    n = 5 if a.quick else a.cases
    inside, shifted = _cases(tmp / "cases", n, seed0=10_000)
    dl = tmp / "cases" / "dataset.json"
    dl.write_text(json.dumps({"test": [{k: v for k, v in e.items() if k != "kind"} for e in inside + shifted]}))
    seg.segment(tmp / "run", [dl], tmp / "out", device=str(dev))
    rows = {r["case_id"]: r for r in json.loads((tmp / "out" / "segment.json").read_text())}
    kinds = {Path(e["image"]).name.removesuffix(".nii.gz"): e.get("kind", "in distribution") for e in inside + shifted}

    def col(ids, key, default=np.nan):
        return np.array([float(rows[i].get(key, default)) if rows[i]["status"] == "ok" else default for i in ids])

    ids_in = [Path(e["image"]).name.removesuffix(".nii.gz") for e in inside]
    ids_sh = [Path(e["image"]).name.removesuffix(".nii.gz") for e in shifted]
    ood = {i: "ood" in rows[i]["flags"] or rows[i]["status"] != "ok" for i in rows}
    needs = {i: "needs_review" in rows[i]["flags"] or rows[i]["status"] != "ok" for i in rows}
    old_rule = {i: rows[i]["status"] != "ok" or float(rows[i].get("uncertainty", 1.0)) > 0.2 for i in rows}
    for kind in dict.fromkeys(kinds.values()):
        ids = [i for i in rows if kinds[i] == kind]
        flagged = sum(ood[i] for i in ids)
        dice = np.nanmean(col(ids, "dice_liver"))
        why = sorted({r for i in ids for r in rows[i]["ood_reasons"].split("; ") if r})[:2]
        print(f"# {kind}: {flagged}/{len(ids)} flagged, Dice {dice:.3f}; e.g. {why}", file=sys.stderr)

    rate_sh = float(np.mean([ood[i] for i in ids_sh]))
    rate_in = float(np.mean([ood[i] for i in ids_in]))
    _emit(
        "ood_flag_rate_shifted",
        rate_sh,
        "fraction",
        "old rule (uncertainty > 0.2)",
        np.mean([old_rule[i] for i in ids_sh]),
        "value >= 0.95",
        rate_sh >= 0.95,
        dname,
    )
    _emit(
        "ood_flag_rate_in_distribution",
        rate_in,
        "fraction",
        "old rule (uncertainty > 0.2)",
        np.mean([old_rule[i] for i in ids_in]),
        "value <= 0.05",
        rate_in <= 0.05,
        dname,
    )
    nr_in = float(np.mean([needs[i] for i in ids_in]))
    _emit(
        "needs_review_rate_in_distribution",
        nr_in,
        "fraction",
        "old rule (uncertainty > 0.2)",
        np.mean([old_rule[i] for i in ids_in]),
        "value <= 0.10",
        nr_in <= 0.10,
        dname,
    )
    d_in, d_sh = np.nanmean(col(ids_in, "dice_liver")), np.nanmean(col(ids_sh, "dice_liver"))
    _emit("dice_in_distribution", d_in, "Dice", "shifted cases", d_sh, "value >= 0.85", d_in >= 0.85, dname)
    _emit("dice_shifted", d_sh, "Dice", "in-distribution cases", d_in, "value < baseline_value", d_sh < d_in, dname)
    all_ids = ids_in + ids_sh
    dice_all = col(all_ids, "dice_liver", default=0.0)
    fl = np.array([ood[i] for i in all_ids])
    d_fl = float(np.nanmean(dice_all[fl])) if fl.any() else None
    d_un = float(np.nanmean(dice_all[~fl])) if (~fl).any() else None
    _emit(
        "dice_flagged",
        d_fl,
        "Dice",
        "cases not flagged",
        d_un,
        "value < baseline_value",
        d_fl is not None and d_un is not None and d_fl < d_un,
        dname,
    )
    failing = dice_all < 0.8
    score = col(all_ids, "review_score", default=1e6)
    unc = col(all_ids, "uncertainty", default=1e6)
    auc, auc_unc = _auroc(score, failing), _auroc(unc, failing)
    print(f"# cases with Dice < 0.8: {int(failing.sum())} of {len(all_ids)}", file=sys.stderr)
    _emit(
        "needs_review_auroc_dice_below_0.8",
        auc,
        "AUROC",
        "uncertainty alone",
        auc_unc,
        "value >= 0.9",
        auc is not None and auc >= 0.9,
        dname,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
