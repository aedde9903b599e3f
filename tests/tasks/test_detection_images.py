"""Detection reads pixels through the one 2D reader (medseg.io.read_image_uint8 + as_rgb); large TIFFs lazily."""

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from medseg.errors import FileFormatError, InputError, MissingFileError
from medseg.io import as_rgb, read_image_uint8
from medseg.tasks import detection as det


def test_read_image_channel_rules(tmp_path):
    g = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    imsave(tmp_path / "g.png", g, check_contrast=False)
    a = det.open_image(tmp_path / "g.png")
    assert a.shape == (20, 30, 3) and np.array_equal(a[..., 0], g) and np.array_equal(a[..., 2], g)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 200
    imsave(tmp_path / "a.png", rgba, check_contrast=False)
    assert det.open_image(tmp_path / "a.png").shape == (10, 12, 3)
    tifffile.imwrite(tmp_path / "cf.tif", np.zeros((3, 16, 17), np.uint8), photometric="rgb", planarconfig="separate")
    assert det.open_image(tmp_path / "cf.tif").shape == (16, 17, 3)
    # the one rule of medseg.io.to_gray_or_rgb: 2 channels are gray + alpha (detection used to refuse them)
    two = np.zeros((16, 17, 2), np.uint8)
    two[..., 0] = 7
    tifffile.imwrite(tmp_path / "two.tif", two, photometric="minisblack", planarconfig="contig")  # 2 samples per pixel
    assert det.open_image(tmp_path / "two.tif").shape == (16, 17, 3) and det.open_image(tmp_path / "two.tif").max() == 7
    five = np.zeros((16, 17, 5), np.uint8)
    tifffile.imwrite(tmp_path / "five.tif", five, photometric="minisblack", planarconfig="contig")
    with pytest.raises(InputError, match="gray or RGB"):
        det.open_image(tmp_path / "five.tif")
    with pytest.raises(MissingFileError):
        det.open_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(FileFormatError, match="bad.png"):
        det.open_image(tmp_path / "bad.png")


def test_16bit_rescaled_to_8bit(tmp_path):
    a = np.zeros((8, 8, 3), np.uint16)
    a[0, 0] = 4000
    a[1, 1] = 2000
    tifffile.imwrite(tmp_path / "a16.tif", a, photometric="rgb")
    b = det.open_image(tmp_path / "a16.tif")
    assert b.dtype == np.uint8 and b[0, 0, 0] == 255 and b[1, 1, 0] == 128 and b[2, 2, 0] == 0


@pytest.mark.parametrize(
    "pixels",
    [
        np.array([[0, 1000], [40000, 65535]], np.uint16),  # 16-bit gray
        np.array([[-1.5, 0.25], [3.0, 10.0]], np.float32),  # float beyond [0, 1]
        np.array([[0.0, 0.25], [0.5, 1.0]], np.float32),  # float fractions
    ],
)
def test_detection_pixels_are_read_image_uint8s(tmp_path, pixels):
    """open_image and load_cases (training) give exactly the pixels of medseg.io.read_image_uint8, as RGB."""
    img = np.kron(pixels, np.ones((8, 8), pixels.dtype))
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, img)
    want = as_rgb(read_image_uint8(path))
    assert want.shape == (16, 16, 3) and want.dtype == np.uint8
    assert np.array_equal(det.open_image(path), want)
    (case,) = det.load_cases([{"image": str(path)}], None, ["nucleus"])
    assert np.array_equal(case.image, want)


def test_lazy_memory_map_has_read_image_uint8s_pixels(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", img, photometric="rgb")
    lazy = det.open_image(tmp_path / "big.tif", lazy_min_pixels=1000)
    assert isinstance(lazy, np.memmap)
    assert np.array_equal(np.asarray(lazy), as_rgb(read_image_uint8(tmp_path / "big.tif")))
    # a stack of RGB pages is not one image: no memory map (read_image_uint8 decides)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([img, img]), photometric="rgb")
    with pytest.raises(FileFormatError):
        det.open_image(tmp_path / "stack.tif", lazy_min_pixels=1000)
