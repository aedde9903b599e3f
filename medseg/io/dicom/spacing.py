"""Slice spacing along the stack: regular, missing slices / uneven spacing (resampled on request), gantry tilt.

Positions are the slices' ``ImagePositionPatient`` projected on the slice normal (mm, ascending).
Float jitter (positions rounded in the header, e.g. to 0.1 mm) is not irregular spacing; a missing
slice or a real change of spacing is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import GeometryError
from medseg.io.dicom.findings import Findings
from medseg.io.dicom.slices import Slice, as_number

__all__ = [
    "StackSpacing",
    "stack_spacing",
    "off_uniform_grid",
    "uneven_gaps",
    "JITTER_FRACTION",
    "MAX_GAP_RATIO",
    "MIN_GAP_RATIO",
]

#: a slice may sit this fraction of the spacing (+ 5 µm) off the uniform grid from first to last slice
JITTER_FRACTION = 0.2
#: a gap longer than this times the median gap is irregular (a missing slice: 2x)
MAX_GAP_RATIO = 1.5
#: a gap shorter than this times the median gap is irregular
MIN_GAP_RATIO = 0.5


@dataclass
class StackSpacing:
    """The slice spacing of a stack and the corrections ``resample=True`` asked for.

    Attributes
    ----------
    dz : slice spacing (mm) of the output grid.
    resample_z : output positions along the normal (mm) when uneven spacing is interpolated, else None.
    deshear : per-slice in-plane shift ``(di, dj)`` in pixels when a gantry tilt is corrected, else None.
    """

    dz: float
    resample_z: np.ndarray | None = None
    deshear: list[tuple[float, float]] | None = None


def off_uniform_grid(s: np.ndarray) -> bool:
    """True when a position lies more than ``JITTER_FRACTION`` of the spacing off the uniform grid.

    The uniform grid runs from the first to the last position in ``len(s) - 1`` equal steps.
    """
    dz = float(s[-1] - s[0]) / (len(s) - 1)
    resid = s - (s[0] + np.arange(len(s)) * dz)
    return bool(np.abs(resid).max() > JITTER_FRACTION * abs(dz) + 0.005)


def uneven_gaps(gaps: np.ndarray) -> bool:
    """True when a gap is longer than ``MAX_GAP_RATIO`` or shorter than ``MIN_GAP_RATIO`` times the median."""
    med = float(np.median(gaps))
    return bool(np.any(gaps > MAX_GAP_RATIO * med) or np.any(gaps < MIN_GAP_RATIO * med))


def stack_spacing(
    vol: Sequence[Slice],
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    pixel_size: tuple[float, float],
    where: str,
    findings: Findings,
    resample: bool,
) -> StackSpacing:
    """The spacing of the sorted slices ``vol``; irregular spacing and tilt are errors unless ``resample``.

    Parameters
    ----------
    vol : the slices of one volume, sorted by ``s`` (position along the normal, mm).
    axes : unit row direction ``r``, column direction ``c`` and normal ``n`` (LPS).
    pixel_size : ``(dx, dy)`` mm (along a row, down a column).
    """
    if len(vol) == 1:
        ds = vol[0].hdr.values
        thick = as_number(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness"), 1.0)
        return StackSpacing(thick if thick > 0 else 1.0)
    s_arr = np.array([s.s for s in vol])
    out = _regular_spacing(vol, s_arr, where, findings, resample)
    out.deshear = _gantry_tilt(vol, s_arr, axes, pixel_size, where, findings, resample)
    return out


def _regular_spacing(
    vol: Sequence[Slice], s_arr: np.ndarray, where: str, findings: Findings, resample: bool
) -> StackSpacing:
    """Spacing from the positions ``(s_last - s_first) / (n - 1)``; missing slices / uneven spacing flagged."""
    nz = len(s_arr)
    diffs = np.diff(s_arr)
    span = float(s_arr[-1] - s_arr[0])
    dz = span / (nz - 1)
    if not (off_uniform_grid(s_arr) or uneven_gaps(diffs)):
        return StackSpacing(dz)
    what = _describe_irregularity(vol, diffs)
    if not resample:
        findings.fail(
            GeometryError,
            f"{where}: {what}. Re-export the complete series, or load with "
            "resample=True to interpolate onto a uniform grid (reported)",
        )
        return StackSpacing(dz)
    med = float(np.median(diffs))
    dz = float(np.min(diffs[diffs > 0.01])) if np.any(diffs > 0.01) else med
    dz = med if not np.isfinite(dz) else min(dz, med)
    nt = int(round(span / dz)) + 1
    resample_z = s_arr[0] + np.arange(nt) * (span / (nt - 1))
    dz = span / (nt - 1)
    findings.problems.append(f"resampled: {what}; linearly interpolated onto {nt} slices {dz:.3f} mm apart")
    return StackSpacing(dz, resample_z=resample_z)


def _describe_irregularity(vol: Sequence[Slice], diffs: np.ndarray) -> str:
    """``missing slice(s): ...`` when the worst gap is a whole multiple of the spacing, else ``non-uniform ...``."""
    med = float(np.median(diffs))
    k = int(np.argmax(np.abs(diffs - med)))
    a, b = vol[k].hdr.src, vol[k + 1].hdr.src
    ratio = diffs[k] / med if med > 0 else 0
    if abs(ratio - round(ratio)) < 0.05 and round(ratio) >= 2:
        return (
            f"missing slice(s): gap of {diffs[k]:.3f} mm between {a} and {b} where the series "
            f"spacing is {med:.3f} mm (~{int(round(ratio)) - 1} slice(s) missing)"
        )
    return (
        f"non-uniform slice spacing: {diffs.min():.3f} to {diffs.max():.3f} mm (largest deviation between {a} and {b})"
    )


def _gantry_tilt(
    vol: Sequence[Slice],
    s_arr: np.ndarray,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    pixel_size: tuple[float, float],
    where: str,
    findings: Findings,
    resample: bool,
) -> list[tuple[float, float]] | None:
    """In-plane drift of the positions along the stack: an error, or per-slice shifts with ``resample``."""
    r, c, n = axes
    dx, dy = pixel_size
    ipps = np.array([s.ipp for s in vol])
    lateral = ipps - np.outer(s_arr - s_arr[0], n) - ipps[0]
    lat = np.stack([lateral @ r, lateral @ c], axis=1)  # (nz, 2) mm
    max_lat = float(np.abs(lat).max())
    if max_lat <= max(0.01, 0.02 * min(dx, dy)):
        return None
    coef = np.polyfit(s_arr - s_arr[0], lat, 1)  # (2, 2): slope, offset per in-plane axis
    resid = lat - (np.outer(s_arr - s_arr[0], coef[0]) + coef[1])
    angle = float(np.degrees(np.arctan(np.linalg.norm(coef[0]))))
    if np.abs(resid).max() > 0.1 * min(dx, dy) + 0.01:
        findings.fail(
            GeometryError,
            f"{where}: slice positions do not lie on a line (in-plane offsets up to "
            f"{max_lat:.2f} mm); corrupt positions or mixed series",
        )
    elif resample:
        findings.problems.append(f"resampled: gantry tilt of {angle:.2f} deg corrected by shifting each slice in plane")
        return [(float(lat[k, 0] / dx), float(lat[k, 1] / dy)) for k in range(len(vol))]
    else:
        findings.fail(
            GeometryError,
            f"{where}: gantry tilt of {angle:.2f} deg (slices sheared by up to {max_lat:.2f} mm); "
            "load with resample=True to correct it by in-plane shifts (reported)",
        )
    return None
