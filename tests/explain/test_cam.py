"""Grad-CAM / Grad-CAM++ wrapper: localisation on hand-made networks, batching, geometry, hooks."""

from __future__ import annotations

import gc

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.networks.nets import BasicUNet, DenseNet121
from torch import nn

from medseg.errors import InputError
from medseg.explain.cam import (
    CAMExplainer,
    SegmentationTarget,
    default_target_layer,
    grad_cam,
    save_cam_nifti,
    save_cam_png,
    save_cam_slices_png,
    select_slices,
)


class BlobNet(nn.Module):
    """logit1 = mean(relu(box-blurred image)), logit0 = -logit1: class 1 'looks at' bright voxels."""

    def __init__(self, spatial_dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.features = nn.Sequential(conv(1, 1, 3, padding=1, bias=False), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.fill_(1.0 / 3**spatial_dims)
        self.pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def blob_image(shape, center, r=4):
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    d2 = sum((g - c) ** 2 for g, c in zip(grid, center))
    img = (d2 <= r * r).astype(np.float32)
    return torch.as_tensor(img)[None], img.astype(bool)


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_class_map_points_at_the_object_2d(method):
    x, mask = blob_image((48, 40), (30, 12))
    cam = grad_cam(BlobNet(2), x, target=1, method=method, layer="features.1")
    assert cam.shape == (1, 48, 40)
    assert float(cam.min()) >= 0.0 and float(cam.max()) == pytest.approx(1.0)
    peak = np.unravel_index(int(cam[0].argmax()), mask.shape)
    assert mask[peak]
    # evidence against class 0: Grad-CAM's ReLU leaves nothing
    cam0 = grad_cam(BlobNet(2), x, target=0, method=method, layer="features.1")
    assert float(cam0.abs().max()) == 0.0


def test_predicted_class_is_the_default_target():
    x, _ = blob_image((32, 32), (10, 10))
    with CAMExplainer(BlobNet(2), layer="features.1") as cam:
        m = cam(x)
        assert cam.last_target.tolist() == [1]  # logit1 > 0 > logit0 for a bright blob
        assert cam.last_logits.shape == (1, 2)
    assert m.meta["cam_target"] == 1 and m.meta["cam_method"] == "gradcam"


def _small_densenet(sd=2, k=3):
    torch.manual_seed(0)
    return DenseNet121(
        spatial_dims=sd, in_channels=1, out_channels=k, init_features=8, growth_rate=4, block_config=(2, 2), bn_size=2
    ).eval()


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_batched_maps_equal_single_image_maps(method):
    """Per-sample targets in one batch give each image its own map (MONAI mixes samples)."""
    model = _small_densenet()
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = [0, 2, 1]
    with CAMExplainer(model, method=method) as cam:
        batch = cam(x, target=targets)
        singles = torch.stack([cam(x[i], target=t) for i, t in enumerate(targets)])
    assert batch.shape == (3, 1, 32, 32)
    assert batch.meta["cam_target"] == targets
    torch.testing.assert_close(
        batch.as_tensor(), singles.as_tensor() if isinstance(singles, MetaTensor) else singles, atol=1e-4, rtol=1e-3
    )


def test_same_map_as_monai_gradcam_for_one_image():
    from monai.visualize import GradCAM

    model = _small_densenet()
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    ours = grad_cam(model, x, target=1)
    ref = GradCAM(nn_module=_small_densenet(), target_layers="class_layers.relu", postprocessing=lambda t: t)(
        x, class_idx=1
    ).detach()
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    torch.testing.assert_close(ours.as_tensor(), ref, atol=1e-4, rtol=1e-3)


def test_3d_map_keeps_the_affine_and_writes_nifti(tmp_path):
    affine = torch.tensor([[-2.0, 0, 0, 10], [0, -2.0, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]])
    x0, mask = blob_image((24, 20, 12), (6, 14, 5), r=3)
    x = MetaTensor(x0, affine=affine, meta={"modality": "CT"})
    cam = grad_cam(BlobNet(3), x, target=1, method="gradcampp", layer="features.1")
    assert isinstance(cam, MetaTensor) and cam.shape == (1, 24, 20, 12)
    assert torch.allclose(cam.affine.float(), affine)
    assert cam.meta["modality"] == "CT"
    assert mask[np.unravel_index(int(cam[0].argmax()), mask.shape)]
    p = save_cam_nifti(cam, tmp_path / "cam.nii.gz")
    img = nib.load(p)
    assert np.allclose(img.affine, affine.numpy())
    assert img.shape == (24, 20, 12)
    assert np.allclose(img.get_fdata(), cam[0].numpy(), atol=1e-6)
    assert select_slices(cam, n=1) == [5]
    pngs = save_cam_slices_png(x, cam, tmp_path / "slices", "case0", n=2)
    assert len(pngs) == 2 and all(q.is_file() for q in pngs)


def test_densenet_3d_and_batched_metatensor():
    model = _small_densenet(sd=3, k=2)
    x = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    cam = grad_cam(model, x, method="gradcam")
    assert cam.shape == (2, 1, 16, 16, 16)
    assert len(cam.meta["cam_target"]) == 2


def test_hooks_removed_and_no_growth_over_many_calls():
    import weakref

    model = _small_densenet()
    relu = model.class_layers.relu
    assert relu.inplace is True
    x = torch.rand(2, 1, 32, 32)
    # watch every activation the target layer produces: none may outlive its call
    seen: list[weakref.ref] = []
    spy = relu.register_forward_hook(lambda _m, _i, out: seen.append(weakref.ref(out)))
    with CAMExplainer(model, method="gradcampp") as cam:
        for _ in range(10):
            cam(x)
        assert cam._hooked.mwh.activations == {} and cam._hooked.mwh.gradients == {}
        assert len(relu._forward_hooks) == 2 and len(relu._backward_hooks) == 1  # MONAI's + the spy
    for _ in range(10):
        grad_cam(model, x, method="gradcam")
    spy.remove()
    gc.collect()
    assert len(seen) >= 20 and all(r() is None for r in seen)  # no activation (or its graph) retained
    for m in model.modules():
        assert len(m._forward_hooks) == 0 and len(m._backward_hooks) == 0
    assert relu.inplace is True  # MONAI switches it off for its backward hook; restored
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_backbone_still_gets_a_map():
    model = _small_densenet()
    for p in model.parameters():
        p.requires_grad_(False)
    cam = grad_cam(model, torch.rand(1, 1, 32, 32), target=0)
    assert float(cam.max()) == pytest.approx(1.0)
    assert not any(p.requires_grad for p in model.parameters())


class TwoBlobSegmenter(nn.Module):
    """Channel 0 holds blob A, channel 1 blob B; class 1 logit = relu(A - .5) + relu(B - .5)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.ReLU())
        self.gate = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU())
        self.head = nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.enc[0].weight.copy_(torch.eye(2)[:, :, None, None])
            self.gate[0].weight.copy_(torch.eye(2)[:, :, None, None])
            self.gate[0].bias.fill_(-0.5)
            self.head.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]])[:, :, None, None])
            self.head.bias.copy_(torch.tensor([0.25, 0.0]))

    def forward(self, x):
        return self.head(self.gate(self.enc(x)))


def test_segmentation_cam_explains_the_region():
    a, ma = blob_image((40, 40), (10, 10))
    b, mb = blob_image((40, 40), (28, 28))
    x = torch.cat([a, b])  # (2, 40, 40)
    seg = TwoBlobSegmenter()
    # predicted class-1 mask covers both blobs: both drive it
    both = grad_cam(seg, x, target=1, layer="enc.1")
    assert both.shape == (1, 40, 40)
    assert float(both[0][ma].mean()) > 0.9 and float(both[0][mb].mean()) > 0.9
    # a user ROI around blob A: only A's features drove the class-1 logits there
    roi = torch.zeros(1, 40, 40)
    roi[:, 4:17, 4:17] = 1
    only_a = grad_cam(seg, x, target=1, layer="enc.1", roi=roi)
    assert float(only_a[0][ma].mean()) > 0.9 and float(only_a[0][mb].max()) == 0.0
    assert only_a.meta["cam_layer"] == "net.enc.1"


def test_segmentation_wrapper_scores_and_unet_default_layer():
    torch.manual_seed(0)
    unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4)).eval()
    wrapped = SegmentationTarget(unet)
    x = torch.rand(2, 1, 32, 32)
    s = wrapped(x)
    logits = unet(x)
    pred = logits.argmax(1)
    assert s.shape == (2, 2)
    assert torch.allclose(s[:, 1], (logits[:, 1] * (pred == 1)).flatten(1).sum(1), atol=1e-4)
    assert default_target_layer(unet) == "down_4"
    cam = grad_cam(unet, x, method="gradcampp")  # task auto-detected: spatial output
    assert cam.shape == (2, 1, 32, 32) and cam.meta["cam_layer"] == "net.down_4"
    assert torch.isfinite(cam.as_tensor()).all()


def test_default_layers_of_medseg_models():
    from monai.networks.nets import EfficientNetBN

    assert default_target_layer(_small_densenet()) == "class_layers.relu"
    eff = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=3, num_classes=2)
    assert default_target_layer(eff) == "_blocks.5"
    assert default_target_layer(eff, torch.rand(1, 3, 96, 96)) == "_blocks.5"
    assert default_target_layer(eff, torch.rand(1, 3, 64, 64)) == "_blocks.4"  # 5 would be 2 x 2

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = _small_densenet()

        def forward(self, x):
            return self.backbone(x)

    assert default_target_layer(Wrapper()) == "backbone.class_layers.relu"
    # unknown network: probed; the last layer that still has spatial extent
    assert default_target_layer(BlobNet(2), torch.rand(1, 1, 16, 16)) == "features.1"


def test_bad_layer_and_bad_shape_are_clear_errors():
    model = _small_densenet()
    with pytest.raises(InputError, match="did you mean"):
        grad_cam(model, torch.rand(1, 1, 32, 32), layer="class_layers.rel")
    with pytest.raises(InputError, match="spatial dims"):
        grad_cam(model, torch.rand(32, 32))
    with pytest.raises(InputError, match="unknown CAM method"):
        CAMExplainer(model, method="lime")


def test_png_overlay(tmp_path):
    x, _ = blob_image((32, 48), (16, 30))
    cam = grad_cam(BlobNet(2), x, target=1, layer="features.1")
    p = save_cam_png(x[0], cam, tmp_path / "cam.png")
    from skimage.io import imread

    rgb = imread(p)
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8
    with pytest.raises(InputError):
        save_cam_png(x[0], cam[:, :10], tmp_path / "bad.png")


class SharedActNet(nn.Module):
    """One activation module used twice (as MONAI's EfficientNet does with ``_swish``)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 8, 3, padding=1, stride=2)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.act(self.head(self.act(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def test_module_called_twice_uses_its_last_call():
    torch.manual_seed(0)
    net = SharedActNet().eval()
    x = torch.rand(2, 1, 16, 16)
    shared = grad_cam(net, x, layer="act", target=1)
    # same map as hooking a separate module that sees only the last call
    torch.manual_seed(0)
    ref_net = SharedActNet().eval()
    ref_net.load_state_dict(net.state_dict())
    ref_net.act2 = nn.ReLU6()
    ref_net.forward = lambda z: ref_net.fc(ref_net.act2(ref_net.head(ref_net.act(ref_net.stem(z)))).mean((2, 3)))
    ref = grad_cam(ref_net, x, layer="act2", target=1)
    torch.testing.assert_close(shared.as_tensor(), ref.as_tensor(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_segmentation_maps_leave_the_network_in_its_mode(mode):
    """A segmenter in eval mode stays in eval mode (its batch norm keeps running statistics) and vice versa."""
    from medseg.explain.cam import CAMExplainer

    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 8, 4))
    net.train(mode == "train")
    x = torch.randn(1, 1, 32, 32)
    with CAMExplainer(net, task="segmentation") as cam:
        cam(x, target=1)
        cam(x, target=1)
    assert net.training == (mode == "train")
    assert all(m.training == (mode == "train") for m in net.modules())
