"""Segmentation configs accept only what the task reads; the segment / evaluate commands' options."""

from pathlib import Path

import pytest

from medseg.cli import build_parser
from medseg.config import load_config, parse_config
from medseg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = {"task": "segmentation", "class_names": ["background", "liver"]}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"synthetic": {"shape": [8, 8, 8]}}, r"synthetic.shape: only read with data.synthetic: true"),
        ({"synthetic": {"shap": [8, 8, 8]}, "data": {"synthetic": True}}, r"did you mean 'shape'"),
        (
            {"data": {"synthetic": True, "datalist": "dl.json"}},
            r"data.synthetic is true and data.datalist is set: choose one",
        ),
        ({"data": {"root": "/data"}}, r"data.root is only read with data.datalist"),
        ({"modality": "MR", "plan": {"clip": [0, 100]}}, r"plan.clip only apply to modality CT"),
        ({"plan": {"patch_size": [64, 64]}}, r"plan.patch_size needs 3 values"),
        ({"infer": {"uncertainty": "tta"}}, r"infer.uncertainty: tta needs infer.tta: true"),
        ({"infer": {"tta_axes": [0]}}, r"infer.tta_axes is only read with infer.tta: true"),
        ({"infer": {"tta": True, "tta_axes": [3]}}, r"infer.tta_axes = \[3\]: spatial axes are 0..2"),
        ({"spatial_dims": 2, "augment": {"flip_axes": [2]}}, r"augment.flip_axes = \[2\]: spatial axes are 0..1"),
        ({"postprocess": {"largest_component": ["livr"]}}, r"'livr' is not a class \(did you mean 'liver'\?\)"),
        ({"label_map": {4: 2}}, r"label_map maps to \[2\], which are not training classes"),
    ],
)
def test_keys_the_task_would_ignore_are_refused(extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**BASE, **extra})


def test_shipped_configs_are_valid():
    for name in ("seg_ct_phantom", "seg_2d"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.data.synthetic and cfg.synthetic.shape is not None


def test_segment_split_option():
    parser = build_parser()
    args = parser.parse_args(["segment", "--model", "run", "--out", "out", "dataset.json"])
    assert args.split == "test"
    args = parser.parse_args(["segment", "--model", "run", "--out", "out", "dataset.json", "--split", "all"])
    assert args.split == "all"
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "--model", "run", "--out", "out", "dataset.json", "--split", "train"])


def test_evaluate_refuses_options_of_other_tasks(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["evaluate", "--pred", str(tmp_path), "--ref", str(tmp_path), "--radius", "5"])
    with pytest.raises(SystemExit):
        args.func(args)
    assert "--radius is not read by --task segmentation" in capsys.readouterr().err
