#!/usr/bin/env python
"""Transfer learning pays off at small n: ImageNet EfficientNet-Lite0 vs the same net from scratch.

Data: scikit-image's ``lfw_subset`` (200 real 25x25 gray images shipped in the wheel: 100 faces,
100 non-faces). A fixed, stratified test set of 100 images; training sets of n = 50 and n = 100
drawn from the other 100. Images are upsampled to 64 px; the gray stem uses the summed RGB filters.
Both initialisations get the same budget (epochs, batch size, optimiser, LR, augmentation) and the
same engine (:class:`medseg.engine.trainer.Trainer`); the final model is scored (no early stopping).

Prints one JSON line per training-set size: value = pretrained test AUC, baseline = scratch test
AUC, both with stratified-bootstrap 95% CIs. Goal: pretrained beats scratch by >= 0.05 AUC.

    python benchmarks/transfer.py [--quick] [--epochs N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.engine.trainer import Trainer, build_optimizer  # noqa: E402
from medseg.metrics.classification import bootstrap_auc_ci, roc_auc  # noqa: E402
from medseg.models import build_model  # noqa: E402
from medseg.tasks.classification import predict_logits  # noqa: E402
from medseg.tasks.classification.data import ImageLabelDataset  # noqa: E402
from medseg.transforms.classification import augmentation_transforms  # noqa: E402


def load_lfw(size: int) -> tuple[torch.Tensor, np.ndarray]:
    from skimage import data
    from skimage.transform import resize

    x = data.lfw_subset()  # (200, 25, 25) float in [0, 1]; 100 faces then 100 non-faces
    y = np.r_[np.ones(100, int), np.zeros(100, int)]
    up = np.stack([resize(im, (size, size), order=1, anti_aliasing=False) for im in x])
    return torch.from_numpy(np.round(up * 255).astype(np.uint8))[:, None], y


def split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    test, pool = [], []
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        test += idx[:50].tolist()
        pool += idx[50:].tolist()
    return np.array(test), rng.permutation(np.array(pool))


def train_eval(
    x, y, tr_idx, te_idx, pretrained, epochs, size, seed, device
) -> tuple[float, tuple[float, float], float]:
    from monai.transforms import Compose

    torch.manual_seed(seed)
    model = build_model(name="efficientnet_lite0", num_classes=2, in_channels=1, pretrained=pretrained, image_size=size)
    opt = build_optimizer(model.parameters(), "adamw", lr=1e-3, weight_decay=1e-4)
    ds = ImageLabelDataset(x[tr_idx], y[tr_idx], Compose(augmentation_transforms("xray", size)))
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, drop_last=len(ds) > 16)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(m, b, dev):
        return loss_fn(m(b["image"].to(dev)), torch.as_tensor(b["label"]).to(dev))

    t0 = time.perf_counter()
    Trainer(model, opt, loader, step, max_epochs=epochs, seed=seed, device=device, grad_clip=1.0, progress=False).fit()
    secs = time.perf_counter() - t0
    p = torch.softmax(torch.as_tensor(predict_logits(model, x[te_idx], torch.device(device))), 1)[:, 1].numpy()
    return roc_auc(y[te_idx], p), bootstrap_auc_ci(y[te_idx], p, n_boot=1000, seed=seed), secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: n=50 only, 2 epochs, 32 px")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per model (default 15; quick 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default=None, help="comma-separated training-set sizes (default 50,100; quick 50)")
    args = ap.parse_args()
    size = 32 if args.quick else 64
    epochs = args.epochs or (2 if args.quick else 15)
    sizes = (50,) if args.quick else (50, 100)
    if args.sizes:
        sizes = tuple(int(v) for v in args.sizes.split(","))
        if any(not 2 <= v <= 100 for v in sizes):
            ap.error("--sizes must lie in 2..100 (the training pool has 100 images)")
    x, y = load_lfw(size)
    te_idx, pool = split(y, args.seed)
    dev = args.device
    desc = "cpu" if dev == "cpu" else dev
    if dev.startswith("cuda") and torch.cuda.is_available():
        desc = f"{dev} ({torch.cuda.get_device_name(0)})"
    else:
        desc = f"cpu ({torch.get_num_threads()} threads)"
    for n in sizes:
        # stratified n-image training set from the pool
        tr = np.r_[pool[y[pool] == 1][: n // 2], pool[y[pool] == 0][: n - n // 2]]
        a_pre, ci_pre, s_pre = train_eval(x, y, tr, te_idx, True, epochs, size, args.seed, dev)
        a_scr, ci_scr, s_scr = train_eval(x, y, tr, te_idx, False, epochs, size, args.seed, dev)
        print(
            json.dumps(
                {
                    "benchmark": "transfer",
                    "metric": f"lfw_faces_test_auc_n{n}",
                    "value": round(a_pre, 4),
                    "unit": "AUC",
                    "baseline": "same EfficientNet-Lite0 from scratch, same budget",
                    "baseline_value": round(a_scr, 4),
                    "ratio": round(a_pre / a_scr, 4) if a_scr > 0 else None,
                    "goal": "value - baseline_value >= 0.05",
                    "met": bool(a_pre - a_scr >= 0.05),
                    "device": desc,
                    "value_ci95": [round(v, 4) for v in ci_pre],
                    "baseline_ci95": [round(v, 4) for v in ci_scr],
                    "n_train": int(n),
                    "n_test": int(len(te_idx)),
                    "epochs": epochs,
                    "image_px": size,
                    "train_seconds": {"pretrained": round(s_pre, 1), "scratch": round(s_scr, 1)},
                    "quick": args.quick,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
