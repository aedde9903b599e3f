"""Running a detection network: input normalisation, score maps, tiled detection of cases.

Score maps are ``(h, w)`` float32 in [0, 1] for image windows ``(h, w, 3)`` uint8 RGB; detection on
them is :func:`medseg.engine.tiling.detect_tiled` (tiles with a context margin, peaks, NMS).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medseg.config import DetectionConfig
from medseg.engine.tiling import ScoreFn, detect_tiled
from medseg.errors import ConfigError
from medseg.models.detection import MitosisCNN
from medseg.tasks.detection.annotations import Case
from medseg.tasks.detection.params import DetectionParams

__all__ = ["to_network_input", "score_map_fn", "detect_cases"]


def to_network_input(x: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 or [0, 1] float -> normalised float32 (3, H, W) array (``(x - 0.5) / 0.25``)."""
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    return ((np.moveaxis(x, -1, 0) - 0.5) / 0.25).astype(np.float32)


def score_map_fn(model: nn.Module, method: str, device: torch.device | str | None = None) -> ScoreFn:
    """A function (h, w, 3) uint8 -> (h, w) float32 score map in [0, 1] for ``model``.

    Proximity: the input is reflect-padded to a multiple of 16 for the U-Net, the sigmoid map cropped
    back. Mitosis: :meth:`MitosisCNN.dense` (reflect padding), sigmoid.
    """
    dev = torch.device(device or "cpu")
    if method == "mitosis" and not isinstance(model, MitosisCNN):
        raise ConfigError(f"method 'mitosis' needs a patch CNN model such as 'mitosis_cnn', not {type(model).__name__}")

    def fn(img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(to_network_input(np.asarray(img)))[None].to(dev)
        h, w = x.shape[-2:]
        with torch.no_grad():
            if isinstance(model, MitosisCNN) and method == "mitosis":
                y = model.dense(x)
            else:
                ph, pw = (-h) % 16, (-w) % 16
                if ph or pw:
                    mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
                    x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
                y = model(x)[..., :h, :w]
            return torch.sigmoid(y)[0, 0].float().cpu().numpy()

    return fn


def detect_cases(
    model: nn.Module,
    cases: Sequence[Case],
    p: DetectionParams,
    cfg: DetectionConfig,
    device: torch.device | str | None,
    threshold: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Tiled detection on each case's image: ``[(points (N, 2) (x, y), scores (N,)), ...]``."""
    fn = score_map_fn(model, p.method, device)
    return [
        detect_tiled(
            fn,
            c.image,
            tile=cfg.infer.tile_size,
            margin=cfg.infer.tile_margin,
            min_distance_px=p.min_distance_px,
            threshold=threshold,
            sigma_px=p.sigma_px,
        )
        for c in cases
    ]
