"""Sliding-window inference, flip TTA, post-processing and uncertainty."""

import numpy as np
import torch
from torch import nn

from medseg.engine.inference import (
    component_volumes_ml,
    entropy_uncertainty,
    postprocess_labels,
    sliding_window_probs,
)


class Threshold(nn.Module):
    """Two-class 'network': logit of class 1 = 10 * (x - 0.5)."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 10 * (x - 0.5)], 1)


def test_sliding_window_matches_pointwise_model():
    x = torch.zeros(1, 1, 40, 30, 20)
    x[:, :, 10:25, 5:20, 4:12] = 1.0
    probs, dis = sliding_window_probs(
        Threshold(), x, (16, 16, 16), sw_batch_size=3, overlap=0.5, tta_axes=[0, 1, 2], return_disagreement=True
    )
    assert probs.shape == (1, 2, 40, 30, 20)
    assert torch.allclose(probs.sum(1), torch.ones(1, 40, 30, 20), atol=1e-5)
    assert torch.equal(probs.argmax(1)[0] == 1, x[0, 0] > 0.5)
    assert float(dis.max()) == 0.0  # a pointwise model is flip-equivariant


def test_smaller_than_window_is_padded():
    x = torch.ones(1, 1, 5, 6)
    probs, _ = sliding_window_probs(Threshold(), x, (16, 16))
    assert probs.shape == (1, 2, 5, 6) and bool((probs.argmax(1) == 1).all())


def test_postprocess_small_largest_fill():
    lab = np.zeros((30, 30, 30), np.uint8)
    lab[2:12, 2:12, 2:12] = 1  # big liver
    lab[6, 6, 6] = 0  # hole
    lab[20:22, 20:22, 20:22] = 1  # small extra liver piece
    lab[15:20, 2:7, 2:7] = 2  # class 2 blob
    lab[25, 25, 25] = 2  # speck
    out = postprocess_labels(lab, largest_component=[1], min_size_voxels=5, fill_holes=True)
    assert out[6, 6, 6] == 1
    assert out[21, 21, 21] == 0
    assert out[25, 25, 25] == 0
    assert (out == 2).sum() == 125


def test_entropy_uncertainty_and_volumes():
    probs = torch.zeros(2, 4, 4)
    probs[0] = 0.5
    probs[1] = 0.5
    lab = torch.zeros(4, 4, dtype=torch.long)
    lab[:2] = 1
    assert abs(entropy_uncertainty(probs, lab) - 1.0) < 1e-5
    sure = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])
    assert entropy_uncertainty(sure, torch.ones(4, 4)) < 1e-3
    vols = component_volumes_ml(np.ones((10, 10, 10), np.uint8), np.diag([-2.0, -2.0, 3.0, 1.0]), ["bg", "liver"])
    assert vols == {"liver": 12.0}


def test_windows_are_blended_on_the_gpu_only_when_the_output_fits():
    from medseg.engine.inference import stitch_device

    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device object needs no GPU
    shape = (512, 512, 300)  # a CT: (3 classes + count map) x 4 bytes x 2 copies = 2.5 GB blended
    assert stitch_device(cpu, n_classes=3, spatial_shape=shape, free_bytes=None) == cpu
    assert stitch_device(cuda, n_classes=3, spatial_shape=shape, free_bytes=40 * 2**30) == cuda  # 40 GiB free
    assert stitch_device(cuda, n_classes=3, spatial_shape=shape, free_bytes=4 * 2**30) == cpu  # 4 GiB: the CPU
    assert stitch_device(cuda, n_classes=None, spatial_shape=(64, 64, 64), free_bytes=2**30) == cuda
