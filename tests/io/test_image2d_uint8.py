"""The one 2D reader of the tasks: ``read_image_uint8`` = layout rule ``to_gray_or_rgb`` + value rule ``to_uint8``.

Expected pixels are written out by hand (or computed with plain integer arithmetic), never by
calling the functions under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import FileFormatError, MissingFileError
from medseg.io import as_rgb, read_image_uint8, to_uint8
from medseg.io.image2d import to_gray_or_rgb

H, W = 5, 6  # W not in 1..4, so a (3, H, W) array is unambiguously channel-first


def _gray() -> np.ndarray:
    return (np.arange(H * W).reshape(H, W) * 7 % 256).astype(np.uint8)


def _rgb() -> np.ndarray:
    g = _gray()
    return np.stack([g, 255 - g, (g // 2).astype(np.uint8)], axis=-1)


# ---------------------------------------------------------------------------------------- to_uint8
def test_uint8_is_unchanged():
    a = _gray()
    assert to_uint8(a) is a


def test_bool_is_0_or_255():
    out = to_uint8(np.array([[False, True], [True, False]]))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 255], [255, 0]]


def test_16bit_maps_zero_to_max_linearly():
    # 0 stays black, the highest value is 255: v * 255 / 4000, rounded
    out = to_uint8(np.array([[0, 100], [1000, 4000]], np.uint16))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 6], [64, 255]]  # 6.375 -> 6, 63.75 -> 64


def test_16bit_small_values_are_not_stretched_from_their_minimum():
    # [min(0, lowest), highest] = [0, 400]: 100 -> 63.75 -> 64, 300 -> 191.25 -> 191 (not 0 and 170)
    out = to_uint8(np.array([100, 300, 400], np.uint16))
    assert out.tolist() == [64, 191, 255]


def test_float_in_unit_interval_is_times_255():
    out = to_uint8(np.array([0.0, 0.2, 0.6, 1.0], np.float32))
    assert out.tolist() == [0, 51, 153, 255]


def test_float_with_negatives_maps_lowest_to_0_and_highest_to_255():
    # [-1, 4] -> [0, 255]: (v + 1) * 51
    out = to_uint8(np.array([-1.0, 0.0, 1.0, 4.0]))
    assert out.tolist() == [0, 51, 102, 255]


def test_float_above_one_is_not_clipped():
    # not fractions: [0, 2] -> [0, 255]; 0.5 is 63.75 -> 64
    assert to_uint8(np.array([0.0, 0.5, 2.0])).tolist() == [0, 64, 255]


def test_nan_and_inf_become_zero_and_constant_images_black():
    assert to_uint8(np.array([np.nan, 0.2, 1.0])).tolist() == [0, 51, 255]
    assert to_uint8(np.array([np.inf, 1.0, 4.0])).tolist() == [0, 64, 255]  # 63.75 -> 64
    assert to_uint8(np.zeros((2, 2), np.uint16)).tolist() == [[0, 0], [0, 0]]
    assert to_uint8(np.full((2, 2), -3.0)).tolist() == [[0, 0], [0, 0]]  # lowest == highest: nothing to map


def test_signed_16bit_ct_like_values():
    # [-1000, 1000]: (v + 1000) * 255 / 2000
    out = to_uint8(np.array([-1000, 200, 600, 1000], np.int16))
    assert out.tolist() == [0, 153, 204, 255]


# ---------------------------------------------------------------------------------- to_gray_or_rgb
def test_layouts_gray_rgb_unchanged():
    g, c = _gray(), _rgb()
    assert np.array_equal(to_gray_or_rgb(g), g)
    assert np.array_equal(to_gray_or_rgb(c), c)


def test_single_channel_and_gray_alpha_become_gray():
    g = _gray()
    assert np.array_equal(to_gray_or_rgb(g[..., None]), g)
    alpha = np.full_like(g, 17)
    assert np.array_equal(to_gray_or_rgb(np.stack([g, alpha], axis=-1)), g)


def test_rgba_drops_alpha():
    c = _rgb()
    rgba = np.concatenate([c, np.full((H, W, 1), 9, np.uint8)], axis=-1)
    assert np.array_equal(to_gray_or_rgb(rgba), c)


@pytest.mark.parametrize("channels", [3, 4])
def test_channel_first_is_moved_to_channel_last(channels):
    c = _rgb()
    planes = [c[..., 0], c[..., 1], c[..., 2]] + ([np.full((H, W), 200, np.uint8)] if channels == 4 else [])
    out = to_gray_or_rgb(np.stack(planes, axis=0))  # (C, H, W)
    assert out.shape == (H, W, 3) and np.array_equal(out, c)


@pytest.mark.parametrize("shape", [(7, H, W), (H, W, 5), (2, 3, H, W), (1, W), (W,)])
def test_other_layouts_are_refused_naming_the_file(shape):
    with pytest.raises(FileFormatError, match="stack.tif"):
        to_gray_or_rgb(np.zeros(shape, np.uint8), "stack.tif")


# ------------------------------------------------------------------------------------------ as_rgb
def test_as_rgb_replicates_gray_and_keeps_rgb():
    g = _gray()
    out = as_rgb(g)
    assert out.shape == (H, W, 3)
    assert all(np.array_equal(out[..., k], g) for k in range(3))
    c = _rgb()
    assert as_rgb(c) is c


# ------------------------------------------------------------------------------ read_image_uint8
def _png(path, arr, mode):
    from PIL import Image

    Image.fromarray(arr, mode=mode).save(path)
    return path


def test_read_gray_png(tmp_path):
    g = _gray()
    out = read_image_uint8(_png(tmp_path / "g.png", g, "L"))
    assert out.dtype == np.uint8 and np.array_equal(out, g)


def test_read_gray_alpha_png(tmp_path):
    g = _gray()
    la = np.stack([g, np.full_like(g, 100)], axis=-1)
    out = read_image_uint8(_png(tmp_path / "la.png", la, "LA"))
    assert out.shape == (H, W) and np.array_equal(out, g)


def test_read_rgb_and_rgba_png(tmp_path):
    c = _rgb()
    assert np.array_equal(read_image_uint8(_png(tmp_path / "c.png", c, "RGB")), c)
    rgba = np.concatenate([c, np.full((H, W, 1), 30, np.uint8)], axis=-1)
    assert np.array_equal(read_image_uint8(_png(tmp_path / "a.png", rgba, "RGBA")), c)


def test_read_channel_first_tiff(tmp_path):
    import tifffile

    c = _rgb()
    tifffile.imwrite(tmp_path / "cf.tif", np.moveaxis(c, -1, 0), photometric="rgb", planarconfig="separate")
    out = read_image_uint8(tmp_path / "cf.tif")
    assert out.shape == (H, W, 3) and np.array_equal(out, c)


def test_read_16bit_tiff(tmp_path):
    import tifffile

    arr = np.zeros((H, W), np.uint16)
    arr[0, :4] = [0, 100, 1000, 4000]
    tifffile.imwrite(tmp_path / "a.tif", arr)
    out = read_image_uint8(tmp_path / "a.tif")
    assert out.dtype == np.uint8 and out[0, :4].tolist() == [0, 6, 64, 255] and int(out[1:].max()) == 0


def test_read_float_tiffs(tmp_path):
    import tifffile

    unit = np.zeros((H, W), np.float32)
    unit[0, :4] = [0.0, 0.2, 0.6, 1.0]
    tifffile.imwrite(tmp_path / "u.tif", unit)
    assert read_image_uint8(tmp_path / "u.tif")[0, :4].tolist() == [0, 51, 153, 255]
    neg = np.zeros((H, W), np.float32)
    neg[0, :4] = [-1.0, 0.0, 1.0, 4.0]
    tifffile.imwrite(tmp_path / "n.tif", neg)
    out = read_image_uint8(tmp_path / "n.tif")
    assert out[0, :4].tolist() == [0, 51, 102, 255] and int(out[1, 0]) == 51  # the zeros: (0 + 1) * 51


def test_read_bool_tiff(tmp_path):
    import tifffile

    mask = np.zeros((H, W), bool)
    mask[1:3, 2:4] = True
    tifffile.imwrite(tmp_path / "m.tif", mask)
    out = read_image_uint8(tmp_path / "m.tif")
    assert out.dtype == np.uint8 and set(np.unique(out).tolist()) <= {0, 255}
    assert np.array_equal(out == 255, mask)


def test_read_missing_and_empty_files(tmp_path):
    with pytest.raises(MissingFileError):
        read_image_uint8(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(FileFormatError, match="empty.png"):
        read_image_uint8(tmp_path / "empty.png")
