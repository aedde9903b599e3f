"""Pixel size from OME-TIFF, ImageJ and plain TIFF resolution metadata (medseg.io.resolution)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from medseg.io.resolution import read_pixel_size_um


def test_plain_tiff_centimetre_tags(tmp_path):
    p = tmp_path / "a.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint16), resolution=(1e4 / 0.325, 1e4 / 0.325), resolutionunit="CENTIMETER")
    ps = read_pixel_size_um(p)
    assert ps is not None and ps.source == "tiff" and ps.um == pytest.approx(0.325, rel=1e-4)


def test_display_dpi_is_not_a_pixel_size(tmp_path):
    p = tmp_path / "b.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    assert read_pixel_size_um(p) is None
    q = tmp_path / "c.tif"
    tifffile.imwrite(q, np.zeros((8, 8), np.uint8))
    assert read_pixel_size_um(q) is None
    assert read_pixel_size_um(tmp_path / "missing.tif") is None
    (tmp_path / "x.png").write_bytes(b"not really")
    assert read_pixel_size_um(tmp_path / "x.png") is None


def test_imagej_unit(tmp_path):
    p = tmp_path / "ij.tif"
    tifffile.imwrite(
        p, np.zeros((8, 8), np.uint16), imagej=True, resolution=(1 / 0.65, 1 / 0.65), metadata={"unit": "micron"}
    )
    ps = read_pixel_size_um(p)
    assert ps is not None and ps.source == "imagej" and ps.um == pytest.approx(0.65, rel=1e-4)
    q = tmp_path / "ij_nm.tif"
    tifffile.imwrite(
        q, np.zeros((8, 8), np.uint16), imagej=True, resolution=(1 / 250, 1 / 250), metadata={"unit": "nm"}
    )
    assert read_pixel_size_um(q).um == pytest.approx(0.25, rel=1e-4)


def test_ome_tiff_physical_size(tmp_path):
    p = tmp_path / "o.ome.tif"
    tifffile.imwrite(
        p,
        np.zeros((8, 10), np.uint16),
        ome=True,
        metadata={"PhysicalSizeX": 0.11, "PhysicalSizeY": 0.12, "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"},
    )
    ps = read_pixel_size_um(p)
    assert ps is not None and ps.source == "ome"
    assert ps.x_um == pytest.approx(0.11) and ps.y_um == pytest.approx(0.12)
