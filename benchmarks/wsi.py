#!/usr/bin/env python
"""Benchmark: detection on a whole slide (OpenSlide, tiles over tissue) vs the level-0 image read into memory.

A synthetic pyramidal tiled TIFF (``medseg.data.slide.write_synthetic_slide``: H&E-like tissue with
known nuclei in an ellipse on glass) is written, a small nucleus detector (proximity U-Net) is trained
for a few steps on synthetic tiles, and each mode runs in its own fresh process:

- ``slide``: ``medseg.tasks.detection.slides.detect_slide`` (OpenSlide regions, Otsu tissue mask,
  tiles with tissue only);
- ``memory`` (baseline): ``tifffile.imread`` of level 0 into memory, then the same detection
  (``detect_slide``: the same tissue mask from the file's low level, the same tiles, tile size and
  margin) reading its tiles from memory instead of from the file. Only where the pixels come from
  differs. (Until 2026-12 the baseline ran every tile, glass included: its throughput ratio of ~2.3
  measured the tissue mask, not the reading, and made the issue's 20k x 20k slide take an hour.)

Figures (one JSON object per line):

- ``tissue_megapixels_per_second``: level-0 megapixels of tissue per second of detection (mask and
  reading included). Goal: ratio >= 1.
- ``peak_memory_increase``: the process's peak resident memory during detection minus its memory
  before (model loaded, libraries imported, one warm-up tile; Linux ``clear_refs`` resets the peak).
  Both modes hold one tile's network activations (~90 MB for 512-px tiles with this U-Net) and what the
  C library's heap keeps of earlier tiles; only the baseline holds level 0 (3 bytes per pixel). Goal:
  ratio <= 0.1 (on the ~20k x 20k slide: the baseline grows with the slide, the slide mode does not).
- ``f1_vs_memory``: F1 of the slide-mode detections against the known nuclei (4 px), baseline the
  in-memory F1 on the same pixels. Goal: equal (|difference| <= 0.005).

``--size N``: level-0 side in pixels (default 20000, the issue's slide: about 10 minutes on 2 cores,
1 thread per mode); ``--quick``: 3072. Exit code 0 whether or not goals are met.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_selection import emit  # noqa: E402  (the benchmarks' one JSON-line writer)

TILE, MARGIN = 512, 32


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _InMemory:
    """Level 0 held in memory, read by slicing; its tissue mask from the file's own pyramid level, the one
    OpenSlide picks (so both modes run the same tiles: only where the pixels come from differs)."""

    def __init__(self, full, path: Path) -> None:
        self.full, self.path, self.shape = full, path, full.shape
        self.level, self.downsample, self.mpp = 0, 1.0, None

    def __getitem__(self, key):
        return self.full[key]

    def read(self, x: int, y: int, w: int, h: int):
        return self.full[y : y + h, x : x + w]

    def thumbnail(self, max_side: int = 1024):
        import tifffile

        from medseg.io.wsi import block_thumbnail

        with tifffile.TiffFile(self.path) as tf:
            levels = tf.series[0].levels
            fine = [lv for lv in levels if max(lv.shape[:2]) >= max_side] or [levels[0]]
            low = fine[-1].asarray() if fine[-1] is not levels[0] else self.full
        return block_thumbnail(lambda x, y, w, h: low[y : y + h, x : x + w], low.shape[:2], max_side)


def _worker(mode: str, slide_path: str, model_dir: str, device: str, threshold: float) -> None:
    """One mode in this (fresh) process; prints {"seconds", "peak_mb", "points"}."""
    import numpy as np
    import tifffile
    import torch

    from medseg.engine.checkpoint import load_run_model
    from medseg.io.wsi import open_slide
    from medseg.tasks.detection.params import DetectionParams
    from medseg.tasks.detection.scoring import score_map_fn
    from medseg.tasks.detection.slides import detect_slide

    torch.set_num_threads(1)
    dev = torch.device(device)
    model, cfg, _ = load_run_model(Path(model_dir), map_location=dev)
    p = DetectionParams.from_config(cfg)
    fn = score_map_fn(model, p.method, dev)
    fn(np.zeros((TILE + 2 * MARGIN, TILE + 2 * MARGIN, 3), np.uint8))  # warm-up outside the measurement
    # the libraries each mode loads (OpenSlide's C library, scikit-image's filters) are loaded before the
    # measurement too: a fixed cost of the process, not memory that grows with the slide
    import openslide  # noqa: F401
    import skimage.color  # noqa: F401
    import skimage.filters  # noqa: F401

    kw = {"tile": TILE, "margin": MARGIN, "min_distance_px": p.min_distance_px, "threshold": threshold}
    kw["sigma_px"] = p.sigma_px
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (Linux)
    before = _rss_mb("VmRSS")
    t0 = time.perf_counter()
    if mode == "slide":
        img = open_slide(slide_path)
        res = detect_slide(fn, img, progress=False, **kw)
        pts, tissue_mp = res.points, res.tissue_megapixels
    else:
        full = tifffile.imread(slide_path)  # level 0 in memory
        res = detect_slide(fn, _InMemory(full, Path(slide_path)), progress=False, **kw)
        pts, tissue_mp = res.points, res.tissue_megapixels
    seconds = time.perf_counter() - t0
    peak = _rss_mb("VmHWM") - before
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "points": np.asarray(pts).tolist(), "tissue_mp": tissue_mp}))


def _train_model(tmp: Path, device: str) -> Path:
    from medseg.config import parse_config
    from medseg.data.histology import write_histology_dataset
    from medseg.runs import Run
    from medseg.tasks import detection as det

    ds = write_histology_dataset(tmp / "data", n_train=4, n_val=2, n_test=1, shape=(128, 128), mitosis_rate=0.05)
    cfg = parse_config(
        {
            "task": "detection",
            "device": device,
            "data": {"datalist": str(ds)},
            "model": {"name": "proximity_unet", "features": [8, 8, 16, 16, 16, 8]},
            "sampling": {"crop_size": 64},
            "cpu_threads": 1,
            "train": {"epochs": 4, "steps_per_epoch": 10, "batch_size": 8, "val_every": 4},
        }
    )
    with Run.create(tmp / "model", cfg) as run:
        det.train(cfg, run)
    return tmp / "model"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--size", type=int, default=None, help="level-0 side in pixels (default 20000)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        mode, slide, model, thr = args.worker
        _worker(mode, slide, model, args.device, float(thr))
        return 0
    import numpy as np

    from medseg.data.slide import write_synthetic_slide
    from medseg.metrics.detection import match_points

    size = args.size or (3072 if args.quick else 20000)
    load = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        slide = write_synthetic_slide(Path(tmp) / "slide.tif", (size, size), pool=8, seed=0)
        write_s = time.perf_counter() - t0
        model = _train_model(Path(tmp), args.device)
        info = json.loads((model / "detection.json").read_text()) if (model / "detection.json").is_file() else {}
        thr = float(info.get("threshold", 0.5))
        out = {}
        for mode in ("slide", "memory"):
            cmd = [
                sys.executable,
                __file__,
                "--device",
                args.device,
                "--worker",
                mode,
                str(slide.path),
                str(model),
                str(thr),
            ]
            r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if r.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{r.stderr[-3000:]}")
            out[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    tissue = out["slide"]["tissue_mp"]
    f1 = {}
    for mode in out:
        pts = np.array(out[mode]["points"]).reshape(-1, 2)
        m = match_points(pts, slide.points, 4.0)
        tp = len(m.pairs)
        f1[mode] = 2 * tp / max(1, len(pts) + len(slide.points))
    extra = {
        "slide_px": size,
        "tissue_megapixels": round(tissue, 2),
        "tile": TILE,
        "load_1min": load,
        "slide_write_seconds": round(write_s, 1),
        "seconds": [round(out["slide"]["seconds"], 1), round(out["memory"]["seconds"], 1)],
    }
    dev = f"{args.device} (1 thread)"
    rate = {k: tissue / out[k]["seconds"] for k in out}
    emit(
        "wsi",
        "tissue_megapixels_per_second",
        rate["slide"],
        "MP/s",
        "level 0 read into memory, the same tissue tiles read from it",
        rate["memory"],
        "ratio >= 1",
        rate["slide"] >= rate["memory"],
        dev,
        **extra,
    )
    mem = {k: max(out[k]["peak_mb"], 0.0) for k in out}
    emit(
        "wsi",
        "peak_memory_increase",
        mem["slide"],
        "MB",
        "level 0 read into memory, the same tissue tiles read from it",
        mem["memory"],
        "ratio <= 0.1",
        mem["slide"] <= 0.1 * mem["memory"],
        dev,
        **extra,
    )
    emit(
        "wsi",
        "f1_vs_memory",
        f1["slide"],
        "F1",
        "in-memory tiled inference on the same pixels",
        f1["memory"],
        "abs(value - baseline_value) <= 0.005",
        abs(f1["slide"] - f1["memory"]) <= 0.005,
        dev,
        **extra,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
