"""Whole-slide reading through OpenSlide: a pyramidal tiled TIFF written from the synthetic histology generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from medseg.data.slide import write_synthetic_slide
from medseg.errors import FileFormatError, MissingFileError
from medseg.io.registry import format_of
from medseg.io.wsi import FORMAT, is_slide, open_slide, tissue_mask

pytest.importorskip("openslide", reason="pip install 'medseg[wsi]' (openslide-python, openslide-bin)")


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return write_synthetic_slide(tmp_path_factory.mktemp("wsi") / "slide.tif", (2048, 2048), pool=3, seed=1)


def test_levels_regions_and_pixel_size(slide) -> None:
    img = open_slide(slide.path)
    assert img.shape == (2048, 2048, 3) and img.mpp == pytest.approx(0.5)
    assert img._slide.level_count >= 2  # pyramidal
    full = tifffile.imread(slide.path)  # level 0 in memory: the reference pixels
    assert np.array_equal(img[700:1100, 300:813], full[700:1100, 300:813])  # regions are exact
    assert np.array_equal(img[-5:, -7:], full[-5:, -7:])
    low = open_slide(slide.path, level=1)
    assert low.downsample == pytest.approx(4.0) and low.shape[0] == 512
    with pytest.raises(FileFormatError):
        np.asarray(img)  # never the whole slide at once
    with pytest.raises(FileFormatError):
        open_slide(slide.path, level=9)
    img.close()


def test_tissue_mask_finds_the_tissue_not_the_glass(slide) -> None:
    img = open_slide(slide.path)
    mask, scale = tissue_mask(img)
    # blocks of 512 px: the ellipse holds 4 of the 16 blocks (the central 2 x 2)
    expected = np.zeros((2048, 2048), bool)
    expected[512:1536, 512:1536] = True
    got = np.kron(mask, np.ones((int(scale), int(scale)), bool))[:2048, :2048]
    assert (got == expected).mean() > 0.97
    assert slide.tissue_blocks == 4


def test_registry_and_slide_detection(slide, tmp_path: Path) -> None:
    assert format_of("a.svs") == "wsi" and format_of("b.ndpi") == "wsi" and FORMAT.kind == "image2d"
    assert is_slide(slide.path, min_pixels=1_000_000)
    assert not is_slide(slide.path, min_pixels=10**9)  # small: read like any TIFF
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((64, 64, 3), np.uint8))
    assert not is_slide(flat, min_pixels=1)  # one level, untiled
    with pytest.raises(MissingFileError):
        open_slide(tmp_path / "missing.svs")
    with pytest.raises(FileFormatError):
        open_slide(flat)


def test_regions_past_the_edge_read_white(slide) -> None:
    img = open_slide(slide.path)
    full = tifffile.imread(slide.path)
    r = img.read(2040, 2030, 20, 30)  # 8 x 18 pixels inside, the rest outside the scanned area
    assert np.array_equal(r[:18, :8], full[2030:, 2040:])
    assert (r[18:] == 255).all() and (r[:, 8:] == 255).all()
    img.close()


@pytest.mark.parametrize(
    ("shape", "max_side", "block"), [((300, 517), 64, 1000), ((1000, 90), 100, 5000), ((77, 80), 32, 64)]
)
def test_block_thumbnail_equals_reducing_the_whole_image(shape, max_side, block) -> None:
    from PIL import Image

    from medseg.io.wsi import block_thumbnail

    a = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    reads: list[int] = []

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        reads.append(w * h)
        return a[y : y + h, x : x + w]

    got = block_thumbnail(read, shape, max_side, block_pixels=block)
    k = max(1, int(max(shape) / max_side))
    ref = Image.fromarray(a).reduce(k) if k > 1 else Image.fromarray(a)
    ref.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    assert np.array_equal(got, np.asarray(ref))  # blocks aligned to k: no seams
    assert max(got.shape[:2]) <= max_side and len(reads) > 1
    assert max(reads) <= max(block, k * k)  # memory bounded by the block, not the image


def test_slide_thumbnail_reads_blocks_of_the_chosen_level(slide) -> None:
    img = open_slide(slide.path)
    small = img.thumbnail(256, block_pixels=4096)
    big = img.thumbnail(256, block_pixels=1 << 22)
    assert np.array_equal(small, big) and max(small.shape[:2]) == 256
    img.close()
