"""Localisation metrics of saliency maps, on hand-made maps and a hand-made model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medseg.errors import InputError
from medseg.metrics.localisation import (
    deletion_auc,
    deletion_curve,
    map_dice,
    map_iou,
    pointing_game,
    randomisation_check,
    randomise_weights,
    rank_correlation,
    threshold_map,
)


def square(shape=(32, 32), r0=8, r1=16, c0=8, c1=16):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def test_pointing_game_hits_misses_and_tolerance():
    mask = square()
    inside = np.zeros((32, 32))
    inside[10, 10] = 1.0
    outside = np.zeros((32, 32))
    outside[10, 19] = 1.0  # 4 px right of the square (col 15 is its edge)
    flat = np.ones((32, 32))
    maps = np.stack([inside, outside, flat])[:, None]
    masks = np.stack([mask, mask, mask])[:, None]
    assert pointing_game(maps, masks).tolist() == [True, False, False]
    assert pointing_game(maps, masks, tolerance=4).tolist() == [True, True, False]
    assert pointing_game(inside, mask).tolist() == [True]
    # an empty mask cannot be pointed at
    assert pointing_game(inside, np.zeros_like(mask)).tolist() == [False]
    # 3D batch (B, 1, X, Y, Z)
    m3 = np.zeros((1, 1, 8, 8, 8), bool)
    m3[0, 0, 2:4, 2:4, 2:4] = True
    c3 = np.zeros((1, 1, 8, 8, 8))
    c3[0, 0, 3, 3, 3] = 5.0
    assert pointing_game(c3, m3).tolist() == [True]
    with pytest.raises(InputError, match="differ"):
        pointing_game(inside, mask[:10])


def test_thresholded_map_dice_and_iou_have_known_values():
    mask = square()  # 8x8 = 64 px
    shifted = square(c0=12, c1=20).astype(float)  # overlap 8x4 = 32 px
    assert map_dice(shifted, mask, threshold=0.5)[0] == pytest.approx(2 * 32 / 128)
    assert map_iou(shifted, mask, threshold=0.5)[0] == pytest.approx(32 / 96)
    # a smooth blob whose Otsu threshold recovers the square exactly
    rng = np.random.default_rng(0)
    noisy = mask * 1.0 + 0.05 * rng.random(mask.shape)
    assert map_dice(noisy[None, None], mask[None, None])[0] == pytest.approx(1.0)
    # empty reference: NaN, not a fake score
    assert np.isnan(map_dice(noisy, np.zeros_like(mask))[0])
    with pytest.raises(InputError):
        threshold_map(noisy[None], threshold=1.5)


def test_threshold_map_otsu_on_a_bimodal_map():
    m = np.zeros((1, 20, 20))
    m[0, 5:10, 5:10] = 0.9
    m[0] += 0.02
    t = threshold_map(m)
    assert t.sum() == 25 and t[0, 5:10, 5:10].all()


class RegionModel(nn.Module):
    """Two classes; logit1 = 20 * mean intensity of the top-left quadrant - 5."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        q = x[:, :, :8, :8].mean(dim=(1, 2, 3))
        l1 = 20 * q - 5 + 0 * self.w
        return torch.stack([torch.zeros_like(l1), l1], 1)


def test_deletion_auc_ranks_a_faithful_map_first():
    model = RegionModel()
    img = torch.zeros(1, 16, 16)
    img[:, :8, :8] = 1.0  # p(class 1) = sigmoid(15) ~ 1
    good = np.zeros((16, 16))
    good[:8, :8] = 1.0
    good += np.linspace(0, 0.1, 256).reshape(16, 16)
    bad = 1.0 - good  # most salient = irrelevant pixels
    f, p = deletion_curve(model, img, good, target=1, steps=8, baseline="zero")
    assert len(f) == len(p) == 9 and p[0] == pytest.approx(1.0, abs=1e-3) and p[-1] < 0.01
    auc_good = deletion_auc(model, img, good, target=1, steps=16, baseline="zero")
    auc_bad = deletion_auc(model, img, bad, target=1, steps=16, baseline="zero")
    auc_rand = deletion_auc(model, img, good, target=1, steps=16, baseline="zero", order="random")
    assert auc_good < auc_rand < auc_bad
    assert auc_good < 0.25 and auc_bad > 0.7


def test_rank_correlation_and_randomisation_check():
    rng = np.random.default_rng(0)
    a = rng.random((4, 1, 16, 16))
    same = randomisation_check(a, a * 2 + 1)  # a monotone transform: identical ranking
    assert same["spearman_mean"] == pytest.approx(1.0) and not same["passed"]
    indep = randomisation_check(a, rng.random((4, 1, 16, 16)))
    assert abs(indep["spearman_mean"]) < 0.2 and indep["passed"]
    assert rank_correlation(a[0], -a[0]) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(np.ones(5), np.arange(5)))
    with pytest.raises(InputError):
        randomisation_check(a, a[:2])


def test_randomise_weights_changes_a_copy_only():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.rand(2, 1, 8, 8))
    with torch.no_grad():
        net[1].running_mean.fill_(3.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rnd = randomise_weights(net, seed=1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not torch.equal(rnd[0].weight, net[0].weight)
    assert float(rnd[1].running_mean.abs().max()) == 0.0
    rnd2 = randomise_weights(net, seed=1)
    assert torch.equal(rnd[0].weight, rnd2[0].weight)  # seeded
    part = randomise_weights(net, seed=1, layers=["4"])
    assert torch.equal(part[0].weight, net[0].weight) and not torch.equal(part[4].weight, net[4].weight)


def test_randomise_with_calibration_re_estimates_norm_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU6()).eval()
    x = torch.rand(8, 1, 10, 10) * 50 + 100
    rnd = randomise_weights(net, seed=0, calibrate=x)
    out = rnd[0](x)
    assert torch.allclose(rnd[1].running_mean, out.mean((0, 2, 3)), rtol=1e-3, atol=1e-3)
    assert not rnd.training and rnd[1].momentum == net[1].momentum
