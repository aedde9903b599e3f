"""Detection on a whole slide: tiles over tissue only, stitched without border duplicates, equal to tiled
inference on the same pixels in memory; ``medseg detect`` on a slide (level-0 pixels, µm, GeoJSON)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from medseg.data.slide import write_synthetic_slide
from medseg.engine.tiling import detect_tiled
from medseg.io.wsi import open_slide
from medseg.metrics.detection import match_points
from medseg.tasks.detection.slides import detect_slide

pytest.importorskip("openslide", reason="pip install 'medseg[wsi]' (openslide-python, openslide-bin)")


def _hematoxylin_score(img: np.ndarray) -> np.ndarray:
    """A network stand-in: dark, blue-ish (nuclear) pixels score high, smoothed to one peak per nucleus."""
    x = img.astype(np.float32) / 255.0
    s = np.clip((x[..., 2] - x[..., 0]) * 2.0 + (1.0 - x.mean(-1)) * 1.5 - 0.4, 0, 1)
    return ndi.gaussian_filter(s, 2.0)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return write_synthetic_slide(tmp_path_factory.mktemp("wsi") / "slide.tif", (2048, 2048), pool=3, seed=2)


def test_slide_detection_equals_tiled_inference_in_memory(slide) -> None:
    img = open_slide(slide.path)
    kw = {"tile": 384, "margin": 32, "min_distance_px": 5.0, "threshold": 0.25}
    res = detect_slide(_hematoxylin_score, img, progress=False, **kw)
    full = tifffile.imread(slide.path)
    ref_pts, ref_sc = detect_tiled(_hematoxylin_score, full, **kw)
    # tiles without tissue were skipped, yet the detections are those of the whole image
    assert res.tiles_run < res.tiles
    key = lambda a: sorted(map(tuple, np.round(a, 2).tolist()))  # noqa: E731
    assert key(res.points) == key(ref_pts)
    # no border duplicates: no two detections closer than the NMS distance
    d = np.linalg.norm(res.points[:, None] - res.points[None], axis=-1) + np.eye(len(res.points)) * 1e9
    assert d.min() >= 5.0 - 1e-6
    # the known nuclei are found (a crude stand-in, so a modest bar)
    m = match_points(res.points, slide.points, 4.0)
    recall = len(m.pairs) / len(slide.points)
    precision = len(m.pairs) / len(res.points)
    assert recall > 0.5 and precision > 0.5
    assert res.tissue_mm2 == pytest.approx(4 * 512 * 512 * 0.25e-6, rel=0.1)  # 4 tissue blocks at 0.5 µm


def test_medseg_detect_reads_a_slide(slide, tmp_path: Path, tiny_det_run) -> None:
    from medseg.cli import main

    rc = main(
        ["detect", "--model", str(tiny_det_run[0]), str(slide.path), "--out", str(tmp_path / "out"), "--device", "cpu"]
    )
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "detect.csv")))
    assert rows[0]["status"] == "ok" and int(rows[0]["tiles_with_tissue"]) < int(rows[0]["tiles"])
    det = list(csv.DictReader(open(tmp_path / "out" / "slide_detections.csv")))
    if det:  # µm = level-0 pixels x the slide's pixel size
        assert float(det[0]["x_um"]) == pytest.approx(float(det[0]["x"]) * 0.5, abs=0.01)
    geo = json.loads((tmp_path / "out" / "slide.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(det)
