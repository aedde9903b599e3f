"""The slice viewer's label layers: one-pass edges and palette PNGs equal scikit-image's boundaries and RGBA."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from medseg.palette import class_color
from medseg.review.stack import _data_uri, _label_layer, _label_rgba, slice_stack
from medseg.review.windowing import blend_labels, label_edges


def _reference_rgba(lab: np.ndarray, alpha: float) -> np.ndarray:
    """The layer as it was first written: scikit-image's inner boundaries, class by class."""
    out = np.zeros((*lab.shape, 4), np.uint8)
    for k in np.unique(lab):
        if k <= 0:
            continue
        m = lab == k
        out[m, :3] = class_color(int(k))
        out[m, 3] = int(round(alpha * 255))
        out[find_boundaries(m, mode="inner"), 3] = 255
    return out


def _labels(rng: np.random.Generator, t: int) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(1, 90, 2))
    nc = int(rng.integers(1, 6))
    if t % 5 == 0:  # salt and pepper: every pixel an edge case
        return rng.integers(0, nc + 1, (h, w)).astype(np.int32)
    small = rng.integers(0, nc + 1, (max(1, h // 8), max(1, w // 8)))
    lab = ndi.zoom(small, (h / small.shape[0], w / small.shape[1]), order=0)[:h, :w].astype(np.int32)
    if t % 7 == 0:
        lab = (lab * 37) % 300  # label values far from 0..n
    if t % 11 == 0:
        lab[:] = 0
    return lab


def _decode(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGBA"))


def test_edges_and_layers_equal_scikit_image_reference():
    rng = np.random.default_rng(0)
    for t in range(150):
        lab = _labels(rng, t)
        ref_edges = np.zeros(lab.shape, bool)
        for k in np.unique(lab[lab > 0]):
            ref_edges |= find_boundaries(lab == k, mode="inner")
        assert np.array_equal(label_edges(lab), ref_edges), t
        ref = _reference_rgba(lab, 0.4)
        assert np.array_equal(_label_rgba(lab, 0.4), ref), t
        here = [int(v) for v in np.unique(lab) if v > 0]
        layer = _label_layer(lab, 0.4, here)
        assert layer.mode == "P"
        assert np.array_equal(_decode(_data_uri(layer, "PNG")), ref), t  # what the browser shows


def test_many_classes_fall_back_to_rgba():
    lab = (np.arange(40 * 50).reshape(40, 50) % 200).astype(np.int32)
    layer = _label_layer(lab, 0.4, [int(v) for v in np.unique(lab) if v > 0])
    assert layer.mode == "RGBA"
    assert np.array_equal(_decode(_data_uri(layer, "PNG")), _reference_rgba(lab, 0.4))


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_stack_overlays_decode_to_the_reference_layer(alpha):
    rng = np.random.default_rng(1)
    img = rng.normal(0, 50, (40, 36, 12)).astype(np.float32)
    lab = np.zeros(img.shape, np.int16)
    lab[8:30, 6:20, 2:10] = 1
    lab[20:34, 18:30, 4:12] = 2
    st = slice_stack(img, lab, np.diag([1.0, 1.0, 2.5, 1.0]), alpha=alpha)
    assert len(st["overlays"]) == len(st["images"]) == len(st["slices"]) == 12
    for uri in st["overlays"]:
        rgba = _decode(uri)
        assert rgba.shape == (st["height"], st["width"], 4)
        shown = rgba[..., 3] > 0
        fill = rgba[..., 3] == int(round(alpha * 255))
        assert set(np.unique(rgba[..., 3])) <= {0, int(round(alpha * 255)), 255}
        if shown.any() and alpha < 1.0:
            assert fill.any()  # inside: the class colour at alpha; edges opaque


def test_nearest_resize_by_index_map_equals_resize_2d():
    """The stack resizes label slices by gathering through one resized index map: resize_2d's pixels."""
    from medseg.review.windowing import resize_2d

    rng = np.random.default_rng(2)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        shape = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
        a = rng.integers(0, 50, (h, w)).astype(np.int32)
        idx = resize_2d(np.arange(h * w).reshape(h, w), shape, order=0)
        assert np.array_equal(a.ravel()[idx], resize_2d(a, shape, order=0))


def test_blend_labels_contours_equal_scikit_image_reference():
    """The three planes' overlays (blend_labels) draw the same contours as find_boundaries class by class."""
    rng = np.random.default_rng(4)
    for t in range(60):
        lab = _labels(rng, t)
        rgb = rng.random((*lab.shape, 3)).astype(np.float32)
        ref = rgb.copy()
        for k in np.unique(lab[lab > 0]):
            m = lab == k
            col = np.array(class_color(int(k)), np.float32) / 255.0
            ref[m] = (1.0 - 0.4) * ref[m] + 0.4 * col
            ref[find_boundaries(m, mode="inner")] = col
        assert np.array_equal(blend_labels(rgb, lab, 0.4, contour=True), ref), t
