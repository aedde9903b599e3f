#!/usr/bin/env python
"""Benchmark: one 3D CT volume through the whole ``medseg segment`` path vs the network floor and plain MONAI.

Figures (one JSON object per line):

- ``pipeline_seconds``: ``medseg.tasks.segmentation.segment`` on one NIfTI (read, RAS, resample,
  crop, normalise, Gaussian sliding window, invert to source geometry, post-process, write).
  Baseline: the *floor*, the pure network forward time over the same windows (same count, same
  batch size), measured in this run. Goal: ratio <= 1.3.
- ``pipeline_vs_plain``: the same pipeline time vs a plain script a user would write (MONAI
  LoadImage + Orientation + intensity scaling + ``sliding_window_inference`` at equal settings
  + argmax + nibabel save). Goal: ratio <= 1.0.
- ``plain_default_seconds``: ``sliding_window_inference`` with MONAI's defaults (overlap 0.25,
  constant blending, sw_batch_size 1) on the preprocessed volume, for reference.
- ``peak_memory_mb``: peak resident memory (CPU) or peak CUDA memory of the pipeline.
- ``cohort_vs_plain``: ``--cohort N`` (default 6) volumes through one ``segment`` call (one
  background thread reads the next volume and writes the previous one's outputs while the network
  runs on the current one) vs the plain script run over the same volumes one after the other.
  Goal: ratio <= 1.0. ``--repeats R`` alternates the two R times and reports the medians (the
  figures of a shared machine drift with its load; ``load_1min`` is printed).
- ``cohort_overlap_vs_sequential``: the same cohort with the overlap vs with ``MEDSEG_COHORT_OVERLAP=0``
  (every case read, computed and written in turn), measured in the same alternation. Reference.
- ``compiled_network_seconds`` (``--compile``): the network floor's windows (same count, same batch
  sizes) through the ``torch.compile``d network as ``segment --compile`` runs it (the last, smaller batch
  padded to the full batch) vs the eager network, alternated ``--compile-rounds`` times (sums compared).
  ``compile_seconds``: the first compiled call (the compilation) minus one eager call, reported apart
  and not in ``value``; ``compile_used``: False when compiling failed (eager fallback). Goal: ratio <= 1.0.

The network is an untrained U-Net of the phantom config (timings do not depend on its weights).
``--quick`` uses a small volume. Exit code 0 whether or not goals are met.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _emit(metric, value, unit, baseline, baseline_value, goal, met, device, **extra):
    ratio = (value / baseline_value) if baseline_value else None
    print(
        json.dumps(
            {
                "benchmark": "seg_inference",
                "metric": metric,
                "value": round(value, 4),
                "unit": unit,
                "baseline": baseline,
                "baseline_value": None if baseline_value is None else round(baseline_value, 4),
                "ratio": None if ratio is None else round(ratio, 3),
                "goal": goal,
                "met": met,
                "device": device,
                **extra,
            }
        ),
        flush=True,
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small volume (smoke run)")
    p.add_argument("--device", default="auto")
    p.add_argument("--cohort", type=int, default=6, help="volumes of the cohort figure (0: skip it)")
    p.add_argument("--repeats", type=int, default=1, help="alternations of the cohort runs (medians reported)")
    p.add_argument("--compile", action="store_true", help="add the compiled_network_seconds figure (torch.compile)")
    p.add_argument("--compile-rounds", type=int, default=2, help="alternations of eager and compiled windows")
    a = p.parse_args(argv)

    from monai.inferers import sliding_window_inference
    from monai.transforms import LoadImage, Orientation, ScaleIntensityRange

    from medseg.config import parse_config
    from medseg.data.synthetic import ct_phantom, write_phantom_nifti
    from medseg.engine.checkpoint import save_checkpoint
    from medseg.engine.device import describe_device, select_device
    from medseg.models import build_model
    from medseg.runs import Run
    from medseg.tasks import segmentation as seg

    dev = select_device(a.device)
    dname = describe_device(dev)
    shape, spacing = ((96, 96, 48), (2.0, 2.0, 3.0)) if a.quick else ((256, 256, 160), (1.5, 1.5, 2.0))
    patch = [64, 64, 32] if a.quick else [128, 128, 64]
    tmp = Path(tempfile.mkdtemp(prefix="medseg_bench_"))
    ph = ct_phantom(seed=1, shape=shape, spacing=spacing)
    nii = write_phantom_nifti(ph, tmp / "ct.nii.gz")[0]

    cfg = parse_config(
        {
            "task": "segmentation",
            "class_names": ["background", "liver"],
            "device": "cpu",
            "model": {"name": "unet", "channels": [8, 16, 32, 64]},
            "infer": {"batch_size": 4, "overlap": 0.5},
            "postprocess": {"largest_component": ["liver"]},
        }
    )
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    params = {
        "name": "unet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [8, 16, 32, 64],
        "strides": strides,
    }
    torch.manual_seed(0)
    model = build_model(**params).eval()
    plan = {
        "target_spacing": list(spacing),
        "patch_size": patch,
        "strides": strides,
        "norm": {"clip": [-100.0, 200.0], "mean": 50.0, "std": 60.0},
    }
    run = Run.create(tmp / "model", cfg)
    save_checkpoint(
        run.path / "checkpoints" / "best.pt",
        model=model.state_dict(),
        meta={
            "model_params": params,
            "plan": plan,
            "class_names": ["background", "liver"],
            "modality": "CT",
            "spatial_dims": 3,
        },
        state={},
    )
    run.finish()

    # count the windows the pipeline runs (wrap the forward)
    calls: list[int] = []
    orig_forward = type(model).forward

    def counting(self, x):
        calls.append(int(x.shape[0]))
        return orig_forward(self, x)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    type(model).forward = counting
    try:
        seg.segment(run.path, [nii], tmp / "warm", device=str(dev))  # warm-up (allocators, oneDNN)
        calls.clear()
        t0 = time.perf_counter()
        seg.segment(run.path, [nii], tmp / "out", device=str(dev))
        t_pipe = time.perf_counter() - t0
    finally:
        type(model).forward = orig_forward
    peak = (
        (torch.cuda.max_memory_allocated() / 2**20)
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    n_windows = sum(calls)

    # floor: the same number of windows through the network, same batch sizes, nothing else
    m = model.to(dev)
    xs = {b: torch.randn((b, 1, *patch), device=dev) for b in set(calls)}
    with torch.no_grad():
        m(xs[max(xs)])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in calls:
            m(xs[b])
        if dev.type == "cuda":
            torch.cuda.synchronize()
    t_floor = time.perf_counter() - t0

    import nibabel as nib

    def plain(path: Path, out_path: Path):
        """The plain script a user would write, at equal settings; returns the preprocessed image."""
        img = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
        img = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(img)
        img = ScaleIntensityRange(-100, 200, -1, 1, clip=True)(img)
        with torch.no_grad():
            out = sliding_window_inference(img.as_tensor()[None].to(dev), patch, 4, m, overlap=0.5, mode="gaussian")
        lab = out.argmax(1)[0].to(torch.uint8).cpu().numpy()
        nib.save(nib.Nifti1Image(lab, np.asarray(img.affine)), str(out_path))
        return img

    # plain script at equal settings
    t0 = time.perf_counter()
    img = plain(nii, tmp / "plain.nii.gz")
    t_plain = time.perf_counter() - t0

    # plain MONAI defaults on the preprocessed volume
    t0 = time.perf_counter()
    with torch.no_grad():
        sliding_window_inference(img.as_tensor()[None].to(dev), patch, 1, m)
    t_default = time.perf_counter() - t0

    _emit(
        "pipeline_seconds",
        t_pipe,
        "s",
        f"network forward floor ({n_windows} windows of {patch})",
        t_floor,
        "ratio <= 1.3",
        t_pipe / t_floor <= 1.3,
        dname,
    )
    _emit(
        "pipeline_vs_plain",
        t_pipe,
        "s",
        "plain MONAI script, equal settings (gaussian, overlap 0.5, sw_batch 4)",
        t_plain,
        "ratio <= 1.0",
        t_pipe <= t_plain,
        dname,
    )
    _emit(
        "plain_default_seconds",
        t_default,
        "s",
        "sliding_window_inference defaults (overlap 0.25, sw_batch 1)",
        None,
        "reference",
        True,
        dname,
    )
    _emit("peak_memory_mb", peak, "MiB", "none", None, "reference", True, dname)

    if a.cohort > 0:  # issue 14 item 6: a cohort end to end (reading and writing overlap the network)
        import os
        import statistics

        vols = [write_phantom_nifti(ct_phantom(seed=10 + i, shape=shape, spacing=spacing), tmp / f"c{i}.nii.gz")[0]
                for i in range(a.cohort)]  # fmt: skip
        times: dict[str, list[float]] = {"overlap": [], "sequential": [], "plain": []}
        loads = []
        for r in range(max(1, a.repeats)):
            for mode in ("overlap", "sequential"):
                os.environ["MEDSEG_COHORT_OVERLAP"] = "1" if mode == "overlap" else "0"
                t0 = time.perf_counter()
                seg.segment(run.path, vols, tmp / f"cohort_{mode}{r}", device=str(dev))
                times[mode].append(time.perf_counter() - t0)
            os.environ.pop("MEDSEG_COHORT_OVERLAP", None)
            t0 = time.perf_counter()
            for i, v in enumerate(vols):  # the plain script, one volume after the other
                plain(v, tmp / f"plain{i}.nii.gz")
            times["plain"].append(time.perf_counter() - t0)
            loads.append(os.getloadavg()[0])
        t_cohort, t_seq, t_plain_cohort = (statistics.median(times[k]) for k in ("overlap", "sequential", "plain"))
        extra = {"repeats": len(loads), "load_1min": round(statistics.median(loads), 2)}
        _emit(
            "cohort_vs_plain",
            t_cohort,
            "s",
            f"plain MONAI script over the same {a.cohort} volumes, equal settings, one after the other",
            t_plain_cohort,
            "ratio <= 1.0",
            t_cohort <= t_plain_cohort,
            dname,
            **extra,
        )
        _emit(
            "cohort_overlap_vs_sequential",
            t_cohort,
            "s",
            "the same segment cohort with MEDSEG_COHORT_OVERLAP=0 (read, compute, write in turn)",
            t_seq,
            "reference",
            True,
            dname,
            **extra,
        )
    if a.compile:
        _compile_figure(m, calls, patch, dev, dname, max(1, a.compile_rounds))
    return 0


def _compile_figure(model, calls, patch, dev, dname, rounds: int) -> None:
    """``compiled_network_seconds``: the floor's windows compiled vs eager, same process, alternated."""
    import os

    from medseg.engine.compiled import compile_status, compiled, pad_batch

    full = max(calls)
    xs = {b: torch.randn((b, 1, *patch), device=dev) for b in set(calls)}
    net = pad_batch(compiled(model), full)  # what sliding_window_probs(compile=True) calls

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def windows(fn) -> float:
        sync()
        t0 = time.perf_counter()
        for b in calls:
            fn(xs[b])
        sync()
        return time.perf_counter() - t0

    with torch.no_grad():
        model(xs[full])  # eager warm-up
        sync()
        t0 = time.perf_counter()
        model(xs[full])
        sync()
        t_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        net(xs[full])  # compiles (the first call pays it)
        sync()
        t_first = time.perf_counter() - t0
        net(xs[full])
        t_eager = t_comp = 0.0
        for _ in range(rounds):
            t_eager += windows(model)
            t_comp += windows(net)
    status = compile_status(model, True)
    _emit(
        "compiled_network_seconds",
        t_comp / rounds,
        "s",
        f"eager network, the same {len(calls)} batches ({sum(calls)} windows of {patch}), alternated {rounds}x",
        t_eager / rounds,
        "ratio <= 1.0",
        t_comp <= t_eager,
        dname,
        compile_seconds=round(max(0.0, t_first - t_one), 2),
        compile_used=status["used"],
        fallback_reason=status["fallback_reason"],
        load_1min=round(os.getloadavg()[0], 2),
    )


if __name__ == "__main__":
    sys.exit(main())
