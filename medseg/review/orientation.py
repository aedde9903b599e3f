"""Which voxel axis is shown where in a volume view, and the patient-direction letter of each edge.

Every volume view is drawn in **one radiological convention**, whatever order the file stores:
:func:`canonical` first reorders (permutes and flips, never resamples) the voxel axes to the
nearest ``L, P, S`` order (index increasing towards the patient's left, posterior, superior), the
order of a standard DICOM axial stack. The views then show axial slices with anterior up and the
patient's left on the right of the screen, coronal slices with superior up and the patient's left
on the right, sagittal slices with superior up and anterior on the left. A RAS NIfTI and the same
volume as an LPS DICOM series therefore give identical pictures. Each edge is still labelled with
the direction the affine says it points to (R/L, A/P, S/I; two letters for an oblique axis).
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from medseg.errors import InputError

__all__ = ["canonical", "canonical_index", "orientation_letters", "view_axes", "slice_2d", "spacing_of", "best_index"]

#: the display order of every volume view: voxel axes towards the patient's Left, Posterior, Superior
DISPLAY_AXCODES = ("L", "P", "S")


def _transform(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform from the affine's voxel order to :data:`DISPLAY_AXCODES`."""
    return ornt_transform(io_orientation(np.asarray(affine, float)), axcodes2ornt(DISPLAY_AXCODES))


def canonical(volumes: list[np.ndarray | None], affine: np.ndarray) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Reorder ``(X, Y, Z)`` volumes (same grid) to the display order L, P, S, and their affine with them.

    Only axis permutations and flips (nibabel's ``apply_orientation``): voxel values are unchanged.
    Returns (the volumes, None kept as None; the 4x4 voxel -> RAS affine of the reordered grid).
    """
    aff = np.asarray(affine, float)
    first = next((v for v in volumes if v is not None), None)
    if first is None:
        return volumes, aff
    t = _transform(aff)
    out = [None if v is None else np.ascontiguousarray(apply_orientation(v, t)) for v in volumes]
    return out, aff @ inv_ornt_aff(t, first.shape[:3])


def canonical_index(affine: np.ndarray, axis: int, index: int, size: int) -> tuple[int, int]:
    """Where slice ``index`` along voxel ``axis`` (``size`` slices) of the stored array lies after
    :func:`canonical`: (axis, index) in the display order."""
    t = _transform(affine)
    return int(t[axis, 0]), (size - 1 - index) if t[axis, 1] < 0 else index


_LETTERS = {0: ("L", "R"), 1: ("P", "A"), 2: ("I", "S")}  # RAS world axis -> (letter of -, letter of +)
_VIEW_WORLD = {"axial": (2, 1, 0), "coronal": (1, 2, 0), "sagittal": (0, 2, 1)}  # (normal, rows, cols)


def _axis_roles(affine: np.ndarray) -> list[int]:
    """For each voxel axis, the RAS world axis (0 = R/L, 1 = A/P, 2 = S/I) it is nearest to."""
    rot = np.asarray(affine, float)[:3, :3]
    roles = [-1, -1, -1]
    # greedy assignment by largest normalised component so roles are a permutation even when oblique
    norm = rot / np.maximum(np.linalg.norm(rot, axis=0, keepdims=True), 1e-12)
    order = np.dstack(np.unravel_index(np.argsort(-np.abs(norm), axis=None), (3, 3)))[0]
    used_w: set[int] = set()
    for w, v in order:
        if roles[v] == -1 and w not in used_w:
            roles[v] = int(w)
            used_w.add(int(w))
    return roles


def _letter(affine: np.ndarray, vox_axis: int, positive: bool) -> str:
    """Patient direction (R/L/A/P/S/I) that the voxel axis points to (``positive``: increasing index).

    An oblique axis gets a second letter when its second-largest direction component is > sin(22.5°)."""
    d = np.asarray(affine, float)[:3, vox_axis]
    d = d / max(np.linalg.norm(d), 1e-12)
    if not positive:
        d = -d
    order = np.argsort(-np.abs(d))
    out = ""
    for n, w in enumerate(order[:2]):
        if n == 1 and abs(d[w]) <= 0.383:
            break
        out += _LETTERS[int(w)][1] if d[w] > 0 else _LETTERS[int(w)][0]
    return out


def orientation_letters(affine: np.ndarray | None, view: str = "axial") -> dict[str, str]:
    """Letters at the edges of a view drawn by :func:`overlay_volume`.

    Parameters
    ----------
    affine : 4x4 voxel->RAS affine (``None``: the RAS identity).
    view : ``"axial"``, ``"coronal"`` or ``"sagittal"``.

    Returns
    -------
    ``{"top", "bottom", "left", "right"}`` -> letters, e.g. for a standard DICOM axial stack
    (affine diag(-sx, -sy, sz)) ``{"top": "A", "bottom": "P", "left": "R", "right": "L"}``.
    """
    _, (_, row_ax, col_ax), flip_rows = view_axes(affine, view)
    aff = np.eye(4) if affine is None else np.asarray(affine, float)
    return {
        "top": _letter(aff, row_ax, positive=flip_rows),
        "bottom": _letter(aff, row_ax, positive=not flip_rows),
        "left": _letter(aff, col_ax, positive=False),
        "right": _letter(aff, col_ax, positive=True),
    }


def view_axes(affine: np.ndarray | None, view: str) -> tuple[np.ndarray, tuple[int, int, int], bool]:
    """(affine, (slice voxel axis, row voxel axis, column voxel axis), rows shown bottom-to-top?)."""
    if view not in _VIEW_WORLD:
        raise InputError(f"unknown view {view!r}: use 'axial', 'coronal' or 'sagittal'")
    aff = np.eye(4) if affine is None else np.asarray(affine, float)
    if aff.shape != (4, 4):
        raise InputError(f"affine must be 4x4, got shape {aff.shape}")
    roles = _axis_roles(aff)
    vox = {w: roles.index(w) for w in range(3)}
    n, r, c = (vox[w] for w in _VIEW_WORLD[view])
    return aff, (n, r, c), r == 2  # the slice axis runs bottom-to-top when shown vertically


def slice_2d(vol: np.ndarray, axes: tuple[int, int, int], index: int, flip_rows: bool) -> np.ndarray:
    """Slice ``index`` of ``vol`` ``(X, Y, Z)`` along ``axes[0]`` as ``(rows = axes[1], columns = axes[2])``."""
    n, r, c = axes
    sl = np.take(vol, index, axis=n)
    # remaining axes in ascending order: transpose so rows = r, cols = c
    rem = [a for a in range(3) if a != n]
    sl = sl if rem == [r, c] else sl.T
    return sl[::-1] if flip_rows else sl


def spacing_of(aff: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each voxel axis of a 4x4 affine."""
    return np.linalg.norm(aff[:3, :3], axis=0)


def best_index(lab: np.ndarray | None, axis: int) -> int:
    """The slice along ``axis`` with the most labelled voxels (the middle one when there are none)."""
    if lab is None or not np.any(lab > 0):
        return lab.shape[axis] // 2 if lab is not None else -1
    other = tuple(a for a in range(3) if a != axis)
    return int(np.argmax((lab > 0).sum(axis=other)))
