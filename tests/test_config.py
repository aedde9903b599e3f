"""Config validation: bad configs give one clear paragraph naming the key, the file and the allowed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.config import apply_overrides, config_hash, config_to_yaml, load_config, load_datalist
from medseg.errors import ConfigError, MedsegError, MissingFileError


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_valid_config_loads_with_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "task: segmentation\nname: ok\ntrain:\n  epochs: 3\n"))
    assert cfg.task == "segmentation"
    assert cfg.train.epochs == 3
    assert cfg.train.optimizer == "adamw"
    # relative output_dir resolved against the config file's folder
    assert cfg.output_dir == (tmp_path / "runs").resolve()


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    p = write(tmp_path, "task: segmentation\ntrain:\n  epocs: 3\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert str(p) in msg
    assert "'train.epocs'" in msg
    assert "did you mean 'epochs'?" in msg
    assert "allowed keys in train:" in msg and "batch_size" in msg
    assert "\n" not in msg  # one paragraph


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'sed' \(did you mean 'seed'\?\)"):
        load_config(write(tmp_path, "task: segmentation\nsed: 3\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, "task: segmentation\ntrain:\n  epochs: ten\n"))
    assert "'train.epochs' = 'ten'" in str(ei.value)
    assert "integer" in str(ei.value)


def test_bad_literal_lists_allowed_values_with_suggestion(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, "task: segmentation\ndevice: cud\n"))
    msg = str(ei.value)
    assert "'device' = 'cud' is not allowed" in msg
    assert "did you mean 'cuda'?" in msg
    assert "'auto'" in msg and "'cpu'" in msg


def test_out_of_range_value(tmp_path):
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(write(tmp_path, "task: segmentation\ntrain:\n  lr: -1\n"))


def test_unknown_task_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown task 'segmentaion' \(did you mean 'segmentation'\?\)"):
        load_config(write(tmp_path, "task: segmentaion\n"))


def test_missing_task(tmp_path):
    with pytest.raises(ConfigError, match="missing required key 'task'"):
        load_config(write(tmp_path, "name: x\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(MissingFileError) as ei:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(ei.value)
    assert isinstance(ei.value, FileNotFoundError) and isinstance(ei.value, MedsegError)


def test_missing_datalist_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"'data.datalist' points to a missing file: .*missing.json"):
        load_config(write(tmp_path, "task: segmentation\ndata:\n  datalist: missing.json\n"))


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "task: [segmentation\n"))


def test_overrides_apply_and_validate(tmp_path):
    p = write(tmp_path, "task: segmentation\n")
    cfg = load_config(p, ["train.epochs=7", "train.amp=false", "name=exp1", "class_names=[bg, liver]"])
    assert cfg.train.epochs == 7 and cfg.train.amp is False and cfg.name == "exp1"
    assert cfg.class_names == ["bg", "liver"]
    with pytest.raises(ConfigError, match=r"did you mean 'batch_size'"):
        load_config(p, ["train.batchsize=2"])
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(p, ["train.epochs"])


def test_apply_overrides_does_not_mutate_input():
    raw = {"train": {"epochs": 1}}
    out = apply_overrides(raw, ["train.epochs=2", "data.num_cases=3"])
    assert raw == {"train": {"epochs": 1}}
    assert out == {"train": {"epochs": 2}, "data": {"num_cases": 3}}


ALIAS_BOMB = """task: segmentation
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_yaml_alias_bomb_is_refused_fast_and_small(tmp_path):
    import time
    import tracemalloc

    p = write(tmp_path, ALIAS_BOMB)  # ~500 bytes that expand to 9**9 = 387 million nodes
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases.*expand to .* nodes, over the limit") as ei:
        load_config(p, overrides=["train.epochs=2"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - t0 < 5 and peak < 50e6 and str(p) in str(ei.value)
    with pytest.raises(ConfigError, match="expand to"):  # the same bomb as a --set value
        load_config(
            write(tmp_path, "task: segmentation\n", "ok.yaml"),
            overrides=["model.x=" + ALIAS_BOMB.split("\n", 1)[1].replace("\n", ", ").join("{}")],
        )


def test_recursive_yaml_alias_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="recursive YAML alias"):
        load_config(write(tmp_path, "task: segmentation\nx: &x [1, *x]\n"))


def test_small_anchors_and_merge_keys_still_work_and_overrides_do_not_leak_through_aliases(tmp_path):
    import yaml

    from medseg.config.base import safe_yaml

    cfg = load_config(write(tmp_path, "task: segmentation\ntrain: {epochs: &n 4, val_every: *n}\n"))
    assert cfg.train.epochs == 4 and cfg.train.val_every == 4
    merged = "base: &t {epochs: 3, lr: 0.01}\ntrain:\n  <<: *t\n  batch_size: 1\n"
    assert safe_yaml(merged) == yaml.safe_load(merged)
    shared = {"epochs": 3}
    out = apply_overrides({"train": shared, "alias": shared}, ["train.epochs=5"])  # one object, two keys
    assert out["train"]["epochs"] == 5 and out["alias"]["epochs"] == 3 and shared["epochs"] == 3


def test_run_name_cannot_escape_output_dir(tmp_path):
    with pytest.raises(ConfigError, match="'name'"):
        load_config(write(tmp_path, "task: segmentation\nname: ../../etc\n"))


def test_yaml_roundtrip_and_hash(tmp_path):
    cfg = load_config(write(tmp_path, "task: segmentation\ntrain:\n  epochs: 4\n"))
    text = config_to_yaml(cfg)
    again = load_config(write(tmp_path, text, "again.yaml"))
    assert again.train.epochs == 4
    assert config_hash(cfg) == config_hash(again)
    assert config_hash(cfg) != config_hash(load_config(write(tmp_path, "task: segmentation\n", "other.yaml")))


def test_datalist_msd_convention(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "imagesTr" / "a.nii.gz").write_bytes(b"x")
    dl = tmp_path / "dataset.json"
    dl.write_text(json.dumps({"training": [{"image": "imagesTr/a.nii.gz", "label": "imagesTr/a.nii.gz"}]}))
    items = load_datalist(dl)
    assert items[0]["image"] == str(tmp_path / "imagesTr" / "a.nii.gz")
    dl.write_text(json.dumps({"training": [{"image": "imagesTr/missing.nii.gz"}]}))
    with pytest.raises(MissingFileError, match=r"training\[0\] 'image' refers to a missing file"):
        load_datalist(dl)
    with pytest.raises(ConfigError, match=r"no 'validation' list"):
        load_datalist(dl, key="validation")


def test_configuration_doc_lists_every_section_and_data_infer_key_of_every_task():
    """docs/configuration.md's 'Sections by task' table names every section (and the data/infer keys)."""
    import re
    from pathlib import Path

    from pydantic import BaseModel

    from medseg.config.base import _TASKS

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| ([a-z_]+) \| (.+) \|$", doc, re.M)}
    for task, cls in _TASKS.items():
        row = rows[task]
        for name, field in cls.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                assert f"`{name}`" in row, (task, name)
                if name in ("data", "infer"):
                    for key in ann.model_fields:
                        assert key in row, (task, name, key)
            elif name not in {"task", "name", "output_dir", "seed", "device"}:
                assert name in row, (task, name)
