"""Missing slices and uneven spacing: the thresholds of ``medseg.io.dicom.spacing``, pinned from both sides.

A series is irregular when a position lies more than 20 % of the spacing off the uniform grid
(``off_uniform_grid``), or a gap is longer than 1.5x / shorter than 0.5x the median gap
(``uneven_gaps``). Float jitter (a few percent) is not irregular.
"""

from __future__ import annotations

import numpy as np
import pytest

from medseg import io as mio
from medseg.errors import GeometryError
from medseg.io.dicom.spacing import off_uniform_grid, uneven_gaps


def _gaps(*middle: float) -> np.ndarray:
    """Gaps of a 1 mm series with ``middle`` in the middle."""
    return np.array([1.0, 1.0, 1.0, *middle, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("gap, irregular", [(1.6, True), (1.52, True), (1.48, False), (1.05, False)])
def test_a_long_gap_is_uneven_above_1_5x_the_median(gap, irregular):
    assert uneven_gaps(_gaps(gap)) is irregular


@pytest.mark.parametrize("gap, irregular", [(0.45, True), (0.48, True), (0.52, False), (0.95, False)])
def test_a_short_gap_is_uneven_below_0_5x_the_median(gap, irregular):
    assert uneven_gaps(_gaps(gap)) is irregular


@pytest.mark.parametrize("offset, irregular", [(0.3, True), (0.215, True), (0.195, False), (0.05, False)])
def test_a_slice_off_the_uniform_grid_by_more_than_20_percent_is_irregular(offset, irregular):
    # 11 slices 1 mm apart; the middle one moved by offset mm (first and last stay: the grid stays 1 mm)
    s = np.arange(11, dtype=float)
    s[5] += offset
    assert off_uniform_grid(s) is irregular


def _series(tmp_path, dicom_writer, zs):
    vol = np.stack([np.full((4, 5), float(10 * k)) for k in range(len(zs))], axis=-1)
    return dicom_writer(tmp_path / "s", vol, positions=[[0.0, 0.0, z] for z in zs], shuffle=False)


def test_one_gap_of_1_6x_the_spacing_is_reported_and_refused(tmp_path, dicom_writer):
    zs = [0.0, 1.0, 2.0, 3.0, 4.6, 5.6, 6.6]
    paths = _series(tmp_path, dicom_writer, zs)
    (info,) = mio.discover(tmp_path / "s")
    assert not info.ok and any("non-uniform slice spacing" in p for p in info.problems)
    with pytest.raises(GeometryError, match="non-uniform slice spacing: 1.000 to 1.600 mm") as ei:
        mio.load(tmp_path / "s")
    assert paths[3].name in str(ei.value) and paths[4].name in str(ei.value)
    img = mio.load(tmp_path / "s", resample=True)
    assert any(p.startswith("resampled: non-uniform slice spacing") for p in img.meta["problems"])


def test_a_gap_of_2x_the_spacing_is_a_missing_slice(tmp_path, dicom_writer):
    _series(tmp_path, dicom_writer, [0.0, 1.0, 2.0, 4.0, 5.0, 6.0])
    with pytest.raises(GeometryError, match=r"missing slice\(s\): gap of 2.000 mm .*\(~1 slice\(s\) missing\)"):
        mio.load(tmp_path / "s")


def test_a_gap_of_1_05x_the_spacing_is_jitter(tmp_path, dicom_writer):
    zs = [0.0, 1.0, 2.0, 3.0, 4.05, 5.05, 6.05]
    _series(tmp_path, dicom_writer, zs)
    (info,) = mio.discover(tmp_path / "s")
    assert info.ok and not info.problems
    img = mio.load(tmp_path / "s")
    assert img.shape[-1] == 7 and not img.meta["problems"]
    assert img.meta["spacing"][2] == pytest.approx(6.05 / 6)
