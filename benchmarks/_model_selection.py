"""Shared by the model-selection benchmarks (augment, tune, ensemble): data, configs, figures.

- :func:`shifted_phantoms`: 2D phantom slices whose validation and test cases differ from the
  training ones (more noise, lower contrast, a rotation), written as NIfTI with a datalist;
- :func:`seg2d_config`: a small 2D U-Net config reading a datalist;
- :func:`heldout_dice`: held-out Dice of a trained run (``medseg segment --split test``);
- :func:`emit`: one JSON figure line in the benchmarks' format.

Not a benchmark itself (the leading underscore keeps ``run_all.py`` from running it).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def options(doc: str, argv, **sizes: tuple[int, int]) -> argparse.Namespace:
    """``--quick``, ``--keep`` and one integer option per size (``name=(full, quick)``), resolved.

    Also quiets medseg's log (only the JSON figures and warnings remain).
    """
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small run that checks the script")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    for name, (full, quick) in sizes.items():
        p.add_argument(f"--{name}", type=int, default=None, help=f"default {full} (quick: {quick})")
    a = p.parse_args(argv)
    for name, (full, quick) in sizes.items():
        setattr(a, name, getattr(a, name) or (quick if a.quick else full))
    logging.getLogger("medseg").setLevel(logging.WARNING)
    return a


def emit(
    benchmark: str, metric: str, value, unit: str, baseline: str, baseline_value, goal: str, met, device: str, **extra
):
    """Print one figure as a JSON line (ratio = value / baseline_value); ``extra`` keys follow (settings, load).

    The one figure writer of the benchmarks; a ``str`` value (a name, e.g. a chosen configuration) is printed as is.
    """
    number = value is not None and not isinstance(value, str)
    ratio = (value / baseline_value) if (number and baseline_value) else None
    row = {
        "benchmark": benchmark,
        "metric": metric,
        "value": round(float(value), 4) if number else value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": None if baseline_value is None else round(float(baseline_value), 4),
        "ratio": None if ratio is None else round(float(ratio), 3),
        "goal": goal,
        "met": bool(met),
        "device": device,
        **extra,
    }
    print(json.dumps(row), flush=True)


def _slice(seed: int, shape: tuple[int, int, int], noise_hu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from medseg.data.synthetic import ct_phantom

    ph = ct_phantom(seed=seed, shape=shape, spacing=(4.0, 4.0, 6.0), noise_hu=noise_hu)
    k = shape[2] // 2 + int(np.random.default_rng(seed).integers(-2, 3))
    return ph.image[:, :, k].astype(np.float32), ph.label[:, :, k], ph.affine


def _shift(img: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The target domain: rotated 15-30 degrees, contrast lowered (soft tissue x0.7), extra noise."""
    angle = float(rng.uniform(15, 30) * rng.choice([-1, 1]))
    img = ndimage.rotate(img, angle, reshape=False, order=1, mode="nearest")
    lab = ndimage.rotate(lab, angle, reshape=False, order=0, mode="nearest")
    img = np.where(img > -500, 40 + (img - 40) * 0.7 + 15, img)  # other scanner / contrast phase
    img = img + ndimage.gaussian_filter(rng.normal(0, 45, img.shape), 0.7).astype(np.float32)
    return img.astype(np.float32), lab


def shifted_phantoms(
    folder: Path,
    n_train: int = 12,
    n_val: int = 4,
    n_test: int = 8,
    seed: int = 0,
    size: int = 48,
    n_test_source: int = 0,
) -> Path:
    """Write training (source domain), validation and test (shifted domain) 2D slices; returns dataset.json.

    ``n_test_source`` more unshifted cases go to a ``test_source`` list (in-domain test).
    """
    from medseg.tasks.segmentation.files import write_nifti

    rng = np.random.default_rng(seed)
    lists: dict[str, list[dict[str, str]]] = {"training": [], "validation": [], "test": [], "test_source": []}
    plan = [
        ("training", n_train, False),
        ("validation", n_val, True),
        ("test", n_test, True),
        ("test_source", n_test_source, False),
    ]
    i = 0
    for split, n, shifted in plan:
        for _ in range(n):
            img, lab, aff = _slice(seed * 1000 + i, (size, size, 16), noise_hu=10.0)
            if shifted:
                img, lab = _shift(img, lab, rng)
            ip, lp = folder / split / f"img_{i:03d}.nii.gz", folder / split / f"lab_{i:03d}.nii.gz"
            write_nifti(img, aff, ip)
            write_nifti(lab.astype(np.uint8), aff, lp)
            lists[split].append({"image": str(ip), "label": str(lp)})
            i += 1
    path = folder / "dataset.json"
    path.write_text(json.dumps(lists, indent=1))
    return path


def seg2d_config(datalist: Path | None, out: Path, name: str, **sections: Any):
    """A 2D U-Net segmentation config (liver) reading ``datalist`` (None: 12 synthetic slices)."""
    from medseg.config import parse_config

    raw: dict[str, Any] = {
        "task": "segmentation",
        "name": name,
        "output_dir": str(out),
        "seed": 0,
        "device": "cpu",
        "spatial_dims": 2,
        "class_names": ["background", "liver"],
        "label_map": {4: 1, 2: 0, 3: 0},
        "data": {"datalist": str(datalist)} if datalist else {"synthetic": True, "num_cases": 16, "val_fraction": 0.3},
        "model": {"name": "unet", "channels": [8, 16, 32]},
        "train": {"epochs": 12, "batch_size": 4, "lr": 0.005, "val_every": 1, "steps_per_epoch": 4},
        "plan": {"max_patch_voxels": 48 * 48},
        "augment": {"level": "default", "samples_per_image": 2},
    }
    if datalist is None:
        raw["synthetic"] = {"shape": [32, 32, 16], "spacing": [6.0, 6.0, 9.0]}
    for section, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            raw[section].update(value)
        else:
            raw[section] = value
    return parse_config(raw)


def heldout_dice(run_dir: Path, datalist: Path, out: Path) -> float:
    """Mean Dice of a trained run on the datalist's test cases (``medseg segment --split test``)."""
    from medseg.cli import main

    with contextlib.redirect_stdout(io.StringIO()):  # the command's summary: only JSON figures on stdout
        rc = main(["-q", "segment", "--model", str(run_dir), str(datalist), "--out", str(out), "--split", "test"])
    if rc != 0:
        raise RuntimeError(f"medseg segment failed on {run_dir}")
    with open(out / "segment.csv", newline="") as f:  # the cohort engine's table (was segmentation.csv)
        values = [float(r["dice_mean"]) for r in csv.DictReader(f) if r.get("dice_mean")]
    return float(np.mean(values)) if values else float("nan")
