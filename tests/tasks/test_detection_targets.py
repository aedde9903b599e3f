"""Detection training targets and augmentation: proximity maps (Xie 2015), HED stain jitter."""

import numpy as np
import pytest

from medseg.data.histology import histology_image
from medseg.tasks import detection as det


def test_proximity_target():
    t = det.proximity_target(np.array([[10, 5]]), (20, 30), radius_px=4, alpha=3)
    assert t.shape == (20, 30) and t[5, 10] == pytest.approx(1.0) and t.max() == pytest.approx(1.0)
    assert t[5, 14] == 0.0 and 0 < t[5, 12] < t[5, 11] < 1
    assert det.proximity_target(np.zeros((0, 2)), (4, 4), 3).sum() == 0


def test_stain_jitter():
    img = histology_image(1, (48, 48)).image
    rng = np.random.default_rng(0)
    same = det.stain_jitter(img, 0.0, rng)
    assert np.allclose(same, img / 255.0)
    j = det.stain_jitter(img, 0.2, rng)
    assert j.shape == img.shape and j.min() >= 0 and j.max() <= 1
    assert 0.002 < np.abs(j - img / 255.0).mean() < 0.2
