"""Tiled detection (medseg.engine.tiling): objects on tile borders found once; tiled == whole image."""

import numpy as np
import tifffile
from scipy import ndimage as ndi

from medseg.data.histology import histology_image
from medseg.engine.tiling import detect_tiled, find_peaks, suppress_close
from medseg.models import build_model
from medseg.tasks import detection as det


def _blob_score(img):
    return ndi.gaussian_filter(img[..., 0].astype(np.float32) / 255.0, 2.0)


def test_tiled_detection_object_on_tile_border():
    img = np.zeros((100, 120, 3), np.uint8)
    pts = [(32, 40), (63.0, 63.0), (64, 10), (5, 90), (100, 95)]  # (32, 40) and (64, *) sit on tile borders
    for x, y in pts:
        img[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 255
    full, _ = det.detect_tiled(_blob_score, img, tile=10_000, margin=0, min_distance_px=4, threshold=0.05)
    tiled, _ = det.detect_tiled(_blob_score, img, tile=32, margin=16, min_distance_px=4, threshold=0.05)
    assert len(full) == len(pts) == len(tiled)
    key = lambda a: sorted(map(tuple, np.round(a).tolist()))  # noqa: E731
    assert key(full) == key(tiled) == key(np.array(pts))


def test_tiled_equals_whole_image_for_the_patch_cnn():
    import torch

    torch.manual_seed(0)
    model = build_model("mitosis_cnn", width=8).eval()
    fn = det.score_map_fn(model, "mitosis")
    img = histology_image(2, (96, 96)).image
    kw = dict(min_distance_px=6, threshold=0.0, sigma_px=1.0)
    p1, s1 = det.detect_tiled(fn, img, tile=10_000, margin=0, **kw)
    p2, s2 = det.detect_tiled(fn, img, tile=40, margin=32, **kw)
    assert len(p1) > 5
    o1, o2 = np.lexsort(p1.T), np.lexsort(p2.T)
    assert np.allclose(p1[o1], p2[o2]) and np.allclose(s1[o1], s2[o2], atol=1e-5)


def test_large_tiff_is_memory_mapped_and_tiled(tmp_path):
    img = np.zeros((300, 260, 3), np.uint8)
    pts = [(40, 50), (128, 128), (200, 256), (10, 290)]
    for x, y in pts:
        img[y - 1 : y + 2, x - 1 : x + 2] = 255
    tifffile.imwrite(tmp_path / "big.tif", img, photometric="rgb")
    lazy = det.open_image(tmp_path / "big.tif", lazy_min_pixels=10_000)
    assert isinstance(lazy, np.memmap) and lazy.shape == img.shape
    p, _ = det.detect_tiled(_blob_score, lazy, tile=64, margin=16, min_distance_px=4, threshold=0.05)
    assert sorted(map(tuple, np.round(p).astype(int).tolist())) == sorted(pts)
    assert not isinstance(det.open_image(tmp_path / "big.tif"), np.memmap)  # small: read into memory


def test_find_peaks_threshold_distance_and_order():
    s = np.zeros((20, 30), np.float32)
    s[5, 5], s[5, 8], s[15, 25], s[10, 10] = 0.9, 0.8, 0.7, 0.1
    p, sc = find_peaks(s, min_distance_px=4, threshold=0.5)
    assert p.tolist() == [[5, 5], [25, 15]] and sc.tolist() == [np.float32(0.9), np.float32(0.7)]
    assert find_peaks(np.zeros((5, 5)), 2, 0.5)[0].shape == (0, 2)


def test_suppress_close_keeps_the_higher_score():
    p = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    kept, s = suppress_close(p, np.array([0.9, 0.8, 0.7]), min_distance_px=3)
    assert kept.tolist() == [[0, 0], [10, 0]] and s.tolist() == [0.9, 0.7]
    assert detect_tiled is det.detect_tiled  # re-exported for the docs
