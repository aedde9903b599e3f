"""Writing review pictures: PNG files, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medseg.errors import InputError
from medseg.review.windowing import as_array
from medseg.utils import atomic_write

__all__ = ["save_png"]


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, 3) uint8 RGB (or (H, W) gray) array as PNG, atomically (temp file + rename).

    Returns the path written.
    """
    a = as_array(rgb)
    if a.dtype != np.uint8:
        raise InputError(f"save_png expects uint8 pixels, got {a.dtype} (render with overlay_* first)")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise InputError(f"save_png expects (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    path = Path(path)
    with atomic_write(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(a)).save(tmp, format="PNG", optimize=False)
    return path
