"""Synthetic CT-like nodule volumes: deterministic, labelled per lesion, classes differ in shape and texture only."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from medseg.data.lesions3d import lesion_ct_volume, make_lesion_volume_dataset
from medseg.errors import ConfigError
from medseg.metrics.lesions import find_lesions


def _features(seed: int, label: int) -> tuple[float, float, float]:
    v = lesion_ct_volume(seed, [label], shape=(40, 40, 28))
    m = v["instances"] == 1
    core = ndi.binary_erosion(m, iterations=2)
    les = find_lesions(v["instances"], v["affine"])[1][0]
    # irregularity: longest diameter / equal-volume sphere diameter (1 for a sphere)
    elongation = les.diameter_3d_mm / (6 * les.volume_ml * 1000 / np.pi) ** (1 / 3)
    return float(m.sum()), float(elongation), float(v["image"][core].std()) if core.any() else 0.0


def test_volume_is_deterministic_and_labelled_per_lesion():
    kw = {"shape": (64, 64, 32), "diameter_mm": (6.0, 10.0), "atypical": [False, True]}
    a = lesion_ct_volume(5, [0, 1], **kw)
    b = lesion_ct_volume(5, [0, 1], **kw)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["instances"], b["instances"])
    assert [r["label"] for r in a["lesions"]] == [0, 1] and a["lesions"][1]["atypical"]
    assert set(np.unique(a["instances"])) == {0, 1, 2}
    assert np.array_equal(a["labels"] > 0, a["instances"] > 0)
    _, les = find_lesions(a["instances"], a["affine"])
    assert len(les) == 2  # separate nodules
    assert np.median(a["image"]) == pytest.approx(-820, abs=40)  # lung parenchyma
    with pytest.raises(ConfigError):
        lesion_ct_volume(0, [2])
    with pytest.raises(ConfigError, match="cannot place"):
        lesion_ct_volume(0, [0, 1, 1, 0], shape=(24, 24, 16))


def test_classes_differ_in_shape_and_texture_not_in_size():
    ben = np.array([_features(s, 0) for s in range(12)])
    mal = np.array([_features(s, 1) for s in range(12)])
    assert mal[:, 1].mean() > 1.15 * ben[:, 1].mean()  # lobulated / spiculated: long strands
    assert mal[:, 2].mean() > 1.5 * ben[:, 2].mean()  # heterogeneous inside
    ratio = np.median(mal[:, 0]) / np.median(ben[:, 0])
    assert 0.6 < ratio < 1.6  # volumes from the same distribution


def test_dataset_one_entry_per_lesion_with_instance_masks(tmp_path):
    path = make_lesion_volume_dataset(
        tmp_path, n=10, seed=1, lesions_per_volume=2, shape=(48, 48, 24), diameter_mm=(5.0, 8.0)
    )
    data = json.loads(path.read_text())
    entries = data["training"] + data["validation"] + data["test"]
    assert len(entries) == 10 and data["labels"] == {"0": "benign", "1": "malignant"}
    assert all(data[k] for k in ("training", "validation", "test"))
    e = entries[0]
    mask = np.asarray(nib.load(str(tmp_path / e["mask"])).dataobj)
    assert (mask == e["mask_value"]).sum() > 0
    img = nib.load(str(tmp_path / e["image"]))
    assert img.shape == (48, 48, 24) and np.allclose(img.header.get_zooms(), (0.8, 0.8, 1.25))
    assert (tmp_path / "lesions.csv").read_text().count("\n") == 11
    with pytest.raises(ConfigError):
        make_lesion_volume_dataset(tmp_path, n=2)
