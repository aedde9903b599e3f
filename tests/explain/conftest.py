"""Fixtures of the explain / weak-supervision tests: an (untrained) classification run folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from medseg.config import ClassificationConfig, DataSection, ModelSection
from medseg.engine.checkpoint import save_checkpoint
from medseg.models import build_model
from medseg.runs import Run


def write_classifier_run(run_dir: Path, size: int, datalist: Path | None = None) -> Path:
    """A classification run folder as ``medseg.tasks.classification.train`` leaves it (weights untrained).

    EfficientNet-Lite0 (no ImageNet weights, seed 0) for ``size`` px RGB images, classes benign /
    malignant; ``config.yaml``, ``checkpoints/best.pt``, ``classifier.json``.
    """
    cfg = ClassificationConfig(
        name=run_dir.name,
        image_size=size,
        data=DataSection(datalist=datalist),
        model=ModelSection(name="efficientnet_lite0", pretrained=False),
    )
    run = Run.create(run_dir, cfg)
    params = {"name": "efficientnet_lite0", "pretrained": False, "image_size": size, "num_classes": 2, "in_channels": 3}
    torch.manual_seed(0)
    model = build_model(**params)
    save_checkpoint(run.path / "checkpoints" / "best.pt", model=model.state_dict(), meta={"model_params": params})
    info = {
        "class_names": ["benign", "malignant"],
        "positive_index": 1,
        "image_size": size,
        "channels": "rgb",
        "temperature": 1.0,
        "operating_points": {"default": 0.5},
        "use": "default",
    }
    (run.path / "classifier.json").write_text(json.dumps(info))
    run.finish()
    return run.path


@pytest.fixture(scope="session")
def make_classifier_run() -> Callable[..., Path]:
    """``make_classifier_run(run_dir, size, datalist=None) -> run folder`` (see :func:`write_classifier_run`)."""
    return write_classifier_run
