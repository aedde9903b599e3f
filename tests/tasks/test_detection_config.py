"""DetectionConfig: sections, old flat keys refused with their new place, every key read by the task."""

from pathlib import Path

import pytest

from medseg.config import DetectionConfig, load_config, parse_config
from medseg.config.base import PipelineConfig, Section
from medseg.config.detection import MOVED_KEYS
from medseg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("old", sorted(MOVED_KEYS))
def test_old_flat_keys_are_refused_naming_the_new_place(old):
    new = MOVED_KEYS[old]
    section, key = new.split(".")
    assert key in type(getattr(DetectionConfig(), section)).model_fields
    with pytest.raises(ConfigError, match=f"'{old}' moved to '{new}'"):
        parse_config({"task": "detection", old: getattr(getattr(DetectionConfig(), section), key)})


def test_moved_key_through_a_set_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: detection\n")
    with pytest.raises(ConfigError, match="'min_distance_um' moved to 'postprocess.min_distance_um'") as e:
        load_config(cfg, ["min_distance_um=4"])
    assert "c.yaml" in str(e.value)
    assert load_config(cfg, ["postprocess.min_distance_um=4"]).postprocess.min_distance_um == 4


@pytest.mark.parametrize("key", ["data.num_workers=2", "infer.batch_size=8", "infer.overlap=0.5", "data.cache=disk"])
def test_keys_detection_does_not_read_are_refused(tmp_path, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: detection\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(cfg, [key])


def _leaf_keys(model: type[Section], prefix: str = ""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Section) and name != "model":
            yield from _leaf_keys(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_every_key_is_read_by_the_task():
    """Each config key appears as ``cfg.<section>.<key>`` in medseg/tasks/detection (model: passed whole).

    ``data.folds`` and ``tune`` are read by the model-selection commands (medseg/tasks/crossval, tune).
    """
    tasks = ROOT / "medseg" / "tasks"
    files = [*(tasks / "detection").glob("*.py"), *(tasks / "crossval").glob("*.py"), *(tasks / "tune").glob("*.py")]
    source = "\n".join(p.read_text() for p in sorted(files))
    base = set(PipelineConfig.model_fields)  # task, name, output_dir: the run folder's, read by Run / the CLI
    # the train section handed whole to Trainer.from_config: the keys that method reads count as read
    assert "Trainer.from_config(" in source and "train=cfg.train" in source
    trainer = (ROOT / "medseg" / "engine" / "trainer.py").read_text()
    from_config = trainer[trainer.index("def from_config(") : trainer.index("# -- checkpoints")]
    unread = [
        k
        for k in _leaf_keys(DetectionConfig)
        if k not in base
        and f"cfg.{k}" not in source
        and not (k.startswith("train.") and f"train.{k.split('.', 1)[1]}" in from_config)
        and not (k.startswith("train.") and f'"{k.split(".", 1)[1]}"' in from_config)
    ]
    assert "cfg.model.model_dump()" in source
    assert not unread, unread
    assert "cfg.seed" in source and "cfg.device" in source


@pytest.mark.parametrize("name", ["det_nuclei.yaml", "det_mitosis.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert isinstance(cfg, DetectionConfig) and cfg.data.pixel_size_um == 0.5
    assert cfg.model.name == ("mitosis_cnn" if cfg.method == "mitosis" else "proximity_unet")
