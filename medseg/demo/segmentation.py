"""Demo stage ``segmentation``: train a 3D U-Net on synthetic CT phantoms briefly, then segment.

The set-up is ``configs/seg_ct_phantom.yaml`` with a short time budget (:func:`demo_config`).
:func:`run_demo` trains into ``<out>/train``, then segments the held-out phantoms (Dice against
their labels) and, when the ``data`` stage wrote it, the DICOM series
``<out>/../data/ct_dicom/study1/series1`` into ``<out>/segment``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import SegmentationConfig, load_config
from medseg.errors import ConfigError, MissingFileError
from medseg.runs import Run
from medseg.tasks.segmentation import segment_cases, train
from medseg.tasks.segmentation.files import write_table
from medseg.utils import atomic_write_text

__all__ = ["demo_config", "run_demo"]

#: the config the demo trains (the repository's phantom set-up)
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "seg_ct_phantom.yaml"


def demo_config(out: Path, quick: bool = False) -> SegmentationConfig:
    """The segmentation config the demo trains: ``configs/seg_ct_phantom.yaml`` with a short budget.

    ``quick``: 4 cases, at most 6 epochs of 3 steps, a smaller U-Net, ~7 s of training; else 10
    cases, at most 40 epochs, 0.9 minutes of training. Runs go under ``out``.
    """
    over = [f"output_dir={out}", "name=train", "device=auto"]
    if quick:
        over += [
            "data.num_cases=4",
            "train.epochs=6",
            "train.steps_per_epoch=3",
            "train.max_minutes=0.12",
            "model.channels=[8,16,32]",
            "augment.samples_per_image=1",
        ]
    else:
        over += ["data.num_cases=10", "train.epochs=40", "train.max_minutes=0.9"]
    if not CONFIG.is_file():
        raise MissingFileError("demo config configs/seg_ct_phantom.yaml not found", CONFIG)
    cfg = load_config(CONFIG, over)
    if not isinstance(cfg, SegmentationConfig):
        raise ConfigError(f"the demo config is not a segmentation config (task: {cfg.task})", CONFIG)
    return cfg


def run_demo(out: Path, quick: bool = False) -> dict[str, Any]:
    """Train briefly, segment the held-out phantoms and the demo's DICOM series.

    Parameters
    ----------
    out : this stage's folder (``<demo run>/segmentation``).
    quick : the short set-up of :func:`demo_config` (tests).

    Returns
    -------
    ``{"summary": {mean_dice, train_seconds, epochs, best_val_dice, cases, skipped,
    dicom_series_segmented, needs_review, table}, "cases": [ReviewCase, ...]}``
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(out, quick)
    t0 = time.perf_counter()
    run = Run.create(out / "train", cfg, force=True, command="demo segmentation")
    with run:
        tsum = train(cfg, run)
    train_s = time.perf_counter() - t0
    data_dir = out / "train" / "data"
    content = json.loads((data_dir / "dataset.json").read_text())
    held_out = {
        "test": [
            {"image": str(data_dir / it["image"]), "label": str(data_dir / it["label"])}
            for it in content.get("test", [])
        ]
    }
    seg_out = out / "segment"
    inputs_json = atomic_write_text(seg_out / "inputs.json", json.dumps(held_out, indent=2))
    inputs: list[Path] = [inputs_json]
    dicom = out.parent / "data" / "ct_dicom" / "study1" / "series1"
    if dicom.is_dir():
        inputs.append(dicom)
    cases, rows = segment_cases(out / "train", inputs, seg_out, device="auto")
    write_table(rows, seg_out, "segment")  # the name `medseg segment` gives its table: one name for one table
    dices = [c.metrics["dice_mean"] for c in cases if "dice_mean" in c.metrics]
    summary = {
        "mean_dice": round(float(np.mean(dices)), 4) if dices else None,
        "train_seconds": round(train_s, 1),
        "epochs": tsum["epochs"],
        "best_val_dice": tsum["best_val_dice"],
        "cases": len(cases),
        "skipped": sum(c.status != "ok" for c in cases),
        "dicom_series_segmented": dicom.is_dir(),
        "needs_review": sum(c.needs_review for c in cases),
        "table": str(seg_out / "segment.csv"),
    }
    return {"summary": summary, "cases": cases}
