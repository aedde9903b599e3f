"""Pipeline configs: YAML files validated by pydantic (see :mod:`medseg.config.base`).

``medseg.config.base`` holds the machinery (sections, loading, overrides, error messages); one
module per task holds that task's schema (``segmentation``, ``detection``, ``classification``,
``weak_supervision``) and registers it for its ``task:`` key on import. Importing this package
imports all of them (no torch), so :func:`load_config` knows every task. Everything the modules
export is re-exported here.
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
    read_datalist_json,
    register_task,
    resolve_paths,
    task_config_class,
)
from medseg.config.classification import (
    ClassificationConfig,
    ClassifierModelSection,
    FinetuneSection,
    LesionVolumeSection,
    OperatingPointSection,
    keys_set_in,
)
from medseg.config.detection import (
    MOVED_KEYS,
    DetAugmentSection,
    DetDataSection,
    DetectionConfig,
    DetEvaluateSection,
    DetInferSection,
    DetPostSection,
    DetSamplingSection,
    DetTargetSection,
)
from medseg.config.segmentation import (
    SegAugmentSection,
    SegDataSection,
    SegInferSection,
    SegmentationConfig,
    SegPlanSection,
    SegPostSection,
    SegSyntheticSection,
)
from medseg.config.tune import FORBIDDEN_KEYS, KINDS, ParamSpec, TuneSection
from medseg.config.weak_supervision import (
    WeakSection,
    WeakSupervisionConfig,
    WeakTrainSection,
)

__all__ = [
    "Section",
    "DataSection",
    "ModelSection",
    "TrainSection",
    "InferSection",
    "PipelineConfig",
    "register_task",
    "task_config_class",
    "load_config",
    "parse_config",
    "apply_overrides",
    "config_to_yaml",
    "config_hash",
    "load_datalist",
    "read_datalist_json",
    "resolve_paths",
    "format_validation_error",
    "SegDataSection",
    "SegSyntheticSection",
    "SegPlanSection",
    "SegAugmentSection",
    "SegPostSection",
    "SegInferSection",
    "SegmentationConfig",
    "DetDataSection",
    "DetTargetSection",
    "DetSamplingSection",
    "DetAugmentSection",
    "DetInferSection",
    "DetPostSection",
    "DetEvaluateSection",
    "DetectionConfig",
    "MOVED_KEYS",
    "ClassifierModelSection",
    "FinetuneSection",
    "LesionVolumeSection",
    "OperatingPointSection",
    "ClassificationConfig",
    "keys_set_in",
    "WeakSection",
    "WeakTrainSection",
    "WeakSupervisionConfig",
    "ParamSpec",
    "TuneSection",
    "KINDS",
    "FORBIDDEN_KEYS",
]
