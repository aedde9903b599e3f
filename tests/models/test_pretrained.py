"""EfficientNet-Lite0 ImageNet weights in MONAI's EfficientNet: loaded right, adapted right."""

from __future__ import annotations

import pytest
import torch
from skimage import data

from medseg.errors import CheckpointError, ConfigError
from medseg.models.pretrained import (
    EfficientNetLite0Encoder,
    adapt_input_conv,
    efficientnet_lite0,
    imagenet_preprocess,
    load_pretrained,
)

CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


@pytest.fixture(scope="module")
def lite0():
    return efficientnet_lite0(pretrained=True).eval()


def test_chelsea_is_a_cat(lite0):
    x = imagenet_preprocess(data.chelsea())
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        p = lite0(x).softmax(1)[0]
    top = int(p.argmax())
    assert top in CATS, f"top-1 class {top} is not a cat"
    assert float(p[list(CATS)].sum()) > 0.8  # confident, not a lucky argmax


def test_random_init_is_not_a_cat():
    torch.manual_seed(0)
    m = efficientnet_lite0(pretrained=False).eval()
    with torch.no_grad():
        p = m(imagenet_preprocess(data.chelsea())).softmax(1)[0]
    assert float(p[list(CATS)].sum()) < 0.1


def test_relu6_and_no_squeeze_excitation(lite0):
    names = [type(m).__name__ for m in lite0.modules()]
    assert "ReLU6" in names and "MemoryEfficientSwish" not in names and "Swish" not in names
    assert not any("_se_" in k for k in lite0.state_dict())


def test_gray_stem_sums_rgb_filters(lite0):
    gray = efficientnet_lite0(pretrained=True, in_channels=1, num_classes=2).eval()
    w_rgb = lite0._conv_stem.weight
    assert torch.allclose(gray._conv_stem.weight, w_rgb.sum(1, keepdim=True))
    # a gray image through the gray stem == the same image replicated to RGB through the RGB stem
    g = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a = gray._conv_stem(gray._conv_stem_padding(g))
        b = lite0._conv_stem(lite0._conv_stem_padding(g.repeat(1, 3, 1, 1)))
    assert torch.allclose(a, b, atol=1e-5)
    # new head: random, right size; body weights identical
    assert gray._fc.out_features == 2
    assert torch.equal(gray._blocks[3][0]._depthwise_conv.weight, lite0._blocks[3][0]._depthwise_conv.weight)
    assert gray.pretrained_report["n_mismatched"] == 0 and "_conv_stem.weight" in gray.pretrained_report["adapted"]


def test_adapt_input_conv_multichannel():
    w = torch.randn(8, 3, 3, 3)
    w5 = adapt_input_conv(w, 5)
    assert w5.shape == (8, 5, 3, 3)
    # a constant image gives the same response
    assert torch.allclose(w5.sum(1), w.sum(1), atol=1e-5)


def test_encoder_strides():
    enc = EfficientNetLite0Encoder(pretrained=True).eval()
    with torch.no_grad():
        feats = enc(torch.randn(2, 3, 128, 96))
    assert [tuple(f.shape[2:]) for f in feats] == [(32, 24), (16, 12), (8, 6), (4, 3)]
    assert [f.shape[1] for f in feats] == enc.out_channels == [24, 40, 112, 320]
    with pytest.raises(ConfigError):
        EfficientNetLite0Encoder(out_strides=(3,))


def test_load_pretrained_report_and_key_map(tmp_path, lite0):
    sd = {("backbone." + k): v for k, v in lite0.state_dict().items()}
    sd["backbone.extra.weight"] = torch.zeros(3)
    sd["backbone._fc.weight"] = torch.zeros(5, 1280)  # wrong head size
    path = tmp_path / "w.pt"
    torch.save(sd, path)
    model = efficientnet_lite0(pretrained=False, num_classes=2)
    rep = load_pretrained(model, path, key_map=[(r"^backbone\.", "")])
    assert "extra.weight" in rep.unexpected or "backbone.extra.weight" in rep.unexpected
    assert [m[0] for m in rep.mismatched] == ["_fc.weight", "_fc.bias"]  # 1000-class head vs 2
    assert set(rep.missing) == {"_fc.weight", "_fc.bias"}
    assert torch.equal(model._conv_head.weight, lite0._conv_head.weight)
    with pytest.raises(CheckpointError, match="key_map"):
        load_pretrained(efficientnet_lite0(pretrained=False), {"nothing.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="strict"):
        load_pretrained(
            efficientnet_lite0(pretrained=False, num_classes=2), path, key_map={r"^backbone\.": ""}, strict=True
        )


def test_pretrained_3d_is_refused():
    with pytest.raises(ConfigError, match="2D"):
        efficientnet_lite0(pretrained=True, spatial_dims=3)


def test_optional_sources_need_their_packages():
    import importlib.util

    from medseg.errors import MissingDependencyError

    m = efficientnet_lite0(pretrained=False)
    if importlib.util.find_spec("timm") is None:
        with pytest.raises(MissingDependencyError, match="timm"):
            load_pretrained(m, "timm:efficientnet_lite0")
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(MissingDependencyError, match="torchvision"):
            load_pretrained(m, "torchvision:resnet18")
