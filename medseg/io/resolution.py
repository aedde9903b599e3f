"""Physical pixel size of microscopy images from their metadata (OME-TIFF, ImageJ TIFF, TIFF tags).

:func:`read_pixel_size_um` looks, in this order, at

1. the OME-XML of an OME-TIFF (``Pixels/@PhysicalSizeX``, ``@PhysicalSizeY`` with their units,
   micrometres by default, as the OME schema says);
2. an ImageJ TIFF's ``unit`` (``micron``, ``um``, ``µm``, ``nm``, ``mm``, ``cm``) with the TIFF
   ``XResolution`` / ``YResolution`` tags (pixels per unit);
3. plain TIFF ``XResolution`` / ``YResolution`` with ``ResolutionUnit`` centimetre or inch.

Display resolutions (72 or 96 dpi written by image editors and cameras) are not physical pixel
sizes: a value outside 0.01-100 µm per pixel is ignored. Files are read with tifffile (headers
only); anything that is not a TIFF, or has none of these, gives None.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.io.raster import TIFF_SUFFIXES

__all__ = ["PixelSize", "read_pixel_size_um", "PLAUSIBLE_UM"]

log = logging.getLogger(__name__)

#: (lowest, highest) pixel size in micrometres accepted as a physical (microscope) value
PLAUSIBLE_UM = (0.01, 100.0)

_UNIT_UM = {
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "\\u00b5m": 1.0,
    "nm": 1e-3,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}


@dataclass(frozen=True)
class PixelSize:
    """A pixel size read from a file: ``x_um``, ``y_um`` (µm per pixel) and where it came from
    (``"ome"``, ``"imagej"`` or ``"tiff"``). ``um`` is their mean (square pixels in practice)."""

    x_um: float
    y_um: float
    source: str

    @property
    def um(self) -> float:
        return (self.x_um + self.y_um) / 2


def _unit_um(unit: Any) -> float | None:
    if unit is None:
        return None
    u = str(unit).strip().lower().replace("μ", "µ")
    return _UNIT_UM.get(u)


def _ratio(v: Any) -> float:
    if isinstance(v, tuple) and len(v) == 2:
        return float(v[0]) / float(v[1]) if v[1] else 0.0
    return float(v)


def _plausible(ps: PixelSize | None) -> PixelSize | None:
    if ps is None:
        return None
    lo, hi = PLAUSIBLE_UM
    if lo <= ps.x_um <= hi and lo <= ps.y_um <= hi:
        return ps
    log.debug("ignoring pixel size %.4g x %.4g µm from %s (not a microscope scale)", ps.x_um, ps.y_um, ps.source)
    return None


def _from_ome(xml: str) -> PixelSize | None:
    root = ET.fromstring(xml)
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "Pixels":
            sx, sy = el.get("PhysicalSizeX"), el.get("PhysicalSizeY")
            if sx is None:
                return None
            fx = _unit_um(el.get("PhysicalSizeXUnit", "µm"))
            fy = _unit_um(el.get("PhysicalSizeYUnit", el.get("PhysicalSizeXUnit", "µm")))
            if fx is None or fy is None:
                return None
            x = float(sx) * fx
            y = float(sy) * fy if sy is not None else x
            return PixelSize(x, y, "ome")
    return None


def _resolution(tags: Any) -> tuple[float, float] | None:
    if "XResolution" not in tags:
        return None
    xr = _ratio(tags["XResolution"].value)
    yr = _ratio(tags["YResolution"].value) if "YResolution" in tags else xr
    if xr <= 0 or yr <= 0:
        return None
    return xr, yr


def read_pixel_size_um(path: str | Path) -> PixelSize | None:
    """The pixel size of a TIFF / OME-TIFF / ImageJ TIFF in micrometres, or None when it has none.

    Parameters
    ----------
    path : image file; non-TIFF files (PNG, JPEG) and unreadable files give None.

    Returns
    -------
    :class:`PixelSize` (``x_um``, ``y_um``, ``source``) or None.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return None
    import tifffile  # imported when a file is read, as in medseg.io.image2d

    try:
        with tifffile.TiffFile(path) as tf:
            if tf.is_ome and tf.ome_metadata:
                ps = _plausible(_from_ome(tf.ome_metadata))
                if ps is not None:
                    return ps
            tags = tf.pages[0].tags
            res = _resolution(tags)
            if res is None:
                return None
            if tf.is_imagej and tf.imagej_metadata:
                f = _unit_um(tf.imagej_metadata.get("unit"))
                if f is not None:
                    return _plausible(PixelSize(f / res[0], f / res[1], "imagej"))
            unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
            per = {2: 25400.0, 3: 10000.0}.get(int(getattr(unit, "value", unit)))  # µm per inch / cm
            if per is None:
                return None
            return _plausible(PixelSize(per / res[0], per / res[1], "tiff"))
    except Exception as e:  # a damaged header is not a pixel size; the image reader reports the file
        log.debug("no pixel size from %s: %s", path.name, e)
        return None
