"""Fold ensembles: one model that averages the probabilities of its members (the K fold models).

:class:`FoldEnsemble` is an ``nn.Module`` that predicts like any member, so code written for one
network runs it unchanged: its output, passed through the softmax (or sigmoid) that the caller
already applies, is the **average of the members' probabilities** (nnU-Net's fold ensemble):

- ``output="softmax"`` (segmentation, classification): ``log(mean_k softmax(z_k / T_k))``, whose
  softmax is the mean probability (``T_k``: each member's calibration temperature, default 1);
- ``output="sigmoid"`` (detection score maps): ``logit(mean_k sigmoid(z_k))``, whose sigmoid is the
  mean score map.

The members' disagreement is kept for uncertainty: :meth:`FoldEnsemble.member_probabilities`
returns each member's probabilities, :func:`mutual_information` the ensemble's epistemic
uncertainty (entropy of the mean minus mean entropy of the members, BALD; 0 when the members agree)
and :func:`member_std` the spread of the members' probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

__all__ = ["FoldEnsemble", "Output", "mutual_information", "member_std", "mean_probabilities"]

Output = Literal["softmax", "sigmoid"]

#: probabilities are clamped to [EPS, 1 - EPS] before a log / logit
EPS = 1e-7


def _main_output(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The main output of a network (deep-supervision networks return a list, the full-size head first)."""
    return out if isinstance(out, torch.Tensor) else out[0]


def _probabilities(z: torch.Tensor, output: Output, temperature: float = 1.0) -> torch.Tensor:
    z = z.float()
    if output == "sigmoid":
        return torch.sigmoid(z / temperature)
    return torch.softmax(z / temperature, dim=1)


def _to_logits(p: torch.Tensor, output: Output) -> torch.Tensor:
    p = p.clamp(EPS, 1 - EPS)
    if output == "sigmoid":
        return torch.log(p) - torch.log1p(-p)
    return torch.log(p)


class FoldEnsemble(nn.Module):
    """The average of several trained networks of the same task (e.g. the folds of a cross-validation).

    Parameters
    ----------
    members : the networks (eval mode is set by the caller, as for one network); each maps
        ``(B, C, *S)`` to logits ``(B, K, *S)`` (or a deep-supervision list, whose first entry is used).
    output : ``"softmax"`` (class probabilities over dim 1) or ``"sigmoid"`` (independent scores).
    temperatures : calibration temperature of each member (its logits are divided by it), default 1.
    names : a label per member (e.g. ``fold_0``), for logs and model cards.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        output: Output = "softmax",
        temperatures: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
    ):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if output not in ("softmax", "sigmoid"):
            raise ValueError(f"output must be 'softmax' or 'sigmoid', got {output!r}")
        self.members = nn.ModuleList(members)
        self.output: Output = output
        self.temperatures = [float(t) for t in (temperatures or [1.0] * len(members))]
        if len(self.temperatures) != len(members):
            raise ValueError("one temperature per member")
        self.names = list(names) if names is not None else [f"member_{i}" for i in range(len(members))]

    def __len__(self) -> int:
        return len(self.members)

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's probabilities of ``x`` ``(B, C, *S)``: ``(M, B, K, *S)`` float32."""
        return torch.stack(
            [_probabilities(_main_output(m(x)), self.output, t) for m, t in zip(self.members, self.temperatures)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, *S)`` whose softmax (sigmoid) is the members' mean probability."""
        return _to_logits(self.member_probabilities(x).mean(0), self.output)

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """Dense score-map logits of patch classifiers (members with a ``dense`` method, e.g. ``MitosisCNN``)."""
        maps = []
        for m, t in zip(self.members, self.temperatures):
            dense = getattr(m, "dense", None)
            if dense is None:
                raise TypeError(f"ensemble member {type(m).__name__} has no dense() method")
            maps.append(_probabilities(dense(x), self.output, t))
        return _to_logits(torch.stack(maps).mean(0), self.output)


def mean_probabilities(member_probs: torch.Tensor) -> torch.Tensor:
    """The ensemble probability ``(B, K, *S)`` of member probabilities ``(M, B, K, *S)``."""
    return member_probs.mean(0)


def mutual_information(member_probs: torch.Tensor, output: Output = "softmax", normalise: bool = True) -> torch.Tensor:
    """Members' disagreement per sample / voxel: entropy of the mean minus the mean entropy (BALD).

    Parameters
    ----------
    member_probs : ``(M, B, K, *S)`` probabilities of ``M`` members (softmax over K, or K sigmoid scores).
    output : ``"softmax"`` (entropy over K) or ``"sigmoid"`` (binary entropy of each score, summed over K).
    normalise : divide by the largest possible value (``log K``, or ``K log 2``), giving 0..1.

    Returns
    -------
    ``(B, *S)`` float: 0 where every member predicts the same distribution; large where confident
    members contradict each other (epistemic uncertainty), unlike the entropy of the mean, which is
    also large where all members agree that a voxel is ambiguous.
    """
    p = member_probs.float().clamp(EPS, 1 - EPS)
    if output == "sigmoid":

        def h(q: torch.Tensor) -> torch.Tensor:  # binary entropies of (B, K, *S) scores, summed over K
            return -(q * q.log() + (1 - q) * (1 - q).log()).sum(dim=1)

        mi = h(p.mean(0)) - torch.stack([h(m) for m in p]).mean(0)
        top = p.shape[2] * math.log(2.0)
    else:
        mean = p.mean(0)
        h_mean = -(mean * mean.log()).sum(dim=1)
        h_members = -(p * p.log()).sum(dim=2).mean(0)
        mi = h_mean - h_members
        top = math.log(max(p.shape[2], 2))
    mi = mi.clamp_min(0.0)
    return mi / top if normalise else mi


def member_std(member_probs: torch.Tensor) -> torch.Tensor:
    """Standard deviation over members of each probability: ``(M, B, K, *S)`` -> ``(B, K, *S)``."""
    return member_probs.float().std(0, unbiased=False)
