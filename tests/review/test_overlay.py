"""Overlay renderer: orientation letters follow the affine, physical aspect ratio, class colours, contours."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.synthetic import phantom_affine
from medseg.errors import InputError
from medseg.review import overlay as ov
from medseg.review.orientation import best_index


def _vol(shape=(40, 30, 10)):
    img = np.zeros(shape, np.int16)
    img[5:35, 5:25, 2:8] = 40  # soft-tissue block
    lab = np.zeros(shape, np.uint8)
    lab[10:20, 8:16, 3:6] = 1
    lab[24:30, 10:20, 4:5] = 2
    return img, lab


def test_standard_dicom_stack_letters_radiological_convention():
    aff = phantom_affine((2.0, 2.0, 3.0), (0.0, 0.0, 0.0))
    assert ov.orientation_letters(aff, "axial") == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert ov.orientation_letters(aff, "coronal") == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert ov.orientation_letters(aff, "sagittal") == {"top": "S", "bottom": "I", "left": "A", "right": "P"}


def test_native_sagittal_series_shows_as_stored():
    # DICOM IOP [0,1,0, 0,0,-1]: columns run posterior, rows run inferior, slices (normal) to the right
    lps = np.zeros((4, 4))
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[3, 3] = (0, 1, 0), (0, 0, -1), (-1, 0, 0), 1
    aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    assert ov.orientation_letters(aff, "sagittal") == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    vol = np.zeros((20, 30, 5))
    vol[2, 3, 1] = 1000.0  # column 2, row 3 of slice 1
    out = ov.overlay_volume(vol, None, affine=aff, view="sagittal", index=1, window=(500, 1000))
    bright = np.argwhere(out[..., 2] > 200)  # the voxel (white; the letters are yellow: low blue)
    # the stored pixel array (rows = 30 (y), cols = 20 (x)) upsampled x256/30: the voxel near the top left
    assert bright[:, 0].mean() == pytest.approx((3 + 0.5) * 256 / 30, abs=6)
    assert bright[:, 1].mean() == pytest.approx((2 + 0.5) * 256 / 30, abs=6)


def test_flipped_affine_flips_the_picture_letters_stay_radiological():
    """One convention for every stored order: a flipped affine mirrors the content, the letters stay put."""
    img, lab = _vol()
    aff = phantom_affine((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    flipped = aff.copy()
    flipped[:3, 0] *= -1  # same voxels, i now runs to the patient's right
    a = ov.overlay_volume(img, lab, affine=aff, view="axial", index=4)
    b = ov.overlay_volume(img, lab, affine=flipped, view="axial", index=4)
    # the same array re-stored with its first axis reversed (and the affine saying so) is the same picture
    stored = aff @ np.array([[-1, 0, 0, img.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    c = ov.overlay_volume(img[::-1], lab[::-1], affine=stored, view="axial", index=4)
    assert np.array_equal(a, c)
    assert a.shape == b.shape and not np.array_equal(a, b)  # the content is mirrored left-right
    h, w = a.shape[:2]
    core = (slice(h // 5, 4 * h // 5), slice(w // 5, 4 * w // 5))  # away from the letters
    assert np.array_equal(a[core], b[core][:, ::-1]) or np.abs(a[core].astype(int) - b[core][:, ::-1]).mean() < 2
    zflip = aff.copy()
    zflip[:3, 2] *= -1
    assert ov.orientation_letters(zflip, "coronal")["top"] == "I"  # the letters of the stored order


def test_letters_are_drawn_on_every_view():
    img, lab = _vol()
    aff = phantom_affine((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    for view in ("axial", "coronal", "sagittal"):
        plain = ov.overlay_volume(img, None, affine=aff, view=view, window=(0, 100))
        px = plain.astype(int)
        yellow = (px[..., 0] > 200) & (px[..., 1] > 200) & (px[..., 2] < 100)  # letter colour
        h, w = yellow.shape
        # a letter in each edge band
        assert yellow[: h // 8].any() and yellow[-h // 8 :].any()
        assert yellow[:, : w // 8].any() and yellow[:, -w // 8 :].any()


def test_physical_aspect_ratio_anisotropic_spacing():
    img, lab = _vol((40, 40, 10))
    aff = phantom_affine((1.0, 1.0, 4.0), (0.0, 0.0, 0.0))  # 40 mm x 40 mm x 40 mm
    for view in ("axial", "coronal", "sagittal"):
        out = ov.overlay_volume(img, lab, affine=aff, view=view, index=5)
        assert out.shape[0] == out.shape[1], view  # square in mm, not 40 x 10 voxels
    aff2 = phantom_affine((0.5, 1.0, 4.0), (0.0, 0.0, 0.0))  # 20 x 40 x 40 mm
    cor = ov.overlay_volume(img, None, affine=aff2, view="coronal", index=5)  # rows = z (40 mm), cols = x (20 mm)
    assert cor.shape[0] / cor.shape[1] == pytest.approx(2.0, rel=0.02)
    # 2D: (row, col) spacing
    out2 = ov.overlay_2d(np.zeros((10, 20)), spacing=(2.0, 1.0))
    assert out2.shape == (20, 20, 3)


def test_one_colour_per_class_and_legend():
    img = np.zeros((30, 30))
    lab = np.zeros((30, 30), int)
    lab[2:10, 2:10] = 1
    lab[15:25, 15:25] = 3
    out = ov.overlay_2d(img, lab, window=(0.5, 1), alpha=1.0, contour=False)
    assert tuple(out[5, 5]) == ov.class_color(1)
    assert tuple(out[20, 20]) == ov.class_color(3)
    assert tuple(out[12, 12]) == (0, 0, 0)
    assert ov.class_color(1) != ov.class_color(3)
    withleg = ov.overlay_2d(img, lab, window=(0.5, 1), class_names={1: "liver", 3: "kidney"})
    assert withleg.shape[0] > 30 and withleg.shape[1] == 30  # legend strip appended below
    legend = withleg[30:]
    for k in (1, 3):
        assert np.all(legend == np.array(ov.class_color(k), np.uint8), axis=2).any()
    assert not np.all(legend == np.array(ov.class_color(2), np.uint8), axis=2).any()  # absent class not listed


def test_contours_on_boundaries_only():
    img = np.full((30, 30), 0.5)
    lab = np.zeros((30, 30), int)
    lab[10:20, 10:20] = 2
    out = ov.overlay_2d(img, lab, window=(0.5, 1.0), alpha=0.0, contour=True)
    col = np.array(ov.class_color(2), np.uint8)
    on = np.all(out == col, axis=2)
    from skimage.segmentation import find_boundaries

    assert np.array_equal(on, find_boundaries(lab == 2, mode="inner"))
    assert tuple(out[15, 15]) == (128, 128, 128)  # inside stays the image with alpha=0


def test_ct_windows_and_percentile():
    hu = np.array([[-1000, -160, 40, 240, 1000]], np.float32)
    w = ov.window_image(hu, "soft_tissue")
    assert w[0].tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    assert ov.window_image(np.array([[-600.0]]), "lung")[0, 0] == pytest.approx(0.5)
    assert ov.window_image(np.array([[400.0]]), "bone")[0, 0] == pytest.approx(0.5)
    mr = np.random.default_rng(0).gamma(2.0, 100.0, (50, 50))
    p = ov.window_image(mr, "percentile")
    assert 0.0 <= p.min() and p.max() <= 1.0 and (p == 1.0).mean() < 0.03
    with pytest.raises(InputError, match="unknown window"):
        ov.window_image(hu, "brain-ish")


def test_metatensor_input_uses_its_affine():
    from monai.data import MetaTensor

    img, lab = _vol()
    aff = phantom_affine((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    flipped = aff.copy()
    flipped[:3, 0] *= -1
    mt = MetaTensor(img[None].astype(np.float32), affine=flipped)
    a = ov.overlay_volume(mt, lab, view="axial", index=4)
    b = ov.overlay_volume(img, lab, affine=flipped, view="axial", index=4)
    assert np.array_equal(a, b)


def test_default_slice_has_most_labels_and_montage_only_labelled_slices():
    img, lab = _vol()
    aff = np.eye(4)
    assert best_index(lab, 2) in (3, 4, 5)
    m1 = ov.montage(img, lab, affine=aff, max_slices=12)
    tile = ov.overlay_volume(img, lab, affine=aff, index=3)
    # labels on slices 3, 4, 5 only -> 3 tiles in a 2 x 2 grid
    assert m1.shape[0] > tile.shape[0] and m1.shape[1] > tile.shape[1]
    m2 = ov.montage(img, lab, affine=aff, max_slices=2, ncols=2)
    assert m2.shape[0] < m1.shape[0]


def test_lesion_view_is_cropped_around_component():
    img, lab = _vol((60, 60, 10))
    lab[:] = 0
    lab[5:50, 5:50, 2:8] = 1
    lab[30:34, 30:34, 4:6] = 4
    aff = np.eye(4)
    full = ov.overlay_volume(img, lab, affine=aff, index=5)
    les = ov.lesion_view(img, lab, affine=aff, margin_mm=5)
    assert les.shape[0] == les.shape[1]  # 14 x 14 mm crop, upsampled
    assert np.all(les == np.array(ov.class_color(4), np.uint8), axis=2).any()
    assert full.shape == (256, 256, 3)


def test_heatmap_and_markers():
    img = np.zeros((40, 50))
    cam = np.zeros((10, 10))
    cam[2, 7] = 5.0
    out = ov.heatmap_2d(img, cam, alpha=0.5)
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    hot = np.argmax(out[..., 0].astype(int) - out[..., 2])
    r, c = np.unravel_index(hot, (40, 50))
    assert abs(r - 10) <= 4 and abs(c - 37) <= 5  # the hot spot lands where the map peaks
    m = ov.markers_2d(img, np.array([[10, 20], [40, 5]]), classes=[1, 2], radius=4)
    assert tuple(m[20, 14]) == ov.class_color(1)  # ring at x + r
    assert tuple(m[5, 36]) == ov.class_color(2)  # ring at x - r
    with pytest.raises(InputError):
        ov.markers_2d(img, np.zeros((2, 2)), classes=[1])


def test_save_png_roundtrip(tmp_path):
    from PIL import Image

    img, lab = _vol()
    rgb = ov.overlay_volume(img, lab, affine=np.eye(4), class_names={1: "a", 2: "b"})
    p = ov.save_png(rgb, tmp_path / "sub" / "x.png")
    assert np.array_equal(np.asarray(Image.open(p)), rgb)
    assert [f.name for f in p.parent.iterdir()] == ["x.png"]  # no temp file left
    with pytest.raises(InputError):
        ov.save_png(rgb.astype(float), tmp_path / "y.png")


def test_save_case_overlays(tmp_path):
    from medseg.data.synthetic import CT_CLASSES, ct_phantom

    ph = ct_phantom(0, shape=(48, 48, 16), spacing=(4.0, 4.0, 6.0))
    ph.label[20:23, 20:23, 7:9] = 4
    out = ov.save_case_overlays(
        ph.image, ph.label, tmp_path, "case_000", affine=ph.affine, class_names=CT_CLASSES, lesion_label=4
    )
    assert sorted(out) == ["axial", "coronal", "lesion", "montage", "sagittal"]
    assert all(p.is_file() and p.parent == tmp_path and p.name.startswith("case_000_") for p in out.values())
