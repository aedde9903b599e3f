"""A task's data as one datalist, and configs of runs that read a derived datalist.

Cross-validation folds and tuning trials are ordinary training runs of a task. They differ from the
user's run only in which cases they train and validate on (a fold) or in a few config values (a
trial). So that each is an ordinary run folder whose ``config.yaml`` reproduces it, the data is
*materialised* once: :func:`task_data` generates the synthetic data of a config (when
``data.synthetic``) into a folder and reads every list of the datalist with absolute paths, and
:func:`write_datalist` + :func:`derived_config` give a run a datalist of its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import load_decathlon_datalist

from medseg.config import (
    ClassificationConfig,
    DetectionConfig,
    PipelineConfig,
    SegmentationConfig,
    apply_overrides,
    parse_config,
    read_datalist_json,
)
from medseg.data.lesions import make_lesion_dataset
from medseg.errors import ConfigError, InputError, MedsegError
from medseg.io import load as load_image
from medseg.tasks.detection.annotations import read_points_csv
from medseg.tasks.detection.data import synthetic_datalist as detection_synthetic
from medseg.tasks.segmentation.data import synthetic_datalist as segmentation_synthetic
from medseg.utils import atomic_write_text

__all__ = ["TaskData", "SUPPORTED_TASKS", "task_data", "write_datalist", "derived_config", "strata"]

log = logging.getLogger("medseg.tasks")

#: tasks whose training runs can be cross-validated and tuned
SUPPORTED_TASKS = ("segmentation", "detection", "classification")

Entry = dict[str, Any]


@dataclass
class TaskData:
    """The lists of a task's datalist, entries with absolute paths.

    Attributes
    ----------
    training, validation, test : the datalist's lists (``validation`` may be empty).
    extra : other top-level keys to keep in a derived datalist (``labels``, ``points`` made absolute ...).
    source : the datalist file read (the user's, or the one generated for synthetic data).
    root : the folder its relative paths start from.
    """

    training: list[Entry]
    validation: list[Entry]
    test: list[Entry]
    extra: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    root: Path | None = None

    def case_key(self, entry: Entry) -> str:
        """The case's image path relative to the data root (as the datalist names it), else absolute.

        Folds are drawn on these keys, so the split does not change when the data folder moves.
        """
        image = Path(entry["image"])
        if self.root is not None:
            try:
                return image.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return image.as_posix()

    @property
    def pool(self) -> list[Entry]:
        """The cases folds are drawn from: training and validation together (the test list stays apart)."""
        return self.training + self.validation


def _check_task(cfg: PipelineConfig) -> None:
    if cfg.task not in SUPPORTED_TASKS:
        raise ConfigError(
            f"cross-validation and tuning work on the training runs of {', '.join(SUPPORTED_TASKS)}, "
            f"not task {cfg.task!r}"
        )


def _synthetic_source(cfg: PipelineConfig, folder: Path) -> tuple[Path, Path | None]:
    """Generate the synthetic data of ``cfg`` into ``folder`` (once); its datalist and root."""
    if isinstance(cfg, SegmentationConfig):
        train, test = segmentation_synthetic(cfg, folder)
        path = folder / "datalist.json"
        atomic_write_text(path, json.dumps({"training": train, "test": test}, indent=1) + "\n")
        return path, folder
    if isinstance(cfg, DetectionConfig):
        return detection_synthetic(cfg, folder), None
    if isinstance(cfg, ClassificationConfig):
        # the data the classification task itself generates (medseg.tasks.classification.train)
        path = folder / "dataset.json"
        if not path.is_file():
            path = make_lesion_dataset(
                folder, n=cfg.data.num_cases, seed=cfg.seed, size=cfg.image_size or 128, class_names=cfg.class_names
            )
        return path, None
    raise ConfigError(f"no synthetic data for task {cfg.task!r}")


def task_data(cfg: PipelineConfig, folder: str | Path) -> TaskData:
    """The data of ``cfg``: its datalist read with absolute paths; synthetic data generated into ``folder``.

    Raises
    ------
    ConfigError (no data source, unsupported task), MissingFileError / InputError of the datalist.
    """
    _check_task(cfg)
    data = cfg.data  # type: ignore[attr-defined]  # every supported task config has a data section
    if data.synthetic:
        source, root = _synthetic_source(cfg, Path(folder))
    elif data.datalist is not None:
        source, root = Path(data.datalist), data.root
    else:
        raise ConfigError("set data.datalist (an MSD-style JSON) or data.synthetic: true")
    content = read_datalist_json(source)
    lists: dict[str, list[Entry]] = {}
    for key in ("training", "validation", "test"):
        if not content.get(key):
            lists[key] = []
            continue
        # image paths (and label paths, except classification's class labels) made absolute, as the tasks do
        items = load_decathlon_datalist(
            source,
            is_segmentation=cfg.task != "classification",
            data_list_key=key,
            base_dir=str(root) if root else None,
        )
        lists[key] = [it if isinstance(it, dict) else {"image": it} for it in items]
    if not lists["training"]:
        raise InputError("the datalist has no training cases", source)
    base = Path(root) if root else source.parent
    extra = {k: v for k, v in content.items() if k not in ("training", "validation", "test")}
    if isinstance(extra.get("points"), str):
        extra["points"] = str((base / extra["points"]).resolve())
    return TaskData(lists["training"], lists["validation"], lists["test"], extra, source, base.resolve())


def write_datalist(
    path: str | Path,
    training: Sequence[Entry],
    validation: Sequence[Entry],
    test: Sequence[Entry],
    extra: Mapping[str, Any],
) -> Path:
    """Write an MSD-style datalist (absolute paths) atomically; returns its path."""
    content = {**extra, "training": list(training), "validation": list(validation), "test": list(test)}
    return atomic_write_text(path, json.dumps(content, indent=1, default=str) + "\n")


def derived_config(
    cfg: PipelineConfig,
    *,
    name: str,
    output_dir: str | Path,
    datalist: str | Path | None = None,
    updates: Mapping[str, Any] | None = None,
    keep_folds: bool = False,
) -> PipelineConfig:
    """A copy of ``cfg`` for another run: new name and output folder, optionally another datalist.

    Parameters
    ----------
    cfg : the resolved config.
    name, output_dir : of the new run.
    datalist : the run reads this datalist (absolute paths) instead of ``cfg``'s data source
        (synthetic generation switched off, ``data.root`` dropped).
    updates : ``{"section.key": value}`` set in the copy (a trial's parameters, a shared plan).
    keep_folds : keep ``data.folds`` (a cross-validated trial); otherwise the copy trains one split.

    Raises
    ------
    ConfigError naming the key when an update is not a valid value of the config.
    """
    raw = json.loads(cfg.model_dump_json())
    raw.update(name=name, output_dir=str(output_dir), tune=None)
    if not keep_folds:
        raw["data"]["folds"] = None
    if datalist is not None:
        raw["data"].update(datalist=str(datalist), root=None, synthetic=False)
        if isinstance(raw.get("synthetic"), dict):  # segmentation's phantom settings are read only with synthetic data
            raw["synthetic"] = {}
    overrides = [f"{k}={json.dumps(v)}" for k, v in (updates or {}).items()]  # JSON is YAML: typed values
    raw = apply_overrides(raw, overrides, source=f"run {name}")
    return parse_config(raw, source=f"config of run {name}", cls=type(cfg))


def _label_present(path: str, label_map: Mapping[int, int]) -> bool:
    arr = np.unique(np.asarray(load_image(path, dtype=np.int32)))
    return any(label_map.get(int(v), int(v)) > 0 for v in arr)


def strata(cfg: PipelineConfig, entries: Sequence[Entry], extra: Mapping[str, Any]) -> tuple[list[Hashable], str]:
    """The stratum of each entry for stratified folds, and what it is.

    - classification: the class label;
    - detection: whether the image has annotated objects of the classes the detector learns
      (points CSV; without one, no stratification);
    - segmentation: whether the label map has any foreground (after ``label_map``); every label
      file is read once.
    """
    _check_task(cfg)
    if isinstance(cfg, ClassificationConfig):
        return [str(e.get("label")) for e in entries], "class label"
    if isinstance(cfg, DetectionConfig):
        ann = cfg.data.annotations or extra.get("points")
        if ann is None:
            return [0] * len(entries), "none (no points CSV)"
        table = read_points_csv(ann, cfg.class_names)
        target = cfg.target.classes or (["mitosis"] if cfg.method == "mitosis" else list(cfg.class_names))
        ids = {cfg.class_names.index(c) for c in target if c in cfg.class_names}
        out: list[Hashable] = []
        for e in entries:
            p = Path(e["image"])
            hit = table.get(p.name) or table.get(p.stem)
            out.append(bool(hit is not None and any(int(c) in ids for c in hit[1])))
        return out, f"images with annotated {', '.join(sorted(target))}"
    assert isinstance(cfg, SegmentationConfig)
    present: list[Hashable] = []
    for e in entries:
        try:
            present.append(_label_present(e["label"], cfg.label_map) if e.get("label") else False)
        except MedsegError as err:
            raise InputError(f"label map unreadable for the fold split: {err}", e.get("label")) from None
    return present, "label maps with foreground"
