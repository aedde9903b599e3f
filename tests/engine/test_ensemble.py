"""Fold ensembles: the output's softmax / sigmoid is the members' mean probability; disagreement."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.engine.ensemble import FoldEnsemble, member_std, mutual_information
from medseg.engine.inference import sliding_window_probs


def _members(n=3, out=3, seed=0):
    torch.manual_seed(seed)
    return [nn.Conv2d(1, out, 3, padding=1) for _ in range(n)]


def test_softmax_of_output_is_the_mean_probability():
    ms = _members()
    ens = FoldEnsemble(ms).eval()
    x = torch.randn(2, 1, 8, 8)
    mean = torch.stack([torch.softmax(m(x), 1) for m in ms]).mean(0)
    assert torch.allclose(torch.softmax(ens(x), 1), mean, atol=1e-5)
    assert ens.member_probabilities(x).shape == (3, 2, 3, 8, 8)


def test_sigmoid_of_output_is_the_mean_score_map():
    ms = _members(out=1)
    ens = FoldEnsemble(ms, output="sigmoid")
    x = torch.randn(1, 1, 8, 8)
    mean = torch.stack([torch.sigmoid(m(x)) for m in ms]).mean(0)
    assert torch.allclose(torch.sigmoid(ens(x)), mean, atol=1e-5)


def test_temperatures_and_deep_supervision_lists():
    class DS(nn.Module):  # deep-supervision network: a list, the full-size head first
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return [self.m(x), self.m(x) * 0]

    ms = _members(2)
    ens = FoldEnsemble([DS(m) for m in ms], temperatures=[2.0, 0.5])
    x = torch.randn(1, 1, 4, 4)
    want = (torch.softmax(ms[0](x) / 2.0, 1) + torch.softmax(ms[1](x) / 0.5, 1)) / 2
    assert torch.allclose(torch.softmax(ens(x), 1), want, atol=1e-5)
    with pytest.raises(ValueError):
        FoldEnsemble(ms, temperatures=[1.0])
    with pytest.raises(ValueError):
        FoldEnsemble([])


def test_dense_of_patch_classifiers():
    class Patch(nn.Module):
        def __init__(self, b):
            super().__init__()
            self.b = b

        def forward(self, x):
            return x.mean((2, 3), keepdim=True) + self.b

        def dense(self, x):
            return x[:, :1] + self.b

    ens = FoldEnsemble([Patch(0.0), Patch(2.0)], output="sigmoid")
    x = torch.zeros(1, 3, 4, 4)
    want = (torch.sigmoid(torch.tensor(0.0)) + torch.sigmoid(torch.tensor(2.0))) / 2
    assert torch.allclose(torch.sigmoid(ens.dense(x)), torch.full((1, 1, 4, 4), float(want)), atol=1e-5)
    with pytest.raises(TypeError, match="dense"):
        FoldEnsemble(_members(1, out=1), output="sigmoid").dense(x)


def test_mutual_information_is_zero_for_agreement_and_high_for_confident_contradiction():
    agree = torch.tensor([[0.5, 0.5], [0.5, 0.5]]).reshape(2, 1, 2, 1)  # (M, B, K, S): both unsure
    assert float(mutual_information(agree).max()) == pytest.approx(0.0, abs=1e-6)
    clash = torch.tensor([[0.999, 0.001], [0.001, 0.999]]).reshape(2, 1, 2, 1)
    assert float(mutual_information(clash).min()) > 0.95  # normalised to 0..1
    assert float(member_std(clash).max()) == pytest.approx(0.499, abs=1e-3)
    scores = torch.tensor([0.99, 0.01]).reshape(2, 1, 1, 1)
    assert float(mutual_information(scores, output="sigmoid").max()) > 0.9
    same = torch.tensor([0.5, 0.5]).reshape(2, 1, 1, 1)
    assert float(mutual_information(same, output="sigmoid").max()) == pytest.approx(0.0, abs=1e-6)


def test_sliding_window_on_the_ensemble_gives_the_mean_probability():
    """With one window over the whole image, the existing inference code returns the mean probability."""
    ms = _members()
    ens = FoldEnsemble(ms).eval()
    x = torch.randn(1, 1, 16, 16)
    probs, _ = sliding_window_probs(ens, x, (16, 16))
    mean = torch.stack([sliding_window_probs(m, x, (16, 16))[0] for m in ms]).mean(0)
    assert torch.allclose(probs, mean, atol=1e-5)
