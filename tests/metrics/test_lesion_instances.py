"""Lesion instances of a label map: counts, ids, volumes, centroids, diameters and boxes in mm."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.metrics.lesions import LESION_COLUMNS, axial_axis, find_lesions, lesion_rows, longest_diameter_mm


def _affine(spacing, origin=(0.0, 0.0, 0.0), rot=None) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = (np.eye(3) if rot is None else rot) @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def _sphere(shape, center_vox, radius_mm, spacing) -> np.ndarray:
    g = np.indices(shape).astype(float)
    d2 = sum(((g[i] - center_vox[i]) * spacing[i]) ** 2 for i in range(3))
    return d2 <= radius_mm**2


def test_sphere_volume_diameter_centroid_on_an_anisotropic_grid():
    sp = (0.7, 0.7, 2.5)
    lab = _sphere((64, 64, 24), (30, 33, 11), 12.0, sp).astype(np.uint8)
    aff = _affine(sp, origin=(-100.0, 50.0, 20.0))
    inst, les = find_lesions(lab, aff)
    assert len(les) == 1
    one = les[0]
    assert one.volume_ml == pytest.approx(4 / 3 * np.pi * 12.0**3 / 1000, rel=0.04)
    assert one.diameter_3d_mm == pytest.approx(24.0, abs=1.5)
    assert one.diameter_inplane_mm == pytest.approx(24.0, abs=1.5)
    assert one.centroid_vox == pytest.approx((30, 33, 11), abs=0.05)
    assert one.centroid_ras == pytest.approx((-100 + 30 * 0.7, 50 + 33 * 0.7, 20 + 11 * 2.5), abs=0.05)
    assert (inst == 1).sum() == one.voxels == lab.sum()
    lo, hi = np.argwhere(lab).min(0), np.argwhere(lab).max(0)
    assert one.bbox_min == tuple(lo) and one.bbox_max == tuple(hi)


def test_ids_largest_first_classes_kept_apart_and_min_size():
    lab = np.zeros((40, 40, 10), np.uint8)
    lab[2:6, 2:6, 2:6] = 1  # 64 voxels
    lab[20:30, 20:30, 2:8] = 1  # 600 voxels
    lab[30:34, 20:30, 2:8] = 2  # touches the 600-voxel one but is another class
    lab[36, 36, 5] = 1  # 1 voxel
    aff = _affine((1.0, 1.0, 2.0))  # 2 uL per voxel
    inst, les = find_lesions(lab, aff, {1: "tumour", 2: "cyst"})
    assert [(x.class_name, x.voxels) for x in les] == [("tumour", 600), ("cyst", 240), ("tumour", 64), ("tumour", 1)]
    assert [x.lesion_id for x in les] == [1, 2, 3, 4]
    assert set(np.unique(inst)) == {0, 1, 2, 3, 4}
    assert (inst == 2).sum() == 240 and np.all(lab[inst == 2] == 2)
    # min size in mL: 64 voxels = 0.128 mL survives 0.1 mL, one voxel (0.002 mL) does not
    _, kept = find_lesions(lab, aff, {1: "tumour"}, min_ml=0.1)
    assert [x.voxels for x in kept] == [600, 64]
    # a list of values selects classes
    _, only2 = find_lesions(lab, aff, [2])
    assert [x.class_value for x in only2] == [2]


def test_connectivity_full_by_default_faces_on_request():
    lab = np.zeros((6, 6, 6), np.uint8)
    lab[1, 1, 1] = lab[2, 2, 2] = 1  # corner neighbours
    assert len(find_lesions(lab, np.eye(4))[1]) == 1
    assert len(find_lesions(lab, np.eye(4), connectivity=1)[1]) == 2


def test_diameters_follow_an_oblique_affine_and_the_axial_axis():
    c, s = np.cos(0.5), np.sin(0.5)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:13, 5, 5] = 1  # 11 voxels along axis 0 at 2 mm: 20 mm centre to centre, whatever the rotation
    _, les = find_lesions(lab, _affine((2.0, 1.0, 1.0), rot=rot))
    assert les[0].diameter_3d_mm == pytest.approx(20.0, abs=1e-6)
    # a cigar along the superior axis: long in 3D, one voxel wide in each axial slice
    cigar = np.zeros((10, 10, 30), np.uint8)
    cigar[4:6, 4:6, 2:28] = 1
    _, les = find_lesions(cigar, _affine((1.0, 1.0, 1.5)))
    assert les[0].diameter_3d_mm == pytest.approx(np.sqrt(2 + (25 * 1.5) ** 2), abs=1e-6)
    assert les[0].diameter_inplane_mm == pytest.approx(np.sqrt(2), abs=1e-6)
    # the same cigar stored with the superior axis first (a sagittal stack): in-plane is still axial
    perm = np.zeros((4, 4))
    perm[2, 0] = perm[0, 1] = perm[1, 2] = 1.5
    perm[3, 3] = 1
    assert axial_axis(perm) == 0
    _, les = find_lesions(np.transpose(cigar, (2, 0, 1)), perm)
    assert les[0].diameter_inplane_mm == pytest.approx(np.sqrt(2) * 1.5, abs=1e-6)


def test_hull_shortcut_equals_all_pairs():
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 30, size=(400, 3))
    lin = np.diag([0.8, 0.8, 3.0])
    brute = max(np.linalg.norm((pts[i] - pts) @ lin.T, axis=1).max() for i in range(len(pts)))
    assert longest_diameter_mm(pts, lin) == pytest.approx(brute)
    flat = np.c_[rng.integers(0, 30, size=(100, 2)), np.zeros(100)]  # coplanar points: joggled hull
    brute = max(np.linalg.norm((flat[i] - flat) @ lin.T, axis=1).max() for i in range(len(flat)))
    assert longest_diameter_mm(flat, lin) == pytest.approx(brute)
    assert longest_diameter_mm(np.zeros((1, 3)), lin) == 0.0


def test_2d_map_rows_and_bad_input():
    lab = np.zeros((30, 30), np.int16)
    lab[5:15, 5:10] = 3
    _, les = find_lesions(lab, _affine((0.5, 0.5, 1.0)))
    assert les[0].volume_ml == pytest.approx(50 * 0.25 / 1000)
    assert les[0].diameter_3d_mm == les[0].diameter_inplane_mm == pytest.approx(np.hypot(9, 4) * 0.5)
    rows = lesion_rows(les, case_id="c1")
    assert list(rows[0])[0] == "case_id" and list(rows[0])[1:] == list(LESION_COLUMNS)
    assert rows[0]["centroid_z_vox"] == "" and rows[0]["bbox_z1"] == ""
    with pytest.raises(InputError, match="integers"):
        find_lesions(np.full((4, 4, 4), 0.5), np.eye(4))
    with pytest.raises(InputError, match="2D or 3D"):
        find_lesions(np.zeros((2, 2, 2, 2, 2), np.uint8), np.eye(4))
    assert find_lesions(np.zeros((4, 4, 4), np.uint8), np.eye(4))[1] == []
