"""Text on the review pictures: orientation letters, captions, score labels and the class legend.

Pillow's built-in font (scalable with FreeType, no font files, headless); texts are yellow with a
dark outline so they read on any image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medseg.palette import class_color

__all__ = ["load_font", "font_size", "draw_texts", "draw_letters", "legend"]

_TEXT_COLOR = (255, 255, 0)


@lru_cache(maxsize=8)
def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` pixels (a fixed-size bitmap font without FreeType); cached."""
    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):  # pragma: no cover - old Pillow / no FreeType
        return ImageFont.load_default()


def font_size(shape: tuple[int, int]) -> int:
    """Letter size (px, 12..24) for an image of ``shape`` ``(H, W)``."""
    return int(np.clip(min(shape[:2]) // 14, 12, 24))


def draw_texts(rgb: np.ndarray, items: list[tuple[str, tuple[int, int], str]], size: int) -> np.ndarray:
    """Draw texts with a dark outline. items: (text, (x, y), anchor as in Pillow, e.g. "mt")."""
    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    font = load_font(size)
    for text, xy, anchor in items:
        d.text(
            xy, text, fill=_TEXT_COLOR, font=font, anchor=anchor, stroke_width=max(1, size // 8), stroke_fill=(0, 0, 0)
        )
    return np.asarray(im)


def draw_letters(rgb: np.ndarray, letters: Mapping[str, str]) -> np.ndarray:
    """letters: {"top","bottom","left","right"} -> text, drawn at the middle of each edge."""
    h, w = rgb.shape[:2]
    size = font_size((h, w))
    pad = max(2, size // 4)
    pos = {
        "top": ((w // 2, pad), "mt"),
        "bottom": ((w // 2, h - pad), "mb"),
        "left": ((pad, h // 2), "lm"),
        "right": ((w - pad, h // 2), "rm"),
    }
    return draw_texts(rgb, [(t, *pos[k]) for k, t in letters.items() if t], size)


def legend(rgb: np.ndarray, classes: Sequence[int], names: Mapping[int, str]) -> np.ndarray:
    """Append a legend strip (colour swatch + class name per present class) below the image."""
    classes = [int(k) for k in classes if int(k) > 0]
    if not classes:
        return rgb
    h, w = rgb.shape[:2]
    size = max(10, min(16, w // 20))
    font = load_font(size)
    line = size + 6
    sw = size
    # flow the entries into rows that fit the width
    rows: list[list[tuple[int, str, int]]] = [[]]
    x = 4
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for k in classes:
        text = names.get(k, f"class {k}")
        tw = int(probe.textlength(text, font=font))
        ew = sw + 4 + tw + 12
        if rows[-1] and x + ew > w:
            rows.append([])
            x = 4
        rows[-1].append((k, text, x))
        x += ew
    strip = Image.new("RGB", (w, line * len(rows) + 4), (0, 0, 0))
    d = ImageDraw.Draw(strip)
    for r, row in enumerate(rows):
        y = 2 + r * line
        for k, text, x0 in row:
            d.rectangle([x0, y + 3, x0 + sw - 1, y + 3 + sw - 1], fill=class_color(k))
            d.text((x0 + sw + 4, y + 3 + sw // 2), text, fill=(255, 255, 255), font=font, anchor="lm")
    return np.concatenate([rgb, np.asarray(strip)], axis=0)
