"""Done-when target: the 3D U-Net of configs/seg_ct_phantom.yaml, trained within its 4.5-minute budget on
a 2-core CPU, reaches mean Dice >= 0.90 on held-out synthetic phantoms (in their source geometry)."""

import json
from pathlib import Path

import pytest

from medseg.config import load_config
from medseg.runs import Run
from medseg.tasks import segmentation as seg

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_phantom_unet_reaches_dice_090(tmp_path):
    cfg = load_config(ROOT / "configs" / "seg_ct_phantom.yaml", [f"output_dir={tmp_path}", "name=run", "device=cpu"])
    assert cfg.train.max_minutes is not None and cfg.train.max_minutes <= 5
    run = Run.create(tmp_path / "run", cfg)
    with run:
        summary = seg.train(cfg, run)
    assert summary["train_seconds"] <= 5 * 60 + 60  # budget plus the last epoch's validation
    data = tmp_path / "run" / "data"
    content = json.loads((data / "dataset.json").read_text())
    assert len(content["test"]) >= 3
    held = {"test": [{"image": str(data / it["image"]), "label": str(data / it["label"])} for it in content["test"]]}
    (tmp_path / "heldout.json").write_text(json.dumps(held))
    summary = seg.segment(tmp_path / "run", [tmp_path / "heldout.json"], tmp_path / "seg", device="cpu")
    assert summary["ok"] == len(content["test"])
    rows = json.loads((tmp_path / "seg" / "segment.json").read_text())
    dices = [r["dice_mean"] for r in rows]
    assert sum(dices) / len(dices) >= 0.90, dices
    ev = seg.evaluate(tmp_path / "seg", data / "labelsTs", tmp_path / "ev")
    assert ev["per_class"]["liver"]["dice"] >= 0.90
