"""End-to-end weak supervision on a tiny synthetic lesion set (slow: trains three networks)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_weak_supervision_pipeline_runs_end_to_end(tmp_path):
    from medseg.config import DataSection, WeakSection, WeakSupervisionConfig
    from medseg.config.weak_supervision import WeakTrainSection
    from medseg.runs import Run
    from medseg.tasks.weak_supervision import train

    cfg = WeakSupervisionConfig(
        name="w",
        device="cpu",
        data=DataSection(synthetic=True, num_cases=20),
        weak=WeakSection(image_size=48, classifier_epochs=1),
        train=WeakTrainSection(epochs=1, batch_size=8, lr=1e-3),
    )
    run = Run.create(tmp_path / "w", cfg)
    with run:
        r = train(cfg, run)
    assert 0.0 <= r["dice_weak"] <= 1.0 and 0.0 <= r["dice_full"] <= 1.0
    assert 0.0 <= r["pointing_game"] <= 1.0 and isinstance(r["randomisation_passed"], bool)
    saved = json.loads((run.path / "weak_supervision.json").read_text())
    assert saved["dice_ratio"] == r["dice_ratio"]
    assert (run.path / "seg_pseudo" / "checkpoints" / "last.pt").is_file()
    assert (run.path / "pseudo_masks.png").is_file()
