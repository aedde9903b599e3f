"""U-Net (MONAI DynUNet) and FCN-32s/16s/8s builders: shapes, arbitrary sizes, skip fusion, errors."""

import pytest
import torch

from medseg.errors import ConfigError
from medseg.models import available_models, build_model
from medseg.models.fcn import _bilinear_kernel


def test_registry_has_unet_and_fcn():
    assert {"unet", "fcn"} <= set(available_models())


@pytest.mark.parametrize("dims,size", [(2, (32, 48)), (3, (16, 16, 8))])
def test_unet_shapes(dims, size):
    m = build_model("unet", spatial_dims=dims, in_channels=1, out_channels=3, channels=[4, 8, 16])
    m.eval()
    with torch.no_grad():
        y = m(torch.randn((1, 1) + size))
    assert y.shape == (1, 3) + size


def test_unet_anisotropic_strides_and_deep_supervision():
    m = build_model(
        "unet",
        spatial_dims=3,
        out_channels=2,
        channels=[4, 8, 16],
        strides=[[1, 1, 1], [2, 2, 1], [2, 2, 2]],
        deep_supervision=True,
    )
    m.train()
    y = m(torch.randn(2, 1, 16, 16, 8))
    assert y.shape == (2, 2, 2, 16, 16, 8)  # (B, 1 + deep_supr_num, C, *S)


def test_unet_bad_params():
    with pytest.raises(ConfigError, match="strides"):
        build_model("unet", channels=[4, 8, 16], strides=[[1, 1, 1], [2, 2, 2]])
    with pytest.raises(ConfigError, match="did you mean 'channels'"):
        build_model("unet", chanels=[4, 8])


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_fcn_any_input_size_2d(variant):
    m = build_model("fcn", spatial_dims=2, in_channels=3, out_channels=4, variant=variant, channels=[8, 8, 16, 16, 16])
    m.eval()
    with torch.no_grad():
        y = m(torch.randn(1, 3, 45, 70))
    assert y.shape == (1, 4, 45, 70)
    assert (m.score16 is not None) == (variant in ("16s", "8s"))
    assert (m.score8 is not None) == (variant == "8s")


def test_fcn_3d_and_efficientnet_encoder():
    m = build_model("fcn", spatial_dims=3, out_channels=2, variant="16s", channels=[4, 4, 8, 8, 8])
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 1, 40, 33, 20)).shape == (1, 2, 40, 33, 20)
    e = build_model("fcn", spatial_dims=2, in_channels=3, out_channels=2, encoder="efficientnet")
    e.eval()
    with torch.no_grad():
        assert e(torch.randn(1, 3, 64, 50)).shape == (1, 2, 64, 50)


def test_fcn_skip_fusion_matters_after_training_step():
    """FCN-8s uses stride-8 features: after one step the 8s score layer has non-zero gradient."""
    m = build_model("fcn", spatial_dims=2, out_channels=2, variant="8s", channels=[4, 4, 8, 8, 8])
    y = m(torch.randn(2, 1, 64, 64))
    torch.nn.functional.cross_entropy(y, torch.randint(0, 2, (2, 64, 64))).backward()
    assert m.score8.weight.grad.abs().sum() > 0
    assert m.score32.weight.grad.abs().sum() > 0


def test_bilinear_upsampling_init():
    """The learnable 2x upsampling starts as bilinear interpolation: a constant map stays constant."""
    up = torch.nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(_bilinear_kernel(2, 4, 2))
        y = up(torch.ones(1, 2, 6, 6))
    assert y.shape[-2:] == (12, 12)
    assert torch.allclose(y[..., 1:-1, 1:-1], torch.ones_like(y[..., 1:-1, 1:-1]))


def test_fcn_pretrained_3d_is_an_error():
    with pytest.raises(ConfigError, match="2D only"):
        build_model("fcn", spatial_dims=3, pretrained=True)


def test_fcn_pretrained_2d_imagenet_encoder():
    """pretrained: true loads every ImageNet EfficientNet-Lite0 tensor; rebuilding with encoder lite0,
    pretrained false gives the same architecture (what load_run_model does)."""
    m = build_model("fcn", spatial_dims=2, in_channels=1, out_channels=2, pretrained=True)
    rep = m.encoder.pretrained_report
    assert rep["n_loaded"] > 250 and rep["n_missing"] == 0 and rep["n_mismatched"] == 0
    again = build_model("fcn", spatial_dims=2, in_channels=1, out_channels=2, encoder="lite0", pretrained=False)
    again.load_state_dict(m.state_dict())
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 1, 50, 66)).shape == (1, 2, 50, 66)
