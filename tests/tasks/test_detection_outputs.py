"""Detection outputs: QuPath GeoJSON, detections CSV, overlay colours (one palette)."""

import csv

import numpy as np

from medseg.palette import class_color
from medseg.tasks import detection as det


def test_geojson_for_qupath():
    g = det.to_geojson(np.array([[1.0, 2.0]]), ["mitosis"], np.array([0.9]))
    assert g["type"] == "FeatureCollection"
    f = g["features"][0]
    assert f["geometry"] == {"type": "Point", "coordinates": [1.5, 2.5]}
    assert f["properties"]["classification"]["name"] == "mitosis"
    assert len(f["properties"]["classification"]["color"]) == 3


def test_geojson_colour_is_the_marker_colour_on_the_overlay():
    """A class's GeoJSON colour is the colour markers_2d draws its rings in (medseg.palette)."""
    classes = ["mitosis", "nucleus", "tumour", "stroma"]
    pts = np.array([[20.0, 20.0], [60.0, 20.0], [20.0, 60.0], [60.0, 60.0]])
    g = det.to_geojson(pts, classes)
    ov = det.overlay_markers(np.zeros((80, 80, 3), np.uint8), pts, classes)
    values, _ = det.class_values(classes)
    for f, (x, y), v in zip(g["features"], pts, values):
        ring = tuple(int(c) for c in ov[int(y), int(x) + 6])  # the ring passes radius 6 px right of the centre
        assert tuple(f["properties"]["classification"]["color"]) == ring == class_color(int(v))
    assert g["features"][0]["properties"]["classification"]["color"] == [230, 25, 75]  # mitosis: red
    assert g["features"][1]["properties"]["classification"]["color"] == [60, 180, 75]  # nucleus: green


def test_detections_csv(tmp_path):
    path = det.write_detections_csv(tmp_path / "d.csv", np.array([[1.234, 5.0]]), np.array([0.5]), ["nucleus"])
    rows = list(csv.DictReader(path.open()))
    assert rows == [{"x": "1.23", "y": "5.00", "score": "0.50000", "class": "nucleus"}]
    pts, cls, sc = det.read_points_table(path)[""]
    assert pts.tolist() == [[1.23, 5.0]] and cls == ["nucleus"] and sc.tolist() == [0.5]
