"""Registered classifiers: 2D pretrained Lite0, 2.5D, 3D MONAI nets with local checkpoints."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import CheckpointError, ConfigError
from medseg.models import available_models, build_model
from medseg.models.classifier import backbone_stages, head_parameter_names


def test_registered():
    assert {"efficientnet_lite0", "efficientnet_lite0_25d", "densenet121", "resnet"} <= set(available_models())


def test_lite0_classifier_keeps_imagenet_body():
    from medseg.models.pretrained import efficientnet_lite0

    ref = efficientnet_lite0(pretrained=True)
    m = build_model(name="efficientnet_lite0", num_classes=3, in_channels=1)
    assert m._fc.out_features == 3
    assert torch.equal(m._conv_head.weight, ref._conv_head.weight)
    assert torch.allclose(m._conv_stem.weight, ref._conv_stem.weight.sum(1, keepdim=True))
    with pytest.raises(ConfigError, match="no parameter 'num_class'.*num_classes"):
        build_model(name="efficientnet_lite0", num_class=2)


def test_25d_slices_as_channels():
    m = build_model(name="efficientnet_lite0_25d", num_slices=5, num_classes=2).eval()
    vol = torch.randn(2, 1, 64, 64, 5)
    with torch.no_grad():
        a = m(vol)
        b = m(vol[:, 0].permute(0, 3, 1, 2))  # (B, S, H, W) directly
    assert a.shape == (2, 2) and torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="5 slices"):
        m(torch.randn(1, 1, 64, 64, 3))


@pytest.mark.parametrize("name,kw", [("densenet121", {}), ("resnet", {"depth": 10})])
def test_3d_from_scratch_and_checkpoint(tmp_path, name, kw):
    torch.manual_seed(0)
    src = build_model(name=name, num_classes=4, spatial_dims=3, **kw)
    # a "pretrained" 3D network with another head: the body loads, the head is reported
    path = tmp_path / "enc.pt"
    torch.save({"model": {f"encoder.{k}": v for k, v in src.state_dict().items()}}, path)
    m = build_model(name=name, num_classes=2, spatial_dims=3, checkpoint=str(path), key_map={r"^encoder\.": ""}, **kw)
    rep = m.pretrained_report
    assert rep["n_loaded"] > 10 and rep["n_mismatched"] == 2  # the 4-class head does not fit 2 classes
    first = next(k for k in src.state_dict() if k.endswith("weight"))
    assert torch.equal(m.state_dict()[first], src.state_dict()[first])
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2)
    with pytest.raises(CheckpointError, match="no tensor"):
        build_model(name=name, num_classes=2, spatial_dims=3, checkpoint=str(path), **kw)  # no key_map: nothing fits


def test_head_and_stages():
    m = build_model(name="resnet", depth=10, spatial_dims=2, num_classes=2)
    assert head_parameter_names(m) == ["fc.weight", "fc.bias"]
    st = backbone_stages(m)
    assert st[0][0].startswith("layer4") and any(n.startswith("conv1") for n in st[-1])
    with pytest.raises(ConfigError, match="depth"):
        build_model(name="resnet", depth=11)
