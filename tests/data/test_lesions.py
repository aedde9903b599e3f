"""Synthetic lesion data: deterministic, two classes not separable by a trivial global statistic."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medseg.data.lesions import lesion_image, make_lesion_dataset
from medseg.errors import ConfigError


def _auc(neg, pos):
    neg, pos = np.asarray(neg, float), np.asarray(pos, float)
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def test_deterministic_and_shapes():
    a, ma = lesion_image(3, 1, 96)
    b, mb = lesion_image(3, 1, 96)
    assert a.shape == (96, 96, 3) and a.dtype == np.uint8 and ma.dtype == bool
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    g, mg = lesion_image(3, 1, 96, rgb=False)
    assert g.shape == (96, 96)
    assert not np.array_equal(lesion_image(4, 1, 96)[0], a)


def test_lesion_is_darker_inside_mask():
    img, m = lesion_image(0, 0, 128, rgb=False)
    assert 0.05 < m.mean() < 0.4
    assert img[m].mean() < img[~m].mean() - 30


def test_classes_not_separable_by_mean_or_size_but_by_border():
    st = {0: [], 1: []}
    for c in (0, 1):
        for s in range(60):
            img, m = lesion_image(s, c, 96)
            perim = (m ^ np.roll(m, 1, 0)).sum() + (m ^ np.roll(m, 1, 1)).sum()
            st[c].append((img.mean(), m.sum(), perim / np.sqrt(m.sum())))
    mean_auc = _auc([x[0] for x in st[0]], [x[0] for x in st[1]])
    area_auc = _auc([x[1] for x in st[0]], [x[1] for x in st[1]])
    compact_auc = _auc([x[2] for x in st[0]], [x[2] for x in st[1]])
    assert 0.35 < mean_auc < 0.65
    assert 0.35 < area_auc < 0.65
    assert compact_auc > 0.95  # the border is what differs


def test_make_dataset(tmp_path):
    path = make_lesion_dataset(tmp_path / "les", n=20, seed=1, size=64, malignant_fraction=0.3)
    d = json.loads(path.read_text())
    assert d["labels"] == {"0": "benign", "1": "malignant"}
    n = sum(len(d[k]) for k in ("training", "validation", "test"))
    assert n == 20
    for k in ("validation", "test"):
        assert {e["label"] for e in d[k]} == {0, 1}  # stratified: each split has both classes
    labels = [e["label"] for k in ("training", "validation", "test") for e in d[k]]
    assert sum(labels) == 6
    rows = list(csv.DictReader(open(tmp_path / "les" / "labels.csv")))
    assert len(rows) == 20 and (tmp_path / "les" / rows[0]["image"]).is_file()
    from skimage import io

    m = io.imread(tmp_path / "les" / rows[0]["mask"])
    assert set(np.unique(m)) <= {0, 255}


def test_bad_arguments():
    with pytest.raises(ConfigError, match="label"):
        lesion_image(0, 2)
    with pytest.raises(ConfigError, match="n >= 3"):
        make_lesion_dataset("/tmp/never", n=2)
