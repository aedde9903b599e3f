"""Data of the classification task: datalists of image-level labels, reading images, the training set.

Datalist (MSD-style JSON): ``{"training": [{"image": "a.png", "label": 1}, ...], "validation":
[...], "test": [...]}``; ``label`` is a class index or a class name from ``class_names``. Pixels are
read by :func:`medseg.io.read_image_uint8` (the one 2D reader of every task).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.config import read_datalist_json
from medseg.errors import ConfigError, FileFormatError, InputError, MissingFileError
from medseg.io import read_image_uint8
from medseg.transforms.classification import normalize_lite

__all__ = [
    "Row",
    "Split",
    "ReadImages",
    "label_index",
    "read_datalist",
    "stratified_holdout",
    "read_images",
    "load_rows",
    "ImageLabelDataset",
]

log = logging.getLogger("medseg.tasks.classification")

#: one labelled image of a datalist: (absolute image path, class index)
Row = tuple[Path, int]


@dataclass
class Split:
    """The images of one split that could be read: file names, paths and class indices ``(N,)``."""

    names: list[str]
    paths: list[Path]
    labels: np.ndarray


@dataclass
class ReadImages:
    """Result of :func:`read_images`.

    Attributes
    ----------
    images : ``(H, W)`` gray or ``(H, W, 3)`` RGB uint8 arrays of the readable files
    index : for each of ``images``, its position in the input sequence
    skipped : ``(path, reason)`` of every file that could not be read
    """

    images: list[np.ndarray] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def label_index(value: Any, class_names: Sequence[str], where: str) -> int:
    """A class index (int or digit string) or class name -> the class index.

    Raises InputError naming ``where``, the value and the known classes (with a "did you mean").
    """
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, (int, np.integer)) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        i = int(value)
        if not 0 <= i < len(class_names):
            raise InputError(f"{where}: class index {i} outside 0..{len(class_names) - 1} ({', '.join(class_names)})")
        return i
    if isinstance(value, str):
        if value in class_names:
            return list(class_names).index(value)
        m = difflib.get_close_matches(value, list(class_names), n=1)
        hint = f" (did you mean {m[0]!r}?)" if m else ""
        raise InputError(f"{where}: unknown class name {value!r}{hint}; class_names are {list(class_names)}")
    raise InputError(f"{where}: label must be a class index or name, got {value!r}")


def read_datalist(path: Path, root: Path | None, class_names: Sequence[str]) -> dict[str, list[Row]]:
    """The ``training`` / ``validation`` / ``test`` lists of a datalist as ``(image path, class index)`` rows.

    Relative image paths are relative to ``root`` (default: the datalist's folder). A ``labels``
    mapping in the file must agree with ``class_names``. Raises MissingFileError / ConfigError.
    """
    content = read_datalist_json(path)
    base = Path(root) if root else path.parent
    if "labels" in content and isinstance(content["labels"], dict):
        listed = [content["labels"][k] for k in sorted(content["labels"], key=lambda k: int(k))]
        if listed != list(class_names):
            raise ConfigError(f"datalist classes {listed} differ from config class_names {list(class_names)}", path)
    out: dict[str, list[Row]] = {}
    for key in ("training", "validation", "test"):
        rows: list[Row] = []
        for i, it in enumerate(content.get(key) or []):
            if not isinstance(it, dict) or "image" not in it or "label" not in it:
                raise ConfigError(f"datalist entry {key}[{i}] needs 'image' and 'label'", path)
            p = Path(it["image"])
            rows.append(
                (p if p.is_absolute() else base / p, label_index(it["label"], class_names, f"{path.name} {key}[{i}]"))
            )
        out[key] = rows
    if not out["training"]:
        raise ConfigError("datalist has no 'training' images", path)
    return out


def stratified_holdout(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Split rows into (training, validation), holding out ``fraction`` of each class (at least one)."""
    rng = np.random.default_rng(seed)
    labels = np.array([r[1] for r in rows])
    val_idx: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            k = max(k, 1)
        val_idx += idx[:k].tolist()
    vs = set(val_idx)
    return [r for i, r in enumerate(rows) if i not in vs], [r for i, r in enumerate(rows) if i in vs]


def read_images(paths: Sequence[Path]) -> ReadImages:
    """Read 2D images with :func:`medseg.io.read_image_uint8`; unreadable files are logged and listed.

    The one reading loop of training, ``classify`` and ``explain``: the same file gives the same
    pixels in each (and in ``detect``).
    """
    out = ReadImages()
    for i, p in enumerate(paths):
        try:
            out.images.append(read_image_uint8(p))
        except (FileFormatError, MissingFileError) as e:
            log.warning("skipping %s", e)
            out.skipped.append((Path(p), str(e)))
            continue
        out.index.append(i)
    return out


def load_rows(rows: Sequence[Row], skipped: list[dict[str, str]]) -> tuple[list[np.ndarray], Split]:
    """Read the images of datalist rows; unreadable ones are appended to ``skipped`` (image, error)."""
    res = read_images([p for p, _ in rows])
    skipped += [{"image": str(p), "error": e} for p, e in res.skipped]
    kept = [rows[i] for i in res.index]
    split = Split([p.name for p, _ in kept], [p for p, _ in kept], np.array([lab for _, lab in kept], dtype=np.int64))
    return res.images, split


class ImageLabelDataset(torch.utils.data.Dataset):
    """Training samples ``{"image": (C, S, S) float32 normalised, "label": int}`` of a uint8 batch.

    Parameters
    ----------
    images : ``(N, C, S, S)`` uint8 tensor (:func:`medseg.transforms.classification.prepare_images`)
    labels : ``(N,)`` class indices
    transform : MONAI dict transform on ``{"image": (C, S, S) float 0..255}`` (augmentation) or None;
        applied before the Lite0 normalisation.
    """

    def __init__(
        self, images: torch.Tensor, labels: np.ndarray, transform: Callable[[dict[str, Any]], Any] | None = None
    ):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        d: Any = {"image": self.images[i].float()}
        if self.transform is not None:
            d = self.transform(d)
        img = d["image"]
        img = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
        return {"image": normalize_lite(img), "label": int(self.labels[i])}
