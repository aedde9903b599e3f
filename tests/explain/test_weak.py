"""CAM -> pseudo-masks and boxes: thresholds, components, intensity refinement."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.explain.weak import (
    cam_to_mask,
    largest_components,
    mask_boxes,
    pseudo_masks,
    refine_with_intensity,
)


def gauss(shape, center, sigma):
    g = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return np.exp(-sum((x - c) ** 2 for x, c in zip(g, center)) / (2 * sigma**2))


def disk(shape, center, r):
    g = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum((x - c) ** 2 for x, c in zip(g, center)) <= r * r


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_otsu_and_fixed_thresholds():
    cam = gauss((40, 40), (20, 20), 5)
    m, t = cam_to_mask(cam)
    assert 0.2 < t < 0.8 and m[20, 20] and not m[0, 0]
    m5, t5 = cam_to_mask(cam * 7 + 3, 0.5)  # normalised first: the scale does not matter
    assert t5 == 0.5 and m5.sum() == (cam >= 0.5).sum()
    empty, tn = cam_to_mask(np.zeros((8, 8)))
    assert not empty.any() and np.isnan(tn)
    with pytest.raises(InputError, match="threshold"):
        cam_to_mask(cam, 2.0)


def test_components_by_size_and_by_saliency():
    m = np.zeros((30, 30), bool)
    m[2:12, 2:12] = True  # 100 px, faint
    m[20:25, 20:25] = True  # 25 px, salient
    w = np.where(m, 0.1, 0.0)
    w[20:25, 20:25] = 1.0
    assert largest_components(m, 1).sum() == 100
    assert largest_components(m, 1, weights=w).sum() == 25
    assert largest_components(m, 2).sum() == 125
    assert largest_components(m, 2, min_size=30).sum() == 100
    assert mask_boxes(m).tolist() == [[2, 2, 12, 12], [20, 20, 25, 25]]
    assert mask_boxes(np.zeros((4, 4, 4), bool)).shape == (0, 6)


def test_intensity_refinement_snaps_a_coarse_cam_to_the_object():
    obj = disk((48, 48), (24, 20), 8)
    image = np.where(obj, 60.0, 200.0) + np.random.default_rng(0).normal(0, 5, obj.shape)  # dark lesion
    cam = gauss((48, 48), (26, 22), 9)  # coarse, shifted, too wide
    coarse, _ = cam_to_mask(cam, 0.2)
    refined = refine_with_intensity(coarse, image, cam=cam)
    assert dice(refined, obj) > 0.95 > dice(coarse, obj)
    # bright object, polarity from the mask vs its surroundings (no cam given)
    refined_b = refine_with_intensity(coarse, 255 - image, cam=None)
    assert dice(refined_b, obj) > 0.95
    with pytest.raises(InputError):
        refine_with_intensity(coarse, image[:10])


def test_pseudo_masks_batch_2d_and_3d():
    cams = np.stack([gauss((32, 32), (10, 10), 4), gauss((32, 32), (22, 20), 3)])[:, None]
    labels = pseudo_masks(cams)
    assert len(labels) == 2
    for lab, c in zip(labels, [(10, 10), (22, 20)]):
        assert lab.mask[c] and lab.boxes.shape == (1, 4)
        r0, c0, r1, c1 = lab.boxes[0]
        assert r0 <= c[0] < r1 and c0 <= c[1] < c1
    images = np.stack([np.where(disk((32, 32), (10, 10), 5), 0.0, 1.0)] * 2)[:, None]
    refined = pseudo_masks(cams[:1], images=images[:1], refine=True)
    assert dice(refined[0].mask, disk((32, 32), (10, 10), 5)) > 0.9
    with pytest.raises(InputError, match="refine"):
        pseudo_masks(cams, refine=True)
    cam3 = gauss((16, 16, 12), (8, 5, 6), 2)[None, None]
    lab3 = pseudo_masks(cam3, threshold=0.5)[0]
    assert lab3.mask.shape == (16, 16, 12) and lab3.boxes.shape == (1, 6)
