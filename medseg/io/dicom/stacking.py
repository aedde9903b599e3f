"""Slices at the same position: exact copies dropped, 4D series stacked as channels, anything else an error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.errors import GeometryError
from medseg.io.dicom.findings import Findings
from medseg.io.dicom.slices import Slice

__all__ = ["stack_volumes", "CHANNEL_KEYS"]

#: header values that tell the volumes of a 4D series apart, in the order they are tried
CHANNEL_KEYS = (
    "TemporalPositionIndex",
    "TemporalPositionIdentifier",
    "EchoNumbers",
    "DiffusionBValue",
    "TriggerTime",
    "AcquisitionNumber",
    "StackID",
)


def stack_volumes(slices: Sequence[Slice], where: str, findings: Findings) -> tuple[list[list[Slice]], str | None]:
    """Group slices sorted along the normal into volumes (channels -> slices) and the channel key.

    Slices closer than 1e-3 mm (+ 1e-3 of the median gap; at least 0.01 mm) share a position. At
    every position: exact copies (same SOPInstanceUID) are dropped and reported; equal numbers of
    images that differ in one of :data:`CHANNEL_KEYS` become channels; anything else is an error.
    """
    clusters = _position_clusters(slices)
    if all(len(cl) == 1 for cl in clusters):
        return [[cl[0] for cl in clusters]], None
    clusters = _drop_copies(clusters, findings)
    sizes = {len(cl) for cl in clusters}
    if sizes == {1}:
        return [[cl[0] for cl in clusters]], None
    m = max(sizes)
    key = _channel_key(clusters, m) if len(sizes) == 1 else None
    if key is None:
        bad = next(cl for cl in clusters if len(cl) > 1)
        findings.fail(
            GeometryError,
            f"{where}: {len(bad)} slices at the same position ({bad[0].s:.3f} mm along the "
            f"normal): {bad[0].hdr.src} and {bad[1].hdr.src}; the series mixes acquisitions. "
            "Remove the duplicates or split the series",
        )
        return [[cl[0] for cl in clusters]], None

    def order(x: Slice, key: str = key) -> tuple[int, float, str]:
        v = x.keys.get(key)
        if v is None:
            return (1, 0.0, "None")
        try:
            return (0, float(v), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(v))

    findings.problems.append(f"4D series: {m} volumes at each position, stacked as channels by {key}")
    return [[sorted(cl, key=order)[t] for cl in clusters] for t in range(m)], key


def _position_clusters(slices: Sequence[Slice]) -> list[list[Slice]]:
    svals = np.array([s.s for s in slices])
    gaps = np.diff(svals)
    pos_tol = 1e-3 + 1e-3 * (float(np.median(gaps[gaps > 0.01])) if np.any(gaps > 0.01) else 1.0)
    clusters: list[list[Slice]] = [[slices[0]]]
    for s in slices[1:]:
        if s.s - clusters[-1][0].s <= max(pos_tol, 0.01):
            clusters[-1].append(s)
        else:
            clusters.append([s])
    return clusters


def _drop_copies(clusters: list[list[Slice]], findings: Findings) -> list[list[Slice]]:
    """Exact copies of an instance (same SOPInstanceUID and frame) at one position: kept once, reported."""
    dedup = []
    ncopies = 0
    for cl in clusters:
        seen: set[tuple[str, int | None]] = set()
        out = []
        for s in cl:
            key = (str(s.hdr.values.get("SOPInstanceUID", "")), s.frame)
            if key in seen and key[0]:
                ncopies += 1
                findings.excluded.append(f"{s.hdr.src}: duplicate of another file (same SOPInstanceUID)")
                continue
            seen.add(key)
            out.append(s)
        dedup.append(out)
    if ncopies:
        findings.problems.append(f"{ncopies} duplicate file(s) (same SOPInstanceUID) ignored")
    return dedup


def _channel_key(clusters: list[list[Slice]], m: int) -> str | None:
    """The first of :data:`CHANNEL_KEYS` with ``m`` distinct values at the first position, the same at every one."""
    for key in CHANNEL_KEYS:
        vals0: list[Any] = [s.keys.get(key) for s in clusters[0]]
        if any(v is None for v in vals0) or len({str(v) for v in vals0}) != m:
            continue
        ref = sorted(str(v) for v in vals0)
        if all(sorted(str(x.keys.get(key)) for x in cl) == ref for cl in clusters):
            return key
    return None
