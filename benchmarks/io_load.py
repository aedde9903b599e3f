"""Benchmark: load a 300-slice 512x512 CT series with medseg.io.load vs SimpleITK and MONAI, and the byte floor.

Prints one JSON object per line (keys: benchmark, metric, value, unit, baseline, baseline_value, ratio, goal,
met, device, ...). Exits 0 whether or not the goals are met.

    python benchmarks/io_load.py            # 300 slices, 7 interleaved rounds
    python benchmarks/io_load.py --quick    # 40 slices, 2 rounds (smoke run)
    python benchmarks/io_load.py --data DIR # reuse / keep the generated series in DIR
    python benchmarks/io_load.py --cold     # + discover + load from a cold page cache (root: drop_caches)

Every reader is run once before timing (warm-up; it also warms the page cache). Then the readers
are timed in interleaved rounds (medseg, SimpleITK, ... with the order swapped every round, so that
a change of machine load hits both alike); MONAI (4x slower) only in the first 3 rounds. ``value``
and ``baseline_value`` are the **medians** of the rounds and ``ratio`` their ratio (the goal is
judged on it); ``best_s`` / ``baseline_best_s`` / ``ratio_of_bests`` give the best rounds. Each line
carries the 1-minute load average at the start and at the end of the run (``loadavg_start``,
``loadavg_end``): on a shared machine only ratios measured in the same run compare.
medseg's time includes discovering the files and checking the geometry; SimpleITK's includes
GetGDCMSeriesFileNames (its own sorting). The cold row drops the page cache before each run
(``sync; echo 3 > /proc/sys/vm/drop_caches``), times ``discover(folder)`` + ``load`` of the series
against SimpleITK's reader from a cold cache, best of N; where the cache cannot be dropped (not root,
read-only /proc) the row has ``value: null`` and says why.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_series(folder: Path, n_slices: int, size: int = 512) -> list[Path]:
    """A synthetic CT series (body ellipse + noise, 0.98 x 0.98 x 1.25 mm), one file per slice.

    Written by the same DICOM writer as the embedded demo data (``write_phantom_dicom``).
    """
    from medseg.data.synthetic import Phantom, write_phantom_dicom

    rng = np.random.default_rng(0)
    xx, yy = np.mgrid[:size, :size]  # (X, Y) = (columns, rows)
    body = ((xx - size / 2) ** 2 / (0.4 * size) ** 2 + (yy - size / 2) ** 2 / (0.33 * size) ** 2) <= 1
    image = np.empty((size, size, n_slices), np.int16)
    for k in range(n_slices):
        image[:, :, k] = np.where(body, 40, -1000) + rng.integers(-20, 20, (size, size))
    ph = Phantom(
        image=image,
        label=np.zeros((1, 1, 1), np.uint8),
        spacing=(0.9765625, 0.9765625, 1.25),
        origin=(-250.0, -250.0, -300.0),
        seed=0,
    )
    return write_phantom_dicom(
        ph, folder, patient_name="BENCH^MARK", patient_id="BENCH", series_description="io_load benchmark"
    )


def interleaved(readers: dict, rounds: int, limited: dict | None = None) -> tuple[dict[str, list[float]], dict]:
    """(times, outputs): each reader's times over ``rounds`` interleaved rounds, and its warm-up output.

    ``readers``: name -> function; each runs once untimed first (warm-up; it also warms the page
    cache). The order of the readers is reversed every other round. ``limited``: name -> the number
    of rounds that reader takes part in (the slow ones). Outputs of timed runs are freed untimed.
    """
    limited = limited or {}
    outputs = {name: fn() for name, fn in readers.items()}
    times: dict[str, list[float]] = {name: [] for name in readers}
    names = list(readers)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if r >= limited.get(name, rounds):
                continue
            t0 = time.perf_counter()
            out = readers[name]()
            times[name].append(time.perf_counter() - t0)
            del out
    return times, outputs


def loadavg() -> float | None:
    """The 1-minute load average (None where the OS does not report one)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def drop_caches() -> str | None:
    """Drop the page cache (Linux, root); None when done, else why not."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return None
    except OSError as e:
        return f"cannot drop the page cache ({type(e).__name__}: {e}); run as root on Linux"


def cold_best_of(fn, n: int) -> tuple[float | None, str | None]:
    """Best of ``n`` runs of ``fn``, each after dropping the page cache; (None, why) when it cannot be dropped."""
    times = []
    for _ in range(n):
        why = drop_caches()
        if why is not None:
            return None, why
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 slices, 2 rounds")
    ap.add_argument("--slices", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 7; --quick 2)")
    ap.add_argument("--data", type=Path, default=None, help="folder for the generated series (kept)")
    ap.add_argument("--cold", action="store_true", help="also time discover + load from a cold page cache (root)")
    args = ap.parse_args(argv)
    n = args.slices or (40 if args.quick else 300)
    reps = args.repeats or (2 if args.quick else 7)
    load_start = loadavg()
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")

    import SimpleITK as sitk
    from monai.transforms import LoadImage

    from medseg.io import discover, load

    tmp = None
    folder = args.data
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="medseg_io_bench_")
        folder = Path(tmp.name) / "series"
    if not (folder.exists() and len(list(folder.glob("*.dcm"))) == n):
        write_series(folder, n)
    files = sorted(folder.glob("*.dcm"))

    def floor():
        return sum(len(p.read_bytes()) for p in files)

    def ours():
        return load(folder)

    def itk():
        r = sitk.ImageSeriesReader()
        r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
        return r.Execute()

    # ITK (MONAI's default DICOM-series reader) is not installed here: MONAI reads the folder with pydicom
    monai_loader = LoadImage(reader="PydicomReader", image_only=True)

    def monai():
        return monai_loader(str(folder))

    times, results = interleaved(
        {"ours": ours, "itk": itk, "floor": floor, "monai": monai}, reps, limited={"monai": min(reps, 3)}
    )
    med = {k: float(np.median(v)) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    t_ours, t_itk, t_monai, t_floor = med["ours"], med["itk"], med["monai"], med["floor"]
    img, si = results["ours"], results["itk"]
    # the readers agree on the values (HU) and on the origin
    ref = sitk.GetArrayFromImage(si).transpose(2, 1, 0)
    agree_itk = bool(np.array_equal(img[0].numpy(), ref.astype(np.float32)))
    origin_lps = (np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine.numpy())[:3, 3]
    agree_geo = bool(np.allclose(origin_lps, si.GetOrigin(), atol=1e-4))
    fastest_name, fastest_key = min(
        (("SimpleITK ImageSeriesReader", "itk"), ("MONAI LoadImage", "monai")), key=lambda x: med[x[1]]
    )
    fastest = med[fastest_key]
    device = f"cpu ({os.cpu_count()} cores)"
    common = {"benchmark": "io_load", "unit": "s", "device": device, "slices": n, "matrix": "512x512"}
    stats = {"statistic": "median", "rounds": reps, "order": "interleaved, reversed every other round"}
    lines = [
        {
            **common,
            "metric": "load_time",
            "value": round(t_ours, 4),
            "baseline": fastest_name,
            "baseline_value": round(fastest, 4),
            "ratio": round(t_ours / fastest, 3),
            "goal": "ratio <= 1.0",
            "met": t_ours <= fastest,
            **stats,
            "best_s": round(best["ours"], 4),
            "baseline_best_s": round(best[fastest_key], 4),
            "ratio_of_bests": round(best["ours"] / best[fastest_key], 3),
            "times_s": [round(t, 4) for t in times["ours"]],
            "baseline_times_s": [round(t, 4) for t in times[fastest_key]],
            "simpleitk_s": round(t_itk, 4),
            "monai_s": round(t_monai, 4),
            "monai_rounds": len(times["monai"]),
            "monai_reader": "PydicomReader",
            "values_equal_simpleitk": agree_itk,
            "origin_equal_simpleitk": agree_geo,
        },
        {
            **common,
            "metric": "load_time_vs_byte_floor",
            "value": round(t_ours, 4),
            "baseline": "read all file bytes (Path.read_bytes)",
            "baseline_value": round(t_floor, 4),
            "ratio": round(t_ours / t_floor, 3),
            "goal": "ratio <= 2.0",
            "met": t_ours <= 2.0 * t_floor,
            **stats,
            "best_s": round(best["ours"], 4),
            "baseline_best_s": round(best["floor"], 4),
            "ratio_of_bests": round(best["ours"] / best["floor"], 3),
        },
    ]
    if args.cold:

        def ours_cold():
            (series,) = [s for s in discover(folder) if s.kind == "dicom"]
            return load(series)

        t_cold, why = cold_best_of(ours_cold, reps)
        t_itk_cold, _ = cold_best_of(itk, reps) if why is None else (None, why)
        lines.append(
            {
                **common,
                "metric": "cold_discover_load_time",
                "value": None if t_cold is None else round(t_cold, 4),
                "baseline": "SimpleITK ImageSeriesReader, cold page cache",
                "baseline_value": None if t_itk_cold is None else round(t_itk_cold, 4),
                "ratio": None if t_cold is None or not t_itk_cold else round(t_cold / t_itk_cold, 3),
                "goal": "ratio <= 1.0",
                "met": bool(t_cold is not None and t_itk_cold and t_cold <= t_itk_cold),
                **({"note": why} if why else {}),
            }
        )
    load_end = loadavg()
    for line in lines:
        print(json.dumps({**line, "loadavg_start": load_start, "loadavg_end": load_end}))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
