"""Demo stage ``classification``: synthetic lesions -> fine-tuned EfficientNet-Lite0 -> test AUC + review cases."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from medseg.config import (
    ClassificationConfig,
    DataSection,
    FinetuneSection,
    OperatingPointSection,
    TrainSection,
)
from medseg.config.classification import ClassifierModelSection
from medseg.data.lesions import make_lesion_dataset
from medseg.io import read_image_uint8
from medseg.review.cases import ReviewCase
from medseg.review.overlay import overlay_2d, save_png
from medseg.runs import Run
from medseg.tasks.classification import classify, evaluate, train
from medseg.tasks.classification.evaluate import read_csv_rows

__all__ = ["demo_config", "run_demo"]


def demo_config(datalist: Path, size: int, quick: bool = False) -> ClassificationConfig:
    """The demo's classifier: ImageNet Lite0, ``size`` px lesions, a budget of ~1 minute of training.

    ``quick`` (tests): a linear probe on the ImageNet features (no backward through the backbone).
    """
    return ClassificationConfig(
        name="run",
        seed=0,
        device="cpu",
        image_size=size,
        augmentation="dermoscopy",
        data=DataSection(datalist=datalist),
        model=ClassifierModelSection.model_validate({"name": "efficientnet_lite0", "pretrained": True}),
        train=TrainSection(
            epochs=2 if quick else 8,
            batch_size=16,
            lr=1e-2 if quick else 1e-3,
            max_minutes=0.2 if quick else 1.0,
            early_stop_patience=2 if quick else 4,
        ),
        finetune=FinetuneSection(strategy="linear_probe" if quick else "full"),
        operating_points=OperatingPointSection(n_bootstrap=200 if quick else 1000),
    )


def run_demo(out: Path, quick: bool = False) -> dict[str, Any]:
    """Train, classify the held-out test images, evaluate; one review case per test image.

    Parameters
    ----------
    out : this stage's folder (``<demo run>/classification``); the trained run folder is left at
        ``out / "run"`` and the data at ``out / "data"`` (the explain stage uses both).
    quick : fewer, smaller images and a linear probe (tests). Budget: ~60 s on 2 CPU cores
        (``quick``: ~15 s).

    Returns
    -------
    ``{"summary": {...}, "cases": [ReviewCase, ...]}``; the summary holds ``test_auc`` (+ CI),
    ``accuracy``, ``operating_points``, ``epochs``, the split sizes and ``seconds``.
    """
    out = Path(out)
    t0 = time.perf_counter()
    n, size = (40, 48) if quick else (160, 96)
    datalist = make_lesion_dataset(out / "data", n=n, seed=0, size=size, splits=(0.5, 0.25, 0.25))
    cfg = demo_config(datalist, size, quick)
    run = Run.create(out / "run", cfg, force=True, command="demo classification")
    with run:
        summary = train(cfg, run)
    test = json.loads(Path(datalist).read_text())["test"]
    cls = classify(out / "run", [datalist], out / "predictions", device="cpu", force=True)
    ev = evaluate(Path(cls["predictions"]), out / "data" / "labels.csv", out / "evaluation", n_boot=200)
    rows = read_csv_rows(Path(cls["predictions"]))
    ref = {Path(e["image"]).stem: e for e in test}
    class_names = list(cfg.class_names)
    cases = []
    thumbs = out / "thumbnails"
    thumbs.mkdir(parents=True, exist_ok=True)
    for r in rows:
        stem = r["case_id"]
        e = ref[stem]
        # the image as the classifier saw it: a filled reference mask would hide the border and
        # texture the reviewer has to judge (Grad-CAM rows show where the model looked)
        thumb = save_png(overlay_2d(read_image_uint8(out / "data" / e["image"])), thumbs / f"{stem}.png")
        p_mal = float(r[f"prob_{class_names[1]}"])
        cases.append(
            ReviewCase(
                case_id=stem,
                task="classification",
                thumbnail=str(Path(thumb).resolve()),
                prediction=r["predicted_class"],
                probability=round(p_mal, 4),
                metrics={
                    f"reference_{class_names[1]}": float(e["label"]),
                    "correct": float(r["predicted_class"] == class_names[int(e["label"])]),
                },
                uncertainty=round(1.0 - abs(2 * p_mal - 1), 4),
                needs_review=abs(p_mal - 0.5) < 0.2,
                outputs={"predictions": str(Path(cls["predictions"]).resolve())},
            )
        )
    return {
        "summary": {
            "run": str((out / "run").resolve()),
            "n_train": summary["n_train"],
            "n_test": summary["n_test"],
            "test_auc": summary.get("test_auc"),
            "auc_ci95": summary.get("auc_ci95"),
            "operating_points": summary.get("operating_points"),
            "epochs": summary["epochs"],
            "accuracy": ev.get("accuracy"),
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "cases": cases,
    }
