"""Slice planning: from the headers of a series to the volume it makes, every irregularity found.

Shared by :func:`medseg.io.discover` (to describe a series) and :func:`medseg.io.load` (to build it).
The steps, each a small function (``docs/io.md``, "DICOM geometry rules"): localizers out, slices
without geometry out (or stacked without patient geometry when none has any), one orientation,
one matrix and pixel spacing, sort by position along the normal, duplicate positions / 4D channels
(:mod:`.stacking`), slice spacing and gantry tilt (:mod:`.spacing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.errors import FileFormatError, GeometryError, MedsegError
from medseg.io.dicom.findings import Findings
from medseg.io.dicom.header import Header
from medseg.io.dicom.slices import Slice, samples_out, slices_of
from medseg.io.dicom.spacing import stack_spacing
from medseg.io.dicom.stacking import stack_volumes
from medseg.io.geometry import dicom_affine
from medseg.io.safety import clean_text

__all__ = ["Plan", "plan_volume"]


@dataclass
class Plan:
    """How to build the volume of a series (see :func:`plan_volume`).

    Attributes
    ----------
    volumes : channels -> slices in order along the normal.
    affine : (4, 4) voxel -> RAS mm.
    spacing : ``(dx, dy, dz)`` mm.
    shape : ``(X, Y, Z)`` of the output (Z after resampling).
    channels : volumes x samples per pixel.
    problems, excluded, errors : see :class:`~medseg.io.dicom.findings.Findings`.
    resample_z : target positions along the normal (non-uniform spacing, ``resample=True``).
    deshear : per-slice in-plane shifts in pixels (gantry tilt, ``resample=True``).
    channel_key : the header value that tells the volumes of a 4D series apart.
    """

    volumes: list[list[Slice]]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    channels: int
    problems: list[str]
    excluded: list[str]
    errors: list[tuple[type[MedsegError], str]]
    resample_z: np.ndarray | None = None
    deshear: list[tuple[float, float]] | None = None
    channel_key: str | None = None


def _empty_plan(f: Findings) -> Plan:
    return Plan([], np.eye(4), (1.0, 1.0, 1.0), (0, 0, 0), 1, f.problems, f.excluded, f.errors)


def plan_volume(headers: list[Header], where: str, resample: bool = False) -> Plan:
    """Sort, group and check the slices of ``headers``; never raises (errors are collected in the plan).

    ``where`` names the series in messages (a folder or file, never a DICOM value); ``resample``
    turns irregular spacing and gantry tilt into reported corrections instead of errors.
    """
    f = Findings()
    f.problems.extend(f"{h.src}: {h.note}" for h in headers if h.note)
    slices = _drop_localizers([s for h in headers for s in slices_of(h)], f)
    if not slices:
        f.fail(GeometryError, f"{where}: no image slices")
        return _empty_plan(f)
    with_geo = [s for s in slices if s.ipp is not None and s.iop is not None]
    if not with_geo:
        return _plan_without_geometry(slices, where, f)
    slices = _drop_without_geometry(slices, with_geo, f)
    slices = _one_orientation(slices, where, f)
    matrix = _matrix(slices, where, f)
    if matrix is None:
        return _empty_plan(f)
    rows, cols, spp = matrix
    r, c, n = _slice_axes(slices[0], f)
    for s in slices:
        s.s = float(_ipp(s) @ n)
    slices.sort(key=lambda s: (s.s, s.instance))
    dx, dy = _pixel_size(slices[0], f)
    volumes, channel_key = stack_volumes(slices, where, f)
    vol0 = volumes[0]
    stack = stack_spacing(vol0, (r, c, n), (dx, dy), where, f, resample)
    aff = dicom_affine(np.concatenate([r, c]), _ipp(vol0[0]), (dy, dx), n * stack.dz)
    nz = len(vol0) if stack.resample_z is None else len(stack.resample_z)
    return Plan(
        volumes,
        aff,
        (float(dx), float(dy), float(abs(stack.dz))),
        (cols, rows, nz),
        len(volumes) * spp,
        f.problems,
        f.excluded,
        f.errors,
        resample_z=stack.resample_z,
        deshear=stack.deshear,
        channel_key=channel_key,
    )


def _ipp(s: Slice) -> np.ndarray:
    assert s.ipp is not None  # slices without a position were left out by _drop_without_geometry
    return s.ipp


def _iop(s: Slice) -> np.ndarray:
    assert s.iop is not None  # slices without an orientation were left out by _drop_without_geometry
    return s.iop


#: the finding of a series made only of localizers (SeriesInfo.localizer is set from it)
ALL_LOCALIZERS = "image(s) are localizers (ImageType LOCALIZER/SCOUT): loaded as they are"


def _drop_localizers(slices: list[Slice], f: Findings) -> list[Slice]:
    """Slices whose ImageType says LOCALIZER or SCOUT are excluded (and reported)."""
    is_loc = ["LOCALIZER" in s.image_type or "SCOUT" in s.image_type for s in slices]
    if slices and all(is_loc):  # a localizer series (or one localizer named by the user): that is the image
        f.problems.append(f"all {len(slices)} {ALL_LOCALIZERS}")
        return slices
    keep = []
    for s, loc in zip(slices, is_loc):
        if loc:
            f.excluded.append(f"{s.hdr.src}: localizer (ImageType {'/'.join(clean_text(t, 16) for t in s.image_type)})")
        else:
            keep.append(s)
    if len(keep) < len(slices):
        f.problems.append(f"{len(slices) - len(keep)} localizer image(s) excluded")
    return keep


def _plan_without_geometry(slices: list[Slice], where: str, f: Findings) -> Plan:
    """No slice has a position and orientation (CR, SC, US cine): stacked along k, 1 mm, origin 0."""
    if len(slices) > 1:
        f.problems.append(
            "no ImagePositionPatient/ImageOrientationPatient: frames stacked along k with 1 mm "
            "spacing, origin 0 (not patient coordinates)"
        )
    else:
        f.problems.append(
            "no patient geometry (ImagePositionPatient/ImageOrientationPatient): identity orientation, origin 0"
        )
    ps = slices[0].pixel_spacing
    if not (ps[0] > 0 and ps[1] > 0):
        f.problems.append(f"PixelSpacing {list(ps)} is not positive: 1.0 mm used (pixel units)")
        ps = (1.0, 1.0)
    aff = dicom_affine([1, 0, 0, 0, 1, 0], [0, 0, 0], ps, None)
    h0 = slices[0].hdr.values
    sizes = {(s.hdr.values.get("Rows"), s.hdr.values.get("Columns")) for s in slices}
    if len(sizes) > 1:
        f.fail(
            GeometryError,
            f"{where}: {len(slices)} images of different sizes {sorted(sizes)} and no patient "
            "geometry: they are not one volume; load the files one by one",
        )
        return _empty_plan(f)
    shape = (int(h0.Columns), int(h0.Rows), len(slices))
    spp = samples_out(h0)
    return Plan([slices], aff, (float(ps[1]), float(ps[0]), 1.0), shape, spp, f.problems, f.excluded, f.errors)


def _drop_without_geometry(slices: list[Slice], with_geo: list[Slice], f: Findings) -> list[Slice]:
    """Some slices have a position and orientation: the others are excluded (and reported)."""
    if len(with_geo) < len(slices):
        for s in slices:
            if s.ipp is None or s.iop is None:
                f.excluded.append(f"{s.hdr.src}: no ImagePositionPatient/ImageOrientationPatient")
        f.problems.append(f"{len(slices) - len(with_geo)} image(s) without position/orientation excluded")
    return with_geo


def _one_orientation(slices: list[Slice], where: str, f: Findings) -> list[Slice]:
    """The slices of the main orientation: small other groups are localizers, big ones an error."""
    # cluster by tolerance (not by rounding, which could split jittered values at a rounding boundary)
    groups: list[list[Slice]] = []
    for s in slices:
        for g in groups:
            if np.abs(_iop(g[0]) - _iop(s)).max() < 1e-3:
                g.append(s)
                break
        else:
            groups.append([s])
    if len(groups) == 1:
        return slices
    order = sorted(groups, key=len, reverse=True)
    main, others = order[0], order[1:]
    if all(len(g) <= 3 for g in others) and len(main) >= 2 * max(len(g) for g in others):
        for g in others:
            for s in g:
                f.excluded.append(f"{s.hdr.src}: localizer (orientation differs from the series)")
        f.problems.append(f"{sum(len(g) for g in others)} image(s) of a different orientation excluded as localizers")
        return main
    desc = ", ".join(
        f"{len(g)} slice(s) with orientation {[round(float(v), 3) for v in _iop(g[0])]}" for g in order[:3]
    ) + (f" and {len(order) - 3} more orientations" if len(order) > 3 else "")
    f.fail(
        GeometryError,
        f"{where}: mixed slice orientations in one series ({desc}); split the series or load one orientation",
    )
    return main


def _matrix(slices: list[Slice], where: str, f: Findings) -> tuple[int, int, int] | None:
    """``(rows, columns, samples per pixel)``; every slice must have the same matrix and pixel spacing."""
    h0 = slices[0].hdr.values
    try:
        rows, cols = int(h0.Rows), int(h0.Columns)
    except Exception:
        f.fail(FileFormatError, f"{slices[0].hdr.src}: no Rows/Columns")
        return None
    spp = samples_out(h0)
    for s in slices:
        d = s.hdr.values
        if (_int(d.get("Rows")), _int(d.get("Columns"))) != (rows, cols):
            f.fail(
                GeometryError,
                f"{where}: image size differs between {slices[0].hdr.src} ({rows}x{cols}) and "
                f"{s.hdr.src} ({d.get('Rows')}x{d.get('Columns')})",
            )
            break
        if not np.allclose(s.pixel_spacing, slices[0].pixel_spacing, rtol=1e-4, atol=1e-4):
            f.fail(GeometryError, f"{where}: pixel spacing differs between {slices[0].hdr.src} and {s.hdr.src}")
            break
    return rows, cols, spp


def _int(v: object) -> int:
    try:
        return int(v)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return -1


def _slice_axes(s: Slice, f: Findings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row direction ``r``, column direction ``c`` and slice normal ``r x c`` (LPS)."""
    iop = _iop(s)
    r, c = iop[:3], iop[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(r @ c) > 1e-3:
        f.fail(
            GeometryError,
            f"{s.hdr.src}: ImageOrientationPatient {[round(float(v), 4) for v in iop]} is not two orthonormal "
            "direction cosines (corrupt header?)",
        )
    r = r / max(np.linalg.norm(r), 1e-9)
    c = c / max(np.linalg.norm(c), 1e-9)
    return r, c, np.cross(r, c)


def _pixel_size(s: Slice, f: Findings) -> tuple[float, float]:
    """``(dx, dy)`` mm from PixelSpacing ``(dy, dx)``; a non-positive value is an error (absolute value used)."""
    dy, dx = s.pixel_spacing
    if not (dx > 0 and dy > 0):
        f.fail(GeometryError, f"{s.hdr.src}: PixelSpacing {[dy, dx]} is not positive (corrupt header?)")
        dx, dy = abs(dx) or 1.0, abs(dy) or 1.0
    return dx, dy
