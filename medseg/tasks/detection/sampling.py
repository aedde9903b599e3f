"""Training batches of the detection task: proximity crops and class-balanced mitosis patches.

Both are iterables of ``steps`` batches per epoch, drawn in the main process from NumPy's global
random generator (seeded by the trainer), so a run is reproducible from ``seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from medseg.config import DetectionConfig
from medseg.metrics.detection import match_points
from medseg.tasks.detection.annotations import Case
from medseg.tasks.detection.params import DetectionParams
from medseg.tasks.detection.scoring import detect_cases, to_network_input
from medseg.tasks.detection.targets import flip_rot90, intensity_jitter, proximity_target, stain_jitter

__all__ = ["ProximityBatches", "MitosisPatches"]

log = logging.getLogger("medseg.detection")

Batch = tuple[torch.Tensor, torch.Tensor]


def _augment(img: np.ndarray, cfg: DetectionConfig, rng: np.random.Generator) -> np.ndarray:
    """The modality's colour augmentation: HED stain jitter (he) or intensity jitter (fluorescence, brightfield)."""
    if cfg.data.modality in ("fluorescence", "brightfield"):
        return intensity_jitter(img, cfg.augment.intensity_jitter or 0.0, rng)
    return stain_jitter(img, cfg.augment.stain_jitter if cfg.augment.stain_jitter is not None else 0.05, rng)


class ProximityBatches:
    """Random crops (flip/rot90, stain jitter) with their proximity targets.

    Yields ``(x (B, 3, S, S) float32, target (B, 1, S, S) float32)`` with ``S = sampling.crop_size``
    and ``B = train.batch_size``; images smaller than a crop are reflect-padded.
    """

    def __init__(self, cases: Sequence[Case], cfg: DetectionConfig, p: DetectionParams, steps: int):
        self.cases, self.cfg, self.steps = list(cases), cfg, steps
        self.maps = [
            proximity_target(c.points_of(p.target_ids), c.image.shape[:2], p.radius_px, cfg.target.alpha)
            for c in self.cases
        ]

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        cs = self.cfg.sampling.crop_size
        bs = self.cfg.train.batch_size
        for _ in range(self.steps):
            rng = np.random.default_rng(np.random.randint(2**31))
            xs, ys = [], []
            for _ in range(bs):
                i = int(rng.integers(len(self.cases)))
                img, m = self.cases[i].image, self.maps[i]
                H, W = m.shape
                if H < cs or W < cs:
                    ph, pw = max(0, cs - H), max(0, cs - W)
                    img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
                    m = np.pad(m, ((0, ph), (0, pw)))
                    H, W = m.shape
                y0, x0 = int(rng.integers(H - cs + 1)), int(rng.integers(W - cs + 1))
                im, tm = flip_rot90([img[y0 : y0 + cs, x0 : x0 + cs], m[y0 : y0 + cs, x0 : x0 + cs]], rng)
                xs.append(to_network_input(_augment(im, self.cfg, rng)))
                ys.append(tm[None])
            yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


class MitosisPatches:
    """Class-balanced patches for the mitosis CNN: positives, hard negatives, random background.

    Yields ``(x (B, 3, P, P) float32, label (B,) float32)`` with ``P`` the CNN's receptive field.
    Hard negatives are the annotated non-target nuclei and, with ``sampling.mine_every``, the current
    model's false positives on the training images (hard-negative mining, re-mined at the start of
    every ``mine_every``-th epoch from the weights of that moment; a resumed run re-mines at its
    first epoch, so it matches an uninterrupted one exactly only with ``mine_every: 1``).
    Set :attr:`model`, :attr:`device` and :attr:`epoch_fn` (epochs completed) to enable mining.
    """

    def __init__(self, cases: Sequence[Case], cfg: DetectionConfig, p: DetectionParams, rf: int, steps: int):
        self.cfg, self.steps, self.rf, self.p = cfg, steps, rf, p
        half = rf // 2
        self.cases = list(cases)
        self.padded = [np.pad(c.image, ((half, half), (half, half), (0, 0)), mode="reflect") for c in self.cases]
        self.shapes = [c.image.shape[:2] for c in self.cases]
        self.pos = [c.points_of(p.target_ids) for c in self.cases]
        self.nuclei = [c.points[~np.isin(c.classes, p.target_ids)] if len(c.points) else c.points for c in self.cases]
        self.hard = list(self.nuclei)
        self.excl = p.min_distance_px
        self.model: nn.Module | None = None
        self.device: torch.device | None = None
        self.epoch_fn: Callable[[], int] | None = None
        self._mined_once = False
        self.n_mined = 0
        self._index()
        if not self.pos_index:
            log.warning("mitosis training: no positive (target-class) points in the training images")

    def _index(self) -> None:
        self.pos_index = [(i, j) for i, a in enumerate(self.pos) for j in range(len(a))]
        self.hard_index = [(i, j) for i, a in enumerate(self.hard) for j in range(len(a))]

    def mine(self) -> int:
        """Add the model's confident false positives (score >= 0.5, farther than the matching radius
        from every target) on the training images to the hard negatives; returns how many."""
        if self.model is None:
            return 0
        was_training = self.model.training
        self.model.eval()
        dets = detect_cases(self.model, self.cases, self.p, self.cfg, self.device, threshold=0.5)
        n = 0
        for i, (pts, _) in enumerate(dets):
            fp = pts[match_points(pts, self.pos[i], self.p.match_px).unmatched_pred] if len(pts) else pts
            self.hard[i] = np.concatenate([self.nuclei[i], fp]) if len(fp) else self.nuclei[i]
            n += len(fp)
        if was_training:
            self.model.train()
        self._index()
        self.n_mined = n
        log.info("hard-negative mining: %d false positives added to the negatives", n)
        return n

    def __len__(self) -> int:
        return self.steps

    def _patch(self, i: int, x: float, y: float) -> np.ndarray:
        H, W = self.shapes[i]
        xi, yi = int(np.clip(round(x), 0, W - 1)), int(np.clip(round(y), 0, H - 1))
        return self.padded[i][yi : yi + self.rf, xi : xi + self.rf]

    def __iter__(self) -> Iterator[Batch]:
        me = self.cfg.sampling.mine_every
        epoch = self.epoch_fn() if self.epoch_fn is not None else 0
        if self.model is not None and me and epoch > 0 and (epoch % me == 0 or not self._mined_once):
            with torch.no_grad():
                self.mine()
            self._mined_once = True
        bs = self.cfg.train.batch_size
        for _ in range(self.steps):
            rng = np.random.default_rng(np.random.randint(2**31))
            xs, ys = [], []
            for _ in range(bs):
                r = rng.random()
                if self.pos_index and r < self.cfg.sampling.positive_fraction:
                    i, j = self.pos_index[int(rng.integers(len(self.pos_index)))]
                    x, y = self.pos[i][j] + rng.uniform(-1.5, 1.5, 2)
                    label = 1.0
                elif self.hard_index and rng.random() < self.cfg.sampling.hard_negative_fraction:
                    i, j = self.hard_index[int(rng.integers(len(self.hard_index)))]
                    x, y = self.hard[i][j] + rng.uniform(-2.0, 2.0, 2)
                    label = 0.0
                else:
                    i = int(rng.integers(len(self.padded)))
                    H, W = self.shapes[i]
                    for _try in range(20):
                        x, y = rng.uniform(0, W - 1), rng.uniform(0, H - 1)
                        if len(self.pos[i]) == 0 or np.min(np.hypot(*(self.pos[i] - [x, y]).T)) > 2 * self.excl:
                            break
                    label = 0.0
                (pt,) = flip_rot90([self._patch(i, x, y)], rng)
                xs.append(to_network_input(_augment(pt, self.cfg, rng)))
                ys.append(label)
            yield torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.float32)
