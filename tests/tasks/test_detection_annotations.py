"""Detection annotations: points CSV rules, annotated cases, instance-mask centroids, evaluation from CSVs."""

import numpy as np
import pytest
from skimage.io import imsave

from medseg.data.histology import histology_image, write_points_csv
from medseg.errors import FileFormatError, InputError
from medseg.tasks import detection as det


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


def test_points_table_keeps_class_names_and_scores(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("x,y,score,class\n1,2,0.9,tumour\n3,4,,\n")
    pts, cls, sc = det.read_points_table(p)[""]
    assert pts.tolist() == [[1, 2], [3, 4]] and cls == ["tumour", ""] and sc.tolist() == [0.9, 1.0]
    p.write_text("x,y,score\n1,2,high\n")
    with pytest.raises(FileFormatError, match="line 2"):
        det.read_points_table(p)


def _tiny_set(tmp_path, n=3, shape=(64, 64)):
    entries, rows = [], []
    for i in range(n):
        s = histology_image(100 + i, shape)
        imsave(tmp_path / f"t{i}.png", s.image, check_contrast=False)
        entries.append({"image": str(tmp_path / f"t{i}.png")})
        rows += [(f"t{i}.png", x, y, "mitosis" if c else "nucleus") for (x, y), c in zip(s.points, s.classes)]
    return entries, rows


def test_load_cases_bad_annotations(tmp_path):
    entries, rows = _tiny_set(tmp_path)
    # an image without rows is valid: no objects (all negatives)
    ann = write_points_csv(tmp_path / "p.csv", [r for r in rows if r[0] != "t2.png"])
    cases = det.load_cases(entries, ann, ["nucleus", "mitosis"])
    assert len(cases[0].points) > 0 and len(cases[2].points) == 0
    # CSV without extension matches by stem
    ann2 = write_points_csv(tmp_path / "p2.csv", [(r[0][:-4],) + r[1:] for r in rows])
    assert len(det.load_cases(entries, ann2, ["nucleus", "mitosis"])[1].points) == sum(r[0] == "t1.png" for r in rows)
    # points outside the image
    bad = write_points_csv(tmp_path / "bad.csv", rows + [("t1.png", 70.0, 3.0, "nucleus")])
    with pytest.raises(InputError, match="t1.png lie outside the image"):
        det.load_cases(entries, bad, ["nucleus", "mitosis"])
    # mismatched names
    typo = write_points_csv(tmp_path / "typo.csv", rows + [("t9.png", 1.0, 1.0, "nucleus")])
    with pytest.raises(InputError, match="mismatched image/annotation names"):
        det.check_annotation_names(typo, [e["image"] for e in entries], ["nucleus", "mitosis"])
    allbad = write_points_csv(tmp_path / "allbad.csv", [("x" + r[0],) + r[1:] for r in rows])
    with pytest.raises(InputError, match="mismatched"):
        det.load_cases(entries, allbad, ["nucleus", "mitosis"])


def test_centroids_from_mask():
    m = np.zeros((20, 20), np.int32)
    m[2:5, 2:5] = 1
    m[10:12, 14:20] = 2
    assert det.centroids_from_mask(m).tolist() == [[3.0, 3.0], [16.5, 10.5]]


def test_evaluate_perfect_and_mismatched(tmp_path):
    ref = write_points_csv(
        tmp_path / "ref.csv", [("a.png", 10, 10, "nucleus"), ("a.png", 30, 30, "mitosis"), ("b.png", 5, 5, "nucleus")]
    )
    pred = tmp_path / "pred.csv"
    pred.write_text("image,x,y,score,class\na.png,11,10,0.9,nucleus\na.png,30,31,0.8,mitosis\nb.png,5,5,0.7,nucleus\n")
    ev = det.evaluate(pred, ref, out=tmp_path / "ev", radius=3)
    assert ev["all_f1"] == 1.0 and ev["mitosis_f1"] == 1.0 and ev["nucleus_f1"] == 1.0 and ev["ok"] == 2
    assert (tmp_path / "ev" / "evaluate.csv").is_file() and ev["exit_code"] == 0
    pred.write_text("image,x,y,score,class\nzz.png,11,10,0.9,nucleus\n")
    with pytest.raises(InputError, match="mismatched image names"):
        det.evaluate(pred, ref, out=tmp_path / "ev2", radius=3)


def test_evaluate_against_instance_masks(tmp_path):
    import tifffile

    masks = tmp_path / "masks"
    masks.mkdir()
    m = np.zeros((20, 20), np.uint16)
    m[2:5, 2:5] = 1
    m[10:12, 14:20] = 300  # ids above 255 keep their value (masks are read as stored)
    tifffile.imwrite(masks / "a.tif", m)
    pred = tmp_path / "pred.csv"
    pred.write_text("image,x,y,score\na.png,3,3,0.9\na.png,16,10,0.8\n")
    ev = det.evaluate(pred, masks, out=tmp_path / "ev", radius=2)
    assert ev["all_f1"] == 1.0 and ev["ok"] == 1
