"""Every 2D layout of the table in docs/io.md ("2D images: layouts"), one test per row.

Each row writes a file with Pillow or tifffile and compares what medseg reads with a reference from
an independent reader (tifffile / imageio / Pillow's raw bands, or a formula on the raw CMYK values),
for the three readers: ``load`` (MetaTensor ``(C, X, Y[, Z])``), ``read_image_array`` (as stored,
channels last) and ``read_image_uint8`` (the tasks' gray / RGB rule).
"""

from __future__ import annotations

import tracemalloc

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image

import medseg.io as mio
from medseg.errors import FileFormatError, InputError

H, W = 12, 17
rng = np.random.default_rng(7)


def _hw(dtype=np.uint8, c: int | None = None) -> np.ndarray:
    shape = (H, W) if c is None else (H, W, c)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype) * 3 - 1
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


def _chw_to_hwc(img) -> np.ndarray:
    """medseg's (C, X, Y) -> (H, W, C)."""
    return np.transpose(img.numpy(), (2, 1, 0))


def test_gray_png(tmp_path):
    g = _hw()
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    ref = iio.imread(tmp_path / "g.png")
    img = mio.load(tmp_path / "g.png")
    assert img.shape == (1, W, H) and np.array_equal(_chw_to_hwc(img)[..., 0], ref)
    assert np.array_equal(mio.read_image_uint8(tmp_path / "g.png"), ref)


def test_gray_alpha_png_is_gray_with_alpha_dropped(tmp_path):
    la = _hw(c=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    ref = np.asarray(Image.open(tmp_path / "la.png").getchannel("L"))
    img = mio.load(tmp_path / "la.png")
    assert img.shape == (1, W, H) and np.array_equal(_chw_to_hwc(img)[..., 0], ref)
    assert "alpha channel dropped" in img.meta["problems"]
    assert mio.read_image_array(tmp_path / "la.png").shape == (H, W, 2)  # as stored
    assert np.array_equal(mio.read_image_uint8(tmp_path / "la.png"), ref)


def test_rgb_png(tmp_path):
    c = _hw(c=3)
    Image.fromarray(c, "RGB").save(tmp_path / "c.png")
    ref = iio.imread(tmp_path / "c.png")
    img = mio.load(tmp_path / "c.png")
    assert img.shape == (3, W, H) and img.meta["rgb"] and np.array_equal(_chw_to_hwc(img), ref)
    assert np.array_equal(mio.read_image_uint8(tmp_path / "c.png"), ref)


def test_rgba_png_drops_alpha(tmp_path):
    c = _hw(c=4)
    Image.fromarray(c, "RGBA").save(tmp_path / "a.png")
    ref = iio.imread(tmp_path / "a.png")[..., :3]
    img = mio.load(tmp_path / "a.png")
    assert img.shape == (3, W, H) and np.array_equal(_chw_to_hwc(img), ref)
    assert "alpha channel dropped" in img.meta["problems"]
    assert np.array_equal(mio.read_image_uint8(tmp_path / "a.png"), ref)


def test_planar_rgb_tiff_is_rgb_not_a_stack(tmp_path):
    c = _hw(c=3)
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(c, -1, 0), photometric="rgb", planarconfig="separate")
    ref = np.moveaxis(tifffile.imread(tmp_path / "p.tif"), 0, -1)
    img = mio.load(tmp_path / "p.tif")
    assert img.shape == (3, W, H) and img.meta["rgb"] and np.array_equal(_chw_to_hwc(img), ref)
    assert np.array_equal(mio.read_image_array(tmp_path / "p.tif"), ref)
    assert np.array_equal(mio.read_image_uint8(tmp_path / "p.tif"), ref)


def _cmyk_reference(cmyk: np.ndarray) -> np.ndarray:
    """R = 255 (1 - C / 255)(1 - K / 255), ... (Pillow's ICC-free CMYK conversion) from raw CMYK values."""
    f = cmyk.astype(np.float64) / 255.0
    return 255.0 * (1.0 - f[..., :3]) * (1.0 - f[..., 3:4])


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    cmyk = _hw(c=4)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "k.jpg", quality=100)
    raw = np.asarray(Image.open(tmp_path / "k.jpg"))  # the decoded CMYK bands
    assert raw.shape == (H, W, 4)
    ref = _cmyk_reference(raw)
    img = mio.load(tmp_path / "k.jpg")
    assert img.shape == (3, W, H) and img.meta["rgb"]
    assert np.abs(_chw_to_hwc(img) - ref).max() <= 1.0  # rounding
    assert np.abs(mio.read_image_uint8(tmp_path / "k.jpg").astype(float) - ref).max() <= 1.0
    assert any("CMYK" in p for p in img.meta["problems"])


def test_cmyk_tiff_is_converted_to_rgb(tmp_path):
    cmyk = _hw(c=4)
    tifffile.imwrite(tmp_path / "k.tif", cmyk, photometric="separated")
    ref = np.asarray(Image.open(tmp_path / "k.tif").convert("RGB")).astype(float)  # Pillow reads it independently
    img = mio.load(tmp_path / "k.tif")
    assert img.shape == (3, W, H) and np.abs(_chw_to_hwc(img) - ref).max() <= 1.0


def test_two_channel_tiff_keeps_two_channels(tmp_path):
    two = _hw(c=2)
    tifffile.imwrite(tmp_path / "two.tif", two, photometric="minisblack", planarconfig="contig")
    ref = tifffile.imread(tmp_path / "two.tif")
    assert ref.shape == (H, W, 2)
    img = mio.load(tmp_path / "two.tif")
    assert img.shape == (2, W, H) and np.array_equal(_chw_to_hwc(img), ref)
    assert not img.meta["rgb"]
    # the 2D tasks' one rule: two channels read as gray (the first), as gray + alpha is
    assert np.array_equal(mio.read_image_uint8(tmp_path / "two.tif"), ref[..., 0])


def test_16bit_png_and_tiff_keep_their_values(tmp_path):
    g = _hw(np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    tifffile.imwrite(tmp_path / "g16.tif", g)
    for name, ref in (
        ("g16.png", iio.imread(tmp_path / "g16.png")),
        ("g16.tif", tifffile.imread(tmp_path / "g16.tif")),
    ):
        img = mio.load(tmp_path / name)
        assert img.meta["bit_depth"] == 16 and np.array_equal(_chw_to_hwc(img)[..., 0], ref.astype(np.float32))
        assert mio.read_image_array(tmp_path / name).dtype == np.uint16


def test_float_tiff_keeps_its_values(tmp_path):
    f = _hw(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f)
    ref = tifffile.imread(tmp_path / "f.tif")
    img = mio.load(tmp_path / "f.tif")
    assert img.meta["original_dtype"] == "float32" and np.array_equal(_chw_to_hwc(img)[..., 0], ref)


def test_multipage_tiff_is_a_stack(tmp_path):
    stack = np.stack([_hw() for _ in range(5)])
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    ref = tifffile.imread(tmp_path / "s.tif")
    img = mio.load(tmp_path / "s.tif")
    assert img.shape == (1, W, H, 5)
    assert np.array_equal(np.transpose(img.numpy()[0], (2, 1, 0)), ref)  # (Z, H, W)
    assert mio.discover(tmp_path / "s.tif")[0].shape == (W, H, 5)
    with pytest.raises(FileFormatError, match="stack of 5 images"):
        mio.read_image_uint8(tmp_path / "s.tif")


def test_gray_stack_of_width_three_is_not_taken_for_rgb(tmp_path):
    """(Z, H, 3): five gray pages 3 pixels wide, not one RGB image."""
    stack = rng.integers(0, 255, (5, H, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "z3.tif", stack, photometric="minisblack")
    ref = tifffile.imread(tmp_path / "z3.tif")
    assert ref.shape == (5, H, 3)
    img = mio.load(tmp_path / "z3.tif")
    assert img.shape == (1, 3, H, 5) and not img.meta["rgb"]
    assert np.array_equal(np.transpose(img.numpy()[0], (2, 1, 0)), ref)


def test_palette_png_is_expanded_to_rgb(tmp_path):
    idx = rng.integers(0, 4, (H, W)).astype(np.uint8)
    im = Image.fromarray(idx, "P")
    palette = [0, 0, 0, 250, 10, 10, 10, 250, 10, 10, 10, 250]
    im.putpalette(palette + [0] * (768 - len(palette)))
    im.save(tmp_path / "p.png")
    ref = np.array(palette, np.uint8).reshape(-1, 3)[np.asarray(Image.open(tmp_path / "p.png"))]  # raw indices
    img = mio.load(tmp_path / "p.png")
    assert img.shape == (3, W, H) and np.array_equal(_chw_to_hwc(img), ref)


def test_bilevel_png(tmp_path):
    mask = _hw() > 128
    Image.fromarray(mask).save(tmp_path / "b.png")
    ref = iio.imread(tmp_path / "b.png").astype(bool)
    assert np.array_equal(mio.read_image_uint8(tmp_path / "b.png") == 255, ref)


def test_rgb_jpeg(tmp_path):
    c = _hw(c=3)
    Image.fromarray(c).save(tmp_path / "c.jpg", quality=95)
    ref = iio.imread(tmp_path / "c.jpg")
    img = mio.load(tmp_path / "c.jpg")
    assert img.shape == (3, W, H) and np.array_equal(_chw_to_hwc(img), ref)


# ------------------------------------------------------------------------------------ pixel limit
def _huge_tiff(path, side: int = 20000) -> None:
    """A small TIFF whose header claims side x side pixels (ImageWidth / ImageLength patched)."""
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8))
    with tifffile.TiffFile(path) as tf:
        offsets = {n: tf.pages[0].tags[n].valueoffset for n in ("ImageWidth", "ImageLength")}
        dtypes = {n: tf.pages[0].tags[n].dtype for n in ("ImageWidth", "ImageLength")}
    data = bytearray(path.read_bytes())
    for n, off in offsets.items():
        size = 2 if int(dtypes[n]) == 3 else 4
        data[off : off + size] = side.to_bytes(size, "little")
    path.write_bytes(bytes(data))


def _huge_png(path, side: int = 20000) -> None:
    """A PNG of a few hundred bytes whose header claims side x side gray pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("make, name", [(_huge_tiff, "huge.tif"), (_huge_png, "huge.png")])
def test_pixel_limit_refuses_before_decoding(tmp_path, make, name):
    path = tmp_path / name
    make(path)
    assert path.stat().st_size < 2000
    tracemalloc.start()
    for read in (mio.load, mio.read_image_uint8, mio.read_image_array, mio.load_image2d):
        with pytest.raises(InputError, match="over the limit") as ei:
            read(path)
        assert name in str(ei.value) and "400,000,000" in str(ei.value)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6  # nothing near the 400 MB the image would take
    info = mio.discover(path)[0]
    assert not info.ok and "limit" in info.problems[0]


def test_pixel_limit_override_by_argument_and_environment(tmp_path, monkeypatch):
    g = _hw()
    Image.fromarray(g).save(tmp_path / "g.png")
    assert mio.image2d.MAX_PIXELS == 89_478_485  # the documented default (Pillow's own threshold)
    with pytest.raises(InputError, match="over the limit of 100 pixels"):
        mio.read_image_uint8(tmp_path / "g.png", max_pixels=100)
    with pytest.raises(InputError, match="over the limit"):
        mio.load(tmp_path / "g.png", max_pixels=100)
    assert mio.read_image_uint8(tmp_path / "g.png", max_pixels=H * W).shape == (H, W)
    monkeypatch.setenv("MEDSEG_MAX_PIXELS", "50")
    with pytest.raises(InputError, match="over the limit of 50 pixels"):
        mio.read_image_array(tmp_path / "g.png")
    monkeypatch.setenv("MEDSEG_MAX_PIXELS", "0")  # 0: no limit
    assert mio.read_image_array(tmp_path / "g.png").shape == (H, W)
