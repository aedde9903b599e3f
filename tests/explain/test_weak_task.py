"""Weak supervision task on tiny data (fast): its real code path with a given classifier run.

A 32 px synthetic lesion set, an untrained EfficientNet-Lite0 classifier run (no ImageNet weights:
the maps carry no information, so only properties that hold for any classifier are asserted) and a
three-level U-Net trained for one epoch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.config import DataSection, ModelSection, WeakSection, WeakSupervisionConfig, parse_config
from medseg.config.weak_supervision import WeakTrainSection
from medseg.errors import ConfigError, InputError
from medseg.runs import Run
from medseg.tasks.weak_supervision import load_lesion_split, segmenter_dice, train


def _cfg(classifier_run, **kw):
    base = dict(
        name="w",
        device="cpu",
        data=DataSection(synthetic=True, num_cases=10),
        weak=WeakSection(image_size=32, classifier_run=classifier_run),
        model=ModelSection.model_validate(
            {
                "name": "unet",
                "spatial_dims": 2,
                "in_channels": 3,
                "out_channels": 2,
                "channels": [4, 8, 8],
                "norm": "batch",
            }
        ),
        train=WeakTrainSection(epochs=1, batch_size=4),
    )
    base.update(kw)
    return WeakSupervisionConfig(**base)


@pytest.fixture(scope="module")
def weak_run(tmp_path_factory, make_classifier_run):
    root = tmp_path_factory.mktemp("weak")
    cls_run = make_classifier_run(root / "classifier", 32)
    cfg = _cfg(cls_run)
    run = Run.create(root / "w", cfg)
    with run:
        result = train(cfg, run)
    return run.path, result


def test_weak_supervision_writes_pseudo_masks_segmenters_and_figures(weak_run):
    path, r = weak_run
    assert r["n_fit"] == 8 and r["n_test"] == 2  # 60 % + 20 % pseudo-labelled, 20 % scored
    for key in ("dice_weak", "dice_full", "pseudo_mask_dice", "pointing_game", "cam_dice"):
        assert 0.0 <= r[key] <= 1.0, key
    assert r["dice_ratio"] is None or r["dice_ratio"] == pytest.approx(r["dice_weak"] / r["dice_full"], abs=2e-3)
    assert isinstance(r["randomisation_passed"], bool) and r["cam_layer"].startswith("_blocks.")
    assert json.loads((path / "weak_supervision.json").read_text()) == r
    loc = json.loads((path / "localisation.json").read_text())
    assert loc["pointing_game"] == pytest.approx(r["pointing_game"], abs=1e-4) and "maps" not in loc
    assert (path / "pseudo_masks.png").stat().st_size > 0
    for seg in ("seg_pseudo", "seg_true"):
        assert (path / seg / "checkpoints" / "last.pt").is_file() and (path / seg / "metrics.csv").is_file()
    assert (path / "data" / "dataset.json").is_file()  # the synthetic set was generated in the run


def test_load_lesion_split_reads_images_masks_and_labels(weak_run):
    path, _ = weak_run
    te = load_lesion_split(path / "data" / "dataset.json", "test")
    assert len(te["images"]) == len(te["masks"]) == len(te["labels"]) == 2
    assert te["images"][0].shape == (32, 32, 3) and te["images"][0].dtype == np.uint8
    assert te["masks"][0].dtype == bool and te["masks"][0].any() and set(te["labels"]) <= {0, 1}
    assert load_lesion_split(path / "data" / "dataset.json", "nonexistent")["images"] == []


def test_segmenter_dice_is_one_for_a_perfect_segmenter(weak_run):
    import torch
    from torch import nn

    path, _ = weak_run
    te = load_lesion_split(path / "data" / "dataset.json", "test")
    masks = torch.as_tensor(np.stack(te["masks"])[:, None].astype(np.float32))

    class Oracle(nn.Module):  # predicts the reference masks of the test images, in order
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.cat([1 - masks, masks], 1)[: len(x)]

    assert np.allclose(segmenter_dice(Oracle(), te["images"], te["masks"]), 1.0)


def test_weak_supervision_refuses_resume_and_needs_test_masks(weak_run, tmp_path):
    path, r = weak_run
    cfg = _cfg(r["classifier_run"])
    with pytest.raises(ConfigError, match="cannot be resumed"):
        train(cfg, Run.create(tmp_path / "r", cfg), resume=True)
    d = json.loads((path / "data" / "dataset.json").read_text())
    for e in d["test"]:
        e.pop("mask")
    (path / "data" / "nomask.json").write_text(json.dumps(d))
    cfg = _cfg(r["classifier_run"], data=DataSection(datalist=path / "data" / "nomask.json"))
    with pytest.raises(InputError, match="test images need a 'mask'"):
        train(cfg, Run.create(tmp_path / "m", cfg))


def test_weak_config_refuses_keys_the_task_does_not_read():
    with pytest.raises(ConfigError, match="unknown key 'train.early_stop_patience'"):
        parse_config({"task": "weak_supervision", "train": {"early_stop_patience": 3}})
    with pytest.raises(ConfigError, match="unknown key 'train.val_every'"):
        parse_config({"task": "weak_supervision", "train": {"val_every": 2}})
    cfg = parse_config({"task": "weak_supervision", "train": {"optimizer": "sgd", "steps_per_epoch": 3}})
    assert cfg.train.optimizer == "sgd" and cfg.train.steps_per_epoch == 3  # now read by the segmenters
