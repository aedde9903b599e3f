"""Classification task: train -> run folder -> classify -> evaluate; strategies; bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.config import (
    ClassificationConfig,
    DataSection,
    FinetuneSection,
    ModelSection,
    OperatingPointSection,
    TrainSection,
)
from medseg.data.lesions import lesion_image, make_lesion_dataset, write_png
from medseg.errors import FileFormatError, InputError
from medseg.io import read_image_uint8
from medseg.runs import Run
from medseg.tasks.classification import classify, configure_finetuning, evaluate, train
from medseg.transforms.classification import augmentation_transforms, prepare_images


def _cfg(datalist, **kw):
    base = dict(
        name="t",
        seed=0,
        device="cpu",
        image_size=32,
        data=DataSection(datalist=datalist),
        model=ModelSection(name="efficientnet_lite0"),
        train=TrainSection(epochs=1, batch_size=8, lr=1e-3, steps_per_epoch=1),
        operating_points=OperatingPointSection(n_bootstrap=50),
    )
    base.update(kw)
    return ClassificationConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    dl = make_lesion_dataset(root / "data", n=24, seed=0, size=32)
    d = json.loads(Path(dl).read_text())
    (root / "data" / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    d["training"].append({"image": "images/broken.png", "label": "malignant"})  # a class name works too
    Path(dl).write_text(json.dumps(d))
    cfg = _cfg(dl)
    run = Run.create(root / "run", cfg)
    with run:
        summary = train(cfg, run)
    return root, dl, summary


def test_train_writes_a_usable_run_folder(trained):
    from medseg.engine.checkpoint import load_run_model

    root, dl, summary = trained
    run = root / "run"
    assert json.loads((run / "run.json").read_text())["compile"]["requested"] is False
    for f in (
        "checkpoints/best.pt",
        "metrics.csv",
        "classifier.json",
        "evaluation/metrics.json",
        "evaluation/operating_points.csv",
        "evaluation/reliability.png",
        "evaluation/test_predictions.csv",
    ):
        assert (run / f).is_file(), f
    info = json.loads((run / "classifier.json").read_text())
    assert info["class_names"] == ["benign", "malignant"] and info["image_size"] == 32 and info["channels"] == "rgb"
    assert {"high_sensitivity", "high_specificity", "youden", "default"} <= set(info["operating_points"])
    assert 0.0 <= summary["test_auc"] <= 1.0 and len(summary["auc_ci95"]) == 2
    assert summary["skipped"] == 1 and "broken.png" in (run / "skipped.json").read_text()
    model, cfg, ckpt = load_run_model(run)  # what the explain stage relies on
    assert ckpt["meta"]["model_params"]["name"] == "efficientnet_lite0"
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_classify_skips_corrupt_and_evaluate(trained, tmp_path):
    root, dl, _ = trained
    test = json.loads(Path(dl).read_text())["test"]
    imgs = [root / "data" / e["image"] for e in test]
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    gray = tmp_path / "gray.png"
    write_png(lesion_image(5, 1, 48, rgb=False)[0], gray)  # gray + other size: converted, resized
    res = classify(root / "run", imgs + [bad, gray], tmp_path / "pred", device="cpu")
    assert res["ok"] == len(imgs) + 1 and res["skipped"] == 1 and res["exit_code"] == 1
    rows = list(csv.DictReader(open(res["predictions"])))
    p = np.array([[float(r["prob_benign"]), float(r["prob_malignant"])] for r in rows])
    assert np.allclose(p.sum(1), 1.0, atol=1e-4)
    thr = float(rows[0]["threshold"])
    assert all((r["predicted_class"] == "malignant") == (float(r["prob_malignant"]) >= thr) for r in rows)
    table = {r["case_id"]: r for r in csv.DictReader(open(tmp_path / "pred" / "classify.csv"))}
    assert table["corrupt"]["status"] == "skipped" and "corrupt" in table["corrupt"]["reason"]
    assert not (tmp_path / "pred" / "thumbnails" / "corrupt.png").exists()  # no partial outputs
    assert (tmp_path / "pred" / "report.html").is_file()
    ev = evaluate(res["predictions"], root / "data" / "labels.csv", tmp_path / "ev", n_boot=50)
    assert ev["n_cases"] == len(imgs) and ev["n_unmatched_predictions"] == 1  # gray.png has no reference
    assert (
        ev["skipped_cases"] == {"gray": ev["skipped_cases"]["gray"]} and "no reference" in ev["skipped_cases"]["gray"]
    )
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "auc" in m and "operating_point" in m and (tmp_path / "ev" / "reliability.png").is_file()


def _write_datalist(path, entries):
    path.write_text(json.dumps(entries))
    return path


def test_unknown_class_name_and_missing_validation_class(tmp_path):
    dl = make_lesion_dataset(tmp_path / "d", n=12, seed=1, size=32)
    d = json.loads(Path(dl).read_text())
    d["training"][0]["label"] = "malignent"
    bad = _write_datalist(tmp_path / "d" / "bad.json", d)
    run = Run.create(tmp_path / "r1", _cfg(bad))
    with pytest.raises(InputError, match="unknown class name 'malignent'.*did you mean 'malignant'"):
        train(_cfg(bad), run)
    d = json.loads(Path(dl).read_text())
    d["training"] += [e for e in d["validation"] if e["label"] == 1]
    d["validation"] = [e for e in d["validation"] if e["label"] == 0]
    noval = _write_datalist(tmp_path / "d" / "noval.json", d)
    run = Run.create(tmp_path / "r2", _cfg(noval))
    with pytest.raises(InputError, match="'malignant' has no validation examples.*operating points"):
        train(_cfg(noval), run)


def test_prepare_images_errors_and_conversion():
    rgb = np.zeros((20, 20, 3), np.uint8)
    gray = np.zeros((20, 20), np.uint8)
    with pytest.raises(InputError, match="b.png is gray, a.png is RGB"):
        prepare_images([rgb, gray], ["a.png", "b.png"], None, "auto")
    with pytest.raises(InputError, match="different sizes.*image_size"):
        prepare_images([rgb, np.zeros((30, 20, 3), np.uint8)], ["a.png", "c.png"], None, "auto")
    x, mode = prepare_images([rgb, gray], ["a.png", "b.png"], 16, "rgb")
    assert x.shape == (2, 3, 16, 16) and mode == "rgb"
    x, mode = prepare_images([rgb, gray], ["a.png", "b.png"], None, "gray")
    assert x.shape == (2, 1, 20, 20)


def test_read_image_corrupt_and_rgba(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"garbage")
    with pytest.raises(FileFormatError, match="x.png.*corrupt"):
        read_image_uint8(p)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 200
    write_png(rgba, tmp_path / "a.png")
    im = read_image_uint8(tmp_path / "a.png")
    assert im.shape == (10, 12, 3) and im[0, 0, 0] == 200


def test_finetuning_strategies():
    from medseg.models import build_model

    m = build_model(name="efficientnet_lite0", num_classes=2, pretrained=False)
    groups, hook = configure_finetuning(m, "linear_probe", 1e-3)
    hook(m, 0)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"_fc.weight", "_fc.bias"} and len(groups) == 1
    m.train()
    hook(m, 0)
    assert not m._bn0.training  # frozen BN statistics stay fixed
    groups, hook = configure_finetuning(m, "gradual_unfreeze", 1e-3, unfreeze_every=1)
    hook(m, 0)
    n0 = sum(p.requires_grad for p in m.parameters())
    hook(m, 2)
    n2 = sum(p.requires_grad for p in m.parameters())
    assert n0 == 2 and n2 > n0 and m._conv_head.weight.requires_grad and not m._conv_stem.weight.requires_grad
    groups, _ = configure_finetuning(m, "discriminative", 1e-3, lr_decay=0.5)
    lrs = [g["lr"] for g in groups]
    assert lrs[0] == 1e-3 and all(a > b for a, b in zip(lrs[1:], lrs[2:]))


@pytest.mark.parametrize("preset", ["dermoscopy", "histology", "xray"])
def test_augmentation_presets(preset):
    from monai.transforms import Compose

    t = Compose(augmentation_transforms(preset, 32))
    t.set_random_state(0)
    out = t({"image": torch.rand(3, 32, 32) * 255})["image"]
    assert tuple(out.shape) == (3, 32, 32)


@pytest.mark.slow
def test_lite0_reaches_auc_095_on_synthetic_lesions(tmp_path):
    """Done-when: fine-tuned EfficientNet-Lite0, test AUC >= 0.95 within 5 minutes of CPU training."""
    dl = make_lesion_dataset(tmp_path / "d", n=160, seed=3, size=96)
    cfg = _cfg(
        dl,
        image_size=96,
        model=ModelSection(name="efficientnet_lite0"),
        train=TrainSection(epochs=8, batch_size=16, lr=1e-3, max_minutes=4.0, early_stop_patience=3),
        finetune=FinetuneSection(strategy="full"),
        operating_points=OperatingPointSection(n_bootstrap=500),
    )
    run = Run.create(tmp_path / "run", cfg)
    with run:
        s = train(cfg, run)
    assert s["test_auc"] >= 0.95, s


def test_cli_classify_and_evaluate(trained, tmp_path, capsys):
    from medseg.cli import main

    root, dl, _ = trained
    rc = main(
        [
            "classify",
            "--model",
            str(root / "run"),
            str(root / "data" / "images"),
            "--out",
            str(tmp_path / "p"),
            "--device",
            "cpu",
            "--operating-point",
            "high_sensitivity",
        ]
    )
    assert rc == 1  # some cases skipped (broken.png)
    rows = list(csv.DictReader(open(tmp_path / "p" / "predictions.csv")))
    assert len(rows) == 24 and rows[0]["operating_point"] == "high_sensitivity"  # broken.png skipped
    rc = main(
        [
            "evaluate",
            "--task",
            "classification",
            "--pred",
            str(tmp_path / "p" / "predictions.csv"),
            "--ref",
            str(root / "data" / "labels.csv"),
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert rc == 0 and "auc" in capsys.readouterr().out
    # an existing output folder is never overwritten silently
    rc = main(["classify", "--model", str(root / "run"), str(root / "data" / "images"), "--out", str(tmp_path / "p")])
    assert rc == 2


def test_load_classifier_and_preprocess(trained):
    from medseg.tasks.classification import load_classifier
    from medseg.transforms.classification import preprocess

    root, dl, _ = trained
    model, info = load_classifier(root / "run")
    img, mask = lesion_image(11, 1, 50)
    x = preprocess([img, img[..., 0]], info)  # RGB and gray both become the model's RGB 32px input
    assert x.shape == (2, 3, 32, 32) and float(x.abs().max()) <= 1.0
    with torch.no_grad():
        assert model(x).shape == (2, 2)


def test_run_demo_quick(tmp_path):
    from medseg.demo.classification import run_demo
    from medseg.engine.checkpoint import load_run_model

    res = run_demo(tmp_path / "classification", quick=True)
    s = res["summary"]
    assert s["n_test"] == len(res["cases"]) > 0 and 0.0 <= s["test_auc"] <= 1.0
    assert {"high_sensitivity", "high_specificity", "youden"} <= set(s["operating_points"])
    c = res["cases"][0]
    assert c.task == "classification" and c.prediction in ("benign", "malignant") and 0 <= c.probability <= 1
    assert Path(c.thumbnail).is_absolute() and Path(c.thumbnail).is_file()
    load_run_model(tmp_path / "classification" / "run")  # the explain stage's entry point


def test_classify_takes_the_test_list_of_a_datalist_by_default(trained, tmp_path):
    root, dl, _ = trained
    lists = json.loads(Path(dl).read_text())
    res = classify(root / "run", [dl], tmp_path / "test", device="cpu")
    rows = list(csv.DictReader(open(res["predictions"])))
    assert res["ok"] == len(lists["test"]) and res["skipped"] == 0
    assert sorted(Path(r["image"]).name for r in rows) == sorted(Path(e["image"]).name for e in lists["test"])
    every = classify(root / "run", [dl], tmp_path / "all", device="cpu", split="all")
    n_all = sum(len(lists[k]) for k in ("training", "validation", "test"))
    assert every["cases"] == n_all and every["skipped"] == 1  # broken.png
    splits = [r["split"] for r in json.loads((tmp_path / "all" / "classify.json").read_text())]
    assert set(splits) == {"training", "validation", "test"}


def test_cli_classify_split_chooses_the_datalist_list(trained, tmp_path):
    from medseg.cli import main

    root, dl, _ = trained
    n_val = len(json.loads(Path(dl).read_text())["validation"])
    rc = main(
        ["classify", "--model", str(root / "run"), str(dl), "--out", str(tmp_path / "v"), "--split", "validation"]
    )
    assert rc == 0 and len(list(csv.DictReader(open(tmp_path / "v" / "predictions.csv")))) == n_val


def test_config_has_one_image_size():
    from medseg.config import parse_config
    from medseg.errors import ConfigError

    with pytest.raises(ConfigError, match="model.image_size is not a classification key.*top-level image_size"):
        parse_config({"task": "classification", "model": {"name": "efficientnet_lite0", "image_size": 64}})
    with pytest.raises(ValueError, match="model.image_size"):  # pydantic's ValidationError in Python
        ClassificationConfig(model=ModelSection(name="efficientnet_lite0", image_size=64))
    cfg = parse_config({"task": "classification", "image_size": 64, "model": {"name": "efficientnet_lite0"}})
    from medseg.tasks.classification.finetune import model_params

    assert model_params(cfg, "rgb", 64)["image_size"] == 64  # the network is built for the images' size


def _write_tiffs(folder: Path) -> tuple[Path, Path]:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    u16 = np.full((32, 32), 1000, np.uint16)  # the lowest value: min-max would read it as 0
    u16[8:24, 8:24] = 3000
    u16[0, :8] = 2000
    f32 = np.linspace(0.5, 4.0, 32 * 32, dtype=np.float32).reshape(32, 32)  # floats beyond [0, 1]
    tifffile.imwrite(folder / "u16.tif", u16)
    tifffile.imwrite(folder / "f32.tif", f32)
    return folder / "u16.tif", folder / "f32.tif"


def test_same_tiff_pixels_through_classify_explain_and_detect(trained, tmp_path, monkeypatch):
    """One 16-bit and one float32 TIFF give the same pixels in classify, explain and detect."""
    from medseg.explain import maps as explain_maps
    from medseg.io import as_rgb
    from medseg.tasks.classification import predict as classify_module
    from medseg.tasks.explain import explain

    root, _, _ = trained
    tiffs = _write_tiffs(tmp_path / "tiffs")
    detect_pixels = [as_rgb(read_image_uint8(p)) for p in tiffs]  # what detection reads
    assert detect_pixels[0][0, 20, 0] == 85  # 1000 of [0, 3000] -> 85 (not 0 as min-max gave)
    seen: dict[str, list[np.ndarray]] = {"classify": [], "explain": []}
    prepare, preprocess = classify_module.prepare_images, explain_maps.preprocess

    def spy_prepare(images, *a, **kw):
        seen["classify"] += [as_rgb(np.asarray(im)) for im in images]
        return prepare(images, *a, **kw)

    def spy_preprocess(images, *a, **kw):
        seen["explain"] += [as_rgb(np.asarray(im)) for im in images]
        return preprocess(images, *a, **kw)

    monkeypatch.setattr(classify_module, "prepare_images", spy_prepare)
    monkeypatch.setattr(explain_maps, "preprocess", spy_preprocess)
    assert classify(root / "run", list(tiffs), tmp_path / "c", device="cpu")["ok"] == 2
    assert explain(root / "run", list(tiffs), tmp_path / "e", device="cpu")["ok"] == 2
    for path_name, pixels in seen.items():
        assert len(pixels) == 2, path_name
        for got, ref in zip(pixels, detect_pixels):
            assert got.dtype == np.uint8 and np.array_equal(got, ref), path_name
