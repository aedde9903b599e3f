"""The one Grad-CAM map helper of explain and weak supervision: resize_map and classifier_cams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.visualize.visualizer import default_upsampler
from torch import nn

from medseg.errors import InputError
from medseg.explain.maps import classifier_cams, resize_map


class BrightNet(nn.Module):
    """Gray classifier: logit1 = mean(relu(blurred image)), logit0 = -logit1 (class 1 'looks at' bright pixels)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.fill_(1.0 / 9)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def test_resize_map_keeps_a_map_of_the_right_size():
    m = np.random.default_rng(0).random((7, 9)).astype(np.float64)
    out = resize_map(m, (7, 9))
    assert out.dtype == np.float32 and out.shape == (7, 9) and np.allclose(out, m, atol=1e-7)
    assert resize_map(m[None], (7, 9)).shape == (7, 9)  # (1, h, w) too


def test_resize_map_is_bilinear_with_half_pixel_centres_and_clipped():
    m = np.array([[0.0, 1.0], [0.0, 1.0]])
    out = resize_map(m, (4, 4))
    assert np.allclose(out, [[0.0, 0.25, 0.75, 1.0]] * 4)  # align_corners=False, edges clamped
    # the convention MONAI's Grad-CAM upsampler uses from the target layer to the input
    small = torch.rand(1, 1, 5, 6)
    ref = default_upsampler((13, 17))(small)[0, 0].numpy()
    assert np.allclose(resize_map(small[0, 0], (13, 17)), np.clip(ref, 0, 1), atol=1e-6)
    over = resize_map(np.array([[-1.0, 2.0], [0.5, 0.5]]), (3, 3))
    assert over.min() >= 0.0 and over.max() <= 1.0
    with pytest.raises(InputError, match="2D map"):
        resize_map(np.zeros((2, 3, 4)), (8, 8))


def test_classifier_cams_give_one_map_per_image_at_its_own_size():
    images = []
    for h, w, (r, c) in ((40, 40, (10, 30)), (24, 36, (18, 6)), (50, 30, (25, 15))):
        img = np.zeros((h, w), np.uint8)
        img[max(0, r - 3) : r + 3, max(0, c - 3) : c + 3] = 255  # one bright square
        images.append(img)
    info = {"image_size": 32, "channels": "gray"}
    res = classifier_cams(BrightNet().eval(), info, images, layer="features.1", batch_size=2)
    assert [m.shape for m in res.maps] == [im.shape for im in images]
    assert res.logits.shape == (3, 2) and res.targets.tolist() == [1, 1, 1] and res.layer == "features.1"
    for img, m in zip(images, res.maps):
        assert m.dtype == np.float32 and 0.0 <= m.min() and m.max() <= 1.0
        peak = np.unravel_index(np.argmax(m), m.shape)
        assert img[peak] == 255 or m[img == 255].max() > 0.9  # the map points at the bright square
    # one target per image (as weak supervision re-uses the trained model's targets)
    res0 = classifier_cams(BrightNet().eval(), info, images, layer="features.1", target=torch.tensor([0, 1, 0]))
    assert res0.targets.tolist() == [0, 1, 0]
    assert classifier_cams(BrightNet(), info, images, layer="features.1", target=[0]).targets.tolist() == [0, 0, 0]
    with pytest.raises(InputError, match="2 targets for 3 images"):
        classifier_cams(BrightNet(), info, images, target=[0, 1])
    with pytest.raises(InputError, match="no images"):
        classifier_cams(BrightNet(), info, [])
