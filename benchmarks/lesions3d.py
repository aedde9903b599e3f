#!/usr/bin/env python
"""Per-lesion malignancy on CT-like nodule volumes: 2.5D pretrained vs 3D from scratch vs radiomics.

Data: :func:`medseg.data.lesions3d.lesion_ct_volume` nodules (benign round/homogeneous vs malignant
lobulated/spiculated/heterogeneous; size and mean density matched; 20 % atypical), one per volume.
A fixed held-out test set (``--n-test`` nodules, its own seeds) and training sets of n = 60 and
n = 200 nodules (the n = 60 set is the first 60 of the n = 200 one; 25 % of each is held out for
validation, where the 2D task's rules choose nothing here: the final model is scored). Every
nodule becomes the crop medseg's lesion classifier sees (:func:`medseg.tasks.classification.volumes.crop_for`:
40 mm cube, ``--grid`` voxels a side, CT window -1000..400 HU).

Models (same data, same crops, same budget for the two networks: epochs, batch, AdamW, LR, flips):

(a) ``resnet`` depth 10, 3D, from scratch (MONAI), image + lesion-mask channels;
(b) ``efficientnet_lite0_25d`` with ``views: planes``: ImageNet EfficientNet-Lite0 on the three
    central orthogonal planes as RGB (transfer learning in 3D);
(c) radiomics-style logistic regression: volume, surface area and sphericity (scikit-image marching
    cubes), longest diameter / equivalent diameter, intensity mean / sd / entropy / skewness inside
    the mask, standardised, L2-penalised log loss minimised with SciPy (L-BFGS).

Prints one JSON line per training-set size: value = (b)'s test AUC, baseline_value = the better of
(a) and (c), each AUC with a stratified-bootstrap 95 % CI and the gaps. Goal: at n = 60 the
pretrained 2.5D model beats both others.

    python benchmarks/lesions3d.py [--quick] [--epochs N] [--grid G] [--view-size P] [--n-test N] [--sizes 60,200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import optimize
from scipy import stats as sstats
from skimage import measure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.config import LesionVolumeSection  # noqa: E402
from medseg.data.lesions3d import lesion_ct_volume  # noqa: E402
from medseg.engine.trainer import Trainer, build_optimizer  # noqa: E402
from medseg.metrics.classification import bootstrap_auc_ci, roc_auc  # noqa: E402
from medseg.metrics.lesions import find_lesions  # noqa: E402
from medseg.models import build_model  # noqa: E402
from medseg.tasks.classification import predict_logits  # noqa: E402
from medseg.tasks.classification.data import ImageLabelDataset  # noqa: E402
from medseg.tasks.classification.volumes import crop_for, volume_augmentation  # noqa: E402


def make_set(n: int, seed: int, vol: LesionVolumeSection, atypical: float = 0.2) -> dict[str, Any]:
    """``n`` nodules (balanced): crops ``(n, 2, G, G, G)`` uint8 (image, mask), radiomics features, labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)])
    aty = rng.random(n) < atypical
    crops, feats = [], []
    for i in range(n):
        v = lesion_ct_volume(seed * 100003 + i, [int(labels[i])], atypical=[bool(aty[i])])
        mask = v["instances"] == 1
        crops.append(crop_for(v["image"], v["affine"], mask, vol))
        feats.append(radiomics(v["image"], mask, v["affine"]))
    return {"x": torch.from_numpy(np.stack(crops)), "f": np.array(feats), "y": labels}


def radiomics(image: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> list[float]:
    """Shape and first-order features of one lesion (PyRadiomics-like definitions)."""
    sp = np.linalg.norm(affine[:3, :3], axis=0)
    les = find_lesions(mask.astype(np.uint8), affine)[1][0]
    vol_mm3 = les.volume_ml * 1000.0
    verts, faces, _, _ = measure.marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5, spacing=tuple(sp))
    area = float(measure.mesh_surface_area(verts, faces))
    sphericity = np.pi ** (1 / 3) * (6 * vol_mm3) ** (2 / 3) / area
    elong = les.diameter_3d_mm / (6 * vol_mm3 / np.pi) ** (1 / 3)
    vals = image[mask]
    hist, _ = np.histogram(np.clip(vals, -1000, 400), bins=32, range=(-1000, 400))
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum())
    return [np.log(vol_mm3), area / vol_mm3, sphericity, elong, vals.mean(), vals.std(), entropy, sstats.skew(vals)]


def logistic_regression(f_tr: np.ndarray, y_tr: np.ndarray, f_te: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """Scores of an L2-penalised logistic regression on standardised features (fitted by L-BFGS)."""
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-8
    a, b = (f_tr - mu) / sd, (f_te - mu) / sd
    ys = 2 * y_tr - 1

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = a @ w[1:] + w[0]
        m = ys * z
        lval = np.logaddexp(0, -m).sum() + 0.5 * l2 * (w[1:] ** 2).sum()
        g = -ys / (1 + np.exp(m))
        return float(lval), np.r_[g.sum(), a.T @ g + l2 * w[1:]]

    w = optimize.minimize(loss, np.zeros(a.shape[1] + 1), jac=True, method="L-BFGS-B").x
    return b @ w[1:] + w[0]


def train_net(
    name: str, tr: dict, te: dict, idx: np.ndarray, epochs: int, grid: int, seed: int, dev: str, view_size: int | None
) -> np.ndarray:
    from monai.transforms import Compose

    torch.manual_seed(seed)
    if name == "scratch3d":
        model = build_model("resnet", num_classes=2, in_channels=2, spatial_dims=3, depth=10)
        x_tr, x_te = tr["x"][idx], te["x"]
    else:
        model = build_model(
            "efficientnet_lite0_25d",
            num_classes=2,
            pretrained=True,
            image_size=grid,
            views="planes",
            view_size=view_size,
        )
        x_tr, x_te = tr["x"][idx][:, :1], te["x"][:, :1]
    opt = build_optimizer(model.parameters(), "adamw", lr=1e-3, weight_decay=1e-4)
    aug = Compose(volume_augmentation(LesionVolumeSection()))
    ds = ImageLabelDataset(x_tr, tr["y"][idx], aug)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, drop_last=len(ds) > 16)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(m, b, d):
        return loss_fn(m(b["image"].to(d)), torch.as_tensor(b["label"]).to(d))

    Trainer(model, opt, loader, step, max_epochs=epochs, seed=seed, device=dev, grad_clip=1.0, progress=False).fit()
    return torch.softmax(torch.as_tensor(predict_logits(model, x_te, torch.device(dev))), 1)[:, 1].numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: n = 60 only, 3 epochs, 40 test nodules")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per network (default 20; quick 3)")
    ap.add_argument("--grid", type=int, default=32, help="crop voxels per side (40 mm cube)")
    ap.add_argument("--n-test", type=int, default=None, help="held-out test nodules (default 120; quick 40)")
    ap.add_argument("--sizes", default=None, help="training-set sizes (default 60,200; quick 60)")
    ap.add_argument("--view-size", type=int, default=None, help="2.5D: resize the planes to this size (px)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    epochs = args.epochs or (3 if args.quick else 20)
    n_test = args.n_test or (40 if args.quick else 120)
    sizes = tuple(int(v) for v in args.sizes.split(",")) if args.sizes else ((60,) if args.quick else (60, 200))
    vol = LesionVolumeSection(size_mm=40.0, grid=args.grid, mask_channel=True)
    dev = args.device
    desc = (
        f"{dev} ({torch.cuda.get_device_name(0)})"
        if dev.startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    t0 = time.perf_counter()
    te = make_set(n_test, 7919 + args.seed, vol)
    tr = make_set(max(sizes), 17 + args.seed, vol)
    data_s = time.perf_counter() - t0
    for n in sizes:
        # the first n nodules of the training pool, balanced
        pos, neg = np.flatnonzero(tr["y"] == 1), np.flatnonzero(tr["y"] == 0)
        idx = np.r_[pos[: n // 2], neg[: n - n // 2]]
        aucs: dict[str, float] = {}
        cis: dict[str, list[float]] = {}
        secs: dict[str, float] = {}
        for name in ("pretrained25d", "scratch3d", "radiomics_lr"):
            t1 = time.perf_counter()
            if name == "radiomics_lr":
                score = logistic_regression(tr["f"][idx], tr["y"][idx], te["f"])
            else:
                score = train_net(name, tr, te, idx, epochs, args.grid, args.seed, dev, args.view_size)
            secs[name] = round(time.perf_counter() - t1, 1)
            aucs[name] = round(roc_auc(te["y"], score), 4)
            cis[name] = [round(v, 4) for v in bootstrap_auc_ci(te["y"], score, n_boot=1000, seed=args.seed)]
        best_other = max(("scratch3d", "radiomics_lr"), key=lambda k: aucs[k])
        print(
            json.dumps(
                {
                    "benchmark": "lesions3d",
                    "metric": f"nodule_malignancy_test_auc_n{n}",
                    "value": aucs["pretrained25d"],
                    "unit": "AUC",
                    "baseline": f"best of 3D ResNet10 from scratch and radiomics LR ({best_other})",
                    "baseline_value": aucs[best_other],
                    "ratio": round(aucs["pretrained25d"] / aucs[best_other], 4) if aucs[best_other] > 0 else None,
                    "goal": "at n = 60: 2.5D pretrained AUC > 3D scratch AUC and > radiomics LR AUC",
                    "met": bool(
                        aucs["pretrained25d"] > aucs["scratch3d"] and aucs["pretrained25d"] > aucs["radiomics_lr"]
                    ),
                    "device": desc,
                    "auc": aucs,
                    "auc_ci95": cis,
                    "gap_vs_scratch3d": round(aucs["pretrained25d"] - aucs["scratch3d"], 4),
                    "gap_vs_radiomics_lr": round(aucs["pretrained25d"] - aucs["radiomics_lr"], 4),
                    "n_train": int(n),
                    "n_test": int(n_test),
                    "epochs": epochs,
                    "crop": {"size_mm": vol.size_mm, "grid": vol.grid},
                    "seconds": {**secs, "data": round(data_s, 1)},
                    "quick": args.quick,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
