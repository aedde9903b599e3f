"""Detection task: input rules, proximity targets, stain jitter, tiling, outputs, train/detect/evaluate."""

import csv
import json

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from medseg.errors import FileFormatError, InputError, MissingFileError
from medseg.tasks import detection as det

# ----------------------------------------------------------------------------- reading


def test_read_image_channel_rules(tmp_path):
    g = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    imsave(tmp_path / "g.png", g, check_contrast=False)
    a = det.read_image(tmp_path / "g.png")
    assert a.shape == (20, 30, 3) and np.array_equal(a[..., 0], g) and np.array_equal(a[..., 2], g)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 200
    imsave(tmp_path / "a.png", rgba, check_contrast=False)
    assert det.read_image(tmp_path / "a.png").shape == (10, 12, 3)
    tifffile.imwrite(tmp_path / "cf.tif", np.zeros((3, 16, 17), np.uint8), photometric="rgb", planarconfig="separate")
    assert det.read_image(tmp_path / "cf.tif").shape == (16, 17, 3)
    tifffile.imwrite(tmp_path / "two.tif", np.zeros((16, 17, 2), np.uint8))
    with pytest.raises(InputError, match="channel count"):
        det.read_image(tmp_path / "two.tif")
    with pytest.raises(MissingFileError):
        det.read_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(FileFormatError, match="bad.png"):
        det.read_image(tmp_path / "bad.png")


def test_16bit_rescaled_to_8bit(tmp_path):
    a = np.zeros((8, 8, 3), np.uint16)
    a[0, 0] = 4000
    a[1, 1] = 2000
    tifffile.imwrite(tmp_path / "a16.tif", a, photometric="rgb")
    b = det.read_image(tmp_path / "a16.tif")
    assert b.dtype == np.uint8 and b[0, 0, 0] == 255 and b[1, 1, 0] == 128 and b[2, 2, 0] == 0


def test_points_csv_rules(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("image,x,y,class\na.png,1,2,mitosis\na.png,3,4,\nb.png,5.5,6,nucleus\n")
    ann = det.read_points_csv(p, ["nucleus", "mitosis"])
    assert ann["a.png"][0].tolist() == [[1, 2], [3, 4]] and ann["a.png"][1].tolist() == [1, 0]
    p.write_text("image,x,y,class\na.png,1,2,tumour\n")
    with pytest.raises(InputError, match="unknown class 'tumour'"):
        det.read_points_csv(p, ["nucleus", "mitosis"])
    p.write_text("image,x,y\na.png,one,2\n")
    with pytest.raises(FileFormatError, match="line 2"):
        det.read_points_csv(p)
    p.write_text("image,col,row\na.png,1,2\n")
    with pytest.raises(FileFormatError, match="image,x,y"):
        det.read_points_csv(p)


def _tiny_set(tmp_path, n=3, shape=(64, 64)):
    from medseg.data.histology import histology_image

    entries, rows = [], []
    for i in range(n):
        s = histology_image(100 + i, shape)
        imsave(tmp_path / f"t{i}.png", s.image, check_contrast=False)
        entries.append({"image": str(tmp_path / f"t{i}.png")})
        rows += [(f"t{i}.png", x, y, "mitosis" if c else "nucleus") for (x, y), c in zip(s.points, s.classes)]
    return entries, rows


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "x", "y", "class"])
        w.writerows(rows)
    return path


def test_load_cases_bad_annotations(tmp_path):
    entries, rows = _tiny_set(tmp_path)
    # an image without rows is valid: no objects (all negatives)
    ann = _write_csv(tmp_path / "p.csv", [r for r in rows if r[0] != "t2.png"])
    cases = det.load_cases(entries, ann, ["nucleus", "mitosis"])
    assert len(cases[0].points) > 0 and len(cases[2].points) == 0
    # CSV without extension matches by stem
    ann2 = _write_csv(tmp_path / "p2.csv", [(r[0][:-4],) + r[1:] for r in rows])
    assert len(det.load_cases(entries, ann2, ["nucleus", "mitosis"])[1].points) == sum(r[0] == "t1.png" for r in rows)
    # points outside the image
    bad = _write_csv(tmp_path / "bad.csv", rows + [("t1.png", 70.0, 3.0, "nucleus")])
    with pytest.raises(InputError, match="t1.png lie outside the image"):
        det.load_cases(entries, bad, ["nucleus", "mitosis"])
    # mismatched names
    typo = _write_csv(tmp_path / "typo.csv", rows + [("t9.png", 1.0, 1.0, "nucleus")])
    with pytest.raises(InputError, match="mismatched image/annotation names"):
        det.check_annotation_names(typo, [e["image"] for e in entries], ["nucleus", "mitosis"])
    allbad = _write_csv(tmp_path / "allbad.csv", [("x" + r[0],) + r[1:] for r in rows])
    with pytest.raises(InputError, match="mismatched"):
        det.load_cases(entries, allbad, ["nucleus", "mitosis"])


def test_centroids_from_mask():
    m = np.zeros((20, 20), np.int32)
    m[2:5, 2:5] = 1
    m[10:12, 14:20] = 2
    assert det.centroids_from_mask(m).tolist() == [[3.0, 3.0], [16.5, 10.5]]


# ----------------------------------------------------------------------------- targets


def test_proximity_target():
    t = det.proximity_target(np.array([[10, 5]]), (20, 30), radius_px=4, alpha=3)
    assert t.shape == (20, 30) and t[5, 10] == pytest.approx(1.0) and t.max() == pytest.approx(1.0)
    assert t[5, 14] == 0.0 and 0 < t[5, 12] < t[5, 11] < 1
    assert det.proximity_target(np.zeros((0, 2)), (4, 4), 3).sum() == 0


def test_stain_jitter():
    from medseg.data.histology import histology_image

    img = histology_image(1, (48, 48)).image
    rng = np.random.default_rng(0)
    same = det.stain_jitter(img, 0.0, rng)
    assert np.allclose(same, img / 255.0)
    j = det.stain_jitter(img, 0.2, rng)
    assert j.shape == img.shape and j.min() >= 0 and j.max() <= 1
    assert 0.002 < np.abs(j - img / 255.0).mean() < 0.2


# ----------------------------------------------------------------------------- tiling


def _blob_score(img):
    from scipy import ndimage as ndi

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

    from medseg.data.histology import histology_image
    from medseg.models import build_model

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


def test_geojson_for_qupath():
    g = det.to_geojson(np.array([[1.0, 2.0]]), ["mitosis"], np.array([0.9]))
    assert g["type"] == "FeatureCollection"
    f = g["features"][0]
    assert f["geometry"] == {"type": "Point", "coordinates": [1.5, 2.5]}
    assert f["properties"]["classification"]["name"] == "mitosis"
    assert len(f["properties"]["classification"]["color"]) == 3


# ----------------------------------------------------------------------------- end to end (tiny)


@pytest.mark.parametrize("method", ["proximity", "mitosis"])
def test_train_detect_evaluate_tiny(tmp_path, method):
    from medseg.config import parse_config
    from medseg.data.histology import write_histology_dataset
    from medseg.runs import Run

    ds = write_histology_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=1, shape=(64, 64), mitosis_rate=0.2)
    model = (
        {"name": "proximity_unet", "features": [4, 4, 8, 8, 8, 4]}
        if method == "proximity"
        else {"name": "mitosis_cnn", "width": 8}
    )
    cfg = parse_config(
        {
            "task": "detection",
            "method": method,
            "device": "cpu",
            "data": {"datalist": str(ds)},
            "model": model,
            "crop_size": 32,
            "cpu_threads": 1,
            "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4},
        }
    )
    run = Run.create(tmp_path / "run", cfg)
    with run:
        s = det.train(cfg, run)
    assert s["epochs"] == 1 and 0.0 <= s["test_f1"] <= 1.0
    info = json.loads((run.path / "detection.json").read_text())
    assert info["method"] == method and info["output_class"] == ("mitosis" if method == "mitosis" else "nucleus")
    test_img = tmp_path / "data" / json.loads(ds.read_text())["test"][0]["image"]
    bad = tmp_path / "two.tif"
    tifffile.imwrite(bad, np.zeros((16, 16, 2), np.uint8))
    out = det.detect(run.path, [test_img, bad], tmp_path / "det", device="cpu", threshold=0.0)
    assert out["images"] == 1 and out["skipped"] == 1 and "two.tif" in out["skipped_files"]
    stem = test_img.stem
    rows = list(csv.DictReader((tmp_path / "det" / f"{stem}_detections.csv").open()))
    assert rows and set(rows[0]) == {"x", "y", "score", "class"}
    gj = json.loads((tmp_path / "det" / f"{stem}.geojson").read_text())
    assert len(gj["features"]) == len(rows)
    counts = list(csv.DictReader((tmp_path / "det" / "counts.csv").open()))
    area = 64 * 64 * (0.5e-3) ** 2
    assert float(counts[0]["density_per_mm2"]) == pytest.approx(len(rows) / area, rel=1e-3)
    ev = det.evaluate(tmp_path / "det", tmp_path / "data" / "points.csv", radius=3.0, pixel_size=0.5)
    assert ev["radius_px"] == 6.0 and 0 <= ev["all_f1"] <= 1 and (tmp_path / "det" / "evaluation.json").is_file()


def test_evaluate_perfect_and_mismatched(tmp_path):
    ref = _write_csv(
        tmp_path / "ref.csv", [("a.png", 10, 10, "nucleus"), ("a.png", 30, 30, "mitosis"), ("b.png", 5, 5, "nucleus")]
    )
    pred = tmp_path / "pred.csv"
    pred.write_text("image,x,y,score,class\na.png,11,10,0.9,nucleus\na.png,30,31,0.8,mitosis\nb.png,5,5,0.7,nucleus\n")
    ev = det.evaluate(pred, ref, out=tmp_path, radius=3)
    assert ev["all_f1"] == 1.0 and ev["mitosis_f1"] == 1.0 and ev["nucleus_f1"] == 1.0 and ev["images"] == 2
    pred.write_text("image,x,y,score,class\nzz.png,11,10,0.9,nucleus\n")
    with pytest.raises(InputError, match="mismatched image names"):
        det.evaluate(pred, ref, out=tmp_path, radius=3)


# ----------------------------------------------------------------------------- targets (slow)


@pytest.mark.slow
@pytest.mark.parametrize("config,goal", [("det_nuclei.yaml", 0.90), ("det_mitosis.yaml", 0.75)])
def test_detection_targets_on_held_out_tiles(tmp_path, config, goal):
    """Done-when of the issue: nucleus F1 >= 0.90, mitosis F1 >= 0.75 at 3 µm on held-out tiles,
    trained within the configs' CPU budget (4 min)."""
    from pathlib import Path

    from medseg.config import load_config
    from medseg.runs import Run

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / config, ["device=cpu"])
    assert cfg.train.max_minutes <= 5
    run = Run.create(tmp_path / "run", cfg)
    with run:
        s = det.train(cfg, run)
    assert s["test_images"] >= 6
    assert s["test_f1"] >= goal, s


@pytest.mark.slow
def test_run_demo_quick(tmp_path):
    from medseg.review.cases import ReviewCase

    res = det.run_demo(tmp_path / "detection", quick=True)
    s = res["summary"]
    assert {"nuclei_test_f1", "mitosis_test_f1"} <= set(s)
    cases = res["cases"]
    assert cases and all(isinstance(c, ReviewCase) and c.task == "detection" for c in cases)
    c = cases[0]
    assert set(c.counts) == {"nucleus", "mitosis"} and c.density_per_mm2["nucleus"] > 0
    assert "f1_nucleus" in c.metrics and c.thumbnail and (tmp_path / "detection" / c.thumbnail).is_file()
    assert all(tmp_path.as_posix() in v for v in c.outputs.values())


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
