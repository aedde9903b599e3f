"""Synthetic H&E tiles: determinism, colours, annotations consistent with the instance masks."""

import csv
import json

import numpy as np
import pytest
from skimage.color import rgb2hed

from medseg.data.histology import CLASS_NAMES, histology_image, write_histology_dataset


def test_deterministic_and_shaped():
    a, b = histology_image(7, (128, 160)), histology_image(7, (128, 160))
    assert a.image.shape == (128, 160, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and np.array_equal(a.points, b.points)
    assert not np.array_equal(a.image, histology_image(8, (128, 160)).image)
    assert a.instances.shape == (128, 160) and a.points.shape[1] == 2 and len(a.classes) == len(a.points)


def test_points_are_mask_centroids_and_inside():
    from skimage.measure import regionprops

    s = histology_image(3)
    assert len(s.points) == s.instances.max() > 30
    for rp in regionprops(s.instances):
        cy, cx = rp.centroid
        assert np.allclose(s.points[rp.label - 1], (cx, cy))
    H, W = s.instances.shape
    assert (s.points[:, 0] >= 0).all() and (s.points[:, 0] < W).all()
    assert (s.points[:, 1] >= 0).all() and (s.points[:, 1] < H).all()


def test_stains_nuclei_blue_mitoses_darker():
    s = histology_image(5)
    hed = rgb2hed(s.image)
    nuc = hed[..., 0][np.isin(s.instances, np.flatnonzero(s.classes == 0) + 1)]
    mit = hed[..., 0][np.isin(s.instances, np.flatnonzero(s.classes == 1) + 1)]
    bg = hed[..., 0][s.instances == 0]
    assert (s.classes == 1).any() and (s.classes == 0).sum() > 10 * (s.classes == 1).sum() / 2
    # haematoxylin: background < nuclei < mitotic figures
    assert bg.mean() < nuc.mean() < mit.mean()
    # background is eosin-pink (skimage HED eosin vector): red and blue well above green
    r, g, b = s.image[s.instances == 0].mean(0)
    assert min(r, b) > g + 20


def test_touching_nuclei_exist():
    from scipy.spatial.distance import pdist

    s = histology_image(11)
    d = pdist(s.points)
    assert (d < 12).sum() >= 5  # centres closer than ~one nucleus diameter: touching pairs


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_writer(tmp_path, fmt):
    import tifffile
    from skimage.io import imread

    ds = write_histology_dataset(tmp_path, n_train=2, n_val=1, n_test=1, shape=(64, 80), fmt=fmt)
    content = json.loads(ds.read_text())
    assert [len(content[k]) for k in ("training", "validation", "test")] == [2, 1, 1]
    assert content["class_names"] == list(CLASS_NAMES) and content["pixel_size_um"] == 0.5
    e = content["training"][0]
    img = imread(tmp_path / e["image"]) if fmt == "png" else tifffile.imread(tmp_path / e["image"])
    assert img.shape == (64, 80, 3)
    mask = tifffile.imread(tmp_path / e["label"])
    assert mask.shape == (64, 80)
    rows = list(csv.DictReader((tmp_path / "points.csv").open()))
    assert set(rows[0]) == {"image", "x", "y", "class"}
    names = {r["image"] for r in rows}
    assert names <= {e["image"].split("/")[-1] for k in ("training", "validation", "test") for e in content[k]}
    n0 = sum(r["image"] == e["image"].split("/")[-1] for r in rows)
    assert n0 == mask.max()
