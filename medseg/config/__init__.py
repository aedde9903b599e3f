"""Pipeline configs: YAML files validated by pydantic (see :mod:`medseg.config.base`).

``medseg.config.base`` holds the machinery (sections, loading, overrides, error messages); one
module per task holds that task's schema (``segmentation``, ``detection``, ``classification``,
``weak_supervision``) and registers it for its ``task:`` key on import. Importing this package
imports all of them (no torch), so :func:`load_config` knows every task.
"""

from __future__ import annotations

from medseg.config.base import (
    DataSection,
    InferSection,
    ModelSection,
    PipelineConfig,
    Section,
    TrainSection,
    apply_overrides,
    config_hash,
    config_to_yaml,
    format_validation_error,
    load_config,
    load_datalist,
    parse_config,
    register_task,
    resolve_paths,
    task_config_class,
)
from medseg.config.classification import ClassificationConfig, FinetuneSection, OperatingPointSection
from medseg.config.detection import DetectionConfig
from medseg.config.segmentation import (
    SegAugmentSection,
    SegInferSection,
    SegmentationConfig,
    SegPlanSection,
    SegPostSection,
)
from medseg.config.weak_supervision import WeakSection, WeakSupervisionConfig

__all__ = [
    "Section",
    "DataSection",
    "ModelSection",
    "TrainSection",
    "InferSection",
    "PipelineConfig",
    "SegmentationConfig",
    "DetectionConfig",
    "ClassificationConfig",
    "WeakSupervisionConfig",
    "SegPlanSection",
    "SegAugmentSection",
    "SegPostSection",
    "SegInferSection",
    "FinetuneSection",
    "OperatingPointSection",
    "WeakSection",
    "register_task",
    "task_config_class",
    "load_config",
    "parse_config",
    "apply_overrides",
    "resolve_paths",
    "format_validation_error",
    "config_to_yaml",
    "config_hash",
    "load_datalist",
]
