"""Benchmark: nucleus and mitosis detection on held-out synthetic H&E tiles vs scikit-image blob_log.

One run, same held-out images for everything:

* trains medseg's proximity U-Net (nuclei) and mitosis patch CNN with ``configs/det_nuclei.yaml``
  and ``configs/det_mitosis.yaml`` (their CPU time budgets), on the same generated data set;
* tunes the classical baseline a user would pick instead -- :func:`skimage.feature.blob_log` on the
  haematoxylin channel (``rgb2hed``) -- by grid search on the training images (sigma range,
  threshold; for mitoses also a haematoxylin-intensity gate at the blob centre);
* scores both with medseg's one-to-one matching at 3 µm (~half a nucleus diameter);
* measures tiled-inference throughput (megapixels/s) and peak memory on a large tile, against
  whole-image (untiled) inference, each in a fresh subprocess (peak RSS, Linux ``VmHWM``).

Prints one JSON object per line (keys: benchmark, metric, value, unit, baseline, baseline_value,
ratio, goal, met, device). Exits 0 whether or not goals are met. ``--quick``: tiny smoke run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH = "detection"


def emit(metric, value, unit, baseline, baseline_value, goal, met, device, **extra):
    ratio = (value / baseline_value) if (baseline_value not in (None, 0) and value is not None) else None
    print(
        json.dumps(
            {
                "benchmark": BENCH,
                "metric": metric,
                "value": _r(value),
                "unit": unit,
                "baseline": baseline,
                "baseline_value": _r(baseline_value),
                "ratio": _r(ratio),
                "goal": goal,
                "met": bool(met),
                "device": device,
                **extra,
            }
        ),
        flush=True,
    )


def _r(v):
    return None if v is None else round(float(v), 4)


def hematoxylin(img: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2hed
    from skimage.exposure import rescale_intensity

    h = rgb2hed(img)[..., 0]
    return rescale_intensity(h, out_range=(0.0, 1.0))


def blob_points(h: np.ndarray, min_sigma: float, max_sigma: float, threshold: float) -> np.ndarray:
    from skimage.feature import blob_log

    b = blob_log(h, min_sigma=min_sigma, max_sigma=max_sigma, num_sigma=5, threshold=threshold, overlap=0.5)
    return b[:, [1, 0]] if len(b) else np.zeros((0, 2))


def tune_blob_log(cases, refs, radius_px, grid, gates=(None,)):
    """Grid search on the training images; returns (best params, train F1)."""
    from medseg.metrics.detection import detection_scores, pooled_scores

    hs = [hematoxylin(c.image) for c in cases]
    best = (None, -1.0)
    for mn, mx, th in grid:
        if mx <= mn:
            continue
        blobs = [blob_points(h, mn, mx, th) for h in hs]
        for g in gates:
            per = []
            for h, b, r in zip(hs, blobs, refs):
                keep = _gate(h, b, g)
                per.append(detection_scores(b[keep], r, radius_px))
            f1 = pooled_scores(per)["f1"]
            if f1 > best[1]:
                best = ((mn, mx, th, g), f1)
    return best


def _gate(h, b, g):
    if g is None or len(b) == 0:
        return np.ones(len(b), bool)
    from scipy import ndimage as ndi

    hs = ndi.gaussian_filter(h, 1.5)
    ij = np.round(b[:, ::-1]).astype(int)
    return hs[ij[:, 0], ij[:, 1]] >= g


def baseline_f1(cases, refs, radius_px, params):
    from medseg.metrics.detection import detection_scores, pooled_scores

    mn, mx, th, g = params
    per = []
    for c, r in zip(cases, refs):
        h = hematoxylin(c.image)
        b = blob_points(h, mn, mx, th)
        per.append(detection_scores(b[_gate(h, b, g)], r, radius_px))
    return pooled_scores(per)["f1"]


_MEM_SCRIPT = r"""
import json, sys, time, resource
sys.path.insert(0, {root!r})
import numpy as np, torch
from medseg.engine.checkpoint import load_run_model
from medseg.data.histology import histology_image
from medseg.engine.tiling import detect_tiled
from medseg.tasks.detection import DetectionParams, score_map_fn
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
if {threads}:
    torch.set_num_threads({threads})
model, cfg, _ = load_run_model({run!r})
p = DetectionParams.from_config(cfg)
img = histology_image(12345, ({size}, {size})).image
fn = score_map_fn(model, p.method)
fn(img[:64, :64])  # warm-up
try:  # reset the peak-RSS counter (Linux >= 4.0) so VmHWM is the peak of the detection alone
    open('/proc/self/clear_refs', 'w').write('5')
except OSError:
    pass
base = status('VmRSS')
t = time.perf_counter()
tile = {tile} if {tile} > 0 else 10**9
thr = json.load(open({run!r} + '/detection.json'))['threshold']
pts, sc = detect_tiled(fn, img, tile=tile, margin=cfg.infer.tile_margin, min_distance_px=p.min_distance_px,
                       threshold=thr, sigma_px=p.sigma_px)
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "mpix_s": img.shape[0] * img.shape[1] / 1e6 / dt,
                   "peak_mb": status('VmHWM') - base, "n": int(len(pts))}}))
"""


def measure_inference(run_dir: Path, size: int, tile: int, threads: int) -> dict:
    code = _MEM_SCRIPT.format(root=str(ROOT), run=str(run_dir), size=size, tile=tile, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (minutes budget cut, small grid)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for training/inference (default 1: robust on a busy shared CPU, "
        "where 2 OpenMP threads measured ~20x slower per step; 0 = torch's default)",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="keep data and runs here (default: a temp folder)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from medseg.config import load_config
    from medseg.data.histology import CLASS_NAMES, write_histology_dataset
    from medseg.engine.device import describe_device, select_device
    from medseg.metrics.detection import radius_in_pixels
    from medseg.runs import Run
    from medseg.tasks import detection as det

    if args.threads:
        torch.set_num_threads(args.threads)
    device = describe_device(select_device("auto"))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medseg-bench-det-"))
    q = args.quick
    ds = write_histology_dataset(
        work / "data", n_train=4 if q else 16, n_val=2 if q else 6, n_test=2 if q else 8, seed=7, shape=(256, 256)
    )
    content = json.loads(ds.read_text())
    entries = {
        k: [{"image": str((ds.parent / e["image"]).resolve())} for e in content[k]] for k in ("training", "test")
    }
    train_cases = det.load_cases(entries["training"], ds.parent / content["points"], CLASS_NAMES)
    test_cases = det.load_cases(entries["test"], ds.parent / content["points"], CLASS_NAMES)
    radius = radius_in_pixels(3.0, 0.5)

    results = {}
    for key, cfg_name, target in (("nuclei", "det_nuclei.yaml", [0, 1]), ("mitosis", "det_mitosis.yaml", [1])):
        overrides = [
            f"data.datalist={ds}",
            "data.synthetic=false",
            "device=auto",
            f"cpu_threads={args.threads or 'null'}",
        ]
        if q:
            overrides += ["train.epochs=1", "train.steps_per_epoch=3", "train.max_minutes=0.2"]
        cfg = load_config(ROOT / "configs" / cfg_name, overrides)
        run = Run.create(work / f"run_{key}", cfg, force=True, command="benchmark")
        t0 = time.perf_counter()
        with run:
            summary = det.train(cfg, run)
        train_s = time.perf_counter() - t0
        refs_train = [c.points_of(target) for c in train_cases]
        refs_test = [c.points_of(target) for c in test_cases]
        # baseline: blob_log tuned on the training images
        sig = [(1.5, 3, 5), (2, 3, 4)] if q else [(1.5, 2, 3, 4), (3, 4, 5, 6, 8)]
        ths = [0.05, 0.1, 0.2] if q else [0.02, 0.04, 0.06, 0.08, 0.1, 0.14, 0.2, 0.3]
        grid = list(itertools.product(sig[0], sig[1], ths))
        gates = (None,) if key == "nuclei" else ((None, 0.4, 0.6) if q else (None, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8))
        tb = time.perf_counter()
        params, train_f1 = tune_blob_log(train_cases, refs_train, radius, grid, gates)
        tune_s = time.perf_counter() - tb
        base = baseline_f1(test_cases, refs_test, radius, params)
        f1 = summary.get("test_f1")
        goal_abs = 0.90 if key == "nuclei" else 0.75
        # "clearly above the baseline": F1 near 1 leaves little room, so the goal is on the error
        # (1 - F1): medseg must at least halve the baseline's error
        err_ratio = (1 - f1) / max(1 - base, 1e-9) if f1 is not None else None
        emit(
            f"{key}_f1_test",
            f1,
            "F1",
            "skimage blob_log (grid-tuned on training images)",
            base,
            f"value >= {goal_abs} and (1 - value) <= 0.5 * (1 - baseline_value)",
            f1 is not None and f1 >= goal_abs and err_ratio <= 0.5,
            device,
            error_ratio=_r(err_ratio),
            radius_um=3.0,
            test_images=len(test_cases),
            test_objects=int(sum(len(r) for r in refs_test)),
            train_seconds=round(train_s, 1),
            blob_log_params=list(params),
            blob_log_train_f1=round(train_f1, 4),
            blob_log_tune_seconds=round(tune_s, 1),
            test_ap=summary.get("test_ap"),
            torch_threads=args.threads or "default",
        )
        emit(f"{key}_train_seconds", train_s, "s", None, None, "value <= 300", train_s <= 300, device)
        results[key] = run.path

    # throughput + peak memory: tiled vs whole-image inference of the nucleus detector
    size = 768 if q else 2048
    tiled = measure_inference(results["nuclei"], size, tile=512 if not q else 256, threads=args.threads)
    whole = measure_inference(results["nuclei"], size, tile=0, threads=args.threads)
    emit(
        "nuclei_tiled_throughput",
        tiled["mpix_s"],
        "megapixels/s",
        "whole-image inference (no tiles)",
        whole["mpix_s"],
        "ratio >= 0.7",
        tiled["mpix_s"] >= 0.7 * whole["mpix_s"],
        device,
        image_px=size * size,
        detections=tiled["n"],
        detections_whole=whole["n"],
    )
    emit(
        "nuclei_tiled_peak_memory",
        tiled["peak_mb"],
        "MB",
        "whole-image inference (no tiles)",
        whole["peak_mb"],
        "ratio <= 0.5",
        tiled["peak_mb"] <= 0.5 * max(whole["peak_mb"], 1e-9),
        device,
        image_px=size * size,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
