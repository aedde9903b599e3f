"""Image/label overlay tolerance (``affines_close``, ``check_image_label``): pinned from both sides.

The tolerance is ``tol_mm`` (0.01 mm by default) on the translation, and on the linear part scaled by
100 voxels (a voxel size that is off by 1e-4 mm drifts 0.01 mm across a 100-voxel grid).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medseg.errors import LabelMismatchError
from medseg.io import affines_close, check_image_label


def _grid(spacing=(1.0, 1.0, 1.0), origin=(-20.0, 30.0, 40.0)) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = origin
    return a


def _image(affine: np.ndarray, shape=(8, 8, 8)) -> MetaTensor:
    return MetaTensor(torch.zeros((1, *shape)), affine=torch.as_tensor(affine, dtype=torch.float64))


def test_a_one_mm_shift_on_a_one_mm_grid_is_a_mismatch():
    a = _grid()
    b = a.copy()
    b[0, 3] += 1.0
    assert not affines_close(a, b)
    with pytest.raises(LabelMismatchError, match="differ by up to 1 mm"):
        check_image_label(_image(a), _image(b), "ct.nii.gz", "lab.nii.gz")


def test_sub_micrometre_jitter_everywhere_overlays():
    rng = np.random.default_rng(0)
    a = _grid((0.8, 0.8, 2.5))
    b = a + np.pad(rng.uniform(-9e-4, 9e-4, (3, 4)), ((0, 1), (0, 0)))  # translation: < 1e-3 mm
    b[:3, :3] = a[:3, :3] + rng.uniform(-9e-6, 9e-6, (3, 3))  # linear part: < 1e-3 mm over 100 voxels
    assert affines_close(a, b)
    check_image_label(_image(a), _image(b))


@pytest.mark.parametrize("delta, close", [(0.0105, False), (0.0095, True)])
def test_translation_tolerance_is_tol_mm(delta, close):
    a = _grid()
    b = a.copy()
    b[1, 3] += delta
    assert affines_close(a, b) is close


@pytest.mark.parametrize("delta, close", [(1.05e-4, False), (0.95e-4, True)])
def test_voxel_size_tolerance_is_tol_mm_over_100_voxels(delta, close):
    # a voxel size off by delta drifts 100 * delta mm across a 100-voxel grid: 0.0105 mm no, 0.0095 mm yes
    a = _grid((0.8, 0.8, 2.5))
    b = a.copy()
    b[2, 2] += delta
    assert affines_close(a, b) is close
    if close:
        check_image_label(_image(a), _image(b))
    else:
        with pytest.raises(LabelMismatchError, match="do not overlay"):
            check_image_label(_image(a), _image(b))


@pytest.mark.parametrize("delta, close", [(1.05e-4, False), (0.95e-4, True)])
def test_direction_tolerance_is_tol_mm_over_100_voxels(delta, close):
    # a slightly rotated grid: an off-diagonal term of delta mm per voxel
    a = _grid()
    b = a.copy()
    b[0, 1] += delta
    assert affines_close(a, b) is close


def test_tol_mm_scales_both_parts():
    a = _grid()
    b = a.copy()
    b[0, 3] += 0.05
    b[1, 1] += 4e-4  # 0.04 mm over 100 voxels
    assert not affines_close(a, b)
    assert affines_close(a, b, tol_mm=0.06)
    assert not affines_close(a, b, tol_mm=0.045)


def test_different_shapes_or_flips_never_overlay():
    a = _grid()
    assert not affines_close(a, a[:3, :3])
    flipped = a.copy()
    flipped[0, 0] = -1.0
    assert not affines_close(a, flipped)
