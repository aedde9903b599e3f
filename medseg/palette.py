"""The one colour table and the one CT window table.

Colours: a colour per class value, used by overlays, detection markers, GeoJSON and DICOM SEG.

Class value ``k`` (``k >= 1``; 0 is background) is drawn in ``CLASS_COLORS[(k - 1) % len(CLASS_COLORS)]``
(RGB, 0-255), so a class has the same colour in the PNG overlays, the review report, QuPath GeoJSON
and a DICOM SEG's recommended display colour.

CT windows: named (center, width) presets in HU, used both to draw review pictures and as intensity
clip ranges of the CT preset (:func:`window_range`). Ground floor: imports nothing from medseg.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CLASS_COLORS", "CT_WINDOWS", "class_color", "named_class_color", "window_range"]

#: one colour per class value 1, 2, 3 ... (class k uses CLASS_COLORS[(k - 1) % len])
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (0, 130, 200),  # blue
    (255, 225, 25),  # yellow
    (240, 50, 230),  # magenta
    (70, 240, 240),  # cyan
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (210, 245, 60),  # lime
    (250, 190, 212),  # pink
    (0, 128, 128),  # teal
    (170, 110, 40),  # brown
)


def class_color(k: int) -> tuple[int, int, int]:
    """RGB colour (0-255) of class value ``k`` (>= 1)."""
    return CLASS_COLORS[(int(k) - 1) % len(CLASS_COLORS)]


def named_class_color(name: str, class_names: Sequence[str]) -> tuple[int, int, int]:
    """Colour of the class called ``name`` when ``class_names[i]`` is class value ``i + 1``.

    Used where classes are named, not numbered (detections): the colour is that of the class's value.
    A name not in ``class_names`` gets the colour of the next free value.
    """
    names = list(class_names)
    k = names.index(name) + 1 if name in names else len(names) + 1
    return class_color(k)


#: CT window presets, (center, width) in HU
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "abdomen": (50.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


def window_range(name: str) -> tuple[float, float]:
    """``(low, high)`` HU of the CT window preset ``name`` (center -+ width / 2)."""
    c, w = CT_WINDOWS[name]
    return (c - w / 2, c + w / 2)
